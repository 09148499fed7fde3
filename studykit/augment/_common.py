"""Input checks, per-sample parameters and the stage timer shared by the augmentation ops."""

from __future__ import annotations

import time

import torch
from torch import Tensor

# Helpers.



def _check_images(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor of shape (N, C, H, W); got {got}")


def _per_sample(value: float | Tensor, x: Tensor, name: str, dtype=None) -> Tensor:
    """A scalar or (N,) parameter as an (N, 1, 1, 1) tensor on x's device."""
    if isinstance(value, (int, float)):  # filled on the device: no host-to-device copy (sync)
        t = torch.full((), value, device=x.device, dtype=dtype or x.dtype)
    else:
        t = torch.as_tensor(value, device=x.device, dtype=dtype or x.dtype)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"{name} must be a scalar or have shape ({x.shape[0]},); got {tuple(t.shape)}"
        )
    return t.view(-1, 1, 1, 1)


def _timed(timings: dict[str, float] | None, name: str, device: torch.device):
    """Context manager adding the wall time of its block to ``timings[name]`` (if a dict)."""
    return _Timer(timings, name, device)


class _Timer:
    def __init__(self, timings: dict[str, float] | None, name: str, device: torch.device):
        self.timings, self.name, self.device = timings, name, device

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> None:
        if self.timings is not None:
            self._sync()
            self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if self.timings is not None:
            self._sync()
            dt = time.perf_counter() - self.t0
            self.timings[self.name] = self.timings.get(self.name, 0.0) + dt

