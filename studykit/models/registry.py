"""CIFAR classifiers behind a timm-style registry.

`create_model(arch, num_classes, norm=...)` builds one of the architectures the papers use on
32x32 images (they also run on other sizes: the head pools adaptively):

- ``small_cnn``: 4 x (conv3x3-norm-ReLU), 16/32/64/64 channels; 61,338 parameters, 6.8 MFLOPs
  (3.4 M multiply-adds) per 32x32 image.
- ``resnet18``: CIFAR ResNet-18 (kuangliu/pytorch-cifar, AugMax code); 11,173,962.
- ``preact_resnet18``: pre-activation ResNet-18 (He et al. 2016b; Wong et al. 2020); 11,172,170.
- ``preact_resnet50``: pre-activation ResNet-50, the AdA model (after Wong et al.); 23,513,162.
- ``wrn40_2``: WideResNet-40-2 (AugMix and AugMax code); 2,243,546.
- ``resnext29``: ResNeXt-29 4x32d (AugMix and AugMax code); 6,807,882.
- ``resnet110``: CIFAR ResNet-110 (He et al. 2016a; MaxUp): 3 x 18 BasicBlocks, 16/32/64
  planes, 1x1 projection shortcuts; 1,730,714 (the paper's 1.7M).
- ``preact_resnet110``: its pre-activation version (He et al. 2016b; MaxUp's option); 1,730,522.
- ``wrn28_10``: WideResNet-28-10 (MaxUp's option); 36,479,194 (the paper's 36.5M).
- ``wrn50_2``: Wide ResNet-50-2 with a 3x3 stride-1 stem, no max-pool (RobustAugMix):
  torchvision's post-activation bottlenecks [3, 4, 6, 3] with a 2x inner width; 66,847,050
  (torchvision's 68.9M for ImageNet less the 1000-class head and the 7x7 stem).

(Parameter counts for 10 classes at the default width.)

Conventions every model follows:

* Inputs are images in [0, 1]; `Normalize` (the attribute ``normalize``) is the first layer.
* Every normalization layer is made by the ``norm`` factory (``num_features -> nn.Module``),
  and keeps the attribute name of the reference code (``layer1.0.bn1`` for ResNet-18,
  ``block1.0.bn1`` for WRN-40-2, ``stage_1.0.bn_reduce`` for ResNeXt-29), so that
  `studykit.normalization.convert_norm` can swap them in place by module type and place DuBIN
  by name (AugMax: ResNet-18 layer1-3 block ``bn1``; WRN-40-2 blocks 1-2; ResNeXt-29 stages 1-2).
* ``features(x)`` returns the pooled, flattened penultimate features; the last layer is the
  linear ``fc`` (its weight rows are the class templates); ``forward(x) == fc(features(x))``.
* The network can be split at any name in ``model.stages``:
  ``forward_after(forward_until(x, s), s) == forward(x)``. This is where AdvBN perturbs
  feature statistics. ``model.relu_stages`` lists the stages whose output ends with a ReLU
  (non-negative features), so a perturbation there should be clamped at 0.
* ``model.arch``, ``model.num_classes`` and ``model.width`` record how it was built.

Two deliberate choices, differing from some public copies:

* ``preact_resnet*`` end with a BN-ReLU before pooling, as in He et al. (2016b) and in Wong et
  al. (2020), whose pre-activation ResNet AdA trains. kuangliu/pytorch-cifar leaves it out
  (11,171,146 parameters for PreAct ResNet-18, 1,024 fewer).
* ReLUs are not in-place, so a feature tensor handed to ``forward_after`` (e.g. one that an
  attack differentiates) is never modified.

Convolutions get Kaiming-normal init (fan-out, ReLU gain) as in the AugMix and AugMax CIFAR
code; linear biases start at zero; normalization layers keep their own init.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from studykit.models.base import CIFAR_MEAN, CIFAR_STD, ImageClassifier, NormFactory

_MODEL_REGISTRY: dict[str, Callable[..., ImageClassifier]] = {}


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
def register_model(name: str) -> Callable[[Callable[..., ImageClassifier]], Callable]:
    """Register a model builder under ``name`` (timm style).

    The builder is called as ``builder(num_classes=..., norm_layer=..., width=..., mean=...,
    std=..., **kwargs)``, with ``width=None`` meaning its default width.

    Args:
        name: registry key, lower_snake (``"resnet18"``).

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def decorator(builder: Callable[..., ImageClassifier]) -> Callable[..., ImageClassifier]:
        if name in _MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _MODEL_REGISTRY[name] = builder
        return builder

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style pattern, sorted.

    Args:
        pattern: an `fnmatch` pattern, e.g. ``"*resnet*"``.

    Returns:
        The matching names, sorted.
    """
    return sorted(name for name in _MODEL_REGISTRY if fnmatch.fnmatchcase(name, pattern))


def _no_norm(num_features: int) -> nn.Module:
    return nn.Identity()


NORM_KINDS: dict[str, NormFactory] = {"bn": nn.BatchNorm2d, "none": _no_norm}


def resolve_norm(norm: str | NormFactory) -> NormFactory:
    """Turn a ``norm`` argument into a factory ``num_features -> nn.Module``.

    Args:
        norm: ``"bn"`` (BatchNorm2d), ``"none"`` (Identity) or any callable taking the number
            of channels and returning a module.

    Returns:
        The factory.

    Raises:
        ValueError: for an unknown string.
    """
    if isinstance(norm, str):
        if norm not in NORM_KINDS:
            raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(NORM_KINDS)}")
        return NORM_KINDS[norm]
    if not callable(norm):
        raise ValueError(f"norm must be one of {', '.join(NORM_KINDS)} or a callable, got {norm!r}")
    return norm


def create_model(
    arch: str,
    num_classes: int = 10,
    *,
    norm: str | NormFactory = "bn",
    width: int | None = None,
    mean: Sequence[float] | torch.Tensor = CIFAR_MEAN,
    std: Sequence[float] | torch.Tensor = CIFAR_STD,
    **kwargs,
) -> ImageClassifier:
    """Build a registered architecture.

    Args:
        arch: a name from `list_models` (``"resnet18"``, ``"wrn40_2"``, ...).
        num_classes: size of the output layer.
        norm: ``"bn"``, ``"none"`` or a factory ``num_features -> nn.Module`` used for every
            normalization layer.
        width: base width (channels of the first stage); ``None`` for the architecture's
            default (small_cnn 16, resnet18/preact/wrn50_2 64, resnet110 16, wrn40_2 32,
            wrn28_10 160, resnext29 64). Deeper stages
            scale with it.
        mean: per-channel input mean of the first-layer `Normalize`; its length sets the
            number of input channels.
        std: per-channel input std of the first-layer `Normalize`.
        **kwargs: architecture options: ``stem_stride`` (all; 2 for 64x64 Tiny ImageNet as in
            AugMax), ``drop_rate`` (wrn40_2), ``depth`` and ``widen_factor`` (wrn40_2),
            ``cardinality`` and ``base_width`` (resnext29).

    Returns:
        The model in train mode, on the CPU, with ``arch``, ``num_classes`` and ``width``
        attributes.

    Raises:
        ValueError: for an unknown arch or norm, or a bad ``num_classes``/``width``.
    """
    if arch not in _MODEL_REGISTRY:
        raise ValueError(f"unknown arch {arch!r}; choose one of: {', '.join(list_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise ValueError(f"width must be a positive int or None, got {width!r}")
    norm_layer = resolve_norm(norm)
    model = _MODEL_REGISTRY[arch](
        num_classes=num_classes, norm_layer=norm_layer, width=width, mean=mean, std=std, **kwargs
    )
    model.arch = arch
    return model
