"""Tests for RandAugment (studykit.augment.rand_augment) and Pillow's ImageEnhance ops
(studykit.augment.enhance): agreement with Pillow, per-sample draws, replay, identities, the
dense path's host reads, and the methods that train with it (MaxUp, standard)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from test_augmentations import (
    HostReads,
    code_without_strings,
    natural_u8,
    pil_apply,
    pil_op,
    to_float,
)

from studykit import augment as A
from studykit.augment import enhance, rand_augment
from studykit.methods import create_method
from studykit.models import create_model

ENHANCE = {
    "brightness": (A.brightness, ImageEnhance.Brightness),
    "contrast": (A.contrast, ImageEnhance.Contrast),
    "saturation": (A.saturation, ImageEnhance.Color),
    "sharpness": (A.sharpness, ImageEnhance.Sharpness),
}
# RandAugment's range (0.1 .. 1.9), 1 (the identity), and extrapolations past it.
FACTORS = [0.1, 0.55, 1.0, 1.45, 1.9, 3.7, -0.8]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def images_u8() -> torch.Tensor:
    u8 = natural_u8(12, seed=5)
    u8[0] = 77  # flat
    u8[1] = u8[1] // 4 + 100  # low contrast
    u8[2, 0] = 0  # one flat channel
    u8[3] = torch.randint(0, 256, u8[3].shape, generator=torch.Generator().manual_seed(1))
    return u8


def levels(x: torch.Tensor) -> torch.Tensor:
    return x.mul(255).round().long()


def pil_randaugment_op(name: str, argument: float):
    """Pillow's call for one RandAugment op given its argument (``RandAugmentParams.arguments``)."""
    if name == "identity":
        return lambda im: im
    if name in ENHANCE:
        return lambda im: ENHANCE[name][1](im).enhance(argument)
    if name == "solarize":
        return lambda im: ImageOps.solarize(im, argument)
    return pil_op(name, argument)  # the AugMix ops: the same Pillow calls


# ---------------------------------------------------------------------------------------------
# The enhancement ops against Pillow.


@pytest.mark.parametrize("name", list(ENHANCE))
def test_enhance_ops_match_pil(images_u8, name):
    ours_fn, pil_cls = ENHANCE[name]
    for factor in FACTORS:
        ours = levels(ours_fn(to_float(images_u8), factor))
        ref = pil_apply(images_u8, lambda im, f=factor: pil_cls(im).enhance(f)).long()
        diff = (ours - ref).abs()
        assert diff.max() <= 1, (name, factor)
        assert (diff == 0).float().mean() > 0.999, (name, factor)


def test_enhance_ops_on_real_images_match_pil(shared_npz):
    with np.load(shared_npz) as data:
        u8 = torch.from_numpy(data["x_test"][:64]).permute(0, 3, 1, 2).contiguous()
    g = torch.Generator().manual_seed(0)
    factors = 0.1 + 1.8 * torch.rand(len(u8), generator=g)  # one per image
    for name, (ours_fn, pil_cls) in ENHANCE.items():
        ours = levels(ours_fn(to_float(u8), factors))
        ref = torch.stack([pil_apply(u8[i : i + 1],
                                     lambda im, f=float(factors[i]), c=pil_cls: c(im).enhance(f))[0]
                           for i in range(len(u8))]).long()
        assert (ours - ref).abs().max() <= 1, name


def test_enhance_ops_on_grey_images_match_pil(images_u8):
    grey = images_u8[:, :1].contiguous()
    for name, (ours_fn, pil_cls) in ENHANCE.items():
        ours = levels(ours_fn(to_float(grey), 0.3))
        ref = torch.stack([torch.from_numpy(np.array(pil_cls(Image.fromarray(g[0].numpy()))
                                                     .enhance(0.3)))[None] for g in grey])
        assert (ours - ref.long()).abs().max() <= 1, name
    assert torch.equal(A.saturation(to_float(grey), 0.0), to_float(grey))  # no colour to take


def test_enhance_ops_at_factor_one_are_the_identity_and_check_their_input(images_u8):
    x = to_float(images_u8)
    for ours_fn, _ in ENHANCE.values():
        assert torch.equal(ours_fn(x, 1.0), x)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        A.contrast(torch.rand(2, 4, 8, 8), 0.5)
    with pytest.raises(ValueError, match="factor must be a scalar"):
        A.brightness(x, torch.ones(3))


