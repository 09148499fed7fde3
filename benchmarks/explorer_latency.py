"""How fast the notebook explorers answer a control change (studykit.widgets), on the CPU.

    python benchmarks/explorer_latency.py

Builds each explorer as the notebooks do (a quick-profile small CNN, 16 test images, every
corruption) and times its construction and the callback of each control, over a sweep of values:
the first visit of a setting (what the cache has to compute) and a revisit (what it serves). The
target: every callback well under a second on 2 CPU cores.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from studykit import widgets
from studykit.corruptions import list_corruptions
from studykit.data import ImageDataset
from studykit.models import create_model


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _sweep(ex: widgets.Explorer, name: str, values: list) -> tuple[float, float, str, float]:
    """Median and worst seconds of first visits (and the worst value), median of revisits."""
    w = ex.controls[name]
    first = [_time(lambda v=v: setattr(w, "value", v)) for v in values]
    again = [_time(lambda v=v: setattr(w, "value", v)) for v in values]
    worst = max(range(len(values)), key=first.__getitem__)
    at = values[worst]
    return (statistics.median(first), first[worst], f"{at:g}" if isinstance(at, float) else str(at),
            statistics.median(again))


def main() -> None:
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    ds = ImageDataset("random", x, y, x, y, tuple(str(i) for i in range(10)))
    models = {name: create_model("small_cnn", 10).eval() for name in ("standard", "augmix")}
    rows = []
    build = {}
    build["corruptions"] = _time(lambda: build.setdefault(
        "c", widgets.corruption_explorer(ds, models, n_images=16)))
    ex = build.pop("c")
    rows.append(("corruptions", "image", *_sweep(ex, "image", list(range(1, 16)))))
    rows.append(("corruptions", "corruption",
                 *_sweep(ex, "corruption", list_corruptions("all")[1:])))
    rows.append(("corruptions", "severity", *_sweep(ex, "severity", [1, 2, 4, 5])))
    build["mixing"] = _time(lambda: build.setdefault(
        "m", widgets.mixing_explorer(models["standard"], ds, n_images=8)))
    ex = build.pop("m")
    rows.append(("mixing", "m", *_sweep(ex, "m", [0.1 * k for k in range(11)])))
    rows.append(("mixing", "w1", *_sweep(ex, "w1", [0.1 * k for k in range(11)])))
    rows.append(("mixing", "image", *_sweep(ex, "image", list(range(1, 8)))))
    with tempfile.TemporaryDirectory() as tmp:
        build["results"] = _time(lambda: build.setdefault("r", widgets.results_browser(tmp)))
        build.pop("r")
    print("construction (s): " + ", ".join(f"{k} {v:.2f}" for k, v in build.items()))
    print(f"{'explorer':12s} {'control':11s} {'first median':>12s} {'first worst':>12s} "
          f"{'(at)':>16s} {'revisit':>8s}  (seconds per change)")
    for ex_name, ctl, med, worst, at, again in rows:
        print(f"{ex_name:12s} {ctl:11s} {med:12.3f} {worst:12.3f} {at[:16]:>16s} {again:8.3f}")


if __name__ == "__main__":
    main()
