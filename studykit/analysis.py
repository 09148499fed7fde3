"""Analysis of trained models: penultimate features and their 2-D projections, normalization
statistics, feature divergence between datasets, and SSIM.

- `penultimate` and `project`: AugMax Fig. 1 (Wang et al. 2021) shows the penultimate features
  of clean, AugMix, PGD and AugMax images of three classes in 2-D. The default projection there
  follows Müller et al. (2019, "When does label smoothing help?"): the plane through the three
  class templates, i.e. the rows of the last linear layer (`template_plane`). UMAP, t-SNE and
  PCA are offered as well.
- `bn_running_variance`: the mean running variance of every BatchNorm, with the clean (main) and
  auxiliary BN of a dual layer side by side (AugMax Table 1: DuBIN's BN variances are smaller
  than DuBN's). `batch_statistics` measures the same quantities model-agnostically on given
  batches: the variance each normalization layer sees in a batch, and how much the instance
  statistics differ within it.
- `feature_divergence`: AdvBN (Shu et al. 2021) Eq. 4-5, after Pan et al. (2018): per channel a
  Gaussian fitted to each dataset's features, the symmetric KL divergence averaged over channels,
  per stage (AdvBN Fig. 5).
- `ssim`: per-image SSIM (kornia), batched and differentiable (AdA Fig. 1 and its line search).

Every function that runs the model puts it in eval mode, runs without gradients on the model's
device, and restores every submodule's train/eval flag afterwards. Images may be uint8 (0-255)
or float in [0, 1].
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from studykit.models import penultimate_features, unwrap_model

__all__ = [
    "PROJECTION_METHODS",
    "Projection",
    "TemplatePlane",
    "batch_statistics",
    "bn_running_variance",
    "feature_divergence",
    "normalization_layers",
    "penultimate",
    "project",
    "ssim",
    "symmetric_kl_gaussian",
    "template_plane",
]

log = logging.getLogger(__name__)

PROJECTION_METHODS: tuple[str, ...] = ("umap", "tsne", "pca", "template")

# Leaf modules that normalize their input with statistics (BN, IN, GN, LN).
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients inside; every submodule's ``training`` flag restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, flag in modes:
            module.training = flag


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def as_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float images unchanged."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    if not x.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {x.dtype}")
    return x


def _batches(x: torch.Tensor, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    for start in range(0, x.shape[0], batch_size):
        yield as_float_images(x[start : start + batch_size].to(device))


def _to_numpy_2d(features: torch.Tensor | np.ndarray, name: str = "features") -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {array.shape}")
    return array


# --------------------------------------------------------------------------------------------
# Penultimate features and projections
# --------------------------------------------------------------------------------------------
def penultimate(model: nn.Module, x: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """Penultimate features (the input of ``fc``) of many images, in eval mode.

    Runs `studykit.models.penultimate_features` batch by batch on the model's device without
    gradients, with the model in eval mode (its train/eval flags are restored afterwards), and
    gathers the result on the CPU, ready for `project`. A dual-BN model uses whichever route it
    is set to.

    Args:
        model: a model from `studykit.models.create_model` (possibly wrapped).
        x: images, uint8 (0-255) or float in [0, 1], on any device.
        batch_size: images per forward pass.

    Returns:
        The features, float32, on the CPU.

    Shape:
        - x: (N, C, H, W)
        - output: (N, D), D = ``model.fc.in_features``
    """
    device = _model_device(model)
    with _eval_mode(model):
        chunks = [
            penultimate_features(model, xb).float().cpu() for xb in _batches(x, batch_size, device)
        ]
    if not chunks:
        dim = unwrap_model(model).fc.in_features
        return torch.empty(0, dim)
    return torch.cat(chunks)


@dataclass(frozen=True)
class Projection:
    """A 2-D projection of features.

    Attributes:
        coords: the 2-D coordinates, shape (N, 2).
        method: ``"umap"``, ``"tsne"``, ``"pca"`` or ``"template"``.
        fitted: the fitted object: ``umap.UMAP``, ``sklearn.manifold.TSNE``,
            ``sklearn.decomposition.PCA`` or `TemplatePlane` (the last two, and UMAP, have a
            ``transform`` for further features; t-SNE has none).
        templates: for ``"template"``, the 2-D positions of the three class templates, shape
            (3, 2), in the order of ``classes``; otherwise None.
    """

    coords: np.ndarray
    method: str
    fitted: Any = None
    templates: np.ndarray | None = None


@dataclass(frozen=True)
class TemplatePlane:
    """The affine plane through three class templates, with an orthonormal 2-D basis.

    The origin is template ``classes[0]``; the first axis points to template ``classes[1]``;
    the second is the Gram-Schmidt orthogonalization of the direction to ``classes[2]``.

    Attributes:
        classes: the three class indices.
        origin: the template of ``classes[0]`` (with its bias appended if a bias was given).
        basis: orthonormal rows spanning the plane.
        templates: the 2-D positions of the three templates.
        with_bias: whether features get a constant 1 appended (the bias was given).

    Shape:
        - origin: (D,) or (D + 1,) with a bias
        - basis: (2, D) or (2, D + 1)
        - templates: (3, 2)
    """

    classes: tuple[int, int, int]
    origin: np.ndarray
    basis: np.ndarray
    templates: np.ndarray
    with_bias: bool = False

    def transform(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Orthogonal projection of features onto the plane, in plane coordinates.

        Args:
            features: penultimate features.

        Returns:
            The 2-D coordinates (the component orthogonal to the plane is dropped).

        Shape:
            - features: (N, D)
            - output: (N, 2)
        """
        f = _to_numpy_2d(features)
        if self.with_bias:
            f = np.concatenate([f, np.ones((f.shape[0], 1))], axis=1)
        if f.shape[1] != self.origin.shape[0]:
            raise ValueError(
                f"features have {f.shape[1] - int(self.with_bias)} dimensions, the templates "
                f"{self.origin.shape[0] - int(self.with_bias)}"
            )
        return (f - self.origin) @ self.basis.T


