"""Tests for studykit.augment: each op's defining property, agreement with PIL (the AugMix
reference's image library), per-sample parameters, replayability, mixing gradients, sampling
distributions, the dense chains (same levels as the grouped ones, no host synchronization), and
the MaxUp augmentations (Cutout, CutMix, Gaussian noise)."""

from __future__ import annotations

import dataclasses
import inspect
import io
import textwrap
import tokenize

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils._python_dispatch import TorchDispatchMode

from studykit import augment as A
from studykit.augment import _common, augmix_params, chains, colour, geometric, mixing


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def natural_u8(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images with some texture, as uint8 NCHW."""
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear")
    mid = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear")
    x = 0.7 * low + 0.25 * mid + 0.05 * torch.rand(n, 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def to_float(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 255


def pil_apply(u8: torch.Tensor, fn) -> torch.Tensor:
    """Apply fn(PIL image) per image of a uint8 NCHW batch; return uint8 NCHW."""
    out = [np.array(fn(Image.fromarray(img.permute(1, 2, 0).numpy()))) for img in u8]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def pil_op(name: str, magnitude: float):
    """The reference's PIL call for one AugMix op at a given magnitude."""
    if name == "autocontrast":
        return ImageOps.autocontrast
    if name == "equalize":
        return ImageOps.equalize
    if name == "posterize":
        return lambda im: ImageOps.posterize(im, int(magnitude))
    if name == "solarize":
        return lambda im: ImageOps.solarize(im, int(magnitude))
    if name == "rotate":
        return lambda im: im.rotate(magnitude, resample=Image.BILINEAR)
    coeffs = {
        "shear_x": (1, magnitude, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, magnitude, 1, 0),
        "translate_x": (1, 0, magnitude, 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, magnitude),
    }[name]
    return lambda im: im.transform(im.size, Image.AFFINE, coeffs, resample=Image.BILINEAR)


@pytest.fixture(scope="module")
def images_u8() -> torch.Tensor:
    u8 = natural_u8(12)
    u8[0] = 77  # a flat image (autocontrast and equalize leave it alone)
    u8[1] = u8[1] // 4 + 100  # low contrast
    u8[2, 0] = 0  # one flat channel
    return u8


# ---------------------------------------------------------------------------------------------
# Colour ops.


def test_posterize_keeps_top_bits(images_u8):
    bits = torch.arange(1, 9).repeat(2)[: len(images_u8)]
    out = A.posterize(to_float(images_u8), bits)
    levels = (out * 255).round().long()
    mask = (255 - (2 ** (8 - bits) - 1)).view(-1, 1, 1, 1)
    assert torch.equal(levels, images_u8.long() & mask)
    assert torch.allclose(out * 255, levels.float(), atol=1e-4)
    for b in (3, 4):
        ref = pil_apply(images_u8, lambda im, b=b: ImageOps.posterize(im, b))
        assert torch.equal(A.posterize(to_float(images_u8), b).mul(255).round().byte(), ref)


def test_posterize_rejects_bad_bits():
    with pytest.raises(ValueError, match="bits"):
        A.posterize(torch.rand(2, 3, 4, 4), 0)


def test_solarize_inverts_exactly_the_levels_at_or_above_threshold(images_u8):
    thresholds = torch.linspace(0, 256, len(images_u8)).round()
    out = (A.solarize(to_float(images_u8), thresholds) * 255).round().long()
    v = images_u8.long()
    expected = torch.where(v >= thresholds.view(-1, 1, 1, 1).long(), 255 - v, v)
    assert torch.equal(out, expected)
    for t in (180, 254):
        ref = pil_apply(images_u8, lambda im, t=t: ImageOps.solarize(im, t))
        assert torch.equal(A.solarize(to_float(images_u8), t).mul(255).round().byte(), ref)


def test_equalize_matches_pil_exactly(images_u8):
    ref = pil_apply(images_u8, ImageOps.equalize)
    assert torch.equal(A.equalize(to_float(images_u8)).mul(255).round().byte(), ref)


def test_equalize_matches_kornia(images_u8):
    kornia = pytest.importorskip("kornia")
    x = to_float(images_u8)
    assert torch.allclose(A.equalize(x), kornia.enhance.equalize(x), atol=1e-6)


def test_equalize_flattens_the_histogram():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 64, 64, generator=g) ** 2  # skewed towards dark
    out = A.equalize(x)
    assert out.min() >= 0 and out.max() <= 1
    uniform = torch.linspace(0, 1, 64 * 64)
    # Largest distance between the sorted values and U(0, 1) quantiles: equalize cannot split a
    # level, so the output can be off by at most the largest level's share of the pixels.
    ks_out = (out.flatten(2).sort(dim=2).values - uniform).abs().amax()
    ks_in = (x.flatten(2).sort(dim=2).values - uniform).abs().amax()
    levels = (x * 255 + 1e-3).floor().long().flatten(2)
    largest_share = max(
        torch.bincount(plane, minlength=256).max().item() / plane.numel()
        for plane in levels.flatten(0, 1)
    )
    assert ks_out < largest_share + 0.02 < 0.1 < 0.2 < ks_in


