"""The run store: a resolved config's hash -> a folder with its checkpoint, history and metrics.

Layout: ``runs/<dataset>/<method>/<hash>/`` holding ``config.json`` (the resolved config plus
package versions and the git revision), ``checkpoint.pt`` (resumable, written every epoch),
``history.csv``, ``metrics.json``, evaluation tables (``*.csv``), and ``DONE`` once training has
finished. ``lock`` serializes work on one run across processes (two papermill runs asking for
the same config do not both train it): the second waits and then finds the run done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

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


class Run:
    """One run's folder.

    Args:
        config: the resolved training config (must hold ``dataset`` and ``method``).
        root: the store's root (default ``runs/`` of the project, or ``$STUDYKIT_RUNS``).
    """

    def __init__(self, config: Mapping[str, Any], root: str | os.PathLike | None = None) -> None:
        self.config = dict(config)
        self.hash = config_hash(self.config)
        base = Path(root) if root is not None else runs_root()
        dataset = str(self.config.get("dataset", "unknown")).replace(":", "_").replace("/", "_")
        self.dir = base / dataset / str(self.config.get("method", "unknown")) / self.hash

    checkpoint = property(lambda self: self.dir / "checkpoint.pt")
    history_csv = property(lambda self: self.dir / "history.csv")
    metrics_json = property(lambda self: self.dir / "metrics.json")
    done_marker = property(lambda self: self.dir / "DONE")

    @property
    def is_done(self) -> bool:
        return self.done_marker.exists() and self.checkpoint.exists()

    def write_config(self, **extra: Any) -> None:
        """Write ``config.json`` (config, hash, package versions, git revision, ``extra``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        payload = {"config": self.config, "hash": self.hash, "environment": environment_info(),
                   **extra}
        write_json_atomic(self.dir / "config.json", payload)

    def stored_data_fingerprint(self) -> str | None:
        """The data fingerprint recorded when the run was trained (None if not recorded)."""
        path = self.dir / "config.json"
        if not path.exists():
            return None
        return json.loads(path.read_text()).get("data_fingerprint")

    def mark_done(self) -> None:
        self.done_marker.write_text(f"{time.time_ns()}\n")

    def done_stamp(self) -> str:
        """When training finished (changes whenever the run is retrained)."""
        return self.done_marker.read_text().strip() if self.done_marker.exists() else ""

    def discard_checkpoint(self, reason: str) -> None:
        """Move an unusable checkpoint aside (kept for inspection), forget 'done', and drop the
        evaluations of the discarded model."""
        if self.checkpoint.exists():
            bad = self.checkpoint.with_name(f"checkpoint.corrupt-{int(time.time())}.pt")
            os.replace(self.checkpoint, bad)
            log.warning("checkpoint of run %s unusable (%s); moved to %s and retraining",
                        self.hash, reason, bad.name)
        self.done_marker.unlink(missing_ok=True)
        shutil.rmtree(self.dir / "eval", ignore_errors=True)
        self.metrics_json.unlink(missing_ok=True)

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics_json.exists():
            return {}
        return json.loads(self.metrics_json.read_text())

    def update_metrics(self, new: Mapping[str, Any]) -> dict[str, Any]:
        metrics = self.read_metrics()
        metrics.update(new)
        write_json_atomic(self.metrics_json, metrics)
        return metrics

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """Exclusive inter-process lock on this run (``fcntl.flock`` on ``<run>/lock``).

        Raises:
            TimeoutError: when ``timeout`` seconds pass without getting the lock.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a+") as fh:
            t0 = time.monotonic()
            announced = False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not announced:
                        log.info("run %s is busy in another process; waiting", self.hash)
                        announced = True
                    if timeout is not None and time.monotonic() - t0 > timeout:
                        raise TimeoutError(
                            f"run {self.dir} stayed locked for {timeout} s"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def __repr__(self) -> str:
        return f"Run({self.dir})"


def write_csv_atomic(df: Any, path: Path) -> None:
    """``df.to_csv(path)`` through a temporary file, so readers never see half a table."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
