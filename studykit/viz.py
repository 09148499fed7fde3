"""Matplotlib figures shared by the notebooks, and ``save_figure``.

Committed figures live in ``figures/<notebook>/<name>.png`` with a sidecar ``<name>.md`` that says
how they were made (profile, dataset, command). Under the ``smoke`` profile figures go to a
temporary folder so that tests never change ``figures/``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if os.environ.get("MPLBACKEND") is None and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from studykit.paths import project_root  # noqa: E402

log = logging.getLogger(__name__)

FIGURES_ENV = "STUDYKIT_FIGURES"


_smoke_dir: Path | None = None


def figures_root(profile: str | None = None) -> Path:
    """Where figures are written.

    ``$STUDYKIT_FIGURES`` wins; otherwise ``figures/`` of the project root, except under the
    ``smoke`` profile, which writes to a new temporary folder of this process (logged once), so
    that test runs never touch committed figures nor each other's. ``studykit study`` makes one
    such folder per study run and hands it to its notebooks through ``$STUDYKIT_FIGURES``.
    """
    global _smoke_dir
    env = os.environ.get(FIGURES_ENV)
    if env:
        return Path(env)
    if profile == "smoke":
        if _smoke_dir is None:
            _smoke_dir = Path(tempfile.mkdtemp(prefix="studykit-smoke-figures-"))
            log.info("smoke profile: figures go to %s", _smoke_dir)
        return _smoke_dir
    return project_root() / "figures"


def save_figure(
    fig: matplotlib.figure.Figure,
    name: str,
    *,
    notebook: str = "misc",
    profile: str | None = None,
    caption: str = "",
    root: str | os.PathLike | None = None,
    dpi: int = 120,
) -> Path:
    """Save ``fig`` as ``<root>/<notebook>/<name>.png`` with a Markdown sidecar.

    Args:
        fig: the figure.
        name: file stem, lower_snake.
        notebook: the notebook (or script) that made it, e.g. ``00_data_and_corruptions``.
        profile: the profile it was made under; ``smoke`` writes to a temporary folder.
        caption: what the figure shows and how it was made; goes into the sidecar.
        root: override the figures root.
        dpi: resolution.

    Returns:
        The path of the PNG.
    """
    base = Path(root) if root is not None else figures_root(profile)
    out = base / notebook
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    fig.savefig(png, dpi=dpi, bbox_inches="tight")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    sidecar = [f"# {name}", "", caption.strip() or "(no caption)", "",
               f"Made by `{notebook}` under profile `{profile or 'n/a'}` on {stamp}."]
    (out / f"{name}.md").write_text("\n".join(sidecar) + "\n")
    log.info("saved figure %s", png)
    return png


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


def save_table(
    df: pd.DataFrame,
    name: str,
    *,
    notebook: str = "misc",
    profile: str | None = None,
    caption: str = "",
    root: str | os.PathLike | None = None,
    floatfmt: str = ".1f",
) -> Path:
    """Save a table as ``<root>/<notebook>/<name>.csv`` and ``<name>.md`` (Markdown + caption)."""
    base = Path(root) if root is not None else figures_root(profile)
    out = base / notebook
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{name}.csv")
    md = [f"# {name}", "", caption.strip(), "", _markdown(df, floatfmt), "",
          f"Made by `{notebook}` under profile `{profile or 'n/a'}`."]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    return out / f"{name}.csv"


def _markdown(df: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A Markdown table without the optional `tabulate` dependency."""
    cols = [str(df.index.name or "")] + [str(c) for c in df.columns]

    def fmt(v: object) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v)

    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, r in df.iterrows():
        rows.append("| " + " | ".join([fmt(idx)] + [fmt(v) for v in r.tolist()]) + " |")
    return "\n".join(rows)


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


def corruption_drops(tables: dict[str, pd.DataFrame], clean: dict[str, float]) -> pd.DataFrame:
    """Accuracy drop (clean minus mean over severities) per corruption (rows) and model/dataset
    (columns), in the table's corruption order."""
    names = list(dict.fromkeys(next(iter(tables.values()))["corruption"]))
    return pd.DataFrame({
        label: clean[label] - t.groupby("corruption")["accuracy"].mean().reindex(names)
        for label, t in tables.items()
    }).rename_axis("corruption")


#: Left out of the stand-in rank correlation: the real CIFAR-10 copy (a JPEG npz file) is already
#: JPEG-75 compressed, so JPEG compression barely hurts it and its rank there says nothing.
RHO_EXCLUDED = ("jpeg_compression",)


def drop_rank_correlation(drops: pd.DataFrame, x: str, y: str,
                          exclude: Sequence[str] = RHO_EXCLUDED) -> float:
    """Spearman's rank correlation of two columns of ``corruption_drops`` over its corruptions,
    leaving out ``exclude`` (default: jpeg_compression) and any non-corruption rows such as a
    ``clean accuracy`` row a notebook appended.

    Args:
        drops: ``corruption_drops`` output (rows: corruptions).
        x: one column (e.g. the real-data model).
        y: the other column (e.g. the synthetic-data model).
        exclude: corruptions left out.

    Returns:
        rho in [-1, 1] (ranks with ties averaged, then Pearson's correlation).
    """
    from studykit.corruptions import list_corruptions

    keep = [n for n in drops.index if n in list_corruptions("all") and n not in set(exclude)]
    d = drops.loc[keep, [x, y]]
    return float(d[x].rank().corr(d[y].rank()))


def plot_drop_scatter(drops: pd.DataFrame, x: str, y: str,
                      exclude: Sequence[str] = RHO_EXCLUDED) -> matplotlib.figure.Figure:
    """Scatter of two columns of ``corruption_drops`` with one labelled point per corruption,
    the identity line, and Spearman's rank correlation (`drop_rank_correlation`, which leaves
    out ``exclude``: jpeg_compression by default; those points are drawn hollow) in the title."""
    from studykit.corruptions import list_corruptions

    drops = drops.loc[[n for n in drops.index if n in list_corruptions("all")]]
    left_out = drops.index.isin(list(exclude))
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.scatter(drops.loc[~left_out, x], drops.loc[~left_out, y], s=18)
    ax.scatter(drops.loc[left_out, x], drops.loc[left_out, y], s=18, facecolors="none",
               edgecolors="C0")
    for name, row in drops.iterrows():
        ax.annotate(str(name), (row[x], row[y]), fontsize=7, xytext=(3, 2),
                    textcoords="offset points")
    lo = min(drops[x].min(), drops[y].min(), 0) - 2
    hi = max(drops[x].max(), drops[y].max()) + 2
    ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8, ls="--")
    rho = drop_rank_correlation(drops, x, y, exclude)
    n = int((~left_out).sum())
    without = f" without {', '.join(exclude)}" if len(exclude) else ""
    ax.set(xlabel=f"accuracy drop on {x} (points)", ylabel=f"accuracy drop on {y} (points)",
           title=f"per-corruption accuracy drop\nSpearman rho = {rho:.2f} over {n} corruptions"
                 f"{without}")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
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
