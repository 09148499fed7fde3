"""Adversarial attacks in [0, 1] pixel space: one PGD loop (Linf, L2) and a spatial attack.

Conventions (see DESIGN.md): images are float NCHW tensors in [0, 1]; ``eps`` and
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

``spatial_worst_of_k`` is the worst-of-k random rotation + translation attack used for the
CIFAR10-STA evaluation (Engstrom et al., 2019), and ``adversarial_accuracy`` gives the
accuracy-vs-eps curves (eps 0 = clean accuracy) that ``evaluation.py`` turns into tables.

Every attack runs the model in eval mode by default, never updates BatchNorm running
statistics, restores each submodule's train/eval flag and each parameter's ``requires_grad``,
leaves parameter ``.grad`` untouched, works when called under ``torch.no_grad()`` and returns
a detached tensor. A model wrapped in ``DistributedDataParallel`` is attacked through its
``.module``. Inputs are assumed to lie in [0, 1]; this is not checked (it would cost a device
sync per call).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from studykit.rng import device_generator

__all__ = [
    "NORMS",
    "PGD_PRESETS",
    "adversarial_accuracy",
    "affine_transform",
    "attack_mode",
    "default_step_size",
    "gradient_masking_warnings",
    "pgd",
    "pgd_preset",
    "sample_spatial_params",
    "spatial_worst_of_k",
]

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


# ---------------------------------------------------------------------------------------------
# Model state handling shared by every attack (and by other inner maximizations).


@contextmanager
def attack_mode(model: nn.Module, *, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Prepare ``model`` for an inner maximization and restore it afterwards.

    Inside the block the model is in eval mode (when ``eval_mode``), its parameters do not
    require grad (so no parameter gradients are computed or accumulated), gradients are
    enabled even if the caller is under ``torch.no_grad()``, and autocast is off (inner
    maximizations run in fp32). On exit, even on an exception,
    every submodule's ``training`` flag and every parameter's ``requires_grad`` are restored.

    With ``eval_mode=False`` the model keeps its modes, so train-mode BatchNorm layers
    normalize with batch statistics; their running statistics (every buffer of every module in
    train mode: ``running_mean``, ``running_var``, ``num_batches_tracked``) are saved on entry
    and copied back on exit, so an attack never updates them. (Setting ``momentum=0`` would not
    be enough: ``num_batches_tracked`` still counts, and ``momentum=None`` averages cumulatively.)

    Args:
        model: the network; changed in place for the duration of the block.
        eval_mode: run the block in eval mode (the default and the right choice for attacks
            used in evaluation and in most adversarial training).

    Yields:
        The same ``model``.
    """
    modes = [(module, module.training) for module in model.modules()]
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    saved_buffers: list[tuple[Tensor, Tensor]] = []
    if not eval_mode:
        for module in model.modules():
            if module.training:
                saved_buffers += [
                    (b, b.detach().clone()) for b in module.buffers(recurse=False) if b is not None
                ]
    try:
        if eval_mode:
            model.eval()
        for p, _ in grad_flags:
            p.requires_grad_(False)
        # Inner maximizations run in fp32 even under a training loop's bf16 autocast: a bf16
        # cast of the first layer's input rounds values near 1 to steps of 1/256, which erases
        # perturbations smaller than a grey level (Linf 1/255, L2 0.1 attacks).
        with torch.enable_grad(), torch.autocast("cuda", enabled=False), \
                torch.autocast("cpu", enabled=False):
            yield model
    finally:
        with torch.no_grad():
            for buffer, saved in saved_buffers:
                if not torch.equal(buffer, saved):
                    buffer.copy_(saved)
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        for module, flag in modes:
            module.training = flag


# ---------------------------------------------------------------------------------------------
# Per-norm hooks.


