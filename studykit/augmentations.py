"""Batched on-device image augmentations: the AugMix op set, AugMix chains and mixing, Cutout,
CutMix and Gaussian noise.

Hendrycks et al. (2020), "AugMix: A Simple Data Processing Method to Improve Robustness and
Uncertainty" (ICLR): ``x_augmix = (1 - m) x + m sum_i w_i chain_i(x)`` with ``width`` chains of
1-3 random ops each, ``w ~ Dirichlet(alpha, ..., alpha)`` and ``m ~ Beta(alpha, alpha)``.

Everything works on float NCHW images in [0, 1] on any device, as whole batches: there is no
per-image Python loop and no PIL. Sampling is kept apart from applying (kornia style):
:func:`sample_augmix_params` draws every random choice from a ``torch.Generator`` (on the
generator's device, CPU by default) into an :class:`AugMixParams`, and :func:`augmix_chains`
applies those parameters deterministically, so the same parameters give the same images and
AugMax can re-mix the same chains with adversarial weights (:func:`mix` is differentiable in
``w`` and ``m``).

The op set and its parameterization are those of the reference ``augmentations.py`` at
``IMAGE_SIZE = 32``: each op call draws ``level ~ U(0.1, severity)`` afresh and

* ``posterize``: keep ``4 - int(0.4 * level)`` bits (4 or 3 at severity 3);
* ``rotate``: ``int(3 * level)`` degrees (0..8), random sign, bilinear, about the centre;
* ``solarize``: invert levels ``>= 256 - int(25.6 * level)`` (threshold 180..254);
* ``shear_x`` / ``shear_y``: ``0.03 * level`` (0.003..0.09), random sign, PIL affine
  ``(1, s, 0, 0, 1, 0)`` / ``(1, 0, 0, s, 1, 0)``, i.e. about the top-left corner;
* ``translate_x`` / ``translate_y``: ``int(level * (size / 3) / 10)`` pixels (0..3 at 32 px),
  random sign, PIL affine ``(1, 0, t, 0, 1, 0)`` / ``(1, 0, 0, 0, 1, t)``;
* ``autocontrast`` and ``equalize`` take no magnitude.

What is emulated of PIL, exactly:

* Affine ops follow ``Image.transform(AFFINE, BILINEAR)``: the output pixel centre
  ``(x + 0.5, y + 0.5)`` maps to the input point ``(a x' + b y' + c, d x' + e y' + f)``;
  a point outside ``[0, W) x [0, H)`` is black, a point inside is interpolated bilinearly with
  edge clamping (one ``grid_sample`` with a grid built for that). ``rotate`` uses Pillow's
  matrix for ``Image.rotate`` (centre ``(W/2, H/2)``, positive angles counter-clockwise).
  Whole-pixel translations are exact copies.
* Colour ops (``autocontrast``, ``equalize``, ``posterize``, ``solarize``) are lookup tables on
  the 256 uint8 levels as in ``PIL.ImageOps``; a float pixel's level is ``floor(255 x + 1e-3)``
  (exact for ``uint8 / 255`` images). ``equalize`` reproduces Pillow's LUT (``step = (total -
  count of the brightest used level) // 255``) and ``autocontrast`` Pillow's float64
  ``int(v * scale + offset)`` (which sends the brightest level to 254 for some ranges). Both
  match ``ImageOps`` bit for bit on uint8 images.
* Inside :func:`augmix_chains` the images are uint8 levels between ops, as the reference's PIL
  images are, and each resampling is truncated to uint8 as Pillow does: on uint8 inputs the
  chains match a PIL run with the same ops and magnitudes on over 99.9% of pixels (the rest
  are float round-off at an exact level boundary; tests/test_augmentations.py). The public op
  functions take and return float images; the affine ones skip the truncation (so they differ
  from Pillow by less than 1/255).

kornia: none of these ops calls it. Its ``equalize`` computes the same LUT as ours (the tests
check they agree), but measured here it took 2-3x longer than the uint8 kernel used in the
chains; its ``posterize`` truncates unquantized values with no tolerance and is slower still,
its ``solarize`` takes a float threshold, it has no Pillow-style autocontrast, and
``warp_affine`` cannot express Pillow's edge clamping with a hard black cut-off. torchvision's
``v2.AugMix`` is no substitute (one parameter draw per batch, 13 ops).

Speed (see benchmarks/augmix_throughput.py for the per-stage breakdown): all ``width * N``
chain images form one uint8 batch. On the CPU (``mode="grouped"``), at each chain step the rows
still running are gathered into that step's buffer sorted by the op they drew (one device sync
per step), so every op runs once on one contiguous slice: all rotations and shears of the step
in one ``grid_sample`` with a per-sample matrix (chunked on the CPU), whole-pixel translations
as slice copies, posterize and solarize as bitwise ops, equalize and autocontrast as per-plane
histograms / min-max and a gathered LUT. Rows whose chain has ended (or whose affine magnitude
is 0) are skipped; one final gather restores the order. On a GPU (``mode="dense"``) the host
must not wait for group sizes: every op kind runs on every row, with neutral magnitudes for rows
that apply another op, and each row keeps its own op's result (same levels bit for bit; no
host synchronization in the chains, nor in :func:`sample_augmix_params` with a generator on the
data's device, nor in :func:`mix`, :func:`augmix` or :func:`augmix_views` given one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AUGMIX_OPS",
    "AFFINE_OPS",
    "AugMixParams",
    "CHAIN_MODES",
    "CutMixParams",
    "affine",
    "apply_cutmix",
    "apply_cutout",
    "augmix",
    "augmix_chains",
    "augmix_views",
    "autocontrast",
    "cutmix",
    "cutout",
    "equalize",
    "gaussian_noise",
    "mix",
    "posterize",
    "rotate",
    "sample_augmix_params",
    "sample_cutmix_params",
    "sample_cutout_centers",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]

#: The AugMix op set, in the order of the reference ``augmentations.augmentations`` list; the
#: op indices in :class:`AugMixParams` index this tuple.
AUGMIX_OPS: tuple[str, ...] = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
#: The ops that resample the image.
AFFINE_OPS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")

_OP = {name: i for i, name in enumerate(AUGMIX_OPS)}
_LEVEL_EPS = 1e-3  # tolerance of the uint8 level read-out, see the module docstring
_CPU_CHUNK_PIXELS = 1 << 18  # values per chunk of CPU resampling (see _resample_u8_)
_DENSE_CHUNK_VALUES = 1 << 23  # uint8 values per chunk of rows of the dense chains


# ---------------------------------------------------------------------------------------------
# Helpers.


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _check_images(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor of shape (N, C, H, W); got {got}")


def _per_sample(value: float | Tensor, x: Tensor, name: str, dtype=None) -> Tensor:
    """A scalar or (N,) parameter as an (N, 1, 1, 1) tensor on x's device."""
    if isinstance(value, (int, float)):  # filled on the device: no host-to-device copy (sync)
        t = torch.full((), value, device=x.device, dtype=dtype or x.dtype)
    else:
        t = torch.as_tensor(value, device=x.device, dtype=dtype or x.dtype)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"{name} must be a scalar or have shape ({x.shape[0]},); got {tuple(t.shape)}"
        )
    return t.view(-1, 1, 1, 1)


