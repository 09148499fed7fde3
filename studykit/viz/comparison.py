"""Figures that set many methods side by side (notebook 08): a corruption x method heatmap,
accuracy vs severity with a line per method, and labelled trade-off scatters."""

from __future__ import annotations

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

# Enough distinct colours and markers for the 15 benchmark rows and a few zoo models.
_COLOURS = plt.get_cmap("tab20").colors
_MARKERS = "osD^vP*Xh<>p"


def _style(i: int) -> dict:
    return {"color": _COLOURS[i % len(_COLOURS)], "marker": _MARKERS[i % len(_MARKERS)]}


def plot_drop_heatmap(drops: pd.DataFrame, *, title: str = "") -> matplotlib.figure.Figure:
    """Accuracy lost (%) to each corruption (rows) by each method (columns), a diverging colour
    scale centred on 0 (a gain shows blue), every cell labelled."""
    fig, ax = plt.subplots(figsize=(0.55 * drops.shape[1] + 2.6, 0.3 * drops.shape[0] + 1.6))
    lim = max(float(np.nanmax(np.abs(drops.to_numpy(float)))), 1.0)
    im = ax.imshow(drops.to_numpy(float), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(drops.shape[0]), drops.index, fontsize=8)
    ax.set_xticks(range(drops.shape[1]), drops.columns, fontsize=8, rotation=60, ha="right")
    for (i, j), v in np.ndenumerate(drops.to_numpy(float)):
        if np.isfinite(v):
            ax.text(j, i, f"{round(v):d}", ha="center", va="center", fontsize=6,
                    color="white" if abs(v) > 0.6 * lim else "black")
    fig.colorbar(im, ax=ax, label="accuracy drop (points)", shrink=0.8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_severity_lines(table: pd.DataFrame, *, ylabel: str = "accuracy (%)",
                        title: str = "") -> matplotlib.figure.Figure:
    """One line per row of ``table`` (columns: severities, 0 = clean), one panel."""
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    for i, (label, row) in enumerate(table.iterrows()):
        ax.plot(list(table.columns), row.to_numpy(float), label=label, ms=4, **_style(i))
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel(ylabel)
    ax.set_xticks(list(table.columns))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_tradeoff(table: pd.DataFrame, x: str, y: str, *, xlabel: str = "",
                  ylabel: str = "", title: str = "") -> matplotlib.figure.Figure:
    """A labelled point per row of ``table`` (``table[x]`` against ``table[y]``); rows without
    both values are left out."""
    data = table[[x, y]].astype(float).dropna()
    if data.empty:
        raise ValueError(f"no row has both {x!r} and {y!r}")
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    for i, (label, (vx, vy)) in enumerate(data.iterrows()):
        ax.scatter([vx], [vy], s=36, label=label, **_style(i))
        ax.annotate(label, (vx, vy), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
