"""Data-parallel training over several processes (``torchrun``): who this process is, the process
group, and the three collectives the training loop needs.

``torchrun --nproc_per_node=N -m studykit train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; `setup` reads them and joins
the process group (NCCL on CUDA, gloo on the CPU). Every rank holds the whole model and takes
its slice of every global batch (``studykit.data.DeviceLoader``'s ``rank``/``world_size``);
after each backward `GradientSync` averages the gradients over the ranks (one coalesced
all-reduce, what ``DistributedDataParallel``'s reducer does after ``backward``) and, before
each step, gives every rank rank 0's buffers (DDP's ``broadcast_buffers``). The method's step
sees the local model, never a wrapper: a method's inner search (AugMax, PGD, AdA, the AdvBN
feature attack) runs on the rank's own copy, a different number of search steps per rank (early
stopping) cannot make the ranks wait on each other, and methods that call into the model
(``forward_until``, BN routing) work unchanged.

Rank 0 alone writes the run store (``studykit.runs.Run.writable`` is False on the other ranks);
the others wait for it (`wait_for_main`, over a gloo group with a long time-out, so a wait for a
lock or an evaluation never trips NCCL's watchdog) and then read what it wrote.

With one process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) every function here is a no-op.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

# How long a rank waits for rank 0 (a run lock held by another job, an evaluation) before the
# process group gives up: $STUDYKIT_DIST_TIMEOUT seconds, default one day.
_WAIT = datetime.timedelta(seconds=float(os.environ.get("STUDYKIT_DIST_TIMEOUT", 86_400)))
_host_group: Any = None


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` without."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as e:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({e})") from None


def world_size() -> int:
    """Processes in this training (the process group's size once joined, else the env's)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return env_world()[1]


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return env_world()[0]


def is_main() -> bool:
    """Whether this process writes the run store (rank 0, or the only process)."""
    return rank() == 0


def local_device(device: str) -> str:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    _, world, local = env_world()
    if world > 1 and device == "cuda":
        return f"cuda:{local}"
    return device


def check_batch_size(batch_size: int) -> None:
    """The global batch is split evenly over the ranks.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of processes.
    """
    n = world_size()
    if n > 1 and batch_size % n:
        raise ValueError(f"batch_size={batch_size} does not divide over {n} processes; use a "
                         f"multiple of {n} (the global batch is split evenly over the ranks)")


def setup(device: str) -> bool:
    """Join torchrun's process group (once); True when training is distributed.

    NCCL for a CUDA device (each rank on ``cuda:LOCAL_RANK``), gloo on the CPU; a second gloo
    group carries `wait_for_main`'s waits.
    """
    global _host_group
    _, world, local = env_world()
    if world <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=_WAIT)
        log.info("rank %d of %d joined the process group (%s)", dist.get_rank(), world,
                 dist.get_backend())
    if _host_group is None:
        _host_group = (dist.new_group(backend="gloo", timeout=_WAIT)
                       if dist.get_backend() != "gloo" else dist.group.WORLD)
    return True


def wait_for_main() -> None:
    """A barrier of all ranks on the host (no-op with one process): rank 0 reaches it when what
    it writes is written, the others then read it."""
    if world_size() > 1 and dist.is_initialized():
        dist.barrier(group=_host_group)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself with one process)."""
    if world_size() <= 1 or not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_host_group)
    return box[0]


def epoch_seed_parts(seed: int, epoch: int) -> tuple[int, int, int]:
    """What a rank's random streams of an epoch are derived from: ``(seed, epoch, rank)``, so a
    resumed distributed run draws what an uninterrupted one draws, rank by rank."""
    return seed, epoch, rank()


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """Every BatchNorm (the auxiliary ones of DuBIN and AdvBN too) as ``nn.SyncBatchNorm``,
    whose batch statistics are those of the global batch (CUDA only)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


class GradientSync:
    """The data-parallel part of a training step over the ranks (inactive with one process).

    At construction every rank takes rank 0's parameters and buffers. `before_step` gives the
    ranks rank 0's buffers (BN running statistics), `after_backward` replaces each gradient by
    its mean over the ranks: one all-reduce of all gradients flattened into one tensor with a
    flag per parameter, so a parameter no rank used keeps no gradient (as with one process),
    and one every rank used gets the average a single process with the global batch computes.
    """

    def __init__(self, model: nn.Module) -> None:
        self.active = world_size() > 1 and dist.is_initialized()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers = [b for b in model.buffers()]
        if self.active:
            for t in [*model.parameters(), *self.buffers]:
                dist.broadcast(t.data, src=0)

    def before_step(self) -> None:
        if self.active:
            for b in self.buffers:
                dist.broadcast(b, src=0)

    def after_backward(self) -> None:
        if not self.active or not self.params:
            return
        p0 = self.params[0]
        used = torch.tensor([float(p.grad is not None) for p in self.params], device=p0.device)
        flat = torch.cat([used] + [(p.grad if p.grad is not None else torch.zeros_like(p))
                                   .reshape(-1).float() for p in self.params])
        dist.all_reduce(flat)
        flags, offset = flat[: len(self.params)].tolist(), len(self.params)
        n = dist.get_world_size()
        for p, used in zip(self.params, flags):
            g = flat[offset: offset + p.numel()]
            offset += p.numel()
            if used == 0:
                p.grad = None
                continue
            grad = g.view_as(p).div_(n).to(p.dtype)
            if p.grad is None:
                p.grad = grad.clone(memory_format=torch.preserve_format)
            else:
                p.grad.copy_(grad)

    def sum(self, *values: torch.Tensor | float) -> list[float]:
        """Each value summed over the ranks (an epoch's loss, accuracy and sample counts)."""
        # On the model's device: NCCL reduces CUDA tensors only, gloo either.
        device = self.params[0].device if self.params else "cpu"
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        if self.active:
            dist.all_reduce(t)
        return t.cpu().tolist()
