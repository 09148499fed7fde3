"""Inputs and resources that used to end in a traceback, or in a run that trained nothing: each
is now one line on stderr (exit status 2 for a bad value, 1 for a resource), through the
command line; and the minor ones (progress bars, a root without notebooks, the synthetic cache's
warnings, the ``list params`` columns)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from studykit import cli, preflight
from studykit.data import load_npz
from studykit.data.synthetic_cache import cache_path
from studykit.runs import RunStoreError

SMOKE = ["train", "--profile", "smoke", "-p", "n_train=128", "-p", "n_test=32",
         "-p", "progress=False"]


@pytest.fixture(autouse=True)
def _folders(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDYKIT_DATA", str(tmp_path / "data"))


def _studykit(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("studykit: error: ") and "Traceback" not in err, err
    return lines[0]


def _npz(path: Path, *, n_train: int = 128, n_test: int = 32, size: int = 8,
         labels: np.ndarray | None = None, dtype=np.int64) -> Path:
    rng = np.random.default_rng(0)
    y_train = rng.integers(0, 3, n_train) if labels is None else labels
    np.savez(path, x_train=rng.integers(0, 255, (n_train, size, size, 3), dtype=np.uint8),
             y_train=y_train.astype(dtype),
             x_test=rng.integers(0, 255, (n_test, size, size, 3), dtype=np.uint8),
             y_test=rng.integers(0, 3, n_test).astype(dtype))
    return path


def _no_run_left(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.rglob("*") if p.name != "lock"
                                     and not p.is_dir()], list(runs.rglob("*"))


# --------------------------------------------------------------------------------------------
# npz labels


def test_uint8_labels_are_read_as_int64(tmp_path, capsys):
    path = _npz(tmp_path / "u8.npz", dtype=np.uint8)
    ds = load_npz(path)
    assert ds.y_train.dtype == torch.int64 and ds.classes == ("0", "1", "2")
    code, out, err = _studykit(capsys, *SMOKE, "-p", f"dataset='npz:{path}'",
                               "-p", "n_train=None", "-p", "n_test=None")
    assert code == 0, err
    assert "clean_acc" in out


def test_a_huge_label_without_class_names_is_one_line(tmp_path, capsys):
    labels = np.zeros(128, np.uint64)
    labels[5] = 10**12
    path = _npz(tmp_path / "big.npz", labels=labels, dtype=np.uint64)
    code, _, err = _studykit(capsys, *SMOKE, "-p", f"dataset='npz:{path}'",
                             "-p", "n_train=None", "-p", "n_test=None")
    assert code == 2
    assert "labels go up to 1000000000000" in _one_line(err)
    _no_run_left(tmp_path)


# --------------------------------------------------------------------------------------------
# zero-step training: fewer images than a batch train that one smaller batch


@pytest.mark.parametrize("args", [
    ["-p", "n_train=100"],
    ["-p", "batch_size=1000000000"],
    ["-p", "dataset='npz:{small}'", "-p", "n_train=None", "-p", "n_test=None"],
], ids=["n_train=100", "batch_size=1e9", "npz of 100 images"])
def test_fewer_images_than_a_batch_train_one_smaller_batch(tmp_path, capsys, args):
    small = _npz(tmp_path / "small.npz", n_train=100)
    code, _, err = _studykit(capsys, *SMOKE, *[a.format(small=small) for a in args])
    assert code == 0, err
    (done,) = (tmp_path / "runs").rglob("DONE")
    history = pd.read_csv(done.parent / "history.csv")
    assert (history["train_loss"] > 0).all()  # a step was taken (no step: exactly 0)


def test_a_single_training_image_is_one_line(tmp_path, capsys):
    code, _, err = _studykit(capsys, *SMOKE, "-p", "n_train=1")
    assert code == 2
    assert "n_train=1: training needs at least 2 images" in _one_line(err)
    _no_run_left(tmp_path)


def test_a_stored_run_done_without_a_step_is_retrained(tmp_path, capsys, caplog):
    from studykit.run_integrity import save_checkpoint

    assert _studykit(capsys, *SMOKE)[0] == 0
    (ckpt,) = (tmp_path / "runs").rglob("checkpoint.pt")
    state = torch.load(ckpt, weights_only=True)
    state["history"][0].update(train_loss=0.0, train_acc=0.0)  # as an older studykit left it
    save_checkpoint(ckpt, state)
    caplog.set_level(logging.WARNING)
    assert _studykit(capsys, *SMOKE)[0] == 0
    assert "no training step" in caplog.text
    assert torch.load(ckpt, weights_only=True)["history"][0]["train_loss"] > 0


def test_fit_refuses_a_loader_without_a_batch():
    from studykit.data import DeviceLoader
    from studykit.methods import create_method
    from studykit.models import create_model
    from studykit.train import TrainConfig, fit

    loader = DeviceLoader(torch.zeros(0, 3, 8, 8, dtype=torch.uint8),
                          torch.zeros(0, dtype=torch.int64), 16)
    with pytest.raises(ValueError, match="yields no batch"):
        fit(create_model("small_cnn", 3, width=4), create_method("standard"), loader,
            TrainConfig(epochs=1), progress=False)
    assert len(DeviceLoader(torch.zeros(10, 3, 8, 8, dtype=torch.uint8),
                            torch.zeros(10, dtype=torch.int64), 16)) == 1


# --------------------------------------------------------------------------------------------
# values that used to end in a traceback


TRACEBACK_CASES = [
    (["-p", "n_train=1000000000000"], ["n_train=1000000000000", "memory"]),
    (["-p", "n_test=1000000000000"], ["n_test=1000000000000", "memory"]),
    (["-p", "width=1000000"], ["width=1000000", "parameters", "smaller width"]),
    (["-p", "lr=1e300"], ["lr", "1e+300", "float32"]),
    (["-p", "weight_decay=1e300"], ["weight_decay", "float32"]),
    pytest.param(["-p", "device=mps"], ["'mps'"], marks=pytest.mark.skipif(
        torch.backends.mps.is_available(), reason="this machine has Apple's MPS")),
    (["-p", "device=meta"], ["'meta'", "cpu, cuda"]),
    (["-p", "device=xpu"], ["'xpu'", "cpu, cuda"]),
    (["-p", "dataset='npz:{tiny1}'", "-p", "n_train=None", "-p", "n_test=None"],
     ["1x1 pixels", "at least 8x8"]),
    (["-p", "dataset='npz:{tiny4}'", "-p", "n_train=None", "-p", "n_test=None"],
     ["4x4 pixels", "at least 8x8"]),
    (["-p", "eval_corruptions=[]"], ["eval_corruptions=[]", "names no corruption"]),
    (["-p", "dataset='npz:{missing}'"], ["npz dataset not found", "missing.npz"]),
]


@pytest.mark.parametrize("args,expected", TRACEBACK_CASES,
                         ids=[" ".join(c.values[0] if hasattr(c, "values") else c[0])
                              for c in TRACEBACK_CASES])
def test_bad_value_is_one_line_exit_2(tmp_path, capsys, args, expected):
    files = {"tiny1": _npz(tmp_path / "tiny1.npz", size=1),
             "tiny4": _npz(tmp_path / "tiny4.npz", size=4), "missing": tmp_path / "missing.npz"}
    code, _, err = _studykit(capsys, *SMOKE, *[a.format(**files) for a in args])
    assert code == 2, err
    line = _one_line(err)
    for text in expected:
        assert text in line, line
    _no_run_left(tmp_path)


def test_diverging_loss_stops_with_the_epoch_named(tmp_path, capsys):
    code, _, err = _studykit(capsys, *SMOKE, "-p", "lr=1e30", "-p", "epochs=2",
                             "-p", "n_train=512")
    assert code == 2
    line = _one_line(err)
    assert "diverged in epoch 1 of 2 (by step" in line and "lr=1e+30" in line
    runs = tmp_path / "runs"
    assert not list(runs.rglob("DONE")) and not list(runs.rglob("checkpoint.pt"))


def test_out_of_memory_is_one_line_exit_1(capsys, monkeypatch):
    import studykit.experiment as experiment

    def boom(**params):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 72000000000000 bytes")

    monkeypatch.setattr(experiment, "run_experiment", boom)
    code, _, err = _studykit(capsys, *SMOKE)
    assert code == 1 and "out of memory" in _one_line(err)
    monkeypatch.setattr(experiment, "run_experiment",
                        lambda **p: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA oom")))
    code, _, err = _studykit(capsys, *SMOKE)
    assert code == 1 and "out of memory" in _one_line(err)
    # Any other RuntimeError is a bug: its traceback is kept.
    monkeypatch.setattr(experiment, "run_experiment",
                        lambda **p: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(SMOKE)


def test_preflight_knows_each_architectures_smallest_image():
    assert preflight.min_image_size("small_cnn", 10, 8, 4) == 8
    assert preflight.min_image_size("small_cnn", 10, 8, 8) is None
    assert preflight.min_image_size("resnet18", 10, None, 1) is None  # adaptive pooling


# --------------------------------------------------------------------------------------------
# the data folder


def test_full_data_folder_while_caching_synthetic_data_continues(tmp_path, capsys, caplog,
                                                                 monkeypatch):
    import studykit.runs as runs

    real_save = torch.save

    def save(obj, f, *a, **kw):
        if "synthetic-s" in str(f):
            Path(f).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc] iostream error")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(runs.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    caplog.set_level(logging.WARNING)
    code, out, err = _studykit(capsys, *SMOKE)
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if "without a cache" in r.getMessage()]
    assert len(warned) == 1 and "no space left on device" in warned[0]
    assert not list((tmp_path / "data").rglob("*.tmp*"))


def test_poisoned_synthetic_cache_is_warned_about_once(tmp_path, capsys, caplog):
    path = cache_path(tmp_path / "data", 0, 128, 32)
    path.parent.mkdir(parents=True)
    torch.save({"x_train": torch.zeros(7, 3, 32, 32, dtype=torch.uint8),
                "y_train": torch.zeros(7, dtype=torch.int64),
                "x_test": torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                "y_test": torch.zeros(2, dtype=torch.int64)}, path)  # not what its name says
    caplog.set_level(logging.WARNING)
    code, _, err = _studykit(capsys, *SMOKE)
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert len(warned) == 1 and "7 + 2 images" in warned[0], warned


def test_progress_false_silences_the_corrupted_set_bars(capsys):
    code, _, err = _studykit(capsys, "eval", "--profile", "smoke", "-p", "n_train=128",
                             "-p", "n_test=32", "-p", "progress=False",
                             "-p", "eval_corruptions=['gaussian_noise']",
                             "-p", "eval_adversarial=None")
    assert code == 0, err
    assert "gaussian_noise" not in err and "img/s" not in err, err


def test_corrupted_set_cache_that_cannot_be_written_is_skipped(tmp_path, caplog, monkeypatch):
    import studykit.data.corrupted as corrupted
    from studykit.data import load_corrupted, make_synthetic

    def refuse(path, obj, what="file"):
        raise RunStoreError(f"could not write {what} {path}: the folder is read-only")

    monkeypatch.setattr(corrupted, "save_torch_atomic", refuse)
    caplog.set_level(logging.WARNING)
    cs = load_corrupted(make_synthetic(8, 8), "gaussian_noise", 1, root=tmp_path, progress=False)
    assert cs.x.shape == (8, 3, 32, 32)
    assert "continuing without a cache" in caplog.text


# --------------------------------------------------------------------------------------------
# the rest of the command line


def test_study_in_a_root_without_notebooks_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STUDYKIT_ROOT", str(tmp_path))
    for args in (["study", "--notebooks", "00"], ["study"]):
        code, _, err = _studykit(capsys, *args)
        assert code == 1
        line = _one_line(err)
        assert "no notebooks" in line and str(tmp_path / "notebooks") in line


def test_list_params_columns_line_up(capsys):
    code, out, _ = _studykit(capsys, "list", "params")
    assert code == 0
    lines = out.splitlines()
    header = lines[0]
    end = header.index("smoke") + len("smoke")  # values are right-aligned under the names
    rows = [ln for ln in lines[1:] if ln.strip() and not ln.startswith("method ")]
    assert any(ln.startswith("eval_corruptions") for ln in rows)
    for ln in rows:
        assert ln[end - 1] != " " and ln[end] == " ", ln
    tp = "a string or a list of strings or None"
    line = next(ln for ln in rows if ln.startswith("eval_corruptions"))
    assert line.index(tp) + len(tp) < end - 10


def test_a_stored_run_is_listed_and_its_checkpoint_digest_recorded(tmp_path, capsys):
    """The store a command writes is read by the results browser's table (the digest record
    next to the checkpoint is no run of its own)."""
    from studykit.runs import stored_runs

    assert _studykit(capsys, *SMOKE)[0] == 0
    df = stored_runs(tmp_path / "runs")
    assert len(df) == 1 and df["clean_acc"].notna().all()
    assert json.loads(next((tmp_path / "runs").rglob("checkpoint.pt.sha256")).read_text())
