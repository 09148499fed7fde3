"""Saving figures and tables: ``figures/<notebook>/<name>.png`` (or ``.csv``) with a Markdown
sidecar ``<name>.md`` that says how they were made (profile, dataset, command). Under the
``smoke`` profile they go to a temporary folder so that tests never change ``figures/``.

A notebook makes one ``FigureSaver(notebook, profile)`` and saves through it, instead of
repeating ``notebook=..., profile=...`` in every ``save_figure`` / ``save_table`` call.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib.figure
import numpy as np
import pandas as pd

from studykit.paths import project_root

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


def dataset_folder(dataset: str) -> str:
    """The folder name under the figures root of a series run on another dataset than its
    profile's: the dataset key (``cifar10``), or ``npz-<file stem>`` for ``npz:<path>``; ""
    for the profile's own dataset (no ``dataset`` given)."""
    if not dataset:
        return ""
    if dataset.startswith("npz:"):
        stem = Path(dataset[4:]).stem
        return "npz-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    return dataset


@dataclass(frozen=True)
class FigureSaver:
    """Saves one notebook's figures and tables under one name and profile.

    ``save = FigureSaver("01_baselines", PROFILE)`` then ``save.figure(fig, "curves",
    caption=...)`` and ``save.table(df, "summary", caption=...)`` write the same files and
    sidecars as ``save_figure`` / ``save_table`` with ``notebook=`` and ``profile=`` given.

    Attributes:
        notebook: the notebook (or script) that makes the figures, e.g. ``01_baselines``.
        profile: the profile they are made under; ``smoke`` writes to a temporary folder.
        root: override the figures root (default ``figures_root(profile)``).
        dataset: the dataset the notebook runs on when it is not its profile's (the notebook's
            ``DATASET`` parameter): its figures go one folder down, ``<root>/<dataset>/``
            (`dataset_folder`), beside the stand-in's.
    """

    notebook: str
    profile: str | None = None
    root: str | os.PathLike | None = None
    dataset: str = ""

    def _root(self) -> str | os.PathLike | None:
        sub = dataset_folder(self.dataset)
        if not sub:
            return self.root
        base = Path(self.root) if self.root is not None else figures_root(self.profile)
        return base / sub

    def figure(self, fig: matplotlib.figure.Figure, name: str, *, caption: str = "",
               dpi: int = 120) -> Path:
        """``save_figure`` for this notebook; returns the PNG's path."""
        return save_figure(fig, name, notebook=self.notebook, profile=self.profile,
                           caption=caption, root=self._root(), dpi=dpi)

    def table(self, df: pd.DataFrame, name: str, *, caption: str = "",
              floatfmt: str = ".1f") -> Path:
        """``save_table`` for this notebook; returns the CSV's path."""
        return save_table(df, name, notebook=self.notebook, profile=self.profile,
                          caption=caption, root=self._root(), floatfmt=floatfmt)
