"""DeepAugment's distortions of the corruption network (studykit.nets.distortions): every
operation changes the output on its own and nothing changes at probability 0, draws are per
image and replayable, and the images move further from the clean ones than the reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SHARED_DATA

from studykit.analysis import ssim
from studykit.nets import distortions
from studykit.nets.corruption_net import CorruptionNet, pretrain_corruption_net


def _smooth_images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    return F.interpolate(x, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def pretrained() -> CorruptionNet:
    """A small corruption network pretrained (briefly) to reconstruct smooth images."""
    x = _smooth_images(192, seed=2)
    return pretrain_corruption_net(x[:160], x[160:], dataset="toy", data_key="toy", channels=8,
                                   blocks=4, epochs=3, lr=3e-3, batch_size=32).net


def _distort(net, x, seed=0, **kw):
    return distortions.distort(net, x, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("name", list(distortions.OPERATIONS))
def test_each_operation_alone_changes_every_image(name, pretrained):
    x = _smooth_images(6, seed=3)
    with torch.no_grad():
        recon = pretrained(x)
    probs = distortions.only(name)
    draw = distortions.draw_distortions(pretrained, 6, probabilities=probs,
                                        generator=torch.Generator().manual_seed(0))
    assert draw.applied[name].all()
    assert not any(v.any() for k, v in draw.applied.items() if k != name)
    out = _distort(pretrained, x, probabilities=probs)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    change = (out - recon).abs().flatten(1).amax(1)
    assert (change > 1e-3).all(), f"{name} left some image unchanged: {change.tolist()}"


def test_probability_zero_gives_the_reconstruction(pretrained):
    x = _smooth_images(6, seed=3)
    zero = {name: 0.0 for name in distortions.OPERATIONS}
    draw = distortions.draw_distortions(pretrained, 6, probabilities=zero)
    assert draw.params == {}
    with torch.no_grad():
        torch.testing.assert_close(_distort(pretrained, x, probabilities=zero), pretrained(x),
                                   atol=0, rtol=0)


def test_draws_differ_within_a_batch_and_replay_with_the_seed(pretrained):
    x = _smooth_images(1, seed=4).repeat(16, 1, 1, 1)  # one image 16 times
    a, b, c = _distort(pretrained, x, 7), _distort(pretrained, x, 7), _distort(pretrained, x, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    distinct = {tuple(img.flatten().tolist()) for img in a}
    assert len(distinct) >= 15  # two images drawing no operation at all: p < 1e-3
    draw = distortions.draw_distortions(pretrained, 16,
                                        generator=torch.Generator().manual_seed(7))
    patterns = {tuple(bool(v[i]) for v in draw.applied.values()) for i in range(16)}
    assert len(patterns) > 8
    # Every image draws each weight operation with the reference's rate, 1 - (16/17)^3.
    big = distortions.draw_distortions(pretrained, 1000,
                                       generator=torch.Generator().manual_seed(0))
    rate = np.mean([float(big.applied[k].float().mean()) for k, op in
                    distortions.OPERATIONS.items() if op.group == "weights"])
    assert rate == pytest.approx(distortions.WEIGHT_P, abs=0.01)
    for group in ("head", "body"):
        names = [k for k, op in distortions.OPERATIONS.items() if op.group == group]
        per_image = torch.stack([big.applied[k] for k in names]).sum(0)
        assert int(per_image.max()) == 1  # the operations of a group exclude each other


def _mean_ssims(net, x, seed=0):
    with torch.no_grad():
        recon = net(x)
    return float(ssim(x, recon).mean()), float(ssim(x, _distort(net, x, seed)).mean())


def test_distorted_images_are_further_from_the_clean_ones_than_the_reconstruction(pretrained):
    x = _smooth_images(64, seed=5)
    s_recon, s_deep = _mean_ssims(pretrained, x)
    assert s_deep < s_recon - 0.1, (s_recon, s_deep)


@pytest.mark.slow  # a second pretraining
@pytest.mark.skipif(not SHARED_DATA.exists(), reason="the real-image file is not present")
def test_distorted_real_images_are_further_than_the_reconstruction():
    with np.load(SHARED_DATA) as data:
        x_train, x_test = (torch.from_numpy(data[k][:n]).permute(0, 3, 1, 2).contiguous()
                           for k, n in (("x_train", 192), ("x_test", 64)))
    net = pretrain_corruption_net(x_train, x_test, dataset="real", data_key="real", channels=8,
                                  blocks=4, epochs=3, lr=3e-3, batch_size=32).net
    x = x_test.float().div(255)
    s_recon, s_deep = _mean_ssims(net, x)
    assert s_deep < s_recon - 0.1, (s_recon, s_deep)


def test_a_network_without_blocks_keeps_its_head_operations():
    torch.manual_seed(0)
    net = CorruptionNet(4, 0).eval()
    x = _smooth_images(4, seed=6)
    with torch.no_grad():
        recon = net(x)
    out = _distort(net, x, probabilities=distortions.only("negate_features_head"))
    assert (out - recon).abs().flatten(1).amax(1).min() > 0
    # Weight operations and skips have no block to act on: the reconstruction.
    torch.testing.assert_close(_distort(net, x, probabilities=distortions.only("zero_conv")),
                               recon, atol=0, rtol=0)


@pytest.mark.parametrize("probs, match", [
    ({"zero_everything": 0.5}, "unknown DeepAugment operation 'zero_everything'"),
    ({"zero_conv": 1.5}, "probability of 'zero_conv' must be in"),
    ({"drop_features": 0.6, "swap_channels": 0.6}, "head operations exclude each other"),
])
def test_bad_probabilities_say_what_is_wrong(probs, match, pretrained):
    with pytest.raises(ValueError, match=match) as err:
        distortions.draw_distortions(pretrained, 2, probabilities=probs)
    assert "\n" not in str(err.value)
