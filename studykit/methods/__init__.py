"""The method interface and registry.

Every training method is one module in this package behind one interface, so the training loop
(``studykit.train.fit``) never branches on a method's name:

    @register_method("augmax")
    class AugMax(Method):
        Config = AugMaxConfig                          # frozen, keyword-only; paper defaults
        def prepare_model(self, model) -> nn.Module    # e.g. convert BN to DuBIN
        def training_step(self, model, x, y) -> StepOutput
        def eval_model(self, model) -> nn.Module       # e.g. route dual BN to the clean BN
        def set_progress(self, step, total_steps)      # optional: schedules (eps ramp, warm-up)

``create_method(name, **overrides)`` and ``list_methods(pattern)`` mirror timm's
``create_model``/``list_models``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from studykit.checks import check_dataclass_fields
from studykit.rng import device_generator

_REGISTRY: dict[str, type[Method]] = {}

# Modules that register methods on import; a method module added here is found by name.
_METHOD_MODULES = ("standard", "pgd_at", "augmix", "augmax", "augmax_baselines", "robust_augmix",
                  "maxup", "ada", "deepaugment", "advbn")


@dataclass(frozen=True)
class StepOutput:
    """What a training step returns.

    Attributes:
        loss: the scalar to minimize (the trainer calls ``backward`` on it).
        logits: logits of the batch the loss is on (the clean one where there is one), for
            the running training accuracy.
        metrics: extra scalars to log, averaged per epoch by the trainer: 0-dim tensors on
            the device (the trainer reads them once per epoch, so a step never waits for the
            device to log) or Python floats.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Base of every method's Config; a method adds its own fields with paper defaults.

    Options are checked by type (from the annotations) and range before the Config is built
    (``studykit.checks``): a numeric option must be finite and >= 0 unless the Config's
    ``RANGES`` (a class attribute, name -> ``studykit.checks.Range``) says otherwise, and
    ``CHOICES`` (name -> tuple) lists the allowed values of a string option.
    """

    RANGES: ClassVar[dict[str, Any]] = {}
    CHOICES: ClassVar[dict[str, tuple]] = {}


class Method:
    """Base class: identity model preparation, plain cross-entropy step, model as-is for eval.

    A method draws its random numbers (augmentations, attack starts) from ``self.generator``,
    which the trainer seeds from the run's seed and saves in checkpoints.
    """

    name: ClassVar[str] = "base"
    Config: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        if config is not None and overrides:
            raise ValueError("pass either a config or keyword overrides, not both")
        if config is None:
            allowed = {f.name for f in dataclasses.fields(self.Config)}
            unknown = sorted(set(overrides) - allowed)
            if unknown:
                raise ValueError(
                    f"unknown option(s) {unknown} for method {self.name!r}; "
                    f"allowed: {', '.join(sorted(allowed)) or '(none)'}"
                )
            # Type and range of every option from the Config's annotations and RANGES, before
            # the Config's own checks run on a value of the wrong type.
            check_dataclass_fields(self.Config, overrides)
            config = self.Config(**overrides)
        self.config = config
        self.generator = torch.Generator().manual_seed(0)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def rng(self, device: torch.device | str) -> torch.Generator:
        """The generator to draw a step's random numbers with on ``device``: ``self.generator``
        on the CPU; on a GPU one seeded from it (``studykit.rng.device_generator``), so draws
        happen on the device with no host-to-device copy and stay reproducible."""
        return device_generator(self.generator, device)

    def set_progress(self, step: int, total_steps: int) -> None:
        """Training progress, called by the loop before every step with the global step
        (0-based) and the total number of steps. What a method derives from it (PGD-AT's eps
        ramp, a warm-up of plain augmentation) must be a pure function of these two numbers,
        so a resumed run equals an uninterrupted one. Default: ignored."""

    def setup(self, dataset: Any, *, data_key: str, device: torch.device | str = "cpu",
              runs_root: Any = None, progress: bool = False) -> None:
        """Called by ``run_experiment`` before training (fresh or resumed) with the training
        data and its fingerprint: a method that needs a pretrained network of its own (AdA's
        corruption network) gets it from the run store here. Default: nothing."""

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        raise NotImplementedError

    def eval_model(self, model: nn.Module) -> nn.Module:
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a Method subclass under ``name`` (lower_snake)."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {_REGISTRY[name]}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_all() -> None:
    for mod in _METHOD_MODULES:
        importlib.import_module(f"{__name__}.{mod}")


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching the fnmatch ``pattern``, sorted."""
    _load_all()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_method_class(name: str) -> type[Method]:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(list_methods())}")
    return _REGISTRY[name]


def create_method(name: str, **overrides: Any) -> Method:
    """Instantiate a registered method with Config overrides (errors name the allowed keys)."""
    return get_method_class(name)(**overrides)


def method_config_fields(name: str) -> dict[str, Any]:
    """The Config fields of method ``name`` with their defaults."""
    cls = get_method_class(name)
    return {f.name: f.default for f in dataclasses.fields(cls.Config)}
