"""An inter-process file lock (``fcntl.flock``), shared by the run store and the data caches.

Two processes asking for the same run, or generating the same cached dataset on a fresh
machine, take turns: the second waits, then finds the work done.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path, *, what: str = "", timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    Args:
        path: the lock file; its folder must exist.
        what: named in the log line when another process holds the lock.
        timeout: seconds to wait at most (None: wait as long as it takes).

    Raises:
        TimeoutError: when ``timeout`` seconds pass without getting the lock.
    """
    with open(path, "a+") as fh:
        t0 = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log.info("%s is busy in another process; waiting", what or path)
                    announced = True
                if timeout is not None and time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"{what or path} stayed locked for {timeout} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
