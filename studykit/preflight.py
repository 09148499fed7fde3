"""Checks that a resolved configuration can run here, made before any work and before any run
folder is written, so that a setting that cannot work ends in one line naming it instead of an
allocation error, a pooling error or a run that trains nothing:

- `check_device`: the device is the CPU, or a CUDA device that exists (or Apple's MPS where
  PyTorch has it);
- `check_data_size`: generated data fits in this machine's memory;
- `check_dataset`: there are images enough for a training step (with fewer images than a
  batch, an epoch is one smaller batch: ``studykit.data.DeviceLoader``), and the images are
  large enough for the architecture (the smallest size it accepts is named);
- `check_model_size`: the model of this width fits in the device's memory for training.

Each failure is a ``studykit.checks.ParamError`` (a bad value: exit status 2 on the command
line).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping
from typing import Any

import torch

from studykit.checks import ParamError

# Bytes per parameter while training with SGD: weights, gradients, momentum, and the copy
# a checkpoint is written from.
_BYTES_PER_PARAM = 4 * 4
CIFAR_SIZE = 32  # the synthetic set's too


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def memory_of(device: torch.device) -> int | None:
    """Bytes of memory on ``device`` (physical memory for the CPU); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_device(name: str) -> torch.device:
    """The device ``name`` stands for (``auto`` already resolved), when training can run there.

    Raises:
        ParamError: not a device name, a kind of device studykit does not train on (``meta``,
            ``xpu``, ...), or one this machine does not have.
    """
    allowed = "auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ParamError(f"device must be {allowed}, got {name!r}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParamError(f"device {name!r} asked for, but CUDA is not available here; use "
                             "device=cpu or device=auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ParamError(f"device {name!r} asked for, but this machine has {count} CUDA "
                             f"device(s): cuda:0 to cuda:{count - 1}")
        return device
    if device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ParamError(f"device {name!r} asked for, but Apple's MPS is not available "
                             "here; use device=cpu or device=auto")
        return device
    raise ParamError(f"device must be {allowed}, got {name!r} (studykit trains on the CPU "
                     f"and on CUDA devices, not on {device.type!r})")


def check_data_size(train: Mapping[str, Any]) -> None:
    """Generated (``synthetic``) data of ``n_train`` + ``n_test`` images must fit in memory
    (a file's size is checked against the file once it is read)."""
    if train["dataset"] != "synthetic":
        return
    n_train = 50_000 if train["n_train"] is None else train["n_train"]
    n_test = 10_000 if train["n_test"] is None else train["n_test"]
    # uint8 images, held once as generated and once more while cached.
    need = 2 * (n_train + n_test) * 3 * CIFAR_SIZE**2
    have = memory_of(torch.device("cpu"))
    if have is not None and need > have:
        key = "n_train" if n_train >= n_test else "n_test"
        raise ParamError(f"{key}={train[key]}: {n_train + n_test:,} synthetic images need "
                         f"about {human_bytes(need)} of memory, and this machine has "
                         f"{human_bytes(have)}; use a smaller {key}")


def check_dataset(train: Mapping[str, Any], ds: Any) -> None:
    """A training step can be taken on ``ds``, and ``train['arch']`` accepts its images.

    Raises:
        ParamError: a single training image (a batch of one has no batch statistics), or
            images smaller than the architecture's minimum.
    """
    n = ds.x_train.shape[0]
    if n < 2:
        given = (f"n_train={train['n_train']}" if train["n_train"] is not None
                 else f"{ds.name} holds {n} training image, and")
        raise ParamError(f"{given}: training needs at least 2 images (batch normalization "
                         "takes its statistics over a batch)")
    h, w = ds.x_train.shape[-2:]
    smallest = min_image_size(train["arch"], ds.num_classes, train["width"], min(h, w))
    if smallest is not None:
        raise ParamError(f"{ds.name}'s images are {h}x{w} pixels; arch {train['arch']!r} "
                         f"needs images of at least {smallest}x{smallest}; use larger "
                         "images or another arch")


@functools.lru_cache(maxsize=32)
def _meta_model(arch: str, num_classes: int, width: int | None) -> torch.nn.Module:
    from studykit import models

    with torch.device("meta"):  # shapes only: no memory, no initialization cost
        return models.create_model(arch, num_classes, width=width).eval()


def _accepts(model: torch.nn.Module, size: int) -> bool:
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    except RuntimeError:
        return False
    return True


@functools.lru_cache(maxsize=32)
def min_image_size(arch: str, num_classes: int, width: int | None, size: int) -> int | None:
    """None when ``arch`` takes square images of ``size`` pixels (or that cannot be told);
    otherwise the smallest size it takes. Every architecture here is built for CIFAR's 32
    pixels and pools globally, so only smaller images are tried: by running the model, with
    zero weights (only shapes matter), on one image on the CPU."""
    if size >= CIFAR_SIZE:
        return None
    try:
        model = copy.deepcopy(_meta_model(arch, num_classes, width)).to_empty(device="cpu")
    except Exception:  # a model that cannot be built so: not checked here
        return None
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            t.zero_()
    if _accepts(model, size):
        return None
    return next((s for s in range(size + 1, 513) if _accepts(model, s)), None)


def check_model_size(train: Mapping[str, Any], num_classes: int, device: torch.device) -> None:
    """The model of ``train['width']`` fits in ``device``'s memory for training.

    Raises:
        ParamError: its parameters alone (with gradients, momentum and a checkpoint copy) need
            more memory than the device has.
    """
    try:
        model = _meta_model(train["arch"], num_classes, train["width"])
    except Exception:
        return
    params = sum(p.numel() for p in model.parameters())
    need, have = params * _BYTES_PER_PARAM, memory_of(device)
    if have is not None and need > have:
        raise ParamError(f"width={train['width']} makes {train['arch']} a model of {params:,} "
                         f"parameters, which need about {human_bytes(need)} to train; "
                         f"{device.type} memory here is {human_bytes(have)}: use a smaller "
                         "width")
