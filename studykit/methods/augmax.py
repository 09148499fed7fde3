"""AugMax (Wang et al., NeurIPS 2021, "AugMax: Adversarial Composition of Random Augmentations
for Robust Training"), with DuBIN.

AugMix chains are drawn at random; their mixing is chosen adversarially (Eq. 4):

    x* = (1 - m*) x + m* sum_i softmax(p*)_i chain_i(x)
    m*, p* = argmax_{m in [0,1], p in R^width} CE(f(x*), y)

found by n = 10 sign-gradient ascent steps of size 0.1 on m (clipped to [0, 1]) and p from a
U(0, 1) start, per sample, stopping a sample once it has been misclassified on k = 1 step (the
"friendly" early stop of FAT; a stopped sample keeps its m, p; the reference code's masking of
stopped samples is a no-op, here it is applied). The search runs in eval mode through the
auxiliary BN with no parameter gradients. Training loss, as in the reference code:

    L = CE(f(x), y) + lambda * JSD(f(x), f(x*), f(x_augmix)),  lambda = 10

with three forwards: x* through the auxiliary BN, the AugMix image (independent chains) and x
through the main BN. Eq. 5 of the paper writes 1/2 [CE(f(x*)) + CE(f(x))] instead of CE(f(x));
``ce_on_augmax=True`` selects it. ``norm``: bn | dubn | dubin (default) | ibn, placed as in the
paper (``studykit.normalization.convert_norm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import attack_mode
from studykit.augmentations import augmix_chains, mix, sample_augmix_params
from studykit.losses import jsd_consistency
from studykit.methods import Method, MethodConfig, StepOutput, register_method
from studykit.methods.augmix import NormChoice, check_norm
from studykit.normalization import bn_route


@dataclass
class AugMaxSearch:
    """Result of the inner maximization: mixing parameters and per-step diagnostics."""

    m: torch.Tensor  # (N,)
    p: torch.Tensor  # (N, width)
    steps_taken: torch.Tensor  # (N,) ascent steps applied to each sample
    losses: list[float]  # mean CE at each evaluated step (the first is the random start)


def augmax_search(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, chains: torch.Tensor, *,
    steps: int = 10, step_size: float = 0.1, early_stop: int | None = 1,
    generator: torch.Generator | None = None,
) -> AugMaxSearch:
    """Adversarial mixing weights for fixed chains (AugMax Eq. 4).

    Args:
        model: classifier on [0, 1] images; routed by the caller (auxiliary BN for AugMax).
        x: clean images. y: labels.
        chains: ``augmix_chains`` output.
        steps: ascent steps. step_size: sign step on m and p.
        early_stop: a sample stops after this many misclassified steps (None: never).
        generator: random start.

    Shape:
        - x: (N, C, H, W); chains: (width, N, C, H, W); m: (N,); p: (N, width)
    """
    n, width = x.shape[0], chains.shape[0]
    dev = generator.device if generator is not None else torch.device("cpu")
    m = torch.rand(n, generator=generator, device=dev).to(x.device)
    p = torch.rand(n, width, generator=generator, device=dev).to(x.device)
    budget = torch.full((n,), early_stop if early_stop is not None else steps + 1,
                        device=x.device)
    taken = torch.zeros(n, dtype=torch.long, device=x.device)
    losses = []
    with attack_mode(model, eval_mode=True):
        for _ in range(steps + 1):
            m_, p_ = m.clone().requires_grad_(True), p.clone().requires_grad_(True)
            logits = model(mix(x, chains, F.softmax(p_, dim=1), m_))
            loss = F.cross_entropy(logits, y, reduction="sum")
            losses.append(loss.item() / n)
            if len(losses) > steps:
                break
            wrong = logits.argmax(1) != y
            budget = budget - (wrong & (budget > 0)).long()
            active = budget > 0
            if not active.any():
                break
            g_m, g_p = torch.autograd.grad(loss, [m_, p_])
            a = active.to(x.dtype)
            m = (m + step_size * g_m.sign() * a).clamp(0, 1)
            p = p + step_size * g_p.sign() * a[:, None]
            taken += active.long()
    return AugMaxSearch(m.detach(), p.detach(), taken, losses)


@dataclass(frozen=True, kw_only=True)
class AugMaxConfig(MethodConfig):
    """AugMax options; defaults are the paper's CIFAR values.

    ``early_stop`` is the reference code's FAT budget: a sample stops once it has been
    misclassified on ``early_stop`` evaluated steps (1: at its first misclassified point). Note
    that ``pgd_at``'s ``early_stop`` counts differently (steps taken *after* the first
    misclassification, as ``studykit.attacks.pgd`` does), so ``pgd`` early_stop=0 equals this 1.
    """

    norm: str = "dubin"
    steps: int = 10
    step_size: float = 0.1
    early_stop: int | None = 1
    jsd_lambda: float = 10.0
    ce_on_augmax: bool = False  # paper Eq. 5: 1/2 [CE(x*) + CE(x)] instead of CE(x)
    augmix_route: str = "clean"  # BN of the AugMix image: the reference code uses the main BN
    width: int = 3
    depth: int = -1
    severity: float = 3.0
    alpha: float = 1.0

    def __post_init__(self) -> None:
        check_norm(self.norm)
        if self.augmix_route not in ("clean", "aug"):
            raise ValueError(f"augmix_route must be 'clean' or 'aug', got {self.augmix_route!r}")


@register_method("augmax")
class AugMax(NormChoice, Method):
    Config = AugMaxConfig

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        c = self.config
        n = x.shape[0]
        # Independent chains for the AugMax image and for the AugMix image, as one batch.
        params = sample_augmix_params(2 * n, width=c.width, depth=c.depth, severity=c.severity,
                                      alpha=c.alpha, generator=self.generator).to(x.device)
        chains = augmix_chains(x.repeat(2, 1, 1, 1), params)
        max_chains, mix_chains = chains[:, :n], chains[:, n:]
        with bn_route(model, "aug"):
            search = augmax_search(model, x, y, max_chains, steps=c.steps,
                                   step_size=c.step_size, early_stop=c.early_stop,
                                   generator=self.generator)
        x_max = mix(x, max_chains, F.softmax(search.p, dim=1), search.m)
        x_mix = mix(x, mix_chains, params.w[n:], params.m[n:])
        out = three_view_step(model, x, y, x_max, x_mix, jsd_lambda=c.jsd_lambda,
                              ce_on_hard=c.ce_on_augmax, mix_route=c.augmix_route)
        out.metrics["search_gain"] = search.losses[-1] - search.losses[0]
        return out


def three_view_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_hard: torch.Tensor,
    x_mix: torch.Tensor, *, jsd_lambda: float, ce_on_hard: bool = False,
    mix_route: str = "clean",
) -> StepOutput:
    """The loss shared by AugMax, its Table-10 baselines and RobustAugMix:
    CE(f(x)) (or 1/2 [CE(f(x)) + CE(f(x_hard))]) + lambda JSD(f(x), f(x_hard), f(x_mix)),
    with x_hard through the auxiliary BN and x, x_mix through ``mix_route`` / the main BN
    (three forwards, so each BN sees batch statistics of one kind of image)."""
    with bn_route(model, "aug"):
        logits_hard = model(x_hard.detach())
    with bn_route(model, mix_route):
        logits_mix = model(x_mix.detach())
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    if ce_on_hard:
        ce = 0.5 * (ce + F.cross_entropy(logits_hard, y))
    jsd = jsd_consistency([logits, logits_hard, logits_mix])
    metrics = {"ce": ce.item(), "jsd": jsd.item(),
               "hard_acc": (logits_hard.argmax(1) == y).float().mean().item() * 100}
    return StepOutput(loss=ce + jsd_lambda * jsd, logits=logits, metrics=metrics)
