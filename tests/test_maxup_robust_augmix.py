"""MaxUp, RobustAugMix and Gaussian-smoothing certification."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import beta, norm
from torch import nn

from studykit import certify
from studykit.augment import cutout
from studykit.methods import create_method
from studykit.methods.maxup import mixed_ce
from studykit.models import create_model


class MeanScorer(nn.Module):
    """Logit of class 0 falls with the image's mean brightness: CE(y=0) rises with it. A BN
    layer lets the tests see whether running statistics move."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        self.bn(x)
        m = x.mean((1, 2, 3))
        return torch.stack([-10 * m, torch.zeros_like(m), torch.zeros_like(m)], 1)


def test_maxup_picks_each_images_worst_copy_among_its_own_copies():
    n, m = 3, 4
    # Copy-major batch: copy c of image i at c * n + i, brightness chosen so that a (N, m)
    # reshape of the losses (the known bug) would pick different copies.
    bright = torch.tensor([[0.1, 0.5, 0.2], [0.9, 0.3, 0.1], [0.2, 0.4, 0.8], [0.3, 0.6, 0.4]])
    xr = bright.flatten()[:, None, None, None].expand(m * n, 3, 4, 4).clone()
    y = torch.zeros(m * n, dtype=torch.long)
    maxup = create_method("maxup", m=m)
    best, losses = maxup.select_worst(MeanScorer(), xr, y, y, torch.ones(m * n), n)
    assert losses.shape == (m, n)
    expected = bright.argmax(0) * n + torch.arange(n)
    assert torch.equal(best, expected)
    # the loss of the chosen copy is the maximum over that image's own copies
    per_copy = F.cross_entropy(MeanScorer()(xr), y, reduction="none").view(m, n)
    assert torch.allclose(per_copy[best // n, torch.arange(n)], per_copy.max(0).values)
    wrong = per_copy.reshape(n, m).argmax(1)  # the bug: trial-major copies read as (N, m)
    assert not torch.equal(best, wrong * n + torch.arange(n))


def test_maxup_selection_leaves_bn_statistics_alone_and_low_res_selects_small():
    model = MeanScorer().train()
    before = model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone()
    maxup = create_method("maxup", m=3, low_res=16)
    x, y = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    out = maxup.training_step(model, x, y)
    # one selection forward on 16x16 copies (without updating BN), one training forward at 32
    assert model.calls == [(12, 3, 16, 16), (4, 3, 32, 32)]
    assert model.bn.num_batches_tracked == before[1] + 1  # only the training forward counted
    assert out.logits.shape == (4, 3)


def test_maxup_m1_is_plain_augmentation_and_warmup_is_plain():
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=8).train()
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    m1 = create_method("maxup", m=1, augmentation="cutout")
    m1.seed(3)
    loss = m1.training_step(model, x, y).loss
    g = torch.Generator().manual_seed(3)
    assert torch.allclose(loss, F.cross_entropy(model(cutout(x, 16, generator=g)), y))
    m4 = create_method("maxup", m=4, warmup=0.25)
    m4.set_progress(24, 100)
    assert m4.plain and m4.training_step(model, x, y).metrics["maxup_active"] == 0.0
    m4.set_progress(25, 100)
    assert not m4.plain and m4.training_step(model, x, y).metrics["maxup_active"] == 1.0


def test_maxup_cutmix_mixes_labels_by_area():
    maxup = create_method("maxup", m=1, augmentation="cutmix")
    x, y = torch.rand(6, 3, 32, 32), torch.arange(6) % 3
    xr, y_a, y_b, lam = maxup.augment(x, y, 1, torch.Generator().manual_seed(0))
    own = (xr == x).all(1).float().mean((1, 2))  # share of pixels kept from the image itself
    partner_differs = y_b != y_a
    assert torch.allclose(lam[partner_differs], own[partner_differs], atol=1e-6)
    logits = torch.randn(6, 3)
    expected = lam * F.cross_entropy(logits, y_a, reduction="none") + (1 - lam) * \
        F.cross_entropy(logits, y_b, reduction="none")
    assert torch.allclose(mixed_ce(logits, y_a, y_b, lam, reduction="none"), expected)


def test_robust_augmix_pgd_image_stays_in_its_l2_ball_and_leaves_bn_alone():
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=8).train()
    model(torch.rand(16, 3, 32, 32))  # some running statistics
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num" in k}
    method = create_method("robust_augmix", eps=0.5, steps=3)
    x, y = torch.rand(16, 3, 32, 32), torch.arange(16) % 4
    x_adv = method.adversarial_images(model, x, y, torch.Generator().manual_seed(0))
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    assert ((x_adv - x).flatten(1).norm(dim=1) > 0.1).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    for k, v in model.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), k
    assert model.training
    loss_clean = F.cross_entropy(model.eval()(x), y)
    assert F.cross_entropy(model(x_adv), y) > loss_clean  # the ascent raised the loss


