"""Every notebook executes under the smoke profile through papermill, as `studykit study` runs it,
and saves the figures it promises.

Each notebook runs once per session (`notebook_session` in conftest.py): into one run store
and data folder shared by all notebooks (a smoke run two notebooks use trains once), with
figures in a temporary folder, so the test never changes the committed figures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA
from PIL import Image

from studykit import study

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = study.list_notebooks(REPO / "notebooks")

pytestmark = pytest.mark.notebook

# The figures each notebook saves under the smoke profile. Notebook 00 adds two of the real
# JPEG-75 CIFAR-10 copy when it finds it; notebook 03 leaves out its UMAP panel under smoke.
FIGURES = {
    "00_data_and_corruptions": {"samples_synthetic", "gallery_synthetic",
                                "corruption_drop_standard"},
    "01_baselines": {"training_curves", "accuracy_vs_severity", "corruption_drop",
                     "pgd_eps_curve"},
    "02_augmax_dubin": {"ra_by_method", "accuracy_vs_severity", "augmax_search_steps",
                        "bn_variance_per_layer"},
    "03_diversity_and_hardness": {"features_template", "instance_heterogeneity"},
    "04_robust_augmix": {"l2_eps_curve", "accuracy_vs_severity"},
    "05_maxup": {"m_ablation_curve", "certified_accuracy"},
    "06_adversarial_augment": {"reconstructions", "ada_examples", "ssim_kde", "ssim_guard",
                               "deepaugment_ops", "deepaugment_ssim_kde",
                               "ra_bars", "linf_curves", "l2_curves"},
    "07_advbn": {"reconstruction_strip", "shift_strength", "feature_divergence_0",
                 "feature_divergence_1"},
    "08_benchmark": {"drop_heatmap", "accuracy_vs_severity", "clean_vs_ra", "clean_vs_linf"},
}
REAL_DATA_FIGURES = {"00_data_and_corruptions": {"gallery_cifar10_jpeg", "stand_in_scatter"}}
# Figures with one panel or column per dataset: the committed one (made with the real-image copy)
# is only a size reference when that copy is here too.
REAL_DATA_SHAPED = {"corruption_drop_standard"}


def expected_figures(stem: str) -> set[str]:
    # The notebook's REAL_DATA default is the shared folder next to the checkout.
    return FIGURES[stem] | (REAL_DATA_FIGURES.get(stem, set()) if SHARED_DATA.exists() else set())


def check_figure(png: Path) -> None:
    """A real plot: about as tall as the committed figure of that name (the width may follow
    the profile's image count), not blank, with its caption sidecar."""
    with Image.open(png) as im:
        width, height = im.size
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    assert width >= 300 and height >= 200, f"{png.name}: only {width} x {height} px"
    committed = REPO / "figures" / png.parent.name / png.name
    if committed.exists() and (SHARED_DATA.exists() or png.stem not in REAL_DATA_SHAPED):
        with Image.open(committed) as ref:
            ref_w, ref_h = ref.size
        assert abs(height - ref_h) <= 0.1 * ref_h, (png.name, (width, height), (ref_w, ref_h))
        assert 0.4 * ref_w <= width <= 2.5 * ref_w, (png.name, (width, height), (ref_w, ref_h))
    # Not blank: the background is one colour, a plot has axes, text and data on it.
    assert rgb.std() > 0.05, f"{png.name} is (nearly) one colour"
    colours = np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) >= 100, f"{png.name} has only {len(colours)} colours"
    ink = (np.abs(rgb - rgb[0, 0]).max(-1) > 0.1).mean()  # share differing from the corner
    assert ink > 0.02, f"{png.name}: {ink:.1%} of it differs from the background"
    sidecar = png.with_suffix(".md").read_text()
    assert "under profile `smoke`" in sidecar and "(no caption)" not in sidecar, sidecar


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_under_smoke(path, notebook_session):
    run = notebook_session.execute(path)
    assert run.ok, run.error
    executed = json.loads(run.output.read_text())
    assert executed["metadata"]["papermill"]["parameters"]["PROFILE"] == "smoke"
    errors = [o for c in executed["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors[0]
    folder = run.figures / path.stem
    made = {p.stem for p in folder.glob("*.png")}
    assert made == expected_figures(path.stem), f"made {sorted(made)}"
    for name in sorted(made):
        check_figure(folder / f"{name}.png")


# nbval, run over each papermill-executed notebook: it runs the cells again in a new kernel on
# the same run store, where every smoke run is now trained and evaluated, and compares each
# cell's outputs with what papermill recorded. What legitimately differs between a first run
# and a rerun is left out: progress bars (a rerun loads instead of training), log lines on
# stderr, and the figures folder in the paths save_figure returns. Images are not compared
# (nbval's default).
NBVAL_CONFTEST = """
import re

from nbval.plugin import IPyNbCell

BAR = re.compile(r"\\d+%\\|")  # a tqdm bar's text


def kept(outputs):
    out = []
    for o in outputs:
        if o.get("output_type") == "stream" and o.get("name") == "stderr":
            continue
        data = o.get("data", {})
        if ("application/vnd.jupyter.widget-view+json" in data
                and BAR.search(str(data.get("text/plain", "")))):
            continue
        out.append(o)
    return out


compare = IPyNbCell.compare_outputs
IPyNbCell.compare_outputs = lambda self, test, ref, skip_compare=None: compare(
    self, kept(test), kept(ref), skip_compare)


def pytest_collection_modifyitems(items):
    # nbval waits only 5 s (hard-coded) for a cell's output after the kernel replies; on a
    # loaded machine (load 6 on 2 cores) that failed a notebook. Give it as long as a cell.
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = 600
"""


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_nbval_rerun_reproduces_the_papermill_outputs(path, notebook_session, tmp_path):
    run = notebook_session.execute(path)  # done already by the test above: it only reads
    if not run.ok:
        pytest.fail(f"the papermill execution failed (see test_notebook_runs_under_smoke): "
                    f"{run.error[:500]}")
    work = tmp_path / "nbval"
    work.mkdir()
    (work / "conftest.py").write_text(NBVAL_CONFTEST)
    figures = re.escape(str(notebook_session.root / "figures"))
    (work / "sanitize.cfg").write_text(
        f"[figures folder]\nregex: {figures}/(papermill|nbval)\nreplace: <figures>\n")
    (work / path.name).write_bytes(run.output.read_bytes())
    code_cells = sum(c["cell_type"] == "code" for c in json.loads(run.output.read_text())["cells"])
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider", "-p",
         "no:xdist", "--nbval-sanitize-with", "sanitize.cfg", "--nbval-cell-timeout", "600",
         path.name],
        capture_output=True, text=True, timeout=1200, cwd=work,
        env={**os.environ, **notebook_session.env("nbval")},
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    # Every code cell was run and compared.
    assert re.search(rf"\b{code_cells} passed", r.stdout), r.stdout[-2000:]


def test_every_notebook_has_its_figure_list():
    assert sorted(FIGURES) == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        src = "".join(c["source"])
        assert not any(line.lstrip().startswith(("def ", "class ")) for line in src.splitlines())
        if "NBVAL_CHECK_OUTPUT" not in src:
            assert not c.get("outputs"), "outputs must be stripped before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_papermill_reads_every_parameter(path, caplog):
    # `papermill --help-notebook` lists what its parser reads from the parameters cell; a line
    # with a second "=" (in its comment) is skipped with a warning, so its parameter would be
    # missing from the help.
    import ast

    import papermill

    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    assigned = [n.target.id for n in ast.parse("".join(cell["source"])).body
                if isinstance(n, ast.AnnAssign)]
    with caplog.at_level("WARNING", logger="papermill"):
        found = papermill.inspect_notebook(str(path))
    assert list(found) == assigned, caplog.text