def test_autocontrast_stretches_each_channel_and_matches_pil(images_u8):
    out = A.autocontrast(to_float(images_u8))
    lo, hi = out.amin((2, 3)), out.amax((2, 3))
    src = images_u8.flatten(2)
    varying = src.amax(2) > src.amin(2)
    # Pillow's int(v * scale + offset) sends the brightest level to 254 when the float64 sum
    # lands just below 255 (e.g. hi = 249, lo = 0); that is reproduced, so allow it.
    assert torch.all(lo[varying] == 0) and torch.all(hi[varying] >= 254 / 255)
    assert (hi[varying] == 1).float().mean() > 0.5
    assert torch.equal(out[~varying], to_float(images_u8)[~varying])  # flat channels unchanged
    ref = pil_apply(images_u8, ImageOps.autocontrast)
    assert torch.equal(out.mul(255).round().byte(), ref)


def test_colour_ops_on_real_images_match_pil(shared_npz):
    with np.load(shared_npz) as data:
        u8 = torch.from_numpy(data["x_test"][:64]).permute(0, 3, 1, 2).contiguous()
    x = to_float(u8)
    for name, ours in (("autocontrast", A.autocontrast), ("equalize", A.equalize)):
        ref = pil_apply(u8, pil_op(name, 0))
        assert torch.equal(ours(x).mul(255).round().byte(), ref), name


# ---------------------------------------------------------------------------------------------
# Affine ops.

AFFINE_CASES = [
    ("rotate", A.rotate, 8.0),
    ("rotate", A.rotate, -5.0),
    ("shear_x", A.shear_x, 0.09),
    ("shear_x", A.shear_x, -0.05),
    ("shear_y", A.shear_y, 0.07),
    ("shear_y", A.shear_y, -0.003),
    ("translate_x", A.translate_x, 3.0),
    ("translate_x", A.translate_x, -2.0),
    ("translate_y", A.translate_y, 1.0),
    ("translate_y", A.translate_y, -3.0),
]


@pytest.mark.parametrize(("name", "fn", "magnitude"), AFFINE_CASES)
def test_affine_ops_match_pil(images_u8, name, fn, magnitude):
    ours = fn(to_float(images_u8), magnitude)
    ref = to_float(pil_apply(images_u8, pil_op(name, magnitude)))
    diff = (ours - ref).abs()
    # Pillow truncates its bilinear result to uint8, so ours is in [ref, ref + 1/255); this
    # holds at the borders too (edge clamping inside the image, black outside).
    assert diff.max() <= 1.01 / 255
    assert (ours - ref).min() >= -1e-4
    if name.startswith("translate"):  # whole pixels: exact copies
        assert diff.max() < 1e-5


@pytest.mark.parametrize("fn", [A.rotate, A.shear_x, A.shear_y, A.translate_x, A.translate_y])
def test_zero_magnitude_affine_ops_are_the_identity(fn):
    x = torch.rand(3, 3, 16, 24)
    assert torch.allclose(fn(x, 0.0), x, atol=1e-5)


