"""ResNeXt-29 (Xie et al. 2017) as in the AugMix and AugMax CIFAR code.
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