def test_sharpness_degenerate_is_pils_smooth_filter(images_u8):
    from PIL import ImageFilter

    ref = pil_apply(images_u8, lambda im: im.filter(ImageFilter.SMOOTH))
    assert torch.equal(enhance._smooth_u8(images_u8), ref)


# ---------------------------------------------------------------------------------------------
# RandAugment: parameters.


def test_arguments_follow_the_parameterization():
    ops = torch.arange(len(A.RANDAUGMENT_OPS)).view(1, -1)
    ones = torch.ones(ops.shape, dtype=torch.float64)
    name = {n: i for i, n in enumerate(A.RANDAUGMENT_OPS)}
    for m in (0.0, 5.0, 10.0, 30.0):
        f = m / 10
        for sign in (1.0, -1.0):
            p = A.RandAugmentParams(op=ops, sign=sign * ones, magnitude=m * ones)
            arg = p.arguments(32, 48)[0]
            assert arg[name["rotate"]] == pytest.approx(sign * 30 * f)
            assert arg[name["shear_x"]] == arg[name["shear_y"]] == pytest.approx(sign * 0.3 * f)
            assert arg[name["translate_x"]] == sign * int(150 / 331 * 48 * f)
            assert arg[name["translate_y"]] == sign * int(150 / 331 * 32 * f)
            for op in ("saturation", "contrast", "brightness", "sharpness"):
                assert arg[name[op]] == pytest.approx(1 + sign * 0.9 * f)
            assert arg[name["posterize"]] == max(1, 8 - round(4 * f))
            assert arg[name["solarize"]] == min(256, max(0, np.ceil(256 * (1 - f))))
            for op in ("identity", "autocontrast", "equalize"):
                assert arg[name[op]] == 0


def test_sampling_is_uniform_seeded_and_per_sample():
    g = torch.Generator().manual_seed(0)
    p = A.sample_randaugment_params(7000, 2, 5, generator=g)
    assert p.op.shape == p.sign.shape == p.magnitude.shape == (7000, 2)
    counts = torch.bincount(p.op.flatten(), minlength=14).double()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    assert set(p.sign.unique().tolist()) == {-1.0, 1.0}
    assert torch.all(p.magnitude == 5)
    again = A.sample_randaugment_params(7000, 2, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(p.op, again.op) and torch.equal(p.sign, again.sign)
    # each image draws its own ops
    assert len({tuple(row) for row in p.op[:50].tolist()}) > 40


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"num_ops": -1}, "number of ops N"),
    ({"num_ops": 1.5}, "number of ops N"),
    ({"magnitude": 31}, r"magnitude M must be a number in \[0, 30\]"),
    ({"magnitude": -0.5}, "magnitude M"),
])
def test_bad_n_or_m_is_a_one_line_error(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        A.sample_randaugment_params(4, **kwargs)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=match):
        A.randaugment(torch.rand(4, 3, 8, 8), **kwargs)


# ---------------------------------------------------------------------------------------------
# RandAugment: applying.


def test_randaugment_matches_the_pil_reference(images_u8):
    """The same sampled ops and arguments applied with Pillow, image by image."""
    for m in (5.0, 10.0, 17.0):
        p = A.sample_randaugment_params(len(images_u8), 3, m,
                                        generator=torch.Generator().manual_seed(int(m)))
        ours = A.apply_randaugment(images_u8, p, as_levels=True).long()
        arg = p.arguments(32, 32)
        ref = torch.empty_like(ours)
        for n in range(len(images_u8)):
            img = Image.fromarray(images_u8[n].permute(1, 2, 0).numpy())
            for s in range(p.num_ops):
                img = pil_randaugment_op(A.RANDAUGMENT_OPS[p.op[n, s]], arg[n, s].item())(img)
            ref[n] = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        diff = (ours - ref).abs()
        # As for the AugMix chains: only a float rounding at an exact integer after a
        # resampling can move a level by one (and a later threshold op can amplify that).
        assert (diff == 0).float().mean() > 0.995, m
        assert diff.float().mean() < 0.1, m