def _unwrap(model: nn.Module) -> nn.Module:
    # Attack the inner module of a DDP wrapper: a DDP forward whose backward never reaches the
    # parameters would leave its reducer waiting for gradients that never come.
    return model.module if isinstance(model, DistributedDataParallel) else model


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


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _linf_start(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(x.shape, generator=generator, device=_draw_device(generator))
    return ((2 * u - 1) * eps).to(device=x.device, dtype=x.dtype)


def _l2_start(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    # Uniform in the ball: direction ~ N(0, I) normalized, radius ~ eps * U(0, 1)^(1/d).
    # For CIFAR-sized inputs (d = 3072) the radius is essentially eps.
    device = _draw_device(generator)
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


# ---------------------------------------------------------------------------------------------
# Spatial worst-of-k.


def sample_spatial_params(
    n: int,
    k: int,
    *,
    max_rotation: float = 30.0,
    max_translation: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw k random rotations and translations per sample, for :func:`affine_transform`.

    Rotation angles are uniform in ``[-max_rotation, max_rotation]`` degrees; translations
    are continuous, uniform in ``[-max_translation, max_translation]`` pixels per axis.

    Args:
        n: batch size.
        k: trials per sample.
        max_rotation: largest rotation in degrees (CIFAR10-STA: 30).
        max_translation: largest translation in pixels (CIFAR10-STA: 3).
        generator: random source; draws happen on its device (CPU when ``None``).

    Returns:
        ``(angles, translations)`` on the generator's device.

    Shape:
        - angles: :math:`(k, N)` in degrees
        - translations: :math:`(k, N, 2)` as ``(dx, dy)`` pixels
    """
    device = _draw_device(generator)
    angles = (2 * torch.rand(k, n, generator=generator, device=device) - 1) * max_rotation
    shifts = (2 * torch.rand(k, n, 2, generator=generator, device=device) - 1) * max_translation
    return angles, shifts


def affine_transform(x: Tensor, angles: Tensor, translations: Tensor) -> Tensor:
    """Rotate about the image centre and translate, bilinear with zero (black) fill.

    Args:
        x: images in [0, 1].
        angles: rotation per sample in degrees (counter-clockwise on screen for positive).
        translations: ``(dx, dy)`` per sample in pixels.

    Returns:
        The transformed images, in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - angles: :math:`(N,)`
        - translations: :math:`(N, 2)`
        - output: :math:`(N, C, H, W)`
    """
    n, _, h, w = x.shape
    rad = torch.deg2rad(angles.to(device=x.device, dtype=x.dtype))
    shifts = translations.to(device=x.device, dtype=x.dtype)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # affine_grid maps output to input coordinates in [-1, 1] per axis; the h/w factors keep
    # the rotation rigid on non-square images, and 2/size converts pixels to that range.
    theta = torch.stack(
        [
            torch.stack([cos, -sin * h / w, -2 * shifts[:, 0] / w], dim=1),
            torch.stack([sin * w / h, cos, -2 * shifts[:, 1] / h], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0, 1)


def spatial_worst_of_k(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    k: int = 10,
    max_rotation: float = 30.0,
    max_translation: float = 3.0,
    generator: torch.Generator | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """Worst-of-k random spatial attack (Engstrom et al., 2019; the CIFAR10-STA evaluation).

    Each sample gets ``k`` random rotation + translation trials (drawn by
    :func:`sample_spatial_params`, applied by :func:`affine_transform` on the whole batch per
    trial); per sample the trial with the highest cross-entropy is kept. The identity is not
    among the trials (k random transforms, as in the benchmark), so the result's loss can be
    below the clean image's loss.

    Args:
        model: classifier taking [0, 1] images.
        x: clean images in [0, 1].
        y: labels.
        k: number of random trials per sample (CIFAR10-STA: 10).
        max_rotation: largest rotation in degrees (30).
        max_translation: largest translation in pixels (3).
        generator: random source (see :func:`sample_spatial_params`); same seed, same result.
        eval_mode: run the model in eval mode (default); modes are restored either way.

    Returns:
        The worst transformed images, detached, in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - y: :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_count("k", k)
    if k == 0:
        raise ValueError("k must be an integer >= 1, got 0")
    x = x.detach()
    model = _unwrap(model)
    angles, shifts = sample_spatial_params(
        x.shape[0],
        k,
        max_rotation=max_rotation,
        max_translation=max_translation,
        generator=generator,
    )
    worst = x.clone()
    worst_loss = torch.full((x.shape[0],), -math.inf, device=x.device)
    with attack_mode(model, eval_mode=eval_mode), torch.no_grad():
        for trial in range(k):
            x_t = affine_transform(x, angles[trial], shifts[trial])
            loss = F.cross_entropy(model(x_t), y, reduction="none").float()
            better = loss > worst_loss
            worst = torch.where(_per_sample(better, x_t), x_t, worst)
            worst_loss = torch.where(better, loss, worst_loss)
    return worst


# ---------------------------------------------------------------------------------------------
# Evaluation helpers.


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


def adversarial_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps_list: list[float] | tuple[float, ...],
    norm: str = "linf",
    steps: int = 10,
    step_size: float | Callable[[float], float] | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    progress: bool = True,
    **pgd_kwargs,
) -> dict[float, float]:
    """Accuracy (%) under PGD at each eps; eps 0 is the clean accuracy (no attack is run).

    The model is evaluated in eval mode and its modes are restored afterwards. Batches are
    moved to the model's device, so ``x`` may stay on the CPU. When a ``generator`` is given
    its state is reset to the same starting state for every eps, so the number for one eps
    does not depend on which other eps are in the list.

    Args:
        model: classifier taking [0, 1] images.
        x: images in [0, 1].
        y: labels.
        eps_list: radii in [0, 1] pixel units.
        norm: ``"linf"`` or ``"l2"``.
        steps: PGD steps.
        step_size: a number, a function of eps (e.g. ``lambda e: 2.5 * e / 7``, the
            RobustAugMix Fig. 2 setting), or ``None`` for :func:`default_step_size`.
        batch_size: images per attacked batch.
        generator: random source of the random starts.
        progress: show a tqdm bar (``leave=False``).
        **pgd_kwargs: passed on to :func:`pgd` (``random_start``, ``loss_fn``, ...).

    Returns:
        ``{eps: accuracy in percent}`` with the keys as floats, in the order of ``eps_list``.

    Shape:
        - x: :math:`(N, C, H, W)`
        - y: :math:`(N,)`
    """
    _check_norm(norm)
    for eps in eps_list:
        _check_eps(eps)
    _check_count("batch_size", batch_size)
    if batch_size == 0:
        raise ValueError("batch_size must be an integer >= 1, got 0")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y disagree on the batch size: {x.shape[0]} vs {y.shape[0]}")
    model = _unwrap(model)
    device = _model_device(model, x.device)
    start_state = generator.get_state() if generator is not None else None
    n = x.shape[0]
    n_batches = math.ceil(n / batch_size)
    results: dict[float, float] = {}
    with (
        attack_mode(model, eval_mode=True),
        tqdm(
            total=len(eps_list) * n_batches,
            desc=f"PGD {norm}",
            leave=False,
            disable=not progress,
        ) as bar,
    ):
        for eps in eps_list:
            if start_state is not None:
                generator.set_state(start_state)
            size = step_size(eps) if callable(step_size) else step_size
            correct = 0
            for start in range(0, n, batch_size):
                xb = x[start : start + batch_size].to(device)
                yb = y[start : start + batch_size].to(device)
                if eps > 0:
                    xb = pgd(
                        model,
                        xb,
                        yb,
                        eps=eps,
                        steps=steps,
                        step_size=size,
                        norm=norm,
                        generator=generator,
                        **pgd_kwargs,
                    )
                with torch.no_grad():
                    correct += int((model(xb).argmax(dim=1) == yb).sum())
                bar.update(1)
            results[float(eps)] = 100.0 * correct / max(n, 1)
            logger.debug("PGD %s eps=%.4g: accuracy %.2f%%", norm, eps, results[float(eps)])
    return results


def gradient_masking_warnings(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    zero_fraction: float = 0.1,
) -> list[str]:
    """Cheap checks for gradient masking before trusting a PGD evaluation.

    Looks for (1) samples whose input gradient of the cross-entropy is exactly zero (e.g.
    saturated softmax, quantization, non-differentiable preprocessing), (2) non-finite input
    gradients and (3) a model whose outputs change between two identical eval-mode forwards
    (randomized defenses, whose gradients PGD cannot follow). Each finding is logged as a
    warning and returned. This is a smoke test, not a proof of absence (see AutoAttack).

    Args:
        model: classifier taking [0, 1] images; evaluated in eval mode, modes restored.
        x: images in [0, 1].
        y: labels.
        zero_fraction: warn when more than this fraction of samples has a zero gradient.

    Returns:
        The warning messages (empty when nothing looks wrong).

    Shape:
        - x: :math:`(N, C, H, W)`
        - y: :math:`(N,)`
    """
    messages: list[str] = []
    model = _unwrap(model)
    with attack_mode(model, eval_mode=True):
        x_in = x.detach().clone().requires_grad_(True)
        logits = model(x_in)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x_in)
        with torch.no_grad():
            logits_again = model(x.detach())
    norms = _l2_norms(grad)
    finite = torch.isfinite(norms)
    if not bool(finite.all()):
        messages.append(
            f"{int((~finite).sum())} of {len(norms)} samples have non-finite input gradients"
        )
    zero = float((norms[finite] == 0).float().mean()) if bool(finite.any()) else 0.0
    if zero > zero_fraction:
        messages.append(
            f"{zero:.0%} of samples have a zero input gradient (more than {zero_fraction:.0%}); "
            "PGD accuracy may overestimate robustness (gradient masking)"
        )
    if not torch.allclose(logits.detach(), logits_again, rtol=1e-4, atol=1e-5):
        messages.append(
            "the model's outputs differ between two identical eval-mode forwards (randomized "
            "model); use an attack with expectation over transformation"
        )
    for message in messages:
        logger.warning("gradient masking check: %s", message)
    return messages
