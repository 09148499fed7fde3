"""Consistency of a stored run: what is checked before anything a run folder holds is used, and
what happens when a check fails.

A run folder can be damaged on disk (a flipped bit, a file cut short by a full disk or a killed
process), edited or copied by hand (another run's files under this run's hash), or left with
temporary files of a writer that died. Nothing found so is used silently:

- **checkpoints** are written with their sha256 recorded next to them (`save_checkpoint`,
  ``<name>.sha256``) and checked when read (`verify_checkpoint`); a mismatch is damage
  (`CheckpointError`): the caller moves the checkpoint aside, with one warning, and trains again;
- **the owner**: a folder whose ``config.json`` names another run (hash or config) is moved
  aside as a whole (`check_owner`), with one warning;
- **evaluation tables** that are empty, not CSV text, cut short or of other columns or row
  counts than the evaluation writes are moved aside with one warning (`read_table`), and the
  evaluation is computed again;
- **``history.csv``** missing or damaged is rewritten from the checkpoint's history
  (`repair_history`);
- **temporary files** (``<name>.tmp<pid>``) of writers that are no longer running are removed
  when a run is opened (`remove_stale_temp_files`).

Damaged JSON files are handled by ``studykit.runs.read_json`` (moved aside, recomputed).
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studykit.digests import file_digest
from studykit.runs import (
    RunStoreError,
    config_hash,
    digest_path,
    read_json,
    write_atomic,
    write_csv_atomic,
    write_json_atomic,
)

if TYPE_CHECKING:
    import pandas as pd

    from studykit.runs import Run

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used: truncated, corrupt, altered since it was written
    (its sha256 differs from the recorded one), or not the training's (other model, missing
    parts)."""


# --------------------------------------------------------------------------------------------
# Checkpoint digests

# The digest of the checkpoint file in place at each path, as this process wrote or verified
# it: what the next write records as "previous".
_in_place: dict[str, str] = {}


def save_checkpoint(path: str | os.PathLike, obj: Any, what: str = "checkpoint") -> None:
    """``torch.save(obj, path)`` through a temporary file (``studykit.runs.write_atomic``),
    with the file's sha256 recorded in ``<path>.sha256`` first.

    The record names the new digest and the previous one (the file still in place until the
    rename), so a process killed between the two writes leaves a checkpoint that still checks.

    Raises:
        RunStoreError: the checkpoint or its record could not be written (the previous
            checkpoint is kept).
    """
    import torch

    path = Path(path)
    written: list[str] = []

    def write(tmp: Path) -> None:
        torch.save(obj, tmp)
        digest = file_digest(tmp, "sha256")
        previous = _in_place.get(str(path)) if path.exists() else None
        if previous is None and path.exists():
            recorded = _recorded(path)
            previous = recorded[0] if recorded else None
        write_json_atomic(digest_path(path), {"sha256": digest, "previous": previous,
                                              "file": path.name})
        written.append(digest)

    write_atomic(path, write, what)
    _in_place[str(path)] = written[0]


def _recorded(path: Path) -> list[str] | None:
    """The digests ``path`` may have (the latest and the previous write), or None when none
    is recorded (written before digests were kept, or the record was damaged: moved aside)."""
    rec = read_json(digest_path(path))
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str):
        return None
    return [d for d in (rec.get("sha256"), rec.get("previous")) if isinstance(d, str)]


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check ``path`` against the sha256 recorded when it was written.

    A checkpoint without a record (written by an older studykit, or whose record was damaged)
    gets one now, when the folder can be written, so later reads are checked.

    Raises:
        CheckpointError: the file differs from what was written.
    """
    path = Path(path)
    digest = file_digest(path, "sha256")
    recorded = _recorded(path)
    if recorded is None:
        if os.access(path.parent, os.W_OK):
            try:
                write_json_atomic(digest_path(path), {"sha256": digest, "previous": None,
                                                      "file": path.name})
            except RunStoreError as e:
                log.debug("could not record the digest of %s: %s", path, e)
    elif digest not in recorded:
        raise CheckpointError(f"{path} is damaged: its sha256 {digest[:12]}... is not the "
                              f"{recorded[0][:12]}... recorded when it was written")
    _in_place[str(path)] = digest


# --------------------------------------------------------------------------------------------
# The folder as a whole


_TEMP = re.compile(r"\.tmp(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a name that is not a pid): leave it
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files (``<name>.tmp<pid>``) under ``folder`` whose writer is no
    longer running (killed while writing); to be called under the run's lock. Returns them."""
    removed = []
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        return removed
    for p in folder.rglob("*.tmp*"):
        m = _TEMP.search(p.name)
        if not m or not p.is_file() or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        try:
            p.unlink()
        except OSError:
            continue
        removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) of writers that are gone: %s", len(removed),
                 ", ".join(str(p.relative_to(folder)) for p in removed))
    return removed