def test_rotate_is_counter_clockwise_on_non_square_images():
    u8 = natural_u8(2, size=40)[:, :, :, :28].contiguous()
    ours = A.rotate(to_float(u8), torch.tensor([7.0, -3.0]))
    ref = torch.cat(
        [to_float(pil_apply(u8[i : i + 1], pil_op("rotate", d))) for i, d in enumerate((7.0, -3.0))]
    )
    assert (ours - ref).abs().max() <= 1.01 / 255


def test_affine_per_sample_parameters_match_one_image_at_a_time(images_u8):
    x = to_float(images_u8)
    degrees = torch.linspace(-8, 8, len(x))
    batched = A.rotate(x, degrees)
    single = torch.cat([A.rotate(x[i : i + 1], degrees[i].item()) for i in range(len(x))])
    assert torch.allclose(batched, single, atol=1e-6)


def test_ops_accept_channels_last_images(images_u8):
    x = to_float(images_u8)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for fn in (A.autocontrast, A.equalize, lambda t: A.posterize(t, 3), lambda t: A.rotate(t, 5.0)):
        assert torch.allclose(fn(x_cl), fn(x), atol=1e-6)


def test_ops_keep_images_in_unit_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 16, 16, generator=g)
    outs = [
        A.autocontrast(x),
        A.equalize(x),
        A.posterize(x, 1),
        A.solarize(x, 0),
        A.rotate(x, 45.0),
        A.shear_x(x, 0.5),
        A.shear_y(x, -0.5),
        A.translate_x(x, 2.5),
        A.translate_y(x, -7.0),
    ]
    for out in outs:
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


# ---------------------------------------------------------------------------------------------
# AugMix.


def test_sampling_is_replayable_and_seeded():
    p1 = A.sample_augmix_params(16, generator=torch.Generator().manual_seed(5))
    p2 = A.sample_augmix_params(16, generator=torch.Generator().manual_seed(5))
    p3 = A.sample_augmix_params(16, generator=torch.Generator().manual_seed(6))
    for name in ("op", "level", "sign", "depth", "w", "m"):
        assert torch.equal(getattr(p1, name), getattr(p2, name)), name
    assert not torch.equal(p1.level, p3.level)


def test_parameter_distributions():
    n = 20000
    p = A.sample_augmix_params(n, generator=torch.Generator().manual_seed(0))
    assert p.op.shape == (3, n, 3) and p.depth.shape == (3, n) and p.w.shape == (n, 3)
    op_freq = torch.bincount(p.op.flatten(), minlength=9).double() / p.op.numel()
    assert torch.allclose(op_freq, torch.full((9,), 1 / 9, dtype=torch.float64), rtol=0.05)
    depth_freq = torch.bincount(p.depth.flatten(), minlength=4)[1:].double() / p.depth.numel()
    assert torch.allclose(depth_freq, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0.03)
    assert p.level.min() >= 0.1 and p.level.max() < 3
    assert abs(p.level.mean().item() - 1.55) < 0.02
    assert abs(p.sign.mean().item()) < 0.02 and set(p.sign.unique().tolist()) == {-1.0, 1.0}
    assert torch.allclose(p.w.sum(1), torch.ones(n), atol=1e-5) and p.w.min() >= 0
    assert torch.allclose(p.w.mean(0), torch.full((3,), 1 / 3), atol=0.01)
    assert p.m.min() >= 0 and p.m.max() <= 1 and abs(p.m.mean().item() - 0.5) < 0.01
    assert abs(p.m.var().item() - 1 / 12) < 0.003  # Beta(1, 1) = U(0, 1)


