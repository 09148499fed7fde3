"""The generated results page (studykit.results_page) and how `studykit study` feeds it."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from studykit import results_page, study
from studykit.results_page import NOT_RECORDED, NotebookTime

LINK = re.compile(r"\]\(([^)#]+)\)")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fake project: two notebook folders of figures, one without, and a non-notebook one."""
    figures = tmp_path / "figures"
    a = figures / "00_alpha"
    a.mkdir(parents=True)
    (a / "curve.png").write_bytes(b"\x89PNG fake")
    (a / "curve.md").write_text("# curve\n\nAccuracy vs eps, two models.\n\n"
                                "Made by `00_alpha` under profile `quick` on 2026-01-02.\n")
    (a / "summary.csv").write_text("method,clean_acc,ra\nstandard,64.1,56.875333\n")
    (a / "summary.md").write_text("# summary\n\nClean accuracy and RA (%).\n\n"
                                  "| method | clean_acc | ra |\n|---|---|---|\n"
                                  "| standard | 64.1 | 56.9 |\n\n## Notes\n\nOne seed.\n")
    b = figures / "01_beta"
    b.mkdir()
    (b / "bare.csv").write_text("name,value,count,small\nx,1.23456,7,0.0012345\n")
    (figures / "explorers").mkdir()
    (figures / "explorers" / "shot.png").write_bytes(b"\x89PNG fake")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for n in ("00_alpha", "01_beta", "02_gamma"):
        (notebooks / f"{n}.ipynb").write_text("{}")
    return tmp_path


def _page(project: Path, **kw) -> str:
    out = results_page.write_results_page(project / "figures", project / "docs" / "results.md",
                                          notebooks_dir=project / "notebooks", **kw)
    assert out == project / "docs" / "results.md"
    return out.read_text()


