"""Inner maximizations run in fp32 under the training loop's bf16 autocast (skipped without CUDA).

``studykit.train.fit`` wraps ``training_step`` in ``torch.autocast("cuda", dtype=torch.bfloat16)``.
bf16 keeps 8 significant bits: near 0.5 its values are 1/512 apart, more than a Linf 0.25/255
perturbation, so an attack whose image or forward passes went through bf16 would erase or
scramble perturbations below a grey level. DESIGN.md: inner maximizations (attacks, AugMax,
AdA, AdvBN) run in fp32 even under autocast; the training forwards keep autocast.

Which precision a forward ran in is read off the first convolution's output dtype with a
forward hook (its input is still fp32 under autocast: autocast casts inside the conv op, so a
pre-hook would see float32 either way).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from studykit import methods
from studykit.attacks import pgd
from studykit.models import create_model
from studykit.nets.corruption_net import CorruptionNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

EPS = 0.25 / 255
STEPS = 5
INNER_STEP_FIELDS = ("steps", "pgd_steps")  # as in test_gpu_sync.py


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


class ForwardDtypes:
    """Records (weights require grad, output dtype) of each forward of ``module``."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.seen: list[tuple[bool, torch.dtype]] = []

    def __enter__(self) -> ForwardDtypes:
        def hook(module, args, output):
            self.seen.append((module.weight.requires_grad, output.dtype))

        self.handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def dtypes(self) -> set[torch.dtype]:
        return {dtype for _, dtype in self.seen}


def mid_grey_batch(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    # uint8-like values in [64, 191] / 255: away from the [0, 1] box (no clipping) and where
    # bf16's spacing (1/512 or 1/256) is wider than EPS.
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randint(64, 192, (n, 3, 32, 32), generator=g, device="cuda").float() / 255
    y = torch.randint(0, 10, (n,), generator=g, device="cuda")
    return x, y


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", 10, width=8).cuda().eval()


def run_pgd(model, x, y, *, autocast: bool, random_start: bool) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        return pgd(model, x, y, eps=EPS, steps=STEPS, norm="linf", random_start=random_start,
                   generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_perturbation_below_a_grey_level_survives_bf16_autocast(model, random_start):
    x, y = mid_grey_batch()
    ref = run_pgd(model, x, y, autocast=False, random_start=random_start)
    amp = run_pgd(model, x, y, autocast=True, random_start=random_start)
    assert amp.dtype == torch.float32
    d_ref, d_amp = ref - x, amp - x
    moved = d_ref != 0
    assert moved.float().mean() > 0.5, "the fp32 attack should move most pixels"
    # A bf16 round trip would leave |x_adv - x| up to 1/256 (outside the ball) or 0.
    assert d_amp.abs().max() <= EPS + 1e-6, "autocast run leaves the eps ball"
    # Where the fp32 run moves a pixel, the autocast run moves it the same way, within a step.
    step = EPS / 4
    kept = (d_amp != 0) & (d_amp.sign() == d_ref.sign()) & ((d_amp - d_ref).abs() <= step)
    fraction = kept[moved].float().mean().item()
    assert fraction >= 0.99, (
        f"under bf16 autocast only {fraction:.1%} of the pixels the fp32 attack perturbs keep "
        "their perturbation"
    )


def test_pgd_forwards_are_fp32_under_autocast(model):
    x, y = mid_grey_batch(16)
    conv = first_conv(model)
    with ForwardDtypes(conv) as control, torch.autocast("cuda", dtype=torch.bfloat16):
        model(x)
    assert control.dtypes() == {torch.bfloat16}, "the hook must see autocast (control)"
    with ForwardDtypes(conv) as rec:
        run_pgd(model, x, y, autocast=True, random_start=True)
    assert len(rec.seen) >= STEPS
    assert rec.dtypes() == {torch.float32}, f"PGD's forwards ran in {rec.dtypes()}"


def _has_inner_steps(config: methods.MethodConfig) -> bool:
    return any(getattr(config, f, None) for f in INNER_STEP_FIELDS) or (
        hasattr(config, "attack_kwargs") and bool(config.attack_kwargs().get("steps"))
    )


@pytest.mark.parametrize("name", methods.list_methods())
def test_training_step_inner_max_in_fp32_training_forwards_in_bf16(name):
    # Inside an inner maximization (studykit.attacks.attack_mode) the weights do not require
    # grad: those forwards must be fp32. The forwards the loss is trained on keep autocast.
    fields = {f.name for f in dataclasses.fields(methods.get_method_class(name).Config)}
    method = methods.create_method(name, **{f: 2 for f in INNER_STEP_FIELDS if f in fields})
    if hasattr(method, "attach"):  # AdA, DeepAugment: their corruption network
        method.attach(CorruptionNet(8, 1).cuda())
    method.seed(0)
    torch.manual_seed(0)
    net = method.prepare_model(create_model("small_cnn", 10, width=8)).cuda()
    net = net.to(memory_format=torch.channels_last).train()
    x, y = mid_grey_batch(32)
    x = x.contiguous(memory_format=torch.channels_last)
    with ForwardDtypes(first_conv(net)) as rec, torch.autocast("cuda", dtype=torch.bfloat16):
        out = method.training_step(net, x, y)
    out.loss.float().backward()
    inner = {dtype for trains, dtype in rec.seen if not trains}
    outer = {dtype for trains, dtype in rec.seen if trains}
    assert outer == {torch.bfloat16}, f"{name}: training forwards ran in {outer}"
    assert inner <= {torch.float32}, f"{name}: inner-maximization forwards ran in {inner}"
    if _has_inner_steps(method.config):
        assert inner, f"{name}: has inner steps but no forward ran inside an inner maximization"
