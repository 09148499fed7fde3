"""PGD in [0, 1] pixel space: one loop for Linf and L2, with random start and FAT early stop.

Conventions: images are float NCHW tensors in [0, 1]; ``eps`` and
``step_size`` are in [0, 1] pixel units (``eps=8/255`` means eight grey levels); the model
includes its own input normalization as its first layer.

PGD (Madry et al., 2018) maximizes the loss inside an eps ball around ``x``::

    x_{t+1} = clip_[0,1]( x + Proj_eps( x_t - x + alpha * s(grad_x L(f(x_t), y)) ) )

with ``s = sign`` for Linf and ``s = g / ||g||_2`` (per sample) for L2. One loop serves both
norms; each norm only supplies three small hooks (random start, step direction, projection),
in the style of foolbox and torchattacks. FAT-style early stopping (Zhang et al., 2020,
"Attacks which do not kill training make adversarial learning stronger") gives each sample a
budget of ``early_stop`` misclassified steps (FAT's tau) and stops it at the next misclassified
point once the budget is spent; in eval mode only the samples still active are computed, so the
early stop saves the time it promises.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studykit.attacks.mode import _unwrap, attack_mode
from studykit.devices import generator_device
from studykit.rng import device_generator

logger = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]

# Paper settings. Linf 8/255 with step 2/255 and 10 steps is the Madry / AugMax PGD-AT setting;
# the small-eps presets (Linf 1/255, L2 0.1) are the ones that help corruption robustness;
# "l2_1.0" (7 steps, step 2.5*eps/7) is RobustAugMix's inner maximization. L2 step sizes follow
# the Madry convention 2.5 * eps / steps.
PGD_PRESETS: dict[str, dict] = {
    "linf_8": dict(norm="linf", eps=8 / 255, step_size=2 / 255, steps=10, random_start=True),
    "linf_1": dict(norm="linf", eps=1 / 255, step_size=0.25 / 255, steps=10, random_start=True),
    "l2_0.1": dict(norm="l2", eps=0.1, step_size=2.5 * 0.1 / 10, steps=10, random_start=True),
    "l2_0.5": dict(norm="l2", eps=0.5, step_size=2.5 * 0.5 / 10, steps=10, random_start=True),
    "l2_1.0": dict(norm="l2", eps=1.0, step_size=2.5 * 1.0 / 7, steps=7, random_start=True),
}


def pgd_preset(name: str) -> dict:
    """Return a copy of a named PGD setting, ready to splat into :func:`pgd`.

    Args:
        name: one of ``PGD_PRESETS`` (``"linf_8"``, ``"linf_1"``, ``"l2_0.1"``, ``"l2_0.5"``,
            ``"l2_1.0"``).

    Returns:
        A new dict with ``norm``, ``eps``, ``step_size``, ``steps`` and ``random_start``.

    Example:
        >>> x_adv = pgd(model, x, y, **pgd_preset("linf_8"))  # doctest: +SKIP
    """
    if name not in PGD_PRESETS:
        raise ValueError(f"unknown PGD preset {name!r}; choose one of: {', '.join(PGD_PRESETS)}")
    return dict(PGD_PRESETS[name])


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector ``(N,)`` to broadcast against ``like`` ``(N, ...)``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def _l2_norms(t: Tensor) -> Tensor:
    return t.flatten(1).norm(p=2, dim=1)


@dataclass(frozen=True)
class _Norm:
    random_start: Callable[[Tensor, float, torch.Generator | None], Tensor]
    direction: Callable[[Tensor], Tensor]
    project: Callable[[Tensor, float], Tensor]
    default_step_size: Callable[[float, int], float]



def _linf_start(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(x.shape, generator=generator, device=generator_device(generator))
    return ((2 * u - 1) * eps).to(device=x.device, dtype=x.dtype)


def _l2_start(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    # Uniform in the ball: direction ~ N(0, I) normalized, radius ~ eps * U(0, 1)^(1/d).
    # For CIFAR-sized inputs (d = 3072) the radius is essentially eps.
    device = generator_device(generator)
    n, d = x.shape[0], x[0].numel()
    direction = torch.randn(x.shape, generator=generator, device=device)
    radius = eps * torch.rand(n, generator=generator, device=device) ** (1.0 / d)
    norms = _l2_norms(direction).clamp_min(1e-12)
    delta = direction * _per_sample(radius / norms, direction)
    return delta.to(device=x.device, dtype=x.dtype)


def _l2_direction(grad: Tensor) -> Tensor:
    # The clamp keeps zero-gradient samples at a zero step instead of 0/0 = NaN.
    return grad / _per_sample(_l2_norms(grad).clamp_min(1e-12), grad)


def _l2_project(delta: Tensor, eps: float) -> Tensor:
    norms = _l2_norms(delta)
    factor = torch.where(norms > eps, eps / norms.clamp_min(1e-12), torch.ones_like(norms))
    return delta * _per_sample(factor, delta)


_NORMS: dict[str, _Norm] = {
    "linf": _Norm(
        random_start=_linf_start,
        direction=torch.sign,
        project=lambda delta, eps: delta.clamp(-eps, eps),
        default_step_size=lambda eps, steps: eps / 4,
    ),
    "l2": _Norm(
        random_start=_l2_start,
        direction=_l2_direction,
        project=_l2_project,
        default_step_size=lambda eps, steps: 2.5 * eps / max(steps, 1),
    ),
}
NORMS: tuple[str, ...] = tuple(_NORMS)


def _check_norm(norm: str) -> _Norm:
    if norm not in _NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(_NORMS)}")
    return _NORMS[norm]


def default_step_size(norm: str, eps: float, steps: int) -> float:
    """The step size :func:`pgd` uses when none is given.

    Linf: ``eps / 4`` (eps 8/255 -> step 2/255, the Madry / AugMax setting with 10 steps).
    L2: ``2.5 * eps / steps`` (the Madry / RobustAugMix convention).

    Args:
        norm: ``"linf"`` or ``"l2"``.
        eps: radius of the ball in [0, 1] pixel units.
        steps: number of PGD steps.

    Returns:
        The step size in [0, 1] pixel units.
    """
    return _check_norm(norm).default_step_size(eps, steps)


def _default_loss(logits: Tensor, y: Tensor) -> Tensor:
    # Sum, not mean: a sample's gradient must not shrink with the batch size.
    return F.cross_entropy(logits, y, reduction="sum")


def _check_eps(eps: float) -> None:
    if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")


def _check_count(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


# ---------------------------------------------------------------------------------------------
# PGD.


def _grad_of(loss: Tensor, x_adv: Tensor, targeted: bool) -> Tensor:
    if loss.ndim > 0:
        loss = loss.sum()
    (grad,) = torch.autograd.grad(loss, x_adv)
    return -grad if targeted else grad


def _input_grad(model: nn.Module, x_adv: Tensor, y: Tensor, loss_fn: LossFn,
                targeted: bool) -> Tensor:
    x_adv = x_adv.detach().requires_grad_(True)
    return _grad_of(loss_fn(model(x_adv), y), x_adv, targeted)


def _pgd_update(x: Tensor, x_adv: Tensor, grad: Tensor, hooks: _Norm, step_size: float,
                eps: float) -> Tensor:
    delta = x_adv.detach() - x + step_size * hooks.direction(grad)
    return (x + hooks.project(delta, eps)).clamp(0, 1)


@torch.no_grad()
def _fat_check(logits: Tensor, y: Tensor, budget: Tensor, idx: Tensor, targeted: bool,
               active: Tensor | None = None) -> Tensor:
    """FAT's test at the current point of samples ``idx``: which step on (spending budget)."""
    pred = logits.argmax(dim=1)
    hit = pred == y if targeted else pred != y
    if active is not None:
        hit = hit & active
    b = budget[idx]
    go = ~hit | (b > 0)
    budget[idx] = b - (hit & (b > 0)).long()
    return go


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    loss_fn: LossFn | None = None,
    targeted: bool = False,
    early_stop: int | None = None,
    generator: torch.Generator | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """Projected gradient descent on the input (Madry et al., 2018), Linf or L2.

    Each step moves every sample by ``step_size`` along the sign of its input gradient (Linf)
    or along its L2-normalized input gradient (L2), projects the perturbation back onto the
    eps ball (Linf: clamp to ``[-eps, eps]``; L2: rescale per sample to norm <= eps) and clips
    the image to [0, 1]. A zero gradient gives a zero step (never NaN).

    Args:
        model: classifier taking [0, 1] images (normalization inside the model).
        x: clean images in [0, 1].
        y: labels (class indices for the default loss and for ``early_stop``), or target
            classes when ``targeted``.
        eps: radius of the ball in [0, 1] pixel units (Linf: 8/255; L2: 0.5 or 1.0). ``eps=0``
            returns ``x``.
        steps: number of gradient steps; 0 returns ``x`` (or the random start).
        step_size: step length in [0, 1] pixel units. Default: Linf ``eps / 4`` (8/255 -> 2/255
            with 10 steps, the paper setting); L2 ``2.5 * eps / steps`` (Madry, RobustAugMix).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform random point in the ball (Linf: each pixel
            ~ U(-eps, eps); L2: uniform in the ball, direction ~ N(0, I), radius
            ~ eps * U(0, 1)^(1/d)), clipped to [0, 1].
        loss_fn: ``loss_fn(logits, y) -> Tensor``, maximized (minimized when ``targeted``);
            a per-sample loss is summed. Default cross-entropy with ``reduction="sum"``, so a
            sample's gradient does not depend on the batch size.
        targeted: descend the loss towards the classes ``y`` instead of ascending it.
        early_stop: FAT's tau: a per-sample budget of misclassified steps. The forward of each
            step is checked before the update: a sample misclassified (for ``targeted``:
            classified as its target) with budget 0 stops at that point, one with budget left
            spends one and steps on, a correct one steps on. ``0`` keeps the first misclassified
            point (the random start included). Stopped samples keep their perturbation. In
            eval mode only active samples are computed (one host synchronization per step); in
            train mode every forward takes the whole batch so batch statistics see it.
            ``None`` (default) never stops and never synchronizes.
        generator: source of the random start. A generator on another device than ``x``
            (a method's CPU generator for CUDA data) seeds a generator on ``x.device`` from one
            draw (``studykit.rng.device_generator``), so the start is drawn where ``x`` lives
            and a seeded generator still gives the same ``x_adv`` every time on one device.
        eval_mode: run the model in eval mode (default). With ``False`` the model keeps its
            train/eval modes (train-mode BatchNorm uses batch statistics), but BN running
            statistics are saved and restored, so they are never updated. See
            :func:`attack_mode`; the model's modes and ``requires_grad`` flags are always
            restored and parameter ``.grad`` is never touched.

    Returns:
        ``x_adv``, detached, in [0, 1] and within the eps ball around ``x``.

    Shape:
        - x: :math:`(N, C, H, W)` (any :math:`(N, ...)` works)
        - y: :math:`(N,)`
        - output: same as ``x``

    Raises:
        ValueError: on an unknown ``norm``, a negative or non-finite ``eps``, negative
            ``steps``, ``step_size`` or ``early_stop``, or mismatched batch sizes.
    """
    hooks = _check_norm(norm)
    _check_eps(eps)
    _check_count("steps", steps)
    _check_count("early_stop", early_stop, allow_none=True)
    eps, steps = float(eps), int(steps)
    if step_size is None:
        step_size = hooks.default_step_size(eps, steps)
    if not (math.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"step_size must be a finite number >= 0, got {step_size!r}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y disagree on the batch size: {x.shape[0]} vs {y.shape[0]}")
    loss_fn = loss_fn or _default_loss

    x = x.detach()
    if eps == 0 or (steps == 0 and not random_start):
        return x.clone()

    if random_start:
        delta = hooks.random_start(x, eps, device_generator(generator, x.device))
        x_adv = (x + delta).clamp(0, 1)
    else:
        x_adv = x.clone()

    model = _unwrap(model)
    if early_stop is None:
        with attack_mode(model, eval_mode=eval_mode):
            for _ in range(steps):
                grad = _input_grad(model, x_adv, y, loss_fn, targeted)
                x_adv = _pgd_update(x, x_adv, grad, hooks, step_size, eps)
        return x_adv.detach()

    # FAT (Zhang et al., 2020, ``earlystop``): every sample has a budget of ``early_stop``
    # misclassified steps. At each step the forward at the current point is checked first: a
    # sample that is misclassified with no budget left stops there; a misclassified sample with
    # budget left spends one and steps on; a correctly classified one steps on for free. In eval
    # mode samples do not interact, so each step runs on the samples still active only (one
    # host synchronization per step, to gather them); in train mode the whole batch goes
    # through every forward so batch statistics see it, and stopped samples stay put.
    budget = torch.full((x.shape[0],), int(early_stop), dtype=torch.long, device=x.device)
    subset = eval_mode
    with attack_mode(model, eval_mode=eval_mode):
        if subset:
            idx = torch.arange(x.shape[0], device=x.device)
            for _ in range(steps):
                xa = x_adv[idx].requires_grad_(True)
                logits = model(xa)
                grad = _grad_of(loss_fn(logits, y[idx]), xa, targeted)
                go = _fat_check(logits, y[idx], budget, idx, targeted)
                keep = go.nonzero().squeeze(1)  # the one synchronization of the step
                if keep.numel() == 0:
                    break
                idx, grad = idx[keep], grad[keep]
                x_adv[idx] = _pgd_update(x[idx], x_adv[idx], grad, hooks, step_size, eps)
        else:
            active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            every = torch.arange(x.shape[0], device=x.device)
            for _ in range(steps):
                xa = x_adv.detach().requires_grad_(True)
                logits = model(xa)
                grad = _grad_of(loss_fn(logits, y), xa, targeted)
                active &= _fat_check(logits, y, budget, every, targeted, active)
                step = _pgd_update(x, x_adv, grad, hooks, step_size, eps)
                x_adv = torch.where(_per_sample(active, x_adv), step, x_adv)
                if not bool(active.any()):
                    break
    return x_adv.detach()