@pytest.mark.parametrize("name", A.RANDAUGMENT_OPS)
def test_each_op_alone_matches_pil(images_u8, name):
    op = A.RANDAUGMENT_OPS.index(name)
    n = len(images_u8)
    p = A.RandAugmentParams(op=torch.full((n, 1), op),
                            sign=torch.tensor([1.0, -1.0]).repeat(n // 2).view(n, 1),
                            magnitude=torch.full((n, 1), 7.0, dtype=torch.float64))
    ours = A.apply_randaugment(images_u8, p, as_levels=True).long()
    arg = p.arguments(32, 32)
    ref = torch.stack([pil_apply(images_u8[i : i + 1],
                                 pil_randaugment_op(name, arg[i, 0].item()))[0]
                       for i in range(n)]).long()
    assert (ours - ref).abs().max() <= 1


def every_op_at_every_step(n: int, steps: int, seed: int) -> A.RandAugmentParams:
    g = torch.Generator().manual_seed(seed)
    p = A.sample_randaugment_params(n, steps, 9.0, generator=g)
    op = torch.arange(n * steps).view(n, steps) % len(A.RANDAUGMENT_OPS)
    return A.RandAugmentParams(op=op, sign=p.sign, magnitude=p.magnitude)


def test_dense_equals_grouped_bit_for_bit(images_u8):
    x = images_u8.repeat(3, 1, 1, 1)
    for seed in range(3):
        p = every_op_at_every_step(len(x), 3, seed)
        grouped = A.apply_randaugment(x, p, as_levels=True, mode="grouped")
        assert torch.equal(A.apply_randaugment(x, p, as_levels=True, mode="dense"), grouped)


def test_per_sample_each_image_gets_its_own_ops_in_one_call(images_u8):
    x = to_float(images_u8[4:5]).repeat(16, 1, 1, 1)  # one image, 16 times
    p = A.sample_randaugment_params(16, 2, 9, generator=torch.Generator().manual_seed(3))
    out = A.apply_randaugment(x, p)
    distinct = {tuple(levels(o).flatten().tolist()) for o in out}
    assert len(distinct) > 8
    # each image's result is its own parameters applied to it alone
    for i in (0, 7, 15):
        assert torch.equal(out[i : i + 1], A.apply_randaugment(x[i : i + 1], p.select([i])))


def test_replay_gives_identical_output(images_u8):
    x = to_float(images_u8)
    a = A.randaugment(x, 3, 5, generator=torch.Generator().manual_seed(4))
    b = A.randaugment(x, 3, 5, generator=torch.Generator().manual_seed(4))
    p = A.sample_randaugment_params(len(x), 3, 5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and torch.equal(a, A.apply_randaugment(x, p))
    assert torch.equal(A.apply_randaugment(images_u8, p), a)  # uint8 input, same result
    assert not torch.equal(a, A.randaugment(x, 3, 5, generator=torch.Generator().manual_seed(5)))


def test_n_zero_and_m_zero_are_the_identity(images_u8):
    x = to_float(images_u8)
    assert torch.equal(A.randaugment(x, 0, 30, generator=torch.Generator().manual_seed(0)), x)
    # At M = 0 every op but autocontrast and equalize (which take no magnitude) is the identity.
    keep = [i for i, name in enumerate(A.RANDAUGMENT_OPS)
            if name not in ("autocontrast", "equalize")]
    p = every_op_at_every_step(len(keep), 2, 0)
    op = torch.tensor(keep)[p.op % len(keep)]
    n = len(keep)
    p = A.RandAugmentParams(op=op, sign=p.sign, magnitude=torch.zeros(n, 2, dtype=torch.float64))
    xs = x[torch.arange(n) % len(x)]
    for mode in ("grouped", "dense"):
        assert torch.equal(A.apply_randaugment(xs, p, mode=mode), xs)


def test_apply_checks_its_input(images_u8):
    p = A.sample_randaugment_params(3, 2, 5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="params are for 3 images"):
        A.apply_randaugment(images_u8, p)
    with pytest.raises(ValueError, match="unknown mode"):
        A.apply_randaugment(images_u8[:3], p, mode="fast")


def test_dense_path_reads_nothing_back(images_u8):
    # The meta device stands in for a GPU: auto mode takes the dense path, any read of a value
    # fails, and HostReads sees copies from the host.
    x, x_u8 = to_float(images_u8).to("meta"), images_u8.to("meta")
    p = every_op_at_every_step(len(x), 3, 0).to("meta")
    with HostReads() as reads:
        out = A.apply_randaugment(x, p)
        A.apply_randaugment(x_u8, p, as_levels=True)
    assert out.device.type == "meta" and out.shape == x.shape
    assert not reads.seen, reads.seen


@pytest.mark.gpu
def test_cuda_matches_cpu(images_u8):
    p = every_op_at_every_step(len(images_u8), 3, 1)
    cpu = A.apply_randaugment(images_u8, p, as_levels=True)
    cuda = A.apply_randaugment(images_u8.cuda(), p.to("cuda"), as_levels=True).cpu()
    assert (cpu.long() - cuda.long()).abs().float().mean() < 0.05


# ---------------------------------------------------------------------------------------------
# Training with it.


def test_maxup_randaugment_copies_replay_and_take_a_step():
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=8).train()
    x, y = torch.rand(6, 3, 32, 32), torch.arange(6) % 4
    maxup = create_method("maxup", m=3, augmentation="randaugment", randaugment_n=2,
                          randaugment_m=9)
    xr, y_a, _, lam = maxup.augment(x, y, 3, torch.Generator().manual_seed(2))
    p = A.sample_randaugment_params(18, 2, 9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(xr, A.apply_randaugment(x.repeat(3, 1, 1, 1), p))
    assert torch.equal(y_a, y.repeat(3)) and torch.all(lam == 1)
    maxup.set_progress(10, 10)
    out = maxup.training_step(model, x, y)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.metrics["maxup_active"] == 1.0
    assert all(q.grad is not None for q in model.parameters())


def test_standard_with_randaugment_trains_on_augmented_images():
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=8).train()
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    method = create_method("standard", augment="randaugment", randaugment_n=2, randaugment_m=7)
    method.seed(3)
    loss = method.training_step(model, x, y).loss
    aug = A.randaugment(x, 2, 7, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(loss, F.cross_entropy(model(aug), y))
    plain = create_method("standard")
    assert torch.allclose(plain.training_step(model, x, y).loss, F.cross_entropy(model(x), y))


def test_new_options_are_stored_only_where_used():
    # Runs stored before RandAugment existed keep their config, so their hash.
    assert create_method("standard").config.record() == {"label_smoothing": 0.0}
    cutout = create_method("maxup").config.record()
    assert "randaugment_n" not in cutout and "randaugment_m" not in cutout
    ra = create_method("maxup", augmentation="randaugment").config.record()
    assert (ra["randaugment_n"], ra["randaugment_m"]) == (3, 5.0)
    std = create_method("standard", augment="randaugment").config.record()
    assert std["augment"] == "randaugment" and std["randaugment_n"] == 3


@pytest.mark.parametrize(("method", "kwargs", "match"), [
    ("maxup", {"randaugment_m": 31.0}, r"randaugment_m must be in \[0, 30\]"),
    ("maxup", {"randaugment_n": -1}, "randaugment_n must be >= 0"),
    ("standard", {"augment": "randaug"}, "unknown augment 'randaug'; choose one of: none, "
                                          "randaugment"),
    ("standard", {"randaugment_n": 2.5}, "randaugment_n must be an integer"),
])
def test_bad_method_options_are_one_line_errors(method, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        create_method(method, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fn", [A.RandAugmentParams.arguments, A.sample_randaugment_params,
                                rand_augment._dense_step_, rand_augment._lut_stage_,
                                rand_augment._translate_stage_, rand_augment._stage_masks,
                                rand_augment._affine_coeffs, enhance._blend_u8, enhance._luma_u8,
                                enhance._mean_luma, enhance._smooth_u8, enhance._contrast_lut,
                                enhance._brightness_lut], ids=lambda fn: fn.__qualname__)
def test_dense_path_code_has_no_host_reads(fn):
    code = code_without_strings(fn)
    for construct in (". tolist (", ". item (", "nonzero", "unique", "bool (", ". cpu (",
                      "torch . tensor (", "masked_select", "synchronize"):
        assert construct not in code, f"{fn.__qualname__} uses {construct.replace(' ', '')}"