def test_magnitudes_follow_the_reference_parameterization():
    p = A.sample_augmix_params(5000, generator=torch.Generator().manual_seed(1))
    mag = p.magnitudes(32, 32)

    def of(name):
        return mag[p.op == A.AUGMIX_OPS.index(name)]

    assert set(of("posterize").unique().tolist()) == {3.0, 4.0}
    rot = of("rotate")
    assert torch.equal(rot, rot.round()) and rot.abs().max() == 8
    sol = of("solarize")
    assert sol.min() >= 180 and sol.max() <= 254
    for name in ("shear_x", "shear_y"):
        s = of(name).abs()
        assert s.min() >= 0.003 and s.max() < 0.09
    for name in ("translate_x", "translate_y"):
        t = of(name)
        assert torch.equal(t, t.round()) and t.abs().max() == 3
    assert torch.all(of("autocontrast") == 0) and torch.all(of("equalize") == 0)
    # int_parameter(level, maxval) = int(level * maxval / 10) at a few exact levels
    q = A.AugMixParams(
        op=torch.tensor([[[3, 4, 2, 7, 5]]]),
        level=torch.tensor([[[2.999, 0.1, 2.5, 2.9, 1.0]]], dtype=torch.float64),
        sign=torch.tensor([[[-1.0, 1.0, 1.0, -1.0, 1.0]]], dtype=torch.float64),
        depth=torch.tensor([[3]]),
        w=torch.ones(1, 1),
        m=torch.ones(1),
    )
    assert q.magnitudes(32, 32).flatten().tolist() == pytest.approx([-8, 254, 3, -3, 0.03])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, "depth"),
        ({"depth": (3, 1)}, "depth"),
        ({"severity": 11}, "severity"),
        ({"width": 0}, "width"),
        ({"alpha": 0.0}, "alpha"),
    ],
)
def test_sample_params_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.sample_augmix_params(4, **kwargs)


def test_fixed_and_ranged_depth():
    p = A.sample_augmix_params(100, depth=2, generator=torch.Generator().manual_seed(0))
    assert torch.all(p.depth == 2) and p.op.shape[2] == 2
    p = A.sample_augmix_params(100, depth=(2, 4), generator=torch.Generator().manual_seed(0))
    assert set(p.depth.unique().tolist()) == {2, 3, 4} and p.op.shape[2] == 4


def test_chains_match_the_pil_reference(images_u8):
    """The same sampled ops and magnitudes applied with PIL, chain by chain."""
    x = to_float(images_u8)
    p = A.sample_augmix_params(len(x), generator=torch.Generator().manual_seed(11))
    ours = A.augmix_chains(x, p)
    assert ours.shape == (3, *x.shape)
    mag = p.magnitudes(32, 32)
    ref = torch.empty_like(ours)
    for k in range(3):
        for n in range(len(x)):
            img = Image.fromarray(images_u8[n].permute(1, 2, 0).numpy())
            for s in range(int(p.depth[k, n])):
                img = pil_op(A.AUGMIX_OPS[p.op[k, n, s]], mag[k, n, s].item())(img)
            ref[k, n] = to_float(torch.from_numpy(np.array(img)).permute(2, 0, 1))
    diff = (ours - ref).abs() * 255
    # The chains keep uint8 levels between ops and truncate after resampling, as PIL does;
    # only a float rounding at an exact integer can move a level by one (and a later
    # threshold op can amplify that for that pixel).
    assert (diff < 0.01).float().mean() > 0.995
    assert diff.mean() < 0.1


def test_chains_accept_uint8_levels(images_u8):
    p = A.sample_augmix_params(len(images_u8), generator=torch.Generator().manual_seed(12))
    from_float = A.augmix_chains(to_float(images_u8), p, as_levels=True)
    assert torch.equal(A.augmix_chains(images_u8, p, as_levels=True), from_float)
    assert A.augmix_chains(images_u8, p).dtype == torch.float32


def test_batched_chains_equal_per_image_chains(images_u8):
    x = to_float(images_u8)
    p = A.sample_augmix_params(len(x), generator=torch.Generator().manual_seed(2))
    batched = A.augmix_chains(x, p)
    for i in range(len(x)):
        single = A.augmix_chains(x[i : i + 1], p.select([i]))
        assert torch.equal(batched[:, i : i + 1], single), i


