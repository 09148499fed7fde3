"""The studykit command line: list, train, eval, sweep, study, fetch and zoo.

``train`` and ``eval`` call ``run_experiment`` (``-p key=value`` sets any of its parameters,
values parsed as Python literals); ``sweep`` launches a grid of them as jobs
(``studykit.sweep``, on this machine or a Slurm cluster); ``study`` runs the notebook series
with papermill. A bad value ends in one line on stderr (``studykit: error: ...``) and exit
status 2, Ctrl-C in exit status 130 with a note on how to resume; ``-v`` shows full tracebacks.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

LIST_SECTIONS = ("datasets", "models", "corruptions", "methods", "profiles", "params",
                 "recipes")

DESCRIPTION = "Train, evaluate and compare robust-training methods; run the notebook series."
EPILOG = """\
profiles: smoke (seconds, CI), quick (default: minutes on a CPU), paper (GPU, CIFAR-10).
examples:
  studykit list methods
  studykit list recipes --profile paper   each paper's training recipe (-p paper=NAME)
  studykit list params            every -p key: type, default per profile, allowed values
  studykit train -p method=augmax -p norm=dubin -p seed=1
  studykit eval --profile quick -p method=augmix -p epochs=5
  studykit sweep --methods standard,augmix --seeds 0,1,2 --profile quick
  torchrun --nproc_per_node=4 -m studykit train --profile paper -p method=augmax
  studykit study --notebooks 00 01
  studykit study --dataset cifar10 the series on CIFAR-10 (after studykit fetch cifar10)
  studykit fetch cifar10 cifar10-c   needs internet; checksums verified, resumable
  studykit zoo list                leaderboard models; studykit zoo eval NAME evaluates one
A run interrupted (Ctrl-C, a killed job) resumes from its last epoch when the same command is
run again. Runs live in runs/ (or $STUDYKIT_RUNS)."""


class CLIError(ValueError):
    """A command-line mistake (printed as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (no usage block): ``studykit: error: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"studykit: error: {message} (see '{self.prog} --help')\n")


def _sections(wanted: str | None) -> dict[str, list[str]]:
    from studykit import corruptions, data, methods, models, profiles

    sections: dict[str, list[str]] = {
        "datasets": data.list_datasets(),
        "models": models.list_models(),
        "corruptions (benchmark)": corruptions.list_corruptions("benchmark"),
        "corruptions (extra)": corruptions.list_corruptions("extra"),
        "methods": methods.list_methods(),
        "profiles": list(profiles.list_profiles()),
    }
    return {t: n for t, n in sections.items() if not wanted or t.startswith(wanted)}


def params_table() -> list[str]:
    """Lines of ``studykit list params``: every run_experiment key with its type, default per
    profile and allowed values, then each method's options."""
    from studykit import checks, experiment, methods, profiles

    names = profiles.list_profiles()
    rows: list[tuple[str, str, list[Any], str] | str] = []
    defaults = {**experiment.TRAIN_KEYS, **experiment.EVAL_KEYS, **experiment.RUNTIME_KEYS}
    for key, default in defaults.items():
        tp, allowed = experiment.param_spec(key)
        per_profile = [profiles.PROFILES[p].get(key, default) for p in names]
        if key == "profile":
            per_profile = list(names)
        rows.append((key, tp, per_profile, allowed))
    for m in methods.list_methods():
        cls = methods.get_method_class(m).Config
        fields = methods.method_config_fields(m)
        rows += ["", f"method {m} options (-p key=value with -p method={m}):"]
        for key, default in fields.items():
            tp, allowed = checks.describe_field(cls, key)
            prof = [profiles.method_overrides(p, m).get(key, default) for p in names]
            rows.append(("  " + key, tp, prof, allowed))
    # Columns as wide as their longest entry, so every profile's value lines up.
    kw = max(24, *(len(r[0]) for r in rows if isinstance(r, tuple)))
    tw = max(28, *(len(r[1]) for r in rows if isinstance(r, tuple)))
    lines = [f"{'key':{kw}} {'type':{tw}} " + " ".join(f"{p:>10}" for p in names) + "  allowed"]
    for r in rows:
        if isinstance(r, str):
            lines.append(r)
        else:
            key, tp, values, allowed = r
            lines.append(f"{key:{kw}} {tp:{tw}} " + " ".join(f"{_short(v):>10}" for v in values)
                         + f"  {allowed}")
    return lines


