"""The command line, profiles, figure saving and the papermill runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from studykit import cli, profiles, study, viz

REPO = Path(__file__).resolve().parents[1]


def test_list_prints_every_section(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for section in ("datasets:", "models:", "corruptions (benchmark):", "corruptions (extra):",
                    "profiles:"):
        assert section in out
    for name in ("synthetic", "resnet18", "gaussian_noise", "speckle_noise", "smoke"):
        assert f"  {name}\n" in out


def test_list_one_section(capsys):
    assert cli.main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("models:") and "datasets:" not in out
    assert "  resnet18\n" in out and "  small_cnn\n" in out


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "studykit", "list", "profiles"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "quick" in r.stdout


def test_profiles_known_and_errors():
    assert profiles.list_profiles() == ["smoke", "quick", "paper"]
    p = profiles.get_profile("smoke", epochs=3)
    assert p["epochs"] == 3 and profiles.PROFILES["smoke"]["epochs"] != 3
    with pytest.raises(ValueError, match="unknown profile 'fast'.*smoke, quick, paper"):
        profiles.get_profile("fast")
    with pytest.raises(ValueError, match="unknown profile key.*'epoch'"):
        profiles.get_profile("smoke", epoch=3)


def test_save_figure_smoke_goes_to_temp(monkeypatch, tmp_path):
    monkeypatch.delenv(viz.FIGURES_ENV, raising=False)
    assert viz.figures_root("smoke") != REPO / "figures"
    fig = plt.figure()
    path = viz.save_figure(fig, "probe", notebook="nb", root=tmp_path, caption="a probe")
    plt.close(fig)
    assert path == tmp_path / "nb" / "probe.png" and path.stat().st_size > 0
    assert "a probe" in (tmp_path / "nb" / "probe.md").read_text()


def test_select_notebooks_by_prefix_and_error():
    available = study.list_notebooks(REPO / "notebooks")
    assert available and all(p.suffix == ".ipynb" for p in available)
    assert study.select_notebooks(["00"], available)[0].stem == "00_data_and_corruptions"
    with pytest.raises(ValueError, match="unknown notebook '99_nothing'"):
        study.select_notebooks(["99_nothing"], available)
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        study.run_study(profile="huge")


def test_another_dataset_writes_beside_the_profiles_figures(tmp_path):
    import pandas as pd

    assert viz.dataset_folder("") == "" and viz.dataset_folder("cifar10") == "cifar10"
    assert viz.dataset_folder("npz:/x/real copy.npz") == "npz-real_copy"
    own = viz.FigureSaver("01_baselines", "quick", root=tmp_path)
    other = viz.FigureSaver("01_baselines", "quick", root=tmp_path, dataset="cifar10")
    own.table(pd.DataFrame({"a": [1]}), "t")
    other.table(pd.DataFrame({"a": [2]}), "t")
    assert (tmp_path / "01_baselines" / "t.csv").exists()
    assert (tmp_path / "cifar10" / "01_baselines" / "t.csv").exists()


def test_a_dataset_study_checks_the_dataset_and_takes_the_notebooks_that_accept_it(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; choose one of: synthetic"):
        study.run_study(profile="smoke", dataset="imagenet")
    with pytest.raises(ValueError, match="no file at"):
        study.run_study(profile="smoke", dataset=f"npz:{tmp_path / 'missing.npz'}")
    takes = {p.stem: study.takes_parameter(p, "DATASET")
             for p in study.list_notebooks(REPO / "notebooks")}
    assert all(takes.values()), takes
    assert cli.main(["study", "--profile", "smoke", "--dataset", "imagenet"]) == 2


def _tiny_notebook(path, text: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE: str = "quick"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(text)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


def test_a_rerun_continues_from_what_is_done(tmp_path, monkeypatch):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny_notebook(nbs / "01_ok.ipynb", "print('one')")
    _tiny_notebook(nbs / "02_fails.ipynb", "raise RuntimeError('broken cell')")
    _tiny_notebook(nbs / "03_ok.ipynb", "print('three')")
    monkeypatch.setenv(viz.FIGURES_ENV, str(tmp_path / "figures"))
    kw = dict(profile="smoke", notebooks_dir=nbs, output_dir=tmp_path / "out")
    # A failing notebook is reported with its cell; the one after it still runs.
    with pytest.raises(RuntimeError, match=r"(?s)02_fails.*In \[\d+\].*broken cell"):
        study.run_study(**kw)
    out = tmp_path / "out" / "smoke"
    assert (out / "03_ok.ipynb").is_file()
    summary = (out / "summary.md").read_text()
    assert "| 02_fails | FAILED |" in summary and "| 03_ok | ok |" in summary
    # Fixed and run again: only the notebook that failed is executed.
    _tiny_notebook(nbs / "02_fails.ipynb", "print('fixed')")
    results = {r.name: r for r in study.run_study(**kw)}
    assert [k for k, r in results.items() if r.skipped] == ["01_ok", "03_ok"]
    assert results["02_fails"].ok and not results["02_fails"].skipped
    assert "ok (done earlier)" in (out / "summary.md").read_text()
    # A changed notebook runs again; so does every notebook with rerun=True.
    _tiny_notebook(nbs / "03_ok.ipynb", "print('three, changed')")
    results = {r.name: r for r in study.run_study(**kw)}
    assert [k for k, r in results.items() if not r.skipped] == ["03_ok"]
    assert not any(r.skipped for r in study.run_study(**kw, rerun=True))


def test_two_notebooks_at_a_time_share_the_cores(tmp_path, monkeypatch):
    assert study.kernel_threads(2, cores=2) == 1 and study.kernel_threads(2, cores=16) == 8
    assert study.kernel_threads(4, cores=2) == 1 and study.kernel_threads(1, cores=6) == 6
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    probe = ("import os, torch\n"
             "open(os.path.join({out!r}, '{name}.txt'), 'w').write("
             "f\"{{os.environ.get('OMP_NUM_THREADS')}} {{torch.get_num_threads()}}\")")
    for name in ("01_a", "02_b"):
        _tiny_notebook(nbs / f"{name}.ipynb", probe.format(out=str(tmp_path), name=name))
    for k in study.THREAD_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(viz.FIGURES_ENV, str(tmp_path / "figures"))
    monkeypatch.setattr(study.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    study.run_study(profile="smoke", notebooks_dir=nbs, output_dir=tmp_path / "out", jobs=2)
    # Each kernel ran on one intra-op thread; the study's own environment is restored.
    assert [(tmp_path / f"{n}.txt").read_text() for n in ("01_a", "02_b")] == ["1 1", "1 1"]
    assert all(k not in study.os.environ for k in study.THREAD_VARS)
