"""`studykit.runs`, the run store below `run_experiment`: where a run lives, its lock, its
atomic writes and damaged files, and the table of stored runs."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys

import pytest

from studykit import runs as run_store
from studykit.runs import Run, config_hash


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYKIT_RUNS", str(tmp_path / "runs"))
    return tmp_path


CONFIG = {"dataset": "npz:/data/set.npz", "method": "standard", "seed": 0,
          "method_config": {"b": 2, "a": 1}, "lr": 0.1}


def test_run_folder_is_dataset_method_hash_and_the_hash_ignores_key_order(store):
    run = Run(CONFIG)
    reordered = {k: CONFIG[k] for k in reversed(CONFIG)}
    reordered["method_config"] = {"a": 1, "b": 2}
    assert Run(reordered).hash == run.hash == config_hash(CONFIG)
    assert run.dir == store / "runs" / "npz__data_set.npz" / "standard" / run.hash
    assert Run({**CONFIG, "seed": 1}).hash != run.hash
    assert Run({**CONFIG, "lr": 0.2}).hash != run.hash
    assert Run(CONFIG, root=store / "other").dir.parent.parent.parent == store / "other"


def test_done_needs_the_marker_and_the_checkpoint(store):
    run = Run(CONFIG)
    run.write_config(data_fingerprint="abc")
    assert not run.is_done and run.done_stamp() == ""
    run.checkpoint.write_bytes(b"weights")
    assert not run.is_done
    run.mark_done()
    assert run.is_done and run.done_stamp()
    saved = json.loads((run.dir / "config.json").read_text())
    assert saved["hash"] == run.hash and saved["config"] == CONFIG
    assert run.stored_data_fingerprint() == "abc"


def test_discarded_checkpoint_is_kept_aside_and_forgets_done_and_evaluations(store):
    run = Run(CONFIG)
    run.write_config()
    run.checkpoint.write_bytes(b"weights")
    run.mark_done()
    (run.dir / "eval" / "k").mkdir(parents=True)
    run.update_metrics({"clean_acc": 50.0})
    run.discard_checkpoint("test")
    assert not run.is_done and not run.checkpoint.exists()
    assert [p.read_bytes() for p in run.dir.glob("checkpoint.corrupt-*.pt")] == [b"weights"]
    assert not (run.dir / "eval").exists() and run.read_metrics() == {}


def test_metrics_merge_and_a_damaged_file_is_moved_aside(store):
    run = Run(CONFIG)
    run.write_config()
    run.update_metrics({"clean_acc": 50.0})
    assert run.update_metrics({"ra": 40.0}) == {"clean_acc": 50.0, "ra": 40.0}
    run.metrics_json.write_text('{"clean_acc": 5')
    assert run.read_metrics() == {}
    assert len(list(run.dir.glob("metrics.json.corrupt-*"))) == 1 and not run.metrics_json.exists()


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    run_store.write_json_atomic(path, {"a": 1})

    def fail(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(run_store.RunStoreError, match="no space left on device"):
        run_store.write_atomic(path, fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_lock_times_out(store):
    run = Run({"dataset": "synthetic", "method": "standard", "x": 1})
    with run.lock():
        ctx = mp.get_context("spawn")
        p = ctx.Process(target=_try_lock, args=(str(store),))
        p.start()
        p.join(60)
        assert p.exitcode == 3


def _try_lock(root: str) -> None:
    os.environ["STUDYKIT_RUNS"] = root + "/runs"
    run = Run({"dataset": "synthetic", "method": "standard", "x": 1})
    try:
        with run.lock(timeout=0.5):
            sys.exit(0)
    except TimeoutError:
        sys.exit(3)
