"""Matplotlib figures shared by the notebooks, and saving them.

- :mod:`~studykit.viz.save`: ``figures_root``, ``save_figure``, ``save_table`` and
  ``FigureSaver`` (one per notebook): committed figures live in ``figures/<notebook>/<name>.png``
  with a sidecar ``<name>.md`` that says how they were made; under the ``smoke`` profile they
  go to a temporary folder so that tests never change ``figures/``.
- :mod:`~studykit.viz.images`: image grids and the corruption gallery.
- :mod:`~studykit.viz.plots`: result plots (curves, severities, bars, features, statistics).
- :mod:`~studykit.viz.comparison`: many methods side by side (drop heatmap, severity lines,
  trade-off scatters).
- :mod:`~studykit.viz.drops`: per-corruption accuracy drops and the stand-in rank correlation.

Without a display (and without ``$MPLBACKEND``) matplotlib draws with the Agg backend.
"""

import os

import matplotlib

if os.environ.get("MPLBACKEND") is None and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")

from studykit.viz.comparison import (  # noqa: E402
    plot_drop_heatmap,
    plot_severity_lines,
    plot_tradeoff,
)
from studykit.viz.drops import (  # noqa: E402
    RHO_EXCLUDED,
    corruption_drops,
    drop_rank_correlation,
    plot_drop_scatter,
)
from studykit.viz.images import (  # noqa: E402
    corruption_gallery,
    guard_grid,
    image_grid,
    to_numpy_images,
)
from studykit.viz.plots import (  # noqa: E402
    corruption_heatmap,
    plot_accuracy_vs_severity,
    plot_bn_variances,
    plot_columns,
    plot_corruption_drop,
    plot_curves,
    plot_eps_curve,
    plot_feature_panels,
    plot_history,
    plot_history_columns,
    plot_layer_statistics,
    plot_metric_bars,
    plot_ssim_density,
)
from studykit.viz.save import (  # noqa: E402
    FIGURES_ENV,
    FigureSaver,
    dataset_folder,
    figures_root,
    save_figure,
    save_table,
)

__all__ = [
    "FIGURES_ENV",
    "RHO_EXCLUDED",
    "FigureSaver",
    "corruption_drops",
    "corruption_gallery",
    "corruption_heatmap",
    "dataset_folder",
    "drop_rank_correlation",
    "figures_root",
    "guard_grid",
    "image_grid",
    "plot_accuracy_vs_severity",
    "plot_bn_variances",
    "plot_columns",
    "plot_corruption_drop",
    "plot_curves",
    "plot_drop_heatmap",
    "plot_drop_scatter",
    "plot_eps_curve",
    "plot_feature_panels",
    "plot_history",
    "plot_history_columns",
    "plot_layer_statistics",
    "plot_metric_bars",
    "plot_severity_lines",
    "plot_ssim_density",
    "plot_tradeoff",
    "save_figure",
    "save_table",
    "to_numpy_images",
]