def recipes_table(profile: str = "paper") -> list[str]:
    """Lines of ``studykit list recipes``: one row per paper, the recipe `profiles.recipe`
    resolves at ``profile`` (smoke and quick: the profile's own values in every row)."""
    from studykit import profiles

    cols = profiles.RECIPE_KEYS
    rows = [[p] + [_cell(profiles.recipe(profile, p)[k]) for k in cols]
            for p in profiles.list_recipes()]
    head = ["paper", *cols]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return [f"recipes at profile {profile} (-p paper=NAME; explicit keys win):"] + [
        "  ".join(f"{c:{w}}" for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def _cell(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v)) or "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    text = str(v)
    return text if len(text) <= 10 else text[:9] + "~"


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "params":
        print("\n".join(params_table()))
        return 0
    if args.what == "recipes":
        print("\n".join(recipes_table(args.profile)))
        return 0
    for title, names in _sections(args.what).items():
        print(f"{title}:")
        for n in names:
            print(f"  {n}")
    return 0


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=3", "method=augmix"]`` -> ``{"epochs": 3, "method": "augmix"}``."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"bad parameter {pair!r}; write key=value, e.g. -p epochs=3")
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = raw  # a bare word such as augmix or cifar10
    return params


def _cmd_train(args: argparse.Namespace) -> int:
    from studykit.experiment import run_experiment

    params = parse_params(args.param)
    params.setdefault("profile", args.profile)
    if args.command == "train":
        params.setdefault("eval_corruptions", None)
        params.setdefault("eval_adversarial", None)
    r = run_experiment(**params)
    print(f"run: {r.run.dir}")
    print(json.dumps(r.metrics, indent=2, sort_keys=True))
    return 0


def _split(text: str, what: str, cast: Any = str) -> list[Any]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise CLIError(f"{what} {text!r} names nothing; give a comma-separated list")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise CLIError(f"{what} {text!r} must be comma-separated integers, e.g. 0,1,2") from None


