"""Is `synthetic` a fair stand-in for CIFAR-10? Per-corruption accuracy drops of one model.

Trains (or loads from the run store) the quick-profile standard model (`small_cnn`, seed 0) on
the synthetic set and on the real JPEG-75 CIFAR-10 copy (``--real``; default: the file
``$STUDYKIT_SHARED_NPZ`` names, else the copy in the shared folder next to the checkout, as
the tests find it), evaluates both on
every corruption x severity of their own test sets, and prints the accuracy drop per corruption
(clean minus the mean over severities 1-5), Spearman's rank correlation of the two columns over
the corruptions other than jpeg_compression (the real copy is already JPEG-75 compressed), and
both clean accuracies, then the command that reproduces it.

    python benchmarks/stand_in_check.py                  # the full quick budget
    python benchmarks/stand_in_check.py --n-test 1000    # a cheaper proxy

Check a proxy against the full budget before trusting it. Halving the corrupted test set
(``--n-test 1000``, same training) ranked the corruptions as the full budget did (Spearman 0.99
for the synthetic column, 0.97 for the real one); cutting training (``--epochs 6 --n-train
5000``) left the synthetic model at 21 % clean accuracy with a ranking unrelated to the full
one (-0.15), and a spurious rho of 0.9.

Both runs use the same budget, so a proxy compares like with like; each run is cached under
``runs/`` (the real-copy run trains once per budget: its data never changes), and a synthetic run
trained on another generator version is refused by the run store's data fingerprint and
retrained. No adversarial evaluation is done. Torch runs on ``--threads`` threads (default 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from studykit import profiles, viz
from studykit.data.synthetic import GENERATOR_VERSION
from studykit.experiment import run_experiment
from studykit.paths import REAL_NPZ_ENV, project_root, real_data_npz

# The real-data file: $STUDYKIT_SHARED_NPZ, else the shared folder next to the checkout (as
# tests/conftest.py finds it).
SHARED_NPZ = real_data_npz()
TARGET_RHO = 0.7
TARGET_CLEAN = (60.0, 85.0)


def run(dataset: str, args: argparse.Namespace) -> tuple[float, pd.DataFrame, float, bool]:
    """(clean accuracy, corruption table, seconds, whether it trained) of one standard run."""
    overrides = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train),
                                   ("n_test", args.n_test)) if v is not None}
    start = time.perf_counter()
    r = run_experiment(profile="quick", dataset=dataset, method="standard", seed=args.seed,
                       eval_corruptions="all", eval_adversarial=None, progress=False,
                       **overrides)
    return r.clean_acc_for_corruptions, r.corruption, time.perf_counter() - start, r.trained


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help="default: the quick profile's")
    p.add_argument("--n-train", type=int, default=None, help="default: the quick profile's")
    p.add_argument("--n-test", type=int, default=None, help="default: the quick profile's")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--real", default=str(SHARED_NPZ),
                   help=f"the real-image .npz, relative to the project root or absolute "
                        f"(default: ${REAL_NPZ_ENV}, else {SHARED_NPZ.name} in the shared "
                        f"folder next to the checkout)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scatter", default=None, help="also save the drop scatter to this PNG")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")  # the corrupted-set bars (tqdm >= 4.66)
    torch.set_num_threads(args.threads)

    real_path = Path(args.real)
    if not real_path.is_absolute():
        real_path = project_root() / real_path
    if not real_path.exists():
        print(f"no real images at {real_path}; nothing to compare against", file=sys.stderr)
        return 2

    quick = profiles.get_profile("quick")
    budget = {k: getattr(args, k) if getattr(args, k) is not None else quick[k]
              for k in ("epochs", "n_train", "n_test")}
    tables, clean, seconds, trained = {}, {}, {}, {}
    for label, dataset in (("synthetic", "synthetic"), ("cifar10_jpeg", f"npz:{real_path}")):
        clean[label], tables[label], seconds[label], trained[label] = run(dataset, args)

    drops = viz.corruption_drops(tables, clean)
    rho = viz.drop_rank_correlation(drops, "cifar10_jpeg", "synthetic")
    n_rho = len([n for n in drops.index if n not in viz.RHO_EXCLUDED])
    out = drops.copy()
    out["difference"] = out["synthetic"] - out["cifar10_jpeg"]
    out["rank_synthetic"] = out["synthetic"].drop(list(viz.RHO_EXCLUDED)).rank(ascending=False)
    out["rank_cifar10_jpeg"] = out["cifar10_jpeg"].drop(list(viz.RHO_EXCLUDED)).rank(
        ascending=False)

    print(f"standard small_cnn, seed {args.seed}, {budget['epochs']} epochs, "
          f"{budget['n_train']} train / {budget['n_test']} test images per dataset; "
          f"synthetic generator v{GENERATOR_VERSION}")
    print("accuracy drop (points; clean minus the mean over severities 1-5):\n")
    print("| corruption | synthetic | cifar10_jpeg | synthetic - real | rank syn | rank real |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in out.iterrows():
        ranks = ("-", "-") if name in viz.RHO_EXCLUDED else (
            f"{row['rank_synthetic']:.0f}", f"{row['rank_cifar10_jpeg']:.0f}")
        print(f"| {name} | {row['synthetic']:.1f} | {row['cifar10_jpeg']:.1f} | "
              f"{row['difference']:+.1f} | {ranks[0]} | {ranks[1]} |")
    print(f"| clean accuracy | {clean['synthetic']:.1f} | {clean['cifar10_jpeg']:.1f} | | | |")
    print()
    ok_rho = rho >= TARGET_RHO
    ok_clean = TARGET_CLEAN[0] <= clean["synthetic"] <= TARGET_CLEAN[1]
    print(f"Spearman rho over {n_rho} corruptions (without {', '.join(viz.RHO_EXCLUDED)}): "
          f"{rho:.3f}  (target >= {TARGET_RHO}: {'met' if ok_rho else 'NOT met'})")
    print(f"synthetic clean accuracy {clean['synthetic']:.1f} % (target {TARGET_CLEAN[0]:.0f}-"
          f"{TARGET_CLEAN[1]:.0f} %: {'met' if ok_clean else 'NOT met'}); "
          f"real {clean['cifar10_jpeg']:.1f} %")
    for label in tables:
        print(f"{label}: {'trained' if trained[label] else 'loaded'} and evaluated in "
              f"{seconds[label]:.0f} s")
    if args.scatter:
        fig = viz.plot_drop_scatter(drops, "cifar10_jpeg", "synthetic")
        fig.savefig(args.scatter, dpi=120, bbox_inches="tight")
        print(f"scatter: {args.scatter}")
    print("\n$ " + shlex.join(["python", "benchmarks/stand_in_check.py", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
