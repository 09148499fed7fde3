"""Notebook 08's benchmark: every method of the registry on one recipe, evaluated the same way.

``ROWS`` names the runs (label -> ``run_experiment`` options). They are the runs notebooks 01-07
train, so that after those notebooks the benchmark trains nothing new at the quick profile; under
``paper`` the notebook asks for the common recipe (``paper="bench"``), one budget for all.
``benchmark_table`` puts every evaluation in one row per run: clean accuracy, RA, plain and
normalized mCE (against standard training, as Hendrycks & Dietterich), Linf and L2 PGD, the
worst-of-10 spatial attack, CIFAR-10.1 when its files are present, and certified accuracy for
the Gaussian-trained rows. ``claim_rows`` gives the per-image values the claims of notebook 08
are measured on (`studykit.claims`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import torch

from studykit import evaluation
from studykit.claims import unit_values
from studykit.comparison import eps_columns

# The rows of the benchmark: label -> run_experiment options, each as the notebook that studies
# the method trains it (same options: same run).
ROWS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "standard": {"method": "standard"},                                   # 01
    "augmix": {"method": "augmix"},                                       # 01
    "augmax-dubin": {"method": "augmax"},                                 # 02
    "pgd_at": {"method": "pgd_at"},                                       # 02 (Linf 8/255)
    "augmix_pgdat": {"method": "augmix_pgdat"},                           # 03
    "advmix": {"method": "advmix"},                                       # 03
    "advmax": {"method": "advmax"},                                       # 03
    "pgd_at_l2": {"method": "pgd_at", "preset": "l2_1.0"},               # 04
    "robust_augmix": {"method": "robust_augmix"},                         # 04
    "maxup": {"method": "maxup", "augmentation": "cutout", "m": 4},       # 05
    "gauss": {"method": "maxup", "augmentation": "gauss", "m": 1},        # 05
    "maxup-gauss": {"method": "maxup", "augmentation": "gauss", "m": 4},  # 05
    "deepaugment": {"method": "deepaugment"},                             # 06
    "ada": {"method": "ada"},                                             # 06
    "advbn": {"method": "advbn"},                                         # 07
})
# Trained on Gaussian noise: their smoothed classifiers are certified (MaxUp Table 6).
GAUSSIAN_ROWS = ("gauss", "maxup-gauss")
BASELINE = "standard"


def check_rows(labels: Sequence[str]) -> list[str]:
    """``labels`` as a list, each a key of ``ROWS`` (``standard`` first: every normalized number
    is relative to it).

    Raises:
        ValueError: an unknown label, or no ``standard`` row.
    """
    if isinstance(labels, str):
        labels = [labels]
    bad = [lb for lb in labels if lb not in ROWS]
    if bad:
        raise ValueError(f"unknown benchmark row(s) {bad}; choose from: {', '.join(ROWS)}")
    if BASELINE not in labels:
        raise ValueError(f"the rows must include {BASELINE!r} (mCE is normalized by it); got "
                         f"{list(labels)}")
    return [BASELINE, *[lb for lb in dict.fromkeys(labels) if lb != BASELINE]]


def benchmark_table(results: Mapping[str, Any], *, l2: Mapping[str, Any] | None = None,
                    spatial: Mapping[str, torch.Tensor] | None = None,
                    shifted: Mapping[str, torch.Tensor] | None = None,
                    certified: Mapping[str, Mapping[float, float]] | None = None,
                    baseline: str = BASELINE) -> pd.DataFrame:
    """One row per run, every evaluation side by side (%).

    Args:
        results: label -> ``ExperimentResult`` evaluated on every corruption and under Linf PGD
            (the default evaluation).
        l2: label -> the same run evaluated under L2 PGD (its ``adversarial`` curve).
        spatial: label -> per-image outcome under the worst-of-10 spatial attack.
        shifted: label -> per-image outcome on CIFAR-10.1 (None: absent).
        certified: label -> {radius: certified accuracy} (the Gaussian-trained rows).
        baseline: the row mCE is normalized by.

    Columns: ``clean``, ``RA``, ``mCE`` (100 - RA), ``mCE vs <baseline>`` and ``relative mCE``
    (Hendrycks & Dietterich, normalized by the baseline's errors; 100 = as the baseline), one
    column per eps > 0 of each PGD curve, ``spatial``, ``CIFAR-10.1``, ``certified@<r>``; a
    column is left out when nothing was measured for it.
    """
    base = results.get(baseline)
    rows = {}
    for label, r in results.items():
        row = {"clean": r.metrics["clean_acc"], "RA": r.metrics.get("ra", np.nan),
               "mCE": r.metrics.get("mce", np.nan)}
        if base is not None and r.corruption is not None and base.corruption is not None:
            row[f"mCE vs {baseline}"] = evaluation.normalized_mce(r.corruption, base.corruption)
            row["relative mCE"] = evaluation.relative_mce(
                r.corruption, r.clean_acc_for_corruptions, base.corruption,
                base.clean_acc_for_corruptions)
        l2_run = (l2 or {}).get(label)
        for curve in (r.adversarial, l2_run.adversarial if l2_run is not None else None):
            if curve is not None:
                row.update(eps_columns(curve))
        if spatial and label in spatial:
            row["spatial"] = 100.0 * float(spatial[label].float().mean())
        if shifted and label in shifted:
            row["CIFAR-10.1"] = 100.0 * float(shifted[label].float().mean())
        for radius, acc in ((certified or {}).get(label) or {}).items():
            row[f"certified@{radius:g}"] = acc
        rows[label] = row
    table = pd.DataFrame(rows).T
    return table.dropna(axis=1, how="all")


def severity_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Mean accuracy (%) over the 15 benchmark corruptions at each severity (columns 1-5), with
    severity 0 the clean accuracy on the same images; one row per run."""
    rows = {}
    for label, r in results.items():
        t = r.corruption[r.corruption["corruption"].isin(evaluation.BENCHMARK_CORRUPTIONS)]
        rows[label] = {0: r.clean_acc_for_corruptions,
                       **t.groupby("severity")["accuracy"].mean().to_dict()}
    table = pd.DataFrame(rows).T
    table.columns.name = "severity"
    return table


def drop_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Accuracy lost (%) to each corruption, mean over severities: rows corruptions, columns
    runs (clean accuracy on the same images minus the corrupted accuracy)."""
    from studykit.viz.drops import corruption_drops

    return corruption_drops({k: r.corruption for k, r in results.items()},
                            {k: r.clean_acc_for_corruptions for k, r in results.items()})


def claim_rows(results: Mapping[str, Any], *, l2: Mapping[str, Any] | None = None,
               spatial: Mapping[str, torch.Tensor] | None = None,
               shifted: Mapping[str, torch.Tensor] | None = None) -> dict[str, list[dict]]:
    """The per-image values (%) of every row for the claims of notebook 08: ``clean_acc``,
    ``ra``, ``mce``, ``adv/linf/<eps>``, ``adv/l2/0.5``, ``spatial`` and ``cifar10.1`` where
    measured (`studykit.claims.evaluate_claims`; one seed)."""
    rows = {}
    for label, r in results.items():
        values = {m: unit_values(r, m) for m in ("clean_acc", "ra", "mce")}
        if l2 and label in l2:
            values["adv/l2/0.5"] = unit_values(l2[label], "adv/l2/0.5")
        if spatial and label in spatial:
            values["spatial"] = 100.0 * spatial[label].double().numpy()
        if shifted and label in shifted:
            values["cifar10.1"] = 100.0 * shifted[label].double().numpy()
        rows[label] = [values]
    return rows
