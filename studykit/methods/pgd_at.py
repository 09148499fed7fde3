"""PGD adversarial training (Madry et al., ICLR 2018), with FAT early stopping (Zhang et al.,
ICML 2020), the baseline of the AugMax and RobustAugMix papers.

    min_theta E_(x,y) [ max_{||delta|| <= eps} CE(f_theta(x + delta), y) ]

The inner max is PGD with a random start (``studykit.attacks.pgd``), run in eval mode so it
neither uses batch statistics nor updates BN running statistics; the outer step trains on the
adversarial batch only. Presets (``studykit.attacks.PGD_PRESETS``): ``linf_8`` (eps 8/255, step
2/255, 10 steps: the Madry setting), ``linf_1`` (1/255), ``l2_0.5``, ``l2_0.1``. The small-eps
presets are the ones that help corruption robustness (AugMax Table 10; METHODS.md).
``early_stop=k`` stops a sample's attack k steps after it is first misclassified (FAT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import pgd, pgd_preset
from studykit.methods import Method, MethodConfig, StepOutput, register_method


@dataclass(frozen=True, kw_only=True)
class PGDATConfig(MethodConfig):
    """``preset`` fixes norm/eps/step/steps; a non-None ``eps``/``step_size``/``steps`` wins.

    ``early_stop=k``: a sample's attack stops k steps after it is first misclassified (FAT's
    tau; 0 keeps the first misclassified point). AugMax's option of the same name is a budget
    of misclassified steps instead (its 1 is this 0).
    """

    preset: str = "linf_8"
    eps: float | None = None
    step_size: float | None = None
    steps: int | None = None
    early_stop: int | None = None
    attack_eval_mode: bool = True

    def __post_init__(self) -> None:
        pgd_preset(self.preset)  # raises for an unknown preset

    def attack_kwargs(self) -> dict:
        kw = pgd_preset(self.preset)
        for key in ("eps", "step_size", "steps"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        if self.eps is not None and self.step_size is None:
            kw["step_size"] = None  # the norm's default for the new eps
        return kw


@register_method("pgd_at")
class PGDAT(Method):
    Config = PGDATConfig

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        cfg = self.config
        x_adv = pgd(model, x, y, **cfg.attack_kwargs(), early_stop=cfg.early_stop,
                    generator=self.generator, eval_mode=cfg.attack_eval_mode)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        return StepOutput(loss=loss, logits=logits,
                          metrics={"adv_acc": (logits.argmax(1) == y).float().mean().item() * 100})
