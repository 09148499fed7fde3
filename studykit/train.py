"""``fit``: the one training loop; `ResumableEpochs` and `train_or_load_run`: the one way any
training here (a classifier, the corruption network, a decoder) checkpoints, resumes and is
stored.

SGD with momentum (optionally Nesterov), a cosine or multi-step schedule with linear warm-up
(computed per iteration from the global step, so the schedule has no state to lose), weight
decay, bf16 autocast and channels_last on CUDA, tqdm progress, a per-epoch history, and a
checkpoint after every epoch from which a run resumes exactly: model, optimizer, epoch, history,
the method's generator, the global RNG states and the loader position (the loader's streams are
seeded from (seed, epoch), so the epoch number is its position).

The loop never looks at the method's name: what differs between methods lives in
``method.prepare_model``, ``method.training_step`` and ``method.eval_model``.

`ResumableEpochs` owns a training's checkpoint (restore at the start, an atomic save after
every epoch, the history); `train_or_load_run` owns a stored run (the lock, loading a finished
run, moving an unusable checkpoint aside, ``config.json``, ``history.csv``, ``DONE``). ``fit``,
``studykit.nets.corruption_net.pretrain_corruption_net`` and ``studykit.nets.autoencoder`` go
through them; a network's pretraining is handed its run (``studykit.runs.RunStore``) by its caller.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from studykit import distributed, run_integrity
from studykit.rng import derive_seed
from studykit.run_integrity import CheckpointError
from studykit.runs import RunStoreError, write_csv_atomic

if TYPE_CHECKING:  # the trainer needs no method at import (methods import the networks)
    from studykit.methods.base import Method
    from studykit.runs import Run

log = logging.getLogger(__name__)

SCHEDULES = ("cosine", "multistep", "constant")


class TrainingDiverged(ValueError):
    """The training loss became infinite or NaN (a learning rate too large for the model): the
    message names the epoch and step; nothing of that epoch is saved."""


__all__ = ["CheckpointError", "FitResult", "ResumableEpochs", "TrainConfig", "TrainingDiverged",
           "evaluate_accuracy", "fit", "load_checkpoint", "lr_at", "train_or_load_run"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimization settings; defaults are the CIFAR recipe of the papers (lr 0.1, cosine, wd 5e-4).

    Attributes:
        epochs: number of passes over the training set.
        lr: peak learning rate (reached after warm-up).
        momentum: SGD momentum.
        nesterov: Nesterov momentum (RobustAugMix, AdA).
        weight_decay: L2 weight decay.
        schedule: ``cosine`` (per iteration, to 0), ``multistep`` (x gamma at ``milestones``
            epochs), or ``constant``.
        milestones: epochs at which ``multistep`` decays.
        gamma: multistep decay factor.
        warmup_epochs: linear warm-up length in epochs (may be fractional).
        amp: bf16 autocast; None means on for CUDA, off on CPU.
        channels_last: memory format; None means on for CUDA.
        grad_clip: max gradient norm, or None.
        seed: the run's seed; the method's generator and the global RNG get separate streams
            derived from it (``studykit.rng.derive_seed``); under torchrun each rank's streams
            are derived anew at every epoch from (seed, epoch, rank).
        sync_bn: BatchNorm statistics over the global batch under torchrun
            (``nn.SyncBatchNorm``, CUDA only) rather than over each rank's slice.
    """

    epochs: int = 200
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    amp: bool | None = None
    channels_last: bool | None = None
    grad_clip: float | None = None
    seed: int = 0
    sync_bn: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def use_channels_last(device: torch.device | str) -> bool:
    """The memory format training uses when ``TrainConfig.channels_last`` is None."""
    return torch.device(device).type == "cuda"


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global iteration ``step`` (0-based)."""
    epoch_f = step / max(steps_per_epoch, 1)
    if cfg.warmup_epochs > 0 and epoch_f < cfg.warmup_epochs:
        return cfg.lr * (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(epoch_f >= m for m in cfg.milestones)
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    t = (step - warm) / max(total - warm, 1)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def _save_atomic(obj: Any, path: Path) -> None:
    # A failed save (full disk, Ctrl-C) removes its temporary file and keeps the previous
    # checkpoint; the error names the path. The file's sha256 is recorded next to it.
    run_integrity.save_checkpoint(path, obj, "checkpoint")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``, after checking it against the sha256
    recorded when it was written (``studykit.run_integrity.verify_checkpoint``).

    Raises:
        CheckpointError: the file is truncated, corrupt, altered since it was written, or not
            a studykit checkpoint.
    """
    path = Path(path)
    try:
        run_integrity.verify_checkpoint(path)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {e})") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} is not a studykit checkpoint (keys missing)")
    return state


