"""The run store: a resolved config's hash -> a folder with its checkpoint, history and metrics.

Layout: ``runs/<dataset>/<method>/<hash>/`` holding ``config.json`` (the resolved config plus
package versions and the git revision), ``checkpoint.pt`` (resumable, written every epoch),
``checkpoint.pt.sha256`` (the checkpoint's digest, checked on load: ``studykit.run_integrity``),
``history.csv``, ``metrics.json``, evaluation tables (``*.csv``), and ``DONE`` once training has
finished. ``lock`` serializes work on one run across processes (two papermill runs asking for
the same config do not both train it): the second waits and then finds the run done.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from studykit import distributed
from studykit.locks import file_lock
from studykit.paths import project_root, runs_root

log = logging.getLogger(__name__)

HASH_LEN = 12


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-serializable config (key order does not matter)."""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def environment_info() -> dict[str, str]:
    """Package versions and the git revision, recorded next to each run."""
    import numpy
    import torch

    import studykit

    info = {"studykit": studykit.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__}
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project_root(),
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            info["git"] = rev.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=project_root(), capture_output=True, text=True, timeout=5)
            if dirty.stdout.strip():
                info["git"] += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return info


class RunStoreError(OSError):
    """The run store cannot be written (read-only, full disk): the message says which path."""


def store_writable(path: Path) -> bool:
    """Whether files can be created in ``path`` (or, if it does not exist yet, in the nearest
    existing folder above it)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return os.access(p, os.W_OK)


_warned_damaged: set[str] = set()


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``; None when it is missing or damaged. A damaged file is moved
    aside (``<name>.corrupt-<time>``, when the folder is writable) with one warning, so the
    caller recomputes what it held."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if str(path) not in _warned_damaged:
            _warned_damaged.add(str(path))
            log.warning("%s is damaged (%s); recomputing what it held", path, e)
        if os.access(path.parent, os.W_OK) and distributed.is_main():
            os.replace(path, path.with_name(f"{path.name}.corrupt-{time.time_ns()}"))
        return None


def digest_path(checkpoint: Path) -> Path:
    """Where the sha256 of ``checkpoint`` is recorded when it is written
    (``studykit.run_integrity``): ``<name>.sha256`` next to it."""
    return checkpoint.with_name(checkpoint.name + ".sha256")


class Run:
    """One run's folder.

    Args:
        config: the resolved training config (must hold ``dataset`` and ``method``).
        root: the store's root (default ``runs/`` of the project, or ``$STUDYKIT_RUNS``).
    """

    def __init__(self, config: Mapping[str, Any], root: str | os.PathLike | None = None) -> None:
        self.config = dict(config)
        self.hash = config_hash(self.config)
        self.root = root
        base = Path(root) if root is not None else runs_root()
        dataset = str(self.config.get("dataset", "unknown")).replace(":", "_").replace("/", "_")
        self.dir = base / dataset / str(self.config.get("method", "unknown")) / self.hash

    checkpoint = property(lambda self: self.dir / "checkpoint.pt")
    history_csv = property(lambda self: self.dir / "history.csv")
    metrics_json = property(lambda self: self.dir / "metrics.json")
    done_marker = property(lambda self: self.dir / "DONE")

    @property
    def store(self) -> RunStore:
        """The store this run is in (where runs derived from it, e.g. a decoder trained on
        its model, are kept)."""
        return RunStore(self.root)

    @property
    def is_done(self) -> bool:
        return self.done_marker.exists() and self.checkpoint.exists()

    def require_writable(self, what: str) -> None:
        """Raise `RunStoreError` (one line) when this run's folder cannot be written."""
        if not self.writable:
            raise RunStoreError(f"cannot {what} in {self.dir}: the run store is read-only "
                                "(point runs_root or $STUDYKIT_RUNS at a writable folder)")

    def write_config(self, **extra: Any) -> None:
        """Write ``config.json`` (config, hash, package versions, git revision, ``extra``)."""
        self.require_writable("train")
        self.dir.mkdir(parents=True, exist_ok=True)
        payload = {"config": self.config, "hash": self.hash, "environment": environment_info(),
                   **extra}
        write_json_atomic(self.dir / "config.json", payload)

    def stored_data_fingerprint(self) -> str | None:
        """The data fingerprint recorded when the run was trained (None if not recorded)."""
        stored = read_json(self.dir / "config.json")
        return stored.get("data_fingerprint") if isinstance(stored, dict) else None

    def mark_done(self) -> None:
        write_text_atomic(self.done_marker, f"{time.time_ns()}\n", "marker")

    def done_stamp(self) -> str:
        """When training finished (changes whenever the run is retrained)."""
        return self.done_marker.read_text().strip() if self.done_marker.exists() else ""

    def discard_checkpoint(self, reason: str) -> None:
        """Move an unusable checkpoint aside (kept for inspection), forget 'done', and drop the
        evaluations of the discarded model."""
        if self.checkpoint.exists():
            bad = self.checkpoint.with_name(f"checkpoint.corrupt-{time.time_ns()}.pt")
            os.replace(self.checkpoint, bad)
            if digest_path(self.checkpoint).exists():  # kept with it, for inspection
                os.replace(digest_path(self.checkpoint), digest_path(bad))
            log.warning("checkpoint of run %s unusable (%s); moved to %s and retraining",
                        self.hash, reason, bad.name)
        digest_path(self.checkpoint).unlink(missing_ok=True)
        self.done_marker.unlink(missing_ok=True)
        shutil.rmtree(self.dir / "eval", ignore_errors=True)
        self.metrics_json.unlink(missing_ok=True)

    def read_metrics(self) -> dict[str, Any]:
        stored = read_json(self.metrics_json)
        return stored if isinstance(stored, dict) else {}

    @property
    def writable(self) -> bool:
        """Whether this process may write the run: the store is writable and, under torchrun,
        this is rank 0 (``studykit.distributed``; the other ranks read what it writes)."""
        return distributed.is_main() and store_writable(self.dir)

    def update_metrics(self, new: Mapping[str, Any]) -> dict[str, Any]:
        metrics = self.read_metrics()
        metrics.update(new)
        write_json_atomic(self.metrics_json, metrics)
        return metrics

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """Exclusive inter-process lock on this run (``fcntl.flock`` on ``<run>/lock``).

        In a store this process cannot write (a colleague's runs mounted read-only) there is
        nothing to serialize and no lock file can be made: the block runs without a lock, and
        whatever it tries to write fails with `RunStoreError`.

        Raises:
            TimeoutError: when ``timeout`` seconds pass without getting the lock.
        """
        if not self.writable:
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.dir / "lock", what=f"run {self.hash}", timeout=timeout):
            yield

    def __repr__(self) -> str:
        return f"Run({self.dir})"


