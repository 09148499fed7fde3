"""Dual and instance-batch normalization layers, and converters that put them into a model.

Layers:

* `DualBN` (DuBN; Xie et al. 2020, AdvProp): two BatchNorm2d, ``bn_clean`` (main) and
  ``bn_aug`` (auxiliary). The ``route`` attribute (``"clean"`` or ``"aug"``, default
  ``"clean"``) picks which one a forward uses, and so which running statistics it updates.
  AugMax sends AugMax images through the auxiliary BN and clean/AugMix images through the
  main one; AdvBN fine-tuning sends the adversarially shifted features through the auxiliary
  BN, initialized as a copy of the clean one (`DualBN.from_bn`).
* `DuBIN` (AugMax, Wang et al. 2021, Fig. 3): the first ``int(C * in_ratio)`` channels go
  through one ``InstanceNorm2d(affine=True)`` shared by both routes (attribute ``IN``), the
  rest through a `DualBN` (attribute ``BN``); the halves are concatenated. This is IBN-a with
  its BN half replaced by DuBN, as in the AugMax reference code.
* `IBN` (IBN-a, Pan et al. 2018): the same split with a single BatchNorm2d.

`convert_norm(model, kind)` swaps a model's BatchNorm2d layers in place:

* ``"bn"``: nothing changes.
* ``"dubn"``: every BatchNorm2d becomes a `DualBN`, both BNs copies of the original.
* ``"dubin"``: `DuBIN` at the placement below, `DualBN` everywhere else.
* ``"ibn"``: `IBN` at the placement below, BatchNorm2d everywhere else.

Placement of DuBIN/IBN (checked against the AugMax reference code, VITA-Group/AugMax,
``models/cifar10/*_DuBIN.py``, which uses the IBN-a flag ``'a'`` in these stages):

* ``resnet18``: the first BN of every BasicBlock in ``layer1``-``layer3``:
  ``layer{1,2,3}.{0,1}.bn1`` (6 layers; the stem ``bn1``, ``bn2`` and shortcut BNs stay DuBN).
* ``wrn40_2``: the first BN (pre-activation, on the block input) of every block in ``block1``
  and ``block2``: ``block{1,2}.{0..5}.bn1`` (12 layers).
* ``resnext29``: the BN after the 1x1 reduce conv of every bottleneck in ``stage_1`` and
  ``stage_2``: ``stage_{1,2}.{0,1,2}.bn_reduce`` (6 layers).

Defaults of this package (not in the paper) for the other architectures, by analogy:

* ``preact_resnet18``/``preact_resnet50``: ``layer{1,2,3}.*.bn1`` (the first norm of each
  block in the first three of four stages, as for ResNet-18).
* ``wrn50_2``: ``layer{1,2,3}.*.bn1`` (the BN after each bottleneck's 1x1 reduce conv, as
  for ResNeXt-29, in the first three of four stages, as for ResNet-18).
* ``resnet110``/``preact_resnet110``/``wrn28_10``: the first BN of every block in the first two
  of their three stages (``layer{1,2}.*.bn1``, ``block{1,2}.*.bn1``), as AugMax does for the
  three-stage WRN-40-2.
* ``small_cnn``: ``layer{1,2,3}.bn``. It has four stages (w, 2w, 4w, 4w channels at 32, 16,
  8 and 4 pixels), one conv-norm each, like ResNet-18's four stages of blocks; DuBIN goes where
  ResNet-18 has it, in the first three stages, and the last (4x4) stage stays DuBN.

Any other model needs an explicit ``placement``: module names, or patterns in which ``*`` (or
any `fnmatch` wildcard) matches within one dotted component (``"layer1.*.bn1"``).

Routing: `set_bn_route(model, route)` sets every dual layer; the `bn_route` context manager
does it for a block of code and restores the previous routes afterwards. Evaluation uses the
clean (main) BN unless a caller routes otherwise.

The mean running variance of the main and auxiliary BN of every layer (AugMax Table 1) is
`studykit.analysis.bn_running_variance`.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from studykit.models import unwrap_model

__all__ = [
    "DEFAULT_PLACEMENTS",
    "NORM_CONVERSIONS",
    "ROUTES",
    "DualBN",
    "DuBIN",
    "IBN",
    "bn_route",
    "convert_norm",
    "default_placement",
    "dual_bn_layers",
    "set_bn_route",
]

ROUTES: tuple[str, ...] = ("clean", "aug")
NORM_CONVERSIONS: tuple[str, ...] = ("bn", "dubn", "dubin", "ibn")

# Where DuBIN (and IBN) go, per registered architecture; see the module docstring.
DEFAULT_PLACEMENTS: dict[str, tuple[str, ...]] = {
    "resnet18": ("layer1.*.bn1", "layer2.*.bn1", "layer3.*.bn1"),
    "wrn40_2": ("block1.*.bn1", "block2.*.bn1"),
    "resnext29": ("stage_1.*.bn_reduce", "stage_2.*.bn_reduce"),
    "preact_resnet18": ("layer1.*.bn1", "layer2.*.bn1", "layer3.*.bn1"),
    "preact_resnet50": ("layer1.*.bn1", "layer2.*.bn1", "layer3.*.bn1"),
    "small_cnn": ("layer1.bn", "layer2.bn", "layer3.bn"),
    "wrn50_2": ("layer1.*.bn1", "layer2.*.bn1", "layer3.*.bn1"),
    "resnet110": ("layer1.*.bn1", "layer2.*.bn1"),
    "preact_resnet110": ("layer1.*.bn1", "layer2.*.bn1"),
    "wrn28_10": ("block1.*.bn1", "block2.*.bn1"),
}

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _check_route(route: str) -> str:
    if route not in ROUTES:
        raise ValueError(f"unknown BN route {route!r}; choose one of: {', '.join(ROUTES)}")
    return route


def _bn_kwargs(bn: nn.modules.batchnorm._BatchNorm) -> dict:
    return {
        "eps": bn.eps,
        "momentum": bn.momentum,
        "affine": bn.affine,
        "track_running_stats": bn.track_running_stats,
    }


def _like(module: nn.Module, reference: nn.Module) -> nn.Module:
    """Move ``module`` to the device/dtype of ``reference`` and copy its train/eval mode."""
    tensor = next(iter(reference.parameters()), None)
    if tensor is None:
        tensor = next(iter(reference.buffers()), None)
    if tensor is not None:
        module.to(device=tensor.device, dtype=tensor.dtype)
    return module.train(reference.training)


def _copy_bn_slice(dst: nn.BatchNorm2d, src: nn.modules.batchnorm._BatchNorm, sl: slice) -> None:
    """Copy the channels ``sl`` of ``src`` (affine params and running stats) into ``dst``."""
    with torch.no_grad():
        if dst.affine and src.affine:
            dst.weight.copy_(src.weight[sl])
            dst.bias.copy_(src.bias[sl])
            dst.weight.requires_grad_(src.weight.requires_grad)
            dst.bias.requires_grad_(src.bias.requires_grad)
        if dst.track_running_stats and src.track_running_stats:
            dst.running_mean.copy_(src.running_mean[sl])
            dst.running_var.copy_(src.running_var[sl])
            dst.num_batches_tracked.copy_(src.num_batches_tracked)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
class DualBN(nn.Module):
    """Dual batch normalization (DuBN): a main and an auxiliary BatchNorm2d, picked by route.

    ``route == "clean"`` (the default) normalizes with ``bn_clean`` and, in train mode,
    updates only its running statistics; ``route == "aug"`` does the same with ``bn_aug``.
    The route is a plain Python attribute (not in the state dict): a loaded checkpoint
    evaluates through the clean BN unless the caller routes otherwise. Set it for a whole
    model with `set_bn_route` or `bn_route`.

    Args:
        num_features: channels C.
        **bn_kwargs: keyword arguments of both `torch.nn.BatchNorm2d` (``eps``,
            ``momentum``, ``affine``, ``track_running_stats``, ``device``, ``dtype``).

    Shape:
        - input: (N, C, H, W)
        - output: (N, C, H, W)
    """

    def __init__(self, num_features: int, **bn_kwargs) -> None:
        super().__init__()
        self.num_features = num_features
        self.bn_clean = nn.BatchNorm2d(num_features, **bn_kwargs)
        self.bn_aug = nn.BatchNorm2d(num_features, **bn_kwargs)
        self._route = "clean"

    @property
    def route(self) -> str:
        """Which BN a forward uses: ``"clean"`` (main) or ``"aug"`` (auxiliary)."""
        return self._route

    @route.setter
    def route(self, value: str) -> None:
        self._route = _check_route(value)

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, copy_to_aux: bool = True) -> DualBN:
        """A DualBN whose main BN is a copy of ``bn`` (weights and running statistics).

        Args:
            bn: the BatchNorm2d to copy; its hyperparameters, device, dtype and train/eval
                mode carry over.
            copy_to_aux: also copy ``bn`` into the auxiliary BN (AdvBN fine-tuning starts
                this way; so does `convert_norm`); if False, the auxiliary BN is freshly
                initialized.

        Returns:
            The new layer, route ``"clean"``.
        """
        dual = _like(cls(bn.num_features, **_bn_kwargs(bn)), bn)
        _copy_bn_slice(dual.bn_clean, bn, slice(None))
        if copy_to_aux:
            _copy_bn_slice(dual.bn_aug, bn, slice(None))
        return dual

    def copy_clean_to_aux(self) -> None:
        """Overwrite the auxiliary BN with the main one (affine params and running stats)."""
        _copy_bn_slice(self.bn_aug, self.bn_clean, slice(None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize with the BN the route names.

        Shape:
            - x: (N, C, H, W)
            - output: (N, C, H, W)
        """
        return self.bn_aug(x) if self._route == "aug" else self.bn_clean(x)

    def extra_repr(self) -> str:
        return f"{self.num_features}, route={self._route!r}"


