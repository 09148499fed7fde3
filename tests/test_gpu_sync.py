"""Host synchronizations in a training step on CUDA (skipped without a CUDA device).

A synchronization (``.item()``, ``bool(t)``, ``nonzero``, a copy between host and device from
pageable memory) stalls the host until the GPU has drained its queue, so the next kernels are
launched late and the GPU idles. ``torch.cuda.set_sync_debug_mode("warn")`` makes each one
raise a warning, attributed to the Python line that caused it; these tests count them.

The rule, per method: an inner maximization with an early exit may synchronize once per inner
step (to learn which samples are still active, or whether any are), and nothing else in a
training step may synchronize at all: no logging reads (metrics stay 0-dim device tensors that
the loop reads once per epoch), no host-to-device copies of random draws (draw on the device).
The allowance is read off the method's config: the number of inner steps in its ``steps`` and
``pgd_steps`` fields where it has them, else 0. That is an upper bound (a method whose inner
maximization has no early exit needs none, e.g. ``pgd`` with ``early_stop=None``: tested below).
"""

from __future__ import annotations

import collections
import dataclasses
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from studykit import methods
from studykit.attacks import pgd
from studykit.models import create_model
from studykit.nets.corruption_net import CorruptionNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# Config fields that count the inner steps of an inner maximization.
INNER_STEP_FIELDS = ("steps", "pgd_steps")
SMALL_STEPS = 2  # the tests set each such field to this, to stay short
BATCH = 32


def inner_steps(config: methods.MethodConfig) -> int:
    """The inner steps a method's config asks for (0 for a method without inner maximization)."""
    total = 0
    for name in INNER_STEP_FIELDS:
        value = getattr(config, name, None)
        if value is None and hasattr(config, "attack_kwargs"):  # pgd_at: steps from its preset
            value = config.attack_kwargs().get(name)
        total += int(value or 0)
    return total


def small_overrides(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(methods.get_method_class(name).Config)}
    return {f: SMALL_STEPS for f in INNER_STEP_FIELDS if f in fields}


@contextmanager
def count_syncs() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the synchronization warnings raised inside the block (into the yielded list)."""
    syncs: list[warnings.WarningMessage] = []
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every occurrence, not once per line
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield syncs
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    syncs += [w for w in caught if "synchroniz" in str(w.message)]


def where(syncs: list[warnings.WarningMessage]) -> str:
    lines = collections.Counter(f"{w.filename}:{w.lineno}" for w in syncs)
    return ", ".join(f"{loc} x{n}" for loc, n in lines.most_common())


def cuda_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randint(0, 256, (BATCH, 3, 32, 32), generator=g, device="cuda").float() / 255
    y = torch.randint(0, 10, (BATCH,), generator=g, device="cuda")
    return x.contiguous(memory_format=torch.channels_last), y


def prepared_model(method: methods.Method) -> torch.nn.Module:
    torch.manual_seed(0)
    model = method.prepare_model(create_model("small_cnn", 10, width=8)).cuda()
    return model.to(memory_format=torch.channels_last).train()


def train_step(method: methods.Method, model: torch.nn.Module, x, y) -> None:
    # As studykit.train.fit runs it on CUDA: bf16 autocast around the step, then backward.
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = method.training_step(model, x, y)
    out.loss.float().backward()


CASES = [(name, {}) for name in methods.list_methods()] + [
    ("pgd_at", {"early_stop": 0}),  # FAT: PGD's early-exit path
]


@pytest.mark.parametrize(("name", "extra"), CASES,
                         ids=[n + "".join(f"-{k}={v}" for k, v in e.items()) for n, e in CASES])
def test_training_step_synchronizes_at_most_once_per_inner_step(name, extra):
    method = methods.create_method(name, **small_overrides(name), **extra)
    if hasattr(method, "attach"):  # AdA, DeepAugment: their corruption network
        method.attach(CorruptionNet(8, 1).cuda())
    method.seed(0)
    model = prepared_model(method)
    x, y = cuda_batch()
    train_step(method, model, x, y)  # warm-up: lazy CUDA/cuDNN set-up is not the method's
    model.zero_grad(set_to_none=True)
    allowed = inner_steps(method.config)
    with count_syncs() as syncs:
        train_step(method, model, x, y)
    assert len(syncs) <= allowed, (
        f"{name}: {len(syncs)} host synchronizations in one training step + backward, "
        f"allowed {allowed} (one per inner step); at {where(syncs)}"
    )


def test_pgd_without_early_stop_never_synchronizes():
    # The random start is drawn from a CPU generator, as a method's is: that must cost no copy.
    model = create_model("small_cnn", 10, width=8).cuda().eval()
    x, y = cuda_batch(1)
    kw = dict(eps=8 / 255, steps=SMALL_STEPS, early_stop=None)
    pgd(model, x, y, **kw, generator=torch.Generator().manual_seed(0))  # warm-up
    with count_syncs() as syncs, torch.autocast("cuda", dtype=torch.bfloat16):
        pgd(model, x, y, **kw, generator=torch.Generator().manual_seed(0))
    assert not syncs, f"pgd(early_stop=None) synchronized {len(syncs)} times: {where(syncs)}"


def test_count_syncs_sees_a_synchronization():
    # The counter itself: an .item() on a CUDA tensor is one synchronization.
    t = torch.ones(4, device="cuda")
    with count_syncs() as syncs:
        t.sum().item()
    assert len(syncs) == 1, where(syncs)
    with count_syncs() as syncs:
        (t * 2).sum()
    assert not syncs, where(syncs)
