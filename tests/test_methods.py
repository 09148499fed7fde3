"""Method contract tests (every registered method) and the behaviour of AugMix, AugMax and
PGD-AT: the inner maximization raises the loss and stops per sample, DuBIN routes forwards to
their own BN statistics, attacks leave BN statistics and modes alone."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
import torch.nn.functional as F

from studykit import methods
from studykit.augmentations import augmix_chains, mix, sample_augmix_params
from studykit.losses import jsd_consistency
from studykit.methods.augmax import augmax_search
from studykit.models import create_model
from studykit.normalization import DualBN, DuBIN, bn_route, dual_bn_layers

# Methods whose default config is too slow for a per-step contract test get overrides here.
FAST_OVERRIDES = {"augmax": {"steps": 2}, "pgd_at": {"steps": 2}, "advmax": {"steps": 2},
                  "augmix_pgdat": {"pgd_steps": 2}}


def _toy_batch(n=32, seed=0):
    """Images whose class (of 4) is the quadrant holding a bright square, on noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.4
    y = torch.arange(n) % 4
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, :, 16 * r + 4 : 16 * r + 12, 16 * c + 4 : 16 * c + 12] += 0.6
    return x, y


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained to (near) zero error on the toy problem."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = _toy_batch(128, seed=1)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("name", methods.list_methods())
def test_method_contract(name):
    cls = methods.get_method_class(name)
    doc = sys.modules[cls.__module__].__doc__
    assert doc and cls.__module__.startswith("studykit.methods."), "module docstring cites paper"
    cfg = cls.Config()
    assert dataclasses.is_dataclass(cfg)
    for f in dataclasses.fields(cfg)[:1]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, f.name, None)
    m = methods.create_method(name, **FAST_OVERRIDES.get(name, {}))
    torch.manual_seed(0)
    model = m.prepare_model(create_model("small_cnn", 4, width=8)).train()
    x, y = _toy_batch(16)
    out = m.training_step(model, x, y)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (16, 4)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(isinstance(v, float) for v in out.metrics.values())
    assert m.eval_model(model) is model
    # Same generator seed -> same step.
    m2 = methods.create_method(name, **FAST_OVERRIDES.get(name, {}))
    torch.manual_seed(0)
    model2 = m2.prepare_model(create_model("small_cnn", 4, width=8)).train()
    assert torch.equal(m2.training_step(model2, x, y).loss, out.loss.detach())


def test_jsd_matches_a_hand_computation():
    z = [torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]),
         torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]]),
         torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])]
    p = [torch.softmax(t, 1) for t in z]
    m = torch.stack(p).mean(0).clamp(1e-7, 1)
    expected = sum((q * (q.log() - m.log())).sum(1).mean() for q in p) / 3
    assert jsd_consistency(z).item() == pytest.approx(expected.item(), rel=1e-6)


def test_jsd_is_zero_for_equal_views_and_positive_otherwise():
    z = torch.randn(8, 10)
    assert jsd_consistency([z, z, z]).item() == pytest.approx(0.0, abs=1e-6)
    assert jsd_consistency([z, z + torch.randn(8, 10), z]).item() > 0
    with pytest.raises(ValueError):
        jsd_consistency([z])


def test_augmax_search_raises_the_loss_over_its_random_start(trained):
    x, y = _toy_batch(64, seed=2)
    g = torch.Generator().manual_seed(0)
    params = sample_augmix_params(64, generator=g)
    chains = augmix_chains(x, params)
    res = augmax_search(trained, x, y, chains, steps=10, early_stop=None,
                        generator=torch.Generator().manual_seed(1))
    assert res.losses[-1] > res.losses[0] + 1e-3
    assert (res.steps_taken == 10).all()
    assert ((res.m >= 0) & (res.m <= 1)).all()
    x_adv = mix(x, chains, F.softmax(res.p, 1), res.m)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_augmax_search_stops_each_sample_after_its_first_misclassified_step(trained):
    x, y = _toy_batch(64, seed=3)
    y = y.clone()
    y[:8] = (y[:8] + 1) % 4  # wrong labels: misclassified from the start
    chains = augmix_chains(x, sample_augmix_params(64, generator=torch.Generator().manual_seed(0)))
    start_g = torch.Generator().manual_seed(5)
    m0 = torch.rand(64, generator=start_g)
    p0 = torch.rand(64, 3, generator=start_g)
    res = augmax_search(trained, x, y, chains, steps=10, early_stop=1,
                        generator=torch.Generator().manual_seed(5))
    # Samples misclassified at the random start never move: they keep their start values.
    assert (res.steps_taken[:8] == 0).all()
    assert torch.equal(res.m[:8], m0[:8]) and torch.equal(res.p[:8], p0[:8])
    # The others moved; those still correct at the end used every step.
    assert (res.steps_taken[8:] > 0).any()
    final = trained(mix(x, chains, F.softmax(res.p, 1), res.m)).argmax(1) == y
    assert (res.steps_taken[final] == 10).all()
    # Every stopped sample stopped on a misclassified point: it is misclassified now.
    stopped = res.steps_taken < 10
    assert not final[stopped].any()