def check_owner(run: Run) -> None:
    """Move the files of another run out of ``run``'s folder.

    ``config.json`` names the run a folder holds (its hash, and the config that hashes to it).
    When it names another run (a run copied into this hash's folder, a folder renamed by hand),
    everything in the folder but the lock moves to ``aside-<time>/`` with one warning, so this
    run is trained afresh rather than loaded from another's checkpoint. A damaged
    ``config.json`` is handled by ``read_json`` (moved aside; restored when the run loads).

    Raises:
        RunStoreError: the folder holds another run and the store is read-only.
    """
    path = run.dir / "config.json"
    stored = read_json(path) if path.exists() else None
    if stored is None:
        return
    cfg = stored.get("config") if isinstance(stored, dict) else None
    named = stored.get("hash") if isinstance(stored, dict) else None
    if isinstance(cfg, dict) and named == run.hash and config_hash(cfg) == run.hash:
        return
    if isinstance(cfg, dict):
        what = (f"config.json names run {named} (seed {cfg.get('seed')}, method "
                f"{cfg.get('method')}), whose config hashes to {config_hash(cfg)}")
    else:
        what = "config.json holds no run config"
    if not run.writable:
        raise RunStoreError(f"the stored run {run.dir} cannot be used ({what}), and the run "
                            "store is read-only, so it cannot be retrained there")
    aside = run.dir / f"aside-{time.time_ns()}"
    aside.mkdir()
    for entry in sorted(run.dir.iterdir()):
        if entry.name == "lock" or entry.name.startswith("aside-"):
            continue
        os.replace(entry, aside / entry.name)
    log.warning("run folder %s holds another run (%s); its files were moved to %s and run "
                "%s is trained afresh", run.dir, what, aside.name, run.hash)


# --------------------------------------------------------------------------------------------
# Tables

_warned: set[str] = set()


def move_aside(path: Path, problem: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning("%s is damaged (%s); recomputing what it held", path, problem)
    if os.access(path.parent, os.W_OK):
        os.replace(path, path.with_name(f"{path.name}.corrupt-{time.time_ns()}"))


def table_problem(path: Path, *, rows: int | None = None, columns: Sequence[str] | None = None,
                  cells: bool = True) -> str | None:
    """What is wrong with the CSV table at ``path`` (None: nothing): not text, empty, cut short
    (every table written here ends with a newline), other columns or another row count than
    expected, or (``cells``) a cell missing."""
    import pandas as pd

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not text: {e}"
    if not text.strip():
        return "empty"
    if not text.endswith("\n"):
        return "cut short: the last row is incomplete"
    try:
        df = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        return f"not a table: {' '.join(str(e).split())}"
    if columns is not None and list(df.columns) != list(columns):
        return f"columns {list(df.columns)}, expected {list(columns)}"
    if rows is not None and len(df) != rows:
        return f"{len(df)} rows, expected {rows}"
    if cells and df.isna().to_numpy().any():
        return "cells missing"
    return None


def read_table(path: Path, *, rows: int | None = None,
               columns: Sequence[str] | None = None) -> pd.DataFrame | None:
    """The stored table at ``path``; None when it is missing, or damaged (`table_problem`):
    then it is moved aside (``<name>.corrupt-<time>``) with one warning, so the caller
    computes it again."""
    import pandas as pd

    if not path.exists():
        return None
    problem = table_problem(path, rows=rows, columns=columns)
    if problem is not None:
        move_aside(path, problem)
        return None
    return pd.read_csv(path)


def repair_history(run: Run, history: Sequence[dict[str, Any]] | None) -> None:
    """Rewrite ``history.csv`` from ``history`` (the checkpoint's) when it is missing or
    damaged (moved aside, one warning). Nothing in a read-only store."""
    import pandas as pd

    if history is None or not run.writable:
        return
    path = run.history_csv
    df = pd.DataFrame(list(history))
    if path.exists():
        # A method's metric may be missing in some epochs: empty cells are not damage here.
        problem = table_problem(path, rows=len(df), columns=list(df.columns), cells=False)
        if problem is None:
            return
        move_aside(path, problem)
    else:
        log.warning("%s is missing; rewritten from the run's checkpoint", path)
    write_csv_atomic(df, path)
