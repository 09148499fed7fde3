"""The batch runner behind ``studykit study``: execute the notebook series with papermill.

Each notebook in ``notebooks/`` (``NN_topic.ipynb``) is executed with its ``PROFILE`` parameter
set, into ``runs/notebooks/<profile>/``; figures are written by the notebooks themselves through
``studykit.viz.save_figure``. A summary (status and wall time per notebook) is written next to
the executed notebooks as ``summary.md`` (to read: each notebook's time, the figures it wrote and
the verdicts of its claims), ``summary.json`` and ``summary.csv`` (to parse), and logged.

A rerun continues from what is done: a notebook that finished in an earlier study of the same
output folder is not executed again while the notebook, its parameters and the package's source
are unchanged (``done.json`` beside the executed notebooks records them; ``rerun=True``, or
``studykit study --rerun``, executes every chosen notebook anyway). A failed notebook is
reported with its cell, and the others still run.

After a successful study the results page is rewritten (`studykit.results_page`):

* ``quick`` (the profile of the committed figures): each notebook's time is merged into
  ``<figures>/study_times.csv``, and the page goes to ``docs/results.md`` when the figures are
  the project's ``figures/`` (elsewhere, to ``results.md`` in the figures folder);
* ``smoke``: the page goes to the study's temporary figures folder, so a smoke study never
  changes a tracked file;
* ``paper``: no page (the committed figures and the page describe the ``quick`` profile).

With ``jobs`` notebooks at a time, each notebook's kernel gets an equal share of the cores
(``OMP_NUM_THREADS``, `kernel_threads`): two kernels of two intra-op threads each on two cores
lose more to contention than they gain, while with the quick profile's small CNN two of one
thread each do up to about 1.5 times the training work of one kernel of two threads
(``benchmarks/kernel_share.py``). A kernel keeps its share to the end, so when fewer notebooks
than ``jobs`` are left, cores idle.

With the page, the claims scorecard (``claims.md`` in the figures folder, `studykit.claims`) is
rewritten from the notebooks' ``claims.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from studykit import claims, profiles, results_page, threads
from studykit.paths import project_root

log = logging.getLogger(__name__)



@dataclass
class NotebookResult:
    name: str
    output: Path
    seconds: float
    ok: bool
    error: str = ""
    date: str = ""  # ISO date (UTC) on which it finished
    skipped: bool = False  # done in an earlier study (its recorded time and date)


DONE_FILE = "done.json"


def source_digest() -> str:
    """Digest of the package's Python source: a notebook done under other code runs again."""
    import studykit

    h = hashlib.sha256()
    root = Path(studykit.__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def notebook_digest(path: Path, profile: str, parameters: dict, source: str) -> str:
    """What decides whether a done notebook is done for this study: its file, its parameters
    and the package source (`source_digest`)."""
    h = hashlib.sha256(Path(path).read_bytes())
    h.update(json.dumps({"profile": profile, **parameters, "source": source},
                        sort_keys=True).encode())
    return h.hexdigest()[:16]


def _read_done(out_dir: Path) -> dict[str, dict]:
    try:
        done = json.loads((out_dir / DONE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return done if isinstance(done, dict) else {}


def _write_done(out_dir: Path, done: dict[str, dict]) -> None:
    tmp = out_dir / (DONE_FILE + ".tmp")
    tmp.write_text(json.dumps(done, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / DONE_FILE)


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
    return NotebookResult(path.stem, out, time.perf_counter() - t0, ok, err, _today())


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


# Environment variables that set a kernel's thread pools (torch's intra-op pool follows OMP's).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def kernel_threads(jobs: int, cores: int | None = None) -> int:
    """Threads per notebook kernel when ``jobs`` kernels share ``cores`` (default: this
    machine's usable cores): an equal share, at least one."""
    if cores is None:
        cores = threads.usable_cores()
    return max(1, cores // max(1, jobs))


@contextlib.contextmanager
def _thread_share(jobs: int) -> Iterator[None]:
    """With several notebooks at a time, the kernels started inside inherit a thread count of
    `kernel_threads` each (a variable the user set is kept); restored afterwards."""
    if jobs <= 1:
        yield
        return
    added = {k: str(kernel_threads(jobs)) for k in THREAD_VARS if k not in os.environ}
    os.environ.update(added)
    log.info("%d notebooks at a time: %s thread(s) per kernel", jobs,
             os.environ["OMP_NUM_THREADS"])
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


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
    dataset: str = "",
    rerun: bool = False,
) -> list[NotebookResult]:
    """Execute the series (or the named notebooks) under ``profile``.

    A notebook done by an earlier study into the same folder, with the same notebook file,
    parameters and package source, is skipped (its recorded time is kept) unless ``rerun``.

    With ``dataset`` (a dataset key or ``npz:<path>``), the notebooks that take a ``DATASET``
    parameter run on it with the profile's budgets; the others are left out. Their figures and
    claims scorecard go to ``<figures>/<dataset>/`` (`viz.dataset_folder`), beside the profile's
    own, and their executed copies to ``<output_dir>/<profile>/<dataset>/``; the results page
    and the recorded times stay those of the profile's dataset.

    Raises:
        ValueError: unknown profile, notebook or dataset.
        FileNotFoundError: no notebooks in the folder (a root that is not a checkout).
        RuntimeError: when any notebook failed (after all have run).
    """
    if profile not in profiles.list_profiles():
        allowed = ", ".join(profiles.list_profiles())
        raise ValueError(f"unknown profile {profile!r}; choose one of: {allowed}")
    available = list_notebooks(notebooks_dir)
    if not available:
        folder = Path(notebooks_dir) if notebooks_dir else project_root() / "notebooks"
        raise FileNotFoundError(
            f"no notebooks (NN_*.ipynb) in {folder}: studykit study runs the notebook series "
            "of a studykit checkout; run it in one, or set STUDYKIT_ROOT to one")
    chosen = select_notebooks(notebooks, available)
    params: dict[str, str] = {}
    if dataset:
        check_dataset(dataset)
        skipped = [p.stem for p in chosen if not takes_parameter(p, "DATASET")]
        if skipped:
            log.info("on dataset %s: leaving out %s (no DATASET parameter)", dataset,
                     ", ".join(skipped))
        chosen = [p for p in chosen if p.stem not in skipped]
        params["DATASET"] = dataset
    out_dir = Path(output_dir)
    if not out_dir.is_absolute():
        out_dir = project_root() / out_dir
    out_dir = out_dir / profile
    if dataset:
        from studykit.viz import dataset_folder

        out_dir = out_dir / dataset_folder(dataset)
    log.info("running %d notebook(s) under profile %r into %s", len(chosen), profile, out_dir)

    source = source_digest()
    done = _read_done(out_dir)
    done_lock = threading.Lock()
    started = time.perf_counter()
    count = iter(range(1, len(chosen) + 1))

    def one(p: Path) -> NotebookResult:
        with done_lock:
            i = next(count)
        digest = notebook_digest(p, profile, params, source)
        prev = done.get(p.stem, {})
        if not rerun and prev.get("digest") == digest and (out_dir / p.name).is_file():
            log.info("[%d/%d] %s: done earlier (%s, %.0f s); --rerun runs it again", i,
                     len(chosen), p.stem, prev.get("date", "?"), prev.get("seconds", 0.0))
            return NotebookResult(p.stem, out_dir / p.name, float(prev.get("seconds", 0.0)),
                                  True, "", str(prev.get("date", "")), skipped=True)
        log.info("[%d/%d] start %s (%.0f s into the study)", i, len(chosen), p.stem,
                 time.perf_counter() - started)
        r = execute_notebook(p, out_dir, profile=profile, parameters=params)
        log.info("[%d/%d] %s %s in %.0f s", i, len(chosen), "done" if r.ok else "FAILED",
                 p.stem, r.seconds)
        with done_lock:
            if r.ok:
                done[p.stem] = {"digest": digest, "seconds": round(r.seconds, 1),
                                "date": r.date}
            else:
                done.pop(p.stem, None)
            _write_done(out_dir, done)
        return r

    with _figures_for(profile) as figures, _thread_share(jobs):
        if jobs > 1:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(one, chosen))
        else:
            results = [one(p) for p in chosen]

    times = [results_page.NotebookTime(
        name=r.name, status="ok" if r.ok else "FAILED", seconds=round(r.seconds, 1),
        profile=profile, date=r.date or _today(), jobs=jobs) for r in results]
    fig_dir = figures
    if dataset:
        from studykit.viz import dataset_folder

        fig_dir = figures / dataset_folder(dataset)
    summary = write_summary(out_dir, times, figures=fig_dir,
                            skipped={r.name for r in results if r.skipped})
    log.info("executed notebooks in %s; figures in %s; summary %s", out_dir, figures, summary)
    failed = [r for r in results if not r.ok]
    if failed:
        msgs = "\n".join(f"{r.name}: {r.error[:2000]}" for r in failed)
        raise RuntimeError(f"{len(failed)} notebook(s) failed:\n{msgs}")
    if dataset:
        from studykit.viz import dataset_folder

        if profile != "paper":
            claims.write_scorecard(figures / dataset_folder(dataset), dataset=dataset)
    else:
        write_results(profile, figures, times, notebooks_dir)
    return results


def check_dataset(dataset: str) -> None:
    """A dataset the series can run on: a registered key, or ``npz:<path>`` of a file here.

    Raises:
        ValueError: otherwise, naming the allowed ones.
    """
    from studykit.data import list_datasets

    if dataset.startswith("npz:"):
        if not Path(dataset[4:]).is_file():
            raise ValueError(f"dataset {dataset!r}: no file at {dataset[4:]!r}")
        return
    allowed = [d for d in list_datasets() if not d.startswith("npz:")]
    if dataset not in allowed:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: "
                         f"{', '.join(allowed)}, or npz:<path>")


def takes_parameter(path: Path, name: str) -> bool:
    """Whether the notebook's ``parameters`` cell sets ``name``."""
    nb = json.loads(Path(path).read_text())
    for cell in nb.get("cells", []):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return any(line.split(":")[0].split("=")[0].strip() == name
                       for line in "".join(cell["source"]).splitlines())
    return False


def _verdicts(claims_csv: Path) -> str:
    """``"2 shown, 1 not resolved"`` from a notebook's claims.csv ("" when it has none)."""
    try:
        import pandas as pd

        counts = pd.read_csv(claims_csv)["verdict"].value_counts()
    except (OSError, ValueError, KeyError):
        return ""
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def write_summary(out_dir: Path, times: Sequence[results_page.NotebookTime], *,
                  figures: Path | None = None, skipped: set[str] | frozenset = frozenset()
                  ) -> Path:
    """``summary.md``, ``summary.json`` and ``summary.csv`` of one study in ``out_dir``: per
    notebook its status, seconds, profile, date and the number of notebooks run at once; the
    Markdown adds, from ``figures``, the figures each notebook's folder holds and the verdicts
    of its claims.

    Returns:
        The path of ``summary.md``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = times[0].profile if times else ""
    lines = ["| notebook | status | seconds | figures | claims |", "|---|---|---|---|---|"]
    for t in times:
        folder = Path(figures) / t.name if figures is not None else None
        pngs = len(list(folder.glob("*.png"))) if folder is not None and folder.is_dir() else 0
        verdicts = _verdicts(folder / "claims.csv") if folder is not None else ""
        status = f"{t.status} (done earlier)" if t.name in skipped else t.status
        lines.append(f"| {t.name} | {status} | {t.seconds:.0f} | {pngs} | {verdicts or '-'} |")
    total = sum(t.seconds for t in times)
    summary = out_dir / "summary.md"
    summary.write_text(f"# studykit study, profile `{profile}`\n\n" + "\n".join(lines)
                       + f"\n\nTotal: {total:.0f} s over {len(times)} notebook(s).\n")
    rows = [asdict(t) for t in times]
    (out_dir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    with (out_dir / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=results_page.TIME_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    for line in lines[2:]:
        log.info("summary %s", line)
    return summary


def write_results(profile: str, figures: Path, times: Sequence[results_page.NotebookTime],
                  notebooks_dir: str | Path | None = None) -> Path | None:
    """After a successful study: record the times and rewrite the results page (see the module
    docstring for where each profile writes). Returns the page, or None for ``paper``."""
    figures = Path(figures)
    figures.mkdir(parents=True, exist_ok=True)
    nb_dir = Path(notebooks_dir) if notebooks_dir else project_root() / "notebooks"
    if profile == "quick":
        results_page.merge_times(figures / results_page.TIMES_FILE, times)
        committed = figures.resolve() == (project_root() / "figures").resolve()
        out = project_root() / "docs" / "results.md" if committed else figures / "results.md"
        timings: Path | dict[str, results_page.NotebookTime] = figures / results_page.TIMES_FILE
    elif profile == "smoke":
        out, timings = figures / "results.md", {t.name: t for t in times}
    else:
        return None
    claims.write_scorecard(figures)
    page = results_page.write_results_page(figures, out, timings, notebooks_dir=nb_dir)
    log.info("results page %s", page)
    return page
