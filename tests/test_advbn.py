"""AdvBN: the feature-statistics attack, the fine-tuning method and its base run, the
autoencoder, and the feature divergence."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import fit_batch

from studykit import advbn
from studykit.analysis import divergence
from studykit.data import DeviceLoader
from studykit.data.synthetic import make_synthetic
from studykit.methods import create_method
from studykit.models import create_model
from studykit.nets.autoencoder import AutoEncoder, shift_images, train_decoder
from studykit.normalization import DualBN, bn_route
from studykit.train import TrainConfig, fit, load_checkpoint


def _batch(n=64, seed=0):
    ds = make_synthetic(n, 16, seed=seed)
    return ds.x_train.float() / 255, ds.y_train


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained briefly on one batch (so its loss is low and can be raised)."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, width=8)
    x, y = _batch(64, seed=1)
    return fit_batch(model, x, y, steps=25)


def _fresh_copy(model):
    import copy

    return copy.deepcopy(model)


def test_cut_points_of_small_cnn_and_resnet18():
    small = create_model("small_cnn", 10, width=8)
    assert [advbn.cut_stage(small, k) for k in (1, 2, 3)] == ["layer1", "layer2", "layer3"]
    res = create_model("resnet18", 10, width=8)
    assert [advbn.cut_stage(res, k) for k in (1, 2, 3)] == ["layer1", "layer2", "layer3"]
    with pytest.raises(ValueError, match="stage must be"):
        advbn.cut_stage(small, 5)
    # The ResNet stem is a method, not a module: tracing finds its conv1/bn1.
    names = advbn.encoder_module_names(res, "layer1")
    assert {"conv1", "bn1", "layer1"} <= set(names) and "layer2" not in names
    assert advbn.is_relu_cut(small, "layer1")


def test_perturbation_stays_within_the_bounds():
    f = torch.randn(8, 6, 5, 5)
    w = torch.randn(6, 5, 5)
    for eps, steps in ((0.5, 1), (1.1, 6), (0.3, 10)):
        dm, ds = advbn.advbn_deltas(lambda h: (h * w).sum(), f, steps=steps, step_size=0.2,
                                    eps=eps)
        for d in (dm, ds):
            assert d.shape == (6,)
            assert d.min() >= 1 - eps - 1e-6 and d.max() <= 1 + eps + 1e-6
    dm, ds = advbn.advbn_deltas(lambda h: h.sum(), f, steps=0, step_size=0.2, eps=1.0)
    assert torch.equal(dm, torch.ones(6)) and torch.equal(ds, torch.ones(6))
    # With deltas of 1 the layer is the identity; statistics scale as Eq. 2 says.
    assert torch.allclose(advbn.shift_features(f, dm, ds), f, atol=1e-6)
    mu, sd = advbn.channel_stats(f)
    out = advbn.shift_features(f, torch.full((6,), 2.0), torch.full((6,), 0.5))
    mu2, sd2 = advbn.channel_stats(out)
    assert torch.allclose(mu2, 2 * mu, atol=1e-5) and torch.allclose(sd2, 0.5 * sd, atol=1e-5)
    # After a ReLU cut the shifted features are clamped at 0.
    relu = advbn.shift_features(f.relu(), torch.full((6,), -1.0), ds, relu=True)
    assert relu.min() >= 0


def test_attack_raises_the_heads_loss_and_moves_no_statistic(trained):
    model = _fresh_copy(trained)
    advbn.add_auxiliary_bn(model, "layer1")
    x, y = _batch(64, seed=1)
    f = model.forward_until(x, "layer1").detach()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    f_adv = advbn.head_attack(model, f, y, "layer1", steps=3, step_size=0.2, eps=0.5)
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())
    assert model.training, "the attack restores train mode"
    model.eval()
    with torch.no_grad(), bn_route(model, "aug"):
        clean = F.cross_entropy(model.forward_after(f, "layer1"), y)
        adv = F.cross_entropy(model.forward_after(f_adv, "layer1"), y)
    assert adv > clean + 0.1


def test_only_layers_after_the_cut_get_gradients(trained):
    method = create_method("advbn", stage=2, steps=2)
    model = method.prepare_model(_fresh_copy(trained)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch(32, seed=2)
    out = method.training_step(model, x, y)
    out.loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(("layer1.", "layer2.")):
            assert p.grad is None and not p.requires_grad, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The frozen layers run in eval mode: their BN statistics do not move either.
    for k in ("layer1.bn.running_mean", "layer2.bn.running_var"):
        assert torch.equal(before[k], model.state_dict()[k]), k
    assert isinstance(model.layer3.bn, DualBN) and not isinstance(model.layer2.bn, DualBN)


def test_auxiliary_bn_statistics_change_only_on_adversarial_forwards(trained):
    method = create_method("advbn", stage=1, steps=2)
    model = method.prepare_model(_fresh_copy(trained)).train()
    bn = model.layer2.bn
    # Initialized from the clean BN.
    assert torch.equal(bn.bn_aug.running_mean, bn.bn_clean.running_mean)
    x, y = _batch(32, seed=3)
    f = model.forward_until(x, "layer1").detach()
    aux0, main0 = bn.bn_aug.running_mean.clone(), bn.bn_clean.running_mean.clone()
    model.forward_after(f, "layer1")  # a clean training forward
    assert torch.equal(bn.bn_aug.running_mean, aux0)
    assert not torch.equal(bn.bn_clean.running_mean, main0)
    main1 = bn.bn_clean.running_mean.clone()
    f_adv = advbn.head_attack(model, f, y, "layer1", steps=2, step_size=0.2, eps=1.1)
    assert torch.equal(bn.bn_aug.running_mean, aux0), "the attack runs in eval mode"
    with advbn.auxiliary_route(model):
        model.forward_after(f_adv, "layer1")  # the adversarial training forward
    assert not torch.equal(bn.bn_aug.running_mean, aux0)
    assert torch.equal(bn.bn_clean.running_mean, main1)
    # Inference uses the main BN.
    assert method.eval_model(model) is model and bn.route == "clean"


def _shift_in_a_training_step(monkeypatch, trained, **options):
    """One AdvBN training step after stage 1 of the small CNN (a ReLU cut): the clean
    features, the deltas the attack found and the shifted features the head was trained on."""
    import studykit.methods.advbn as advbn_method

    seen = {}
    find_deltas, head_attack = advbn.advbn_deltas, advbn.head_attack

    def deltas(*args, **kwargs):
        seen["deltas"] = find_deltas(*args, **kwargs)
        return seen["deltas"]

    def attack(model, f, *args, **kwargs):
        seen["f"], seen["f_adv"] = f, head_attack(model, f, *args, **kwargs)
        return seen["f_adv"]

    monkeypatch.setattr(advbn, "advbn_deltas", deltas)
    monkeypatch.setattr(advbn_method, "head_attack", attack)
    method = create_method("advbn", stage=1, steps=6, **options)
    model = method.prepare_model(_fresh_copy(trained)).train()
    assert advbn.is_relu_cut(model, method.cut)
    x, y = _batch(64, seed=5)
    method.training_step(model, x, y)
    monkeypatch.undo()
    return seen["f"], *seen["deltas"], seen["f_adv"]


def test_without_the_clamp_shifted_statistics_are_the_eq2_targets(monkeypatch, trained):
    f, dm, ds, f_adv = _shift_in_a_training_step(monkeypatch, trained, relu_clamp=False)
    mu, sd = (s.flatten() for s in advbn.channel_stats(f))
    mu_adv, sd_adv = (s.flatten() for s in advbn.channel_stats(f_adv))
    assert not torch.equal(dm, torch.ones_like(dm))  # the attack moved the statistics
    torch.testing.assert_close(mu_adv, dm * mu, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sd_adv, ds.abs() * sd, atol=1e-5, rtol=1e-4)
    assert f_adv.min() < 0  # unclamped: what Eq. 2 gives, below the ReLU's range
    # The default clamps after the ReLU cut (the authors' code): features >= 0, and the
    # statistics miss the targets in the channels whose factors pushed values below 0.
    f, dm, ds, f_adv = _shift_in_a_training_step(monkeypatch, trained)
    assert f_adv.min() >= 0
    mu, sd = (s.flatten() for s in advbn.channel_stats(f))
    mu_adv = advbn.channel_stats(f_adv)[0].flatten()
    assert ((mu_adv - dm * mu).abs() > 0.1 * mu).any()


def test_the_clamp_option_keeps_the_hash_of_runs_made_before_it():
    from studykit.experiment import resolve_config
    from studykit.runs import config_hash

    default = resolve_config(profile="smoke", method="advbn")
    assert "relu_clamp" not in default["train"]["method_config"]
    same = resolve_config(profile="smoke", method="advbn", relu_clamp=True)
    assert config_hash(same["train"]) == config_hash(default["train"])
    paper = resolve_config(profile="smoke", method="advbn", relu_clamp=False)
    assert paper["train"]["method_config"]["relu_clamp"] is False
    assert config_hash(paper["train"]) != config_hash(default["train"])
    assert create_method("advbn", **paper["train"]["method_config"]).config.relu_clamp is False
    with pytest.raises(ValueError, match="relu_clamp"):
        create_method("advbn", relu_clamp="no")


def _fit_advbn(base_state, ckpt, stop_after=None):
    ds = make_synthetic(128, 16, seed=4)
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, width=8)
    method = create_method("advbn", steps=1)
    method.set_base(create_method("standard"), base_state)
    loader = DeviceLoader(ds.x_train, ds.y_train, 64, seed=0)

    def stop(epoch, record, model):
        if epoch == stop_after:
            raise KeyboardInterrupt

    cfg = TrainConfig(epochs=2, lr=0.01, schedule="multistep", milestones=(1.5,))
    return fit(model, method, loader, cfg, checkpoint_path=ckpt, callbacks=[stop],
               progress=False)


def test_fine_tuning_starts_from_the_base_and_resumes_exactly(tmp_path, trained):
    base_state = trained.state_dict()
    full = _fit_advbn(base_state, tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        _fit_advbn(base_state, tmp_path / "b.pt", stop_after=1)
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 1
    resumed = _fit_advbn(base_state, tmp_path / "b.pt")
    assert resumed.resumed_from_epoch == 1
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    # The frozen encoder is the base's, unchanged.
    assert torch.equal(full.model.layer1.conv.weight, trained.layer1.conv.weight)
    assert full.history["train_loss"].tolist() == resumed.history["train_loss"].tolist()


def test_run_experiment_trains_the_missing_base_and_hashes_it(tmp_path, monkeypatch):
    from studykit import experiment
    from studykit.experiment import resolve_config, run_dir_of, run_experiment
    from studykit.nets.autoencoder import autoencoder_run

    common = {"profile": "smoke", "runs_root": str(tmp_path), "progress": False,
              "eval_corruptions": None, "eval_adversarial": None, "n_train": 128, "n_test": 64}
    built, hashed = [], []
    create, fingerprint = experiment.create_method, experiment.data_fingerprint
    monkeypatch.setattr(experiment, "create_method",
                        lambda name, **kw: built.append(name) or create(name, **kw))
    monkeypatch.setattr(experiment, "data_fingerprint",
                        lambda ds: hashed.append(ds.name) or fingerprint(ds))
    r = run_experiment(method="advbn", steps=1, **common)
    assert built == ["advbn", "standard"], "each method is built once"
    assert len(hashed) == 1, "the data is hashed once, for the base run too"
    monkeypatch.undo()
    base_dir = run_dir_of(method="standard", **common)
    assert (base_dir / "DONE").exists(), "the base run was trained and stored"
    cfg = resolve_config(method="advbn", steps=1, **common)
    assert cfg["train"]["base_run"] == base_dir.name
    assert cfg["train"]["lr"] == 1e-3 and cfg["train"]["schedule"] == "multistep"
    stored = json.loads((r.run.dir / "config.json").read_text())["config"]
    assert stored["base_run"] == base_dir.name
    other = resolve_config(method="advbn", steps=1, base_method="augmix", **common)
    assert other["train"]["base_run"] != base_dir.name
    assert run_dir_of(method="advbn", steps=1, base_method="augmix", **common) != r.run.dir
    # The fine-tuned encoder is the base's.
    base = run_experiment(method="standard", **common)
    assert torch.equal(r.model.layer1.conv.weight, base.model.layer1.conv.weight)
    # The decoder of a classifier run: stored in the classifier's run store, then loaded.
    ae, hist = autoencoder_run(base, stage=2, epochs=1, batch_size=64, width=8)
    (ae_dir,) = tmp_path.glob("*/autoencoder/*")
    assert (ae_dir / "DONE").exists() and (ae_dir / "history.csv").exists()
    again, hist_again = autoencoder_run(base, stage=2, epochs=1, batch_size=64, width=8)
    assert hist_again["mse"].tolist() == hist["mse"].tolist()
    for a, b in zip(ae.decoder.state_dict().values(), again.decoder.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="base_method"):
        resolve_config(method="advbn", base_method="advbn", **common)


def test_divergence_of_a_set_with_itself_is_zero_and_grows_with_a_shift(trained):
    x, _ = _batch(64, seed=5)
    same = divergence.feature_divergence(trained, x, x)
    assert list(same["stage"]) == list(trained.stages)
    assert list(same["depth"]) == list(range(1, len(trained.stages) + 1))
    assert (same["divergence"].abs() < 1e-8).all()
    values = [divergence.feature_divergence(trained, x, (x * c).clamp(0, 1))["divergence"].mean()
              for c in (0.9, 0.6, 0.3)]
    assert values[0] < values[1] < values[2]
    # Eq. 5 by hand: N(0, 1) and N(1, 1) -> KL 0.5 each way.
    one, zero = torch.ones(3), torch.zeros(3)
    assert float(divergence.symmetric_kl_gaussian(zero, one, one, one).mean()) == pytest.approx(1.0)


def test_decoder_learns_resumes_and_advbn_shift_raises_the_classifier_loss(tmp_path, trained):
    ds = make_synthetic(64, 16, seed=6)

    def train(ckpt, epochs):
        torch.manual_seed(0)
        ae = AutoEncoder(trained, "layer2", width=8)
        hist = train_decoder(ae, ds.x_train, epochs=epochs, batch_size=32, lr=3e-3,
                             tv_weight=0.01, seed=0, checkpoint_path=ckpt)
        return ae, hist

    full, hist = train(tmp_path / "a.pt", 2)
    assert hist["mse"].iloc[-1] < hist["mse"].iloc[0]
    train(tmp_path / "b.pt", 1)
    resumed, _ = train(tmp_path / "b.pt", 2)
    for a, b in zip(full.decoder.state_dict().values(), resumed.decoder.state_dict().values()):
        assert torch.equal(a, b)
    x, y = ds.x_test.float() / 255, ds.y_test
    rec = shift_images(full, trained, x, y, steps=0)
    assert rec.shape == x.shape and torch.allclose(rec, full(x))
    shifted = shift_images(full, trained, x, y, steps=4, step_size=0.2, eps=0.7)
    with torch.no_grad():
        assert F.cross_entropy(trained(shifted), y) > F.cross_entropy(trained(rec), y)
    assert not trained.training


@pytest.mark.parametrize("arch, width", [("resnet110", 4), ("preact_resnet110", 4),
                                         ("wrn28_10", 16), ("wrn50_2", 8)])
def test_cut_points_and_attack_on_the_papers_networks(arch, width):
    # Narrow copies of the papers' networks (same depth and names), 8x8 images.
    torch.manual_seed(0)
    model = create_model(arch, 10, width=width).eval()
    cuts = [advbn.cut_stage(model, k) for k in (1, 2, 3)]
    assert cuts == (["block1", "block2", "block3"] if arch.startswith("wrn28")
                    else ["layer1", "layer2", "layer3"])
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    for k, name in enumerate(cuts, 1):
        encoder = advbn.encoder_module_names(model, name)
        later = f"layer{k + 1}" if not arch.startswith("wrn28") else f"block{k + 1}"
        assert name in encoder and later not in encoder
        assert advbn.is_relu_cut(model, name) == (arch in ("resnet110", "wrn50_2"))
    m = _fresh_copy(model)
    assert advbn.add_auxiliary_bn(m, "layer1" if cuts[0] == "layer1" else "block1") > 0
    f = m.forward_until(x, cuts[0])
    shifted = advbn.head_attack(m, f, y, cuts[0], steps=1, step_size=0.2, eps=1.1)
    assert shifted.shape == f.shape and torch.isfinite(m.forward_after(shifted, cuts[0])).all()
    if advbn.is_relu_cut(m, cuts[0]):
        assert shifted.min() >= 0