def _timed(timings: dict[str, float] | None, name: str, device: torch.device):
    """Context manager adding the wall time of its block to ``timings[name]`` (if a dict)."""
    return _Timer(timings, name, device)


class _Timer:
    def __init__(self, timings: dict[str, float] | None, name: str, device: torch.device):
        self.timings, self.name, self.device = timings, name, device

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> None:
        if self.timings is not None:
            self._sync()
            self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if self.timings is not None:
            self._sync()
            dt = time.perf_counter() - self.t0
            self.timings[self.name] = self.timings.get(self.name, 0.0) + dt


# ---------------------------------------------------------------------------------------------
# Colour ops: lookup tables on the uint8 levels, as PIL.ImageOps. The `_name_u8_` kernels work
# in place on a contiguous uint8 batch (what the chains keep between ops, as PIL does); the
# public functions take and return float images.


def _to_levels(x: Tensor) -> Tensor:
    """uint8 levels floor(255 x + eps) of float images (see the module docstring)."""
    # via int32: a direct float -> uint8 cast is slow on the CPU
    v = x.mul(255.0).add_(_LEVEL_EPS).clamp_(0.0, 255.0).to(torch.int32).to(torch.uint8)
    return v.contiguous()


def _from_levels(v: Tensor, dtype: torch.dtype) -> Tensor:
    return v.to(dtype).div_(255.0)


def _apply_lut_u8_(s: Tensor, lut: Tensor, index: Tensor) -> None:
    """s[n, c] = lut[n * C + c, s[n, c]] for a per-plane LUT of shape (N * C, 256)."""
    torch.gather(lut.to(torch.uint8), 1, index, out=s.view(index.shape))


def _plane_index(s: Tensor) -> Tensor:
    return s.reshape(s.shape[0] * s.shape[1], -1).long()


def _autocontrast_lut(v: Tensor) -> Tensor:
    """Pillow's autocontrast LUT of each plane of ``v`` (planes, pixels): float64 (planes, 256)."""
    lo = v.amin(1, keepdim=True).double()
    hi = v.amax(1, keepdim=True).double()
    flat = hi <= lo
    # A tensor numerator: `255.0 / t` is computed as 255 * (1 / t), which rounds differently
    # from Python's 255.0 / (hi - lo), and Pillow's int() truncation sees that last bit.
    scale = torch.full_like(hi, 255.0) / torch.where(flat, torch.ones_like(hi), hi - lo)
    offset = -lo * scale
    ramp = torch.arange(256, device=v.device, dtype=torch.float64)
    lut = (ramp * scale + offset).trunc_().clamp_(0.0, 255.0)
    return torch.where(flat, ramp, lut)


def _autocontrast_u8_(s: Tensor) -> None:
    v = s.view(s.shape[0] * s.shape[1], -1)
    _apply_lut_u8_(s, _autocontrast_lut(v), v.long())


def _equalize_lut(v: Tensor, index: Tensor) -> Tensor:
    """Pillow's equalize LUT of each plane of ``v`` (planes, pixels), given ``index = v.long()``:
    float32 (planes, 256)."""
    planes, pixels = index.shape
    # float32 counts and LUT arithmetic are exact for planes of up to 2**24 pixels.
    hist = torch.zeros(planes, 256, device=v.device, dtype=torch.float32)
    hist.scatter_add_(1, index, torch.ones(1, 1, device=v.device).expand_as(index))
    # Pillow: step = (sum of the histogram - count of the brightest used level) // 255;
    # level i -> (step // 2 + number of pixels below i) // step, at most 255; step 0: unchanged.
    brightest = v.amax(1, keepdim=True).long()
    step = torch.floor((pixels - hist.gather(1, brightest)) / 255.0)
    below = hist.cumsum(1).sub_(hist)
    lut = below.add_(torch.floor(step / 2)).div_(step.clamp(min=1.0)).floor_().clamp_(max=255.0)
    ramp = torch.arange(256, device=v.device, dtype=lut.dtype)
    return torch.where(step == 0, ramp, lut)


def _equalize_u8_(s: Tensor) -> None:
    index = _plane_index(s)
    _apply_lut_u8_(s, _equalize_lut(s.view(index.shape), index), index)


def _posterize_u8_(s: Tensor, bits: Tensor) -> None:
    """bits: (N, 1, 1, 1) integers 1..8."""
    mask = (255 - (2 ** (8 - bits.long()) - 1)).to(torch.uint8)  # PIL: ~(2 ** (8 - bits) - 1)
    s.bitwise_and_(mask)


def _solarize_u8_(s: Tensor, threshold: Tensor) -> None:
    """threshold: (N, 1, 1, 1); levels >= threshold become 255 - level (= level XOR 255)."""
    flip = (s >= threshold.to(torch.int16)).to(torch.uint8).mul_(255)
    s.bitwise_xor_(flip)


