"""``small_cnn``: a few conv-norm-ReLU layers, for smoke and quick runs on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from studykit.models.base import CIFAR_MEAN, CIFAR_STD, ImageClassifier, NormFactory, _conv3x3
from studykit.models.registry import register_model


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

    About 6.8 MFLOPs (3.4 M multiply-adds) per 32x32 image at width 16, a quarter of that at
    the width 8 of the ``smoke`` and ``quick`` profiles: the model of those profiles on CPU.
    (At width 16 and 15 epochs a three-stage version without the 4x4 stage reached about 32%
    on the synthetic set, the four-stage one 71%.)

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


@register_model("small_cnn")
def small_cnn(**kwargs) -> SmallCNN:
    """Three-stage conv net (16/32/64 channels) for smoke and quick runs on CPU."""
    return SmallCNN(**kwargs)
