"""`attack_mode`: the model state every inner maximization runs under (eval mode by default, BN
running statistics untouched, each submodule's flag and each parameter's ``requires_grad``
restored afterwards).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

# ---------------------------------------------------------------------------------------------
# Model state handling shared by every attack (and by other inner maximizations).


@contextmanager
def attack_mode(model: nn.Module, *, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Prepare ``model`` for an inner maximization and restore it afterwards.

    Inside the block the model is in eval mode (when ``eval_mode``), its parameters do not
    require grad (so no parameter gradients are computed or accumulated), gradients are
    enabled even if the caller is under ``torch.no_grad()``, and autocast is off (inner
    maximizations run in fp32). On exit, even on an exception,
    every submodule's ``training`` flag and every parameter's ``requires_grad`` are restored.

    With ``eval_mode=False`` the model keeps its modes, so train-mode BatchNorm layers
    normalize with batch statistics; their running statistics (every buffer of every module in
    train mode: ``running_mean``, ``running_var``, ``num_batches_tracked``) are saved on entry
    and copied back on exit, so an attack never updates them. (Setting ``momentum=0`` would not
    be enough: ``num_batches_tracked`` still counts, and ``momentum=None`` averages cumulatively.)

    Args:
        model: the network; changed in place for the duration of the block.
        eval_mode: run the block in eval mode (the default and the right choice for attacks
            used in evaluation and in most adversarial training).

    Yields:
        The same ``model``.
    """
    modes = [(module, module.training) for module in model.modules()]
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    saved_buffers: list[tuple[Tensor, Tensor]] = []
    if not eval_mode:
        for module in model.modules():
            if module.training:
                saved_buffers += [
                    (b, b.detach().clone()) for b in module.buffers(recurse=False) if b is not None
                ]
    try:
        if eval_mode:
            model.eval()
        for p, _ in grad_flags:
            p.requires_grad_(False)
        # Inner maximizations run in fp32 even under a training loop's bf16 autocast: a bf16
        # cast of the first layer's input rounds values near 1 to steps of 1/256, which erases
        # perturbations smaller than a grey level (Linf 1/255, L2 0.1 attacks).
        with torch.enable_grad(), torch.autocast("cuda", enabled=False), \
                torch.autocast("cpu", enabled=False):
            yield model
    finally:
        with torch.no_grad():
            for buffer, saved in saved_buffers:
                if not torch.equal(buffer, saved):
                    buffer.copy_(saved)
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        for module, flag in modes:
            module.training = flag


# ---------------------------------------------------------------------------------------------
# Per-norm hooks.


def _unwrap(model: nn.Module) -> nn.Module:
    # Attack the inner module of a DDP wrapper: a DDP forward whose backward never reaches the
    # parameters would leave its reducer waiting for gradients that never come.
    return model.module if isinstance(model, DistributedDataParallel) else model