def template_plane(
    features: torch.Tensor | np.ndarray,
    fc_weight: torch.Tensor | np.ndarray,
    classes: Sequence[int] = (0, 1, 2),
    fc_bias: torch.Tensor | np.ndarray | None = None,
) -> Projection:
    """Project features onto the plane through three class templates (Müller et al. 2019).

    The templates are the rows of the last linear layer for the three classes. Features are
    projected orthogonally onto the affine plane through the three template points and written
    in an orthonormal basis of it (see `TemplatePlane`), so distances within the plane are
    preserved. With ``fc_bias``, each template becomes ``(w_k, b_k)`` and each feature
    ``(f, 1)``, so that the logit is their inner product; with equal biases this gives the same
    coordinates as without.

    Args:
        features: penultimate features.
        fc_weight: the weight of the last linear layer (``model.fc.weight``).
        classes: three distinct class indices; the first is the origin, the second lies on
            the positive first axis, the third has a positive second coordinate.
        fc_bias: optionally the bias of the last linear layer.

    Returns:
        A `Projection` with ``coords`` (N, 2), ``templates`` (3, 2) and ``fitted`` the
        `TemplatePlane`.

    Raises:
        ValueError: for bad classes, mismatched shapes or collinear templates.

    Shape:
        - features: (N, D)
        - fc_weight: (K, D)
        - fc_bias: (K,)
    """
    weight = _to_numpy_2d(fc_weight, "fc_weight")
    num_classes = weight.shape[0]
    classes = tuple(int(c) for c in classes)
    if len(classes) != 3 or len(set(classes)) != 3:
        raise ValueError(f"classes must be three distinct class indices, got {classes}")
    if any(not 0 <= c < num_classes for c in classes):
        raise ValueError(f"classes {classes} out of range for {num_classes} classes")
    templates = weight[list(classes)]
    if fc_bias is not None:
        bias = fc_bias.detach().cpu().numpy() if isinstance(fc_bias, torch.Tensor) else fc_bias
        bias = np.asarray(bias, dtype=np.float64).reshape(-1)
        if bias.shape[0] != num_classes:
            raise ValueError(f"fc_bias has {bias.shape[0]} entries for {num_classes} classes")
        templates = np.concatenate([templates, bias[list(classes), None]], axis=1)
    origin = templates[0]
    u = templates[1] - origin
    v = templates[2] - origin
    scale = max(np.linalg.norm(u), np.linalg.norm(v), np.finfo(np.float64).tiny)
    e1 = u / max(np.linalg.norm(u), np.finfo(np.float64).tiny)
    v_perp = v - (v @ e1) * e1
    if np.linalg.norm(u) <= 1e-12 * scale or np.linalg.norm(v_perp) <= 1e-9 * scale:
        raise ValueError(f"the templates of classes {classes} are collinear: they span no plane")
    e2 = v_perp / np.linalg.norm(v_perp)
    basis = np.stack([e1, e2])
    plane = TemplatePlane(
        classes=classes,
        origin=origin,
        basis=basis,
        templates=(templates - origin) @ basis.T,
        with_bias=fc_bias is not None,
    )
    return Projection(
        coords=plane.transform(features), method="template", fitted=plane, templates=plane.templates
    )


