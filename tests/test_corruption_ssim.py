"""The SSIM studies of notebook 06 (studykit.analysis.corruption_ssim) and their figures: SSIM
of AdA / DeepAugment images over the radius, its table, the SSIM guard's effect."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from studykit import viz
from studykit.analysis import corruption_ssim
from studykit.analysis.ssim import ssim
from studykit.models import create_model
from studykit.nets.corruption_net import CorruptionNet

NUS = [1e-4, 0.05, 0.3]


def _identity_net() -> CorruptionNet:
    """A corruption network that returns its input at phi (every block has a non-zero norm but
    body_end's weight, so the median radius, and AdA's step, is positive)."""
    net = CorruptionNet(channels=3, blocks=0)
    eye = torch.zeros(3, 3, 3, 3)
    for c in range(3):
        eye[c, c, 1, 1] = 1.0
    with torch.no_grad():
        net.head.weight.copy_(eye)
        net.head.bias.fill_(0.1)
        net.body_end.weight.zero_()
        net.body_end.bias.fill_(0.1)
        net.tail.weight.copy_(eye)
        net.tail.bias.fill_(-0.2)
    return net.eval()


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(12, 3, 8, 8, generator=g), size=32, mode="bilinear",
                      align_corners=False).clamp(0.05, 0.95)
    y = torch.randint(0, 4, (12,), generator=g)
    torch.manual_seed(0)
    classifier = create_model("small_cnn", 4, width=8).eval()
    return classifier, _identity_net(), x, y


def test_identity_net_returns_its_input(setup):
    _, net, x, _ = setup
    with torch.no_grad():
        torch.testing.assert_close(net(x), x, atol=1e-6, rtol=0)


def test_perturbed_net_method_keeps_only_the_methods_options(setup):
    _, net, _, _ = setup
    options = {"steps": 3, "ssim_threshold": 0.5, "nu": 9.0}
    ada = corruption_ssim.perturbed_net_method("ada", net, nu=0.02, options=options, seed=1)
    rand = corruption_ssim.perturbed_net_method("deepaugment", net, nu=0.02, options=options)
    assert ada.config.steps == 3 and ada.config.nu == 0.02 and ada.config.ssim_threshold == 0.5
    assert rand.config.nu == 0.02 and not hasattr(rand.config, "steps")
    assert ada.net is net and rand.net is net


def test_ssim_is_one_at_a_tiny_radius_and_falls_as_the_radius_grows(setup):
    classifier, net, x, y = setup
    per_image = corruption_ssim.ssim_by_radius(classifier, net, x, y, NUS,
                                               options={"steps": 2}, seed=0, batch_size=5)
    assert list(per_image.columns) == ["nu", "image", "ssim_ada", "ssim_random", "correct_ada",
                                       "correct_random"]
    assert len(per_image) == len(NUS) * len(x)
    assert per_image["image"].tolist() == list(range(len(x))) * len(NUS)
    assert per_image["ssim_ada"].dtype == np.float32 and per_image["correct_ada"].dtype == bool
    means = per_image.groupby("nu")[["ssim_ada", "ssim_random"]].mean()
    assert means.loc[NUS[0]].min() > 0.999  # no perturbation to speak of: the image itself
    for col in ("ssim_ada", "ssim_random"):
        assert means[col].is_monotonic_decreasing and means[col].iloc[-1] < 0.9
    # The SSIM is the one of the method's images: recompute AdA's for one radius by hand.
    ada = corruption_ssim.perturbed_net_method("ada", net, nu=NUS[1], options={"steps": 2})
    first = [ssim(x[:5], ada.corrupt(classifier, x[:5], y[:5], ada.rng("cpu"))[0])]
    torch.testing.assert_close(
        torch.from_numpy(per_image[per_image["nu"] == NUS[1]]["ssim_ada"].to_numpy()[:5].copy()),
        first[0])
    again = corruption_ssim.ssim_by_radius(classifier, net, x, y, NUS, options={"steps": 2},
                                           seed=0, batch_size=5)
    assert again.equals(per_image)  # seeded


def test_ssim_radius_summary(setup):
    classifier, net, x, y = setup
    per_image = corruption_ssim.ssim_by_radius(classifier, net, x, y, NUS[1:],
                                               options={"steps": 1})
    table = corruption_ssim.ssim_radius_summary(per_image, threshold=0.95)
    assert table.index.name == "nu" and table.index.tolist() == NUS[1:]
    assert list(table.columns) == ["SSIM mean (AdA)", "SSIM std (AdA)", "share < 0.95 (AdA)",
                                   "SSIM mean (random)", "acc. on AdA (%)",
                                   "acc. on random (%)"]
    last = per_image[per_image["nu"] == NUS[-1]]
    row = table.loc[NUS[-1]]
    assert row["SSIM mean (AdA)"] == pytest.approx(last["ssim_ada"].mean(), rel=1e-6)
    assert row["SSIM std (AdA)"] == pytest.approx(last["ssim_ada"].std(ddof=0), rel=1e-5)
    assert row["share < 0.95 (AdA)"] == pytest.approx((last["ssim_ada"] < 0.95).mean())
    assert row["acc. on random (%)"] == pytest.approx(100 * last["correct_random"].mean())


def test_ssim_guard_effect_pulls_caught_images_back(setup):
    classifier, net, x, y = setup
    off = corruption_ssim.ssim_guard_effect(classifier, net, x, y, nu=0.1,
                                            options={"steps": 1, "ssim_threshold": 0.0})
    assert off.caught.numel() == 0 and torch.equal(off.x_guarded, off.x_hat)
    t = round(float(off.ssim_before.median()), 3)  # the same draws again: about half caught
    effect = corruption_ssim.ssim_guard_effect(classifier, net, x, y, nu=0.1,
                                               options={"steps": 1, "ssim_threshold": t})
    caught = effect.caught
    torch.testing.assert_close(effect.x_hat, off.x_hat)
    assert effect.threshold == t and 0 < caught.numel() < len(x)
    assert (effect.ssim_after[caught] > effect.ssim_before[caught]).all()
    assert effect.others_unchanged()
    torch.testing.assert_close(effect.ssim_before, ssim(x, effect.x_hat))
    assert effect.examples(2).tolist() == caught[:2].tolist()
    assert effect.report().startswith(f"nu=0.1: {caught.numel()} of {len(x)} images below t={t}")
    table = effect.table()
    assert list(table.index) == ["before", "after the guard"]
    assert (table["images"] == caught.numel()).all()
    after = effect.ssim_after[caught].double()
    assert table.loc["after the guard", "mean"] == pytest.approx(float(after.mean()))
    assert table.loc["after the guard", "min"] == pytest.approx(float(after.min()))
    assert table.loc["before", "max"] == pytest.approx(float(effect.ssim_before[caught].max()))
    assert table.loc["after the guard", "mean |SSIM - t|"] == pytest.approx(
        float((after - t).abs().mean()))
    assert table.loc["before", "max"] < t
    assert table.loc["before", "mean"] < table.loc["after the guard", "mean"]
    fig = viz.guard_grid(effect, 2)
    assert len(fig.axes) == 3 * min(2, caught.numel())
    assert fig.axes[0].get_ylabel() == "original"
    plt.close(fig)
    none = corruption_ssim.ssim_guard_effect(classifier, net, x, y, nu=1e-4,
                                             options={"ssim_threshold": 0.3})
    assert none.caught.numel() == 0 and none.examples(3).tolist() == [0, 1, 2]
    assert (none.table()["images"] == 0).all() and none.table()["mean"].isna().all()
    assert torch.equal(none.x_guarded, none.x_hat)


def test_plot_ssim_density_draws_a_line_per_radius(setup):
    classifier, net, x, y = setup
    per_image = corruption_ssim.ssim_by_radius(classifier, net, x, y, NUS[1:],
                                               options={"steps": 1})
    fig = viz.plot_ssim_density(per_image)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [lbl.split(" ")[0] for lbl in labels] == [f"nu={nu:g}" for nu in NUS[1:]]
    for line in ax.get_lines():
        xs = line.get_xdata()
        assert xs[-1] == 1.0 and xs[0] <= 0.9 and (line.get_ydata() >= 0).all()
    plt.close(fig)
    # A sample without spread has no density to estimate: drawn as zero.
    flat = per_image.assign(ssim_ada=np.float32(0.97))
    fig = viz.plot_ssim_density(flat)
    assert all((line.get_ydata() == 0).all() for line in fig.axes[0].get_lines())
    plt.close(fig)