class ResumableEpochs:
    """The epochs of a training that checkpoints after every epoch and resumes exactly.

    At construction the state saved in ``checkpoint`` (when it exists) is restored into
    ``parts`` (name -> anything with ``state_dict``/``load_state_dict``: model, optimizer,
    scheduler, method), with the epoch reached, the history and, when ``rng`` names the
    training's device, the global RNG states. `end_epoch` appends an epoch's record to the
    history and writes ``{**parts, "epoch", "history"[, "rng_cpu", "rng_cuda"]}`` atomically::

        loop = ResumableEpochs(epochs, checkpoint, {"model": net, "optimizer": opt})
        for epoch in loop.remaining():
            ...  # one epoch; its randomness drawn from (seed, epoch) or the saved state
            loop.end_epoch({"epoch": epoch + 1, "loss": ...})

    A resumed training then equals an uninterrupted one bit for bit. ``checkpoint=None``: no
    checkpoint (the history is still kept).

    Raises:
        CheckpointError: (at construction) the checkpoint cannot be read or does not fit
            ``parts``.
    """

    def __init__(self, epochs: int, checkpoint: str | os.PathLike | None,
                 parts: Mapping[str, Any], *, rng: torch.device | str | None = None,
                 what: str = "training") -> None:
        self.epochs = epochs
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.parts = dict(parts)
        self.rng = torch.device(rng) if rng is not None else None
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        if self.checkpoint is not None and self.checkpoint.exists():
            state = load_checkpoint(self.checkpoint)
            try:
                for name, part in self.parts.items():
                    part.load_state_dict(state[name])
                if self.rng is not None:
                    torch.set_rng_state(state["rng_cpu"])
                    if self.rng.type == "cuda" and state.get("rng_cuda") is not None:
                        torch.cuda.set_rng_state(state["rng_cuda"], self.rng)
                start, history = int(state["epoch"]), list(state["history"])
                if not (start == len(history)
                        and all(isinstance(h, dict) for h in history)):
                    raise ValueError(f"epoch {start} with {len(history)} epochs of history")
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # a part, the RNG state or the history missing or malformed
                raise CheckpointError(f"checkpoint {self.checkpoint} does not fit this "
                                      f"training ({type(e).__name__}: {e})") from e
            self.start_epoch, self.history = start, history
            log.info("resuming %s from %s at epoch %d/%d", what, self.checkpoint,
                     self.start_epoch, epochs)

    def remaining(self) -> range:
        """The epochs (0-based) still to train."""
        return range(self.start_epoch, self.epochs)

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Record a finished epoch and checkpoint the training's state after it."""
        self.history.append(record)
        if self.checkpoint is None or not distributed.is_main():  # rank 0 writes it
            return
        state = {name: part.state_dict() for name, part in self.parts.items()}
        state.update(epoch=len(self.history), history=self.history)
        if self.rng is not None:
            state["rng_cpu"] = torch.get_rng_state()
            state["rng_cuda"] = (torch.cuda.get_rng_state(self.rng) if self.rng.type == "cuda"
                                 else None)
        _save_atomic(state, self.checkpoint)


T = TypeVar("T")


