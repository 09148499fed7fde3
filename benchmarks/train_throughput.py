"""Training throughput of the `standard` method per model (images/s), one SGD step per batch.

    python benchmarks/train_throughput.py                      # CPU-sized models, 2 threads
    python benchmarks/train_throughput.py --device cuda --batch-size 256     # every model

Each model runs `--warmup` untimed steps, then `--steps` timed steps of `studykit.train.fit`'s
inner work (forward, CE loss, backward, SGD step) on random 32x32 batches, through the same
Method.training_step the trainer calls.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from studykit.methods import create_method
from studykit.models import create_model, list_models

# The widths the profiles use next to each architecture's default.
DEFAULT_CASES = [("small_cnn", None), ("resnet18", 16), ("resnet18", 32), ("resnet18", None),
                 ("preact_resnet18", None), ("wrn40_2", None), ("resnext29", None),
                 ("preact_resnet50", None)]
# On a CPU, the ones the README reports for it: full-width ResNet-18 already trains at about 40
# images/s on 2 cores, and the deeper and wider models are slower still; `--models` names any.
CPU_CASES = [("small_cnn", None), ("resnet18", 16), ("resnet18", None), ("wrn40_2", None)]


def bench(arch: str, width: int | None, *, device: torch.device, batch_size: int, steps: int,
          warmup: int) -> float:
    model = create_model(arch, 10, width=width).to(device).train()
    method = create_method("standard")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        out = method.training_step(model, x, y)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--models", nargs="*", default=None,
                   help="arch or arch:width entries (default: every model on CUDA, "
                        "the CPU-sized ones on a CPU)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = DEFAULT_CASES if device.type == "cuda" else CPU_CASES
    if args.models:
        cases = []
        for m in args.models:
            arch, _, w = m.partition(":")
            if arch not in list_models():
                p.error(f"unknown arch {arch!r}; choose from {', '.join(list_models())}")
            cases.append((arch, int(w) if w else None))
    print(f"| model | width | images/s ({args.device}, batch {args.batch_size}, "
          f"{args.threads} threads) |")
    print("|---|---|---|")
    for arch, width in cases:
        ips = bench(arch, width, device=device, batch_size=args.batch_size, steps=args.steps,
                    warmup=args.warmup)
        print(f"| {arch} | {width or 'default'} | {ips:,.0f} |", flush=True)
    print(f"\ncommand: python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
