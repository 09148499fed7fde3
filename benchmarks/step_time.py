"""Training step time of each method relative to `standard`, measured in one run.

    python benchmarks/step_time.py                              # small_cnn, CPU, 2 threads
    python benchmarks/step_time.py --arch resnet18 --device cuda --batch-size 256

The method options are a profile's (``--profile``): by default the quick profile's on a CPU
(half a minute on 2 cores: AdA with 1 FGSM step and an 8-channel, 1-block corruption network)
and the paper's on CUDA (the Config defaults: AdA's 10 steps and the 64-channel, 16-block
network, which on 2 CPU cores runs for well over 10 minutes). ``--profile paper`` on a CPU
times the paper's settings there.

Each method's full `training_step` + backward + SGD step runs on the same batch for `--warmup`
untimed and `--steps` timed iterations, in a round-robin so that machine noise spreads over all
methods. The batch is synthetic images with their labels, and the models are briefly trained on
it first (`--pretrain` steps of standard training), so that AugMax's early stop sees a model
that classifies most clean images correctly, as in training, rather than an untrained one that
misclassifies everything at once.

The pass count is the expected ratio, at the cost of a standard step (forward 1 + backward 2 =
3 units; an input-gradient backward is about 2 units, without the weight gradient it is less, so
the count is an upper bound):
  augmix:  3 views in one forward/backward                                  -> 3.0
  augmax:  s sample-steps of search (forward + input-backward, 3 units each, counted as they
           were computed: the early stop computes only the active samples) + 3 views
           forward/backward                                                 -> s + 3
  pgd_at:  steps forward + input-backward, + 1 forward/backward            -> steps + 1
  robust_augmix: steps of L2 PGD + 3 views in three forwards/backwards     -> steps + 3
  maxup:   m forwards of the copies without gradient (1 unit each; a low-resolution copy of
           side r costs (r / 32)^2 of that) + 1 forward/backward           -> 1 + m / 3
           (low-res 16: 1 + m / 12)
  deepaugment: one forward/backward of the batch, half of it corrupted       -> 1
  ada:     steps classifier forward + input-backward, + the AdA batch forward/backward
                                                                            -> steps + 1
           (ada and deepaugment: + 1 with ``clean=True``, which adds the clean batch; without
           the corruption network's own forward/backward, which has per-example weights and
           is reported as the difference)
  advbn:   m steps forward + input-backward through the head (the layers after the cut), then
           the head forward/backward on the shifted and on the clean features, and one encoder
           forward without gradient                                          -> <= m + 2
           (the head is only part of the network: the later the cut, the cheaper)

AdA and DeepAugment get a corruption network (``--net-channels``, ``--net-blocks``; default:
the profile's) pretrained briefly to reconstruct the batch (``--net-steps`` Adam steps), and the
share of AdA's step spent in the SSIM guard is measured by timing the guard alone on that step's
images (the guard's time depends on how many images it catches, printed with it).

A method may carry options after a colon, e.g. ``maxup:low_res=16`` or ``maxup:m=8,low_res=16``
(values are Python literals).
"""

from __future__ import annotations

import argparse
import ast
import copy
import sys
import time

import torch
import torch.nn.functional as F

from studykit.analysis import ssim
from studykit.data.synthetic import make_synthetic
from studykit.methods import create_method
from studykit.models import create_model
from studykit.nets.corruption_net import CorruptionNet
from studykit.profiles import list_profiles, method_overrides
from studykit.ssim_guard import ssim_guard
from studykit.train import use_channels_last


def pass_count(name: str, method, metrics: dict) -> float | None:
    """Expected cost in standard steps (module docstring); AugMax's from the steps it took."""
    if name == "standard":
        return 1.0
    if name == "augmix":
        return 3.0
    if name == "augmax":
        return metrics["search_cost"] * method.config.steps + 3.0
    if name == "pgd_at":
        return method.config.attack_kwargs()["steps"] + 1.0
    if name == "robust_augmix":
        return method.config.steps + 3.0
    if name == "maxup":
        side = method.config.low_res or 32
        return 1.0 + method.config.m / 3 * min(1.0, (side / 32) ** 2)
    if name == "deepaugment":
        return 1.0 + method.config.clean
    if name == "ada":
        return method.config.steps + 1.0 + method.config.clean
    if name == "advbn":
        return method.config.steps + 2.0
    return None


