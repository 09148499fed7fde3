"""The methods registry, the learning-rate schedules and the training loop (`studykit.train`):
learning, resuming to identical weights, seed streams, checkpoints."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from studykit import methods
from studykit.data import DeviceLoader, make_synthetic
from studykit.models import create_model
from studykit.train import CheckpointError, TrainConfig, fit, load_checkpoint, lr_at

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
