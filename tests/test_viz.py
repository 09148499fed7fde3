"""Tests for studykit.viz: the figure saver, the stand-in rank correlation and its scatter."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
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


def test_figure_saver_writes_what_save_figure_and_save_table_write(tmp_path):
    saver = viz.FigureSaver("07_advbn", "quick", root=tmp_path / "saver")
    df = pd.DataFrame({"acc": [71.25, np.nan]}, index=pd.Index(["a", "b"], name="model"))
    fig = plt.figure()
    png = saver.figure(fig, "probe", caption="a probe")
    csv = saver.table(df, "probe_table", caption="a table", floatfmt=".2f")
    viz.save_figure(fig, "probe", notebook="07_advbn", profile="quick", root=tmp_path / "plain",
                    caption="a probe")
    viz.save_table(df, "probe_table", notebook="07_advbn", profile="quick",
                   root=tmp_path / "plain", caption="a table", floatfmt=".2f")
    plt.close(fig)
    assert png == tmp_path / "saver" / "07_advbn" / "probe.png" and png.stat().st_size > 0
    assert csv == tmp_path / "saver" / "07_advbn" / "probe_table.csv"
    for name in ("probe.md", "probe_table.csv", "probe_table.md"):
        assert (tmp_path / "saver" / "07_advbn" / name).read_text() == \
            (tmp_path / "plain" / "07_advbn" / name).read_text()
    md = (tmp_path / "saver" / "07_advbn" / "probe_table.md").read_text()
    assert "| a | 71.25 |" in md and "profile `quick`" in md and "`07_advbn`" in md


def test_figure_saver_smoke_goes_to_the_figures_env(monkeypatch, tmp_path):
    monkeypatch.setenv(viz.FIGURES_ENV, str(tmp_path))
    fig = plt.figure()
    path = viz.FigureSaver("nb", "smoke").figure(fig, "probe")
    plt.close(fig)
    assert path == tmp_path / "nb" / "probe.png"
    assert "(no caption)" in (tmp_path / "nb" / "probe.md").read_text()


def test_plot_columns_draws_a_line_per_column_against_the_index():
    table = pd.DataFrame({"standard": [80.0, 60.0, 40.0], "AdvBN": [82.0, 70.0, 65.0]},
                         index=pd.Index([0, 1, 4], name="m"))
    fig = viz.plot_columns(table, ylabel="accuracy (%)", title="shift")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["standard", "AdvBN"]
    assert lines[1].get_xdata().tolist() == [0, 1, 4]
    assert lines[1].get_ydata().tolist() == [82.0, 70.0, 65.0]
    assert ax.get_xlabel() == "m" and ax.get_ylabel() == "accuracy (%)"
    assert ax.get_title() == "shift"
    plt.close(fig)
