"""Intervals on a paired difference and the verdict they support.

Two rows of a claim are measured on the same units (test images, or per-image SSIMs), so
their difference is paired. With one training seed the only noise that can be measured is the
test set's: a paired bootstrap over the units. With several seeds, the difference is taken per
seed and a t-interval over seeds covers training noise as well (each seed's difference still
averages the whole test set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

VERDICTS = ("shown", "opposite", "not resolved")
LEVEL = 0.95
N_BOOT = 2000


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its interval.

    Attributes:
        measured: the difference (mean over seeds of each seed's difference).
        low, high: the ends of the 95 % interval.
        seeds: how many seeds the rows were measured on.
        units: units (images) per seed, the smallest over seeds.
        method: how the interval was made (``bootstrap`` or ``t``).
    """

    measured: float
    low: float
    high: float
    seeds: int
    units: int
    method: str

    def describe(self) -> str:
        if self.method == "bootstrap":
            return (f"paired bootstrap over {self.units} test units, one seed "
                    "(test-set noise only)")
        return f"t-interval over {self.seeds} seeds of the paired difference"


def _check_pairs(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[tuple]:
    if len(a) != len(b) or not a:
        raise ValueError(f"need the same number (>= 1) of seeds in both rows, got {len(a)} "
                         f"and {len(b)}")
    pairs = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.shape != y.shape or x.size == 0:
            raise ValueError(f"seed {i}: paired rows need the same non-zero number of units, "
                             f"got {x.size} and {y.size}")
        pairs.append((x, y))
    return pairs


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = N_BOOT,
                     level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``mean(a) - mean(b)`` resampling the units (pairs kept together).

    Returns:
        (low, high).
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = d.size
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, min(n_boot, 4_000_000 // max(n, 1)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def t_interval(diffs: Sequence[float], *, level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of the mean of per-seed differences (two or more seeds)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2:
        raise ValueError(f"a t-interval needs at least 2 seeds, got {d.size}")
    half = stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], *, n_boot: int = N_BOOT,
               level: float = LEVEL, seed: int = 0) -> Difference:
    """The paired difference of two rows given per seed as per-unit values.

    Args:
        a, b: one array per seed (the same seeds, in the same order), each holding one value
            per unit (1/0 per test image for accuracies, or any per-unit score); the units of
            one seed are the same in both rows.
        n_boot: bootstrap resamples (one seed).
        level: the interval's coverage.
        seed: seeds the bootstrap.
    """
    pairs = _check_pairs(a, b)
    diffs = [float(x.mean() - y.mean()) for x, y in pairs]
    units = min(x.size for x, _ in pairs)
    if len(pairs) == 1:
        low, high = paired_bootstrap(*pairs[0], n_boot=n_boot, level=level, seed=seed)
        return Difference(diffs[0], low, high, 1, units, "bootstrap")
    low, high = t_interval(diffs, level=level)
    return Difference(float(np.mean(diffs)), low, high, len(pairs), units, "t")


def verdict(low: float, high: float, *, higher: bool) -> str:
    """What an interval on ``a - b`` says of a claim that ``a`` is higher (``higher``) or lower
    than ``b``: ``shown`` when it excludes 0 on the claimed side, ``opposite`` when on the
    other, ``not resolved`` when it covers 0."""
    if low > 0:
        return "shown" if higher else "opposite"
    if high < 0:
        return "opposite" if higher else "shown"
    return "not resolved"
