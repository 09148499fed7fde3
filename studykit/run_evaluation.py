"""A run's stored evaluation: clean, corruption and adversarial accuracy of a trained model
under the evaluation settings of its config, with the per-image outcomes behind them
(`studykit.outcomes`), computed once and kept in the run folder under a hash of the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from studykit import evaluation, outcomes
from studykit.data import ImageDataset
from studykit.methods import Method
from studykit.paths import data_root
from studykit.run_integrity import read_table
from studykit.runs import Run, config_hash, read_json, write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

# Bumped when what an evaluation computes or stores changes (3: per-image outcomes), so older
# stored evaluations are computed again rather than read.
EVAL_VERSION = 3


def evaluate_run(run: Run, cfg: dict[str, Any], model: nn.Module, method: Method,
                 ds: ImageDataset) -> tuple[dict[str, Any], pd.DataFrame | None,
                                            pd.DataFrame | None, dict[str, np.ndarray]]:
    """Evaluate (or load stored evaluation of) a trained model under ``cfg['eval']``.

    Results live in ``<run>/eval/<key>/``, keyed by the evaluation settings, the run's
    completion stamp (a retrained model is never judged by its predecessor's numbers) and
    whether released CIFAR-C files are present. Runs under the run's lock, so concurrent
    notebooks asking for the same evaluation compute it once. A stored evaluation with a
    damaged file (JSON, per-image outcomes, or a table that is empty, not CSV, cut short, or of
    other columns or row count than written) has it moved aside with one warning and is
    computed again; a damaged or missing ``metrics.json`` of the run is rewritten.
    """
    ev, rt = cfg["eval"], cfg["runtime"]
    released = any((data_root() / d).is_dir() for d in ("CIFAR-10-C", "CIFAR-100-C"))
    key = config_hash({**ev, "data_seed": cfg["train"]["data_seed"], "version": EVAL_VERSION,
                       "done": run.done_stamp(), "released_present": released})
    folder = run.dir / "eval" / key
    metrics_path = folder / "metrics.json"
    c_path, a_path = folder / "corruption.csv", folder / "adversarial.csv"
    o_path = folder / outcomes.FILE_NAME
    with run.lock():
        metrics = read_json(metrics_path)  # None when missing or damaged (moved aside)
        if isinstance(metrics, dict):
            stored = _stored_tables(ev, c_path, a_path)
            hits = None
            if stored is not None:
                hits = outcomes.load_outcomes(o_path, expected=_outcome_sizes(ev, ds, *stored))
            if hits is not None:
                if read_json(run.metrics_json) is None and run.writable:
                    run.update_metrics({**metrics, "eval_key": key})  # it was damaged
                return metrics, *stored, hits
        metrics, corr, adv, hits = _evaluate(cfg, method.eval_model(model), ds, rt["progress"])
        hits = {k: outcomes.as_array(v) for k, v in hits.items()}
        if not run.writable:
            log.warning("run store %s is read-only: this evaluation is not stored", run.dir)
            return metrics, corr, adv, hits
        folder.mkdir(parents=True, exist_ok=True)
        outcomes.save_outcomes(o_path, hits)
        if corr is not None:
            write_csv_atomic(corr, c_path)
        if adv is not None:
            write_csv_atomic(adv, a_path)
        write_json_atomic(folder / "spec.json", ev)
        write_json_atomic(metrics_path, metrics)
        run.update_metrics({**metrics, "eval_key": key})
    return metrics, corr, adv, hits


def _outcome_sizes(ev: Mapping[str, Any], ds: ImageDataset, corr: pd.DataFrame | None,
                   adv: pd.DataFrame | None) -> dict[str, int]:
    """The outcome vectors an evaluation under ``ev`` writes, and their lengths."""
    n = ds.x_test.shape[0]
    sizes = {"clean": n}
    if corr is not None:
        n_sub = min(ev["eval_corruption_images"] or n, n)
        sizes.update({outcomes.corruption_key(r.corruption, r.severity): n_sub
                      for r in corr.itertuples()})
    if adv is not None:
        n_adv = min(ev["eval_adversarial_images"] or n, n)
        sizes.update({outcomes.adv_key(r.norm, r.eps): n_adv for r in adv.itertuples()})
    return sizes


# The columns of the tables `_evaluate` writes.
_TABLE_COLUMNS = {"corruption": ("corruption", "severity", "accuracy", "source"),
                  "adversarial": ("norm", "eps", "steps", "accuracy")}


def _stored_tables(ev: Mapping[str, Any], c_path: Path, a_path: Path
                   ) -> tuple[pd.DataFrame | None, pd.DataFrame | None] | None:
    """A stored evaluation's tables; None when one it must have is missing or damaged (empty,
    not CSV, cut short, other columns or row count than `_evaluate` writes: moved aside with
    one warning), so that the evaluation is computed again."""
    from studykit.corruptions import list_corruptions

    c = ev["eval_corruptions"]
    corr = adv = None
    if c is not None:
        names = list_corruptions(c) if isinstance(c, str) else c
        corr = read_table(c_path, rows=len(names) * len(evaluation.SEVERITIES),
                          columns=_TABLE_COLUMNS["corruption"])
        if corr is None:
            return None
    if ev["eval_adversarial"] is not None:
        adv = read_table(a_path, rows=len(ev["eval_eps"]), columns=_TABLE_COLUMNS["adversarial"])
        if adv is None:
            return None
    return corr, adv


def _evaluate(cfg: dict[str, Any], net: nn.Module, ds: ImageDataset, progress: bool
              ) -> tuple[dict[str, Any], pd.DataFrame | None, pd.DataFrame | None,
                         dict[str, torch.Tensor]]:
    ev = cfg["eval"]
    hits = {"clean": evaluation.correct(net, ds.x_test, ds.y_test)}
    metrics: dict[str, Any] = {"clean_acc": 100.0 * float(hits["clean"].float().mean())
                               if len(hits["clean"]) else 0.0}
    corr = adv = None
    if ev["eval_corruptions"] is not None:
        sub = ds
        if ev["eval_corruption_images"] and ev["eval_corruption_images"] < ds.x_test.shape[0]:
            sub = ds.subset(n_test=ev["eval_corruption_images"], seed=cfg["train"]["data_seed"])
            # Accuracy drops compare like with like: clean accuracy on the same images.
            hits["clean_subset"] = evaluation.correct(net, sub.x_test, sub.y_test)
            metrics["clean_acc_subset"] = 100.0 * float(hits["clean_subset"].float().mean())
        per_set: dict[str, torch.Tensor] = {}
        corr = evaluation.corruption_table(net, sub, corruptions=ev["eval_corruptions"],
                                           root=data_root(), progress=progress, outcomes=per_set)
        hits.update({f"corruption/{k}": v for k, v in per_set.items()})
        if set(evaluation.BENCHMARK_CORRUPTIONS) <= set(corr["corruption"]):
            metrics["ra"] = evaluation.robust_accuracy(corr)
            metrics["mce"] = evaluation.mean_corruption_error(corr)
    if ev["eval_adversarial"] is not None:
        n = ev["eval_adversarial_images"] or ds.x_test.shape[0]
        per_eps: dict[float, torch.Tensor] = {}
        adv = evaluation.adversarial_curve(
            net, ds.x_test[:n], ds.y_test[:n], eps_list=ev["eval_eps"],
            norm=ev["eval_adversarial"], steps=ev["eval_pgd_steps"], progress=progress,
            outcomes=per_eps)
        hits.update({outcomes.adv_key(ev["eval_adversarial"], e): v for e, v in per_eps.items()})
        for row in adv.itertuples():
            metrics[f"adv_{row.norm}@{row.eps:.4g}"] = row.accuracy
    return metrics, corr, adv, hits
