"""Shared pytest fixtures and markers, and how the suite spreads over pytest-xdist workers.

``make test`` runs the suite on every core (``-n auto``, pyproject's addopts). Work goes out in
units (`UnitScheduling`): each notebook is one unit (its papermill execution, then the nbval
check and the browser test that reuse it), each other test module another (its module fixtures
are built once), the longest first, so that the notebooks, not a straggler, set the wall time.
Every process uses one torch thread per core it has to itself: two threads fighting over a
busy core make small ops 10-200x slower.

The notebooks run once per session (`notebook_session`), into one run store and one data
folder shared by every worker and every way of running them (papermill, nbval, JupyterLab),
so a smoke run that several notebooks use is trained and evaluated once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
from helpers import REPO, SHARED_DATA


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def _threads() -> int:
    """Torch threads per test process: the cores divided among the xdist workers (at most 2:
    the tests' models are small)."""
    return max(1, min(2, _cores() // _workers()))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which may be missing
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core (logical cores: CI's 2 vCPUs may be one physical core),
    at most 8 (the suite has about that many long units); $PYTEST_XDIST_AUTO_NUM_WORKERS wins."""
    env = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    return int(env) if env else max(1, min(8, _cores()))


def pytest_configure(config):
    # Notebook kernels and subprocesses inherit this: with one thread per worker, a kernel's
    # torch must not start one thread per core either.
    if _workers() > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(_threads()))


# Units of work (see the module docstring), longest first: the seconds each took on 2 cores
# with the browser tests (`make test`'s --durations, summed per unit). Units not listed follow
# in collection order.
_EXPECTED_SECONDS = {
    "notebook 08_benchmark": 120,  # trains every method when it runs first on its worker
    "notebook 00_data_and_corruptions": 82,
    "notebook 02_augmax_dubin": 82,
    "notebook 06_adversarial_augment": 67,
    "notebook 07_advbn": 54,
    "notebook 04_robust_augmix": 51,
    "notebook 03_diversity_and_hardness": 43,
    "notebook 05_maxup": 37,
    "notebook 01_baselines": 36,
    "test_user_errors.py": 33,
    "test_experiment.py": 32,
    "test_analysis.py": 27,
}


# The tests that run a notebook, in the order they run within its unit: papermill first (it
# trains the notebook's smoke runs), then nbval and the browser, which reuse them.
_NOTEBOOK_TESTS = ("test_notebook_runs_under_smoke", "test_nbval_rerun_reproduces",
                   "test_notebook_runs_in_jupyterlab")


def _notebook_rank(nodeid: str) -> int | None:
    name = nodeid.rsplit("::", 1)[-1]
    return next((i for i, t in enumerate(_NOTEBOOK_TESTS) if name.startswith(t)), None)


# Parametrized tests whose cases are each a unit of their own: seconds to minutes a case
# (one training step of every notebook's method under its paper's recipe), so one worker does
# not take them all.
_CASE_UNITS = ("test_one_step_under_the_paper_recipe[",)


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its notebook (every test that runs it), the case
    itself (`_CASE_UNITS`), or its module."""
    if _notebook_rank(nodeid) is not None and nodeid.endswith("]"):
        return "notebook " + nodeid.rsplit("[", 1)[1][:-1]
    module, _, name = nodeid.partition("::")
    if name.startswith(_CASE_UNITS):
        return module.rsplit("/", 1)[-1] + "::" + name
    return module.rsplit("/", 1)[-1]


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
    # Longest units first, each unit's tests together; within a notebook's unit papermill
    # first (a stable sort keeps the collection order within a module).
    def key(item):
        unit = unit_of(item.nodeid)
        return -_EXPECTED_SECONDS.get(unit, 0), unit, _notebook_rank(item.nodeid) or 0

    items.sort(key=key)


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before pytest-xdist's own choice
def pytest_xdist_make_scheduler(config, log):
    """Under the default ``--dist load``: hand out whole units (`unit_of`), in the order of
    the collection (longest first, above). xdist's ``loadgroup`` would do it with markers, but
    its way of tagging test ids has no effect under pytest 9."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False  # keep the longest-first order
    return UnitScheduling(config, log)


@pytest.fixture(scope="session")
def shared_npz() -> Path:
    """The JPEG-compressed CIFAR-10 subset: ``$STUDYKIT_SHARED_NPZ``, by default the copy in the
    shared folder next to the checkout; skips the test when absent."""
    path = SHARED_DATA
    if not path.exists():
        pytest.skip(f"real-data file not found: {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def _scratch_store(tmp_path_factory):
    """Nothing a test runs writes into the checkout: the run store and the data folder default
    to this session's temporary folders (a test may still point them elsewhere)."""
    base = tmp_path_factory.getbasetemp() / "scratch"
    with pytest.MonkeyPatch.context() as mp:
        for key, sub in (("STUDYKIT_RUNS", "runs"), ("STUDYKIT_DATA", "data")):
            if not os.environ.get(key):
                mp.setenv(key, str(base / sub))
        yield


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores: one torch thread per xdist worker, two without xdist.
    torch.set_num_threads(_threads())
    yield


# --------------------------------------------------------------------------------------------
# The notebooks, executed once per session
# --------------------------------------------------------------------------------------------
@dataclass
class NotebookRun:
    """One notebook executed by papermill under the smoke profile (`study.execute_notebook`)."""

    name: str
    output: Path  # the executed notebook
    figures: Path  # the folder its figures went to
    seconds: float
    ok: bool
    error: str = ""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class NotebookSession:
    """A folder shared by every xdist worker of this session: one run store and data folder for
    every notebook kernel, and each notebook's papermill execution, done once (the first test
    that asks runs it; a test on another worker asking meanwhile waits for it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("runs", "data", "executed", "results", "locks"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def env(self, figures: str) -> dict[str, str]:
        """What a notebook kernel needs: this session's run store and data, the repository as
        the project root, and a figures folder of its own (``figures/<figures>``)."""
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        return {"STUDYKIT_ROOT": str(REPO), "STUDYKIT_RUNS": str(self.root / "runs"),
                "STUDYKIT_DATA": str(self.root / "data"),
                "STUDYKIT_FIGURES": str(self.root / "figures" / figures),
                # the checkout's package, also for a kernel whose working directory is not it
                "PYTHONPATH": path}

    def execute(self, path: Path) -> NotebookRun:
        from studykit import study

        result = self.root / "results" / f"{path.stem}.json"
        with _locked(self.root / "locks" / f"{path.stem}.lock"):
            if not result.exists():
                t0 = time.perf_counter()
                with _environ(self.env("papermill")):
                    r = study.execute_notebook(path, self.root / "executed", profile="smoke")
                run = NotebookRun(path.stem, r.output, self.root / "figures" / "papermill",
                                  time.perf_counter() - t0, r.ok, r.error)
                result.write_text(json.dumps(asdict(run), default=str))
        saved = json.loads(result.read_text())
        return NotebookRun(**{**saved, "output": Path(saved["output"]),
                              "figures": Path(saved["figures"])})


@pytest.fixture(scope="session")
def notebook_session(tmp_path_factory) -> NotebookSession:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above each worker's own
    return NotebookSession(base / "notebook-session")