def test_robust_augmix_three_separate_forwards():
    model = MeanScorer().train()
    method = create_method("robust_augmix", steps=1)
    x, y = torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    before = int(model.bn.num_batches_tracked)
    method.training_step(model, x, y)
    assert int(model.bn.num_batches_tracked) == before + 3  # clean, AugMix, PGD: one each
    assert model.calls[-3:] == [(4, 3, 8, 8)] * 3
    joint = create_method("robust_augmix", steps=1, joint_forward=True)
    joint.training_step(model, x, y)
    assert int(model.bn.num_batches_tracked) == before + 4  # one forward of the 3 views
    assert model.calls[-1] == (12, 3, 8, 8)


@pytest.mark.parametrize("joint", [False, True])
def test_robust_augmix_joint_forward_normalizes_by_the_three_views_together(joint):
    # Which batch statistics normalize the clean view: its own (three forwards) or those of
    # the clean, AugMix and PGD views together (one forward, as the kit's AugMix).
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=8).train()
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    with torch.no_grad():
        alone = model(x)  # train mode: normalized by x's own batch statistics
    method = create_method("robust_augmix", steps=1, joint_forward=joint)
    method.seed(0)
    out = method.training_step(model, x, y)
    assert torch.allclose(out.logits, alone, atol=1e-5) != joint
    assert torch.isfinite(out.loss) and set(out.metrics) >= {"ce", "jsd", "adv_acc"}


def test_robust_augmix_forward_option_keeps_the_hash_of_runs_made_before_it():
    from studykit.experiment import resolve_config
    from studykit.runs import config_hash

    default = resolve_config(profile="smoke", method="robust_augmix")
    assert "joint_forward" not in default["train"]["method_config"]
    same = resolve_config(profile="smoke", method="robust_augmix", joint_forward=False)
    assert config_hash(same["train"]) == config_hash(default["train"])
    joint = resolve_config(profile="smoke", method="robust_augmix", joint_forward=True)
    assert joint["train"]["method_config"]["joint_forward"] is True
    assert config_hash(joint["train"]) != config_hash(default["train"])


class Constant(nn.Module):
    def __init__(self, label: int, k: int = 3):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.label, self.k = label, k

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.k) + self.w
        out[:, self.label] = 1.0
        return out


def test_certify_radius_and_abstention_on_a_constructed_case():
    x, y = torch.rand(3, 3, 8, 8), torch.tensor([2, 2, 0])
    sigma, alpha = 0.5, 0.001
    table = certify.certify(Constant(2), x, y, sigma=sigma, n0=4, n=100, alpha=alpha,
                            batch_size=64, progress=False)
    p_lower = beta.ppf(alpha, 100, 1)  # every sample votes for class 2: alpha ** (1 / n)
    assert p_lower == pytest.approx(alpha ** (1 / 100))
    assert table["radius"].tolist() == pytest.approx([sigma * norm.ppf(p_lower)] * 3)
    assert table["prediction"].tolist() == [2, 2, 2]
    assert table["correct"].tolist() == [True, True, False]
    # Too few samples to certify anything: alpha ** (1 / 5) < 1/2, so it abstains.
    few = certify.certify(Constant(2), x, y, sigma=sigma, n0=4, n=5, alpha=alpha,
                          progress=False)
    assert (few["prediction"] == certify.ABSTAIN).all() and (few["radius"] == 0).all()
    acc = certify.certified_accuracy(table, [0.0, 0.5, 2.0])
    expected_r = sigma * norm.ppf(p_lower)
    assert acc["certified_acc"].tolist() == pytest.approx(
        [200 / 3, 200 / 3 if expected_r >= 0.5 else 0.0, 200 / 3 if expected_r >= 2 else 0.0])


def test_certify_counts_follow_the_noise():
    """A classifier thresholding the first pixel: the vote share matches Phi(value / sigma)."""

    class Threshold(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            v = x[:, 0, 0, 0]
            return torch.stack([-v, v], 1) + self.w

    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, 0, 0] = 0.25
    t = certify.certify(Threshold(), x, torch.tensor([1]), sigma=0.5, n0=200, n=20_000,
                        alpha=0.001, batch_size=5000, progress=False)
    share = t["count"][0] / 20_000
    assert share == pytest.approx(norm.cdf(0.25 / 0.5), abs=0.015)


def test_certified_accuracy_curves_and_table():
    x, y = torch.rand(3, 3, 8, 8), torch.tensor([2, 2, 0])
    radii = [0.0, 0.5, 5.0]
    curves = certify.certified_accuracy_curves({"two": Constant(2), "zero": Constant(0)}, x, y,
                                               radii, sigma=0.5, n0=4, n=100, seed=3)
    for label, model in (("two", Constant(2)), ("zero", Constant(0))):
        one = certify.certified_accuracy(
            certify.certify(model, x, y, sigma=0.5, n0=4, n=100, seed=3, progress=False), radii)
        pd.testing.assert_frame_equal(curves[label], one)
    table = certify.certified_accuracy_table(curves)
    assert table.index.tolist() == ["two", "zero"]
    assert table.columns.tolist() == ["r=0", "r=0.5", "r=5"]
    assert table.loc["two", "r=0"] == pytest.approx(200 / 3)
    assert table.loc["zero", "r=0"] == pytest.approx(100 / 3)
    assert table.loc["two", "r=5"] == 0.0  # beyond any radius 100 samples can certify