def reconstruction_net(x: torch.Tensor, channels: int, blocks: int, steps: int):
    """A corruption network trained for ``steps`` Adam steps to reconstruct ``x``."""
    net = CorruptionNet(channels, blocks).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = F.l1_loss(net(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def guard_time(method, model, x, y, repeats: int) -> tuple[float, float]:
    """Seconds of one SSIM guard call on an AdA/DeepAugment step's images, and the fraction of
    images it caught."""
    x_hat, _, metrics = method.corrupt(model, x, y, method.rng(x.device))
    t0 = time.perf_counter()
    for _ in range(repeats):
        ssim_guard(x, x_hat, method.config.ssim_threshold)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats, float(metrics["guard_frac"])


def parse_method(spec: str) -> tuple[str, dict]:
    """``"maxup:m=8,low_res=16"`` -> ``("maxup", {"m": 8, "low_res": 16})``."""
    name, _, opts = spec.partition(":")
    options = {}
    for pair in filter(None, opts.split(",")):
        key, _, raw = pair.partition("=")
        options[key] = ast.literal_eval(raw)
    return name, options


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--pretrain", type=int, default=60,
                   help="standard steps on the batch before timing (0: an untrained model)")
    p.add_argument("--profile", default="auto", choices=("auto", *list_profiles()),
                   help="apply this profile's method overrides (paper: the Config defaults; "
                        "auto: quick on a CPU, paper on CUDA)")
    p.add_argument("--methods", nargs="*",
                   default=["standard", "augmix", "augmax", "pgd_at", "robust_augmix", "maxup",
                            "maxup:low_res=16", "deepaugment", "ada", "advbn",
                            "advbn:stage=3"])
    p.add_argument("--net-channels", type=int, default=None)
    p.add_argument("--net-blocks", type=int, default=None)
    p.add_argument("--net-steps", type=int, default=100)
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="memory format of the models and batch (auto: as training uses it)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.profile == "auto":
        args.profile = "paper" if device.type == "cuda" else "quick"
    data = make_synthetic(args.batch_size, 10, seed=0)
    x = (data.x_train.float() / 255).to(device)
    y = data.y_train.to(device)
    torch.manual_seed(0)
    trained = create_model(args.arch, 10, width=args.width).to(device).train()
    opt = torch.optim.SGD(trained.parameters(), lr=0.05, momentum=0.9)
    for _ in range(args.pretrain):
        loss = F.cross_entropy(trained(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        clean_acc = float((trained.eval()(x).argmax(1) == y).float().mean()) * 100
    channels_last = {"on": True, "off": False}.get(args.channels_last)
    if channels_last is None:
        channels_last = use_channels_last(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    setups = {}
    nets = {}
    for spec in args.methods:
        name, options = parse_method(spec)
        method = create_method(name, **{**method_overrides(args.profile, name), **options})
        if hasattr(method, "attach"):  # AdA, DeepAugment
            c = method.config
            shape = (args.net_channels or c.net_channels, args.net_blocks or c.net_blocks)
            if shape not in nets:
                nets[shape] = reconstruction_net(x, *shape, args.net_steps)
            method.attach(nets[shape])
        model = copy.deepcopy(trained)
        model = method.prepare_model(model).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        setups[spec] = (method, model.train(), opt)
    times = {name: 0.0 for name in setups}
    metric_sums: dict[str, dict[str, float]] = {name: {} for name in setups}
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
                for k, v in out.metrics.items():
                    metric_sums[name][k] = metric_sums[name].get(k, 0.0) + float(v)
    base = times.get("standard")
    print(f"clean accuracy of the pre-trained model on the batch: {clean_acc:.0f}%; "
          f"method options of profile {args.profile!r}; channels_last {channels_last}")
    print(f"| method | ms/step ({args.arch}, batch {args.batch_size}, {args.device}) | "
          "ratio to standard | pass count |")
    print("|---|---|---|---|")
    for name, t in times.items():
        ms = 1000 * t / args.steps
        ratio = f"{t / base:.1f}" if base else "n/a"
        means = {k: v / args.steps for k, v in metric_sums[name].items()}
        count = pass_count(parse_method(name)[0], setups[name][0], means)
        exp = f"{count:.1f}" if count is not None else "-"
        if "search_steps" in means:
            exp += (f" (steps taken {means['search_steps']:.1f} per sample, "
                    f"{100 * means['search_cost']:.0f}% of the full search computed)")
        print(f"| {name} | {ms:.0f} | {ratio} | {exp} |")
    for name, (method, model, _) in setups.items():
        if parse_method(name)[0] == "ada":
            seconds, caught = guard_time(method, model, x, y, args.steps)
            share = seconds / (times[name] / args.steps)
            print(f"\nSSIM guard in {name}: {1000 * seconds:.1f} ms per step, {100 * share:.1f} % "
                  f"of the step ({100 * caught:.0f} % of the images caught)")
    for shape, net in nets.items():
        print(f"corruption net {shape[0]} channels, {shape[1]} blocks: reconstruction SSIM "
              f"{float(ssim(net(x), x).mean()):.3f} on the batch")
    print(f"\ncommand: python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
