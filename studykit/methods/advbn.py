"""AdvBN fine-tuning (Shu et al., NeurIPS 2021, "Encoding Robustness to Image Style via
Adversarial Feature Perturbations"), Eq. 3 and Algorithm 1:

    min_theta E_(x,y) [ max_delta L(g_theta^{l+1,L}(BN_adv^delta(g^{1,l}(x))), y)
                        + L(g_theta^{l+1,L}(g^{1,l}(x)), y) ]

A trained base run (``base_method``, the same data, model and seed; the run store trains it
first when it is missing) is fine-tuned: the layers up to the cut (after stage ``stage``) are
frozen and kept in eval mode, every BN after the cut gets an auxiliary copy that the
adversarial features go through (initialized from the clean BN, as in AdvProp), the clean
features use the main BN. The perturbation is `studykit.advbn.head_attack`: m sign steps of
size tau on (delta_mu, delta_sigma) in [1 - eps, 1 + eps], in eval mode through the
auxiliary BN. Inference uses the main BN (`eval_model`); route it to the auxiliary BN with
``studykit.normalization.bn_route(model, "aug")`` (the paper's Table 7).

The paper's schedule (20 epochs at lr 1e-3, x0.1 after 10, SGD momentum 0.9, wd 1e-4, on a
90-epoch ImageNet model) becomes ``finetune_schedule``: a tenth of the profile's epochs (20 of
the paper profile's 200), at least one, with the decay halfway. AugMix+AdvBN is
``base_method="augmix"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from studykit.advbn import (
    STAGE_RANGE,
    add_auxiliary_bn,
    auxiliary_route,
    cut_stage,
    encoder_module_names,
    encoder_parameters,
    head_attack,
)
from studykit.checks import NON_NEGATIVE, POSITIVE, Range
from studykit.methods.base import Method, MethodConfig, StepOutput, create_method, register_method
from studykit.normalization import set_bn_route

FINETUNE_FRACTION = 20 / 200


@dataclass(frozen=True, kw_only=True)
class AdvBNConfig(MethodConfig):
    """AdvBN options; defaults are the paper's ResNet-50 values (m = 6, tau = 0.2,
    eps = m * tau - 0.1 = 1.1, placement conv2_3 = the end of stage 1).

    ``base_method``: the registry key of the run to fine-tune (trained with the profile's
    options for that method). ``stage``: the cut, after stage 1, 2 or 3. ``relu_clamp``:
    after a cut that ends with a ReLU, clamp the shifted features at 0 (the authors' code);
    False: Eq. 1-2 as the paper writes them, whose shifted features have exactly the target
    statistics delta_mu mu and |delta_sigma| sigma (`studykit.advbn.head_attack`).
    """

    base_method: str = "standard"
    stage: int = 1
    steps: int = 6
    step_size: float = 0.2
    eps: float = 1.1
    relu_clamp: bool = True

    RANGES = {"stage": Range(*STAGE_RANGE), "steps": NON_NEGATIVE, "step_size": POSITIVE,
              "eps": POSITIVE}
    HASH_AT_DEFAULT_OMITTED = ("relu_clamp",)  # added later: runs made before keep their hash

    def __post_init__(self) -> None:
        from studykit.methods.base import list_methods

        choices = [m for m in list_methods() if m != "advbn"]
        if self.base_method not in choices:
            raise ValueError(f"unknown base_method {self.base_method!r}; choose one of: "
                             f"{', '.join(choices)}")


@register_method("advbn")
class AdvBN(Method):
    Config = AdvBNConfig
    config: AdvBNConfig
    finetunes = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.base: tuple[Method, dict[str, torch.Tensor]] | None = None
        self.cut = ""
        self.encoder: list[str] = []

    @staticmethod
    def finetune_schedule(profile_epochs: int) -> dict[str, Any]:
        """Training settings of the fine-tuning run for a profile with ``profile_epochs``."""
        return {"epochs": max(1, math.ceil(FINETUNE_FRACTION * profile_epochs)), "lr": 1e-3,
                "weight_decay": 1e-4, "momentum": 0.9, "schedule": "multistep",
                "warmup_epochs": 0.0}

    @staticmethod
    def milestones(epochs: int) -> list[float]:
        """Epochs at which the learning rate drops tenfold: halfway (10 of 20 in the paper)."""
        return [epochs / 2]

    @property
    def base_method(self) -> str:
        return self.config.base_method

    def set_base(self, base_method: Method, state: dict[str, torch.Tensor]) -> None:
        """The trained base run's method and weights, loaded by `prepare_model`."""
        self.base = (base_method, state)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        base_method = self.base[0] if self.base else create_method(self.config.base_method)
        model = base_method.prepare_model(model)
        if self.base is not None:
            model.load_state_dict(self.base[1])
        self.cut = cut_stage(model, self.config.stage)
        self.encoder = encoder_module_names(model, self.cut)
        for p in encoder_parameters(model, self.cut):
            p.requires_grad_(False)
        add_auxiliary_bn(model, self.cut)
        return model

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        c = self.config
        for n in self.encoder:  # frozen: no running statistic of the encoder moves either
            model.get_submodule(n).eval()
        with torch.no_grad():
            f = model.forward_until(x, self.cut).float()
        f_adv = head_attack(model, f, y, self.cut, steps=c.steps, step_size=c.step_size,
                            eps=c.eps, clamp=c.relu_clamp)
        with auxiliary_route(model):
            logits_adv = model.forward_after(f_adv, self.cut)
        logits = model.forward_after(f, self.cut)
        loss_adv, loss_clean = F.cross_entropy(logits_adv, y), F.cross_entropy(logits, y)
        return StepOutput(loss_adv + loss_clean, logits,
                          {"loss_adv": loss_adv.detach(), "loss_clean": loss_clean.detach()})

    def eval_model(self, model: nn.Module) -> nn.Module:
        return set_bn_route(model, "clean")