def train_or_load_run(
    run: Run, *, load: Callable[[dict[str, Any]], T],
    train: Callable[[Path], tuple[T, pd.DataFrame]], data_key: str | None = None,
    before_training: Callable[[], None] | None = None,
) -> tuple[T, bool]:
    """The one train-or-load path of a stored run (a classifier, a corruption network, a
    decoder), under the run's lock.

    First the folder is checked (``studykit.run_integrity``): temporary files of dead writers
    are removed, and another run's files (``config.json`` naming another hash) are moved aside.
    A finished run is loaded: ``load(checkpoint state)``, its ``config.json`` (every field) and
    ``history.csv`` restored when they were damaged; one that cannot be loaded (a checkpoint
    altered since it was written, truncated, of another architecture, with parts missing or
    malformed) is moved aside and trained again. Otherwise ``before_training()``,
    ``config.json``, ``train(checkpoint path)`` (which resumes from it, e.g. through
    `ResumableEpochs`; a `CheckpointError` moves the checkpoint aside and trains once more from
    scratch), ``history.csv`` (the returned history) and ``DONE``.

    Args:
        run: the run's folder (``studykit.runs.Run``).
        load: the result from a finished run's checkpoint.
        train: trains, checkpointing to the path given; returns the result and its history.
        data_key: a fingerprint of the training data, recorded in ``config.json``; a
            checkpoint, finished or not, recorded with another one is moved aside.
        before_training: called once training is known to be needed (after the checks),
            before ``config.json`` is written.

    Under torchrun (``studykit.distributed``) rank 0 does all of the above and tells the other
    ranks whether to train; they train with it (``train`` is collective) or wait for it and
    load the finished run. They never write the store.

    Returns:
        The result, and whether this call trained (or resumed) rather than loaded it.

    Raises:
        RunStoreError: the run has to be trained and the store is read-only.
    """
    if distributed.world_size() > 1 and not distributed.is_main():
        return _follow_main(run, load, train)
    fingerprint = {} if data_key is None else {"data_fingerprint": data_key}
    with run.lock():
        if run.writable:
            run_integrity.remove_stale_temp_files(run.dir)
        run_integrity.check_owner(run)
        if data_key is not None:
            stored = run.stored_data_fingerprint()
            if run.checkpoint.exists() and stored is not None and stored != data_key:
                _discard(run, f"trained on other data (fingerprint {stored}, now {data_key})")
        if run.is_done:
            try:
                state = load_checkpoint(run.checkpoint)
                result = load(state)
            except torch.OutOfMemoryError:
                raise
            except (CheckpointError, RuntimeError, KeyError, ValueError, TypeError,
                    AttributeError, IndexError) as e:  # damaged: not this model's checkpoint
                _discard(run, f"{type(e).__name__}: {e}")
            else:
                distributed.broadcast_object("load")
                if not (run.dir / "config.json").exists() and run.writable:
                    # It was damaged and moved aside: every field again, the data too.
                    run.write_config(restored=True, **fingerprint)
                run_integrity.repair_history(run, state.get("history"))
                distributed.wait_for_main()
                return result, False
        if not run.writable:
            distributed.broadcast_object("read-only")
        run.require_writable("train")
        if before_training is not None:
            before_training()
        world = distributed.world_size()
        run.write_config(**fingerprint, **({"world_size": world} if world > 1 else {}))
        distributed.broadcast_object("train")
        try:
            result, history = train(run.checkpoint)
        except CheckpointError as e:
            run.discard_checkpoint(str(e))
            distributed.wait_for_main()  # the others retry once it is moved aside
            result, history = train(run.checkpoint)
        write_csv_atomic(history, run.history_csv)
        run.mark_done()
    distributed.wait_for_main()
    return result, True


def _follow_main(run: Run, load: Callable[[dict[str, Any]], T],
                 train: Callable[[Path], tuple[T, pd.DataFrame]]) -> tuple[T, bool]:
    """`train_or_load_run` on a rank other than 0: what rank 0 decided, without writing."""
    decision = distributed.broadcast_object(None)
    if decision == "read-only":
        run.require_writable("train")  # rank 0 raises the same error
    if decision == "train":
        try:
            result, _ = train(run.checkpoint)
        except CheckpointError:
            distributed.wait_for_main()
            result, _ = train(run.checkpoint)
        distributed.wait_for_main()
        return result, True
    # A decision to load, or rank 0 failed before deciding (this wait then fails as well).
    distributed.wait_for_main()
    return load(load_checkpoint(run.checkpoint)), False


def _discard(run: Run, reason: str) -> None:
    if not run.writable:
        raise RunStoreError(f"the stored run {run.dir} cannot be used ({reason}), and the run "
                            "store is read-only, so it cannot be retrained there")
    run.discard_checkpoint(reason)


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, loader: Any, *, device: torch.device | str | None = None
) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode over ``loader``; restores the model's mode."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in loader:
        if device is not None:
            x, y = x.to(device), y.to(device)
        correct += (model(x).argmax(1) == y).sum().item()
        total += y.numel()
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


@dataclass
class FitResult:
    model: nn.Module
    history: pd.DataFrame
    resumed_from_epoch: int


