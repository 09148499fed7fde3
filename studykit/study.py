"""The batch runner behind ``studykit study``: execute the notebook series with papermill.

Each notebook in ``notebooks/`` (``NN_topic.ipynb``) is executed with its ``PROFILE`` parameter
set, into ``runs/notebooks/<profile>/``; figures are written by the notebooks themselves through
``studykit.viz.save_figure``. A summary (status and wall time per notebook) is written next to
the executed notebooks and logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from studykit.paths import project_root

log = logging.getLogger(__name__)

PROFILES_ALLOWED = ("smoke", "quick", "paper")


@dataclass
class NotebookResult:
    name: str
    output: Path
    seconds: float
    ok: bool
    error: str = ""


def list_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The series, in order: ``notebooks/NN_*.ipynb``."""
    d = Path(notebooks_dir) if notebooks_dir else project_root() / "notebooks"
    return sorted(p for p in d.glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(names: Sequence[str] | None, available: Sequence[Path]) -> list[Path]:
    """Pick notebooks by full stem or prefix (``00``, ``01_baselines``)."""
    if not names:
        return list(available)
    chosen = []
    for n in names:
        stem = Path(n).stem
        hits = [p for p in available if p.stem == stem or p.stem.startswith(stem)]
        if not hits:
            allowed = ", ".join(p.stem for p in available)
            raise ValueError(f"unknown notebook {n!r}; choose from: {allowed}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def execute_notebook(
    path: Path, output_dir: Path, *, profile: str, parameters: dict | None = None
) -> NotebookResult:
    """Run one notebook with papermill (kernel ``python3``, working directory the project root)."""
    import papermill

    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / path.name
    params = {"PROFILE": profile, **(parameters or {})}
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(path), str(out), parameters=params, kernel_name="python3",
            cwd=str(project_root()), progress_bar=False, log_output=False,
        )
        ok, err = True, ""
    except Exception as e:  # papermill raises PapermillExecutionError with the cell's traceback
        ok, err = False, f"{type(e).__name__}: {e}"
    return NotebookResult(path.stem, out, time.perf_counter() - t0, ok, err)


@contextlib.contextmanager
def _figures_for(profile: str) -> Iterator[Path]:
    """Where this study's notebooks write figures. Under ``smoke`` (unless $STUDYKIT_FIGURES
    is set) a new temporary folder for this run, handed to the notebook kernels through the
    environment they inherit, and taken back out afterwards."""
    from studykit import viz

    made = profile == "smoke" and not os.environ.get(viz.FIGURES_ENV)
    if made:
        os.environ[viz.FIGURES_ENV] = tempfile.mkdtemp(prefix="studykit-smoke-figures-")
    try:
        yield viz.figures_root(profile)
    finally:
        if made:
            os.environ.pop(viz.FIGURES_ENV, None)


def run_study(
    profile: str = "quick",
    notebooks: Sequence[str] | None = None,
    jobs: int = 1,
    output_dir: str | Path = "runs/notebooks",
    notebooks_dir: str | Path | None = None,
) -> list[NotebookResult]:
    """Execute the series (or the named notebooks) under ``profile``.

    Raises:
        ValueError: unknown profile or notebook.
        RuntimeError: when any notebook failed (after all have run).
    """
    if profile not in PROFILES_ALLOWED:
        allowed = ", ".join(PROFILES_ALLOWED)
        raise ValueError(f"unknown profile {profile!r}; choose one of: {allowed}")
    chosen = select_notebooks(notebooks, list_notebooks(notebooks_dir))
    if not chosen:
        raise ValueError("no notebooks found in notebooks/")
    out_dir = Path(output_dir)
    if not out_dir.is_absolute():
        out_dir = project_root() / out_dir
    out_dir = out_dir / profile
    log.info("running %d notebook(s) under profile %r into %s", len(chosen), profile, out_dir)

    def one(p: Path) -> NotebookResult:
        log.info("start %s", p.stem)
        r = execute_notebook(p, out_dir, profile=profile)
        log.info("%s %s in %.0f s", "done" if r.ok else "FAILED", p.stem, r.seconds)
        return r

    with _figures_for(profile) as figures:
        if jobs > 1:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(one, chosen))
        else:
            results = [one(p) for p in chosen]

    lines = ["| notebook | status | seconds |", "|---|---|---|"]
    lines += [f"| {r.name} | {'ok' if r.ok else 'FAILED'} | {r.seconds:.0f} |" for r in results]
    summary = out_dir / "summary.md"
    summary.write_text(f"# studykit study, profile `{profile}`\n\n" + "\n".join(lines) + "\n")
    log.info("executed notebooks in %s; figures in %s; summary %s", out_dir, figures, summary)
    failed = [r for r in results if not r.ok]
    if failed:
        msgs = "\n".join(f"{r.name}: {r.error[:2000]}" for r in failed)
        raise RuntimeError(f"{len(failed)} notebook(s) failed:\n{msgs}")
    return results