def test_same_params_give_identical_chains_and_levels_agree(images_u8):
    x = to_float(images_u8)
    p = A.sample_augmix_params(len(x), generator=torch.Generator().manual_seed(4))
    a, b = A.augmix_chains(x, p), A.augmix_chains(x, p)
    assert torch.equal(a, b)
    levels = A.augmix_chains(x, p, as_levels=True)
    assert levels.dtype == torch.uint8 and torch.equal(levels.float() / 255, a)
    assert a.min() >= 0 and a.max() <= 1


def test_depth_one_chains_are_their_single_op(images_u8):
    x = to_float(images_u8)
    p = A.sample_augmix_params(len(x), depth=1, generator=torch.Generator().manual_seed(8))
    chains = A.augmix_chains(x, p)
    mag = p.magnitudes(32, 32)
    seen = set()
    for k in range(3):
        for n in range(len(x)):
            name = A.AUGMIX_OPS[p.op[k, n, 0]]
            fn = getattr(A, name)
            args = () if name in ("autocontrast", "equalize") else (mag[k, n, 0].item(),)
            expected = fn(x[n : n + 1], *args)
            if name in A.AFFINE_OPS:  # the chains keep uint8 levels, truncating like PIL
                expected = torch.floor(expected * 255 + 1e-3) / 255
            diff = (chains[k, n : n + 1] - expected).abs()
            assert diff.max() <= 1.01 / 255 and (diff > 1e-6).float().mean() < 0.002, name
            seen.add(name)
    assert len(seen) >= 7


def test_mix_is_convex_and_differentiable_in_w_and_m():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    chains = torch.rand(3, 2, 3, 4, 4, generator=g, dtype=torch.float64)
    w = torch.softmax(torch.rand(2, 3, generator=g, dtype=torch.float64), 1).requires_grad_()
    m = torch.rand(2, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda w, m: A.mix(x, chains, w, m), (w, m))
    out = A.mix(x, chains, w, m)
    expected = (1 - m).view(-1, 1, 1, 1) * x + m.view(-1, 1, 1, 1) * torch.einsum(
        "nk,knchw->nchw", w, chains
    )
    assert torch.allclose(out, expected)
    assert A.mix(x, chains, w, torch.zeros(2, dtype=torch.float64)).equal(x)


def test_mix_takes_uint8_levels_with_gradients(images_u8):
    x = to_float(images_u8).double()
    p = A.sample_augmix_params(len(x), generator=torch.Generator().manual_seed(9))
    levels = A.augmix_chains(x, p, as_levels=True)
    w = p.w.double().requires_grad_()
    m = p.m.double().requires_grad_()
    out = A.mix(x, levels, w, m)
    assert torch.allclose(out, A.mix(x, levels.double() / 255, w, m))
    (out**2).sum().backward()
    assert torch.isfinite(w.grad).all() and torch.isfinite(m.grad).all()

    def loss(w_, m_):
        return (A.mix(x, levels, w_, m_) ** 2).sum().item()

    eps = 1e-6
    dm, dw = torch.zeros_like(m), torch.zeros_like(w)
    dm[0], dw[1, 2] = eps, eps
    with torch.no_grad():
        num_m = (loss(w, m + dm) - loss(w, m - dm)) / (2 * eps)
        num_w = (loss(w + dw, m) - loss(w - dw, m)) / (2 * eps)
    assert num_m == pytest.approx(m.grad[0].item(), rel=1e-5)
    assert num_w == pytest.approx(w.grad[1, 2].item(), rel=1e-5)


def test_augmix_and_views():
    x = to_float(natural_u8(6))
    a = A.augmix(x, generator=torch.Generator().manual_seed(0))
    b = A.augmix(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)
    views = A.augmix_views(x, 2, generator=torch.Generator().manual_seed(1))
    assert len(views) == 2 and all(v.shape == x.shape for v in views)
    assert not torch.equal(views[0], views[1])


def test_chain_timings_are_reported(images_u8):
    timings: dict[str, float] = {}
    p = A.sample_augmix_params(len(images_u8), generator=torch.Generator().manual_seed(0))
    A.augmix_chains(to_float(images_u8), p, timings=timings)
    assert "sort + gather" in timings and all(v >= 0 for v in timings.values())