def _cmd_sweep(args: argparse.Namespace) -> int:
    import pandas as pd

    from studykit.sweep import sweep

    grid: dict[str, list[Any]] = {"method": _split(args.methods, "--methods"),
                                  "seed": _split(args.seeds, "--seeds", int)}
    for pair in args.grid:
        key, sep, values = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"bad --grid {pair!r}; write key=v1,v2, e.g. --grid norm=dubin,bn")
        grid[key] = [parse_params([f"{key}={v}"])[key] for v in _split(values, "--grid")]
    params = parse_params(args.param)
    params.setdefault("profile", args.profile)
    params.setdefault("progress", False)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        sweep(grid, executor=args.executor, folder=args.folder,
              slurm_partition=args.slurm_partition, gpus=args.gpus, cpus=args.cpus,
              timeout_min=args.timeout_min, wait=not args.no_wait,
              report=lambda t: print(t.to_string(index=False), flush=True), **params)
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from studykit import study

    if args.jobs < 1:
        raise CLIError(f"--jobs must be >= 1, got {args.jobs}")
    study.run_study(
        profile=args.profile,
        notebooks=args.notebooks,
        jobs=args.jobs,
        output_dir=args.output_dir,
        dataset=args.dataset,
        rerun=args.rerun,
    )
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from studykit.data.fetch import fetch

    for name in args.names:
        for path in fetch(name, args.root, progress=not args.quiet):
            print(path)
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from studykit import zoo

    if args.action == "list":
        table = zoo.zoo_table(args.model_dir)
        if args.threat_model:
            table = table[table["threat_model"] == args.threat_model]
        print(table.to_string(index=False))
        return 0
    if not args.name:
        raise CLIError("zoo eval needs a model name, e.g. studykit zoo eval "
                       "Hendrycks2020AugMix_WRN ('studykit zoo list' names them)")
    params = parse_params(args.param)
    params.setdefault("profile", args.profile)
    r = zoo.load_zoo_run(args.name, args.threat_model or "corruptions",
                         params.pop("dataset", "cifar10"), model_dir=args.model_dir,
                         download=args.download, **params)
    print(f"run: {r.run.dir}")
    print(json.dumps(r.metrics, indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="studykit", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logging, and full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)

    pl = sub.add_parser("list", help="list datasets, models, corruptions, methods, profiles, "
                                     "params, recipes")
    pl.add_argument("what", nargs="?", default=None, choices=LIST_SECTIONS,
                    help="only this section; params: every -p key with its type, default per "
                         "profile and allowed values; recipes: each paper's training recipe")
    pl.add_argument("--profile", default="paper",
                    help="for 'list recipes': the profile to resolve them at (default paper)")
    pl.set_defaults(func=_cmd_list)

    for name, helptext in (("train", "train (or load) one configuration"),
                           ("eval", "train or load, then evaluate clean / corruptions / PGD")):
        pt = sub.add_parser(name, help=helptext, description=helptext + ".", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        pt.add_argument("--profile", default="quick",
                        help="smoke | quick | paper (default quick: small_cnn of width 8, 8 "
                             "epochs on 10,000 synthetic images)")
        pt.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a run_experiment parameter, e.g. -p method=standard -p epochs=3; "
                             "'studykit list params' lists them")
        pt.set_defaults(func=_cmd_train)

    pw = sub.add_parser("sweep", help="a grid of runs (methods x seeds x options) as jobs on "
                                      "this machine or a Slurm cluster, into one run store")
    pw.add_argument("--methods", required=True, help="comma-separated methods, e.g. "
                                                     "standard,augmax")
    pw.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    pw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="another key to sweep, e.g. --grid norm=dubin,bn")
    pw.add_argument("--profile", default="quick", help="smoke | quick | paper (default quick)")
    pw.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a run_experiment parameter every job shares")
    pw.add_argument("--executor", default="local", choices=("local", "slurm"),
                    help="local: processes on this machine (default); slurm: sbatch jobs")
    pw.add_argument("--slurm-partition", default=None, help="the Slurm partition")
    pw.add_argument("--gpus", type=int, default=0,
                    help="GPUs per job (default 0: a job, local ones too, sees no GPU)")
    pw.add_argument("--cpus", type=int, default=1, help="CPU cores per job (default 1)")
    pw.add_argument("--timeout-min", type=int, default=24 * 60,
                    help="each job's time limit in minutes (default 1440)")
    pw.add_argument("--folder", default=None,
                    help="submitit's logs (default: sweeps/ in the run store)")
    pw.add_argument("--no-wait", action="store_true",
                    help="print the job ids and return; the runs land in the store")
    pw.set_defaults(func=_cmd_sweep)

    pz = sub.add_parser("zoo", help="leaderboard models (RobustBench's model zoo): list them, "
                                    "or evaluate one as our runs are evaluated")
    pz.add_argument("action", choices=("list", "eval"), help="list | eval")
    pz.add_argument("name", nargs="?", default=None, help="the zoo name (for eval)")
    pz.add_argument("--threat-model", default=None, choices=("corruptions", "Linf", "L2"),
                    help="the leaderboard (default: all for list, corruptions for eval)")
    pz.add_argument("--profile", default="quick", help="smoke | quick | paper (default quick)")
    pz.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="an evaluation parameter, e.g. -p n_test=1000 -p eval_eps=(0.0,)")
    pz.add_argument("--model-dir", default=None,
                    help="the zoo cache (default models/ or $STUDYKIT_ZOO)")
    pz.add_argument("--download", action="store_true",
                    help="fetch a missing checkpoint (needs robustbench and the network)")
    pz.set_defaults(func=_cmd_zoo)

    from studykit.data.fetch import FETCHABLE

    pf = sub.add_parser("fetch", help="download a real dataset (checksums verified, resumable)")
    pf.add_argument("names", nargs="+", choices=FETCHABLE, metavar="NAME",
                    help=f"one or more of: {', '.join(FETCHABLE)}")
    pf.add_argument("--root", default=None, help="data folder (default data/ or $STUDYKIT_DATA)")
    pf.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    pf.set_defaults(func=_cmd_fetch)

    ps = sub.add_parser("study", help="run the notebook series with papermill")
    ps.add_argument("--profile", default="quick", help="smoke | quick | paper (default quick)")
    ps.add_argument("--notebooks", nargs="*", default=None,
                    help="notebook names or prefixes (default: all in notebooks/)")
    ps.add_argument("--jobs", type=int, default=1, help="notebooks run concurrently")
    ps.add_argument("--output-dir", default="runs/notebooks",
                    help="where executed notebooks go (default runs/notebooks)")
    ps.add_argument("--dataset", default="",
                    help="run the series on this dataset (a key or npz:<path>) instead of the "
                         "profile's; figures go to figures/<dataset>/")
    ps.add_argument("--rerun", action="store_true",
                    help="execute every chosen notebook, also those an earlier study finished "
                         "with the same notebook, parameters and package source")
    ps.set_defaults(func=_cmd_study)
    return p


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("studykit: interrupted; a training run keeps its last finished epoch, and the "
              "same command resumes it", file=sys.stderr)
        return 130
    except ValueError as e:  # a bad value: the message names it and what is allowed
        if args.verbose:
            raise
        print(f"studykit: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing dataset, a read-only run store, a full disk
        if args.verbose:
            raise
        print(f"studykit: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as e:  # out of memory: a resource; anything else: a bug
        if args.verbose or not _out_of_memory(e):
            raise
        print(f"studykit: error: out of memory ({_one_line(e)[:300]}); use smaller settings "
              "(n_train, n_test, width, batch_size) or a machine with more memory",
              file=sys.stderr)
        return 1


def _out_of_memory(e: BaseException) -> bool:
    import torch

    return (isinstance(e, (MemoryError, torch.OutOfMemoryError))
            or "can't allocate memory" in str(e) or "out of memory" in str(e))


if __name__ == "__main__":
    sys.exit(main())
