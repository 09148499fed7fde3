"""Throughput of each CIFAR-10-C corruption on 32x32 batches.

Times ``studykit.corruptions.corrupt`` per corruption at severity 3 (or, with
``--all-severities``, the mean over severities 1-5) and prints a Markdown table of images per
second, followed by the command that reproduces it.

    python benchmarks/corruption_throughput.py --n-images 2000 --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from studykit.corruptions import corrupt, list_corruptions

logger = logging.getLogger("corruption_throughput")


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Natural-looking test images: low-frequency colour noise plus two hard edges."""
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bicubic")
    mid = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear")
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    x = 0.6 * low + 0.2 * mid
    for _ in range(2):
        angle = torch.rand(n, 1, 1, 1, generator=g) * 2 * torch.pi
        offset = torch.rand(n, 1, 1, 1, generator=g) - 0.5
        colour = torch.rand(n, 3, 1, 1, generator=g) - 0.5
        x = x + 0.4 * colour * ((torch.cos(angle) * xx + torch.sin(angle) * yy) > offset)
    return x.clamp(0, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_corruption(x: torch.Tensor, name: str, severity: int, batch_size: int, seed: int) -> float:
    """Seconds to corrupt all of ``x`` in batches (after one warm-up batch)."""
    g = torch.Generator().manual_seed(seed)
    corrupt(x[: min(len(x), 64)], name, severity, generator=g)  # warm-up: caches, kernels
    _sync(x.device)
    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        corrupt(x[i : i + batch_size], name, severity, generator=g)
    _sync(x.device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument(
        "--all-severities", action="store_true", help="report the mean over severities 1-5"
    )
    parser.add_argument("--kind", default="all", choices=["benchmark", "extra", "all"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = smooth_images(args.n_images, 32, args.seed).to(device)
    severities = [1, 2, 3, 4, 5] if args.all_severities else [args.severity]
    label = "mean over severities 1-5" if args.all_severities else f"severity {args.severity}"

    rows = []
    for name in list_corruptions(args.kind):
        rates = [args.n_images / time_corruption(x, name, s, args.batch_size, args.seed)
                 for s in severities]  # fmt: skip
        rate = sum(rates) / len(rates)
        logger.info("%-18s %10.0f images/s", name, rate)
        rows.append(f"| {name} | {rate:,.0f} |")

    command = " ".join(
        ["python", "benchmarks/corruption_throughput.py", *map(shlex.quote, sys.argv[1:])]
        if argv is None
        else ["python", "benchmarks/corruption_throughput.py", *map(shlex.quote, argv)]
    )
    lines = [
        f"Corruption throughput, {args.n_images} images of 32x32, batch {args.batch_size}, "
        f"{label}, device {device}, {args.threads} threads, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}.",
        "",
        "| corruption | images/s |",
        "|---|---:|",
        *rows,
        "",
        f"Reproduce: `{command}`",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