class RunStore:
    """A run store: ``store(config)`` is the `Run` of ``config`` in it.

    What a network's pretraining (``studykit.nets.corruption_net``,
    ``studykit.nets.autoencoder``) is given to keep its run in, so it never needs to know where
    the store is.

    Args:
        root: the store's root (default ``runs/`` of the project, or ``$STUDYKIT_RUNS``).
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = root

    def __call__(self, config: Mapping[str, Any]) -> Run:
        return Run(config, root=self.root)

    def __repr__(self) -> str:
        return f"RunStore({self.root!r})"


def write_atomic(path: Path, write: Callable[[Path], None], what: str = "file") -> None:
    """Write ``path`` through ``write(tmp)`` and a rename, so readers never see half a file: the
    one atomic writer of the kit (text, JSON, CSV, ``torch.save``: the functions below).

    The folder is created if missing. On any failure (a full disk, a read-only folder, Ctrl-C)
    the temporary file is removed and ``path`` keeps its previous content; a failed write
    raises `RunStoreError` naming the path (and "no space left on device" when that is why).
    """
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):
            raise RunStoreError(_write_failure(path, e, what)) from e
        raise


def _write_failure(path: Path, e: BaseException, what: str) -> str:
    # torch.save reports a full disk as RuntimeError("... iostream error"), without errno.
    nospace = getattr(e, "errno", None) == errno.ENOSPC
    if not nospace and not isinstance(e, PermissionError):
        with contextlib.suppress(OSError):
            nospace = shutil.disk_usage(path.parent).free < 16 * 2**20
    if nospace:
        return f"could not write {what} {path}: no space left on device"
    if isinstance(e, PermissionError) or getattr(e, "errno", None) == errno.EROFS:
        return f"could not write {what} {path}: the folder is read-only"
    return f"could not write {what} {path}: {e}"


def write_text_atomic(path: Path, text: str, what: str = "file") -> None:
    """``path.write_text(text)`` through a temporary file (`write_atomic`)."""
    write_atomic(path, lambda tmp: tmp.write_text(text), what)


def write_bytes_atomic(path: Path, data: bytes, what: str = "file") -> None:
    """``path.write_bytes(data)`` through a temporary file (`write_atomic`)."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data), what)


def write_csv_atomic(df: Any, path: Path) -> None:
    """``df.to_csv(path)`` through a temporary file (`write_atomic`)."""
    write_atomic(path, lambda tmp: df.to_csv(tmp, index=False), "table")


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON through a temporary file (`write_atomic`)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    write_text_atomic(path, text)


def save_torch_atomic(path: Path, obj: Any, what: str = "file") -> None:
    """``torch.save(obj, path)`` through a temporary file (`write_atomic`): checkpoints and
    cached tensors."""
    import torch

    write_atomic(path, lambda tmp: torch.save(obj, tmp), what)


def stored_runs(root: str | os.PathLike | None = None) -> Any:
    """One row per finished run in the store: its setting, method options and metrics.

    Metrics merge every stored evaluation of the run (``eval/*/metrics.json``) with the run's
    ``metrics.json`` (the latest evaluation wins where they overlap). Unreadable or unfinished
    runs are skipped.

    Returns:
        Columns ``dataset, method, arch, width, n_train, epochs, seed, hash, options`` (the
        method's config, a dict), ``dir``, then one column per metric.
    """
    import pandas as pd

    base = Path(root) if root is not None else runs_root()
    rows = []
    for cfg_path in sorted(base.glob("*/*/*/config.json")):
        run_dir = cfg_path.parent
        if not (run_dir / "DONE").exists():
            continue
        stored = read_json(cfg_path)
        cfg = stored.get("config") if isinstance(stored, dict) else None
        if not isinstance(cfg, dict):
            continue
        metrics: dict[str, Any] = {}
        for ev in sorted(run_dir.glob("eval/*/metrics.json")):
            got = read_json(ev)
            metrics.update(got if isinstance(got, dict) else {})
        top = read_json(run_dir / "metrics.json")
        metrics.update(top if isinstance(top, dict) else {})
        metrics.pop("eval_key", None)
        rows.append({"dataset": cfg.get("dataset"), "method": cfg.get("method"),
                     "arch": cfg.get("arch"), "width": cfg.get("width"),
                     "n_train": cfg.get("n_train"), "epochs": cfg.get("epochs"),
                     "seed": cfg.get("seed"), "hash": run_dir.name,
                     "options": cfg.get("method_config") or {}, "dir": str(run_dir), **metrics})
    return pd.DataFrame(rows)