@pytest.mark.gpu
def test_cuda_matches_cpu(images_u8):
    x = to_float(images_u8)
    p = A.sample_augmix_params(len(x), generator=torch.Generator().manual_seed(3))
    cpu = A.augmix_chains(x, p)
    cuda = A.augmix_chains(x.cuda(), p).cpu()
    assert ((cpu - cuda).abs() > 1.5 / 255).float().mean() < 0.01


# ---------------------------------------------------------------------------------------------
# The dense (host-sync-free) chains: same levels as the grouped ones, nothing read back.


def random_chain_case(seed: int):
    """Images and AugMix parameters of a random size, width, depth range and severity."""
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    n = pick([1, 1, 2, 5, 17, 40])
    c, h, w = pick([(3, 32, 32), (3, 32, 32), (1, 32, 32), (3, 20, 28)])
    x = natural_u8(n, 32, seed)[:, :c, :h, :w].contiguous()
    x[0, 0] = 90  # a flat plane: autocontrast and equalize leave it alone
    params = A.sample_augmix_params(
        n,
        width=pick([1, 2, 3, 4]),
        depth=pick([-1, 1, 2, 3, (1, 5)]),
        severity=pick([0.5, 3.0, 3.0, 10.0]),
        generator=g,
    )
    return (x if seed % 2 else to_float(x)), params


@pytest.mark.parametrize("seed", range(16))
def test_dense_chains_equal_grouped_chains_bit_for_bit(seed):
    x, p = random_chain_case(seed)
    grouped = A.augmix_chains(x, p, as_levels=True, mode="grouped")
    dense = A.augmix_chains(x, p, as_levels=True, mode="dense")
    assert dense.dtype == torch.uint8 and torch.equal(dense, grouped)
    assert torch.equal(A.augmix_chains(x, p, mode="dense"), A.augmix_chains(x, p))


def every_op_at_every_step(n: int, steps: int, severity: float, seed: int) -> A.AugMixParams:
    """Width-3 parameters whose rows run through all 9 ops at every step, at every depth."""
    p = A.sample_augmix_params(
        n, depth=steps, severity=severity, generator=torch.Generator().manual_seed(seed)
    )
    k, i, s = torch.meshgrid(torch.arange(3), torch.arange(n), torch.arange(steps), indexing="ij")
    op = (i + 4 * s + 2 * k) % len(A.AUGMIX_OPS)
    depth = 1 + (torch.arange(3).view(3, 1) + torch.arange(n)) % steps
    return dataclasses.replace(p, op=op, depth=depth)


@pytest.mark.parametrize("severity", [0.2, 3.0, 10.0])
def test_dense_chains_equal_grouped_for_every_op_at_every_step(images_u8, severity):
    p = every_op_at_every_step(len(images_u8), 3, severity, seed=int(severity * 10))
    assert set(p.op[:, :, 2].flatten().tolist()) == set(range(9))
    grouped = A.augmix_chains(images_u8, p, as_levels=True, mode="grouped")
    dense = A.augmix_chains(images_u8, p, as_levels=True, mode="dense")
    assert torch.equal(dense, grouped)
    assert (grouped != images_u8).flatten(2).any(2).float().mean() > 0.5  # the ops did act


def test_dense_chains_equal_grouped_across_row_chunks(images_u8, monkeypatch):
    p = A.sample_augmix_params(len(images_u8), generator=torch.Generator().manual_seed(21))
    grouped = A.augmix_chains(images_u8, p, as_levels=True, mode="grouped")
    monkeypatch.setattr(chains, "_DENSE_CHUNK_VALUES", 5 * images_u8[0].numel())  # 5 rows a chunk
    assert torch.equal(A.augmix_chains(images_u8, p, as_levels=True, mode="dense"), grouped)


