"""Method contract tests (every registered method) and the behaviour of AugMix, AugMax and
PGD-AT: the inner maximization raises the loss and stops per sample, DuBIN routes forwards to
their own BN statistics, attacks leave BN statistics and modes alone."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import fit_batch, toy_batch

from studykit import methods
from studykit.augment import augmix_chains, mix, sample_augmix_params
from studykit.losses import jsd_consistency
from studykit.methods.augmax import augmax_search
from studykit.models import create_model
from studykit.nets.corruption_net import CorruptionNet
from studykit.normalization import DualBN, DuBIN, bn_route, dual_bn_layers

# Methods whose default config is too slow for a per-step contract test get overrides here.
FAST_OVERRIDES = {"augmax": {"steps": 2}, "pgd_at": {"steps": 2},
                  "advmax": {"steps": 2, "stadv_steps": 2},
                  "augmix_pgdat": {"pgd_steps": 2}, "robust_augmix": {"steps": 2},
                  "ada": {"steps": 2}}


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained to (near) zero error on the toy problem."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=8)
    x, y = toy_batch(128, seed=1)
    return fit_batch(model, x, y, steps=60)


def with_corruption_net(m: methods.Method) -> methods.Method:
    """AdA and DeepAugment need their corruption network (``run_experiment`` loads it)."""
    if hasattr(m, "attach"):
        torch.manual_seed(0)
        m.attach(CorruptionNet(8, 1))
    return m


# What each method's module docstring must cite: first author(s), venue and year, and the
# paper's title where the docstring names it. A new method adds its row (the test below
# fails for a registered method without one). ``standard`` is the CIFAR recipe every paper
# compares against and has no paper of its own.
CITATIONS: dict[str, tuple[str, ...] | None] = {
    "standard": None,
    "ada": ("Calian et al.", "ICLR 2022",
            "Defending against image corruptions through adversarial augmentations"),
    "advbn": ("Shu et al.", "NeurIPS 2021",
              "Encoding Robustness to Image Style via Adversarial Feature Perturbations"),
    "augmax": ("Wang et al.", "NeurIPS 2021",
               "AugMax: Adversarial Composition of Random Augmentations for Robust Training"),
    # AugMax's Table-10 strategy baselines: cited as that table of the AugMax paper.
    "advmax": ("Wang et al.", "NeurIPS 2021", "AugMax Table 10"),
    "advmix": ("Wang et al.", "NeurIPS 2021", "AugMax Table 10"),
    "augmix_pgdat": ("Wang et al.", "NeurIPS 2021", "AugMax Table 10"),
    "augmix": ("AugMix", "Hendrycks et al.", "ICLR 2020"),
    "deepaugment": ("Hendrycks et al.", "ICCV 2021", "The Many Faces of Robustness"),
    "maxup": ("Gong et al.", "CVPR 2021", "MaxUp: Lightweight Adversarial Training with Data "
              "Augmentation Improves Neural Network Training"),
    "pgd_at": ("Madry et al.", "ICLR 2018"),
    "robust_augmix": ("Martinez-Martinez and Brown", "RobustAugMix: Joint Optimization of "
                      "Natural and Adversarial Robustness"),
}


def test_every_registered_method_has_a_citation_row():
    assert sorted(CITATIONS) == sorted(methods.list_methods())


@pytest.mark.parametrize("name", methods.list_methods())
def test_module_docstring_cites_the_paper(name):
    cls = methods.get_method_class(name)
    doc = sys.modules[cls.__module__].__doc__ or ""
    text = " ".join(doc.split())  # docstrings wrap titles across lines
    expected = CITATIONS.get(name, ("(no citation row for this method)",))
    if expected is None:
        assert text, f"{name}: the module has no docstring"
        return
    missing = [s for s in expected if s not in text]
    assert not missing, f"{cls.__module__}'s docstring does not cite {missing}"


@pytest.mark.parametrize("name", methods.list_methods())
def test_config_is_frozen_and_keyword_only(name):
    cls = methods.get_method_class(name)
    cfg = cls.Config()
    assert dataclasses.is_dataclass(cfg)
    fields = dataclasses.fields(cfg)
    assert fields, f"{name}.Config has no options"
    assert all(f.kw_only for f in fields), [f.name for f in fields if not f.kw_only]
    # Positional construction fails, even with the defaults' own values in order.
    with pytest.raises(TypeError, match="positional"):
        cls.Config(*(getattr(cfg, f.name) for f in fields))
    for f in fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, f.name, getattr(cfg, f.name))


@pytest.mark.parametrize("name", methods.list_methods())
def test_method_contract(name):
    m = with_corruption_net(methods.create_method(name, **FAST_OVERRIDES.get(name, {})))
    torch.manual_seed(0)
    model = m.prepare_model(create_model("small_cnn", 4, width=8)).train()
    x, y = toy_batch(16)
    out = m.training_step(model, x, y)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (16, 4)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # Metrics are floats or 0-dim tensors (read by the trainer once per epoch).
    assert all(isinstance(v, float) or (torch.is_tensor(v) and v.ndim == 0)
               for v in out.metrics.values())
    assert m.eval_model(model) is model
    # Same generator seed -> same step.
    m2 = with_corruption_net(methods.create_method(name, **FAST_OVERRIDES.get(name, {})))
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
    x, y = toy_batch(64, seed=2)
    g = torch.Generator().manual_seed(0)
    params = sample_augmix_params(64, generator=g)
    chains = augmix_chains(x, params)
    res = augmax_search(trained, x, y, chains, steps=10, early_stop=None,
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        end = F.cross_entropy(trained(res.images(x, chains)), y)
    assert end > res.start_loss + 1e-3
    assert (res.steps_taken == 10).all() and res.computed == 64 * 10
    assert ((res.m >= 0) & (res.m <= 1)).all()
    x_adv = res.images(x, chains)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def _search_case(trained, n_wrong=8, seed=3):
    x, y = toy_batch(64, seed=seed)
    y = y.clone()
    y[:n_wrong] = (y[:n_wrong] + 1) % 4  # wrong labels: misclassified from the start
    chains = augmix_chains(x, sample_augmix_params(64, generator=torch.Generator().manual_seed(0)))
    return x, y, chains


def test_augmax_search_every_sample_takes_a_step_and_stops_when_fooled(trained):
    x, y, chains = _search_case(trained)
    res = augmax_search(trained, x, y, chains, steps=10, early_stop=1,
                        generator=torch.Generator().manual_seed(5))
    # Algorithm 1 checks after each update: a sample misclassified at its random start still
    # takes its first step, and (its label being wrong) stops right after it.
    assert (res.steps_taken >= 1).all()
    assert (res.steps_taken[:8] == 1).all()
    final = trained(res.images(x, chains)).argmax(1) == y
    assert (res.steps_taken[final] == 10).all()
    stopped = res.steps_taken < 10
    assert stopped[8:].any() and not final[stopped].any()
    # Only active samples are computed: the cost is the sum of the steps taken.
    assert res.computed < 64 * 10
    assert res.computed == int(res.steps_taken.sum()) + int(stopped.sum())
    # Each sample's result is where an unstopped search was after as many steps (in eval mode
    # the samples do not interact, so computing a subset changes nothing).
    for t in sorted(set(res.steps_taken.tolist())):
        full = augmax_search(trained, x, y, chains, steps=t, early_stop=None,
                             generator=torch.Generator().manual_seed(5))
        sel = res.steps_taken == t
        torch.testing.assert_close(res.m[sel], full.m[sel], rtol=0, atol=1e-6)
        torch.testing.assert_close(res.p[sel], full.p[sel], rtol=0, atol=1e-6)


def test_augmax_search_reference_rule_stops_the_batch_not_the_sample(trained):
    x, y, chains = _search_case(trained)
    ref = augmax_search(trained, x, y, chains, steps=10, early_stop=1, stop_rule="reference",
                        generator=torch.Generator().manual_seed(5))
    # Every sample ascends together (the reference's mask is a no-op) ...
    assert ref.steps_taken.unique().numel() == 1 and ref.computed >= 64
    # ... and with every sample misclassified at the start the batch takes no step at all,
    # where Algorithm 1 takes one.
    y_all_wrong = (y + 1) % 4
    with torch.no_grad():
        start = augmax_search(trained, x, y_all_wrong, chains, steps=0,
                              generator=torch.Generator().manual_seed(5))
        assert (trained(start.images(x, chains)).argmax(1) != y_all_wrong).all()
    none = augmax_search(trained, x, y_all_wrong, chains, steps=10, stop_rule="reference",
                         generator=torch.Generator().manual_seed(5))
    one = augmax_search(trained, x, y_all_wrong, chains, steps=10, stop_rule="paper",
                        generator=torch.Generator().manual_seed(5))
    assert (none.steps_taken == 0).all() and (one.steps_taken >= 1).all()
    with pytest.raises(ValueError, match="unknown stop_rule 'fat'; choose one of: paper"):
        methods.create_method("augmax", stop_rule="fat")


def test_three_views_without_dual_layers_are_one_forward():
    # A plain-BN model must normalize the three views with one set of batch statistics.
    from studykit.methods.consistency import three_view_step

    torch.manual_seed(0)
    a = create_model("small_cnn", 4, width=8).train()
    b = create_model("small_cnn", 4, width=8).train()
    b.load_state_dict(a.state_dict())
    x, y = toy_batch(16)
    xh, xm = x.flip(-1), x.flip(-2)
    out = three_view_step(a, x, y, xh, xm, jsd_lambda=10.0)
    logits_b = b(torch.cat([x, xh, xm]))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(out.logits, logits_b[:16], rtol=1e-5, atol=1e-5)
    # AugMax with plain BN: the search runs in eval mode, training takes one forward.
    m = methods.create_method("augmax", norm="bn", steps=2)
    model = m.prepare_model(create_model("small_cnn", 4, width=8)).train()
    m.training_step(model, x, y)
    tracked = {int(mod.num_batches_tracked) for mod in model.modules()
               if isinstance(mod, torch.nn.BatchNorm2d)}
    assert tracked == {1}


def test_augmax_search_leaves_bn_statistics_and_mode_alone():
    torch.manual_seed(0)
    model = methods.create_method("augmax").prepare_model(create_model("small_cnn", 4, width=8))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = toy_batch(16)
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
    x, y = toy_batch(16)
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
    m.training_step(model, *toy_batch(16))
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
    m.training_step(model, *toy_batch(16))
    assert (seen["x_adv"] - seen["x"]).abs().max() <= 8 / 255 + 1e-6
    assert seen["kw"]["steps"] == 10 and seen["kw"]["step_size"] == pytest.approx(2 / 255)
    l2 = methods.create_method("pgd_at", preset="l2_0.5").config.attack_kwargs()
    assert l2["norm"] == "l2" and l2["eps"] == 0.5
    with pytest.raises(ValueError, match="unknown PGD preset"):
        methods.create_method("pgd_at", preset="linf_3")


def test_pgd_at_eps_ramp_is_a_function_of_the_step(monkeypatch):
    from studykit.schedules import ramp_scale

    assert ramp_scale(0, 100, 0.0) == 1.0
    assert ramp_scale(9, 100, 0.5) == pytest.approx(10 / 50)
    assert ramp_scale(49, 100, 0.5) == 1.0 and ramp_scale(99, 100, 0.5) == 1.0
    # A delay of clean training first, then the ramp.
    assert ramp_scale(19, 100, 0.5, delay=0.2) == 0.0
    assert ramp_scale(29, 100, 0.5, delay=0.2) == pytest.approx(10 / 50)
    assert ramp_scale(69, 100, 0.5, delay=0.2) == 1.0
    m = methods.create_method("pgd_at", eps_ramp=0.5, steps=2)
    model = create_model("small_cnn", 4, width=8).train()
    x, y = toy_batch(16)
    for step, total in [(4, 100), (70, 100), (4, 100)]:
        m.set_progress(step, total)
        out = m.training_step(model, x, y)
        assert out.metrics["eps"] == pytest.approx(8 / 255 * ramp_scale(step, total, 0.5))
    with pytest.raises(ValueError, match="eps_ramp must be .* got 2"):
        methods.create_method("pgd_at", eps_ramp=2)


def test_unknown_norm_is_an_error():
    with pytest.raises(ValueError, match="unknown norm 'gn'; choose one of: bn, dubn, dubin, ibn"):
        methods.create_method("augmax", norm="gn")


def test_worst_of_k_levels_picks_the_highest_loss_draw(trained):
    from studykit.methods.augmax_baselines import worst_of_k_levels

    x, y = toy_batch(16, seed=4)
    params = sample_augmix_params(16, generator=torch.Generator().manual_seed(0))
    worst, chains = worst_of_k_levels(trained, x, y, params, k=5,
                                      generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(chains, augmix_chains(x, worst))
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


def test_advmax_warps_the_worst_mixture_with_stadv(trained):
    from studykit.attacks import flow_warp, stadv_flow
    from studykit.methods.augmax import adversarial_mix

    x, y = toy_batch(16, seed=5)
    opts = dict(steps=2, k=2, stadv_steps=3, stadv_bound=0.5)
    with_stadv = methods.create_method("advmax", **opts)
    without = methods.create_method("advmax", stadv=False, **opts)
    params = sample_augmix_params(16, generator=torch.Generator().manual_seed(0))
    x_on, m_on = with_stadv.hard_images(trained, x, y, params, torch.Generator().manual_seed(1))
    x_off, m_off = without.hard_images(trained, x, y, params, torch.Generator().manual_seed(1))
    assert "stadv_shift" not in m_off and 0 < float(m_on["stadv_shift"]) <= 0.5 * 2**0.5
    # StAdv is the last step: it warps the image the rest of AdvMax made, within its bound.
    flow = stadv_flow(trained, x_off, y, bound=0.5, steps=3)
    assert torch.equal(x_on, flow_warp(x_off, flow))
    with torch.no_grad():
        loss_on = F.cross_entropy(trained(x_on), y)
        loss_off = F.cross_entropy(trained(x_off), y)
    assert loss_on > loss_off
    # Without StAdv, AdvMax is the worst-of-k chains' adversarial mix.
    from studykit.methods.augmax_baselines import worst_of_k_levels
    g = torch.Generator().manual_seed(1)
    _, chains = worst_of_k_levels(trained, x, y, params, k=2, generator=g)
    torch.testing.assert_close(adversarial_mix(trained, x, y, chains, without.config, g)[0],
                               x_off)

    # A training step with StAdv: finite loss, gradients, the model's modes kept.
    torch.manual_seed(0)
    model = with_stadv.prepare_model(create_model("small_cnn", 4, width=8)).train()
    out = with_stadv.training_step(model, x, y)
    out.loss.backward()
    assert torch.isfinite(out.loss) and "stadv_shift" in out.metrics
    assert all(mod.training for mod in model.modules())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_advmax_options_are_its_own():
    # The other baselines do not carry StAdv's options (so their run hashes stay as they were).
    assert "stadv" not in methods.method_config_fields("advmix")
    assert "stadv" not in methods.method_config_fields("augmix_pgdat")
    with pytest.raises(ValueError, match="stadv_bound"):
        methods.create_method("advmax", stadv_bound=0.0)
