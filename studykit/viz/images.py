"""Image grids: any batch of images, and every corruption x severity of a few images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import torch


def to_numpy_images(x: torch.Tensor) -> np.ndarray:
    """NCHW float [0,1] (or uint8) tensor -> NHWC float numpy in [0,1]."""
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def image_grid(
    images: torch.Tensor,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    ncols: int | None = None,
    cell_inches: float = 1.0,
    title: str | None = None,
) -> matplotlib.figure.Figure:
    """A grid of images without axes.

    Args:
        images: (R, C, 3, H, W) or (N, 3, H, W) float [0,1] or uint8.
        row_labels: one label per row (left side).
        col_labels: one label per column (top).
        ncols: columns when ``images`` is 4-D.
        cell_inches: size of one cell.
        title: figure title.

    Returns:
        The figure.
    """
    if images.dim() == 4:
        n = images.shape[0]
        ncols = ncols or int(np.ceil(np.sqrt(n)))
        nrows = int(np.ceil(n / ncols))
        pad = nrows * ncols - n
        if pad:
            images = torch.cat([images, torch.ones_like(images[:1]).expand(pad, -1, -1, -1)])
        images = images.reshape(nrows, ncols, *images.shape[1:])
    if images.dim() != 5:
        raise ValueError(f"images must be 4-D or 5-D, got shape {tuple(images.shape)}")
    nrows, ncols = images.shape[:2]
    arr = to_numpy_images(images.flatten(0, 1)).reshape(nrows, ncols, *images.shape[3:], 3)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * cell_inches + 1.0, nrows * cell_inches + 0.4), squeeze=False
    )
    for i in range(nrows):
        for j in range(ncols):
            ax = axes[i, j]
            ax.imshow(arr[i, j], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=8)
            if i == 0 and col_labels is not None:
                ax.set_title(col_labels[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    return fig


def corruption_gallery(
    x: torch.Tensor,
    names: Sequence[str],
    *,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    image_labels: Sequence[str] | None = None,
    cell_inches: float = 0.7,
    title: str | None = None,
) -> matplotlib.figure.Figure:
    """Every corruption x severity for a few images: one row per corruption, and per image a
    block of columns (clean, severity 1..5).

    Args:
        x: (K, 3, H, W) float [0,1] images (K small, e.g. 2-3).
        names: corruption names (see ``studykit.corruptions.list_corruptions``).
        severities: which severities to show.
        seed: seed of the corruptions' random draws.
        image_labels: a label per image, shown above its block.
        cell_inches: size of one cell.
        title: figure title.

    Returns:
        The figure.
    """
    from studykit.corruptions import corrupt

    k = x.shape[0]
    rows = []
    for name in names:
        cols = []
        per_sev = [x]
        for s in severities:
            g = torch.Generator().manual_seed(seed)
            per_sev.append(corrupt(x, name, s, generator=g))
        for i in range(k):
            cols.extend(t[i] for t in per_sev)
        rows.append(torch.stack(cols))
    grid = torch.stack(rows)
    col_labels = []
    for i in range(k):
        prefix = f"{image_labels[i]}\n" if image_labels is not None else ""
        col_labels.append(prefix + "clean")
        col_labels.extend(f"s{s}" for s in severities)
    return image_grid(grid, row_labels=list(names), col_labels=col_labels,
                      cell_inches=cell_inches, title=title)


def guard_grid(effect: Any, n: int = 6) -> matplotlib.figure.Figure:
    """Images the SSIM guard caught: original, AdA and guarded rows, titled with the SSIM before
    and after the guard.

    Args:
        effect: an ``analysis.ssim.GuardEffect``.
        n: at most this many columns (the first images when the guard caught none).
    """
    show = effect.examples(n)
    titles = [f"{a:.2f} -> {b:.2f}" for a, b in zip(effect.ssim_before[show].tolist(),
                                                      effect.ssim_after[show].tolist())]
    rows = torch.stack([effect.x[show], effect.x_hat[show], effect.x_guarded[show]])
    return image_grid(rows.cpu(), row_labels=["original", "AdA", "guarded"], col_labels=titles)