def test_chain_modes(images_u8):
    p = A.sample_augmix_params(len(images_u8), generator=torch.Generator().manual_seed(0))
    auto: dict[str, float] = {}
    A.augmix_chains(images_u8, p, timings=auto)
    assert "sort + gather" in auto  # auto is the grouped path on the CPU
    dense: dict[str, float] = {}
    A.augmix_chains(images_u8, p, mode="dense", timings=dense)
    assert {"colour LUTs", "translate", "rotate/shear (grid_sample)"} <= set(dense)
    with pytest.raises(ValueError, match="unknown mode 'sorted'; choose one of: auto, grouped"):
        A.augmix_chains(images_u8, p, mode="sorted")


class HostReads(TorchDispatchMode):
    """Records the ops that would make the host wait for a GPU or copy host data to it.

    Reading a value (``.item()``, ``bool(t)``, a Python ``if`` on a tensor), ``nonzero``,
    ``unique`` and masked selection (output size known only on the device), ``torch.tensor``
    from host data, and copies from CPU tensors to another device. ``.tolist()`` does not
    dispatch (on the meta device it fails), nor does ``torch.tensor(data, device=d)``'s copy:
    the source scan below looks for both.
    """

    VALUE_READS = (
        "_local_scalar_dense",
        "item",
        "is_nonzero",
        "nonzero",
        "unique",
        "_unique",
        "masked_select",
        "lift_fresh",
        "equal",
    )

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name.startswith(self.VALUE_READS):
            self.seen.append(str(func))
        elif name in ("_to_copy", "copy_"):
            src = args[1] if name == "copy_" else args[0]
            dst = args[0].device if name == "copy_" else kwargs.get("device") or src.device
            if src.device.type == "cpu" and torch.device(dst).type != "cpu":
                self.seen.append(f"{func} from the host")
        return func(*args, **kwargs)


def test_dense_chains_and_mixing_read_nothing_back(images_u8, monkeypatch):
    # The meta device stands in for a GPU: auto mode takes the dense path there, any read of
    # a value fails (meta tensors hold no data), and HostReads sees the copies from the host.
    x, x_u8 = to_float(images_u8).to("meta"), images_u8.to("meta")
    p = A.sample_augmix_params(len(x), generator=torch.Generator().manual_seed(0))
    p2 = A.sample_augmix_params(2 * len(x), generator=torch.Generator().manual_seed(1))
    p, p2 = p.to("meta"), p2.to("meta")
    # augmix/augmix_views as a method calls them, with parameters drawn on x's device.
    monkeypatch.setattr(mixing, "sample_augmix_params",
                        lambda n, **kw: {len(x): p, 2 * len(x): p2}[n])
    with HostReads() as reads:
        chains = A.augmix_chains(x, p, as_levels=True)
        A.augmix_chains(x_u8, p)
        A.mix(x, chains, p.w, p.m)
        A.mix(x, chains, p.w, 0.5)
        A.augmix(x)
        A.augmix_views(x, 2)
    assert chains.device.type == "meta" and chains.shape == (3, *x.shape)
    assert not reads.seen, reads.seen


def test_sampling_reads_nothing_back():
    g = torch.Generator().manual_seed(0)
    with HostReads() as reads:
        A.sample_augmix_params(8, generator=g)
        A.sample_augmix_params(8, depth=(1, 4), alpha=0.5, generator=g)
    assert not reads.seen, reads.seen


# The functions a training step runs through on a GPU (dense chains, mixing, sampling).
SYNC_FREE = [
    A.sample_augmix_params,
    augmix_params._gamma,
    A.AugMixParams.to,
    A.AugMixParams.magnitudes,
    A.augmix,
    A.augmix_views,
    A.augmix_chains,
    chains._dense_chains,
    chains._dense_step_,
    A.mix,
    _common._per_sample,
    _common._check_images,
    colour._to_levels,
    colour._from_levels,
    colour._autocontrast_lut,
    colour._equalize_lut,
    colour._posterize_u8_,
    colour._solarize_u8_,
    colour._apply_lut_u8_,
    chains._resample_u8_,
    geometric._pil_grid,
    chains._grid_coeffs,
    geometric._rotate_coeffs,
    _common._timed,
]


def code_without_strings(fn) -> str:
    """The source of fn without its comments and string literals (docstrings included)."""
    source = textwrap.dedent(inspect.getsource(fn))
    skip = (tokenize.COMMENT, tokenize.STRING)
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return " ".join(t.string for t in tokens if t.type not in skip)


