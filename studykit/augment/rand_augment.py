"""RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced
search space", NeurIPS 2020): every image applies ``N`` ops drawn uniformly, with replacement,
from 14, all at one global magnitude ``M``. Batched on the device, per-sample, replayable.

The ops are the paper's list: identity, autocontrast, equalize, rotate, solarize, color
(:func:`~studykit.augment.enhance.saturation`), posterize, contrast, brightness, sharpness,
shear_x, shear_y, translate_x, translate_y. ``M`` is on the paper's scale, where 10 is each
op's largest distortion (its sweeps run over [0, 30], extrapolating linearly past 10). With
``f = M / 10`` and a random sign per step (signed ops):

* rotate ``30 f`` degrees; shear ``0.3 f``; translate ``int(150 / 331 * size * f)`` whole
  pixels (``size`` the width or height: torchvision's range);
* enhancement factor ``1 + 0.9 f`` (brightness, color, contrast, sharpness);
* posterize to ``8 - round(4 f)`` bits (at least 1); solarize levels ``>= 256 (1 - f)``;
* identity, autocontrast, equalize: no magnitude.

So ``M = 0`` leaves an image as it is but for autocontrast and equalize; torchvision's
magnitude ``m`` on its 31 bins is ``M = m / 3`` here. Sampling (:func:`sample_randaugment_params`)
is kept apart from applying (:func:`apply_randaugment`), as for AugMix, so MaxUp's copies can
be replayed. The images are kept as uint8 levels between ops, as Pillow's are; every op equals
Pillow's (``ImageOps``, ``ImageEnhance``, ``Image.transform`` with bilinear resampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from studykit.augment._common import _check_images
from studykit.augment.chains import CHAIN_MODES, _resample_u8_
from studykit.augment.colour import (
    _apply_lut_u8_,
    _autocontrast_lut,
    _equalize_lut,
    _from_levels,
    _posterize_u8_,
    _solarize_u8_,
    _to_levels,
)
from studykit.augment.enhance import (
    _brightness_lut,
    _contrast_lut,
    _saturation_u8,
    _sharpness_u8,
)
from studykit.augment.geometric import _rotate_coeffs
from studykit.devices import generator_device

#: The RandAugment op set, in the paper's order; the op indices in
#: :class:`RandAugmentParams` index this tuple.
RANDAUGMENT_OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "saturation",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
_OP = {name: i for i, name in enumerate(RANDAUGMENT_OPS)}

#: Largest magnitude ``M`` (the paper's sweeps; 10 is each op's largest distortion).
MAX_MAGNITUDE = 30.0


def check_randaugment(num_ops: object, magnitude: object) -> None:
    """Raise a one-line ``ValueError`` unless ``num_ops`` is an int >= 0 and ``magnitude`` a
    number in [0, 30]."""
    if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
        raise ValueError(f"RandAugment's number of ops N must be a whole number >= 0; "
                         f"got {num_ops!r}")
    if (isinstance(magnitude, bool) or not isinstance(magnitude, (int, float))
            or not 0 <= magnitude <= MAX_MAGNITUDE):
        raise ValueError(f"RandAugment's magnitude M must be a number in [0, "
                         f"{MAX_MAGNITUDE:g}]; got {magnitude!r}")


@dataclass(frozen=True)
class RandAugmentParams:
    """Every random choice of RandAugment for a batch, as tensors (replayable, device-movable).

    Step ``s`` of image ``n`` applies op ``RANDAUGMENT_OPS[op[n, s]]`` at magnitude
    ``magnitude[n, s]`` with sign ``sign[n, s]``; ops without a sign or magnitude ignore them.

    Attributes:
        op: op index per step, int64, :math:`(N, S)` with ``S`` the number of ops per image.
        sign: +1 or -1 per step, float64, :math:`(N, S)`.
        magnitude: ``M`` per step (the same everywhere as RandAugment draws it), float64,
            :math:`(N, S)`.
    """

    op: Tensor
    sign: Tensor
    magnitude: Tensor

    @property
    def batch_size(self) -> int:
        return self.op.shape[0]

    @property
    def num_ops(self) -> int:
        return self.op.shape[1]

    def to(self, device: torch.device | str) -> RandAugmentParams:
        """The same parameters on ``device``."""
        return RandAugmentParams(**{f.name: getattr(self, f.name).to(device)
                                    for f in fields(self)})

    def select(self, index: Tensor | slice | Sequence[int]) -> RandAugmentParams:
        """The parameters of a subset of the images."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.op.device)
        return RandAugmentParams(op=self.op[index], sign=self.sign[index],
                                 magnitude=self.magnitude[index])

    def arguments(self, height: int = 32, width: int = 32) -> Tensor:
        """Each step's op argument (see the module docstring): degrees (rotate), shear factor,
        whole pixels (translate), enhancement factor, bits kept (posterize), threshold on the
        0..255 scale (solarize); 0 for identity, autocontrast and equalize.

        Returns:
            float64 arguments on the parameters' device.

        Shape:
            - output: :math:`(N, S)`
        """
        f, sg, op = self.magnitude / 10.0, self.sign, self.op
        enhance = 1.0 + sg * (0.9 * f)
        table = {
            "rotate": sg * (30.0 * f),
            "solarize": torch.ceil(256.0 * (1.0 - f)).clamp(0.0, 256.0),
            "saturation": enhance,
            "posterize": (8.0 - torch.round(4.0 * f)).clamp(min=1.0),
            "contrast": enhance,
            "brightness": enhance,
            "sharpness": enhance,
            "shear_x": sg * (0.3 * f),
            "shear_y": sg * (0.3 * f),
            "translate_x": sg * torch.trunc(150.0 / 331.0 * width * f),
            "translate_y": sg * torch.trunc(150.0 / 331.0 * height * f),
        }
        out = torch.zeros_like(f)
        for name, value in table.items():
            out = torch.where(op == _OP[name], value, out)
        return out


