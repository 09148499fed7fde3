"""`studykit.experiment`: resolving and validating a configuration, and `run_experiment` on
the run store: a miss trains, a hit loads the same weights and metrics, a damaged or foreign
checkpoint is retrained, two processes train a run once, a killed run resumes to the same
result, a retrained run is evaluated afresh."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from studykit.experiment import resolve_config, run_experiment
from studykit.runs import config_hash
from studykit.train import load_checkpoint

# Store-level tests skip the corruption and PGD evaluation (tested elsewhere) to stay fast.
FAST = dict(profile="smoke", eval_corruptions=None, eval_adversarial=None, progress=False,
            device="cpu")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDYKIT_DATA", str(tmp_path / "data"))
    return tmp_path


# ---------------------------------------------------------------------------------- config

def test_eval_settings_are_validated_before_training():
    with pytest.raises(ValueError, match="eval_corruption_images must be >= 1"):
        resolve_config(profile="smoke", eval_corruption_images=0)
    with pytest.raises(ValueError, match="eval_pgd_steps must be an int"):
        resolve_config(profile="smoke", eval_pgd_steps="ten")


def test_resolve_config_validates_everything():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['epoch'\].*epochs"):
        resolve_config(profile="smoke", epoch=3)
    with pytest.raises(ValueError, match="unknown method 'augmx'"):
        resolve_config(profile="smoke", method="augmx")
    with pytest.raises(ValueError, match="unknown arch 'resnet19'"):
        resolve_config(profile="smoke", arch="resnet19")
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        resolve_config(profile="smoke", dataset="mnist")
    with pytest.raises(ValueError, match="epochs must be an int"):
        resolve_config(profile="smoke", epochs=1.5)
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        resolve_config(profile="fast")
    with pytest.raises(ValueError, match="unknown corruption"):
        resolve_config(profile="smoke", eval_corruptions=["fog", "smog"])
    cfg = resolve_config(profile="smoke", label_smoothing=0.1)
    assert cfg["train"]["method_config"] == {"label_smoothing": 0.1}
    assert cfg["train"]["epochs"] == 1  # from the profile


def test_hash_ignores_key_order_and_runtime():
    a = resolve_config(profile="smoke", seed=1, device="cpu")
    b = resolve_config(device="cpu", seed=1, profile="smoke", progress=False)
    assert config_hash(a["train"]) == config_hash(b["train"])
    c = resolve_config(profile="smoke", seed=2)
    assert config_hash(a["train"]) != config_hash(c["train"])


# ---------------------------------------------------------------------------------- store

def test_run_store_miss_then_hit(store):
    first = run_experiment(**FAST, epochs=2)
    assert first.trained and first.run.is_done
    assert (first.run.dir / "config.json").exists() and first.run.history_csv.exists()
    saved = json.loads((first.run.dir / "config.json").read_text())
    assert saved["hash"] == first.run.hash and "torch" in saved["environment"]
    again = run_experiment(**FAST, epochs=2)
    assert not again.trained and again.run.dir == first.run.dir
    assert again.metrics == first.metrics
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    other = run_experiment(**FAST, epochs=2, seed=1)
    assert other.trained and other.run.dir != first.run.dir


def test_corrupt_checkpoint_is_retrained_not_used(store, caplog):
    first = run_experiment(**FAST)
    first.run.checkpoint.write_bytes(first.run.checkpoint.read_bytes()[:100])  # truncated
    again = run_experiment(**FAST)
    assert again.trained
    assert list(first.run.dir.glob("checkpoint.corrupt-*.pt"))
    assert "unusable" in caplog.text
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def _locked_worker(root: str, queue) -> None:
    os.environ["STUDYKIT_RUNS"] = root + "/runs"
    os.environ["STUDYKIT_DATA"] = root + "/data"
    torch.set_num_threads(1)
    r = run_experiment(**FAST, epochs=2)
    queue.put(r.trained)


def test_lock_prevents_double_training(store):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_locked_worker, args=(str(store), q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    assert sorted([q.get(), q.get()]) == [False, True]


SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from studykit.experiment import run_experiment
    r = run_experiment(profile="smoke", epochs=8, n_train=512, eval_corruptions=None,
                       eval_adversarial=None, progress=False, device="cpu")
    print(r.run.dir)
""")


def _run_script(env) -> str:
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_result(tmp_path):
    env = {**os.environ, "STUDYKIT_DATA": str(tmp_path / "data")}
    ref_dir = Path(_run_script({**env, "STUDYKIT_RUNS": str(tmp_path / "ref")}))

    env_k = {**env, "STUDYKIT_RUNS": str(tmp_path / "killed")}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env_k,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / ref_dir.relative_to(tmp_path / "ref") / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch = load_checkpoint(ckpt)["epoch"]
    assert 1 <= epoch < 8, f"the kill came too late (epoch {epoch})"
    assert not (ckpt.parent / "DONE").exists()

    resumed_dir = Path(_run_script(env_k))
    assert resumed_dir == ckpt.parent
    ref, res = load_checkpoint(ref_dir / "checkpoint.pt"), load_checkpoint(ckpt)
    for k, a in ref["model"].items():
        assert torch.equal(a, res["model"][k]), k
    assert [h["train_loss"] for h in ref["history"]] == [h["train_loss"] for h in res["history"]]
    # Same metrics; the evaluation key differs only by each run's completion stamp.
    ref_metrics = json.loads((ref_dir / "metrics.json").read_text())
    res_metrics = json.loads((ckpt.parent / "metrics.json").read_text())
    assert ref_metrics.pop("eval_key") != "" and res_metrics.pop("eval_key") != ""
    assert ref_metrics == res_metrics


def test_retrained_run_is_evaluated_afresh(store):
    params = dict(FAST, eval_corruptions=["fog"])
    first = run_experiment(**params)
    old_eval = list((first.run.dir / "eval").iterdir())
    assert len(old_eval) == 1 and "ra" not in first.metrics
    first.run.checkpoint.write_bytes(b"garbage")
    again = run_experiment(**params)
    assert again.trained
    new_eval = list((again.run.dir / "eval").iterdir())
    assert len(new_eval) == 1 and new_eval[0].name != old_eval[0].name


def test_run_trained_on_other_data_is_not_reused(store, caplog):
    first = run_experiment(**FAST)
    cfg_path = first.run.dir / "config.json"
    payload = json.loads(cfg_path.read_text())
    assert payload["data_fingerprint"]
    payload["data_fingerprint"] = "0" * 16  # as if the generator or the npz file had changed
    cfg_path.write_text(json.dumps(payload))
    again = run_experiment(**FAST)
    assert again.trained and "trained on other data" in caplog.text
