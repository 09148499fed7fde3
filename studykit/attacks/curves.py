"""Accuracy against an attack over several eps (eps 0 = clean accuracy) and the gradient-masking
sanity checks of RobustBench/AutoAttack practice, on top of `pgd`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from studykit.attacks.mode import _unwrap, attack_mode
from studykit.attacks.pgd import _check_count, _check_eps, _check_norm, _l2_norms, pgd
from studykit.devices import model_device

# ---------------------------------------------------------------------------------------------
# Evaluation helpers.



logger = logging.getLogger(__name__)


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
    outcomes: dict[float, Tensor] | None = None,
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
        outcomes: when given, filled with each eps's per-image outcome (bool, on the CPU, True
            where the attacked image is still classified correctly), for paired statistics.
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
    device = model_device(model, x.device)
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
            hits = []
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
                    hits.append((model(xb).argmax(dim=1) == yb).cpu())
                bar.update(1)
            hit = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
            if outcomes is not None:
                outcomes[float(eps)] = hit
            results[float(eps)] = 100.0 * int(hit.sum()) / max(n, 1)
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
