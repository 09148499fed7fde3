"""The training cost of trained runs, measured side by side in one process (notebook 08's cost
table, AugMax Table 7's analogue).

Seconds per epoch read from each run's history compare runs trained at different times, perhaps
on a busy machine; here every run's own method takes full training steps (its
``training_step``, the backward pass and an SGD step) on one shared batch, in a round robin so
that machine noise spreads over all of them, on a copy of its trained model (the inner searches
then stop as they would late in training, not as on an untrained model).
``benchmarks/step_time.py`` measures the same on fresh models for any method options.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch

from studykit.devices import model_device
from studykit.methods import MethodContext
from studykit.runs import RunStore
from studykit.train import use_channels_last


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(result: Any) -> tuple[Any, torch.nn.Module, torch.optim.Optimizer]:
    """A copy of the run's model in training mode, its method ready to step (AdA and
    DeepAugment load their stored corruption network), and an SGD optimizer of small steps."""
    from studykit.experiment import data_fingerprint

    method = copy.deepcopy(result.method)
    model = copy.deepcopy(result.model)
    device = model_device(model)
    rt = result.config["runtime"]
    method.prepare(MethodContext(dataset=result.dataset, data_key=data_fingerprint(result.dataset),
                                 device=device, store=RunStore(rt["runs_root"]), progress=False))
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                          momentum=0.9)
    return method, model, opt


def measure_step_seconds(results: Mapping[str, Any], *, batch_size: int, steps: int = 3,
                         warmup: int = 1) -> pd.Series:
    """Mean seconds of one training step of each run's method, measured in a round robin.

    Args:
        results: label -> ``ExperimentResult`` (a run the kit trained: zoo models have no
            method to step).
        batch_size: images per step (the first training images of the first run's dataset).
        steps: timed steps per run. warmup: untimed steps per run first.

    Returns:
        Seconds per step, indexed by label.
    """
    if not results:
        raise ValueError("no runs to time")
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, "
                         f"warmup={warmup}")
    first = next(iter(results.values()))
    setups = {label: _setup(r) for label, r in results.items()}
    device = model_device(next(iter(setups.values()))[1])
    x = first.dataset.x_train[:batch_size].to(device).float().div_(255)
    y = first.dataset.y_train[:batch_size].to(device)
    if use_channels_last(device):
        x = x.contiguous(memory_format=torch.channels_last)
    seconds = dict.fromkeys(setups, 0.0)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        for it in range(warmup + steps):
            for label, (method, model, opt) in setups.items():
                _synchronize(device)
                t0 = time.perf_counter()
                out = method.training_step(model, x, y)
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                _synchronize(device)
                if it >= warmup:
                    seconds[label] += time.perf_counter() - t0
    return pd.Series({k: v / steps for k, v in seconds.items()}, name="seconds_per_step")


def cost_table(results: Mapping[str, Any], step_seconds: pd.Series, *,
               baseline: str = "standard") -> pd.DataFrame:
    """Per run: seconds per training step and per epoch (steps of the run's batch size over its
    training set) as measured side by side, their ratio to ``baseline``, and the seconds per
    epoch its history recorded when it was trained (another time, perhaps another load).

    Raises:
        ValueError: ``baseline`` was not timed.
    """
    if baseline not in step_seconds.index:
        raise ValueError(f"the baseline {baseline!r} was not timed; timed: "
                         f"{', '.join(step_seconds.index)}")
    rows = {}
    for label, s in step_seconds.items():
        r = results[label]
        train = r.config["train"]
        per_epoch = math.ceil(r.dataset.x_train.shape[0] / train["batch_size"])
        history = r.history["seconds"].mean() if "seconds" in r.history else float("nan")
        rows[label] = {"s/step": s, "s/epoch": s * per_epoch,
                       f"x {baseline}": s / step_seconds[baseline],
                       "s/epoch as trained": history}
    return pd.DataFrame(rows).T
