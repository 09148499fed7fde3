"""What a user sees when something is wrong: one line naming the bad value, no traceback, no
run folder; and a run store that survives damaged files, a read-only mount, a full disk, Ctrl-C
and two processes generating the same cache."""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from studykit import cli
from studykit import runs as run_store
from studykit.checks import ParamError
from studykit.experiment import run_dir_of, run_experiment

REPO = Path(__file__).resolve().parents[1]
TINY = {"profile": "smoke", "n_train": 64, "n_test": 32, "epochs": 2, "progress": False,
        "eval_corruptions": None, "eval_adversarial": None}


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, STUDYKIT_RUNS=str(tmp / "runs"), STUDYKIT_DATA=str(tmp / "data"),
               STUDYKIT_FIGURES=str(tmp / "figures"), PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def _studykit(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studykit", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=REPO, **kw)


def _npz(path: Path, n_train: int = 256, n_test: int = 64) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 255, (n_train, 8, 8, 3), dtype=np.uint8),
             y_train=rng.integers(0, 3, n_train), x_test=rng.integers(0, 255, (n_test, 8, 8, 3),
                                                                      dtype=np.uint8),
             y_test=rng.integers(0, 3, n_test))
    return path


# (command-line arguments, text the one error line must contain); {npz}, {bad}, {empty} are
# files the test makes.
BAD_INPUTS = [
    (["train", "-p", "method=nope"], ["'nope'", "augmax", "standard"]),
    (["train", "-p", "epoch=3"], ["'epoch'", "epochs"]),
    (["train", "-p", "method=augmax", "-p", "norm=xx"], ["'xx'", "dubin"]),
    (["train", "-p", "method=pgd_at", "-p", "preset=linf_3"], ["'linf_3'", "linf_8"]),
    (["train", "-p", "dataset=imagenet"], ["'imagenet'", "synthetic"]),
    (["train", "--profile", "fast"], ["'fast'", "smoke, quick, paper"]),
    (["train", "-p", "arch=vgg"], ["'vgg'", "resnet18"]),
    (["study", "--notebooks", "99"], ["'99'", "00_data_and_corruptions"]),
    (["list", "foo"], ["'foo'", "params"]),
    (["train", "-p", "nesterov=maybe"], ["nesterov", "'maybe'", "True or False"]),
    (["train", "-p", "momentum=-5"], ["momentum", "-5", "[0, 1)"]),
    (["train", "-p", "method=augmax", "-p", "steps=1.5"], ["steps", "1.5", "integer"]),
    (["train", "-p", "method=augmax", "-p", "steps=-1"], ["steps", "-1", ">= 1"]),
    (["train", "-p", "weight_decay=-1"], ["weight_decay", "-1", ">= 0"]),
    (["train", "-p", "warmup_epochs=-3"], ["warmup_epochs", "-3", ">= 0"]),
    (["train", "-p", "label_smoothing=5.0"], ["label_smoothing", "5.0", "[0, 1)"]),
    (["eval", "-p", "eval_eps=abc"], ["eval_eps", "'abc'", "list of numbers"]),
    (["train", "-p", "epochs=0"], ["epochs", "0", ">= 1"]),
    (["train", "-p", "method=pgd_at", "-p", "eps_ramp=2"], ["eps_ramp", "2", "[0, 1]"]),
    (["train", "-p", "device=tpu"], ["'tpu'", "cpu"]),
    (["train", "-p", "dataset=npz:{bad}"], ["not an .npz file"]),
    (["train", "-p", "dataset=npz:{empty}"], ["no images"]),
    (["train", "-p", "dataset=npz:{npz}", "-p", "n_train=512"], ["n_train=512", "256"]),
    (["train", "-p", "epochs"], ["'epochs'", "key=value"]),
]


# These go through `python -m studykit` in a new process; the others call the same main() in
# this process (as the command does: its logging set up on stderr, argparse's exits caught),
# which skips the seconds a new process spends importing torch.
THROUGH_THE_COMMAND = {"train -p method=nope", "train -p epochs", "list foo"}


def _studykit_in_process(args: list[str], tmp: Path, monkeypatch,
                         capsys) -> tuple[int, str]:
    """`studykit ARGS` in this process: (exit status, what it wrote to stderr)."""
    for key in ("STUDYKIT_RUNS", "STUDYKIT_DATA", "STUDYKIT_FIGURES"):
        monkeypatch.setenv(key, _env(tmp)[key])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # so main()'s logging.basicConfig writes to stderr, as in a new process
    capsys.readouterr()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                code = cli.main(args)
            except SystemExit as e:  # argparse's errors
                code = e.code
    finally:
        root.handlers, root.level = handlers, level
    stderr = capsys.readouterr().err
    # A warning would be one more line on the command's stderr.
    stderr += "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
    return code, stderr