def test_augmax_search_leaves_bn_statistics_and_mode_alone():
    torch.manual_seed(0)
    model = methods.create_method("augmax").prepare_model(create_model("small_cnn", 4, width=8))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _toy_batch(16)
    chains = augmix_chains(x, sample_augmix_params(16, generator=torch.Generator()))
    with bn_route(model, "aug"):
        augmax_search(model, x, y, chains, steps=3, early_stop=None)
    assert model.training and all(mod.training for mod in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def _counts(model):
    layers = list(dual_bn_layers(model))
    return ([int(d.bn_clean.num_batches_tracked) for d in layers],
            [int(d.bn_aug.num_batches_tracked) for d in layers])


def test_augmax_dubin_routes_each_forward_to_its_own_bn():
    torch.manual_seed(0)
    m = methods.create_method("augmax", steps=2)
    model = m.prepare_model(create_model("small_cnn", 4, width=8)).train()
    assert any(isinstance(mod, DuBIN) for mod in model.modules())
    x, y = _toy_batch(16)
    m.training_step(model, x, y)
    clean, aux = _counts(model)
    # AugMix and clean forwards through the main BN; the AugMax forward through the auxiliary
    # BN; the search runs in eval mode and updates nothing.
    assert set(clean) == {2} and set(aux) == {1}
    # The route is back on the clean BN for evaluation.
    assert all(d.route == "clean" for d in dual_bn_layers(model))


def test_augmix_dubn_sends_views_to_the_auxiliary_bn():
    m = methods.create_method("augmix", norm="dubn")
    model = m.prepare_model(create_model("small_cnn", 4, width=8)).train()
    assert sum(isinstance(mod, DualBN) for mod in model.modules()) == 4
    m.training_step(model, *_toy_batch(16))
    clean, aux = _counts(model)
    assert set(clean) == {1} and set(aux) == {1}


def test_pgd_at_trains_on_examples_inside_the_ball(monkeypatch, trained):
    seen = {}
    import studykit.methods.pgd_at as mod

    real = mod.pgd

    def spy(model, x, y, **kw):
        x_adv = real(model, x, y, **kw)
        seen["x"], seen["x_adv"], seen["kw"] = x, x_adv, kw
        return x_adv

    monkeypatch.setattr(mod, "pgd", spy)
    m = methods.create_method("pgd_at", preset="linf_8")
    model = create_model("small_cnn", 4, width=8).train()
    m.training_step(model, *_toy_batch(16))
    assert (seen["x_adv"] - seen["x"]).abs().max() <= 8 / 255 + 1e-6
    assert seen["kw"]["steps"] == 10 and seen["kw"]["step_size"] == pytest.approx(2 / 255)
    l2 = methods.create_method("pgd_at", preset="l2_0.5").config.attack_kwargs()
    assert l2["norm"] == "l2" and l2["eps"] == 0.5
    with pytest.raises(ValueError, match="unknown PGD preset"):
        methods.create_method("pgd_at", preset="linf_3")


def test_unknown_norm_is_an_error():
    with pytest.raises(ValueError, match="unknown norm 'gn'; choose one of: bn, dubn, dubin, ibn"):
        methods.create_method("augmax", norm="gn")


def test_worst_of_k_levels_picks_the_highest_loss_draw(trained):
    from studykit.methods.augmax_baselines import worst_of_k_levels

    x, y = _toy_batch(16, seed=4)
    params = sample_augmix_params(16, generator=torch.Generator().manual_seed(0))
    worst = worst_of_k_levels(trained, x, y, params, k=5,
                              generator=torch.Generator().manual_seed(1))
    assert torch.equal(worst.op, params.op) and torch.equal(worst.w, params.w)

    def loss_of(p):
        with torch.no_grad():
            return F.cross_entropy(trained(mix(x, augmix_chains(x, p), p.w, p.m)), y,
                                   reduction="none")

    # Replay the same k draws: the chosen one's loss is the per-sample maximum.
    draws = sample_augmix_params(5 * 16, depth=params.op.shape[2],
                                 generator=torch.Generator().manual_seed(1))
    losses = torch.stack([
        loss_of(dataclasses.replace(params, level=draws.level[:, i * 16:(i + 1) * 16],
                                    sign=draws.sign[:, i * 16:(i + 1) * 16]))
        for i in range(5)])
    assert torch.allclose(loss_of(worst), losses.max(0).values, atol=1e-5)
