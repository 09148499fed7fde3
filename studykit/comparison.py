"""Tables that compare runs: one row per run (or per setting of an ablation), in the layouts of
the papers' tables. Each takes ``ExperimentResult`` objects keyed by the label of their row
(``run_experiment``), except ``normalization_ablation``, which trains or loads its runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from studykit.corruptions import BENCHMARK_CORRUPTIONS
from studykit.evaluation import accuracy, mean_accuracy_by_corruption
from studykit.experiment import ExperimentResult, results_table, run_experiment
from studykit.methods import Method
from studykit.methods.augmax import AugMaxStrategy


def setup_label(method: Method) -> str:
    """What a run was trained with, for a table row: its normalization and its loss.

    ``"dubin, AugMax's loss"`` for AugMax and its Table-10 baselines; ``"bn, own loss"`` for
    AugMix (or its ``norm``) and for methods without a ``norm`` option (plain BN), e.g. PGD-AT.
    """
    norm = getattr(method.config, "norm", "bn")
    loss = "AugMax's loss" if isinstance(method, AugMaxStrategy) else "own loss"
    return f"{norm}, {loss}"


def metrics_table(results: Mapping[str, ExperimentResult],
                  columns: Sequence[str] = ("clean_acc", "ra", "mce"), *,
                  adversarial: bool = True) -> pd.DataFrame:
    """The metrics of each run (``results_table``), one row per label.

    Args:
        results: label -> result.
        columns: the metrics, in order (e.g. ``clean_acc``, ``ra``, ``mce``).
        adversarial: also every ``adv_<norm>@<eps>`` column, after ``columns``.
    """
    table = results_table(list(results.values()))
    table.index = list(results)
    adv = [c for c in table.columns if c.startswith("adv_")] if adversarial else []
    return table[list(columns) + adv]


def accuracy_table(results: Mapping[str, ExperimentResult],
                   metrics: Sequence[str] = ("clean_acc", "ra", "mce"), *,
                   sets: Mapping[str, torch.Tensor] | None = None, y: torch.Tensor | None = None,
                   seconds_per_epoch: bool = False) -> pd.DataFrame:
    """One row per run: its stored ``metrics``, its accuracy (%) on each image set of ``sets``
    (labels ``y``; e.g. a shifted test set), and the mean seconds per training epoch.

    Args:
        results: label -> result (its ``eval_model`` is evaluated on ``sets``).
        metrics: keys of ``result.metrics``.
        sets: column name -> images.
        y: labels of every set.
        seconds_per_epoch: add the mean of the history's ``seconds`` column.
    """
    rows = {}
    for label, r in results.items():
        row = {m: r.metrics[m] for m in metrics}
        row.update({name: accuracy(r.eval_model, x, y) for name, x in (sets or {}).items()})
        if seconds_per_epoch:
            row["seconds_per_epoch"] = r.history["seconds"].mean()
        rows[label] = row
    return pd.DataFrame(rows).T


def corruption_error_table(results: Mapping[str, ExperimentResult],
                           corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> pd.DataFrame:
    """AdA Table 1 layout: per run the seconds per training epoch, clean accuracy, RA and mCE
    (%), then the error (%) on each of ``corruptions`` averaged over severities."""
    errors = 100 - mean_accuracy_by_corruption(
        {label: r.corruption for label, r in results.items()}).loc[list(corruptions)]
    table = errors.T
    runs = list(results.values())
    table.insert(0, "mCE", [r.metrics["mce"] for r in runs])
    table.insert(0, "RA", [r.metrics["ra"] for r in runs])
    table.insert(0, "clean", [r.metrics["clean_acc"] for r in runs])
    table.insert(0, "s/epoch", [r.history["seconds"].mean() for r in runs])
    return table


def eps_columns(curve: pd.DataFrame) -> dict[str, float]:
    """An ``adversarial_curve``'s accuracy at every eps > 0, keyed ``Linf 8/255`` or
    ``L2 0.5`` (the column names of the adversarial tables)."""
    return {(f"Linf {255 * e:.0f}/255" if n == "linf" else f"{n.upper()} {e:g}"): a
            for n, e, a in zip(curve["norm"], curve["eps"], curve["accuracy"]) if e > 0}


def adversarial_table(results: Mapping[str, ExperimentResult],
                      curves: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """AdA Table 2 layout: per run the clean accuracy and the accuracy (%) at every eps > 0 of
    ``curves`` (label -> ``adversarial_curve``, e.g. L2 curves), then of its own stored curve
    (``result.adversarial``, Linf by default). Columns ``L2 0.5``, ``Linf 8/255``."""
    rows = {}
    for label, r in results.items():
        row = {"clean": r.metrics["clean_acc"]}
        for curve in ((curves or {}).get(label), r.adversarial):
            if curve is not None:
                row.update(eps_columns(curve))
        rows[label] = row
    return pd.DataFrame(rows).T


def normalization_ablation(norms: Sequence[str], seeds: Sequence[int], *,
                           methods: Sequence[str] = ("augmix", "augmax"),
                           **params: Any) -> pd.DataFrame:
    """AugMax Table 8: clean accuracy and RA of every method with every normalization, mean and
    standard deviation over ``seeds`` (each run trained or loaded by ``run_experiment``).

    Args:
        norms: the methods' ``norm`` option (e.g. ``bn``, ``dubn``, ``dubin``, ``ibn``).
        seeds: training seeds.
        methods: methods with a ``norm`` option.
        **params: further ``run_experiment`` parameters (``profile``, ...).

    Returns:
        Rows ``<method>-<norm>`` (methods, then norms, in the given order); columns
        ``clean_acc_mean, clean_acc_std, ra_mean, ra_std`` (std NaN with one seed).
    """
    rows = []
    for seed in seeds:
        for method in methods:
            for norm in norms:
                r = run_experiment(**params, method=method, norm=norm, seed=seed)
                rows.append({"method": f"{method}-{norm}", "seed": seed,
                             "clean_acc": r.metrics["clean_acc"], "ra": r.metrics["ra"]})
    table = pd.DataFrame(rows).groupby("method", sort=False)[["clean_acc", "ra"]].agg(
        ["mean", "std"])
    table.columns = [f"{a}_{b}" for a, b in table.columns]
    return table