@pytest.mark.parametrize("args,expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_no_run_folder(tmp_path, monkeypatch, capsys, args,
                                                         expected):
    files = {"npz": _npz(tmp_path / "ok.npz"), "bad": tmp_path / "bad.npz",
             "empty": tmp_path / "empty.npz"}
    files["bad"].write_bytes(b"\x80\x04this is a pickle, not a zip")
    np.savez(files["empty"], x_train=np.zeros((0, 8, 8, 3), np.uint8),
             y_train=np.zeros(0, np.int64), x_test=np.zeros((0, 8, 8, 3), np.uint8),
             y_test=np.zeros(0, np.int64))
    case = " ".join(args)
    args = [a.format(**files) for a in args]
    if case in THROUGH_THE_COMMAND:
        r = _studykit(args, _env(tmp_path))
        code, stderr = r.returncode, r.stderr
    else:
        code, stderr = _studykit_in_process(args, tmp_path, monkeypatch, capsys)
    assert code == 2, (code, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("studykit: error: ")
    assert "Traceback" not in stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_method_options_checked_for_free():
    """A Config field without a declared range must be finite and >= 0, by its annotation."""
    from studykit.methods import create_method

    with pytest.raises(ParamError, match="jsd_lambda must be >= 0, got -1"):
        create_method("augmix", jsd_lambda=-1)
    with pytest.raises(ParamError, match="jsd must be True or False"):
        create_method("augmix", jsd="yes")
    with pytest.raises(ParamError, match="finite"):
        create_method("augmax", step_size=float("nan"))


# --------------------------------------------------------------------------------------------
# damage


def test_damaged_json_is_moved_aside_and_recomputed(tmp_path, caplog):
    params = {**TINY, "eval_adversarial": "linf", "eval_eps": [0.0], "eval_adversarial_images": 8,
              "runs_root": str(tmp_path)}
    first = run_experiment(**params)
    run_dir = first.run.dir
    eval_metrics = next((run_dir / "eval").glob("*/metrics.json"))
    for path in (run_dir / "config.json", run_dir / "metrics.json", eval_metrics):
        path.write_text('{"clean_acc": 12.5, "trunc')
    again = run_experiment(**params)
    assert not again.trained
    assert again.metrics["clean_acc"] == first.metrics["clean_acc"]
    assert json.loads(eval_metrics.read_text())["clean_acc"] == first.metrics["clean_acc"]
    assert json.loads((run_dir / "metrics.json").read_text())["clean_acc"] == \
        first.metrics["clean_acc"]
    assert json.loads((run_dir / "config.json").read_text())["hash"] == first.run.hash
    for name in ("config.json", "metrics.json"):
        assert list(run_dir.glob(f"{name}.corrupt-*")), name
    assert list(eval_metrics.parent.glob("metrics.json.corrupt-*"))
    assert "damaged" in caplog.text


def test_half_trained_checkpoint_from_other_data_is_not_resumed(tmp_path):
    params = {**TINY, "runs_root": str(tmp_path)}
    run_experiment(**params)
    run_dir = run_dir_of(**params)
    (run_dir / "DONE").unlink()  # as if interrupted after its last epoch
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["data_fingerprint"] = "0" * 16
    (run_dir / "config.json").write_text(json.dumps(cfg))
    again = run_experiment(**params)
    assert again.trained
    assert list(run_dir.glob("checkpoint.corrupt-*.pt"))


def _read_only_prefix(store: Path) -> list[str] | None:
    """A command prefix that runs a process which cannot write ``store``: for root (whom file
    permissions do not bind) a private mount namespace with ``store`` bind-mounted read-only
    (as a shared store is mounted); for anyone else, ``store`` made read-only by chmod. None
    when neither can be arranged here."""
    if os.geteuid() != 0:
        for p in [store, *store.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        return []
    if shutil.which("unshare") is None:
        return None
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && '
              'exec "$@"')
    prefix = ["unshare", "-m", "sh", "-c", script, "sh", str(store)]
    probe = subprocess.run([*prefix, "touch", str(store / "probe")], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode == 0 or "Read-only file system" not in probe.stderr:
        (store / "probe").unlink(missing_ok=True)
        return None
    return prefix


def test_finished_run_loads_from_a_read_only_store(tmp_path, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    params = {**TINY, "runs_root": str(store)}
    first = run_experiment(**params)
    prefix = _read_only_prefix(store)
    if prefix is None:  # no way to make a read-only store here: the run store's own check
        _read_only_store_in_process(store, first, monkeypatch)
        return
    try:
        code = (
            "import json; from studykit.experiment import run_experiment; "
            f"r = run_experiment(**{params!r}); "
            "print(json.dumps({'trained': r.trained, 'clean_acc': r.metrics['clean_acc']}))"
        )
        env = dict(os.environ, PYTHONPATH=str(REPO), STUDYKIT_DATA=str(tmp_path / "data"))
        (first.run.dir / "lock").unlink()
        r = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True,
                           text=True, timeout=300, env=env, cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out == {"trained": False, "clean_acc": first.metrics["clean_acc"]}
        assert not (first.run.dir / "lock").exists()

        # Training something new into it: one line, no traceback, exit status 1.
        r = subprocess.run(
            [*prefix, sys.executable, "-m", "studykit", "train", "--profile", "smoke", "-p",
             "seed=7", "-p", f"runs_root={str(store)!r}", "-p", "n_train=64", "-p",
             "n_test=32"], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
        assert r.returncode == 1, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        assert "read-only" in r.stderr.strip().splitlines()[-1]
    finally:
        for p in [store, *store.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def _read_only_store_in_process(store, first, monkeypatch):
    params = {**TINY, "runs_root": str(store)}
    monkeypatch.setattr(run_store, "store_writable", lambda path: False)
    (first.run.dir / "lock").unlink()
    again = run_experiment(**params)
    assert not again.trained and again.metrics["clean_acc"] == first.metrics["clean_acc"]
    assert not (first.run.dir / "lock").exists()
    with pytest.raises(run_store.RunStoreError, match="read-only"):
        run_experiment(**{**params, "seed": 7})


def test_full_disk_keeps_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    params = {**TINY, "epochs": 3, "runs_root": str(tmp_path)}
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **kw):
        calls["n"] += "checkpoint.pt" in str(f)
        if calls["n"] >= 2:  # the second epoch's checkpoint: half written, then the disk is full
            Path(f).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc] basic_ios::clear: "
                               "iostream error")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(run_store.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(run_store.RunStoreError, match="no space left on device") as err:
        run_experiment(**params)
    run_dir = run_dir_of(**params)
    assert str(run_dir / "checkpoint.pt") in str(err.value)
    assert not [p for p in run_dir.iterdir() if ".tmp" in p.name]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    monkeypatch.undo()
    resumed = run_experiment(**params)  # space again: resumes from epoch 1
    assert resumed.trained and len(resumed.history) == 3


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path):
    env = _env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "studykit", "train", "--profile", "smoke", "-p", "epochs=500",
         "-p", "n_train=256", "-p", "n_test=32", "-p", "progress=False"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
        # A shell without job control starts background jobs with SIGINT ignored, and Python
        # then installs no KeyboardInterrupt handler: the child gets Ctrl-C's default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list((tmp_path / "runs").rglob("checkpoint.pt")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "resumes" in last
    assert not [p for p in (tmp_path / "runs").rglob("*") if ".tmp" in p.name]


def test_synthetic_cache_made_once_by_concurrent_processes(tmp_path):
    """While one process holds the cache lock and writes the set, another waits for it and then
    reads the cache instead of generating its own."""
    from studykit.data.synthetic import make_synthetic
    from studykit.data.synthetic_cache import cache_path
    from studykit.locks import file_lock

    root = tmp_path / "data"
    path = cache_path(root, 0, 200, 50)
    path.parent.mkdir(parents=True)
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout); "
            "from pathlib import Path; from studykit.data import load_dataset; "
            f"d = load_dataset('synthetic', Path({str(root)!r}), n_train=200, n_test=50); "
            "print('images', d.x_train.shape[0])")
    with file_lock(path.with_name(path.name + ".lock")):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
        seen, deadline = "", time.monotonic() + 120
        while "busy in another process" not in seen:  # it is waiting on the lock
            assert proc.poll() is None, seen + proc.stdout.read()
            assert time.monotonic() < deadline, seen
            if select.select([proc.stdout], [], [], 1.0)[0]:
                seen += proc.stdout.readline()
        data = make_synthetic(200, 50, seed=0)
        torch.save({k: getattr(data, k) for k in ("x_train", "y_train", "x_test", "y_test")},
                   path)
    out, _ = proc.communicate(timeout=120)
    out = seen + out
    assert proc.returncode == 0, out
    assert "images 200" in out
    assert "cached synthetic dataset" not in out  # it read the cache, did not generate
