"""A damaged or inconsistent run store never gives a wrong model or table silently: through the
command line, a copied foreign run, a bit-flipped checkpoint, a checkpoint with a malformed part,
a damaged config.json, damaged evaluation tables, a damaged history.csv or metrics.json and
temporary files of dead writers are each detected, moved aside (or removed) with one warning,
and recomputed."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studykit import cli, run_integrity
from studykit.digests import file_digest
from studykit.runs import digest_path

TRAIN = ["train", "--profile", "smoke", "-p", "n_train=128", "-p", "n_test=32",
         "-p", "progress=False"]
EVAL = ["eval", "--profile", "smoke", "-p", "n_train=128", "-p", "n_test=32",
        "-p", "progress=False", "-p", "eval_corruptions=['gaussian_noise']",
        "-p", "eval_adversarial=linf", "-p", "eval_eps=[0.0, 0.01]",
        "-p", "eval_adversarial_images=8", "-p", "eval_pgd_steps=1"]


def _studykit(capsys, *args: str) -> tuple[int, dict, str]:
    """``studykit <args>`` in this process: exit status, the metrics printed, stderr."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    metrics = json.loads(out[out.index("{"):]) if code == 0 else {}
    return code, metrics, err


def _run_dir(store: Path, seed: int = 0) -> Path:
    dirs = [p.parent for p in store.glob("synthetic/standard/*/config.json")
            if json.loads(p.read_text())["config"]["seed"] == seed]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store with two finished runs (seeds 0 and 1), the second evaluated; and their
    metrics as printed."""
    root = tmp_path_factory.mktemp("template")
    mp = pytest.MonkeyPatch()
    mp.setenv("STUDYKIT_RUNS", str(root / "runs"))
    mp.setenv("STUDYKIT_DATA", str(root / "data"))
    printed = {}
    try:
        for seed, args in ((0, TRAIN), (1, EVAL)):
            assert cli.main([*args, "-p", f"seed={seed}"]) == 0
        for seed, args in ((0, TRAIN), (1, EVAL)):  # the printed metrics of a stored run
            import contextlib
            import io

            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert cli.main([*args, "-p", f"seed={seed}"]) == 0
            text = buf.getvalue()
            printed[seed] = json.loads(text[text.index("{"):])
    finally:
        mp.undo()
    return root, printed


@pytest.fixture()
def store(template, tmp_path, monkeypatch):
    """A copy of the template store for one test; ``STUDYKIT_RUNS`` points at it."""
    root, printed = template
    shutil.copytree(root / "runs", tmp_path / "runs")
    monkeypatch.setenv("STUDYKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDYKIT_DATA", str(root / "data"))
    return tmp_path / "runs", printed


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_checkpoint_digest_recorded_and_checked(store):
    runs, _ = store
    ckpt = _run_dir(runs) / "checkpoint.pt"
    rec = json.loads(digest_path(ckpt).read_text())
    assert rec["sha256"] == file_digest(ckpt, "sha256")
    run_integrity.verify_checkpoint(ckpt)  # as written: checks


def test_bit_flipped_checkpoint_is_moved_aside_and_retrained(store, capsys, caplog):
    runs, printed = store
    run_dir = _run_dir(runs)
    ckpt = run_dir / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0x5A for b in data[mid:mid + 64])
    ckpt.write_bytes(bytes(data))
    torch.load(ckpt, weights_only=True)  # a flipped checkpoint still loads: only the digest tells
    caplog.set_level(logging.INFO)
    code, metrics, err = _studykit(capsys, *TRAIN, "-p", "seed=0")
    assert code == 0, err
    warned = [w for w in _warnings(caplog) if "sha256" in w]
    assert len(warned) == 1 and "unusable" in warned[0], _warnings(caplog)
    assert not any("loaded run" in r.getMessage() for r in caplog.records)
    assert len(list(run_dir.glob("checkpoint.corrupt-*.pt"))) == 1
    assert list(run_dir.glob("checkpoint.corrupt-*.pt.sha256"))  # kept with it
    assert metrics == printed[0]  # retrained on the CPU: the same model as the first time
    run_integrity.verify_checkpoint(ckpt)


def test_a_copied_foreign_run_is_moved_aside_not_loaded(store, capsys, caplog):
    runs, printed = store
    mine, foreign = _run_dir(runs, 1), _run_dir(runs, 0)
    shutil.rmtree(mine)
    shutil.copytree(foreign, mine)  # run 0's files under run 1's hash
    caplog.set_level(logging.INFO)
    code, metrics, err = _studykit(capsys, *EVAL, "-p", "seed=1")
    assert code == 0, err
    warned = [w for w in _warnings(caplog) if "another run" in w]
    assert len(warned) == 1 and foreign.name in warned[0] and "seed 0" in warned[0], warned
    assert not any("loaded run" in r.getMessage() for r in caplog.records)
    aside = list(mine.glob("aside-*"))
    assert len(aside) == 1
    assert json.loads((aside[0] / "config.json").read_text())["hash"] == foreign.name
    assert json.loads((mine / "config.json").read_text())["hash"] == mine.name
    assert metrics == printed[1]  # run 1 trained afresh, as it was the first time


def test_damaged_config_is_restored_with_every_field(store, capsys, caplog):
    runs, printed = store
    run_dir = _run_dir(runs)
    before = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text('{"config": {"seed": 0, "trunc')
    caplog.set_level(logging.INFO)
    code, metrics, err = _studykit(capsys, *TRAIN, "-p", "seed=0")
    assert code == 0 and metrics == printed[0], err
    assert any("loaded run" in r.getMessage() for r in caplog.records)
    after = json.loads((run_dir / "config.json").read_text())
    assert after["restored"] is True
    for key in ("config", "hash", "data_fingerprint"):
        assert after[key] == before[key], key
    assert set(before) <= set(after)


TABLE_DAMAGE = {
    "empty": lambda b: b"",
    "garbage": lambda b: bytes(range(256)) * 4,
    "cut mid-row": lambda b: b[: len(b) - 7],
    "cut at a row": lambda b: b[: b.rstrip(b"\n").rindex(b"\n") + 1],
    "a row too many": lambda b: b + b.splitlines(keepends=True)[-1],
}


@pytest.mark.parametrize("damage", list(TABLE_DAMAGE))
def test_damaged_evaluation_table_is_moved_aside_and_recomputed(store, capsys, caplog, damage):
    runs, printed = store
    table = next(_run_dir(runs, 1).glob("eval/*/corruption.csv"))
    good = table.read_bytes()
    table.write_bytes(TABLE_DAMAGE[damage](good))
    caplog.set_level(logging.INFO)
    code, metrics, err = _studykit(capsys, *EVAL, "-p", "seed=1")
    assert code == 0, err
    warned = [w for w in _warnings(caplog) if "damaged" in w]
    assert len(warned) == 1 and str(table) in warned[0], _warnings(caplog)
    assert len(list(table.parent.glob("corruption.csv.corrupt-*"))) == 1
    assert table.read_bytes() == good and metrics == printed[1]
    # Once repaired, the next run reads it without a word.
    caplog.clear()
    assert _studykit(capsys, *EVAL, "-p", "seed=1")[:2] == (0, printed[1])
    assert not _warnings(caplog)


def test_missing_or_damaged_adversarial_table_is_recomputed(store, capsys, caplog):
    runs, printed = store
    table = next(_run_dir(runs, 1).glob("eval/*/adversarial.csv"))
    good = table.read_bytes()
    table.unlink()
    assert _studykit(capsys, *EVAL, "-p", "seed=1")[:2] == (0, printed[1])
    assert table.read_bytes() == good
    table.write_bytes(good.replace(b"linf", b"l\xff\xfe"))
    caplog.set_level(logging.WARNING)
    assert _studykit(capsys, *EVAL, "-p", "seed=1")[:2] == (0, printed[1])
    assert len(_warnings(caplog)) == 1 and table.read_bytes() == good


@pytest.mark.parametrize("damage", ["deleted", "cut mid-row", "cut at a row"])
def test_history_csv_is_repaired_from_the_checkpoint(store, capsys, caplog, damage):
    runs, printed = store
    history = _run_dir(runs) / "history.csv"
    good = history.read_bytes()
    if damage == "deleted":
        history.unlink()
    elif damage == "cut mid-row":
        history.write_bytes(good[:-5])
    else:
        history.write_bytes(good[: good.index(b"\n") + 1])  # the header only
    caplog.set_level(logging.WARNING)
    code, metrics, err = _studykit(capsys, *TRAIN, "-p", "seed=0")
    assert code == 0 and metrics == printed[0], err
    assert len(_warnings(caplog)) == 1 and "history.csv" in _warnings(caplog)[0]
    assert history.read_bytes() == good
    if damage != "deleted":
        assert list(history.parent.glob("history.csv.corrupt-*"))


def test_truncated_run_metrics_json_is_rewritten(store, capsys, caplog):
    runs, printed = store
    metrics_json = _run_dir(runs, 1) / "metrics.json"
    good = json.loads(metrics_json.read_text())
    metrics_json.write_text(metrics_json.read_text()[:20])
    caplog.set_level(logging.WARNING)
    assert _studykit(capsys, *EVAL, "-p", "seed=1")[:2] == (0, printed[1])
    assert len(_warnings(caplog)) == 1
    assert json.loads(metrics_json.read_text()) == good


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_dead_writers_are_removed(store, capsys):
    runs, printed = store
    run_dir = _run_dir(runs, 1)
    dead = _dead_pid()
    stale = [run_dir / f"checkpoint.pt.tmp{dead}", run_dir / f"checkpoint.pt.sha256.tmp{dead}",
             next(run_dir.glob("eval/*")) / f"corruption.csv.tmp{dead}"]
    live = run_dir / f"history.csv.tmp{os.getppid()}"  # a writer still running: kept
    for p in [*stale, live]:
        p.write_bytes(b"half a file")
    assert _studykit(capsys, *EVAL, "-p", "seed=1")[:2] == (0, printed[1])
    assert not any(p.exists() for p in stale)
    assert live.exists()


def _rewrite_checkpoint(run_dir: Path, change) -> None:
    """Change the checkpoint's state and write it as studykit does (digest recorded), as a
    bug or an older version would have."""
    ckpt = run_dir / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    change(state)
    run_integrity.save_checkpoint(ckpt, state)


BAD_PARTS = {
    "names an unknown method": (True, lambda s: s.__setitem__("method", "no_such_method")),
    "bad RNG state": (False, lambda s: s.__setitem__("rng_cpu", torch.zeros(3, dtype=torch.uint8))),
    "no history": (False, lambda s: s.pop("history")),
    "history of another length": (False, lambda s: s["history"].append({"epoch": 9})),
    "an earlier epoch's state, marked done": (True, lambda s: s.update(epoch=0, history=[])),
}


@pytest.mark.parametrize("case", list(BAD_PARTS))
def test_checkpoint_with_a_malformed_part_is_damage(store, capsys, caplog, case):
    runs, printed = store
    run_dir = _run_dir(runs)
    finished, change = BAD_PARTS[case]
    if not finished:
        (run_dir / "DONE").unlink()  # half-trained: interrupted after its last epoch
    _rewrite_checkpoint(run_dir, change)
    caplog.set_level(logging.WARNING)
    code, metrics, err = _studykit(capsys, *TRAIN, "-p", "seed=0")
    assert code == 0, err
    assert "Traceback" not in err
    warned = _warnings(caplog)
    assert len(warned) == 1 and "unusable" in warned[0], warned
    assert list(run_dir.glob("checkpoint.corrupt-*.pt"))
    assert metrics == printed[0]
