"""Training step time of each method relative to `standard`, measured in one run.

    python benchmarks/step_time.py                              # small_cnn, CPU, 2 threads
    python benchmarks/step_time.py --arch resnet18 --device cuda --batch-size 256

Each method's full `training_step` + backward + SGD step runs on the same random batch for
`--warmup` untimed and `--steps` timed iterations, in a round-robin so that machine noise spreads
over all methods. The expected ratio counts forward/backward passes at the cost of a standard step
(forward 1 + backward 2 = 3 units; an input-gradient backward is about 2 units, without the weight
gradient it is less, so the estimate is an upper bound):
  augmix:  3 views in one forward/backward                       -> 3.0
  augmax:  (steps+1) forward + steps input-backward + 3 forward/backward
           -> ~ (3*11 - 2 + 9) / 3
  pgd_at:  steps forward + input-backward, + 1 forward/backward -> (3*10 + 3) / 3 = 11
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from studykit.methods import create_method
from studykit.models import create_model

EXPECTED = {"standard": 1.0, "augmix": 3.0, "augmax": (3 * 11 - 2 + 9) / 3, "pgd_at": 11.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--methods", nargs="*", default=["standard", "augmix", "augmax", "pgd_at"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    setups = {}
    for name in args.methods:
        method = create_method(name)
        torch.manual_seed(0)
        model = method.prepare_model(create_model(args.arch, 10, width=args.width)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        setups[name] = (method, model.train(), opt)
    times = {name: 0.0 for name in setups}
    for it in range(args.warmup + args.steps):
        for name, (method, model, opt) in setups.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = method.training_step(model, x, y)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if it >= args.warmup:
                times[name] += time.perf_counter() - t0
    base = times.get("standard")
    print(f"| method | ms/step ({args.arch}, batch {args.batch_size}, {args.device}) | "
          "ratio to standard | expected from pass counting |")
    print("|---|---|---|---|")
    for name, t in times.items():
        ms = 1000 * t / args.steps
        ratio = f"{t / base:.1f}" if base else "n/a"
        exp = f"{EXPECTED[name]:.1f}" if name in EXPECTED else "-"
        print(f"| {name} | {ms:.0f} | {ratio} | {exp} |")
    print(f"\ncommand: python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
