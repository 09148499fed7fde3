"""Measuring a notebook's claims from its own results: per-unit values of each row, the paired
difference with its interval, the verdict, and ``claims.csv`` beside the notebook's figures."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from studykit.claims.stats import difference, verdict
from studykit.claims.table import CLAIMS, Claim, claims_of
from studykit.evaluation import BENCHMARK_CORRUPTIONS, SEVERITIES
from studykit.outcomes import adv_key, corruption_key

log = logging.getLogger(__name__)

COLUMNS = ("claim", "key", "paper", "source", "setting", "paper_value", "metric", "a", "b",
           "measured", "low", "high", "verdict", "seeds", "interval")

# A row's values: per seed, an ExperimentResult (its stored per-image outcomes), an array of
# per-unit values already measured (per-image SSIM, certification ...), or a mapping from
# metric to such an array.
Row = Sequence[Any]


def unit_values(result: Any, metric: str) -> np.ndarray:
    """Per-image values (in %) of one evaluated run for an accuracy metric.

    ``clean_acc``: 100/0 per test image; ``ra``: per image, the share (%) of the 15 benchmark
    corruptions x 5 severities it survives (their mean is RA); ``mce``: 100 minus that (plain
    mCE, as `evaluation.mean_corruption_error`); ``adv/<norm>/<eps>``: 100/0 per attacked image.
    An array passes through unchanged; a mapping gives its entry for the metric (a row whose
    values for some metric the notebook measured itself).

    Raises:
        ValueError: the metric is unknown, or the run was not evaluated for it.
    """
    if isinstance(result, Mapping):
        if metric not in result:
            raise ValueError(f"no values of {metric!r} given for this row; it has "
                             f"{sorted(result)}")
        return np.asarray(result[metric], dtype=np.float64).reshape(-1)
    if not hasattr(result, "outcomes"):
        return np.asarray(result, dtype=np.float64).reshape(-1)
    hits = result.outcomes
    if metric == "clean_acc":
        return 100.0 * hits["clean"].astype(np.float64)
    if metric in ("ra", "mce"):
        keys = [corruption_key(c, s) for c in BENCHMARK_CORRUPTIONS for s in SEVERITIES]
        missing = [k for k in keys if k not in hits]
        if missing:
            raise ValueError(f"{metric} needs the 15 benchmark corruptions; this run's "
                             f"evaluation lacks {len(missing)} sets (e.g. {missing[0]})")
        ra = 100.0 * np.mean([hits[k] for k in keys], axis=0)
        return ra if metric == "ra" else 100.0 - ra
    if metric.startswith("adv/"):
        norm, eps = metric.split("/")[1:]
        key = adv_key(norm, float(eps))
        if key not in hits:
            have = sorted(k for k in hits if k.startswith("adv/"))
            raise ValueError(f"this run was not attacked at {key}; it was at: {have or 'none'}")
        return 100.0 * hits[key].astype(np.float64)
    raise ValueError(f"unknown accuracy metric {metric!r}; choose clean_acc, ra, mce or "
                     "adv/<norm>/<eps>, or pass per-unit values")


def row_values(result: Any, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """``{metric: unit_values(result, metric)}``: one row's values when a claim's rows draw on
    several evaluations of one model (corruptions from one, an L2 attack from another)."""
    return {m: unit_values(result, m) for m in metrics}


def measure_claim(claim: Claim, rows: Mapping[str, Row], *, seed: int = 0) -> dict[str, Any]:
    """One claim's row of ``claims.csv``; ``not run`` when the notebook lacks one of its rows
    (its parameters left that method out)."""
    out: dict[str, Any] = {"claim": claim.statement, "key": claim.key, "paper": claim.paper,
                           "source": claim.source, "setting": claim.setting,
                           "paper_value": claim.paper_value(), "metric": claim.metric,
                           "a": claim.a, "b": claim.b}
    if claim.a not in rows or claim.b not in rows:
        missing = [r for r in (claim.a, claim.b) if r not in rows]
        return {**out, "measured": np.nan, "low": np.nan, "high": np.nan,
                "verdict": "not run", "seeds": 0, "interval": f"row(s) {missing} not run"}
    unmeasured = [r for r in (claim.a, claim.b)
                  if any(isinstance(v, Mapping) and claim.metric not in v for v in rows[r])]
    if unmeasured:  # e.g. CIFAR-10.1 accuracy where the files are absent
        return {**out, "measured": np.nan, "low": np.nan, "high": np.nan,
                "verdict": "not run", "seeds": 0,
                "interval": f"{claim.metric} not measured for row(s) {unmeasured}"}
    a = [unit_values(r, claim.metric) for r in rows[claim.a]]
    b = [unit_values(r, claim.metric) for r in rows[claim.b]]
    d = difference(a, b, seed=seed)
    return {**out, "measured": d.measured, "low": d.low, "high": d.high,
            "verdict": verdict(d.low, d.high, higher=claim.higher), "seeds": d.seeds,
            "interval": d.describe()}


def evaluate_claims(notebook: str, rows: Mapping[str, Row], *, save: Any = None,
                    keys: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """Every claim of ``notebook`` (`studykit.claims.CLAIMS`) measured from ``rows``.

    Args:
        notebook: the notebook's stem (``02_augmax_dubin``).
        rows: row name -> one entry per seed (an ``ExperimentResult`` or per-unit values); the
            seeds of two rows a claim compares are paired in order.
        save: a `studykit.viz.FigureSaver`: the table goes to ``claims.csv`` / ``claims.md``.
        keys: only these claims (default: all of the notebook's).
        seed: seeds the bootstrap.

    Returns:
        One row per claim, columns `COLUMNS`.
    """
    chosen = claims_of(notebook)
    if keys is not None:
        known = {c.key for c in chosen}
        bad = sorted(set(keys) - known)
        if bad:
            raise ValueError(f"unknown claim(s) {bad} for {notebook}; choose from {sorted(known)}")
        chosen = [c for c in chosen if c.key in keys]
    table = pd.DataFrame([measure_claim(c, rows, seed=seed) for c in chosen],
                         columns=list(COLUMNS))
    for c in ("measured", "low", "high"):
        table[c] = table[c].astype(float).round(3)
    if save is not None:
        n_seeds = sorted({int(s) for s in table["seeds"] if s})
        save.table(table.set_index("claim"), "claims", floatfmt=".2f",
                   caption=f"Claims of the papers tested by this notebook: the measured difference "
                           f"(row a minus row b), its 95 % interval and the verdict the interval "
                           f"supports (`shown`, `opposite`, `not resolved` when it covers 0). "
                           f"Seeds per claim: {n_seeds or 'none'}.")
    for r in table.itertuples():
        log.info("claim %s: %s (%.2f [%.2f, %.2f])", r.key, r.verdict, r.measured, r.low, r.high)
    return table


def read_claims(figures: Path) -> pd.DataFrame:
    """Every notebook's ``claims.csv`` under a figures folder, with a ``notebook`` column."""
    parts = []
    for path in sorted(Path(figures).glob("[0-9][0-9]_*/claims.csv")):
        df = pd.read_csv(path)
        df.insert(0, "notebook", path.parent.name)
        parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["notebook", *COLUMNS])


__all__ = ["CLAIMS", "COLUMNS", "evaluate_claims", "measure_claim", "read_claims",
           "row_values", "unit_values"]
