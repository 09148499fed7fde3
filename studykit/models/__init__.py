"""CIFAR classifiers behind a timm-style registry: `create_model(arch, num_classes, norm=...)`,
`list_models(pattern)`, `register_model(name)`.

One family per module (:mod:`~studykit.models.small_cnn`, :mod:`~studykit.models.resnet`,
:mod:`~studykit.models.wide_resnet`, :mod:`~studykit.models.resnext`); importing this package
registers them all. :mod:`~studykit.models.base` holds what they share (the input
normalization, named stages, the ``features``/``fc`` split); the conventions every model follows
are in :mod:`~studykit.models.registry`.
"""

from studykit.models import resnet, resnext, small_cnn, wide_resnet  # noqa: F401  (registers)
from studykit.models.base import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    CIFAR_MEAN,
    CIFAR_STD,
    ImageClassifier,
    Normalize,
    penultimate_features,
    unwrap_model,
)
from studykit.models.registry import (
    NORM_KINDS,
    create_model,
    list_models,
    register_model,
    resolve_norm,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "NORM_KINDS",
    "ImageClassifier",
    "Normalize",
    "create_model",
    "list_models",
    "penultimate_features",
    "register_model",
    "resolve_norm",
    "unwrap_model",
]
