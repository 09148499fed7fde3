"""Training throughput of every notebook's runs under its paper recipe, on one CUDA device and
under torchrun over all visible GPUs, with the projected wall time of each full schedule.

    python benchmarks/gpu_bench.py                  # every notebook's runs (the default table)
    python benchmarks/gpu_bench.py --notebooks 02 05 --steps 5
    python benchmarks/gpu_bench.py --methods standard pgd_at:early_stop=0   # per-method table
    python benchmarks/gpu_bench.py --device cpu --notebooks 01 --steps 1 --warmup 0 \
        --batch-size 8                              # a dry run of the script on the CPU

Notebook table: each notebook's runs (`NOTEBOOK_RUNS`: the methods and options its cells train)
under its paper's recipe (`studykit.profiles.recipe("paper", paper)`: architecture, batch size,
epochs); a (recipe, method) pair two notebooks share is measured once. Projected time = recipe
epochs x 50,000 CIFAR-10 training images / (images/s). With several visible GPUs the same table
is measured again under `torch.distributed.run --nproc_per_node=<GPUs>`: every rank trains its
slice of the recipe's global batch with `studykit.distributed.GradientSync` (the step `fit`
runs under torchrun), and images/s counts the global batch.

Per-method table (`--methods`): each method on the paper profile's model (ResNet-18).

Each measured step is the one `studykit.train.fit` runs: `method.prepare_model`, channels_last,
bf16 autocast around `method.training_step`, `zero_grad`, `loss.float().backward()`, SGD with
the recipe's settings, the loop's running sums of loss, accuracy and metrics kept on the device,
and `method.set_progress(step, total_steps)` at mid-training. Methods take the paper profile's
options (`studykit.profiles.method_overrides("paper", name)`); AdA and DeepAugment get an
untrained corruption network of the configured size (the same cost as a pretrained one).
`--warmup` untimed steps come first; timed steps are bracketed by `torch.cuda.synchronize()`.
Projected times count training steps only: per-epoch test evaluation, corruption and
adversarial evaluation, data loading and checkpoints are not included.

Caveat on early stopping: AugMax stops a sample's search once it is misclassified, and a
random model on random data misclassifies most samples at once, so its numbers here are
optimistic; the `augmax:early_stop=None` row of the per-method table is its worst case.
A run whose method fails shows `failed` in its row; the others still run.

Without a CUDA device (and without `--device cpu`) it prints one line and exits with status 0.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from studykit import distributed
from studykit.methods import create_method, list_methods
from studykit.models import create_model
from studykit.profiles import get_profile, method_overrides, recipe
from studykit.train import TrainConfig

DEFAULT_METHODS = ["standard", "augmix", "augmax", "augmax:early_stop=None", "pgd_at"]
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000}  # the profiles' n_train=None

# What each notebook trains at the paper profile: its paper's recipe and its runs (method or
# method:key=value, as the notebook's cells call run_experiment with their default parameters).
NOTEBOOK_RUNS: dict[str, tuple[str, list[str]]] = {
    "00": ("bench", ["standard"]),
    "01": ("bench", ["standard", "augmix"]),
    "02": ("augmax", ["standard", "augmix", "pgd_at", "augmax:norm=bn", "augmax:norm=dubn",
                      "augmax:norm=dubin", "augmax:norm=ibn"]),
    "03": ("augmax", ["standard", "augmix", "pgd_at", "augmix_pgdat", "advmix", "advmax",
                      "augmax"]),
    "04": ("robust_augmix", ["standard", "augmix", "pgd_at:preset=l2_1.0", "robust_augmix"]),
    "05": ("maxup", ["standard", "maxup:m=1", "maxup"]),
    "06": ("ada", ["standard", "deepaugment", "ada"]),
    "07": ("advbn", ["advbn"]),
}


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
          device: torch.device, cfg: TrainConfig | None = None,
          epochs_images: int | None = None) -> tuple[float, float]:
    """Images/s of ``fit``'s step for one method (summed over the ranks under torchrun: each
    trains ``batch_size`` images a step, its slice of the global batch), and peak GPU memory
    in GiB (0 on the CPU)."""
    method = create_method(name, **{**method_overrides("paper", name), **overrides})
    cfg = cfg or TrainConfig()
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = method.prepare_model(create_model(arch, num_classes=10)).to(device)
    if hasattr(method, "attach"):  # AdA, DeepAugment: an untrained network of the paper's size
        from studykit.nets.corruption_net import CorruptionNet

        c = method.config
        method.attach(CorruptionNet(channels=c.net_channels, blocks=c.net_blocks).to(device))
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    sync = distributed.GradientSync(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                          momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    method.seed(cfg.seed + distributed.rank())
    gen = torch.Generator(device=device).manual_seed(distributed.rank())
    # A few distinct batches, as a loader gives, so the model does not fit one batch.
    batches = []
    for _ in range(4):
        x = torch.randint(0, 256, (batch_size, 3, 32, 32), generator=gen, device=device,
                          dtype=torch.uint8).float().div_(255)
        y = torch.randint(0, 10, (batch_size,), generator=gen, device=device)
        batches.append((x.contiguous(memory_format=torch.channels_last) if cuda else x, y))

    global_batch = batch_size * distributed.world_size()
    total_steps = cfg.epochs * math.ceil((epochs_images or TRAIN_IMAGES["cifar10"])
                                         / global_batch)
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
        sync.before_step()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = method.training_step(model, x, y)
        opt.zero_grad(set_to_none=True)
        out.loss.float().backward()
        sync.after_backward()
        opt.step()
        # fit's running sums, on the device: no host synchronization per step.
        loss_sum = loss_sum + out.loss.detach().float() * y.numel()
        correct = correct + (out.logits.detach().argmax(1) == y).sum()
        for k, v in out.metrics.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            sums[k] = sums.get(k, 0.0) + v * y.numel()

    def wait() -> None:
        if cuda:
            torch.cuda.synchronize(device)
        distributed.wait_for_main()

    for i in range(warmup):
        step(i)
    wait()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    _ = float(loss_sum), float(correct), [float(v) for v in sums.values()]  # the epoch's read
    wait()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else 0.0
    return steps * global_batch / seconds, peak


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def notebook_cases(notebooks: list[str], batch_size: int | None
                   ) -> list[tuple[str, str, str, tuple[str, dict], dict]]:
    """(notebooks, recipes, spec, parsed method, recipe) per distinct (recipe values, run):
    a run two notebooks (or two recipes with the same values) share is measured once."""
    cases: dict[tuple, list] = {}
    for nb in notebooks:
        paper, specs = NOTEBOOK_RUNS[nb]
        rec = recipe("paper", paper, batch_size=batch_size)
        for spec in specs:
            key = (tuple(sorted(rec.items())), spec)
            if key not in cases:
                cases[key] = [nb, paper, spec, parse_method(spec), rec]
                continue
            for i, new in ((0, nb), (1, paper)):
                if new not in cases[key][i].split(","):
                    cases[key][i] += f",{new}"
    return [tuple(c) for c in cases.values()]


def measure_notebooks(cases: list, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """One row per case: images/s of the recipe's global batch (over all ranks), peak memory,
    the full schedule's projected time. Under torchrun each rank trains its slice."""
    rows = []
    world = distributed.world_size()
    for nbs, paper, spec, (name, overrides), rec in cases:
        row = {"notebooks": nbs, "recipe": paper, "run": spec, "arch": rec["arch"],
               "batch": rec["batch_size"], "epochs": rec["epochs"]}
        try:
            cfg = TrainConfig(epochs=rec["epochs"], lr=rec["lr"], momentum=rec["momentum"],
                              nesterov=rec["nesterov"], weight_decay=rec["weight_decay"])
            ips, peak = bench(name, overrides, arch=rec["arch"],
                              batch_size=rec["batch_size"] // world, steps=args.steps,
                              warmup=args.warmup, device=device, cfg=cfg)
            row.update(ips=ips, peak=peak, seconds=rec["epochs"] * TRAIN_IMAGES["cifar10"] / ips)
        except Exception as e:  # report the run and go on: the session is for numbers
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next run starts from the same free memory
        rows.append(row)
        if distributed.is_main() and not args.child_out:
            print(table_line(row), flush=True)
    return rows


