"""Tests for studykit.corruptions: the API contract, reproducibility, agreement with the
reference implementations' building blocks (scipy, PIL, matplotlib, the reference's loops),
and that each corruption gets stronger with severity where the CIFAR-10-C table says so."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from studykit.corruptions import (
    BENCHMARK_CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    corrupt,
    list_corruptions,
)
from studykit.corruptions import blur as corruptions_blur
from studykit.corruptions import filters as corruptions_filters
from studykit.corruptions import params as corruptions_params

ALL = list_corruptions("all")
SEVERITIES = (1, 2, 3, 4, 5)
# Corruptions that draw random numbers; the others are deterministic functions of x.
RANDOM = {
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
    "speckle_noise",
    "spatter",
}
RGB_ONLY = {"snow", "frost", "brightness", "spatter", "saturate"}


def natural_images(n: int, seed: int, size: int | tuple[int, int] = 32) -> torch.Tensor:
    """Smooth colour fields with two hard edges each: SSIM behaves on them as on photos."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(h, w), mode="bicubic")
    mid = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(h, w), mode="bilinear")
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    x = 0.6 * low + 0.2 * mid
    for _ in range(2):
        angle = torch.rand(n, 1, 1, 1, generator=g) * 2 * math.pi
        offset = torch.rand(n, 1, 1, 1, generator=g) - 0.5
        colour = torch.rand(n, 3, 1, 1, generator=g) - 0.5
        x = x + 0.4 * colour * ((torch.cos(angle) * xx + torch.sin(angle) * yy) > offset)
    return x.clamp(0, 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return natural_images(4, seed=0)


# ----------------------------------------------------------------------------- API


def test_lists_in_reference_order():
    assert list_corruptions() == list(BENCHMARK_CORRUPTIONS)
    assert list_corruptions("benchmark")[:3] == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert list_corruptions("benchmark")[-1] == "jpeg_compression"
    assert len(BENCHMARK_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert list_corruptions("extra") == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert ALL == list(BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS)
    assert len(set(ALL)) == 19
    assert all(len(corruptions_params._PARAMS[name]) == 5 for name in ALL)


def test_bad_kind_names_the_allowed_ones():
    with pytest.raises(ValueError, match="'weather'.*benchmark, extra, all"):
        list_corruptions("weather")


def test_unknown_name_names_the_allowed_ones(images):
    with pytest.raises(ValueError, match="'gauss'.*gaussian_noise.*saturate"):
        corrupt(images, "gauss", 1)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True, "3"])
def test_bad_severity_names_the_value(images, severity):
    with pytest.raises(ValueError, match=f"got {severity!r}"):
        corrupt(images, "contrast", severity)


def test_bad_images_are_rejected(images):
    with pytest.raises(ValueError, match="float NCHW"):
        corrupt((images * 255).to(torch.uint8), "contrast", 1)
    with pytest.raises(ValueError, match="float NCHW"):
        corrupt(images[0], "contrast", 1)
    with pytest.raises(ValueError, match="saturate needs 3 channels, got 1"):
        corrupt(images[:, :1], "saturate", 1)


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", ALL)
def test_contract(images, name, severity):
    y = corrupt(images, name, severity, generator=gen())
    assert y.shape == images.shape and y.dtype == images.dtype and y.device == images.device
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1
    assert (y - images).abs().max() > 1e-3, "the corruption left the images unchanged"
    assert images.min() >= 0  # the input was not modified in place
    assert torch.equal(images, natural_images(4, seed=0))


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output_other_seed_other_output(images, name, severity):
    a = corrupt(images, name, severity, generator=gen(1))
    b = corrupt(images, name, severity, generator=gen(1))
    c = corrupt(images, name, severity, generator=gen(2))
    assert torch.equal(a, b)
    if name in RANDOM:
        assert not torch.equal(a, c)
    else:
        assert torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_default_generator_is_torchs_global_rng(images, name):
    torch.manual_seed(123)
    a = corrupt(images, name, 3)
    b = corrupt(images, name, 3)
    torch.manual_seed(123)
    c = corrupt(images, name, 3)
    assert torch.equal(a, c)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(RANDOM - {"shot_noise", "impulse_noise"}))
def test_random_parameters_are_per_image(name):
    # the same image repeated gets different corruptions within one batch
    x = natural_images(1, seed=5).expand(3, -1, -1, -1).contiguous()
    y = corrupt(x, name, 3, generator=gen())
    assert not torch.equal(y[0], y[1]) and not torch.equal(y[1], y[2])


