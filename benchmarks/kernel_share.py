"""Two notebooks at a time on a few cores: one process of all threads vs processes of one each.

    python benchmarks/kernel_share.py                    # quick profile's model and methods
    python benchmarks/kernel_share.py --jobs 2 --methods standard augmax --steps 20

`make study` runs ``--jobs`` notebooks at a time and gives each kernel ``cores / jobs`` intra-op
threads (`studykit.study.kernel_threads`). This measures, per method, the same work done both
ways in one run: ``jobs`` x ``--steps`` training steps in one process on every core, one after
the other, and ``jobs`` processes of ``cores / jobs`` threads each doing ``--steps`` steps at
once. The ratio is the first wall time over the second: above 1, sharing the cores between
kernels does more work per second.

The steps are the trainer's (the method's ``training_step``, backward, an SGD step) on the quick
profile's model (small_cnn, its width) and batch size with the quick profile's method options,
on synthetic images.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time

from studykit.study import kernel_threads
from studykit.threads import usable_cores

DEFAULT_METHODS = ["standard", "augmix", "augmax", "pgd_at"]


def _steps(method_name: str, threads: int, steps: int, warmup: int, seed: int) -> float:
    """Seconds of ``steps`` training steps after ``warmup`` untimed ones, on ``threads``."""
    import torch

    from studykit.data.synthetic import make_synthetic
    from studykit.methods import create_method
    from studykit.models import create_model
    from studykit.profiles import get_profile, method_overrides

    torch.set_num_threads(threads)
    prof = get_profile("quick")
    torch.manual_seed(seed)
    method = create_method(method_name, **method_overrides("quick", method_name))
    method.seed(seed)
    model = method.prepare_model(create_model(prof["arch"], 10, width=prof["width"])).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ds = make_synthetic(n_train=prof["batch_size"], n_test=1, seed=seed)
    x, y = ds.x_train.float() / 255, ds.y_train  # uint8 images to [0, 1]
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        method.set_progress(i, warmup + steps)
        out = method.training_step(model, x, y)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    return time.perf_counter() - t0


def _child(args: tuple) -> float:
    return _steps(*args)


def _warm() -> None:
    """Import torch and the package in a pool worker before any timing."""
    import torch  # noqa: F401

    import studykit.methods  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--methods", nargs="*", default=DEFAULT_METHODS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args(argv)
    n = usable_cores()
    if a.jobs < 2 or a.steps < 1:
        print(f"--jobs must be >= 2 and --steps >= 1, got {a.jobs} and {a.steps}",
              file=sys.stderr)
        return 2
    share = kernel_threads(a.jobs, n)
    ctx = mp.get_context("spawn")
    print(f"{n} cores; {a.jobs} jobs x {a.steps} steps each: one process of {n} threads vs "
          f"{a.jobs} processes of {share}")
    print(f"{'method':<10} {'one process (s)':>16} {'shared (s)':>11} {'ratio':>6}")
    with ctx.Pool(a.jobs, initializer=_warm) as pool:
        for m in a.methods:
            # One process of every thread doing the jobs' work one after the other (in a pool
            # worker, so both ways run in the same kind of interpreter) ...
            one = pool.apply(_child, ((m, n, a.jobs * a.steps, a.warmup, 0),))
            # ... and the jobs at once: the slowest one's timed steps (its warm-up overlaps).
            shared = max(pool.map(_child, [(m, share, a.steps, a.warmup, j)
                                            for j in range(a.jobs)], chunksize=1))
            print(f"{m:<10} {one:>16.2f} {shared:>11.2f} {one / shared:>6.2f}", flush=True)
    print("ratio: seconds of one process over the slowest shared process's (above 1: sharing "
          "the cores between kernels does more work per second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
