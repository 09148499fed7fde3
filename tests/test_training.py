"""The methods registry, the training loop, the run store and run_experiment."""

from __future__ import annotations

import dataclasses
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

from studykit import methods
from studykit.data import DeviceLoader, make_synthetic
from studykit.experiment import resolve_config, run_experiment
from studykit.models import create_model
from studykit.runs import Run, config_hash
from studykit.train import CheckpointError, TrainConfig, fit, load_checkpoint, lr_at

# Store-level tests skip the corruption and PGD evaluation (tested elsewhere) to stay fast.
FAST = dict(profile="smoke", eval_corruptions=None, eval_adversarial=None, progress=False,
            device="cpu")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDYKIT_DATA", str(tmp_path / "data"))
    return tmp_path


# ---------------------------------------------------------------------------------- registry

def test_registry_lists_and_creates_standard():
    assert "standard" in methods.list_methods()
    assert methods.list_methods("stand*") == ["standard"]
    m = methods.create_method("standard", label_smoothing=0.1)
    assert m.config.label_smoothing == 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.config.label_smoothing = 0.2


def test_registry_errors_name_the_allowed():
    with pytest.raises(ValueError, match="unknown method 'standrd'; choose one of: .*standard"):
        methods.create_method("standrd")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['lr'\].*label_smoothing"):
        methods.create_method("standard", lr=0.1)


def test_importing_the_package_registers_every_method_module():
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(methods.__path__)}
    registered = {methods.get_method_class(n).__module__.rsplit(".", 1)[1]
                  for n in methods.list_methods()}
    assert registered <= modules and {"standard", "augmax", "ada", "advbn"} <= registered
    assert all(f"studykit.methods.{m}" in sys.modules for m in modules)


def test_fine_tuning_is_declared_by_the_method_interface():
    standard, advbn = methods.create_method("standard"), methods.create_method("advbn")
    assert not standard.finetunes and standard.base_method is None
    assert standard.finetune_schedule(200) == {} and standard.milestones(20) == []
    with pytest.raises(TypeError, match="does not fine-tune"):
        standard.set_base(methods.create_method("standard"), {})
    assert advbn.finetunes and advbn.base_method == "standard"
    assert advbn.finetune_schedule(200)["epochs"] == 20 and advbn.milestones(20) == [10]


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method("standard")(type("Other", (methods.Method,), {}))


# ---------------------------------------------------------------------------------- schedule

def test_lr_schedule_warmup_cosine_multistep():
    cfg = TrainConfig(epochs=10, lr=0.1, warmup_epochs=1)
    assert lr_at(cfg, 0, 10) == pytest.approx(0.01)
    assert lr_at(cfg, 9, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 10, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 99, 10) < 0.001
    lrs = [lr_at(cfg, s, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    ms = TrainConfig(epochs=10, lr=0.1, schedule="multistep", milestones=(5, 8), gamma=0.1)
    assert [round(lr_at(ms, e * 10, 10), 6) for e in (0, 5, 8)] == [0.1, 0.01, 0.001]
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        TrainConfig(schedule="step")


# ---------------------------------------------------------------------------------- fit

def _tiny_data(n=512):
    ds = make_synthetic(n, 128, seed=3)
    return ds, DeviceLoader(ds.x_train, ds.y_train, 64, seed=0)


def test_fit_learns_and_records_history():
    ds, loader = _tiny_data()
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, width=8)
    test = DeviceLoader(ds.x_test, ds.y_test, 128, train=False)
    res = fit(model, methods.create_method("standard"), loader,
              TrainConfig(epochs=3, lr=0.05), test_loader=test, progress=False)
    h = res.history
    assert list(h["epoch"]) == [1, 2, 3]
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    assert {"lr", "train_acc", "test_acc", "seconds"} <= set(h.columns)
    assert not res.model.training


@pytest.mark.parametrize("method", ["standard", "augmix", "pgd_at"])
def test_interrupted_fit_resumes_to_identical_weights(tmp_path, method):
    # augmix draws from the method's generator: its state must be restored too. pgd_at ramps
    # its eps over the first half of training: the ramp must follow the global step.
    overrides = {"pgd_at": {"eps_ramp": 0.5, "steps": 2}}.get(method, {})
    ds, _ = _tiny_data(256)
    cfg = TrainConfig(epochs=3, lr=0.05)

    def train(ckpt, stop_after=None):
        torch.manual_seed(0)
        model = create_model("small_cnn", 10, width=8)
        loader = DeviceLoader(ds.x_train, ds.y_train, 64, seed=0)

        def stop(epoch, record, model):
            if epoch == stop_after:
                raise KeyboardInterrupt

        return fit(model, methods.create_method(method, **overrides), loader, cfg,
                   checkpoint_path=ckpt, callbacks=[stop], progress=False)

    full = train(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b.pt", stop_after=1)
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 1
    resumed = train(tmp_path / "b.pt")
    assert resumed.resumed_from_epoch == 1
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert full.history["train_loss"].tolist() == resumed.history["train_loss"].tolist()


def test_seed_streams_are_separate():
    from studykit.rng import derive_seed

    ds, _ = _tiny_data(64)
    m = methods.create_method("augmix")
    fit(create_model("small_cnn", 10, width=8), m, DeviceLoader(ds.x_train, ds.y_train, 64),
        TrainConfig(epochs=0, seed=3), progress=False)
    method_draws = torch.rand(1000, generator=m.generator)
    global_draws = torch.rand(1000)
    torch.manual_seed(derive_seed(3, "init"))
    init_draws = torch.rand(1000)
    torch.manual_seed(3)
    plain = torch.rand(1000)
    streams = [method_draws, global_draws, init_draws, plain]
    for i, a in enumerate(streams):
        for b in streams[i + 1:]:
            assert not torch.equal(a, b)
    expected = torch.rand(1000, generator=torch.Generator().manual_seed(derive_seed(3, "method")))
    assert torch.equal(method_draws, expected)


def test_corrupt_checkpoint_raises_clear_error(tmp_path):
    bad = tmp_path / "c.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*c.pt"):
        load_checkpoint(bad)


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


SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from studykit.experiment import run_experiment
    r = run_experiment(profile="smoke", epochs=8, n_train=2048, eval_corruptions=None,
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


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["standard", "augmax"])
def test_fit_on_cuda_with_amp_and_channels_last(method):
    ds, _ = _tiny_data(256)
    loader = DeviceLoader(ds.x_train, ds.y_train, 64, seed=0, device="cuda")
    model = create_model("small_cnn", 10, width=8)
    m = methods.create_method(method, **({"steps": 2} if method == "augmax" else {}))
    res = fit(model, m, loader, TrainConfig(epochs=1, lr=0.05), device="cuda", progress=False)
    assert next(res.model.parameters()).is_cuda
    assert res.history["train_loss"].notna().all()