@pytest.mark.parametrize("name", ALL)
def test_non_square_images_other_dtypes_and_one_channel(name):
    x = natural_images(2, seed=1, size=(24, 40))
    for dtype in (torch.float64, torch.bfloat16):
        y = corrupt(x.to(dtype), name, 4, generator=gen())
        assert y.shape == x.shape and y.dtype == dtype
        assert torch.isfinite(y.float()).all() and y.min() >= 0 and y.max() <= 1
    grey = x[:, :1]
    if name in RGB_ONLY:
        with pytest.raises(ValueError, match="3 channels"):
            corrupt(grey, name, 2)
    else:
        y = corrupt(grey, name, 2, generator=gen())
        assert y.shape == grey.shape and (y - grey).abs().max() > 1e-3


def test_empty_batch():
    x = torch.zeros(0, 3, 32, 32)
    assert corrupt(x, "fog", 3).shape == x.shape


# ----------------------------------------------------------------------------- severity order

# SSIM to the clean image must fall from the first to the second severity of each pair.
# Default: every consecutive pair. Exceptions, each a property of the CIFAR-10-C table:
STRONGER = {name: [(1, 2), (2, 3), (3, 4), (4, 5)] for name in ALL}
STRONGER.update(
    {
        # (sigma, iterations) = (.05,1) (.25,1) (.4,1) (.25,2) (.4,2): more blur hides the
        # pixel swaps, so SSIM rises from 1 to 3 and from 4 to 5; at equal sigma, a second
        # swap pass always hurts.
        "glass_blur": [(2, 4), (3, 5)],
        # (radius, sigma) = (6,2) and (8,2): radius only sets ImageMagick's kernel width, and
        # the 4 extra taps weigh < 1e-9 at sigma 2, so severities 3 and 4 are the same blur.
        "motion_blur": [(1, 2), (2, 3), (4, 5)],
        # (image, frost) weights (.9,.4) -> (.85,.4): the darker image offsets the frost's
        # brightening for SSIM's luminance term, so 3 vs 4 is not ordered.
        "frost": [(1, 2), (2, 3), (3, 5), (4, 5)],
        # severities 1-3 are water, 4-5 mud: the modes are not comparable.
        "spatter": [(1, 2), (2, 3), (4, 5)],
        # saturation * .3, * .1 (less colour), then * 1.5, * 2 + .1, * 2.5 + .2 (more).
        "saturate": [(1, 2), (3, 4), (4, 5)],
    }
)
# The affine jitter shrinks with severity (2.56 -> .96 px) while the local displacement
# grows, so SSIM rises with severity; test_elastic_transform_field checks the two parts.
del STRONGER["elastic_transform"]


def mean_ssim(x: torch.Tensor, name: str) -> list[float]:
    kornia = pytest.importorskip("kornia")
    # the same seed at every severity pairs the random draws across severities
    return [
        kornia.metrics.ssim(x, corrupt(x, name, s, generator=gen(1)), 7).mean().item()
        for s in SEVERITIES
    ]


def check_order(ssim: list[float], name: str) -> None:
    for weaker, stronger in STRONGER[name]:
        assert ssim[stronger - 1] < ssim[weaker - 1], (name, weaker, stronger, ssim)
    if name == "motion_blur":
        assert abs(ssim[2] - ssim[3]) < 1e-4, ssim


@pytest.mark.parametrize("name", list(STRONGER))
def test_ssim_falls_with_severity_generated(name):
    check_order(mean_ssim(natural_images(16, seed=0), name), name)


@pytest.fixture(scope="module")
def real_images(shared_npz) -> torch.Tensor:
    with np.load(shared_npz) as data:
        x = data["x_test"][:32]
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("name", list(STRONGER))
def test_ssim_falls_with_severity_real(real_images, name):
    check_order(mean_ssim(real_images, name), name)


def test_elastic_transform_field():
    """Feed coordinate ramps: the output holds the sampled source coordinates. Fit an affine
    per image: its deviation from identity must shrink with severity (affine 2.56 -> .96 px)
    and the non-affine residual (the smoothed displacement) must grow (0 at severity 1)."""
    n, size = 16, 32
    ramp = torch.linspace(0, 1, size, dtype=torch.float64)
    x = torch.zeros(n, 3, size, size, dtype=torch.float64)
    x[:, 0] = ramp[None, :]  # column
    x[:, 1] = ramp[:, None]  # row
    inner = slice(10, size - 10)  # the affine never reaches the reflected border from here
    yy, xx = torch.meshgrid(ramp[inner], ramp[inner], indexing="ij")
    design = torch.stack([xx.flatten(), yy.flatten(), torch.ones(xx.numel())], 1)
    affine, local = [], []
    for severity in SEVERITIES:
        y = corrupt(x, "elastic_transform", severity, generator=gen(3))
        target = y[:, :2, inner, inner].flatten(2).transpose(1, 2) * (size - 1)  # pixels
        coef = torch.linalg.lstsq(design.expand(n, -1, -1), target).solution
        fitted = design @ coef
        identity = design[:, :2] * (size - 1)
        affine.append((fitted - identity).pow(2).mean().sqrt().item())
        local.append((target - fitted).pow(2).mean().sqrt().item())
    assert all(b < a for a, b in zip(affine, affine[1:], strict=False)), affine
    assert local[0] < 1e-6
    assert all(b > a for a, b in zip(local[1:], local[2:], strict=False)), local
    assert 0.2 < local[-1] < 1.0, local  # sub-pixel jitter, as the CIFAR constants give


