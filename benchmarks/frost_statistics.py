"""Statistics of the frost layer's crops: synthesized texture and, if installed, photographs.

Draws ``--n-crops`` frost crops (32x32) from ``studykit.corruptions.frost`` with a seeded CPU
generator and prints a Markdown table of the pooled mean, the std of the per-crop mean, the mean
pixel std inside a crop and the per-channel means, overall and per photo style (synthesized) or
per photograph (when the five reference files are in ``studykit.corruptions.frost.frost_dir()`` or
``--folder``), next to the reference photographs' numbers from CORRUPTIONS.md.

    python benchmarks/frost_statistics.py --n-crops 2000 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch

from studykit.corruptions.frost import (
    FROST_PHOTOGRAPHS,
    FROST_STYLES,
    find_frost_photographs,
    photograph_frost,
    synthesized_frost,
)

logger = logging.getLogger("frost_statistics")

REFERENCE = "| reference photographs (CORRUPTIONS.md) | all | ~0.64 | ~0.15 | | | | |"


def row(source: str, part: str, crops: torch.Tensor) -> str:
    crop_means = crops.mean((1, 2, 3))
    spread = crop_means.std().item() if len(crops) > 1 else float("nan")
    r, g, b = crops.mean((0, 2, 3)).tolist()
    inside = crops.std((2, 3)).mean().item()
    return (
        f"| {source} | {part} (n={len(crops)}) | {crops.mean().item():.3f} | {spread:.3f} "
        f"| {inside:.3f} | {r:.3f} | {g:.3f} | {b:.3f} |"
    )


def table(source: str, crops: torch.Tensor, index: torch.Tensor, names: list[str]) -> list[str]:
    rows = [row(source, "all", crops)]
    for i, name in enumerate(names):
        rows.append(row(source, name, crops[index == i]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-crops", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32, help="crop height and width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folder", type=Path, default=None, help="where the photographs are")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    n, size = args.n_crops, args.size

    def draws() -> torch.Generator:
        return torch.Generator().manual_seed(args.seed)

    # Both layers draw the style / photograph index first: replaying that draw labels each crop.
    lines = [
        f"Frost crops, {n} of {size}x{size}, seed {args.seed}, torch {torch.__version__}.",
        "",
        "| source | part | pooled mean | std of crop means | pixel std in crop | R | G | B |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        REFERENCE,
    ]
    index = torch.randint(len(FROST_STYLES), (n,), generator=draws())
    crops = synthesized_frost(n, size, size, draws())
    lines += table("synthesized", crops, index, [f"style {i + 1}" for i in range(5)])
    if find_frost_photographs(args.folder) is not None:
        index = torch.randint(len(FROST_PHOTOGRAPHS), (n,), generator=draws())
        crops = photograph_frost(n, size, size, draws(), args.folder)
        lines += table("photographs", crops, index, list(FROST_PHOTOGRAPHS))
    else:
        logger.info("frost photographs not installed: synthesized texture only")

    command = ["python", "benchmarks/frost_statistics.py"]
    command += map(shlex.quote, sys.argv[1:] if argv is None else argv)
    lines += ["", f"Reproduce: `{' '.join(command)}`"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
