"""The package's shape: one noun per module (a size limit), no import cycle, and imports that
only run down the floors of the architecture (docs/development.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "studykit"
MAX_LINES = 620  # the house limit is about 600

# Floors, lowest first: a module may import its own floor and the ones below, never above.
FLOORS: tuple[tuple[str, ...], ...] = (
    # 0: foundations (no studykit imports but each other)
    ("studykit", "studykit.paths", "studykit.rng", "studykit.threads", "studykit.checks",
     "studykit.locks", "studykit.distributed", "studykit.devices", "studykit.digests",
     "studykit.losses", "studykit.schedules", "studykit.profiles"),
    # 1: data, image operations, networks
    ("studykit.runs", "studykit.run_integrity", "studykit.data", "studykit.corruptions",
     "studykit.augment", "studykit.models", "studykit.normalization", "studykit.outcomes"),
    # 2: algorithms on those
    ("studykit.attacks", "studykit.analysis", "studykit.augmax_search", "studykit.advbn",
     "studykit.weight_perturbation", "studykit.ssim_guard", "studykit.certify",
     "studykit.nets", "studykit.train", "studykit.methods.base", "studykit.preflight"),
    # 3: training methods and evaluation
    ("studykit.methods", "studykit.evaluation", "studykit.analysis.hardness",
     "studykit.analysis.bn_variance", "studykit.analysis.corruption_ssim"),
    # 4: experiments and what shows them
    ("studykit.experiment", "studykit.run_evaluation", "studykit.comparison", "studykit.viz",
     "studykit.widgets", "studykit.claims", "studykit.zoo", "studykit.benchmark",
     "studykit.step_cost"),
    # 5: entry points
    ("studykit.study", "studykit.results_page", "studykit.sweep", "studykit.cli",
     "studykit.__main__"),
)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _floor(module: str) -> int:
    """The floor of the longest matching prefix (``studykit.data.npz``: ``studykit.data``'s)."""
    best, depth = None, -1
    for level, names in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = level, name.count(".")
    if best is None:
        raise AssertionError(f"{module} is on no floor: add it to FLOORS in {__file__}")
    return best


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every studykit module each module imports (top level and inside functions)."""

    def resolve(target: str) -> str | None:
        parts = target.split(".")
        while parts:
            if ".".join(parts) in mods:
                return ".".join(parts)
            parts.pop()
        return None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                hit = resolve(target) if target.startswith("studykit") else None
                if hit and hit != module:
                    edges[module].add(hit)
    return edges


def test_no_module_over_the_size_limit():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_cycle():
    edges = _imports(_modules())
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_imports_only_run_down_the_floors():
    edges = _imports(_modules())
    upward = sorted(f"{a} (floor {_floor(a)}) -> {b} (floor {_floor(b)})"
                    for a, targets in edges.items() for b in targets
                    if _floor(b) > _floor(a) and not b.startswith(a + "."))
    assert not upward, "imports that run up:\n" + "\n".join(upward)


def test_the_floors_table_names_only_real_modules():
    mods = _modules()
    stale = [name for names in FLOORS for name in names if name not in mods]
    assert not stale, f"FLOORS names modules that do not exist: {stale}"
