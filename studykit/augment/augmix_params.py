"""The AugMix op set and its per-sample random parameters (op, level, sign, depth, Dirichlet
weights, Beta mixing weight), drawn from a ``torch.Generator`` and replayable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from studykit.devices import generator_device

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
_OP = {name: i for i, name in enumerate(AUGMIX_OPS)}
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
    dev = generator_device(generator)
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