# ----------------------------------------------------------------------------- statistics


def test_noise_statistics():
    x = torch.full((8, 3, 32, 32), 0.5)
    for severity, std in enumerate(corruptions_params._PARAMS["gaussian_noise"], 1):
        noise = corrupt(x, "gaussian_noise", severity, generator=gen()) - x
        assert abs(noise.std().item() / std - 1) < 0.05 and abs(noise.mean().item()) < 0.005
    for severity, c in enumerate(corruptions_params._PARAMS["shot_noise"], 1):
        y = corrupt(x, "shot_noise", severity, generator=gen())
        assert abs(y.var().item() / (0.5 / c) - 1) < 0.1  # Poisson: variance x / c
        assert torch.allclose(y * c, (y * c).round(), atol=1e-3)
    for severity, std in enumerate(corruptions_params._PARAMS["speckle_noise"], 1):
        noise = corrupt(x, "speckle_noise", severity, generator=gen()) - x
        assert abs(noise.std().item() / (0.5 * std) - 1) < 0.05


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_replaces_a_fraction_of_values(severity):
    amount = corruptions_params._PARAMS["impulse_noise"][severity - 1]
    x = torch.full((16, 3, 32, 32), 0.5)
    y = corrupt(x, "impulse_noise", severity, generator=gen())
    salt, pepper = (y == 1).float().mean().item(), (y == 0).float().mean().item()
    assert abs((salt + pepper) / amount - 1) < 0.1
    assert abs(salt / pepper - 1) < 0.25
    assert torch.equal(y[(y != 0) & (y != 1)], x[(y != 0) & (y != 1)])
    # per value, not per pixel: some pixels have salt in one channel only
    hit = (y != 0.5).sum(1)
    assert ((hit > 0) & (hit < 3)).any()


def test_plasma_fractal_maps():
    maps = corruptions_filters._plasma_fractal(6, 32, 2.0, gen())
    assert maps.shape == (6, 32, 32)
    assert torch.allclose(maps.amin((1, 2)), torch.zeros(6, dtype=maps.dtype))
    assert torch.allclose(maps.amax((1, 2)), torch.ones(6, dtype=maps.dtype))
    # a smooth field: neighbours are far closer than random pairs
    step = (maps[:, 1:] - maps[:, :-1]).abs().mean()
    assert step < 0.5 * (maps - maps.roll(16, 1)).abs().mean()


# ----------------------------------------------------------------------------- references


def hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_matches_scipy(images, severity):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = images.double()
    sigma = corruptions_params._PARAMS["gaussian_blur"][severity - 1]
    ref = [ndimage.gaussian_filter(im, (sigma, sigma, 0), mode="nearest") for im in hwc(x)]
    y = corrupt(x, "gaussian_blur", severity)
    np.testing.assert_allclose(hwc(y), np.clip(np.stack(ref), 0, 1), atol=1e-12)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_zoom_blur_matches_scipy_clipped_zoom(images, severity):
    ndimage = pytest.importorskip("scipy.ndimage")

    def clipped_zoom(im, z):  # the reference's helper
        h = im.shape[0]
        crop = int(np.ceil(h / z))
        top = (h - crop) // 2
        im = ndimage.zoom(im[top : top + crop, top : top + crop], (z, z, 1), order=1)
        trim = (im.shape[0] - h) // 2
        return im[trim : trim + h, trim : trim + h]

    x = images.double()
    factors = np.arange(1, corruptions_params._PARAMS["zoom_blur"][severity - 1], 0.01)
    ref = [(im + sum(clipped_zoom(im, z) for z in factors)) / (len(factors) + 1) for im in hwc(x)]
    y = corrupt(x, "zoom_blur", severity)
    np.testing.assert_allclose(hwc(y), np.clip(np.stack(ref), 0, 1), atol=1e-12)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate_matches_pil_box(images, severity):
    Image = pytest.importorskip("PIL.Image")
    c = corruptions_params._PARAMS["pixelate"][severity - 1]
    small = (int(32 * c), int(32 * c))
    ref = np.stack(
        [
            [
                np.asarray(
                    Image.fromarray(channel.astype(np.float32), mode="F")
                    .resize(small, Image.BOX)
                    .resize((32, 32), Image.BOX)
                )
                for channel in im
            ]
            for im in images.numpy()
        ]
    )
    y = corrupt(images, "pixelate", severity)
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_matches_pil(images, severity):
    Image = pytest.importorskip("PIL.Image")
    quality = corruptions_params._PARAMS["jpeg_compression"][severity - 1]
    ref = []
    for im in (hwc(images) * 255).round().astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, "JPEG", quality=quality)
        ref.append(np.asarray(Image.open(buffer)))
    y = corrupt(images, "jpeg_compression", severity)
    assert torch.equal(y * 255, (y * 255).round())
    # PIL and torchvision both use libjpeg with 4:2:0 subsampling: at most rounding apart
    assert np.abs(hwc(y) * 255 - np.stack(ref)).max() <= 1


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_hsv_corruptions_match_an_hsv_round_trip(images, name):
    colors = pytest.importorskip("matplotlib.colors")
    x = images.double()
    x[0, :, :4, :4] = 0.5  # grey pixels: hue 0 (red) once saturated, as in skimage
    x[1, :, :4, :4] = 0.0
    for severity, p in enumerate(corruptions_params._PARAMS[name], 1):
        hsv = colors.rgb_to_hsv(hwc(x))
        if name == "brightness":
            hsv[..., 2] = np.clip(hsv[..., 2] + p, 0, 1)
        else:
            hsv[..., 1] = np.clip(hsv[..., 1] * p[0] + p[1], 0, 1)
        ref = np.clip(colors.hsv_to_rgb(hsv), 0, 1)
        np.testing.assert_allclose(hwc(corrupt(x, name, severity)), ref, atol=1e-12)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_elastic_transform_matches_opencv_and_scipy_steps(images, severity):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = images.double()
    n = len(x)
    alpha, sigma, jitter = corruptions_params._PARAMS["elastic_transform"][severity - 1]
    g = gen(3)  # replay the draws: affine jitter (n, 3, 2), then the field (n, 2, 32, 32)
    dst_jitter = -jitter + 2 * jitter * torch.rand((n, 3, 2), generator=g, dtype=torch.float64)
    field = -1 + 2 * torch.rand((n, 2, 32, 32), generator=g, dtype=torch.float64)
    ref = []
    for im, jit, fld in zip(hwc(x), dst_jitter.numpy(), field.numpy(), strict=True):
        src = np.array([[26.0, 26.0], [26.0, 6.0], [6.0, 6.0]])  # centre 16 +- 32 // 3
        forward = np.linalg.solve(np.c_[src, np.ones(3)], src + jit).T  # getAffineTransform
        inv = np.linalg.inv(np.r_[forward, [[0, 0, 1]]])  # warpAffine samples at M^-1
        matrix = inv[[1, 0]][:, [1, 0]]  # (x, y) -> (row, col)
        offset = inv[[1, 0], 2]
        warped = np.stack(
            [
                ndimage.affine_transform(im[..., ch], matrix, offset, order=1, mode="mirror")
                for ch in range(3)
            ],
            -1,
        )  # scipy 'mirror' is OpenCV's BORDER_REFLECT_101
        if alpha > 0:
            dx = ndimage.gaussian_filter(fld[0], sigma, mode="reflect", truncate=3) * alpha
            dy = ndimage.gaussian_filter(fld[1], sigma, mode="reflect", truncate=3) * alpha
            rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
            warped = np.stack(
                [
                    ndimage.map_coordinates(
                        warped[..., ch], [rows + dy, cols + dx], order=1, mode="reflect"
                    )
                    for ch in range(3)
                ],
                -1,
            )
        ref.append(np.clip(warped, 0, 1))
    y = corrupt(x, "elastic_transform", severity, generator=gen(3))
    np.testing.assert_allclose(hwc(y), np.stack(ref), atol=1e-9)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_glass_blur_equals_the_reference_loop(images, severity):
    """The reference's numpy "swap" on row views copies the neighbour; replaying the same
    offsets through that sequential loop must give exactly the batched result."""
    ndimage = pytest.importorskip("scipy.ndimage")
    sigma, d, iterations = corruptions_params._PARAMS["glass_blur"][severity - 1]
    x = images.double()
    n, _, h, w = x.shape
    g = gen(4)
    shifts = [
        torch.randint(-d, d, (n, 2, h - 2 * d, w - 2 * d), generator=g) for _ in range(iterations)
    ]
    ref = []
    for i, im in enumerate(hwc(x)):
        blurred = ndimage.gaussian_filter(im, (sigma, sigma, 0), mode="nearest")
        im = np.uint8(blurred * 255 + 1e-4)  # np.uint8 truncation (+ the module's tolerance)
        for shift in shifts:
            for r in range(h - d, d, -1):
                for c in range(w - d, d, -1):
                    dx, dy = shift[i, :, r - d - 1, c - d - 1].tolist()
                    im[r, c], im[r + dy, c + dx] = im[r + dy, c + dx], im[r, c]
        ref.append(ndimage.gaussian_filter(im / 255.0, (sigma, sigma, 0), mode="nearest"))
    y = corrupt(x, "glass_blur", severity, generator=gen(4))
    np.testing.assert_allclose(hwc(y), np.clip(np.stack(ref), 0, 1), atol=1e-9)


