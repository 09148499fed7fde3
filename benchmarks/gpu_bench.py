"""Training throughput per method on one CUDA device, and the paper profile's projected wall time.

    python benchmarks/gpu_bench.py                  # standard, augmix, augmax, pgd_at; ResNet-18
    python benchmarks/gpu_bench.py --quick          # fewer steps (a smoke check of the script)
    python benchmarks/gpu_bench.py --methods standard pgd_at:early_stop=0 --steps 50

Each method trains `create_model("resnet18", num_classes=10)` (the paper profile's model) on
random 32x32 batches of uint8-like images in [0, 1], with the step `studykit.train.fit` runs:
`method.prepare_model`, channels_last, bf16 autocast around `method.training_step`,
`zero_grad`, `loss.float().backward()`, SGD with the TrainConfig defaults, and the loop's
running sums of loss, accuracy and metrics kept on the device (`fit` reads them once per epoch;
a `.item()` a method makes inside its step is its own cost and is timed), and
`method.set_progress(step, total_steps)` at mid-training where a method has it. Methods take
the paper profile's options (`studykit.profiles.method_overrides("paper", name)`). `--warmup`
untimed steps come first (cuDNN algorithm choice, allocator growth); the timed steps are
bracketed by `torch.cuda.synchronize()`.

Projected time = epochs x training images / (images/s), with the paper profile's epochs
(200) and dataset (CIFAR-10: 50,000 training images). It is training only: per-epoch test
evaluation, corruption and adversarial evaluation, data loading and checkpoints are not
included.

Caveat on early stopping: AugMax stops a sample's search once it is misclassified, and a
random model on random data misclassifies most samples at once, so its number here is
optimistic; the `augmax:early_stop=None` row (all 10 steps for every sample) is its worst
case. PGD-AT's default runs every step (no early stop), so its row is what training pays.
A method whose options are rejected shows `failed` in its row; the others still run.

Without a CUDA device it prints one line and exits with status 0.
"""

from __future__ import annotations

import argparse
import ast
import math
import re
import sys
import time

import torch

from studykit.methods import create_method, list_methods
from studykit.models import create_model
from studykit.profiles import get_profile, method_overrides
from studykit.train import TrainConfig

DEFAULT_METHODS = ["standard", "augmix", "augmax", "augmax:early_stop=None", "pgd_at"]
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000}  # the profiles' n_train=None


def parse_method(spec: str) -> tuple[str, dict]:
    """``"augmax:early_stop=None,steps=5"`` -> ``("augmax", {"early_stop": None, "steps": 5})``."""
    name, _, opts = spec.partition(":")
    if name not in list_methods():
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(list_methods())}")
    overrides = {}
    for item in filter(None, opts.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"method option {item!r} in {spec!r} is not key=value")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value  # a bare string such as norm=dubn
    return name, overrides


def cuda_versions() -> tuple[str | None, str | None]:
    """CUDA version torch was built for, and the one torchvision's ops were compiled for."""
    tv_cuda = None
    try:
        from torchvision.extension import _check_cuda_version

        code = _check_cuda_version()
        if code > 0:
            tv_cuda = f"{code // 1000}.{code % 1000 // 10}"
    except Exception as e:  # torchvision missing or its ops failing to load: report, go on
        tv_cuda = f"unavailable ({type(e).__name__}: {e})"
    return torch.version.cuda, tv_cuda


def report_versions() -> None:
    try:
        import torchvision

        tv_version = torchvision.__version__
    except Exception as e:
        tv_version = f"not importable ({type(e).__name__})"
    t_cuda, tv_cuda = cuda_versions()
    print(f"torch {torch.__version__} (CUDA {t_cuda}), torchvision {tv_version} (CUDA {tv_cuda})")
    tags = [re.search(r"\+(cu\d+)", v) for v in (torch.__version__, tv_version)]
    if t_cuda and tv_cuda and t_cuda != tv_cuda:
        print(f"WARNING: torch is built for CUDA {t_cuda} but torchvision for CUDA {tv_cuda}; "
              "install a matched pair (see pyproject.toml)")
    elif all(tags) and tags[0].group(1) != tags[1].group(1):
        print(f"WARNING: torch and torchvision carry different CUDA tags "
              f"({tags[0].group(1)} vs {tags[1].group(1)})")
    dev = torch.cuda.get_device_properties(0)
    try:
        driver = f", driver supports CUDA {torch._C._cuda_getDriverVersion() / 1000:.1f}"
    except Exception:  # a private call; only informative
        driver = ""
    print(f"device: {dev.name}, {dev.total_memory / 2**30:.0f} GiB, "
          f"compute capability {dev.major}.{dev.minor}{driver}")