def autocontrast(x: Tensor) -> Tensor:
    """Stretch each channel of each image so its darkest level is 0 and its brightest 255.

    ``PIL.ImageOps.autocontrast`` with ``cutoff=0``: per channel, ``lo``/``hi`` are the smallest
    and largest levels, and level ``v`` becomes ``int(v * scale + offset)`` with ``scale = 255 /
    (hi - lo)`` and ``offset = -lo * scale`` in float64, as Pillow computes it (so, like Pillow,
    the brightest level becomes 254 when that sum lands just below 255, e.g. for lo = 0,
    hi = 249); a flat channel is left unchanged.

    Args:
        x: images in [0, 1].

    Returns:
        The stretched images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    v = _to_levels(x)
    _autocontrast_u8_(v)
    return _from_levels(v, x.dtype)


def equalize(x: Tensor) -> Tensor:
    """Equalize the histogram of each channel of each image, as ``PIL.ImageOps.equalize``.

    Pillow's LUT: ``step = (number of pixels - count of the brightest used level) // 255``;
    level ``i`` maps to ``min(255, (step // 2 + number of pixels below level i) // step)``; a
    channel with ``step == 0`` (at most one used level, or too few pixels) is left unchanged.

    Args:
        x: images in [0, 1].

    Returns:
        The equalized images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    v = _to_levels(x)
    _equalize_u8_(v)
    return _from_levels(v, x.dtype)


def posterize(x: Tensor, bits: int | Tensor) -> Tensor:
    """Keep the top ``bits`` bits of every uint8 level (``PIL.ImageOps.posterize``).

    Args:
        x: images in [0, 1].
        bits: bits kept, 1..8, one per image or one for all.

    Returns:
        The posterized images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - bits: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    b = _per_sample(bits, x, "bits", dtype=torch.float64)
    if bool(((b < 1) | (b > 8) | (b != b.round())).any()):
        raise ValueError(f"bits must be whole numbers in 1..8; got {bits}")
    v = _to_levels(x)
    _posterize_u8_(v, b)
    return _from_levels(v, x.dtype)


def solarize(x: Tensor, threshold: float | Tensor) -> Tensor:
    """Invert every uint8 level ``>= threshold`` (``PIL.ImageOps.solarize``): ``v -> 255 - v``.

    Args:
        x: images in [0, 1].
        threshold: threshold on the 0..255 level scale (AugMix: 180..254), one per image or one
            for all; 256 leaves the image unchanged (up to the uint8 quantization).

    Returns:
        The solarized images, multiples of 1/255 in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - threshold: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    t = _per_sample(threshold, x, "threshold", dtype=torch.float64).ceil().clamp(-1, 256)
    v = _to_levels(x)
    _solarize_u8_(v, t)
    return _from_levels(v, x.dtype)


# ---------------------------------------------------------------------------------------------
# Affine ops (Pillow's Image.transform AFFINE + BILINEAR semantics).


def _pil_grid(coeffs: Tensor, h: int, w: int, dtype: torch.dtype) -> Tensor:
    """grid_sample grid (align_corners=False, zero padding) reproducing Pillow's resampling.

    Pillow reads output pixel (i, j) at u = a (i + .5) + b (j + .5) + c (same for v with d, e, f)
    and gives black outside [0, W) x [0, H) and edge-clamped bilinear values inside. In
    grid_sample's normalized coordinates g = 2 u / W - 1 that is: |g| >= 1 -> black (sent far
    out, where zero padding applies), otherwise clamp g to the outer pixel centres.
    """
    dev = coeffs.device
    # Per image and axis (x, y): g = p (i + .5) + q (j + .5) + r, with (p, q, r) the
    # coefficients of that axis scaled by 2 / size, and r shifted by -1. The sizes stay Python
    # numbers: a tensor built from them would be a host-to-device copy (a sync) on a GPU.
    pqr = coeffs.reshape(-1, 2, 3).to(torch.float64, copy=True)
    pqr[:, 0].mul_(2.0 / w)
    pqr[:, 1].mul_(2.0 / h)
    pqr[:, :, 2] -= 1.0
    p, q, r = pqr.to(dtype)[..., None, None].unbind(2)  # each (n, 2, 1, 1)
    xs = (torch.arange(w, device=dev, dtype=dtype) + 0.5).view(1, 1, 1, w)
    ys = (torch.arange(h, device=dev, dtype=dtype) + 0.5).view(1, 1, h, 1)
    grid = (p * xs + r) + q * ys  # (n, 2, H, W), contiguous along W
    # Outside (|g| >= 1; u = 0 exactly counts as outside, a measure-zero case for AugMix):
    # push at least 5 further out; inside: clamp to the outer pixel centres. Arithmetic rather
    # than a boolean mask, which is several times slower on the CPU.
    far = grid.abs().floor_()
    if h == w:
        grid.clamp_(-1.0 + 1.0 / w, 1.0 - 1.0 / w)
    else:
        for axis, extent in enumerate((w, h)):
            grid[:, axis].clamp_(-1.0 + 1.0 / extent, 1.0 - 1.0 / extent)
    # grid_sample reads the permuted (n, H, W, 2) view as fast as a contiguous grid.
    return grid.sub_(far, alpha=5.0).permute(0, 2, 3, 1)


def affine(x: Tensor, coeffs: Tensor) -> Tensor:
    """Resample each image with its own Pillow-convention affine map, bilinear, black outside.

    Output pixel ``(i, j)`` (column, row) reads the input at ``u = a (i + .5) + b (j + .5) + c``,
    ``v = d (i + .5) + e (j + .5) + f`` in continuous pixel coordinates (pixel ``k`` spans
    ``[k, k + 1)``). Points outside ``[0, W) x [0, H)`` are 0; points inside are interpolated
    bilinearly between the neighbouring pixel centres with edge clamping, as Pillow's
    ``Image.transform(size, Image.AFFINE, (a, b, c, d, e, f), Image.BILINEAR)``. Unlike Pillow,
    the result is not truncated to uint8.

    Args:
        x: images.
        coeffs: ``(a, b, c, d, e, f)`` per image (output -> input, pixels).

    Returns:
        The resampled images.

    Shape:
        - x: :math:`(N, C, H, W)`
        - coeffs: :math:`(N, 6)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    n, _, h, w = x.shape
    if coeffs.shape != (n, 6):
        raise ValueError(f"coeffs must have shape ({n}, 6); got {tuple(coeffs.shape)}")
    if n == 0:
        return x.clone()
    grid = _pil_grid(coeffs.to(x.device), h, w, x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotate_coeffs(degrees: Tensor, h: int, w: int) -> Tensor:
    # Pillow's Image.rotate: counter-clockwise by `degrees` about (W/2, H/2).
    rad = -torch.deg2rad(degrees.double())
    cos, sin = torch.cos(rad), torch.sin(rad)
    cx, cy = w / 2.0, h / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return torch.stack([cos, sin, c, -sin, cos, f], 1)


def _affine_param(x: Tensor, value: float | Tensor, name: str) -> Tensor:
    return _per_sample(value, x, name, dtype=torch.float64).view(-1)


def _coeffs(values: Tensor, slot: int) -> Tensor:
    """Identity coefficients with slot (0..5 of a, b, c, d, e, f) set per image."""
    out = torch.zeros(values.shape[0], 6, device=values.device, dtype=torch.float64)
    out[:, 0], out[:, 4] = 1.0, 1.0  # filled on the device (no host-to-device copy)
    out[:, slot] = values
    return out


def rotate(x: Tensor, degrees: float | Tensor) -> Tensor:
    """Rotate counter-clockwise about the image centre, bilinear, black fill (``Image.rotate``).

    Args:
        x: images in [0, 1].
        degrees: angle per image (or one for all); AugMix uses whole degrees in -8..8.

    Returns:
        The rotated images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - degrees: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    deg = _affine_param(x, degrees, "degrees")
    return affine(x, _rotate_coeffs(deg, x.shape[2], x.shape[3]))


def shear_x(x: Tensor, s: float | Tensor) -> Tensor:
    """Shear along x about the top-left corner: Pillow affine ``(1, s, 0, 0, 1, 0)``, bilinear.

    Args:
        x: images in [0, 1].
        s: shear factor per image (or one for all); AugMix: +-0.003..0.09.

    Returns:
        The sheared images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - s: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    return affine(x, _coeffs(_affine_param(x, s, "s"), 1))


def shear_y(x: Tensor, s: float | Tensor) -> Tensor:
    """Shear along y about the top-left corner: Pillow affine ``(1, 0, 0, s, 1, 0)``, bilinear.

    Args:
        x: images in [0, 1].
        s: shear factor per image (or one for all); AugMix: +-0.003..0.09.

    Returns:
        The sheared images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - s: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    return affine(x, _coeffs(_affine_param(x, s, "s"), 3))


def translate_x(x: Tensor, px: float | Tensor) -> Tensor:
    """Translate by reading ``px`` pixels to the right: Pillow affine ``(1, 0, px, 0, 1, 0)``.

    A positive ``px`` moves the content left, as in the reference; vacated pixels are black.
    Whole-pixel offsets (AugMix's) are exact copies.

    Args:
        x: images in [0, 1].
        px: offset in pixels per image (or one for all); AugMix: whole pixels in -3..3.

    Returns:
        The translated images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - px: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    return affine(x, _coeffs(_affine_param(x, px, "px"), 2))


def translate_y(x: Tensor, px: float | Tensor) -> Tensor:
    """Translate by reading ``px`` pixels below: Pillow affine ``(1, 0, 0, 0, 1, px)``.

    A positive ``px`` moves the content up, as in the reference; vacated pixels are black.
    Whole-pixel offsets (AugMix's) are exact copies.

    Args:
        x: images in [0, 1].
        px: offset in pixels per image (or one for all); AugMix: whole pixels in -3..3.

    Returns:
        The translated images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - px: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    return affine(x, _coeffs(_affine_param(x, px, "px"), 5))


def _shift_(s: Tensor, dim: int, t: int) -> None:
    """In place: s[..., i, ...] = s[..., i + t, ...] along dim (-1 or -2), zero where out of range.

    A whole-pixel Pillow translation: pixel centres map onto pixel centres, so bilinear
    resampling is an exact copy.
    """
    size = s.shape[dim]
    if abs(t) >= size:
        s.zero_()
    elif t > 0:
        s.narrow(dim, 0, size - t).copy_(s.narrow(dim, t, size - t).clone())
        s.narrow(dim, size - t, t).zero_()
    elif t < 0:
        s.narrow(dim, -t, size + t).copy_(s.narrow(dim, 0, size + t).clone())
        s.narrow(dim, 0, -t).zero_()


# ---------------------------------------------------------------------------------------------
# AugMix: parameters, chains, mixing.


@dataclass(frozen=True)
class AugMixParams:
    """Every random choice of AugMix for a batch, as tensors (replayable, device-movable).

    Chain step ``s`` of chain ``k`` of image ``n`` applies op ``AUGMIX_OPS[op[k, n, s]]`` with
    level ``level[k, n, s]`` and sign ``sign[k, n, s]`` if ``s < depth[k, n]``; entries past the
    depth are drawn but unused. Ops that take no magnitude ignore their level and sign.

    Attributes:
        op: op index per chain step, int64, :math:`(width, N, D)` with ``D`` the largest depth.
        level: AugMix level per chain step, float64 in ``[0.1, severity)``, :math:`(width, N, D)`.
        sign: +1 or -1 per chain step (rotate, shear, translate), float64, :math:`(width, N, D)`.
        depth: number of ops of each chain, int64, :math:`(width, N)`.
        w: chain mixing weights (Dirichlet), float32, :math:`(N, width)`.
        m: weight of the augmented mixture against the clean image (Beta), float32, :math:`(N,)`.
    """

    op: Tensor
    level: Tensor
    sign: Tensor
    depth: Tensor
    w: Tensor
    m: Tensor

    @property
    def width(self) -> int:
        return self.op.shape[0]

    @property
    def batch_size(self) -> int:
        return self.op.shape[1]

    def to(self, device: torch.device | str) -> AugMixParams:
        """The same parameters on ``device``."""
        return AugMixParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, index: Tensor | slice | Sequence[int]) -> AugMixParams:
        """The parameters of a subset of the images (e.g. the ones an attack still works on)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.op.device)
        return AugMixParams(
            op=self.op[:, index],
            level=self.level[:, index],
            sign=self.sign[:, index],
            depth=self.depth[:, index],
            w=self.w[index],
            m=self.m[index],
        )

    def magnitudes(self, height: int = 32, width: int = 32) -> Tensor:
        """Each step's op argument, as the reference derives it from the level.

        posterize: bits kept ``4 - int(level * 4 / 10)``; rotate: signed whole degrees
        ``int(level * 30 / 10)``; solarize: threshold ``256 - int(level * 256 / 10)``; shear:
        signed ``level * 0.3 / 10``; translate: signed whole pixels ``int(level * (size / 3) /
        10)`` with ``size`` the image width (x) or height (y); autocontrast/equalize: 0.

        Args:
            height: image height (for translate_y).
            width: image width (for translate_x).

        Returns:
            float64 magnitudes on the parameters' device.

        Shape:
            - output: :math:`(width, N, D)`
        """
        lv, sg, op = self.level, self.sign, self.op

        def int_parameter(maxval: float) -> Tensor:  # int(level * maxval / 10)
            return torch.trunc(lv * maxval / 10)

        table = {
            "autocontrast": torch.zeros_like(lv),
            "equalize": torch.zeros_like(lv),
            "posterize": 4 - int_parameter(4),
            "rotate": sg * int_parameter(30),
            "solarize": 256 - int_parameter(256),
            "shear_x": sg * (lv * 0.3 / 10),
            "shear_y": sg * (lv * 0.3 / 10),
            "translate_x": sg * int_parameter(width / 3),
            "translate_y": sg * int_parameter(height / 3),
        }
        out = torch.zeros_like(lv)
        for name, value in table.items():
            out = torch.where(op == _OP[name], value, out)
        return out


def _depth_range(depth: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(depth, int):
        if depth == -1:
            return 1, 3
        if depth >= 1:
            return depth, depth
    elif len(depth) == 2 and all(isinstance(d, int) for d in depth) and 1 <= depth[0] <= depth[1]:
        return int(depth[0]), int(depth[1])
    raise ValueError(
        f"depth must be -1 (random 1..3, AugMix's mixture_depth=-1), a positive int, or an "
        f"inclusive range (lo, hi) with 1 <= lo <= hi; got {depth!r}"
    )


def _gamma(alpha: float, shape: tuple[int, ...], generator, device) -> Tensor:
    # Gamma(alpha, 1) draws with the generator; alpha = 1 is the exponential distribution.
    if alpha == 1.0:
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        return -torch.log1p(-u)
    conc = torch.full(shape, float(alpha), device=device, dtype=torch.float64)
    return torch._standard_gamma(conc, generator=generator)


def sample_augmix_params(
    n: int,
    *,
    width: int = 3,
    depth: int | Sequence[int] = -1,
    severity: float = 3,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> AugMixParams:
    """Draw the AugMix parameters of ``n`` images: ops, levels, signs, depths, mixing weights.

    Each chain of each image has its own depth; each step its own op (uniform over the 9 ops),
    level ``~ U(0.1, severity)`` and sign; each image its own ``w ~ Dirichlet(alpha)`` over the
    chains and ``m ~ Beta(alpha, alpha)``. All draws use ``generator`` on its device in a fixed
    order, so the same seed gives the same parameters.

    Args:
        n: batch size.
        width: chains per image (AugMix: 3).
        depth: ops per chain: -1 for uniform 1..3 (AugMix's default), a positive int for a fixed
            depth, or an inclusive range ``(lo, hi)``.
        severity: upper end of the level range, in (0, 10] (AugMix CIFAR: 3).
        alpha: Dirichlet and Beta concentration (AugMix: 1).
        generator: random source (torch's default CPU generator when ``None``).
        device: where the returned tensors live (default: the generator's device).

    Returns:
        The parameters.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    if width < 1:
        raise ValueError(f"width must be >= 1; got {width}")
    if not 0 < severity <= 10:
        raise ValueError(f"severity must be in (0, 10]; got {severity}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0; got {alpha}")
    lo, hi = _depth_range(depth)
    dev = _draw_device(generator)
    shape = (width, n, hi)
    op = torch.randint(0, len(AUGMIX_OPS), shape, generator=generator, device=dev)
    u = torch.rand(shape, generator=generator, device=dev, dtype=torch.float64)
    level = 0.1 + (severity - 0.1) * u
    sign = torch.randint(0, 2, shape, generator=generator, device=dev).double().mul_(2).sub_(1)
    depth_t = torch.randint(lo, hi + 1, (width, n), generator=generator, device=dev)
    g = _gamma(alpha, (n, width), generator, dev)
    w = (g / g.sum(1, keepdim=True)).float()
    ab = _gamma(alpha, (2, n), generator, dev)
    m = (ab[0] / (ab[0] + ab[1])).float()
    params = AugMixParams(op=op, level=level, sign=sign, depth=depth_t, w=w, m=m)
    return params.to(device) if device is not None else params


# Step groups. Rows of a chain step are sorted by group so that each group is one contiguous
# slice of the batch; translations are further sorted by their offset.
_G_GRID, _G_TX, _G_TY = 0, 1, 2  # rotate + shear (one grid_sample), translate_x, translate_y
_G_COLOUR = {"autocontrast": 3, "equalize": 4, "posterize": 5, "solarize": 6}
_G_IDLE, _G_ENDED = 7, 8  # zero-magnitude affine op (identity); chain already ended
_OP_GROUP = torch.tensor(
    [
        _G_COLOUR.get(
            name, _G_TX if name == "translate_x" else _G_TY if name == "translate_y" else _G_GRID
        )
        for name in AUGMIX_OPS
    ]
)


def _step_keys(op: Tensor, mag: Tensor, live: Tensor, span: int) -> Tensor:
    """Sort key per row: group * (2 span + 1) + (translation offset + span)."""
    group = _OP_GROUP.to(op.device)[op]
    is_affine = group <= _G_TY
    group = torch.where(is_affine & (mag == 0), _G_IDLE, group)
    group = torch.where(live, group, _G_ENDED)
    offset = torch.where((group == _G_TX) | (group == _G_TY), mag.long(), 0)
    return group * (2 * span + 1) + offset + span


def _grid_coeffs(op: Tensor, mag: Tensor, h: int, w: int) -> Tensor:
    """Pillow affine coefficients of rotate / shear_x / shear_y rows."""
    coeffs = _rotate_coeffs(torch.where(op == _OP["rotate"], mag, 0.0), h, w)
    coeffs[:, 1] = torch.where(op == _OP["shear_x"], mag, coeffs[:, 1])
    coeffs[:, 3] = torch.where(op == _OP["shear_y"], mag, coeffs[:, 3])
    return coeffs


def _resample_u8_(s: Tensor, coeffs: Tensor, dtype: torch.dtype) -> None:
    """In place: Pillow's affine resampling of uint8 images, truncated back to uint8."""
    # On the CPU, chunks keep the float temporaries small (cache-resident, and below the size
    # where the allocator maps fresh pages for every call).
    chunk = len(s) if s.device.type != "cpu" else max(1, _CPU_CHUNK_PIXELS // s[0].numel())
    for i in range(0, len(s), chunk):
        part = s[i : i + chunk]
        grid = _pil_grid(coeffs[i : i + chunk], s.shape[2], s.shape[3], dtype)
        resampled = F.grid_sample(part.to(dtype), grid, "bilinear", "zeros", False)
        # Pillow stores the result as uint8, truncating; so do these casts (via int32
        # because a direct float -> uint8 cast is slow on the CPU).
        part.copy_(resampled.add_(_LEVEL_EPS).to(torch.int32))


def _grouped_chains(
    x_levels: Tensor,
    op: Tensor,
    mag: Tensor,
    depth: Tensor,
    timings: dict[str, float] | None,
    dtype: torch.dtype,
) -> Tensor:
    """The chains with rows sorted into op groups at each step (one host sync per step).

    Args: as :func:`_dense_chains`. Returns the chain levels, (rows, C, H, W) uint8.
    """
    n, c, h, w = x_levels.shape
    dev = x_levels.device
    rows_total, steps = op.shape
    span = max(h, w)
    # Step s writes its own buffer (positions [s B, s B + running)), so a row that ends stays
    # where its last step left it, and one final gather collects all rows (gathers are much
    # faster than scatters on the CPU). Only the pages that are written get touched.
    work = torch.empty(steps * rows_total, c, h, w, device=dev, dtype=torch.uint8)
    rows = torch.arange(rows_total, device=dev)  # chain row (k * N + n) at each position
    final = torch.empty(rows_total, device=dev, dtype=torch.long)  # row -> position in `work`

    for step in range(steps):
        with _timed(timings, "sort + gather", dev):
            keys = _step_keys(op[rows, step], mag[rows, step], depth[rows] > step, span)
            keys, order = torch.sort(keys, stable=True)
            groups, counts = torch.unique_consecutive(keys, return_counts=True)
            plan = torch.stack([groups, counts]).tolist()  # the step's device sync
            n_run = len(rows)
            if plan[0] and plan[0][-1] // (2 * span + 1) == _G_ENDED:
                n_run -= plan[1][-1]
                del plan[0][-1], plan[1][-1]
                # Rows whose chain ended stay in the previous step's buffer.
                final[rows[order[n_run:]]] = order[n_run:] + (step - 1) * rows_total
            order = order[:n_run]
            rows = rows[order]
            cur = work[step * rows_total : step * rows_total + n_run]
            if step == 0:
                torch.index_select(x_levels, 0, rows % n, out=cur)
            else:
                prev = work[(step - 1) * rows_total : step * rows_total]
                torch.index_select(prev, 0, order, out=cur)
        start = 0
        for key, count in zip(*plan, strict=True):
            group, offset = divmod(key, 2 * span + 1)
            offset -= span
            s = cur[start : start + count]
            idx = rows[start : start + count]
            start += count
            if group == _G_GRID:
                with _timed(timings, "rotate/shear (grid_sample)", dev):
                    coeffs = _grid_coeffs(op[idx, step], mag[idx, step], h, w)
                    _resample_u8_(s, coeffs, dtype)
            elif group in (_G_TX, _G_TY):
                with _timed(timings, "translate", dev):
                    _shift_(s, -1 if group == _G_TX else -2, offset)
            elif group == _G_COLOUR["autocontrast"]:
                with _timed(timings, "autocontrast", dev):
                    _autocontrast_u8_(s)
            elif group == _G_COLOUR["equalize"]:
                with _timed(timings, "equalize", dev):
                    _equalize_u8_(s)
            elif group == _G_COLOUR["posterize"]:
                with _timed(timings, "posterize", dev):
                    _posterize_u8_(s, mag[idx, step].view(-1, 1, 1, 1))
            elif group == _G_COLOUR["solarize"]:
                with _timed(timings, "solarize", dev):
                    _solarize_u8_(s, mag[idx, step].view(-1, 1, 1, 1))
    with _timed(timings, "unsort", dev):
        last = (steps - 1) * rows_total
        final[rows] = torch.arange(last, last + len(rows), device=dev)
        return work.index_select(0, final)


def _dense_step_(
    s: Tensor,
    op: Tensor,
    mag: Tensor,
    live: Tensor,
    timings: dict[str, float] | None,
    dtype: torch.dtype,
) -> None:
    """In place: one chain step of every row of ``s``, with no host sync.

    Every op kind runs on every row, with the row's own magnitude where the row applies that
    op and a neutral one elsewhere (an identity LUT, a zero offset), or is selected per row
    (the resampling). A row whose chain has ended (``live`` false) gets neutral values for all.
    Each op computes each row from that row alone, with the same arithmetic as the grouped
    kernels, so the levels equal the grouped path's bit for bit.
    """
    r, c, h, w = s.shape
    dev = s.device

    def applies(name: str) -> Tensor:
        return live & (op == _OP[name])

    with _timed(timings, "colour LUTs", dev):
        # All four colour ops as one LUT per plane, applied in one gather.
        planes = s.view(r * c, h * w)
        index = planes.long()

        def per_plane(mask: Tensor) -> Tensor:
            return mask.view(r, 1, 1).expand(r, c, 1).reshape(r * c, 1)

        lut = torch.arange(256, device=dev, dtype=torch.uint8).expand(r * c, 256)
        auto = _autocontrast_lut(planes).to(torch.uint8)
        lut = torch.where(per_plane(applies("autocontrast")), auto, lut)
        equal = _equalize_lut(planes, index).to(torch.uint8)
        lut = torch.where(per_plane(applies("equalize")), equal, lut)
        # Posterize keeping 8 bits and solarize at 256 leave every level as it is.
        by_row = lut.view(r, c, 256)
        _posterize_u8_(by_row, torch.where(applies("posterize"), mag, 8.0).view(r, 1, 1))
        _solarize_u8_(by_row, torch.where(applies("solarize"), mag, 256.0).view(r, 1, 1))
        _apply_lut_u8_(s, lut, index)
    with _timed(timings, "translate", dev):
        # Whole-pixel translations as one gather of each row's source pixel, black outside.
        tx = torch.where(applies("translate_x"), mag, 0.0).long().view(r, 1, 1)
        ty = torch.where(applies("translate_y"), mag, 0.0).long().view(r, 1, 1)
        src_x = torch.arange(w, device=dev).view(1, 1, w) + tx
        src_y = torch.arange(h, device=dev).view(1, h, 1) + ty
        inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
        src = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(r, 1, h * w)
        moved = torch.gather(s.view(r, c, h * w), 2, src.expand(r, c, h * w))
        moved = moved.mul_(inside.view(r, 1, h * w)).view(r, c, h, w)
    with _timed(timings, "rotate/shear (grid_sample)", dev):
        # `moved` holds every row's result so far, so the resampling can overwrite `s`: rows
        # that rotate or shear are still as they were there (identity LUT, zero offset).
        resample = (op == _OP["rotate"]) | (op == _OP["shear_x"]) | (op == _OP["shear_y"])
        resample = resample & live & (mag != 0)  # a zero angle is the identity, as grouped
        _resample_u8_(s, _grid_coeffs(op, mag, h, w), dtype)
        torch.where(resample.view(r, 1, 1, 1), s, moved, out=s)


def _dense_chains(
    x_levels: Tensor,
    op: Tensor,
    mag: Tensor,
    depth: Tensor,
    timings: dict[str, float] | None,
    dtype: torch.dtype,
) -> Tensor:
    """The chains with every op computed for every row and selected per row (no host sync).

    Args:
        x_levels: clean images as uint8 levels, (N, C, H, W).
        op, mag: op index and magnitude of chain row ``k * N + n`` at each step, (rows, D).
        depth: ops of each chain row, (rows,).
        timings: seconds per stage, or None.
        dtype: float type of the resampling.

    Returns:
        The chain levels, (rows, C, H, W) uint8.
    """
    n, c, h, w = x_levels.shape
    dev = x_levels.device
    rows_total, steps = op.shape
    out = torch.empty(rows_total, c, h, w, device=dev, dtype=torch.uint8)
    # Rows go through all steps in chunks of bounded size: every op's temporaries (the int64
    # LUT index, the float resampling) are for the whole chunk.
    chunk = max(1, _DENSE_CHUNK_VALUES // max(1, c * h * w))
    for start in range(0, rows_total, chunk):
        stop = min(start + chunk, rows_total)
        s = out[start:stop]
        with _timed(timings, "gather", dev):
            rows = torch.arange(start, stop, device=dev)
            torch.index_select(x_levels, 0, rows % n, out=s)
        for step in range(steps):
            live = depth[start:stop] > step
            _dense_step_(s, op[start:stop, step], mag[start:stop, step], live, timings, dtype)
    return out


#: The ways :func:`augmix_chains` can run (see there).
CHAIN_MODES: tuple[str, ...] = ("auto", "grouped", "dense")


@torch.no_grad()
def augmix_chains(
    x: Tensor,
    params: AugMixParams,
    *,
    as_levels: bool = False,
    mode: str = "auto",
    timings: dict[str, float] | None = None,
) -> Tensor:
    """Apply the AugMix chains of ``params`` to every image (deterministic given ``params``).

    All ``width * N`` chain images form one batch, kept as uint8 levels between ops. Two ways
    to run a chain step, with the same output bit for bit:

    * ``"grouped"``: the rows still running are gathered into a new buffer sorted by the op
      they apply, so each op runs once, in place, on one contiguous slice: one ``grid_sample``
      for all rotations and shears, slice copies for the whole-pixel translations, lookup
      tables for the colour ops; rows whose chain has ended drop out. Learning the group sizes
      is one host synchronization per step. Fastest on the CPU.
    * ``"dense"``: every op kind runs on every row (with a neutral magnitude where the row
      applies another op) and each row keeps its own op's result: one per-plane LUT for all
      colour ops, one gather for all translations, one ``grid_sample`` selected per row. About
      the op count times the work, but no host synchronization at all, so on a GPU the host
      never waits for the device (a training step keeps the queue full).
    * ``"auto"`` (default): grouped on the CPU, dense on any other device.

    No gradient flows through the chains (AugMax differentiates through :func:`mix` only).

    Args:
        x: clean images, float in [0, 1] or uint8 levels 0..255 (e.g. the stored data).
        params: parameters from :func:`sample_augmix_params` with ``batch_size == N``; moved to
            x's device if needed (a host-to-device copy: draw them on x's device instead).
        as_levels: return the uint8 levels (0..255) the chains compute in, instead of float
            images in [0, 1]: a quarter of the memory, and :func:`mix` takes them as they are.
        mode: ``"auto"``, ``"grouped"`` or ``"dense"``, as above.
        timings: if given, seconds per stage are added to it (the device is synchronized around
            each stage; for profiling only).

    Returns:
        The chain outputs: float in [0, 1] (x's dtype, float32 for uint8 x), or uint8 levels
        with ``as_levels``.

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(width, N, C, H, W)`
    """
    if x.dtype != torch.uint8:
        _check_images(x)
    elif x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got {tuple(x.shape)}")
    if mode not in CHAIN_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(CHAIN_MODES)}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    n, c, h, w = x.shape
    if params.batch_size != n:
        raise ValueError(f"params are for {params.batch_size} images; x has {n}")
    dev = x.device
    rows_total, steps = params.width * n, params.op.shape[2]
    op = params.op.to(dev).reshape(rows_total, steps)
    mag = params.magnitudes(h, w).to(dev).reshape(rows_total, steps)
    depth = params.depth.to(dev).reshape(rows_total)
    x_levels = x if x.dtype == torch.uint8 else _to_levels(x)
    dense = mode == "dense" or (mode == "auto" and dev.type != "cpu")
    run = _dense_chains if dense else _grouped_chains
    levels = run(x_levels, op, mag, depth, timings, dtype).view(params.width, n, c, h, w)
    if as_levels:
        return levels
    with _timed(timings, "to float", dev):
        return _from_levels(levels, dtype)


def mix(x: Tensor, chains: Tensor, w: Tensor, m: float | Tensor) -> Tensor:
    """AugMix's mixture ``(1 - m) x + m sum_i w_i chain_i``, differentiable in x, w and m.

    Args:
        x: clean images.
        chains: chain outputs from :func:`augmix_chains`: float images in [0, 1], or uint8
            levels (``as_levels=True``), which are scaled by 1/255 on the fly.
        w: chain weights per image (AugMix: Dirichlet; AugMax: softmax of adversarial logits).
        m: mixing weight per image in [0, 1] (or one for all).

    Returns:
        The mixed images (in [0, 1] when w is a convex combination and m in [0, 1]).

    Shape:
        - x: :math:`(N, C, H, W)`
        - chains: :math:`(width, N, C, H, W)`
        - w: :math:`(N, width)`
        - m: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    k, n = chains.shape[:2]
    if chains.shape[1:] != x.shape or w.shape != (n, k):
        raise ValueError(
            f"shapes do not match: x {tuple(x.shape)}, chains {tuple(chains.shape)} "
            f"(expected (width, *x.shape)), w {tuple(w.shape)} (expected ({n}, {k}))"
        )
    if chains.dtype != torch.uint8 and not chains.is_floating_point():
        raise ValueError(f"chains must be float images or uint8 levels; got {chains.dtype}")
    levels = chains.dtype == torch.uint8
    w = w.to(device=x.device, dtype=x.dtype)
    w = (w / 255.0 if levels else w).view(n, k, 1, 1, 1)

    def chain(i: int) -> Tensor:
        # Cast one chain at a time: uint8 x float arithmetic is not vectorized on the CPU, and
        # a cast of all chains at once is a large temporary.
        return chains[i].to(x.dtype) if levels else chains[i]

    mixed = chain(0).mul_(w[:, 0]) if levels else chains[0] * w[:, 0]
    for i in range(1, k):
        mixed.addcmul_(chain(i), w[:, i])
    return torch.lerp(x, mixed, _per_sample(m, x, "m"))


def augmix(
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
    width: int = 3,
    depth: int | Sequence[int] = -1,
    severity: float = 3,
    alpha: float = 1.0,
) -> Tensor:
    """One AugMix view of every image: sample parameters, apply the chains, mix.

    Args:
        x: clean images in [0, 1].
        generator: random source (parameters are drawn on its device).
        width: chains per image.
        depth: ops per chain (-1: uniform 1..3).
        severity: level range upper end.
        alpha: Dirichlet/Beta concentration.

    Returns:
        The augmented images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    params = sample_augmix_params(
        x.shape[0], width=width, depth=depth, severity=severity, alpha=alpha, generator=generator
    ).to(x.device)
    return mix(x, augmix_chains(x, params, as_levels=True), params.w, params.m)


def augmix_views(
    x: Tensor, k: int = 2, *, generator: torch.Generator | None = None, **kwargs
) -> list[Tensor]:
    """``k`` independent AugMix views of every image, computed as one batch.

    Args:
        x: clean images in [0, 1].
        k: number of views (AugMix's JSD loss: 2).
        generator: random source.
        **kwargs: ``width``, ``depth``, ``severity``, ``alpha`` as in :func:`augmix`.

    Returns:
        ``k`` tensors of augmented images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: ``k`` x :math:`(N, C, H, W)`
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    return list(augmix(x.repeat(k, 1, 1, 1), generator=generator, **kwargs).chunk(k))


# ---------------------------------------------------------------------------------------------
# Cutout, CutMix, Gaussian noise (MaxUp's augmentations).


def sample_cutout_centers(
    n: int, height: int, width: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Cutout square centres, uniform over the pixels (DeVries & Taylor 2017).

    Returns:
        int64 ``(row, column)`` per image on the generator's device.

    Shape:
        - output: :math:`(N, 2)`
    """
    dev = _draw_device(generator)
    rows = torch.randint(0, height, (n,), generator=generator, device=dev)
    cols = torch.randint(0, width, (n,), generator=generator, device=dev)
    return torch.stack([rows, cols], 1)


def _box_mask(h: int, w: int, y0: Tensor, y1: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
    """(N, 1, H, W) bool mask of the boxes [y0, y1) x [x0, x1)."""
    rows = torch.arange(h, device=y0.device).view(1, h, 1)
    cols = torch.arange(w, device=y0.device).view(1, 1, w)
    y0, y1, x0, x1 = (t.view(-1, 1, 1) for t in (y0, y1, x0, x1))
    return ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)).unsqueeze(1)


def apply_cutout(x: Tensor, centers: Tensor, size: int = 16, fill: float = 0.0) -> Tensor:
    """Fill a ``size`` x ``size`` square around each centre, clipped at the image border.

    As the reference Cutout: rows ``[r - size // 2, r + size // 2)`` and the same for columns,
    clipped to the image, so squares near the border are smaller.

    Args:
        x: images.
        centers: ``(row, column)`` per image from :func:`sample_cutout_centers`.
        size: side of the square (CIFAR-10: 16, CIFAR-100: 8).
        fill: value written into the square (0 = black in [0, 1] pixel space).

    Returns:
        The images with the squares filled.

    Shape:
        - x: :math:`(N, C, H, W)`
        - centers: :math:`(N, 2)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    if size < 1:
        raise ValueError(f"size must be >= 1; got {size}")
    h, w = x.shape[2:]
    centers = centers.to(x.device)
    r, c = centers[:, 0], centers[:, 1]
    half = size // 2
    mask = _box_mask(
        h,
        w,
        (r - half).clamp(0, h),
        (r - half + size).clamp(0, h),
        (c - half).clamp(0, w),
        (c - half + size).clamp(0, w),
    )
    return x.masked_fill(mask, fill)


def cutout(
    x: Tensor, size: int = 16, *, generator: torch.Generator | None = None, fill: float = 0.0
) -> Tensor:
    """Cutout (DeVries & Taylor 2017): one ``size`` x ``size`` square per image, filled.

    Args:
        x: images in [0, 1].
        size: side of the square (CIFAR-10: 16).
        generator: random source for the centres.
        fill: fill value (0 = black).

    Returns:
        The images with one square filled each.

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    centers = sample_cutout_centers(x.shape[0], x.shape[2], x.shape[3], generator=generator)
    return apply_cutout(x, centers, size, fill)


@dataclass(frozen=True)
class CutMixParams:
    """CutMix draws for a batch (per-sample boxes, one permutation).

    Attributes:
        perm: partner image of each image, int64, :math:`(N,)`.
        boxes: ``(y0, y1, x0, x1)`` pasted from the partner, int64, :math:`(N, 4)`.
        lam: weight of each image's own label, the kept area fraction, float32, :math:`(N,)`.
    """

    perm: Tensor
    boxes: Tensor
    lam: Tensor


def sample_cutmix_params(
    n: int,
    height: int,
    width: int,
    *,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> CutMixParams:
    """Draw CutMix boxes as Yun et al. (2019), one box and ratio per image.

    ``lam ~ Beta(alpha, alpha)``; the box has sides ``int(H sqrt(1 - lam))`` by
    ``int(W sqrt(1 - lam))`` around a uniform centre, clipped to the image; the returned ``lam``
    is recomputed from the clipped area (``1 - area / (H W)``), as the reference does.

    Args:
        n: batch size.
        height: image height.
        width: image width.
        alpha: Beta concentration (CutMix: 1).
        generator: random source; draws on its device.

    Returns:
        The parameters on the generator's device.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0; got {alpha}")
    dev = _draw_device(generator)
    perm = torch.randperm(n, generator=generator, device=dev)
    ab = _gamma(alpha, (2, n), generator, dev)
    lam0 = ab[0] / (ab[0] + ab[1])
    cut = torch.sqrt(1.0 - lam0)
    ch, cw = (height * cut).long(), (width * cut).long()
    cy = torch.randint(0, height, (n,), generator=generator, device=dev)
    cx = torch.randint(0, width, (n,), generator=generator, device=dev)
    y0, y1 = (cy - ch // 2).clamp(0, height), (cy + ch // 2).clamp(0, height)
    x0, x1 = (cx - cw // 2).clamp(0, width), (cx + cw // 2).clamp(0, width)
    lam = 1.0 - ((y1 - y0) * (x1 - x0)).double() / (height * width)
    return CutMixParams(perm=perm, boxes=torch.stack([y0, y1, x0, x1], 1), lam=lam.float())


def apply_cutmix(x: Tensor, params: CutMixParams) -> Tensor:
    """Paste each image's box from its partner image.

    Args:
        x: images.
        params: from :func:`sample_cutmix_params`.

    Returns:
        The mixed images.

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    perm, boxes = params.perm.to(x.device), params.boxes.to(x.device)
    mask = _box_mask(x.shape[2], x.shape[3], *boxes.unbind(1))
    return torch.where(mask, x[perm], x)


def cutmix(
    x: Tensor, y: Tensor, alpha: float = 1.0, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CutMix (Yun et al. 2019) with a box per image; loss = lam CE(y_a) + (1 - lam) CE(y_b).

    Args:
        x: images.
        y: labels.
        alpha: Beta concentration.
        generator: random source.

    Returns:
        ``(x_mixed, y_a, y_b, lam)``: ``y_a = y``, ``y_b`` the partner's labels and ``lam`` the
        fraction of each image's own pixels kept.

    Shape:
        - x: :math:`(N, C, H, W)`
        - y: :math:`(N,)`
        - x_mixed: :math:`(N, C, H, W)`; y_a, y_b, lam: :math:`(N,)`
    """
    _check_images(x)
    params = sample_cutmix_params(
        x.shape[0], x.shape[2], x.shape[3], alpha=alpha, generator=generator
    )
    perm = params.perm.to(y.device)
    return apply_cutmix(x, params), y, y[perm], params.lam.to(x.device)


def gaussian_noise(
    x: Tensor,
    sigma: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    clip: bool = False,
) -> Tensor:
    """Add ``N(0, sigma^2)`` noise per pixel (MaxUp+Gauss, randomized smoothing).

    The noise is drawn on the generator's device and moved to x's device. Randomized smoothing
    does not clip, so neither does this unless ``clip=True``.

    Args:
        x: images in [0, 1].
        sigma: noise standard deviation in [0, 1] pixel units, per image or one for all.
        generator: random source.
        clip: clamp the result to [0, 1].

    Returns:
        The noisy images.

    Shape:
        - x: :math:`(N, C, H, W)`
        - sigma: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    s = _per_sample(sigma, x, "sigma")
    if bool((s < 0).any()):
        raise ValueError(f"sigma must be >= 0; got {sigma}")
    noise = torch.randn(x.shape, generator=generator, device=_draw_device(generator), dtype=x.dtype)
    out = x + s * noise.to(x.device)
    return out.clamp(0.0, 1.0) if clip else out
