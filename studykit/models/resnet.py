"""CIFAR ResNets: ResNet-18, the three-stage ResNet-110 of He et al. (2016a), pre-activation
ResNets (He et al. 2016b) and the bottleneck Wide ResNet-50-2 (Zagoruyko & Komodakis 2016).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from studykit.models.base import (
    CIFAR_MEAN,
    CIFAR_STD,
    ImageClassifier,
    NormFactory,
    _conv1x1,
    _conv3x3,
)
from studykit.models.registry import register_model


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


class Bottleneck(nn.Module):
    """Post-activation bottleneck (torchvision, "ResNet v1.5": the stride is on the 3x3 conv):
    conv1x1-bn1-relu, conv3x3-bn2-relu, conv1x1-bn3, add shortcut, relu.

    The inner width is ``planes * widen`` (``widen = 2`` in `WideBottleneck`); the output has
    ``planes * 4`` channels. ``shortcut`` is conv1x1 + norm when the shape changes.
    """

    expansion = 4
    widen = 1

    def __init__(self, in_ch: int, planes: int, stride: int, norm_layer: NormFactory) -> None:
        super().__init__()
        inner, out_ch = planes * self.widen, planes * self.expansion
        self.conv1 = _conv1x1(in_ch, inner)
        self.bn1 = norm_layer(inner)
        self.conv2 = _conv3x3(inner, inner, stride)
        self.bn2 = norm_layer(inner)
        self.conv3 = _conv1x1(inner, out_ch)
        self.bn3 = norm_layer(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(_conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class WideBottleneck(Bottleneck):
    """`Bottleneck` with a twice-as-wide inner 3x3 (Wide ResNet-50-2)."""

    widen = 2


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b): bn-relu-conv-bn-relu-conv + shortcut."""

    expansion = 1
    preact = True

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
    preact = True

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
    """CIFAR ResNet: 3x3 stride-1 stem, no max-pool, one stage per entry of ``num_blocks``
    (``layer1``, ``layer2``, ...) of w/2w/4w/... planes (four for ResNet-18/50, three for
    ResNet-110).

    ``preact=False`` is the post-activation ResNet of kuangliu/pytorch-cifar and AugMax
    (stem conv1-bn1-relu; ``layerK.i.bn1/bn2``; ``shortcut`` = conv1x1 + norm).
    ``preact=True`` is the pre-activation ResNet (stem = conv1 only; blocks start with
    bn1-relu; projection shortcuts are a bare conv1x1; a final ``bn``-ReLU before pooling).

    Args:
        block: `BasicBlock`, `Bottleneck`/`WideBottleneck` (post-activation) or `PreActBlock`,
            `PreActBottleneck` (pre-activation: their class has ``preact = True``).
        num_blocks: blocks per stage.
        num_classes: outputs.
        norm_layer: normalization factory.
        width: planes of the first stage (default ``default_width``).
        mean: input mean.
        std: input std.
        stem_stride: stride of the stem conv (2 for 64x64 inputs as in AugMax).
        default_width: the first stage's planes when ``width`` is None (64; 16 for ResNet-110).
    """

    stages = ("stem", "layer1", "layer2", "layer3", "layer4")  # per instance: one per stage

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
        default_width: int = 64,
    ) -> None:
        w = width or default_width
        super().__init__(num_classes, w, mean, std)
        self.stages = ("stem", *(f"layer{i + 1}" for i in range(len(num_blocks))))
        self.preact = bool(getattr(block, "preact", False))
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


@register_model("resnet110")
def resnet110(**kwargs) -> ResNet:
    """CIFAR ResNet-110 of He et al. (2016a), MaxUp's network: 3 stages of 18 BasicBlocks,
    16/32/64 planes; 1,730,714 parameters for 10 classes (1x1 projection shortcuts, 2,752
    more than the paper's parameter-free option A: 1.7M either way)."""
    kwargs["width"] = kwargs.get("width") or 16
    return ResNet(BasicBlock, (18, 18, 18), **kwargs)


@register_model("preact_resnet110")
def preact_resnet110(**kwargs) -> ResNet:
    """Pre-activation ResNet-110 (He et al. 2016b): 3 stages of 18 `PreActBlock`, 16/32/64
    planes, final BN-ReLU; 1,730,522 parameters for 10 classes."""
    kwargs["width"] = kwargs.get("width") or 16
    return ResNet(PreActBlock, (18, 18, 18), **kwargs)


@register_model("wrn50_2")
def wrn50_2(**kwargs) -> ResNet:
    """Wide ResNet-50-2 for 32x32 inputs (RobustAugMix): torchvision's ``wide_resnet50_2``
    (post-activation bottlenecks [3, 4, 6, 3], inner 3x3 twice as wide, 2048 features) with the
    CIFAR stem (3x3 stride-1 conv, no max-pool); 66,847,050 parameters for 10 classes."""
    return ResNet(WideBottleneck, (3, 4, 6, 3), **kwargs)