def test_motion_blur_matches_imagemagick_loop(images):
    """ImageMagick's MotionBlurImage: tap i at (x + ceil(i cos a - .5), y + ceil(i sin a - .5))."""
    x = images.double()
    angles = torch.tensor([-44.0, -10.0, 0.0, 30.0], dtype=torch.float64)
    for radius, sigma in [(6, 1), (9, 2.5)]:
        width = 2 * radius + 1
        weights = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
        weights /= weights.sum()
        ref = np.zeros(x.shape)
        for b, angle in enumerate(angles.tolist()):
            a = math.radians(angle)
            for i in range(width):
                dx, dy = math.ceil(i * math.cos(a) - 0.5), math.ceil(i * math.sin(a) - 0.5)
                rows = np.clip(np.arange(32) + dy, 0, 31)
                cols = np.clip(np.arange(32) + dx, 0, 31)
                ref[b] += weights[i] * x[b].numpy()[:, rows][:, :, cols]
        out = corruptions_filters._motion_blur(x, radius, sigma, angles)
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-7)


def test_defocus_kernels_are_normalized_disks():
    for radius, alias in corruptions_params._PARAMS["defocus_blur"]:
        k = corruptions_blur._disk_kernel(radius, alias)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and k.shape[0] <= 5
        assert torch.allclose(k.sum(), torch.tensor(1.0, dtype=k.dtype))
        assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))


def test_spatter_modes():
    x = natural_images(8, seed=2)
    water = corrupt(x, "spatter", 3, generator=gen())  # adds pale turquoise
    mud = corrupt(x, "spatter", 5, generator=gen())  # replaces with brown
    added = water - x
    assert (added >= -1e-6).all() and added.amax() > 0.05
    unclipped = water.amax(1) < 1
    # pale turquoise (175, 238, 238): more green and blue than red where nothing clipped
    assert (added[:, 1] >= added[:, 0] - 1e-6)[unclipped].all()
    assert torch.allclose(added[:, 1][unclipped], added[:, 2][unclipped], atol=1e-6)
    changed = (mud - x).abs().amax(1) > 1e-6
    assert changed.any()
    brown = torch.tensor([63.0, 42.0, 20.0]) / 255
    pixels = mud.permute(0, 2, 3, 1)[changed]
    dist_to_brown = (pixels - brown).norm(dim=1)
    dist_of_clean = (x.permute(0, 2, 3, 1)[changed] - brown).norm(dim=1)
    assert (dist_to_brown <= dist_of_clean + 1e-6).all()


# ----------------------------------------------------------------------------- devices


@pytest.mark.gpu
@pytest.mark.parametrize("name", ALL)
def test_cpu_and_cuda_agree_under_one_cpu_generator(name, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    x = natural_images(4, seed=3)
    for severity in SEVERITIES:
        on_cpu = corrupt(x, name, severity, generator=gen(7))
        on_gpu = corrupt(x.to("cuda"), name, severity, generator=gen(7))
        assert on_gpu.device.type == "cuda" and on_gpu.dtype == x.dtype
        # glass blur's uint8 truncation may flip one level where round-off differs
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1 / 255 + 1e-4, rtol=0)
        assert (on_gpu.cpu() - on_cpu).abs().mean() < 1e-4
    cuda_gen = torch.Generator(device="cuda")
    a = corrupt(x.to("cuda"), name, 3, generator=cuda_gen.manual_seed(1))
    b = corrupt(x.to("cuda"), name, 3, generator=cuda_gen.manual_seed(1))
    assert torch.equal(a, b)