TABLE_HEAD = ("| notebook | recipe | run | arch | batch | images/s | peak GiB | "
              "projected training time (epochs x 50,000 images) |\n"
              "|---|---|---|---|---|---|---|---|")


def table_line(row: dict) -> str:
    head = (f"| {row['notebooks']} | {row['recipe']} | {row['run']} | {row['arch']} | "
            f"{row['batch']} |")
    if "error" in row:
        return f"{head} failed: {row['error']} | - | - |"
    return (f"{head} {row['ips']:,.0f} | {row['peak']:.1f} | {hours(row['seconds'])} "
            f"({row['epochs']} epochs) |")


def run_ranks(args: argparse.Namespace, argv: list[str], gpus: int) -> int:
    """The notebook table again under torchrun over ``gpus`` GPUs; prints rank 0's rows."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu_bench_ranks_{os.getpid()}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={gpus}", __file__, *argv, "--child-out", str(out)]
    print(f"\n== the same under torchrun over {gpus} GPUs (global batch split over the ranks)",
          flush=True)
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode or not out.exists():
        print(f"torchrun over {gpus} GPUs failed (exit {proc.returncode})")
        return proc.returncode or 1
    rows = json.loads(out.read_text())
    out.unlink()
    print(TABLE_HEAD)
    for row in rows:
        print(table_line(row))
    return 1 if any("error" in r for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    profile = get_profile("paper")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--notebooks", nargs="*", default=list(NOTEBOOK_RUNS),
                   help="notebooks whose runs to measure (default: all)")
    p.add_argument("--methods", nargs="*", default=None,
                   help="the per-method table instead: method or method:key=value,... entries "
                        f"(e.g. {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--arch", default=profile["arch"], help="the per-method table's model")
    p.add_argument("--batch-size", type=int, default=None,
                   help="instead of each recipe's (per-method table: the paper profile's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    p.add_argument("--quick", action="store_true", help="3 timed steps after 1 warm-up")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cpu: a dry run of the script (no bf16, no channels_last)")
    p.add_argument("--no-torchrun", action="store_true",
                   help="only the one-GPU table, even with several GPUs")
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)  # a torchrun rank
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 3, 1
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    unknown = sorted(set(args.notebooks) - set(NOTEBOOK_RUNS))
    if unknown:
        p.error(f"unknown notebook(s) {unknown}; choose from: {', '.join(NOTEBOOK_RUNS)}")
    try:
        cases = [parse_method(spec) for spec in (args.methods or [])]
        nb_cases = [] if args.methods else notebook_cases(args.notebooks, args.batch_size)
    except ValueError as e:
        p.error(str(e))

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device (torch.cuda.is_available() is False); nothing measured.")
        return 0
    if args.child_out:  # one rank of run_ranks
        distributed.setup(args.device)
        device = torch.device(distributed.local_device(args.device))
        world = distributed.world_size()
        nb_cases = [c for c in nb_cases if c[4]["batch_size"] % world == 0]
        rows = measure_notebooks(nb_cases, args, device)
        if distributed.is_main():
            Path(args.child_out).write_text(json.dumps(rows))
        return 0

    device = torch.device(args.device)
    if device.type == "cuda":
        report_versions()
    if args.methods:
        return method_table(args, cases, device)
    print(f"every notebook's runs under its paper recipe; 32x32, "
          f"{'bf16 autocast, channels_last' if device.type == 'cuda' else 'fp32 on the CPU'}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per run\n")
    print(TABLE_HEAD)
    rows = measure_notebooks(nb_cases, args, device)
    status = 1 if any("error" in r for r in rows) else 0
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus > 1 and not args.no_torchrun:
        status = run_ranks(args, argv, gpus) or status
    print("\nProjected time counts training steps only; evaluation (per-epoch test accuracy, "
          "corruption and adversarial evaluation), data loading and checkpoints are not "
          "included.")
    print(f"command: python {' '.join(sys.argv)}")
    return status


def method_table(args: argparse.Namespace, cases: list, device: torch.device) -> int:
    """The per-method table (``--methods``) on the paper profile's model."""
    profile = get_profile("paper")
    batch_size = args.batch_size or profile["batch_size"]
    epochs = profile["epochs"]
    n_train = profile["n_train"] or TRAIN_IMAGES[profile["dataset"]]
    print(f"{args.arch}, batch {batch_size}, 32x32, bf16 autocast, channels_last; "
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
            ips, peak = bench(name, overrides, arch=args.arch, batch_size=batch_size,
                              steps=args.steps, warmup=args.warmup, device=device)
        except Exception as e:  # report the method and go on: the session is for numbers
            failed += 1
            print(f"| {spec} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} "
                  "| - | - | - |", flush=True)
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the next method starts from the same free memory
        if name == "standard" and not overrides and base is None:
            base = ips
        ratio = f"{base / ips:.1f}" if base else "n/a"
        print(f"| {spec} | {ips:,.0f} | {ratio} | {peak:.1f} | "
              f"{hours(epochs * n_train / ips)} |", flush=True)
    print(f"command: python {' '.join(sys.argv)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
