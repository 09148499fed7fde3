"""Result plots: training curves, accuracy vs severity and vs eps, metric bars, feature
panels, normalization statistics."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch


def plot_history(histories: dict[str, pd.DataFrame]) -> matplotlib.figure.Figure:
    """Training loss and (train/test) accuracy per epoch, one line per run."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, h in histories.items():
        (line,) = ax1.plot(h["epoch"], h["train_loss"], label=label)
        ax2.plot(h["epoch"], h["train_acc"], ls="--", color=line.get_color())
        if "test_acc" in h:
            ax2.plot(h["epoch"], h["test_acc"], color=line.get_color(), label=label)
    ax1.set(xlabel="epoch", ylabel="training loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)  (dashed: train)")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_corruption_drop(
    tables: dict[str, pd.DataFrame], clean: dict[str, float]
) -> matplotlib.figure.Figure:
    """Accuracy lost to each corruption (clean minus the mean over severities), per model."""
    names = list(dict.fromkeys(next(iter(tables.values()))["corruption"]))
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) * max(1, len(tables)) ** 0.5 + 1.2))
    h = 0.8 / len(tables)
    ypos = np.arange(len(names))
    for i, (label, t) in enumerate(tables.items()):
        mean = t.groupby("corruption")["accuracy"].mean().reindex(names)
        ax.barh(ypos + i * h, clean[label] - mean.values, height=h, label=label)
    ax.set_yticks(ypos + h * (len(tables) - 1) / 2, names)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy drop vs clean (points; mean over severities 1-5)")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_severity(
    tables: dict[str, pd.DataFrame], clean: dict[str, float] | None = None, ncols: int = 5
) -> matplotlib.figure.Figure:
    """One panel per corruption (and a mean panel): accuracy vs severity, a line per model.

    Severity 0 is the clean accuracy when ``clean`` is given.
    """
    names = list(dict.fromkeys(next(iter(tables.values()))["corruption"])) + ["mean"]
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.0 * nrows), sharex=True,
                             sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, names):
        for label, t in tables.items():
            if name == "mean":
                s = t.groupby("severity")["accuracy"].mean()
            else:
                s = t[t["corruption"] == name].set_index("severity")["accuracy"]
            xs, ys = list(s.index), list(s.values)
            if clean is not None:
                xs, ys = [0, *xs], [clean[label], *ys]
            ax.plot(xs, ys, marker="o", ms=3, label=label)
        ax.set_title(name, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel("severity (0 = clean)", fontsize=9)
    fig.supylabel("accuracy (%)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_eps_curve(curves: dict[str, pd.DataFrame]) -> matplotlib.figure.Figure:
    """Adversarial accuracy vs eps, a line per model (eps in 1/255 units for Linf)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    norm = "linf"
    for label, c in curves.items():
        norm = c["norm"].iloc[0]
        eps = c["eps"] * (255 if norm == "linf" else 1)
        ax.plot(eps, c["accuracy"], marker="o", label=label)
    ax.set_xlabel("eps (x/255, Linf)" if norm == "linf" else "eps (L2)")
    ax.set_ylabel("PGD accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(curves: dict[str, pd.DataFrame], x: str, y: str, *, xlabel: str = "",
                ylabel: str = "", title: str = "") -> matplotlib.figure.Figure:
    """One line per entry of ``curves`` (``df[x]`` against ``df[y]``)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for label, c in curves.items():
        ax.plot(c[x], c[y], marker="o", label=label)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def corruption_heatmap(table: pd.DataFrame, title: str = "") -> matplotlib.figure.Figure:
    """Accuracy per corruption (rows) x severity (columns)."""
    piv = table.pivot(index="corruption", columns="severity", values="accuracy")
    piv = piv.reindex(list(dict.fromkeys(table["corruption"])))
    fig, ax = plt.subplots(figsize=(4.2, 0.3 * len(piv) + 1))
    im = ax.imshow(piv.values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_yticks(range(len(piv)), piv.index, fontsize=8)
    ax.set_xticks(range(piv.shape[1]), piv.columns)
    ax.set_xlabel("severity")
    for (i, j), v in np.ndenumerate(piv.values):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                color="white" if v < 50 else "black")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig



def plot_feature_panels(
    coords: dict[str, np.ndarray],
    labels: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    *,
    templates: dict[str, np.ndarray] | None = None,
    title: str = "",
    share_axes: bool = True,
) -> matplotlib.figure.Figure:
    """One scatter panel per image kind (AugMax Fig. 1): 2-D feature coordinates coloured by class,
    with the class templates as stars when given.

    Args:
        coords: panel title -> (N, 2) coordinates.
        labels: class index per point (the same for every panel).
        class_names: names of the classes present, in label order of ``np.unique(labels)``.
        templates: panel title -> (K, 2) template positions (e.g. the template-plane projection).
        title: figure title.
        share_axes: one scale for every panel (the template plane is the same plane in each).
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    classes = np.unique(labels)
    n = len(coords)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), sharex=share_axes, sharey=share_axes,
                             squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (name, xy) in zip(axes[0], coords.items()):
        for i, c in enumerate(classes):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, alpha=0.6, color=colors(i),
                       label=class_names[i] if i < len(class_names) else str(c))
        if templates is not None and name in templates:
            t = templates[name]
            for i in range(len(t)):
                ax.scatter(t[i, 0], t[i, 1], marker="*", s=180, color=colors(i),
                           edgecolor="black", linewidth=0.8, zorder=5)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=7, markerscale=2, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_metric_bars(
    df: pd.DataFrame, value: str, *, error: str | None = None, label: str = "",
    title: str = "",
) -> matplotlib.figure.Figure:
    """Horizontal bars of ``df[value]`` by index (optionally with ``df[error]`` error bars)."""
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(df) + 1.2))
    ax.barh([str(i) for i in df.index], df[value], xerr=df[error] if error else None,
            color="tab:blue", alpha=0.8, capsize=3)
    for i, v in enumerate(df[value]):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(label or value)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_bn_variances(per_layer: pd.DataFrame) -> matplotlib.figure.Figure:
    """Mean running variance per layer (x) of the clean and auxiliary BN for each model.

    Args:
        per_layer: columns a MultiIndex (model, ``clean_var`` | ``aux_var``), rows layers, as
            ``pd.concat({name: bn_running_variance(model).set_index("layer")}, axis=1)``.
    """
    models = list(dict.fromkeys(per_layer.columns.get_level_values(0)))
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(per_layer) + 2), 3.2))
    xs = np.arange(len(per_layer))
    for i, name in enumerate(models):
        color = plt.get_cmap("tab10")(i)
        ax.plot(xs, per_layer[(name, "clean_var")], marker="o", color=color,
                label=f"{name}: clean BN")
        if (name, "aux_var") in per_layer:
            ax.plot(xs, per_layer[(name, "aux_var")], marker="s", ls="--", color=color,
                    label=f"{name}: auxiliary BN")
    ax.set_xticks(xs, per_layer.index, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("mean running variance")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_layer_statistics(stats: pd.DataFrame, value: str) -> matplotlib.figure.Figure:
    """A line per batch kind of ``stats[value]`` over layers (``analysis.batch_statistics``)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    layers = list(dict.fromkeys(stats["layer"]))
    for name, g in stats.groupby("batch", sort=False):
        ax.plot(range(len(layers)), g.set_index("layer").loc[layers, value], marker="o",
                label=name)
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(value.replace("_", " "))
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_history_columns(
    histories: dict[str, pd.DataFrame], columns: dict[str, str], title: str = ""
) -> matplotlib.figure.Figure:
    """Per-epoch history columns, one panel per column (``{column: y label}``), one line per
    run; runs without a column are left out of its panel."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.2), squeeze=False)
    for ax, (column, ylabel) in zip(axes[0], columns.items()):
        for label, h in histories.items():
            if column in h:
                ax.plot(h["epoch"], h[column], marker="o", ms=3, label=label)
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_ssim_density(per_image: pd.DataFrame, column: str = "ssim_ada", by: str = "nu", *,
                      xlabel: str = "SSIM(x, AdA(x))") -> matplotlib.figure.Figure:
    """Kernel density of per-image SSIM, a line per value of ``by`` (AdA Fig. 1b).

    Args:
        per_image: ``analysis.ssim.ssim_by_radius`` output (or any table with the columns).
        column: the SSIM column.
        by: one line per value of this column, labelled with it (``by=value`` for a number,
            the value itself for a name) and the mean SSIM.
        xlabel: x-axis label.

    Each density is drawn from min(0.9, the lowest SSIM) to 1; a constant sample (no spread
    to estimate a density from) is drawn as zero.
    """
    from scipy.stats import gaussian_kde

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key, g in per_image.groupby(by, sort=False):
        v = np.ascontiguousarray(g[column].to_numpy())
        grid = np.linspace(min(v.min(), 0.9), 1.0, 400)
        density = gaussian_kde(v)(grid) if v.std() > 1e-6 else np.zeros_like(grid)
        name = f"{by}={key:g}" if isinstance(key, (int, float, np.number)) else str(key)
        ax.plot(grid, density, label=f"{name} (mean {v.mean():.3f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density (KDE)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_columns(table: pd.DataFrame, *, xlabel: str = "", ylabel: str = "",
                 title: str = "") -> matplotlib.figure.Figure:
    """One line per column of ``table`` against its index (``plot_curves`` of a wide table,
    e.g. ``evaluation.accuracy_on_sets``: a column per model, a row per set)."""
    x = table.index.name or "index"
    curves = {str(c): pd.DataFrame({x: table.index.to_numpy(), "value": table[c].to_numpy()})
              for c in table.columns}
    return plot_curves(curves, x, "value", xlabel=xlabel or x, ylabel=ylabel, title=title)
