"""What every classifier shares: the input `Normalize` layer (CIFAR statistics), the
`ImageClassifier` base with named stages, and helpers to reach the model inside wrappers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)
# Default input statistics; the CIFAR-100 ones differ by less than 0.02 per channel.
CIFAR_MEAN = CIFAR10_MEAN
CIFAR_STD = CIFAR10_STD

NormFactory = Callable[[int], nn.Module]



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
        if std_t.device.type != "meta" and bool((std_t <= 0).any()):  # meta: sizes only
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
            if any(p.is_meta for p in module.parameters(recurse=False)):
                continue  # built on the meta device for its shapes (studykit.preflight)
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