def fit(
    model: nn.Module,
    method: Method,
    train_loader: Any,
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    test_loader: Any | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    callbacks: Sequence[Callable[[int, dict[str, float], nn.Module], None]] = (),
    progress: bool = True,
) -> FitResult:
    """Train ``model`` with ``method``; resume from ``checkpoint_path`` when it holds a checkpoint.

    Args:
        model: an unprepared model (``method.prepare_model`` is applied here, before the
            optimizer is built, so that converted layers are optimized).
        method: a registered method instance.
        train_loader: a ``studykit.data.DeviceLoader`` (anything with ``set_epoch``,
            ``__iter__`` over (x, y) and ``__len__``).
        cfg: optimization settings.
        device: where to train.
        test_loader: if given, test accuracy is recorded after each epoch.
        checkpoint_path: written after every epoch; read at start to resume.
        callbacks: ``f(epoch, record, model)`` after each epoch (1-based epoch).
        progress: tqdm bars.

    Returns:
        The trained (prepared) model, the per-epoch history, and the epoch it resumed from.

    Raises:
        ValueError: the loader yields no batch: an epoch would take no step.
        TrainingDiverged: the loss became infinite or NaN (the epoch is not saved).
        CheckpointError: the checkpoint exists but cannot be used (the caller decides whether
            to discard it, as `train_or_load_run` does).
    """
    if len(train_loader) == 0:  # never mark done a training that took no step
        raise ValueError("the training loader yields no batch, so training would take no "
                         "step; give it training images")
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    amp = cfg.amp if cfg.amp is not None else on_cuda
    channels_last = (cfg.channels_last if cfg.channels_last is not None
                     else use_channels_last(device))

    model = method.prepare_model(model).to(device)
    if cfg.sync_bn:
        model = distributed.convert_sync_bn(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Weight decay on every parameter (BN included), as the papers' reference CIFAR code does.
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, momentum=cfg.momentum,
        nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
    )
    method.seed(derive_seed(cfg.seed, "method"))
    torch.manual_seed(derive_seed(cfg.seed, "global"))

    epochs = ResumableEpochs(cfg.epochs, checkpoint_path,
                             {"model": model, "optimizer": opt, "method": method}, rng=device)
    sync = distributed.GradientSync(model)  # inactive with one process

    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch
    # Running sums stay on the device and are read once per epoch (and every
    # ``refresh`` steps for the progress bar), so a step never waits for the device to log.
    refresh = 1 if device.type == "cpu" else max(steps_per_epoch // 10, 1)
    for epoch in epochs.remaining():
        train_loader.set_epoch(epoch)
        if sync.active:  # each rank's streams of this epoch, whatever epoch it resumed at
            parts = distributed.epoch_seed_parts(cfg.seed, epoch)
            method.seed(derive_seed(*parts, "method"))
            torch.manual_seed(derive_seed(*parts, "global"))
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, torch.Tensor | float] = {}
        n_seen = 0
        correct = torch.zeros((), device=device)
        loss_sum = torch.zeros((), device=device)
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   leave=False, disable=not progress)
        for i, (x, y) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, steps_per_epoch)
            method.set_progress(step, total_steps)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync.before_step()
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = method.training_step(model, x, y)
            opt.zero_grad(set_to_none=True)
            out.loss.float().backward()
            sync.after_backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            b = y.numel()
            n_seen += b
            loss_sum += out.loss.detach().float() * b
            correct += (out.logits.detach().argmax(1) == y).sum()
            for k, v in out.metrics.items():
                v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
                sums[k] = sums.get(k, 0.0) + v * b
            if (i + 1) % refresh == 0 or i + 1 == steps_per_epoch:
                loss_now = float(loss_sum)
                if not math.isfinite(loss_now):
                    _diverged(f"by step {i + 1} of {steps_per_epoch}: the loss became "
                              f"{loss_now}", epoch, cfg)
                if progress:
                    bar.set_postfix(loss=f"{float(loss_sum) / n_seen:.3f}",
                                    acc=f"{100 * float(correct) / n_seen:.1f}")
        sync.before_step()  # every rank evaluates and rank 0 saves the same model
        keys = list(sums)
        n_seen, loss_total, n_correct, *totals = sync.sum(
            n_seen, float(loss_sum), float(correct), *(float(sums[k]) for k in keys))
        record = {
            "epoch": epoch + 1,
            "lr": float(opt.param_groups[0]["lr"]),
            "train_loss": loss_total / max(n_seen, 1),
            "train_acc": 100.0 * n_correct / max(n_seen, 1),
            **{k: v / max(n_seen, 1) for k, v in zip(keys, totals)},
            "seconds": time.perf_counter() - t0,
        }
        if test_loader is not None:
            record["test_acc"] = evaluate_accuracy(method.eval_model(model), test_loader,
                                                   device=device)
        if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
            _diverged("its last step made the weights infinite or NaN", epoch, cfg)
        log.info("epoch %d/%d %s", epoch + 1, cfg.epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
        epochs.end_epoch(record)
        for cb in callbacks:
            cb(epoch + 1, record, model)
    model.eval()
    return FitResult(model=model, history=pd.DataFrame(epochs.history),
                     resumed_from_epoch=epochs.start_epoch)


def _diverged(what: str, epoch: int, cfg: TrainConfig) -> None:
    # The loss is read every ``refresh`` steps (each step on the CPU, ten times an epoch on a
    # GPU) and the weights at the end of every epoch, before its checkpoint: a diverged model
    # is never saved.
    raise TrainingDiverged(f"training diverged in epoch {epoch + 1} of {cfg.epochs} ({what}) "
                           f"with lr={cfg.lr:g}; use a smaller lr (nothing of this epoch was "
                           "saved)")