def project(
    features: torch.Tensor | np.ndarray, method: str = "umap", *, seed: int = 0, **kw: Any
) -> Projection:
    """Project features to 2-D with UMAP, t-SNE, PCA or the class-template plane.

    To compare several kinds of images (AugMax Fig. 1: clean, AugMix, PGD, AugMax) in one
    embedding, project their concatenated features once and split the coordinates.

    Args:
        features: features, e.g. from `penultimate`.
        method: one of `PROJECTION_METHODS`:
            ``"umap"``: umap-learn ``UMAP(n_neighbors=15, random_state=seed)``; n_neighbors is
            capped at N - 1. Imported on first use (the import takes seconds).
            ``"tsne"``: ``sklearn.manifold.TSNE(init="pca", random_state=seed)``; perplexity
            (default 30) is capped below N / 3.
            ``"pca"``: ``sklearn.decomposition.PCA(random_state=seed)``.
            ``"template"``: `template_plane`; needs ``fc_weight`` and ``classes`` (and takes
            ``fc_bias``) as keywords; ``seed`` is unused.
        seed: random state of UMAP, t-SNE and PCA; the same seed gives the same result.
        **kw: passed to the estimator (e.g. ``n_neighbors``, ``min_dist``, ``perplexity``).

    Returns:
        A `Projection` (``coords`` of shape (N, 2), the fitted object, and the template
        positions for ``"template"``).

    Raises:
        ValueError: for an unknown method or too few samples.

    Shape:
        - features: (N, D)
        - coords: (N, 2)
    """
    if method not in PROJECTION_METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of: {', '.join(PROJECTION_METHODS)}"
        )
    if method == "template":
        missing = [k for k in ("fc_weight", "classes") if k not in kw]
        if missing:
            raise ValueError(f"method 'template' needs the keyword(s) {', '.join(missing)}")
        return template_plane(features, **kw)

    x = _to_numpy_2d(features).astype(np.float32)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"{method} needs at least 3 samples, got {n}")
    log.info("projecting %d x %d features with %s", n, x.shape[1], method)
    if method == "pca":
        from sklearn.decomposition import PCA

        fitted = PCA(n_components=2, random_state=seed, **kw)
        coords = fitted.fit_transform(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(float(kw.pop("perplexity", 30.0)), (n - 1) / 3)
        kw.setdefault("init", "pca")
        fitted = TSNE(n_components=2, perplexity=perplexity, random_state=seed, **kw)
        coords = fitted.fit_transform(x)
    else:
        import umap  # slow import (numba): only when asked for

        kw["n_neighbors"] = min(int(kw.get("n_neighbors", 15)), n - 1)
        # A fixed random_state forces one thread; say so up front instead of in a warning.
        kw.setdefault("n_jobs", 1)
        fitted = umap.UMAP(n_components=2, random_state=seed, **kw)
        coords = fitted.fit_transform(x)
    return Projection(coords=np.asarray(coords, dtype=np.float64), method=method, fitted=fitted)


# --------------------------------------------------------------------------------------------
# Normalization statistics
# --------------------------------------------------------------------------------------------
def _is_norm_module(module: nn.Module) -> bool:
    """A norm leaf (BN/IN/GN/LN), or a container whose every leaf is one (DualBN, DuBIN, IBN)."""
    if isinstance(module, _NORM_TYPES):
        return True
    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    return (
        bool(leaves) and module is not leaves[0] and all(isinstance(m, _NORM_TYPES) for m in leaves)
    )


def normalization_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost normalization layers of a model, by qualified name, in module order.

    A normalization layer is a BatchNorm/InstanceNorm/GroupNorm/LayerNorm, or a container made
    only of them (a dual BN, DuBIN, IBN); for a container, the container is listed, not its
    parts.

    Args:
        model: any module (wrappers are unwrapped).

    Returns:
        ``{name: module}``.
    """
    inner = unwrap_model(model)
    layers: dict[str, nn.Module] = {}
    for name, module in inner.named_modules():
        if any(name.startswith(outer + ".") for outer in layers):
            continue
        if _is_norm_module(module):
            layers[name] = module
    return layers


def bn_running_variance(model: nn.Module) -> pd.DataFrame:
    """Mean running variance of every normalization layer, main and auxiliary BN side by side
    (AugMax Table 1). One implementation serves both modules: see
    `studykit.normalization.bn_running_variance_table` for the columns.
    """
    from studykit.normalization import bn_running_variance_table

    return bn_running_variance_table(unwrap_model(model))


def _select_layers(
    layers: dict[str, nn.Module], patterns: Iterable[str] | str | None
) -> dict[str, nn.Module]:
    if patterns is None:
        return layers
    if isinstance(patterns, str):
        patterns = [patterns]
    selected: dict[str, nn.Module] = {}
    for pattern in patterns:
        matches = [name for name in layers if fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            raise ValueError(
                f"layer {pattern!r} matches no normalization layer; "
                f"choose from: {', '.join(layers)}"
            )
        selected.update((name, layers[name]) for name in matches)
    return {name: module for name, module in layers.items() if name in selected}


class _MomentAccumulator:
    """Per-channel sums over (N, spatial) and the per-sample channel means, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.sum_sq: torch.Tensor | None = None
        self.sample_means: list[torch.Tensor] = []
        self.sample_vars: list[torch.Tensor] = []

    def add(self, h: torch.Tensor) -> None:
        h = h.detach().double()
        h = h.reshape(h.shape[0], h.shape[1], -1)  # (N, C, L)
        s, s2 = h.sum(dim=(0, 2)), h.square().sum(dim=(0, 2))
        self.sum = s if self.sum is None else self.sum + s
        self.sum_sq = s2 if self.sum_sq is None else self.sum_sq + s2
        self.count += h.shape[0] * h.shape[2]
        self.sample_means.append(h.mean(dim=2).cpu())
        self.sample_vars.append(h.var(dim=2, unbiased=False).cpu())

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean.square()).clamp_min(0)
        return mean.cpu(), var.cpu()