def bench(name: str, overrides: dict, *, arch: str, batch_size: int, steps: int, warmup: int,
          device: torch.device) -> tuple[float, float]:
    """Images/s of ``fit``'s step for one method, and peak GPU memory in GiB."""
    method = create_method(name, **{**method_overrides("paper", name), **overrides})
    cfg = TrainConfig()
    torch.manual_seed(0)
    model = method.prepare_model(create_model(arch, num_classes=10)).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                          momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    method.seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(0)
    # A few distinct batches, as a loader gives, so the model does not fit one batch.
    batches = []
    for _ in range(4):
        x = torch.randint(0, 256, (batch_size, 3, 32, 32), generator=gen, device=device,
                          dtype=torch.uint8).float().div_(255)
        y = torch.randint(0, 10, (batch_size,), generator=gen, device=device)
        batches.append((x.contiguous(memory_format=torch.channels_last), y))

    total_steps = cfg.epochs * math.ceil(TRAIN_IMAGES["cifar10"] / batch_size)
    sums: dict[str, torch.Tensor | float] = {}
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)

    def step(i: int) -> None:
        nonlocal loss_sum, correct
        x, y = batches[i % len(batches)]
        if hasattr(method, "set_progress"):
            # Mid-training, where ramps (PGD-AT's eps, MaxUp's warm-up) are at full strength:
            # at step 0 an eps ramp gives eps 0, and an attack with eps 0 costs nothing.
            method.set_progress(total_steps // 2 + i, total_steps)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = method.training_step(model, x, y)
        opt.zero_grad(set_to_none=True)
        out.loss.float().backward()
        opt.step()
        # fit's running sums, on the device: no host synchronization per step.
        loss_sum = loss_sum + out.loss.detach().float() * y.numel()
        correct = correct + (out.logits.detach().argmax(1) == y).sum()
        for k, v in out.metrics.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            sums[k] = sums.get(k, 0.0) + v * y.numel()

    for i in range(warmup):
        step(i)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    _ = float(loss_sum), float(correct), [float(v) for v in sums.values()]  # the epoch's read
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    return steps * batch_size / seconds, peak


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main(argv: list[str] | None = None) -> int:
    profile = get_profile("paper")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="*", default=DEFAULT_METHODS,
                   help="method or method:key=value,... entries (default: %(default)s)")
    p.add_argument("--arch", default=profile["arch"])
    p.add_argument("--batch-size", type=int, default=profile["batch_size"])
    p.add_argument("--steps", type=int, default=20, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per method")
    p.add_argument("--quick", action="store_true", help="5 timed steps after 1 warm-up")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 5, 1
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    try:
        cases = [parse_method(spec) for spec in args.methods]
    except ValueError as e:
        p.error(str(e))

    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device (torch.cuda.is_available() is False); nothing measured.")
        return 0

    device = torch.device("cuda")
    report_versions()
    epochs = profile["epochs"]
    n_train = profile["n_train"] or TRAIN_IMAGES[profile["dataset"]]
    print(f"{args.arch}, batch {args.batch_size}, 32x32, bf16 autocast, channels_last; "
          f"{args.warmup} warm-up + {args.steps} timed steps per method\n")
    print("| method | images/s | step time / standard | peak GiB | "
          f"projected training time, paper profile ({epochs} epochs x {n_train:,} images) |")
    print("|---|---|---|---|---|")
    # Plain `standard` first, so every later row has its ratio even if the run is cut short.
    order = sorted(zip(args.methods, cases), key=lambda c: c[1] != ("standard", {}))
    base = None
    failed = 0
    for spec, (name, overrides) in order:
        try:
            ips, peak = bench(name, overrides, arch=args.arch, batch_size=args.batch_size,
                              steps=args.steps, warmup=args.warmup, device=device)
            torch.cuda.empty_cache()  # the next method starts from the same free memory
        except Exception as e:  # report the method and go on: the session is for numbers
            failed += 1
            print(f"| {spec} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} "
                  "| - | - | - |", flush=True)
            torch.cuda.empty_cache()
            continue
        if name == "standard" and not overrides and base is None:
            base = ips
        ratio = f"{base / ips:.1f}" if base else "n/a"
        print(f"| {spec} | {ips:,.0f} | {ratio} | {peak:.1f} | "
              f"{hours(epochs * n_train / ips)} |", flush=True)
    print("\nProjected time counts training steps only; evaluation (per-epoch test accuracy, "
          "corruption and adversarial evaluation), data loading and checkpoints are not "
          "included.")
    print(f"command: python {' '.join(sys.argv)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
