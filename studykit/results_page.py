"""The results page: ``docs/results.md``, generated from the committed figures and tables.

Every notebook writes its figures and tables to ``figures/<notebook>/`` through
``studykit.viz``: a ``<name>.png`` or a ``<name>.csv`` (or both) with a Markdown sidecar
``<name>.md`` that holds a caption, often the table itself, and a line saying which notebook
and profile made it. `write_results_page` collects them into one page: one section per
notebook folder, each entry with its figure (a relative link, so the page renders on GitHub),
its sidecar text and a link to its CSV, and a "Notebook times" table with each notebook's
measured wall time from ``figures/study_times.csv`` (which ``studykit study --profile quick``
keeps up to date; see `studykit.study`). Nothing on the page is typed by hand, so numbers and
prose cannot drift apart.

Run it by itself after changing figures::

    python -m studykit.results_page                 # figures/ -> docs/results.md
    python -m studykit.results_page --figures F --out page.md
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)

TIMES_FILE = "study_times.csv"
NOT_RECORDED = "not recorded"
_NOTEBOOK_DIR = re.compile(r"^(\d\d)_(.+)$")


@dataclass(frozen=True)
class NotebookTime:
    """One notebook's measured run: what the study summary and ``study_times.csv`` hold.

    Attributes:
        name: the notebook's stem (``01_baselines``).
        status: ``ok`` or ``FAILED``.
        seconds: wall time of the papermill execution.
        profile: the profile it ran under.
        date: ISO date (UTC) on which it finished.
        jobs: notebooks the study ran concurrently (times under ``--jobs`` > 1 share the CPU).
    """

    name: str
    status: str
    seconds: float
    profile: str
    date: str
    jobs: int = 1


TIME_COLUMNS = tuple(f.name for f in fields(NotebookTime))


def write_times(path: Path, times: Iterable[NotebookTime]) -> Path:
    """Write ``times`` as CSV (columns `TIME_COLUMNS`), sorted by notebook name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TIME_COLUMNS)
        w.writeheader()
        for t in sorted(times, key=lambda t: t.name):
            w.writerow({**asdict(t), "seconds": f"{t.seconds:.1f}"})
    os.replace(tmp, path)
    return path


def read_times(path: Path) -> dict[str, NotebookTime]:
    """The rows of a times CSV by notebook name; an absent file gives none.

    Raises:
        ValueError: the file lacks a column of `TIME_COLUMNS` (``jobs`` may be absent) or holds
            a value that is not a number where one is expected.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TIME_COLUMNS if c != "jobs" and c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; "
                             f"expected {', '.join(TIME_COLUMNS)}")
        out = {}
        for row in reader:
            try:
                t = NotebookTime(name=row["name"], status=row["status"],
                                 seconds=float(row["seconds"]), profile=row["profile"],
                                 date=row["date"], jobs=int(row.get("jobs") or 1))
            except ValueError as e:
                raise ValueError(f"{path}: bad row {row}: {e}") from None
            out[t.name] = t
    return out


def merge_times(path: Path, new: Iterable[NotebookTime]) -> Path:
    """Update the times CSV at ``path`` with ``new`` rows, keeping other notebooks' rows (a
    study of some notebooks leaves the times of the rest as they were)."""
    times = read_times(path)
    times.update({t.name: t for t in new})
    return write_times(path, times.values())


def _link(target: Path, page_dir: Path) -> str:
    """``target`` relative to the page's folder, with forward slashes (as GitHub wants)."""
    return Path(os.path.relpath(target, page_dir)).as_posix()


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but ``-``/``_`` dropped,
    spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _sidecar_body(text: str, name: str) -> list[str]:
    """The sidecar's lines without its ``# name`` heading; its other headings are demoted
    below the page's entry headings (level 3)."""
    lines = text.strip("\n").splitlines()
    if lines and lines[0].strip() in (f"# {name}", "#" + name):
        lines = lines[1:]
    out = []
    for line in lines:
        if re.match(r"^#{1,3} ", line):
            line = "###" + line
        out.append(line)
    while out and not out[0].strip():
        out.pop(0)
    return out


