"""``sweep``: a grid of configurations (methods x seeds x options), each one a `run_experiment`
job launched with ``submitit`` on this machine or on a Slurm cluster, all into one run store.

Every job is one ``run_experiment(**params)`` call in its own process; the jobs share the run
store (``runs_root``, or ``$STUDYKIT_RUNS``), whose per-run lock (``studykit.locks``) lets two
jobs asking for the same run take turns: one trains, the other waits and loads it. The
notebooks then read the finished runs from the store (``studykit.runs.stored_runs``, or the
same ``run_experiment`` calls, which load instead of training).

    from studykit.sweep import sweep
    table = sweep({"method": ["standard", "augmix"], "seed": [0, 1, 2]}, profile="quick")

``submitit`` is an optional dependency (``pip install 'studykit[cluster]'``).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from studykit.experiment import resolve_config, run_experiment

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm")

__all__ = ["EXECUTORS", "expand_grid", "run_job", "sweep"]


def expand_grid(grid: Mapping[str, Sequence[Any]], common: Mapping[str, Any] | None = None
                ) -> list[dict[str, Any]]:
    """Every combination of ``grid``'s values (key -> list of values), each merged over
    ``common``; combinations that are the same parameters are kept once.

    Raises:
        ValueError: a key of ``grid`` maps to no value, or to a string instead of a list.
    """
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(f"grid[{key!r}] must be a list of values, got {values!r}")
        if not values:
            raise ValueError(f"grid[{key!r}] is empty; give at least one value")
    jobs: list[dict[str, Any]] = []
    for combo in itertools.product(*grid.values()):
        params = {**(common or {}), **dict(zip(grid, combo))}
        if params not in jobs:
            jobs.append(params)
    return jobs


def run_job(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep job: ``run_experiment(**params)``, returned as a picklable row (method, seed,
    the run's hash and folder, whether this job trained it, and the metrics)."""
    r = run_experiment(**params)
    t = r.config["train"]
    return {"method": t["method"], "seed": t["seed"], "arch": t["arch"], "hash": r.run.hash,
            "trained": r.trained, **{k: v for k, v in r.metrics.items()
                                     if isinstance(v, (int, float))}, "dir": str(r.run.dir)}


def _executor(kind: str, folder: Path, *, slurm_partition: str | None, gpus: int,
              cpus: int, timeout_min: int, slurm: Mapping[str, Any] | None) -> Any:
    try:
        import submitit
    except ImportError:
        raise ImportError("studykit sweep needs submitit: pip install 'studykit[cluster]'"
                          ) from None
    ex = submitit.AutoExecutor(folder=folder, cluster=kind)
    ex.update_parameters(name="studykit", timeout_min=timeout_min, gpus_per_node=gpus,
                         cpus_per_task=cpus, tasks_per_node=1, nodes=1)
    if kind == "slurm":
        extra: dict[str, Any] = {"slurm_additional_parameters": dict(slurm)} if slurm else {}
        if slurm_partition:
            extra["slurm_partition"] = slurm_partition
        ex.update_parameters(**extra)
    return ex


def sweep(grid: Mapping[str, Sequence[Any]], *, executor: str = "local",
          folder: str | os.PathLike | None = None, slurm_partition: str | None = None,
          gpus: int = 0, cpus: int = 1, timeout_min: int = 24 * 60,
          slurm: Mapping[str, Any] | None = None, wait: bool = True,
          report: Callable[[pd.DataFrame], None] | None = None,
          **common: Any) -> pd.DataFrame:
    """Launch one `run_experiment` job per combination of ``grid`` and collect the results.

    Args:
        grid: run_experiment keys -> the values to sweep, e.g. ``{"method": ["standard",
            "augmax"], "seed": [0, 1, 2], "norm": ["dubin"]}``.
        executor: ``local`` (each job a process on this machine, ``submitit.LocalExecutor``)
            or ``slurm`` (each job a Slurm job; ``sbatch`` must be on the PATH).
        folder: where submitit keeps each job's logs and pickles (default
            ``<runs store>/sweeps``).
        slurm_partition: the Slurm partition (``--partition``).
        gpus: GPUs per job (0: none requested; a local job then sees no GPU).
        cpus: CPU cores per job.
        timeout_min: each job's time limit in minutes.
        slurm: other ``sbatch`` options, e.g. ``{"account": "my-lab", "qos": "normal"}``.
        wait: wait for the jobs and return their results; False returns the job table alone.
        report: called with the job table as soon as the jobs are submitted, then with the
            results (the command line prints them).
        **common: run_experiment keys every job shares (``profile``, ``runs_root``, ...).

    Returns:
        One row per job: its parameters, ``job_id`` and, when ``wait``, the run's hash and
        folder, whether the job trained it (False: another job or an earlier sweep did) and
        its metrics.

    Raises:
        ValueError: an unknown executor, or a job's parameters that ``run_experiment`` rejects
            (every job is checked before any is submitted).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of: {', '.join(EXECUTORS)}")
    for name, value, low in (("gpus", gpus, 0), ("cpus", cpus, 1),
                             ("timeout_min", timeout_min, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    jobs = expand_grid(grid, common)
    for params in jobs:  # every mistake before any job starts
        resolve_config(**params)
    if folder is None:
        from studykit.paths import runs_root

        root = common.get("runs_root")
        folder = (Path(root) if root is not None else runs_root()) / "sweeps"
    ex = _executor(executor, Path(folder), slurm_partition=slurm_partition, gpus=gpus,
                   cpus=cpus, timeout_min=timeout_min, slurm=slurm)
    submitted = [ex.submit(run_job, params) for params in jobs]
    table = pd.DataFrame([{"job_id": job.job_id, **_shown(params)}
                          for job, params in zip(submitted, jobs)])
    log.info("submitted %d %s job(s); logs in %s", len(jobs), executor, folder)
    if report is not None:
        report(table)
    if not wait:
        return table
    rows = []
    for job, params in zip(submitted, jobs):
        try:
            rows.append({"job_id": job.job_id, **job.result()})
        except Exception as e:  # one failed job: its row says why, the others still count
            rows.append({"job_id": job.job_id, **_shown(params),
                         "error": " ".join(str(e).split())[-300:]})
    results = pd.DataFrame(rows)
    if report is not None:
        report(results)
    return results


def _shown(params: Mapping[str, Any]) -> dict[str, Any]:
    """A job's parameters for its row (the store's root is the same for every job)."""
    return {k: v for k, v in params.items() if k not in ("runs_root", "progress")}