class _SplitNorm(nn.Module):
    """Shared split-and-concatenate logic of `DuBIN` and `IBN`."""

    IN: nn.InstanceNorm2d
    BN: nn.Module

    def __init__(self, num_features: int, in_ratio: float) -> None:
        super().__init__()
        half = int(num_features * in_ratio)
        if not 0 < half < num_features:
            raise ValueError(
                f"{type(self).__name__}({num_features}, in_ratio={in_ratio}) leaves "
                f"{half} instance-norm channels; need between 1 and {num_features - 1}"
            )
        self.num_features = num_features
        self.in_ratio = in_ratio
        self.half = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize the first ``half`` channels per instance, the rest per batch.

        Shape:
            - x: (N, C, H, W)
            - output: (N, C, H, W)
        """
        x_in, x_bn = torch.split(x, [self.half, self.num_features - self.half], dim=1)
        return torch.cat((self.IN(x_in), self.BN(x_bn)), dim=1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, in_channels={self.half}"


class DuBIN(_SplitNorm):
    """Dual batch-and-instance normalization (AugMax, Wang et al. 2021, Fig. 3).

    The first ``int(num_features * in_ratio)`` channels go through ``IN``, one
    ``InstanceNorm2d(affine=True)`` used by both routes; the other channels through ``BN``,
    a `DualBN`. The outputs are concatenated along the channels. The route is that of the
    inner `DualBN` (``dubin.route`` reads and sets it).

    Args:
        num_features: channels C.
        in_ratio: fraction of channels for instance normalization (0.5 in the paper).
        **bn_kwargs: keyword arguments of the two BatchNorm2d of the `DualBN`.

    Raises:
        ValueError: if the split would leave either part empty.

    Shape:
        - input: (N, C, H, W)
        - output: (N, C, H, W)
    """

    def __init__(self, num_features: int, in_ratio: float = 0.5, **bn_kwargs) -> None:
        super().__init__(num_features, in_ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = DualBN(num_features - self.half, **bn_kwargs)

    @property
    def route(self) -> str:
        """The route of the dual BN half (the IN half is shared by both routes)."""
        return self.BN.route

    @route.setter
    def route(self, value: str) -> None:
        self.BN.route = value

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, in_ratio: float = 0.5) -> DuBIN:
        """A DuBIN replacing ``bn`` with as much of its state as carries over.

        The IN half takes the affine parameters of ``bn``'s first channels; both BNs of the
        dual half take the parameters and running statistics of the remaining channels.

        Args:
            bn: the BatchNorm2d replaced; hyperparameters, device, dtype and mode carry over.
            in_ratio: fraction of channels for instance normalization.

        Returns:
            The new layer, route ``"clean"``.
        """
        layer = _like(cls(bn.num_features, in_ratio, **_bn_kwargs(bn)), bn)
        _copy_bn_slice(layer.IN, bn, slice(0, layer.half))
        rest = slice(layer.half, None)
        _copy_bn_slice(layer.BN.bn_clean, bn, rest)
        _copy_bn_slice(layer.BN.bn_aug, bn, rest)
        return layer


class IBN(_SplitNorm):
    """IBN-a normalization (Pan et al. 2018): instance norm on part of the channels, BN on the rest.

    Args:
        num_features: channels C.
        in_ratio: fraction of channels for ``IN``, an ``InstanceNorm2d(affine=True)``.
        **bn_kwargs: keyword arguments of ``BN``, the `torch.nn.BatchNorm2d` of the rest.

    Raises:
        ValueError: if the split would leave either part empty.

    Shape:
        - input: (N, C, H, W)
        - output: (N, C, H, W)
    """

    def __init__(self, num_features: int, in_ratio: float = 0.5, **bn_kwargs) -> None:
        super().__init__(num_features, in_ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(num_features - self.half, **bn_kwargs)

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, in_ratio: float = 0.5) -> IBN:
        """An IBN replacing ``bn``: IN takes the first channels' affine parameters, BN the rest.

        Args:
            bn: the BatchNorm2d replaced; hyperparameters, device, dtype and mode carry over.
            in_ratio: fraction of channels for instance normalization.

        Returns:
            The new layer.
        """
        layer = _like(cls(bn.num_features, in_ratio, **_bn_kwargs(bn)), bn)
        _copy_bn_slice(layer.IN, bn, slice(0, layer.half))
        _copy_bn_slice(layer.BN, bn, slice(layer.half, None))
        return layer


_CONVERTED_TYPES = (DualBN, DuBIN, IBN)


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
def _plain_batchnorms(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """BatchNorm2d modules by name, leaving out those inside DualBN/DuBIN/IBN layers."""
    found: dict[str, nn.BatchNorm2d] = {}
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(module, _CONVERTED_TYPES):
            inside.append(name)
        elif isinstance(module, nn.BatchNorm2d):
            found[name] = module
    return found


def _matches(name: str, pattern: str) -> bool:
    """Match dotted names component by component (``*`` never crosses a dot)."""
    parts, pattern_parts = name.split("."), pattern.split(".")
    return len(parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(part, pat) for part, pat in zip(parts, pattern_parts, strict=True)
    )


def default_placement(model: nn.Module) -> tuple[str, ...]:
    """The DuBIN/IBN placement patterns for ``model`` (by its ``arch`` attribute).

    Args:
        model: a model from `studykit.models.create_model`, possibly wrapped.

    Returns:
        Patterns of module names, e.g. ``("layer1.*.bn1", "layer2.*.bn1", "layer3.*.bn1")``.

    Raises:
        ValueError: for an architecture without a default placement.
    """
    arch = getattr(unwrap_model(model), "arch", type(model).__name__)
    if arch not in DEFAULT_PLACEMENTS:
        raise ValueError(
            f"no default DuBIN/IBN placement for arch {arch!r} (known: "
            f"{', '.join(DEFAULT_PLACEMENTS)}); pass placement=[module names or patterns "
            f"such as 'layer1.*.bn1']"
        )
    return DEFAULT_PLACEMENTS[arch]


def _resolve_placement(
    batchnorms: dict[str, nn.BatchNorm2d], model: nn.Module, placement: Sequence[str]
) -> list[str]:
    if isinstance(placement, str):
        placement = [placement]
    chosen: list[str] = []
    for pattern in placement:
        hits = [name for name in batchnorms if _matches(name, pattern)]
        if not hits:
            others = [
                f"{name} ({type(module).__name__})"
                for name, module in model.named_modules()
                if name and _matches(name, pattern)
            ]
            what = (
                f"is not a plain BatchNorm2d: {', '.join(others[:3])}"
                if others
                else "matches no module"
            )
            available = ", ".join(list(batchnorms)[:8]) or "none"
            if len(batchnorms) > 8:
                available += f", ... ({len(batchnorms)} in all)"
            raise ValueError(
                f"placement entry {pattern!r} {what}; plain BatchNorm2d layers: {available}"
            )
        chosen.extend(name for name in hits if name not in chosen)
    return chosen


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def convert_norm(
    model: nn.Module,
    kind: str,
    *,
    placement: Sequence[str] | None = None,
    in_ratio: float = 0.5,
) -> nn.Module:
    """Swap the model's BatchNorm2d layers in place for the normalization ``kind``.

    New layers copy the state of the BN they replace (see `DualBN.from_bn`, `DuBIN.from_bn`,
    `IBN.from_bn`), so right after a ``"dubn"`` conversion the model computes the same
    function. BatchNorm2d layers already inside a DualBN/DuBIN/IBN are left alone, so
    converting twice to ``"dubn"`` changes nothing the second time.

    Args:
        model: the model (a wrapper such as DataParallel is unwrapped first).
        kind: ``"bn"`` (no change), ``"dubn"`` (every BN -> `DualBN`), ``"dubin"`` (`DuBIN`
            at ``placement``, `DualBN` elsewhere) or ``"ibn"`` (`IBN` at ``placement``,
            BatchNorm2d elsewhere).
        placement: for ``"dubin"``/``"ibn"``: the BatchNorm2d module names, or patterns
            (``"layer1.*.bn1"``; a wildcard stays within one dotted component) that get the
            instance-norm split. ``None`` uses the paper's placement for the model's arch
            (`DEFAULT_PLACEMENTS`).
        in_ratio: fraction of channels for instance normalization in DuBIN/IBN.

    Returns:
        ``model`` itself, converted.

    Raises:
        ValueError: for an unknown kind, a placement with ``"bn"``/``"dubn"``, an arch without
            a default placement, or a placement entry that matches no plain BatchNorm2d.
    """
    if kind not in NORM_CONVERSIONS:
        raise ValueError(
            f"unknown normalization kind {kind!r}; choose one of: {', '.join(NORM_CONVERSIONS)}"
        )
    if placement is not None and kind not in ("dubin", "ibn"):
        raise ValueError(f"placement applies to kinds 'dubin' and 'ibn' only, not {kind!r}")
    if kind == "bn":
        return model
    inner = unwrap_model(model)
    batchnorms = _plain_batchnorms(inner)
    split_at: list[str] = []
    if kind in ("dubin", "ibn"):
        patterns = default_placement(inner) if placement is None else placement
        split_at = _resolve_placement(batchnorms, inner, patterns)
    for name, bn in batchnorms.items():
        if name in split_at:
            split_cls = DuBIN if kind == "dubin" else IBN
            _replace(inner, name, split_cls.from_bn(bn, in_ratio=in_ratio))
        elif kind in ("dubn", "dubin"):
            _replace(inner, name, DualBN.from_bn(bn, copy_to_aux=True))
    return model


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------
def dual_bn_layers(model: nn.Module) -> Iterator[DualBN]:
    """Every `DualBN` in ``model``, including those inside `DuBIN` layers.

    Args:
        model: any module.

    Returns:
        An iterator over the DualBN modules, in module order.
    """
    return (module for module in model.modules() if isinstance(module, DualBN))


def set_bn_route(model: nn.Module, route: str) -> nn.Module:
    """Route every dual layer of ``model`` to the clean (main) or the aug (auxiliary) BN.

    A model without dual layers is returned unchanged.

    Args:
        model: any module.
        route: ``"clean"`` or ``"aug"``.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: for another route.
    """
    _check_route(route)
    for layer in dual_bn_layers(model):
        layer.route = route
    return model


@contextlib.contextmanager
def bn_route(model: nn.Module, route: str) -> Iterator[nn.Module]:
    """Context manager: route every dual layer to ``route``, then restore the previous routes.

    The previous route of each layer is restored on exit, also when the block raises.

    Args:
        model: any module (without dual layers this does nothing).
        route: ``"clean"`` or ``"aug"``.

    Yields:
        ``model``.

    Raises:
        ValueError: for another route (before anything is changed).

    Example:
        >>> with bn_route(model, "aug"):
        ...     logits_aug = model(x_aug)
    """
    _check_route(route)
    previous = [(layer, layer.route) for layer in dual_bn_layers(model)]
    try:
        for layer, _ in previous:
            layer.route = route
        yield model
    finally:
        for layer, old in previous:
            layer.route = old