def batch_statistics(
    model: nn.Module,
    batches: Mapping[str, torch.Tensor],
    *,
    layers: Iterable[str] | str | None = None,
    batch_size: int = 500,
) -> pd.DataFrame:
    """Statistics of the input of every normalization layer, for several named batches.

    A model-agnostic view of AugMax Table 1: how much the inputs of each normalization layer
    vary within a batch of clean, AugMix, AugMax or PGD images, and how much of that is due to
    the instances differing from each other (what instance normalization removes). Forward hooks
    read each layer's input; they are removed afterwards, also on an exception. For a container
    layer (dual BN, DuBIN) the hook sees the container's input, whatever route it takes.

    For the input h of a layer, with channels c, samples n and positions p (H x W) and all
    variances the population (biased) ones:

    - ``batch_var`` = mean_c Var_{n,p}[h_ncp]: the per-channel variance over the batch and the
      positions, as a BatchNorm in train mode would compute it, averaged over channels;
    - ``instance_var`` = mean_c mean_n Var_p[h_ncp]: the variance within each instance (what an
      InstanceNorm would compute), averaged over samples and channels;
    - ``instance_heterogeneity`` = mean_c Var_n[mean_p h_ncp]: the variance across samples of
      the per-sample channel means, averaged over channels: zero when every sample has the same
      channel means.

    By the law of total variance ``batch_var = instance_var + instance_heterogeneity``. A batch
    is one population even when it runs in chunks of ``batch_size``.

    Args:
        model: any module (wrappers are unwrapped); runs in eval mode without gradients, and
            its train/eval flags are restored afterwards.
        batches: named image batches, e.g. ``{"clean": x, "augmax": x_augmax}``, uint8 or float
            in [0, 1].
        layers: names or shell-style patterns (``"layer1.*"``) of normalization layers (as in
            `normalization_layers`); None for all.
        batch_size: images per forward pass.

    Returns:
        A tidy table with one row per (batch, layer), batches in the given order and layers in
        module order; columns ``layer``, ``batch``, ``batch_var``, ``instance_var``,
        ``instance_heterogeneity``.

    Raises:
        ValueError: when the model has no normalization layer or ``layers`` matches none.

    Shape:
        - each batch: (N, C, H, W)
    """
    inner = unwrap_model(model)
    all_layers = normalization_layers(inner)
    if not all_layers:
        raise ValueError(f"{type(inner).__name__} has no normalization layer")
    selected = _select_layers(all_layers, layers)
    device = _model_device(inner)
    rows: list[dict[str, Any]] = []
    for batch_name, x in batches.items():
        accumulators = {name: _MomentAccumulator() for name in selected}
        handles = []
        try:
            for name, module in selected.items():

                def hook(_module, inputs, _output, acc=accumulators[name]) -> None:
                    acc.add(inputs[0])

                handles.append(module.register_forward_hook(hook))
            with _eval_mode(inner):
                for xb in _batches(x, batch_size, device):
                    inner(xb)
        finally:
            for handle in handles:
                handle.remove()
        for name, acc in accumulators.items():
            if acc.count == 0:
                log.warning("normalization layer %s was not called on batch %r", name, batch_name)
                rows.append(
                    {
                        "layer": name,
                        "batch": batch_name,
                        "batch_var": math.nan,
                        "instance_var": math.nan,
                        "instance_heterogeneity": math.nan,
                    }
                )
                continue
            _, var = acc.mean_var()
            sample_means = torch.cat(acc.sample_means)  # (N, C)
            rows.append(
                {
                    "layer": name,
                    "batch": batch_name,
                    "batch_var": float(var.mean()),
                    "instance_var": float(torch.cat(acc.sample_vars).mean()),
                    "instance_heterogeneity": float(sample_means.var(dim=0, unbiased=False).mean()),
                }
            )
    columns = ["layer", "batch", "batch_var", "instance_var", "instance_heterogeneity"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# Feature divergence (AdvBN Eq. 4-5)
# --------------------------------------------------------------------------------------------
def symmetric_kl_gaussian(
    mu1: torch.Tensor | float,
    var1: torch.Tensor | float,
    mu2: torch.Tensor | float,
    var2: torch.Tensor | float,
    *,
    eps: float = 0.0,
) -> torch.Tensor:
    """Symmetric KL divergence KL(P||Q) + KL(Q||P) of univariate Gaussians, elementwise.

    With P = N(mu1, var1) and Q = N(mu2, var2) (AdvBN Eq. 5 summed both ways, Eq. 4), the log
    terms cancel::

        KL(P||Q) + KL(Q||P) = (var1 + d^2) / (2 var2) + (var2 + d^2) / (2 var1) - 1,  d = mu1 - mu2

    Args:
        mu1: mean of P.
        var1: variance of P (not the standard deviation).
        mu2: mean of Q.
        var2: variance of Q.
        eps: added to both variances, so that constant channels (e.g. dead ReLUs: variance 0
            in both) give 0 instead of NaN.

    Returns:
        The divergences, broadcast over the inputs, in float64 for Python numbers (else the
        inputs' promoted dtype).
    """
    tensors = [
        t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)
        for t in (mu1, var1, mu2, var2)
    ]
    m1, v1, m2, v2 = tensors
    v1, v2 = v1 + eps, v2 + eps
    d2 = (m1 - m2).square()
    return (v1 + d2) / (2 * v2) + (v2 + d2) / (2 * v1) - 1


