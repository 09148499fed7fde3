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
import torch.nn.functional as F

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "NORM_KINDS",
    "Normalize",
    "ImageClassifier",
    "create_model",
    "list_models",
    "penultimate_features",
    "register_model",
    "resolve_norm",
    "unwrap_model",
]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)
# Default input statistics; the CIFAR-100 ones differ by less than 0.02 per channel.
CIFAR_MEAN = CIFAR10_MEAN
CIFAR_STD = CIFAR10_STD

NormFactory = Callable[[int], nn.Module]

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
            default (small_cnn 16, resnet18/preact 64, wrn40_2 32, resnext29 64). Deeper stages
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


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features right before the final linear layer ``fc``.

    Unwraps ``DataParallel``/``DistributedDataParallel`` (``.module``) and ``torch.compile``
    (``._orig_mod``) and calls ``features`` of the model inside, on the caller's device.
    Gradients flow as usual; wrap in ``torch.no_grad()`` for analysis.

    Args:
        model: a model from `create_model`, possibly wrapped.
        x: images in [0, 1].

    Returns:
        The features.

    Shape:
        - x: (N, C, H, W)
        - output: (N, D), D = ``model.fc.in_features``
    """
    inner = unwrap_model(model)
    if not hasattr(inner, "features") or not callable(inner.features):
        raise TypeError(f"{type(inner).__name__} has no features(x) method")
    return inner.features(x)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DataParallel/DistributedDataParallel/torch.compile wrappers.

    Args:
        model: a module, possibly wrapped (several times).

    Returns:
        The innermost module.
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------
class Normalize(nn.Module):
    """Per-channel standardization ``(x - mean) / std``: the first layer of every model.

    Keeping it inside the model lets attacks, corruptions and augmentations all work in [0, 1]
    pixel space. ``mean`` and ``std`` are buffers (saved in the state dict, moved by ``.to``).

    Args:
        mean: per-channel means.
        std: per-channel standard deviations (all > 0).

    Shape:
        - x: (N, C, H, W) with C = len(mean)
        - output: same as x
    """

    def __init__(
        self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ValueError(
                f"mean and std need the same, non-zero length; got {mean_t.numel()} and "
                f"{std_t.numel()}"
            )
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1).clone())
        self.register_buffer("std", std_t.view(1, -1, 1, 1).clone())

    @property
    def num_channels(self) -> int:
        """Number of input channels."""
        return self.mean.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4f}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4f}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class ImageClassifier(nn.Module):
    """Base class: input `Normalize`, named stages, global average pooling, linear ``fc``.

    Subclasses build ``self.fc``, list their stage names in ``stages`` (in forward order),
    make each name an attribute (a module, or a method such as ``stem``), and optionally
    override `pre_pool` (the final norm-ReLU of pre-activation networks).

    Attributes:
        normalize: the input `Normalize`.
        fc: the final ``nn.Linear``.
        stages: the stage names, where the network can be split.
        relu_stages: the stages whose output ends with a ReLU.
        arch: registry name (set by `create_model`).
        num_classes: number of outputs.
        width: base width.
    """

    stages: tuple[str, ...] = ()
    relu_stages: frozenset[str] = frozenset()

    def __init__(
        self,
        num_classes: int,
        width: int,
        mean: Sequence[float] | torch.Tensor,
        std: Sequence[float] | torch.Tensor,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.arch = type(self).__name__
        self.num_classes = num_classes
        self.width = width

    @property
    def in_channels(self) -> int:
        """Number of input channels (the length of ``normalize.mean``)."""
        return self.normalize.num_channels

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def _check_stage(self, stage: str) -> int:
        if stage not in self.stages:
            raise ValueError(
                f"unknown stage {stage!r} for {self.arch}; choose one of: {', '.join(self.stages)}"
            )
        return self.stages.index(stage)

    def forward_until(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        """Run the network from the input image through the end of ``stage``.

        Args:
            x: images in [0, 1].
            stage: a name from ``self.stages``.

        Returns:
            The feature map at the end of ``stage``.

        Shape:
            - x: (N, C, H, W)
            - output: (N, C_s, H_s, W_s)
        """
        last = self._check_stage(stage)
        h = self.normalize(x)
        for name in self.stages[: last + 1]:
            h = getattr(self, name)(h)
        return h

    def forward_after(self, h: torch.Tensor, stage: str) -> torch.Tensor:
        """Run the rest of the network on the output of ``stage`` and return the logits.

        ``forward_after(forward_until(x, stage), stage)`` equals ``forward(x)``. ``h`` is not
        modified in place.

        Args:
            h: a feature map as returned by ``forward_until(x, stage)``.
            stage: a name from ``self.stages``.

        Returns:
            The logits.

        Shape:
            - h: (N, C_s, H_s, W_s)
            - output: (N, num_classes)
        """
        first = self._check_stage(stage) + 1
        for name in self.stages[first:]:
            h = getattr(self, name)(h)
        return self.fc(self.pool(h))

    def pre_pool(self, h: torch.Tensor) -> torch.Tensor:
        """What runs between the last stage and the pooling (identity unless overridden)."""
        return h

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """`pre_pool`, global average pooling and flattening of the last stage's output.

        Shape:
            - h: (N, D, H, W)
            - output: (N, D)
        """
        return torch.flatten(F.adaptive_avg_pool2d(self.pre_pool(h), 1), 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: pooled and flattened, the input of ``fc``.

        Args:
            x: images in [0, 1].

        Returns:
            The features.

        Shape:
            - x: (N, C, H, W)
            - output: (N, D), D = ``fc.in_features``
        """
        return self.pool(self.forward_until(x, self.stages[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``fc(features(x))`` of images in [0, 1].

        Shape:
            - x: (N, C, H, W)
            - output: (N, num_classes)
        """
        return self.fc(self.features(x))


# --------------------------------------------------------------------------------------------
# small_cnn
# --------------------------------------------------------------------------------------------
class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` with a faster CPU path for forwards that build no graph.

    PyTorch's CPU max-pool kernel without indices is several times slower than a maximum of the
    four strided sub-grids (about 13 ms against 2-3 ms on a 384x16x32x32 batch), and it is what
    every evaluation, certification and MaxUp selection forward runs. The values are identical
    (a maximum is exact, NaN propagates in both); a forward that needs gradients, an odd size
    or a non-CPU device keeps ``F.max_pool2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        needs_graph = torch.is_grad_enabled() and x.requires_grad
        if needs_graph or x.device.type != "cpu" or x.shape[-1] % 2 or x.shape[-2] % 2:
            return F.max_pool2d(x, 2)
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


class ConvNormAct(nn.Module):
    """Optional 2x2 max-pool, then conv3x3-norm-ReLU."""

    def __init__(
        self, in_ch: int, out_ch: int, norm_layer: NormFactory, pool: bool = False, stride: int = 1
    ) -> None:
        super().__init__()
        self.pool = MaxPool2x2() if pool else nn.Identity()
        self.conv = _conv3x3(in_ch, out_ch, stride)
        self.bn = norm_layer(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(self.pool(x))))


class SmallCNN(ImageClassifier):
    """Four conv3x3-norm-ReLU stages (w, 2w, 4w, 4w channels), max-pooling before stages 2-4.

    About 6.8 MFLOPs (3.4 M multiply-adds) per 32x32 image at width 16: the model of the
    ``smoke`` and ``quick`` profiles on CPU. (A three-stage version without the 4x4 stage
    reached only about 32% on the synthetic set in the quick budget, the four-stage one 71%.)

    Args:
        num_classes: outputs.
        norm_layer: normalization factory.
        width: channels of the first stage (default 16).
        mean: input mean (its length sets the input channels).
        std: input std.
        stem_stride: stride of the first convolution.
    """

    stages = ("layer1", "layer2", "layer3", "layer4")
    relu_stages = frozenset(stages)

    def __init__(
        self,
        num_classes: int,
        norm_layer: NormFactory,
        width: int | None = None,
        mean: Sequence[float] | torch.Tensor = CIFAR_MEAN,
        std: Sequence[float] | torch.Tensor = CIFAR_STD,
        stem_stride: int = 1,
    ) -> None:
        w = width or 16
        super().__init__(num_classes, w, mean, std)
        self.layer1 = ConvNormAct(self.in_channels, w, norm_layer, stride=stem_stride)
        self.layer2 = ConvNormAct(w, 2 * w, norm_layer, pool=True)
        self.layer3 = ConvNormAct(2 * w, 4 * w, norm_layer, pool=True)
        self.layer4 = ConvNormAct(4 * w, 4 * w, norm_layer, pool=True)
        self.fc = nn.Linear(4 * w, num_classes)
        self._init_weights()


# --------------------------------------------------------------------------------------------
# ResNet-18 (CIFAR) and pre-activation ResNets
# --------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Post-activation basic block: conv-bn-relu-conv-bn, add shortcut, relu."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, norm_layer: NormFactory) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != planes:
            self.shortcut = nn.Sequential(_conv1x1(in_ch, planes, stride), norm_layer(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b): bn-relu-conv-bn-relu-conv + shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, norm_layer: NormFactory) -> None:
        super().__init__()
        self.bn1 = norm_layer(in_ch)
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != planes:
            self.shortcut = nn.Sequential(_conv1x1(in_ch, planes, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # A projection shortcut takes the pre-activated input, as in He et al. (2016b).
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: bn-relu-conv1x1, bn-relu-conv3x3, bn-relu-conv1x1 (x4)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, norm_layer: NormFactory) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.bn1 = norm_layer(in_ch)
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn2 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = norm_layer(planes)
        self.conv3 = _conv1x1(planes, out_ch)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(_conv1x1(in_ch, out_ch, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class ResNet(ImageClassifier):
    """CIFAR ResNet: 3x3 stride-1 stem, no max-pool, four stages of w/2w/4w/8w planes.

    ``preact=False`` is the post-activation ResNet of kuangliu/pytorch-cifar and AugMax
    (stem conv1-bn1-relu; ``layerK.i.bn1/bn2``; ``shortcut`` = conv1x1 + norm).
    ``preact=True`` is the pre-activation ResNet (stem = conv1 only; blocks start with
    bn1-relu; projection shortcuts are a bare conv1x1; a final ``bn``-ReLU before pooling).

    Args:
        block: `BasicBlock`, `PreActBlock` or `PreActBottleneck`.
        num_blocks: blocks per stage.
        num_classes: outputs.
        norm_layer: normalization factory.
        width: planes of the first stage (default 64).
        mean: input mean.
        std: input std.
        stem_stride: stride of the stem conv (2 for 64x64 inputs as in AugMax).
    """

    stages = ("stem", "layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        block: type[nn.Module],
        num_blocks: Sequence[int],
        num_classes: int,
        norm_layer: NormFactory,
        width: int | None = None,
        mean: Sequence[float] | torch.Tensor = CIFAR_MEAN,
        std: Sequence[float] | torch.Tensor = CIFAR_STD,
        stem_stride: int = 1,
    ) -> None:
        w = width or 64
        super().__init__(num_classes, w, mean, std)
        self.preact = block is not BasicBlock
        self.relu_stages = frozenset() if self.preact else frozenset(self.stages)
        self.conv1 = _conv3x3(self.in_channels, w, stem_stride)
        self.bn1 = None if self.preact else norm_layer(w)
        in_ch = w
        for i, n in enumerate(num_blocks):
            planes = w * 2**i
            layer = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layer.append(block(in_ch, planes, stride, norm_layer))
                in_ch = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
        self.bn = norm_layer(in_ch) if self.preact else None
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The 3x3 stem conv (with bn1-ReLU in the post-activation ResNet)."""
        out = self.conv1(x)
        return out if self.bn1 is None else F.relu(self.bn1(out))

    def pre_pool(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.bn is None else F.relu(self.bn(h))


@register_model("resnet18")
def resnet18(**kwargs) -> ResNet:
    """CIFAR ResNet-18 (BasicBlocks [2, 2, 2, 2]); 11,173,962 parameters for 10 classes."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model("preact_resnet18")
def preact_resnet18(**kwargs) -> ResNet:
    """PreAct ResNet-18 with the final BN-ReLU; 11,172,170 parameters for 10 classes."""
    return ResNet(PreActBlock, (2, 2, 2, 2), **kwargs)


@register_model("preact_resnet50")
def preact_resnet50(**kwargs) -> ResNet:
    """PreAct ResNet-50 (bottlenecks [3, 4, 6, 3]); 23,513,162 parameters for 10 classes."""
    return ResNet(PreActBottleneck, (3, 4, 6, 3), **kwargs)


# --------------------------------------------------------------------------------------------
# WideResNet
# --------------------------------------------------------------------------------------------
class WideBasicBlock(nn.Module):
    """WRN block (AugMix code): bn1-relu-conv1, bn2-relu-(dropout)-conv2, add shortcut.

    When the shape changes, the 1x1 ``conv_shortcut`` takes the pre-activated input.
    """

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, norm_layer: NormFactory, drop_rate: float
    ) -> None:
        super().__init__()
        self.bn1 = norm_layer(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = norm_layer(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.drop_rate = drop_rate
        self.conv_shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.conv_shortcut = _conv1x1(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class WideResNet(ImageClassifier):
    """WideResNet-depth-k for CIFAR, as in the AugMix and AugMax code.

    Stem conv1 (16 channels), ``block1..3`` of (depth-4)/6 `WideBasicBlock` each with
    w/2w/4w channels (w = 16k), then the final ``bn1``-ReLU, pooling and ``fc``.

    Args:
        num_classes: outputs.
        norm_layer: normalization factory.
        width: channels of block1 (default 16 * widen_factor = 32).
        mean: input mean.
        std: input std.
        depth: 6n + 4 (default 40).
        widen_factor: k, used when ``width`` is None (default 2).
        drop_rate: dropout inside blocks (default 0, as AugMix).
        stem_stride: stride of the stem conv.
    """

    stages = ("stem", "block1", "block2", "block3")

    def __init__(
        self,
        num_classes: int,
        norm_layer: NormFactory,
        width: int | None = None,
        mean: Sequence[float] | torch.Tensor = CIFAR_MEAN,
        std: Sequence[float] | torch.Tensor = CIFAR_STD,
        depth: int = 40,
        widen_factor: int = 2,
        drop_rate: float = 0.0,
        stem_stride: int = 1,
    ) -> None:
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 (n >= 1), got {depth}")
        w = width or 16 * widen_factor
        super().__init__(num_classes, w, mean, std)
        n = (depth - 4) // 6
        self.conv1 = _conv3x3(self.in_channels, 16, stem_stride)
        in_ch = 16
        for i in range(3):
            out_ch = w * 2**i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(WideBasicBlock(in_ch, out_ch, stride, norm_layer, drop_rate))
                in_ch = out_ch
            self.add_module(f"block{i + 1}", nn.Sequential(*blocks))
        self.bn1 = norm_layer(in_ch)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The 3x3 stem conv (no norm: every WRN block starts with one)."""
        return self.conv1(x)

    def pre_pool(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(h))


@register_model("wrn40_2")
def wrn40_2(**kwargs) -> WideResNet:
    """WideResNet-40-2; 2,243,546 parameters for 10 classes."""
    return WideResNet(**kwargs)


# --------------------------------------------------------------------------------------------
# ResNeXt
# --------------------------------------------------------------------------------------------
class ResNeXtBottleneck(nn.Module):
    """ResNeXt bottleneck, type C (grouped 3x3 conv), as in the AugMix code.

    Inner width D = cardinality * floor(planes * base_width / 64); output planes * 4.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int,
        norm_layer: NormFactory,
        cardinality: int,
        base_width: int,
    ) -> None:
        super().__init__()
        inner = cardinality * (planes * base_width // 64)
        out_ch = planes * self.expansion
        self.conv_reduce = _conv1x1(in_ch, inner)
        self.bn_reduce = norm_layer(inner)
        self.conv_conv = _conv3x3(inner, inner, stride, groups=cardinality)
        self.bn = norm_layer(inner)
        self.conv_expand = _conv1x1(inner, out_ch)
        self.bn_expand = norm_layer(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNeXt(ImageClassifier):
    """ResNeXt for CIFAR (Xie et al. 2017), as in the AugMix and AugMax code.

    Stem ``conv_1_3x3``-``bn_1``-ReLU (w channels), then ``stage_1..3`` of (depth-2)/9
    bottlenecks with planes w/2w/4w, i.e. outputs 4w/8w/16w (256/512/1024 at w = 64).

    Args:
        num_classes: outputs.
        norm_layer: normalization factory.
        width: stem channels and planes of stage_1 (default 64).
        mean: input mean.
        std: input std.
        depth: 9n + 2 (default 29).
        cardinality: groups of the 3x3 convs (default 4).
        base_width: channels per group at planes = 64 (default 32).
        stem_stride: stride of the stem conv.
    """

    stages = ("stem", "stage_1", "stage_2", "stage_3")
    relu_stages = frozenset(stages)

    def __init__(
        self,
        num_classes: int,
        norm_layer: NormFactory,
        width: int | None = None,
        mean: Sequence[float] | torch.Tensor = CIFAR_MEAN,
        std: Sequence[float] | torch.Tensor = CIFAR_STD,
        depth: int = 29,
        cardinality: int = 4,
        base_width: int = 32,
        stem_stride: int = 1,
    ) -> None:
        if (depth - 2) % 9 != 0 or depth < 11:
            raise ValueError(f"ResNeXt depth must be 9n + 2 (n >= 1), got {depth}")
        w = width or 64
        if w * base_width // 64 < 1:
            raise ValueError(f"width {w} with base_width {base_width} leaves no group channels")
        super().__init__(num_classes, w, mean, std)
        n = (depth - 2) // 9
        self.conv_1_3x3 = _conv3x3(self.in_channels, w, stem_stride)
        self.bn_1 = norm_layer(w)
        in_ch = w
        for i in range(3):
            planes = w * 2**i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(
                    ResNeXtBottleneck(in_ch, planes, stride, norm_layer, cardinality, base_width)
                )
                in_ch = planes * ResNeXtBottleneck.expansion
            self.add_module(f"stage_{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv_1_3x3-bn_1-ReLU."""
        return F.relu(self.bn_1(self.conv_1_3x3(x)))


@register_model("resnext29")
def resnext29(**kwargs) -> CifarResNeXt:
    """ResNeXt-29 (4x32d, AugMix); 6,807,882 parameters for 10 classes."""
    return CifarResNeXt(**kwargs)


@register_model("small_cnn")
def small_cnn(**kwargs) -> SmallCNN:
    """Three-stage conv net (16/32/64 channels) for smoke and quick runs on CPU."""
    return SmallCNN(**kwargs)