def _times_rows(text: str) -> dict[str, list[str]]:
    part = text.split("## Notebook times", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in part.splitlines() if line.startswith("| 0")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def test_one_section_per_notebook_folder_in_order_then_the_others(project):
    text = _page(project)
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == ["Contents", "Notebook times", "00_alpha", "01_beta", "explorers"]
    # Entries are level 3, one per figure or table name, a sidecar's own headings below them.
    assert re.findall(r"^### (.+)$", text, flags=re.M) == ["curve", "summary", "bare", "shot"]
    assert "#### Notes" in text
    assert "\n# curve" not in text and "\n# summary" not in text
    for anchor in ("#notebook-times", "#00_alpha", "#01_beta", "#explorers"):
        assert f"]({anchor})" in text


def test_every_link_is_relative_to_the_page_and_resolves(project):
    text = _page(project)
    links = LINK.findall(text)
    assert "../figures/00_alpha/curve.png" in links
    assert "../figures/00_alpha/summary.csv" in links
    assert "../notebooks/00_alpha.ipynb" in links
    page_dir = project / "docs"
    for link in links:
        assert not Path(link).is_absolute(), link
        assert (page_dir / link).exists(), link
    assert "![curve](../figures/00_alpha/curve.png)" in text


def test_sidecar_text_is_kept_and_its_table_not_repeated(project):
    text = _page(project)
    assert "Accuracy vs eps, two models." in text
    assert "Made by `00_alpha` under profile `quick` on 2026-01-02." in text
    # summary.md carries the table: it appears once (from the sidecar, rounded as written
    # there), with a link to the CSV, and the CSV's unrounded value is not rendered.
    assert text.count("| method | clean_acc | ra |") == 1
    assert "| standard | 64.1 | 56.9 |" in text
    assert "56.875333" not in text
    assert "Data: [summary.csv](../figures/00_alpha/summary.csv)" in text


def test_a_table_without_sidecar_is_rendered_from_its_csv(project):
    text = _page(project)
    assert "| name | value | count | small |" in text
    assert "| x | 1.23 | 7 | 0.00123 |" in text
    assert "Data: [bare.csv](../figures/01_beta/bare.csv)" in text


def test_times_table_lists_every_notebook_and_says_when_none_was_recorded(project):
    times = {"00_alpha": NotebookTime("00_alpha", "ok", 123.4, "quick", "2026-01-02", 2)}
    rows = _times_rows(_page(project, timings=times))
    assert list(rows) == ["00_alpha", "01_beta", "02_gamma"]  # 02 has a notebook, no figures
    assert rows["00_alpha"] == ["ok", "123", "quick", "2026-01-02", "2"]
    assert rows["01_beta"][:2] == [NOT_RECORDED, NOT_RECORDED]
    assert rows["02_gamma"][:2] == [NOT_RECORDED, NOT_RECORDED]


def test_times_come_from_study_times_csv_by_default_and_merge_keeps_other_rows(project):
    path = project / "figures" / results_page.TIMES_FILE
    results_page.write_times(path, [NotebookTime("00_alpha", "ok", 10.0, "quick", "2026-01-01"),
                                    NotebookTime("01_beta", "ok", 20.0, "quick", "2026-01-01")])
    results_page.merge_times(path, [NotebookTime("01_beta", "ok", 33.0, "quick", "2026-01-05")])
    assert {n: t.seconds for n, t in results_page.read_times(path).items()} == {
        "00_alpha": 10.0, "01_beta": 33.0}
    rows = _times_rows(_page(project))
    assert rows["00_alpha"][1] == "10" and rows["01_beta"][1:4] == ["33", "quick", "2026-01-05"]
    assert rows["02_gamma"][0] == NOT_RECORDED
    # The times file is not a figure: no entry of its own.
    assert "### study_times" not in _page(project)


def test_a_damaged_times_file_is_reported(project):
    path = project / "figures" / results_page.TIMES_FILE
    path.write_text("name,seconds\n00_alpha,3\n")
    with pytest.raises(ValueError, match="missing column"):
        _page(project)


def test_missing_figures_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no figures folder"):
        results_page.write_results_page(tmp_path / "nope", tmp_path / "out.md")


def test_command_writes_the_page(project, capsys):
    out = project / "page.md"
    assert results_page.main(["--figures", str(project / "figures"), "--out", str(out),
                              "--notebooks", str(project / "notebooks")]) == 0
    assert "## 00_alpha" in out.read_text()
    # The page sits next to figures/ here, so its links start there.
    assert "(figures/00_alpha/curve.png)" in out.read_text()


def _fake_study(monkeypatch, project: Path, seconds: dict[str, float], fail: str = ""):
    def execute(path, output_dir, *, profile, parameters=None):
        output_dir.mkdir(parents=True, exist_ok=True)
        return study.NotebookResult(path.stem, output_dir / path.name, seconds[path.stem],
                                    ok=path.stem != fail, error="boom" if path.stem == fail
                                    else "", date="2026-02-03")

    monkeypatch.setattr(study, "execute_notebook", execute)


def test_quick_study_writes_summaries_times_and_the_page(project, monkeypatch):
    figures = project / "figures"
    monkeypatch.setenv("STUDYKIT_FIGURES", str(figures))
    _fake_study(monkeypatch, project, {"00_alpha": 12.3, "01_beta": 45.6, "02_gamma": 7.0})
    runs = project / "runs"
    study.run_study("quick", notebooks=["00", "01"], output_dir=runs,
                    notebooks_dir=project / "notebooks", jobs=1)

    summary = json.loads((runs / "quick" / "summary.json").read_text())
    assert [(r["name"], r["status"], r["seconds"], r["profile"], r["date"]) for r in summary] == [
        ("00_alpha", "ok", 12.3, "quick", "2026-02-03"),
        ("01_beta", "ok", 45.6, "quick", "2026-02-03")]
    with (runs / "quick" / "summary.csv").open() as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["00_alpha", "01_beta"]
    assert "| 01_beta | ok | 46 |" in (runs / "quick" / "summary.md").read_text()

    times = results_page.read_times(figures / results_page.TIMES_FILE)
    assert {n: t.seconds for n, t in times.items()} == {"00_alpha": 12.3, "01_beta": 45.6}
    # These figures are not the project's figures/, so the page goes next to them.
    rows = _times_rows((figures / "results.md").read_text())
    assert rows["00_alpha"][:2] == ["ok", "12"] and rows["02_gamma"][0] == NOT_RECORDED

    # A later study of one notebook updates its row and keeps the others.
    study.run_study("quick", notebooks=["02"], output_dir=runs,
                    notebooks_dir=project / "notebooks")
    rows = _times_rows((figures / "results.md").read_text())
    assert [rows[n][1] for n in ("00_alpha", "01_beta", "02_gamma")] == ["12", "46", "7"]


def test_a_failed_study_leaves_times_and_page_alone(project, monkeypatch):
    figures = project / "figures"
    monkeypatch.setenv("STUDYKIT_FIGURES", str(figures))
    _fake_study(monkeypatch, project, {"00_alpha": 1.0, "01_beta": 2.0}, fail="01_beta")
    with pytest.raises(RuntimeError, match="01_beta: boom"):
        study.run_study("quick", notebooks=["00", "01"], output_dir=project / "runs",
                        notebooks_dir=project / "notebooks")
    statuses = json.loads((project / "runs" / "quick" / "summary.json").read_text())
    assert [r["status"] for r in statuses] == ["ok", "FAILED"]
    assert not (figures / results_page.TIMES_FILE).exists()
    assert not (figures / "results.md").exists()


def test_smoke_study_writes_its_page_into_its_own_figures_folder(project, monkeypatch):
    monkeypatch.delenv("STUDYKIT_FIGURES", raising=False)
    _fake_study(monkeypatch, project, {"00_alpha": 1.5})
    seen = {}
    real = study.write_results

    def spy(profile, figures, times, notebooks_dir=None):
        seen["figures"] = Path(figures)
        return real(profile, figures, times, notebooks_dir)

    monkeypatch.setattr(study, "write_results", spy)
    study.run_study("smoke", notebooks=["00"], output_dir=project / "runs",
                    notebooks_dir=project / "notebooks")
    tmp_figures = seen["figures"]
    assert tmp_figures != project / "figures" and "smoke" in tmp_figures.name
    rows = _times_rows((tmp_figures / "results.md").read_text())
    assert rows["00_alpha"][:3] == ["ok", "2", "smoke"]
    assert not (tmp_figures / results_page.TIMES_FILE).exists()
    assert not (project / "figures" / "results.md").exists()
    assert not (project / "figures" / results_page.TIMES_FILE).exists()
    shutil.rmtree(tmp_figures)
