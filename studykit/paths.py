"""Where the kit reads and writes: the project root, data, runs and figures folders.

Notebooks run with their own folder as the working directory in JupyterLab and with the
repository root under ``studykit study``; both must find the same ``data/``, ``runs/`` and
``figures/``. So paths resolve against the project root: ``$STUDYKIT_ROOT`` if set, else the
nearest ancestor of the working directory that holds both ``pyproject.toml`` and
``notebooks/``, else the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    env = os.environ.get("STUDYKIT_ROOT")
    if env:
        return Path(env)
    cwd = Path.cwd().resolve()
    for p in (cwd, *cwd.parents):
        if (p / "pyproject.toml").is_file() and (p / "notebooks").is_dir():
            return p
    return cwd


def data_root() -> Path:
    """``$STUDYKIT_DATA`` or ``<project root>/data``: datasets and generated caches."""
    return Path(os.environ.get("STUDYKIT_DATA") or project_root() / "data")


def runs_root() -> Path:
    """``$STUDYKIT_RUNS`` or ``<project root>/runs``: the run store."""
    return Path(os.environ.get("STUDYKIT_RUNS") or project_root() / "runs")


#: The real-image file the tests, benchmarks and notebook 00 use when it is present: a
#: JPEG-75 copy of 20k CIFAR-10 training and 10k test images, kept beside the checkout.
REAL_NPZ_ENV = "STUDYKIT_SHARED_NPZ"
_REAL_NPZ_NAME = "cifar10_jpeg75_20k.npz"


def real_data_npz(path: str | os.PathLike = "") -> Path:
    """The real-image npz file: ``path`` if given (relative to the project root), else
    ``$STUDYKIT_SHARED_NPZ``, else ``shared/data/cifar10_jpeg75_20k.npz`` in the folder that holds
    the project. It may not exist; callers skip what needs it."""
    if path:
        return project_root() / path
    env = os.environ.get(REAL_NPZ_ENV)
    if env:
        return Path(env)
    return project_root().parent / "shared" / "data" / _REAL_NPZ_NAME
