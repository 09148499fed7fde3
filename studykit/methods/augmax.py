"""AugMax (Wang et al., NeurIPS 2021, "AugMax: Adversarial Composition of Random Augmentations
for Robust Training"), with DuBIN.

AugMix chains are drawn at random; their mixing is chosen adversarially (Eq. 4):

    x* = (1 - m*) x + m* sum_i softmax(p*)_i chain_i(x)
    m*, p* = argmax_{m in [0,1], p in R^width} CE(f(x*), y)

found by n = 10 sign-gradient ascent steps of size 0.1 on m (clipped to [0, 1]) and p from a
U(0, 1) start, per sample, stopping a sample once it has been misclassified after k = 1 of its
updates (Algorithm 1: every sample takes at least one step; ``stop_rule="reference"`` gives what
the authors' code effectively does instead, see ``studykit.augmax_search``). The search runs in
eval mode through the auxiliary BN with no parameter gradients, on the active samples only.
Training loss, as in the reference code:

    L = CE(f(x), y) + lambda * JSD(f(x), f(x*), f(x_augmix)),  lambda = 10

with three forwards: x* through the auxiliary BN, the AugMix image (independent chains) and x
through the main BN (``studykit.methods.consistency``). Eq. 5 of the paper writes
1/2 [CE(f(x*)) + CE(f(x))] instead of CE(f(x)); ``ce_on_augmax=True`` selects it. ``norm``:
bn | dubn | dubin (default) | ibn, placed as in the paper (``studykit.normalization``).
Per-step metrics: ``search_steps`` (mean ascent steps taken per sample) and ``search_cost``
(sample-steps computed, as a fraction of a search without early stop).

The training step is `AugMaxStrategy`'s, shared with the strategy baselines of Table 10
(``methods.augmax_baselines``): AugMax is the strategy whose hard view is the adversarial mix of
random chains (`hard_images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from studykit.augmax_search import STOP_RULES, augmax_search, check_stop_rule
from studykit.augment import AugMixParams, augmix_chains, mix, sample_augmix_params
from studykit.checks import AT_LEAST_1
from studykit.methods.augmix import CHAIN_RANGES, NORMS, NormChoice, check_norm
from studykit.methods.base import Method, MethodConfig, StepOutput, register_method
from studykit.methods.consistency import three_view_step
from studykit.normalization import bn_route


@dataclass(frozen=True, kw_only=True)
class AugMaxConfig(MethodConfig):
    """AugMax options; defaults are the paper's CIFAR values.

    ``early_stop`` is k of Algorithm 1: a sample stops once it has been misclassified after k of
    its updates (1: at the first update that fools the model; every sample takes at least one
    step). ``pgd_at``'s ``early_stop`` is FAT's tau instead, checked before each update: its 0
    keeps a misclassified random start without any step.
    """

    norm: str = "dubin"
    steps: int = 10
    step_size: float = 0.1
    early_stop: int | None = 1
    stop_rule: str = "paper"  # "reference": every sample ascends until the batch is fooled
    jsd_lambda: float = 10.0
    ce_on_augmax: bool = False  # paper Eq. 5: 1/2 [CE(x*) + CE(x)] instead of CE(x)
    augmix_route: str = "clean"  # BN of the AugMix image: the reference code uses the main BN
    width: int = 3
    depth: int = -1
    severity: float = 3.0
    alpha: float = 1.0

    RANGES = {**CHAIN_RANGES, "steps": AT_LEAST_1, "early_stop": AT_LEAST_1}
    CHOICES = {"norm": NORMS, "stop_rule": STOP_RULES, "augmix_route": ("clean", "aug")}

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_stop_rule(self.stop_rule)
        if self.augmix_route not in ("clean", "aug"):
            raise ValueError(f"augmix_route must be 'clean' or 'aug', got {self.augmix_route!r}")


class AugMaxStrategy(NormChoice, Method):
    """AugMax's training step with the hard view left to the strategy (`hard_images`): AugMax
    and its Table-10 baselines (``methods.augmax_baselines``) differ only there.

    Chains for the hard view and for the AugMix view are drawn independently, as one batch of
    2N from the method's generator; the hard view is made in eval mode through the auxiliary
    BN; the loss is ``three_view_step``'s.
    """

    def hard_images(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    params: AugMixParams, g: torch.Generator
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """The hard view of ``x`` (from the AugMix draws ``params``) and its search's metrics;
        ``g`` draws on ``x``'s device."""
        raise NotImplementedError

    def step_options(self) -> dict[str, Any]:
        """Options of ``three_view_step`` (``ce_on_hard``, ``mix_route``). Default: none."""
        return {}

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        c = self.config
        g = self.rng(x.device)
        n = x.shape[0]
        params = sample_augmix_params(2 * n, width=c.width, depth=c.depth, severity=c.severity,
                                      alpha=c.alpha, generator=g)
        mix_params = params.select(slice(n, 2 * n))
        x_mix = mix(x, augmix_chains(x, mix_params), mix_params.w, mix_params.m)
        with bn_route(model, "aug"):
            x_hard, metrics = self.hard_images(model, x, y, params.select(slice(0, n)), g)
        out = three_view_step(model, x, y, x_hard, x_mix, jsd_lambda=c.jsd_lambda,
                              **self.step_options())
        out.metrics.update(metrics)
        return out


@register_method("augmax")
class AugMax(AugMaxStrategy):
    Config = AugMaxConfig
    config: AugMaxConfig

    def hard_images(self, model, x, y, params, g):
        return adversarial_mix(model, x, y, augmix_chains(x, params), self.config, g)

    def step_options(self) -> dict[str, Any]:
        return {"ce_on_hard": self.config.ce_on_augmax, "mix_route": self.config.augmix_route}


def adversarial_mix(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chains: torch.Tensor,
                    c: Any, g: torch.Generator
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """AugMax's search for the worst mixing of ``chains`` (options ``steps``, ``step_size``,
    ``early_stop``, ``stop_rule`` of the Config ``c``): the images and `search_metrics`."""
    search = augmax_search(model, x, y, chains, steps=c.steps, step_size=c.step_size,
                           early_stop=c.early_stop, stop_rule=c.stop_rule, generator=g)
    return search.images(x, chains), search_metrics(search, x.shape[0], c.steps)


def search_metrics(search, n: int, steps: int) -> dict[str, torch.Tensor | float]:
    """Per-step diagnostics of an AugMax search: mean steps taken, cost fraction, start CE."""
    return {"search_steps": search.steps_taken.float().mean(),
            "search_cost": search.computed / max(n * steps, 1),
            "search_start_ce": search.start_loss}
