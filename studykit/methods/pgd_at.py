"""PGD adversarial training (Madry et al., ICLR 2018), with FAT early stopping (Zhang et al.,
ICML 2020), the baseline of the AugMax and RobustAugMix papers.

    min_theta E_(x,y) [ max_{||delta|| <= eps} CE(f_theta(x + delta), y) ]

The inner max is PGD with a random start (``studykit.attacks.pgd``), run in eval mode so it
neither uses batch statistics nor updates BN running statistics; the outer step trains on the
adversarial batch only. Presets (``studykit.attacks.PGD_PRESETS``): ``linf_8`` (eps 8/255, step
2/255, 10 steps: the Madry setting), ``linf_1`` (1/255), ``l2_0.5``, ``l2_0.1``. The small-eps
presets are the ones that help corruption robustness (AugMax Table 10; METHODS.md).
``early_stop=tau`` is FAT's budget of misclassified steps: a sample's attack stops at its
(tau + 1)-th misclassified step (tau = 0: at the first misclassified point).

``eps_ramp`` (a fraction of training) grows eps and the step size linearly from 0 to their
values over that part of training, after ``eps_delay`` (a fraction of clean training first); a
pure function of the global step (so a resumed run equals an uninterrupted one). Madry et al.
train at full eps from the start (``eps_ramp=0``, the default); small models with short budgets
stay at chance that way, and an eps warm-up is the usual remedy (e.g. Gowal et al. 2018, Wong et
al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import default_step_size, pgd, pgd_preset
from studykit.checks import FRACTION
from studykit.methods.base import Method, MethodConfig, StepOutput, register_method
from studykit.schedules import EpsRamp


@dataclass(frozen=True, kw_only=True)
class PGDATConfig(MethodConfig):
    """``preset`` fixes norm/eps/step/steps; a non-None ``eps``/``step_size``/``steps`` wins.

    ``early_stop``: FAT's tau, a per-sample budget of misclassified steps checked before each
    update (0 keeps the first misclassified point, the random start included). AugMax's option
    of the same name is checked after each update instead (every sample takes a step).
    ``eps_ramp``: fraction of training over which eps and the step size grow from 0, after
    ``eps_delay``, a fraction of training at eps 0 (clean training).
    """

    preset: str = "linf_8"
    eps: float | None = None
    step_size: float | None = None
    steps: int | None = None
    early_stop: int | None = None
    attack_eval_mode: bool = True
    eps_ramp: float = 0.0
    eps_delay: float = 0.0

    RANGES = {"eps_ramp": FRACTION, "eps_delay": FRACTION}

    def __post_init__(self) -> None:
        pgd_preset(self.preset)  # raises for an unknown preset
        for key in ("eps_ramp", "eps_delay"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must be a fraction of training in [0, 1], "
                                 f"got {getattr(self, key)!r}")

    def attack_kwargs(self) -> dict:
        kw = pgd_preset(self.preset)
        for key in ("eps", "step_size", "steps"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        if self.eps is not None and self.step_size is None:
            kw["step_size"] = None  # the norm's default for the new eps
        if kw["step_size"] is None:
            kw["step_size"] = default_step_size(kw["norm"], kw["eps"], kw["steps"])
        return kw


@register_method("pgd_at")
class PGDAT(EpsRamp, Method):
    Config = PGDATConfig

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        cfg = self.config
        kw = cfg.attack_kwargs()
        kw["eps"] *= self.scale
        kw["step_size"] *= self.scale
        x_adv = pgd(model, x, y, **kw, early_stop=cfg.early_stop, generator=self.generator,
                    eval_mode=cfg.attack_eval_mode)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        return StepOutput(loss=loss, logits=logits,
                          metrics={"adv_acc": (logits.argmax(1) == y).float().mean() * 100,
                                   "eps": kw["eps"]})