def _stage_moments(
    model: nn.Module, x: torch.Tensor, stages: Sequence[str], batch_size: int, device: torch.device
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    accumulators = {stage: _MomentAccumulator() for stage in stages}
    for xb in _batches(x, batch_size, device):
        for stage in stages:
            accumulators[stage].add(model.forward_until(xb, stage))
    return {stage: acc.mean_var() for stage, acc in accumulators.items()}


def feature_divergence(
    model: nn.Module,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    *,
    stages: Sequence[str] | None = None,
    batch_size: int = 500,
    eps: float = 1e-5,
) -> pd.DataFrame:
    """Feature divergence between two image sets at each stage (AdvBN Eq. 4-5, Fig. 5).

    At the output of each stage (``model.forward_until``), each channel's features over
    (N, H, W) are modeled by a Gaussian per dataset, with the population mean and variance;
    the divergence is the symmetric KL of the two Gaussians (`symmetric_kl_gaussian`) averaged
    over channels. The model runs in eval mode without gradients; its flags are restored.

    Args:
        model: a model with ``stages`` and ``forward_until`` (from `create_model`; wrappers
            are unwrapped).
        x_a: images of dataset A, uint8 or float in [0, 1].
        x_b: images of dataset B (any number of images of the same size).
        stages: stage names (default: all of ``model.stages``).
        batch_size: images per forward pass.
        eps: added to the variances (see `symmetric_kl_gaussian`).

    Returns:
        One row per stage, in the given order, with columns ``stage``, ``channels`` and
        ``divergence``.

    Raises:
        ValueError: for an unknown stage or a model without stages.

    Shape:
        - x_a: (N_a, C, H, W)
        - x_b: (N_b, C, H, W)
    """
    inner = unwrap_model(model)
    all_stages = tuple(getattr(inner, "stages", ()))
    if not all_stages or not callable(getattr(inner, "forward_until", None)):
        raise ValueError(f"{type(inner).__name__} has no stages/forward_until to split at")
    stages = all_stages if stages is None else tuple(stages)
    for stage in stages:
        if stage not in all_stages:
            raise ValueError(f"unknown stage {stage!r}; choose one of: {', '.join(all_stages)}")
    device = _model_device(inner)
    with _eval_mode(inner):
        moments_a = _stage_moments(inner, x_a, stages, batch_size, device)
        moments_b = _stage_moments(inner, x_b, stages, batch_size, device)
    rows = []
    for stage in stages:
        (mu_a, var_a), (mu_b, var_b) = moments_a[stage], moments_b[stage]
        kl = symmetric_kl_gaussian(mu_a, var_a, mu_b, var_b, eps=eps)
        rows.append({"stage": stage, "channels": int(mu_a.numel()), "divergence": float(kl.mean())})
    return pd.DataFrame(rows, columns=["stage", "channels", "divergence"])


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------
def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Per-image structural similarity (kornia.metrics.ssim, Gaussian window, data range 1).

    Batched and differentiable: the SSIM map, averaged over channels and positions per image.

    Args:
        x: images, uint8 or float in [0, 1].
        y: images of the same shape.
        window_size: side of the Gaussian window (odd).

    Returns:
        SSIM per image (1 for identical images).

    Shape:
        - x, y: (N, C, H, W)
        - output: (N,)
    """
    from kornia.metrics import ssim as kornia_ssim

    x, y = as_float_images(x), as_float_images(y)
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"x and y must be (N, C, H, W) of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return kornia_ssim(x, y, window_size, max_val=1.0).mean(dim=(1, 2, 3))
