"""The method interface (`Method`, its `Config` base, `StepOutput`, `MethodContext`) and the
registry (`register_method`, `create_method`, `list_methods`); see the package docstring."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from studykit.checks import check_dataclass_fields
from studykit.rng import device_generator

_REGISTRY: dict[str, type[Method]] = {}


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
    ``HASH_AT_DEFAULT_OMITTED`` names options added after runs were stored: `record` leaves
    them out while they are at their default, so those runs keep their hash.
    """

    RANGES: ClassVar[dict[str, Any]] = {}
    CHOICES: ClassVar[dict[str, tuple]] = {}
    HASH_AT_DEFAULT_OMITTED: ClassVar[tuple[str, ...]] = ()

    def record(self) -> dict[str, Any]:
        """The options as a run's config stores them (and so as its hash sees them): every
        field, except those of ``HASH_AT_DEFAULT_OMITTED`` that are at their default. A Config
        whose options depend on each other may leave out more (those this configuration does
        not use), so the runs stored before an option existed keep their hashes."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in self.HASH_AT_DEFAULT_OMITTED and v == defaults[k])}


@dataclass(frozen=True, kw_only=True)
class MethodContext:
    """What ``run_experiment`` hands a method before training (`Method.prepare`).

    Attributes:
        dataset: the training data (a ``studykit.data.ImageDataset``).
        data_key: its fingerprint (``studykit.experiment.data_fingerprint``), computed once.
        device: where training runs.
        store: the run store, ``store(config) -> run`` (``studykit.runs.RunStore``), where a
            network the method pretrains is kept; None: pretrained here and not stored.
        progress: whether to show progress bars.
    """

    dataset: Any
    data_key: str
    device: torch.device
    store: Callable[[Mapping[str, Any]], Any] | None = None
    progress: bool = False


class Method:
    """Base class: identity model preparation, plain cross-entropy step, model as-is for eval.

    A method draws its random numbers (augmentations, attack starts) from ``self.generator``,
    which the trainer seeds from the run's seed and saves in checkpoints.

    A method that fine-tunes a trained base run (``finetunes = True``; AdvBN) declares its
    training schedule (`finetune_schedule`, `milestones`) and which run it starts from
    (`base_method`); ``run_experiment`` trains or loads that run and hands it over (`set_base`).
    """

    name: ClassVar[str] = "base"
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    finetunes: ClassVar[bool] = False

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

    def prepare(self, context: MethodContext) -> None:
        """Called by ``run_experiment`` before training (fresh or resumed) with what it knows:
        the training data and its fingerprint, the device, the run store. A method that needs a
        pretrained network of its own (AdA's corruption network) gets it here, from
        ``context.store``. Default: nothing."""

    def setup(self, dataset: Any, *, data_key: str, device: torch.device | str = "cpu",
              runs_root: Any = None, progress: bool = False) -> None:
        """`prepare` outside ``run_experiment`` (a notebook's figures): the context of
        ``dataset`` with the run store at ``runs_root`` (default: the project's)."""
        from studykit.runs import RunStore

        self.prepare(MethodContext(dataset=dataset, data_key=data_key,
                                   device=torch.device(device), store=RunStore(runs_root),
                                   progress=progress))

    @staticmethod
    def finetune_schedule(profile_epochs: int) -> dict[str, Any]:
        """A fine-tuning method's training settings for a profile with ``profile_epochs``
        epochs (they replace the profile's unless given explicitly). Default: none."""
        return {}

    @staticmethod
    def milestones(epochs: int) -> list[float]:
        """A fine-tuning method's multistep milestones for ``epochs`` epochs. Default: none."""
        return []

    @property
    def base_method(self) -> str | None:
        """The registry key of the run a fine-tuning method starts from; None: from scratch."""
        return None

    def set_base(self, base_method: Method, state: dict[str, torch.Tensor]) -> None:
        """The trained base run's method and weights (before `prepare_model`)."""
        raise TypeError(f"method {self.name!r} does not fine-tune a base run")

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


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching the fnmatch ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_method_class(name: str) -> type[Method]:
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
