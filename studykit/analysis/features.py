"""Penultimate features and their 2-D projections (AugMax Fig. 1).

AugMax (Wang et al. 2021) shows the penultimate features of clean, AugMix, PGD and AugMax images
of three classes in 2-D. The default projection follows Mueller et al. (2019, "When does label
smoothing help?"): the plane through the three class templates, i.e. the rows of the last
linear layer (`template_plane`). UMAP, t-SNE and PCA are offered as well.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from studykit.analysis.batches import _batches, _eval_mode, _to_numpy_2d
from studykit.devices import model_device
from studykit.models import penultimate_features, unwrap_model

log = logging.getLogger(__name__)

PROJECTION_METHODS: tuple[str, ...] = ("umap", "tsne", "pca", "template")

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
    device = model_device(model)
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




def project_views(
    features: Mapping[str, torch.Tensor],
    method: str = "umap",
    *,
    fc_weight: torch.Tensor | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Project the features of several kinds of the same images (AugMax Fig. 1: standard,
    AugMix, PGD, AugMax) to 2-D so that the panels compare.

    ``"template"`` projects each kind onto the plane of the class templates (the same plane
    for every kind); every other method is fitted once on all kinds together and its
    coordinates split back per kind.

    Args:
        features: kind -> features, every kind with the same number of rows.
        method: one of `PROJECTION_METHODS`.
        fc_weight: the last linear layer's weight (``"template"`` only).
        classes: the three classes whose templates span the plane (``"template"`` only).
        seed: random state of UMAP, t-SNE and PCA.

    Returns:
        kind -> (N, 2) coordinates, and kind -> (3, 2) template positions (None unless
        ``"template"``).
    """
    if method == "template":
        proj = {k: project(f, "template", fc_weight=fc_weight, classes=classes)
                for k, f in features.items()}
        return {k: p.coords for k, p in proj.items()}, {k: p.templates for k, p in proj.items()}
    joint = project(torch.cat(list(features.values())), method, seed=seed).coords
    return dict(zip(features, joint.reshape(len(features), -1, 2))), None