def sample_randaugment_params(
    n: int,
    num_ops: int = 2,
    magnitude: float = 9.0,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> RandAugmentParams:
    """Draw RandAugment's ops and signs for ``n`` images: per image ``num_ops`` ops uniform over
    the 14 (with replacement) and a sign per op; the magnitude is ``magnitude`` everywhere.

    All draws use ``generator`` on its device in a fixed order (ops, then signs), so the same
    seed gives the same parameters.

    Args:
        n: batch size.
        num_ops: ops per image, N (the paper: 1..3 on CIFAR; torchvision's default 2).
        magnitude: M in [0, 30] (10 is each op's largest distortion).
        generator: random source (torch's default CPU generator when ``None``).
        device: where the returned tensors live (default: the generator's device).

    Returns:
        The parameters.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    check_randaugment(num_ops, magnitude)
    dev = generator_device(generator)
    shape = (n, num_ops)
    op = torch.randint(0, len(RANDAUGMENT_OPS), shape, generator=generator, device=dev)
    sign = torch.randint(0, 2, shape, generator=generator, device=dev).double().mul_(2).sub_(1)
    mag = torch.full(shape, float(magnitude), device=dev, dtype=torch.float64)
    params = RandAugmentParams(op=op, sign=sign, magnitude=mag)
    return params.to(device) if device is not None else params


# ---------------------------------------------------------------------------------------------
# The engine. Each step applies every image's own op: stages that are neutral for the images
# applying another op (an identity LUT, a zero offset) run on the whole batch; the stages that
# cost most (saturation, sharpness, rotate/shear) run on all images and are selected per image
# ("dense": no host sync, for GPUs) or on the images that apply them only ("grouped": one host
# sync per stage, for the CPU). Every image's result depends on that image alone, so both ways
# give the same levels bit for bit.


def _lut_stage_(s: Tensor, op: Tensor, arg: Tensor) -> None:
    """In place: autocontrast, equalize, posterize, solarize, brightness and contrast as one
    LUT per plane (the identity for images applying another op), in one gather."""
    r, c, h, w = s.shape
    planes = s.view(r * c, h * w)
    index = planes.long()

    def per_plane(mask: Tensor) -> Tensor:
        return mask.view(r, 1, 1).expand(r, c, 1).reshape(r * c, 1)

    def per_image(lut: Tensor) -> Tensor:
        return lut.view(r, 1, 256).expand(r, c, 256).reshape(r * c, 256)

    factor = arg.to(torch.float32)
    lut = torch.arange(256, device=s.device, dtype=torch.uint8).expand(r * c, 256)
    lut = torch.where(per_plane(op == _OP["autocontrast"]),
                      _autocontrast_lut(planes).to(torch.uint8), lut)
    lut = torch.where(per_plane(op == _OP["equalize"]),
                      _equalize_lut(planes, index).to(torch.uint8), lut)
    lut = torch.where(per_plane(op == _OP["brightness"]),
                      per_image(_brightness_lut(s, factor)), lut)
    lut = torch.where(per_plane(op == _OP["contrast"]), per_image(_contrast_lut(s, factor)), lut)
    # Posterize keeping 8 bits and solarize at 256 leave every level as it is.
    by_image = lut.reshape(r, c, 256)
    _posterize_u8_(by_image, torch.where(op == _OP["posterize"], arg, 8.0).view(r, 1, 1))
    _solarize_u8_(by_image, torch.where(op == _OP["solarize"], arg, 256.0).view(r, 1, 1))
    _apply_lut_u8_(s, by_image.view(r * c, 256), index)


def _translate_stage_(s: Tensor, op: Tensor, arg: Tensor) -> None:
    """In place: whole-pixel translations as one gather of each image's source pixel (black
    outside; offset 0 for images applying another op)."""
    r, c, h, w = s.shape
    dev = s.device
    tx = torch.where(op == _OP["translate_x"], arg, 0.0).long().view(r, 1, 1)
    ty = torch.where(op == _OP["translate_y"], arg, 0.0).long().view(r, 1, 1)
    src_x = torch.arange(w, device=dev).view(1, 1, w) + tx
    src_y = torch.arange(h, device=dev).view(1, h, 1) + ty
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    src = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(r, 1, h * w)
    moved = torch.gather(s.view(r, c, h * w), 2, src.expand(r, c, h * w))
    s.copy_(moved.mul_(inside.view(r, 1, h * w)).view(r, c, h, w))


def _affine_coeffs(op: Tensor, arg: Tensor, h: int, w: int) -> Tensor:
    """Pillow affine coefficients of rotate / shear_x / shear_y images."""
    coeffs = _rotate_coeffs(torch.where(op == _OP["rotate"], arg, 0.0), h, w)
    coeffs[:, 1] = torch.where(op == _OP["shear_x"], arg, coeffs[:, 1])
    coeffs[:, 3] = torch.where(op == _OP["shear_y"], arg, coeffs[:, 3])
    return coeffs


def _saturation_kernel(s: Tensor, op: Tensor, arg: Tensor, dtype: torch.dtype) -> Tensor:
    return _saturation_u8(s, arg.to(torch.float32).view(-1, 1, 1, 1))


def _sharpness_kernel(s: Tensor, op: Tensor, arg: Tensor, dtype: torch.dtype) -> Tensor:
    return _sharpness_u8(s, arg.to(torch.float32).view(-1, 1, 1, 1))


def _affine_kernel(s: Tensor, op: Tensor, arg: Tensor, dtype: torch.dtype) -> Tensor:
    out = s.clone()
    _resample_u8_(out, _affine_coeffs(op, arg, s.shape[2], s.shape[3]), dtype)
    return out


def _stage_masks(op: Tensor, arg: Tensor) -> list[tuple[Tensor, object]]:
    """The costly stages: which images apply each, and its kernel."""
    affine = (op == _OP["rotate"]) | (op == _OP["shear_x"]) | (op == _OP["shear_y"])
    return [
        (op == _OP["saturation"], _saturation_kernel),
        (op == _OP["sharpness"], _sharpness_kernel),
        (affine & (arg != 0), _affine_kernel),  # a zero angle or shear is the identity
    ]


def _dense_step_(s: Tensor, op: Tensor, arg: Tensor, dtype: torch.dtype) -> None:
    """In place: one RandAugment step of every image of ``s``, with no host sync."""
    _lut_stage_(s, op, arg)
    _translate_stage_(s, op, arg)
    for mask, kernel in _stage_masks(op, arg):
        torch.where(mask.view(-1, 1, 1, 1), kernel(s, op, arg, dtype), s, out=s)


def _grouped_step_(s: Tensor, op: Tensor, arg: Tensor, dtype: torch.dtype) -> None:
    """In place: as :func:`_dense_step_`, the costly stages on their own images only."""
    _lut_stage_(s, op, arg)
    _translate_stage_(s, op, arg)
    for mask, kernel in _stage_masks(op, arg):
        rows = mask.nonzero().squeeze(1)
        if len(rows):
            s[rows] = kernel(s[rows], op[rows], arg[rows], dtype)


@torch.no_grad()
def apply_randaugment(
    x: Tensor,
    params: RandAugmentParams,
    *,
    as_levels: bool = False,
    mode: str = "auto",
) -> Tensor:
    """Apply the ops of ``params`` to every image (deterministic given ``params``).

    Args:
        x: images, float in [0, 1] (read as uint8 levels ``floor(255 x + 1e-3)``, as the
            AugMix ops read them) or uint8 levels 0..255, grey or RGB.
        params: from :func:`sample_randaugment_params` with ``batch_size == N``; moved to x's
            device if needed (draw them on x's device to avoid the copy).
        as_levels: return uint8 levels (0..255) instead of float images in [0, 1].
        mode: ``"grouped"`` (the costly ops on their own images; one host sync per op kind and
            step), ``"dense"`` (every op on every image, selected per image; no host sync) or
            ``"auto"`` (grouped on the CPU, dense elsewhere); the same result either way.

    Returns:
        The augmented images: float (x's dtype, float32 for uint8 x) or uint8 levels.

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    if x.dtype != torch.uint8:
        _check_images(x)
    elif x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels (grey or RGB); got {x.shape[1]}")
    if mode not in CHAIN_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(CHAIN_MODES)}")
    n, _, h, w = x.shape
    if params.batch_size != n:
        raise ValueError(f"params are for {params.batch_size} images; x has {n}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    dev = x.device
    s = x.contiguous().clone() if x.dtype == torch.uint8 else _to_levels(x)
    op = params.op.to(dev)
    arg = params.arguments(h, w).to(dev)
    dense = mode == "dense" or (mode == "auto" and dev.type != "cpu")
    step = _dense_step_ if dense else _grouped_step_
    for k in range(params.num_ops):
        step(s, op[:, k], arg[:, k], dtype)
    return s if as_levels else _from_levels(s, dtype)


def randaugment(
    x: Tensor,
    num_ops: int = 2,
    magnitude: float = 9.0,
    *,
    generator: torch.Generator | None = None,
    mode: str = "auto",
) -> Tensor:
    """RandAugment: draw ``num_ops`` ops per image at ``magnitude`` and apply them.

    Args:
        x: images, float in [0, 1] or uint8, grey or RGB.
        num_ops: ops per image, N >= 0.
        magnitude: M in [0, 30].
        generator: random source; draws happen on its device.
        mode: as :func:`apply_randaugment`.

    Returns:
        The augmented float images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    params = sample_randaugment_params(x.shape[0], num_ops, magnitude, generator=generator)
    return apply_randaugment(x, params, mode=mode)
