"""The corruption network of AdA and DeepAugment: an EDSR-style image-to-image net, its batched
per-example forward, and its pretraining on the training images, stored in the run store.

Calian et al. (ICLR 2022, "Defending against image corruptions through adversarial
augmentations") corrupt images with a pretrained super-resolution EDSR (Lim et al., 2017):
a conv head, residual blocks without batch norm (conv, ReLU, conv, scaled skip), a conv closing
the body with a long skip from the head, and a conv tail. No weights can be downloaded here, so
the kit pretrains its own.

Pretraining task: **reconstruction** (output = input, L1 loss, Adam), not 2x super-resolution.
AdA compares c_{phi+beta}(x) with x (SSIM, Fig. 1b) and trains on c_{phi+beta}(x) in place of x;
with a reconstruction net, beta = 0 gives back x, so the corruption is the perturbation alone
and SSIM(x, AdA(x)) tends to 1 as the radius goes to 0, as the paper's Fig. 1b shows. A 2x
super-resolution net needs a 16x16 input made from the 32x32 image and loses its detail even at
beta = 0: every "corruption" would include a fixed blur. The architecture is EDSR's minus the
upsampler; there is no skip from the input image to the output (the identity has to be carried
by the weights, so perturbing them changes the image).

Given a run store by its caller (``store``: ``run_experiment`` hands AdA and DeepAugment the
one the classifier is kept in), a pretraining run lives at ``runs/<dataset>/corruption_net/<hash>/``
like any run, through the one train-or-load path (``studykit.train.train_or_load_run``): keyed by
its options and the data's fingerprint, ``checkpoint.pt`` after every epoch (resumable),
``DONE``, ``history.csv`` and ``metrics.json`` (PSNR and SSIM of the reconstructions of the test
images).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from studykit.analysis import as_float_images, ssim
from studykit.rng import derive_seed
from studykit.train import ResumableEpochs, train_or_load_run

log = logging.getLogger(__name__)

Params = Mapping[str, torch.Tensor]
Hook = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]


class ResBlock(nn.Module):
    """EDSR residual block: x + res_scale * conv(relu(conv(x))), no batch norm."""

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # CorruptionNet.forward runs the block layer by layer (to swap in per-example weights);
        # this is the same computation with the block's own weights.
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x)))


class CorruptionNet(nn.Module):
    """EDSR-style image-to-image network (images in [0, 1] in and out).

    Args:
        channels: feature channels (EDSR-baseline: 64).
        blocks: residual blocks (EDSR-baseline: 16).
        res_scale: scale of each block's residual (EDSR-baseline: 1; 0.1 for the wide EDSR).

    Shape:
        - x: (N, 3, H, W)
        - output: (N, 3, H, W)
    """

    def __init__(self, channels: int = 64, blocks: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(channels, res_scale) for _ in range(blocks))
        self.body_end = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, params: Params | None = None,
                hook: Hook | None = None) -> torch.Tensor:
        """The network's output; with ``params`` (name -> tensor with a leading batch
        dimension, see `per_example_params`) image i goes through weights ``params[...][i]``.
        A layer whose weight is not in ``params`` uses the network's own (shared) weights.

        Per-example weights run as grouped convolutions: the batch is folded into the channels
        (one group per image), so the whole batch is one convolution per layer.

        ``hook(stage, before, after)``, when given, replaces the features after the head
        (stage ``"head"``; ``before`` is the centred image) and after every residual block
        (stage ``"blocks.<i>"``) by what it returns (DeepAugment's feature distortions).
        """
        def conv(name: str, h: torch.Tensor) -> torch.Tensor:
            if params is None or f"{name}.weight" not in params:
                layer = self.get_submodule(name)
                return F.conv2d(h, layer.weight, layer.bias, padding=1)
            return grouped_conv(h, params[f"{name}.weight"], params[f"{name}.bias"])

        x = x - 0.5  # EDSR subtracts the mean colour; 0.5 for images in [0, 1]
        h = conv("head", x)
        if hook is not None:
            h = hook("head", x, h)
        r = h
        for i, block in enumerate(self.blocks):
            out = r + block.res_scale * conv(f"blocks.{i}.conv2",
                                             F.relu(conv(f"blocks.{i}.conv1", r)))
            r = out if hook is None else hook(f"blocks.{i}", r, out)
        r = conv("body_end", r) + h
        return (conv("tail", r) + 0.5).clamp(0, 1)


def grouped_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 3x3 'same' convolution of each image with its own weights, as one grouped convolution.

    Shape:
        - h: (N, C, H, W)
        - weight: (N, O, C, k, k); bias: (N, O)
        - output: (N, O, H, W)
    """
    n, c, height, width = h.shape
    o, k = weight.shape[1], weight.shape[-1]
    out = F.conv2d(h.reshape(1, n * c, height, width), weight.reshape(n * o, c, k, k),
                   bias.reshape(n * o), padding=k // 2, groups=n)
    return out.view(n, o, height, width)


def base_params(net: nn.Module) -> dict[str, torch.Tensor]:
    """The network's parameters (detached), by name: the blocks phi_l AdA perturbs."""
    return {name: p.detach() for name, p in net.named_parameters()}


def per_example_params(phi: Params, beta: Params) -> dict[str, torch.Tensor]:
    """phi + beta with beta per example: name -> (N, *phi[name].shape)."""
    return {name: phi[name].unsqueeze(0) + beta[name] for name in phi}


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB, peak 1) per image. Shape: (N, C, H, W) x2 -> (N,)."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * torch.log10(mse)


@dataclass
class PretrainedNet:
    """A pretrained corruption network with its run (``run.dir``; None when it was not stored),
    history and metrics."""

    net: CorruptionNet
    run: Any
    history: pd.DataFrame
    metrics: dict[str, Any]
    trained: bool


@torch.no_grad()
def reconstruction_quality(net: nn.Module, x: torch.Tensor, batch_size: int = 500
                           ) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``net``'s outputs against its inputs ``x`` (uint8 or [0, 1])."""
    device = next(net.parameters()).device
    p, s = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = as_float_images(x[i:i + batch_size]).float().to(device)
        out = net(xb)
        p.append(psnr(out, xb))
        s.append(ssim(out, xb))
    return {"psnr": float(torch.cat(p).mean()), "ssim": float(torch.cat(s).mean())}


def pretrain_corruption_net(
    x_train: torch.Tensor, x_test: torch.Tensor, *, dataset: str, data_key: str,
    channels: int = 64, blocks: int = 16, epochs: int = 10, lr: float = 1e-3,
    batch_size: int = 128, seed: int = 0, device: torch.device | str = "cpu",
    store: Callable[[Mapping[str, Any]], Any] | None = None, progress: bool = False,
) -> PretrainedNet:
    """The corruption network pretrained to reconstruct ``x_train``: loaded from its run,
    resumed from its last epoch, or trained (module docstring).

    Args:
        x_train: training images (uint8 or float in [0, 1]); random horizontal flips are added.
        x_test: images the reconstruction quality is measured on.
        dataset: the dataset's name (the run's folder).
        data_key: a fingerprint of the data (``studykit.experiment.data_fingerprint``), so a
            net is only reused for the images it was trained on.
        channels, blocks: the architecture.
        epochs, lr, batch_size: Adam with a cosine schedule on the L1 loss.
        seed: initial weights and batch order.
        device: where to train.
        store: where the run is kept: ``store(config)`` gives the run of the pretraining's
            config (``studykit.runs.RunStore(root)``). None: trained here and not stored.
        progress: a tqdm bar over epochs.

    Shape:
        - x_train, x_test: (N, 3, H, W)
    """
    config = {"method": "corruption_net", "task": "reconstruction", "dataset": dataset,
              "data_key": data_key, "channels": channels, "blocks": blocks, "epochs": epochs,
              "lr": lr, "batch_size": batch_size, "seed": seed}
    run = store(config) if store is not None else None

    def fresh_net() -> CorruptionNet:
        torch.manual_seed(derive_seed(seed, "corruption_net_init"))
        return CorruptionNet(channels, blocks).to(device)

    def load(state: dict[str, Any]) -> PretrainedNet:
        net = fresh_net()
        net.load_state_dict(state["model"])
        return PretrainedNet(net.eval(), run, pd.DataFrame(state["history"]),
                             run.read_metrics(), trained=False)

    def train(checkpoint: Any) -> tuple[PretrainedNet, pd.DataFrame]:
        net = fresh_net()
        history = _train_reconstruction(net, x_train, epochs=epochs, lr=lr,
                                        batch_size=batch_size, seed=seed,
                                        checkpoint=checkpoint, progress=progress)
        metrics = reconstruction_quality(net, x_test)
        if run is not None:
            run.update_metrics(metrics)
        log.info("corruption net %s: PSNR %.1f dB, SSIM %.4f", run.hash if run else "(unstored)",
                 metrics["psnr"], metrics["ssim"])
        return PretrainedNet(net, run, history, metrics, trained=True), history

    if run is None:
        return train(None)[0]
    return train_or_load_run(run, load=load, train=train)[0]


def _train_reconstruction(net: CorruptionNet, x_train: torch.Tensor, *, epochs: int, lr: float,
                          batch_size: int, seed: int, checkpoint: Any,
                          progress: bool) -> pd.DataFrame:
    """Adam on the L1 reconstruction loss with a per-iteration cosine schedule, checkpointed
    after every epoch (`ResumableEpochs`); returns the history (``l1``, ``seconds``)."""
    device = next(net.parameters()).device
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = -(-x_train.shape[0] // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (epochs * steps_per_epoch))))
    loop = ResumableEpochs(epochs, checkpoint,
                           {"model": net, "optimizer": opt, "scheduler": sched},
                           what="corruption-net pretraining")
    for epoch in tqdm(loop.remaining(), desc="corruption net", disable=not progress):
        # The batch order and flips of an epoch depend on (seed, epoch) only: resumable.
        g = torch.Generator().manual_seed(derive_seed(seed, "corruption_net", epoch))
        order = torch.randperm(x_train.shape[0], generator=g)
        flips = torch.rand(x_train.shape[0], generator=g) < 0.5
        net.train()
        t0, total = time.perf_counter(), 0.0
        for i in range(0, x_train.shape[0], batch_size):
            idx = order[i:i + batch_size]
            xb = as_float_images(x_train[idx]).float().to(device)
            xb = torch.where(flips[idx].to(device)[:, None, None, None], xb.flip(-1), xb)
            loss = F.l1_loss(net(xb), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
        loop.end_epoch({"epoch": epoch + 1, "l1": total / x_train.shape[0],
                        "seconds": time.perf_counter() - t0})
    net.eval()
    return pd.DataFrame(loop.history)
