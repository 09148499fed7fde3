"""Wide ResNets (Zagoruyko & Komodakis 2016) for 32x32 inputs.
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


@register_model("wrn28_10")
def wrn28_10(**kwargs) -> WideResNet:
    """WideResNet-28-10 (Zagoruyko & Komodakis 2016; MaxUp's option); 36,479,194 parameters
    for 10 classes."""
    return WideResNet(depth=28, widen_factor=10, **kwargs)
