"""The stand-in check: per-corruption accuracy drops of models trained on different data, and
how well their rankings agree (notebook 00, ``benchmarks/stand_in_check.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.figure
import matplotlib.pyplot as plt
import pandas as pd


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
