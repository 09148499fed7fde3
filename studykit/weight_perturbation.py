"""AdA's corruption set and its inner maximization, over the weights of a corruption network.

Calian et al. (ICLR 2022), Eq. 2 and Appendix A:

    C(x) = { c_{phi+beta}(x) : ||beta_l||_2 <= nu * ||phi_l||_2 for every parameter block l }
    max_{beta in C}  CE(f(c_{phi+beta}(x)), y)

A block is one parameter tensor (each layer's weight and bias separately). beta is per example:
every image has its own perturbation, drawn uniformly in the product of the balls (the random
start), then moved by ``steps`` iterated-FGSM steps beta_l <- beta_l + alpha sign(grad_l) with
alpha = 1/4 of the median block radius, each followed by the projection onto every block's ball
(rescaling a block whose norm exceeds its radius). The loss is summed over the batch, so each
image's gradient is its own; the whole batch runs as one forward (grouped convolutions in
``studykit.nets.corruption_net``), never as a loop over images.

Where the paper is silent: "randomly within the feasible region" is read as uniform in each
ball (a Gaussian direction times radius * U^(1/d)); in high dimension that puts nearly all
draws close to the sphere.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import attack_mode
from studykit.nets.corruption_net import CorruptionNet, per_example_params

Blocks = Mapping[str, torch.Tensor]


def block_radii(phi: Blocks, nu: float) -> dict[str, float]:
    """nu * ||phi_l||_2 for every parameter block."""
    return {name: nu * float(p.norm()) for name, p in phi.items()}


def median_step_size(radii: Mapping[str, float], fraction: float = 0.25) -> float:
    """The FGSM step: ``fraction`` (paper: 1/4) of the median block radius."""
    return fraction * statistics.median(radii.values())


def _norms(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm with singleton dims to broadcast back. (N, ...) -> (N, 1, ...)."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def sample_in_balls(phi: Blocks, radii: Mapping[str, float], n: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-example perturbations drawn uniformly in every block's ball.

    Shape:
        - output: name -> (n, *phi[name].shape), on phi's device
    """
    beta = {}
    for name, p in phi.items():
        dev = generator.device if generator is not None else p.device
        g = torch.randn((n, *p.shape), generator=generator, device=dev).to(p.device)
        u = torch.rand((n,), generator=generator, device=dev).to(p.device)
        scale = radii[name] * u.pow(1.0 / p.numel()).view(-1, *([1] * p.ndim))
        beta[name] = g / _norms(g).clamp_min(1e-12) * scale
    return beta


def project(beta: Blocks, radii: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Every block of every example rescaled into its ball (unchanged where already inside)."""
    return {name: b * (radii[name] / _norms(b).clamp_min(1e-12)).clamp(max=1.0)
            for name, b in beta.items()}


def corruption_loss(net: CorruptionNet, phi: Blocks, classifier: nn.Module, x: torch.Tensor,
                    y: torch.Tensor, beta: Blocks) -> torch.Tensor:
    """Per-example CE(f(c_{phi+beta}(x)), y). Shape: x (N, 3, H, W), y (N,) -> (N,)."""
    return F.cross_entropy(classifier(net(x, per_example_params(phi, beta))), y,
                           reduction="none")


def ada_search(
    net: CorruptionNet, phi: Blocks, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor,
    beta: Blocks, radii: Mapping[str, float], *, steps: int = 10, step_size: float | None = None,
    callback: Callable[[int, dict[str, torch.Tensor], torch.Tensor], None] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Iterated FGSM on the corruption network's weight perturbation (module docstring).

    The classifier runs in eval mode with no parameter gradients and in fp32
    (``studykit.attacks.attack_mode``); its mode is restored afterwards.

    Args:
        net: the corruption network (its own weights are not used; ``phi`` is).
        phi: the unperturbed parameters, by name (``nets.corruption_net.base_params``).
        classifier: f.
        x, y: images in [0, 1] and their clean labels.
        beta: the start (``sample_in_balls``), name -> (N, *shape).
        radii: block radii (``block_radii``).
        steps: FGSM steps (paper: 10).
        step_size: alpha (default: ``median_step_size(radii)``).
        callback: ``callback(step, beta, loss)`` after every step (1-based), with the projected
            beta and the per-example loss of the iterate the step started from.

    Returns:
        The final beta and the per-example loss at the start (nan when ``steps`` is 0).

    Shape:
        - x: (N, 3, H, W); y: (N,)
        - start loss: (N,)
    """
    alpha = median_step_size(radii) if step_size is None else step_size
    beta = {k: v.detach() for k, v in beta.items()}
    start = torch.full((x.shape[0],), float("nan"), device=x.device)
    with attack_mode(classifier):
        for step in range(1, steps + 1):
            for b in beta.values():
                b.requires_grad_(True)
            loss = corruption_loss(net, phi, classifier, x, y, beta)
            grads = torch.autograd.grad(loss.sum(), list(beta.values()))
            with torch.no_grad():
                beta = project({k: b + alpha * gr.sign() for (k, b), gr in
                                zip(beta.items(), grads, strict=True)}, radii)
            if step == 1:
                start = loss.detach()
            if callback is not None:
                callback(step, beta, loss.detach())
    return beta, start