@pytest.mark.parametrize("fn", SYNC_FREE, ids=lambda fn: fn.__qualname__)
def test_training_path_code_has_no_host_reads(fn):
    code = code_without_strings(fn)
    for construct in (
        ". tolist (",
        ". item (",
        "nonzero",
        "unique",
        "bool (",
        ". cpu (",
        ". numpy (",
        "torch . tensor (",
        "masked_select",
        "synchronize",
    ):
        assert construct not in code, f"{fn.__qualname__} uses {construct.replace(' ', '')}"


@pytest.mark.gpu
def test_cuda_augmix_step_never_synchronizes(images_u8):
    x = to_float(images_u8).cuda()

    def step(seed: int):
        g = torch.Generator(device="cuda").manual_seed(seed)
        p = A.sample_augmix_params(len(x), generator=g)
        chains = A.augmix_chains(x, p, as_levels=True)
        A.mix(x, chains, p.w, p.m)
        A.augmix_views(x, 2, generator=g)
        return p, chains

    step(0)  # warm-up: lazy CUDA set-up is not the chains'
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        p, chains = step(1)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert torch.equal(chains, A.augmix_chains(x, p, as_levels=True, mode="grouped"))


# ---------------------------------------------------------------------------------------------
# Cutout, CutMix, Gaussian noise.


def test_cutout_fills_a_clipped_square():
    x = torch.ones(4, 3, 32, 32)
    centers = torch.tensor([[16, 16], [0, 0], [31, 10], [5, 28]])
    out = A.apply_cutout(x, centers, size=16)
    for i, (r, c) in enumerate(centers.tolist()):
        zero = out[i, 0] == 0
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert rows.tolist() == list(range(max(r - 8, 0), min(r + 8, 32)))
        assert cols.tolist() == list(range(max(c - 8, 0), min(c + 8, 32)))
        assert zero.sum() == len(rows) * len(cols)
        assert torch.equal(out[i, 0], out[i, 2])
    assert (out[0] == 0).sum() == 3 * 16 * 16


def test_cutout_random_centres_are_seeded():
    x = torch.rand(8, 3, 32, 32)
    a = A.cutout(x, generator=torch.Generator().manual_seed(0))
    b = A.cutout(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    zeros = (a == 0).sum((1, 2, 3))
    assert torch.all(zeros <= 3 * 256) and torch.all(zeros >= 3 * 64)


def test_cutmix_label_weights_equal_the_kept_area():
    n = 64
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 32, 32) / 100
    y = torch.arange(n)
    x_mixed, y_a, y_b, lam = A.cutmix(x, y, generator=torch.Generator().manual_seed(0))
    params = A.sample_cutmix_params(n, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y_a, y) and torch.equal(y_b, y[params.perm])
    own = (x_mixed == x).all(1).float().mean((1, 2))
    moved = params.perm != torch.arange(n)
    assert moved.any()
    assert torch.allclose(own[moved], lam[moved], atol=1e-6)
    assert lam.min() >= 0 and lam.max() <= 1 and lam.shape == (n,)
    assert torch.all(x_mixed[~moved] == x[~moved])


def test_gaussian_noise_std_and_seed():
    x = torch.full((16, 3, 32, 32), 0.5)
    out = A.gaussian_noise(x, 0.25, generator=torch.Generator().manual_seed(0))
    assert (out - x).std().item() == pytest.approx(0.25, rel=0.02)
    assert abs((out - x).mean().item()) < 0.01 and out.max() > 1  # not clipped by default
    again = A.gaussian_noise(x, 0.25, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    sigma = torch.tensor([0.0, 1.0]).repeat(8)
    per = A.gaussian_noise(x, sigma, generator=torch.Generator().manual_seed(1), clip=True)
    assert torch.equal(per[0], x[0]) and per.min() >= 0 and per.max() <= 1
    with pytest.raises(ValueError, match="sigma"):
        A.gaussian_noise(x, -1.0)