def _cell(value: str) -> str:
    try:
        v = float(value)
    except ValueError:
        return value.replace("|", "\\|")
    if math.isnan(v):
        return ""
    if re.fullmatch(r"[+-]?\d+", value.strip()):
        return value.strip()
    if abs(v) >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def csv_table(path: Path) -> list[str]:
    """A CSV file as Markdown table lines; numbers to two decimals (three significant digits
    below 1)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in body]
    return lines


def _entries(folder: Path) -> list[str]:
    """Names of the figures and tables in a notebook folder (a png, csv or md stem each)."""
    return sorted({p.stem for p in folder.iterdir()
                   if p.is_file() and p.suffix in (".png", ".csv", ".md")})


def _entry(folder: Path, name: str, page_dir: Path) -> list[str]:
    png, table, sidecar = (folder / f"{name}{ext}" for ext in (".png", ".csv", ".md"))
    lines = [f"### {name}", ""]
    if png.is_file():
        lines += [f"![{name}]({_link(png, page_dir)})", ""]
    if sidecar.is_file():
        body = _sidecar_body(sidecar.read_text(), name)
        has_table = any(line.startswith("|") for line in body)
        lines += body + [""]
    else:
        has_table = False
    if table.is_file():
        if not has_table:  # a table without a sidecar, or a sidecar that only captions it
            lines += csv_table(table) + [""]
        lines += [f"Data: [{table.name}]({_link(table, page_dir)})", ""]
    return lines


def _times_table(names: Sequence[str], times: Mapping[str, NotebookTime]) -> list[str]:
    lines = ["| notebook | status | seconds | profile | date | concurrent notebooks |",
             "|---|---|---:|---|---|---:|"]
    for n in names:
        t = times.get(n)
        if t is None:
            lines.append(f"| {n} | {NOT_RECORDED} | {NOT_RECORDED} |  |  |  |")
        else:
            lines.append(f"| {n} | {t.status} | {t.seconds:.0f} | {t.profile} | {t.date} "
                         f"| {t.jobs} |")
    return lines


def write_results_page(
    figures_dir: Path,
    out: Path,
    timings: Mapping[str, NotebookTime] | Path | None = None,
    notebooks_dir: Path | None = None,
) -> Path:
    """Build the results page from the figures folder and write it to ``out``.

    Args:
        figures_dir: the figures root, holding one folder per notebook (``00_...``) and
            possibly others (``explorers``), each with ``*.png`` / ``*.csv`` / ``*.md``.
        out: the Markdown file to write (its folder is created); links in it are relative to it.
        timings: notebook times by name, or a CSV written by `write_times`; None reads
            ``<figures_dir>/study_times.csv`` when it exists.
        notebooks_dir: where the notebooks are, to link each section to its notebook and to list
            every notebook in the times table; default ``<figures_dir>/../notebooks``.

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: ``figures_dir`` is not a folder.
    """
    figures_dir, out = Path(figures_dir), Path(out)
    if not figures_dir.is_dir():
        raise FileNotFoundError(f"no figures folder at {figures_dir}")
    if timings is None:
        timings = figures_dir / TIMES_FILE
    times = read_times(timings) if isinstance(timings, (str, os.PathLike)) else dict(timings)
    nb_dir = Path(notebooks_dir) if notebooks_dir else figures_dir.parent / "notebooks"
    notebooks = {p.stem: p for p in nb_dir.glob("[0-9][0-9]_*.ipynb")} if nb_dir.is_dir() else {}
    page_dir = out.parent

    folders = sorted(p for p in figures_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    nb_folders = [p for p in folders if _NOTEBOOK_DIR.match(p.name)]
    other = [p for p in folders if not _NOTEBOOK_DIR.match(p.name)]
    names = sorted(set(notebooks) | {p.name for p in nb_folders}
                   | {n for n in times if _NOTEBOOK_DIR.match(n)})

    lines = [
        "# Results",
        "",
        "<!-- Generated by studykit.results_page from the figures folder; do not edit. -->",
        "",
        "This page is generated from the figures and tables the notebooks write to "
        f"[`figures/`]({_link(figures_dir, page_dir)}/) (`python -m studykit.results_page`; "
        "`studykit study --profile quick` rewrites it after a successful run). Each entry is "
        "one figure or table with the caption its notebook wrote, which says how it was made.",
        "",
    ]
    if (figures_dir / "claims.md").exists():
        lines += ["The papers' claims, each with its measured difference, 95 % interval and "
                  f"verdict: [the claims scorecard]({_link(figures_dir / 'claims.md', page_dir)}).",
                  ""]
    lines += [
        "## Contents",
        "",
        "- [Notebook times](#notebook-times)",
    ]
    lines += [f"- [{p.name}](#{_anchor(p.name)})" for p in nb_folders + other]
    lines += [
        "",
        "## Notebook times",
        "",
        "Wall time of each notebook's last successful run under `studykit study`, as the study "
        f"recorded it in `figures/{TIMES_FILE}`. Times depend on the machine and on what else "
        "ran on it; notebooks run concurrently share the CPU.",
        "",
        *_times_table(names, times),
        "",
    ]
    for p in nb_folders + other:
        lines += [f"## {p.name}", ""]
        if p.name in notebooks:
            nb = notebooks[p.name]
            lines += [f"Notebook: [`{nb.name}`]({_link(nb, page_dir)})", ""]
        entries = _entries(p)
        if not entries:
            lines += ["(no figures)", ""]
        for name in entries:
            lines += _entry(p, name, page_dir)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines).rstrip("\n") + "\n")
    os.replace(tmp, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from studykit.paths import project_root

    root = project_root()
    p = argparse.ArgumentParser(
        prog="python -m studykit.results_page",
        description="Write the results page and the claims scorecard from the figures folder.")
    p.add_argument("--figures", type=Path, default=root / "figures",
                   help="figures folder (default figures/)")
    p.add_argument("--out", type=Path, default=root / "docs" / "results.md",
                   help="page to write (default docs/results.md)")
    p.add_argument("--notebooks", type=Path, default=root / "notebooks",
                   help="notebooks folder (default notebooks/)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="studykit.results_page: %(message)s")
    try:
        from studykit.claims import write_scorecard

        write_scorecard(args.figures)
        out = write_results_page(args.figures, args.out, notebooks_dir=args.notebooks)
    except (OSError, ValueError) as e:
        log.error("%s", e)
        return 1
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
