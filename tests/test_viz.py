"""Tests for studykit.viz: the stand-in rank correlation and its scatter."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from studykit import viz
from studykit.corruptions import list_corruptions


def _drops() -> pd.DataFrame:
    names = list_corruptions("all")
    real = [float(i) for i in range(len(names))]
    synthetic = list(real)
    j = names.index("jpeg_compression")
    synthetic[j] = 100.0  # the one corruption whose rank means nothing on the JPEG copy
    return pd.DataFrame({"real": real, "synthetic": synthetic},
                        index=pd.Index(names, name="corruption"))


def test_drop_rank_correlation_leaves_out_jpeg():
    drops = _drops()
    assert viz.drop_rank_correlation(drops, "real", "synthetic") == pytest.approx(1.0)
    with_jpeg = viz.drop_rank_correlation(drops, "real", "synthetic", exclude=())
    assert with_jpeg < 1.0
    # Rows that are not corruptions (a notebook's "clean accuracy" row) are ignored too.
    drops.loc["clean accuracy"] = [60.0, 10.0]
    assert viz.drop_rank_correlation(drops, "real", "synthetic") == pytest.approx(1.0)


def test_drop_rank_correlation_is_spearman():
    drops = _drops().drop(index="jpeg_compression")
    drops["synthetic"] = drops["real"].iloc[::-1].to_numpy()
    assert viz.drop_rank_correlation(drops, "real", "synthetic") == pytest.approx(-1.0)


def test_plot_drop_scatter_title_names_the_exclusion():
    fig = viz.plot_drop_scatter(_drops(), "real", "synthetic")
    title = fig.axes[0].get_title()
    assert "rho = 1.00" in title and "18 corruptions" in title and "jpeg_compression" in title
    plt.close(fig)
