"""Evaluation forward throughput by batch size and memory format, measured in one run.

    python benchmarks/eval_throughput.py                      # small_cnn, CPU, 2 threads
    python benchmarks/eval_throughput.py --arch resnet18 --images 500

`studykit.evaluation.accuracy` (clean accuracy and every corrupted set) runs batches of
``EVAL_BATCH`` images in channels_last order; this prints seconds per 1,000 images for the
combinations around it, as ratios to the old setting (500 images, NCHW), with the model in eval
mode and no gradients. Each setting is timed ``--repeats`` times in a round-robin, best kept.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from studykit.evaluation import EVAL_BATCH
from studykit.models import create_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[500, EVAL_BATCH, 128])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.arch, 10).eval()
    x = torch.rand(args.images, 3, 32, 32)
    settings = [(b, cl) for b in args.batch_sizes for cl in (False, True)]
    best = {s: float("inf") for s in settings}
    preds = {}
    with torch.no_grad():
        model(x[:8])
        for _ in range(args.repeats):
            for bs, cl in settings:
                t0 = time.perf_counter()
                out = []
                for i in range(0, args.images, bs):
                    xb = x[i:i + bs]
                    if cl:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    out.append(model(xb).argmax(1))
                best[(bs, cl)] = min(best[(bs, cl)], time.perf_counter() - t0)
                preds[(bs, cl)] = torch.cat(out)
    base = best.get((500, False))
    ref = preds[settings[0]]
    print(f"| batch | memory format | s per 1,000 images ({args.arch}, {args.images} images) "
          "| ratio to 500 NCHW | same predictions |")
    print("|---:|---|---:|---:|---|")
    for bs, cl in settings:
        s = best[(bs, cl)] * 1000 / args.images
        ratio = f"{base / best[(bs, cl)]:.2f}x" if base else "n/a"
        mark = " (EVAL_BATCH, used)" if (bs, cl) == (EVAL_BATCH, True) else ""
        same = bool(torch.equal(preds[(bs, cl)], ref))
        print(f"| {bs}{mark} | {'channels_last' if cl else 'NCHW'} | {s:.3f} | {ratio} | {same} |")
    print(f"\ncommand: python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
