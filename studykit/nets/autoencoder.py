"""An autoencoder to look at AdvBN-shifted features as images (AdvBN, Shu et al. 2021, Sec. 3,
Fig. 2-3; the AdaIN autoencoder of Huang and Belongie 2017).

The encoder is the early part of a trained classifier, up to the end of a stage
(``classifier.forward_until(x, stage)``), frozen; the `Decoder` (nearest-neighbour upsampling
and 3x3 convolutions, one upsampling per halving of the resolution, a sigmoid at the end) is
trained to reconstruct the image from it with

    L = MSE(decoder(f), x) + tv_weight * TV(decoder(f)),

TV the mean absolute difference of neighbouring pixels (a small smoothness prior). AdvBN goes
between the two: ``shift_images`` perturbs the encoder's feature statistics
(`studykit.advbn.advbn_deltas`) to raise a classifier's loss on the *decoded* image, as the
authors' visualization script does (the paper's text attacks the layers after the cut on the
feature, as training does), and decodes the shifted features. With m = 0 steps it is the plain
reconstruction, the control of a shifted test set (the paper's ImageNet-AdvBN and
"reconstructed" columns, Table 8).

Training is a stored run (`autoencoder_run`): ``runs/<dataset>/autoencoder/<hash>/`` in the
classifier's run store (or the one given), keyed by the classifier's run, the stage and the
training settings, with a checkpoint after every epoch from which it resumes exactly (the batch
order of epoch e is drawn from (seed, e)); stored through the one train-or-load path
(``studykit.train.train_or_load_run``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from studykit.advbn import advbn_deltas, cut_stage, is_relu_cut, shift_features
from studykit.attacks import attack_mode
from studykit.rng import derive_seed
from studykit.train import ResumableEpochs, train_or_load_run

log = logging.getLogger(__name__)

AE_DEFAULTS: dict[str, Any] = {"epochs": 4, "batch_size": 128, "lr": 2e-3, "tv_weight": 0.01,
                               "width": 32, "seed": 0}


class Decoder(nn.Module):
    """Features of shape (C, H / 2^k, W / 2^k) back to an image in [0, 1].

    Args:
        in_channels: C.
        upsamplings: k.
        width: channels of the first hidden layer (halved at each upsampling, at least 8).

    Shape:
        - input: (N, C, H / 2^k, W / 2^k)
        - output: (N, 3, H, W)
    """

    def __init__(self, in_channels: int, upsamplings: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(upsamplings):  # channels halve as the resolution doubles (cost)
            out = max(width // 2, 8)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(width, out, 3, padding=1), nn.ReLU()]
            width = out
        layers += [nn.Conv2d(width, 3, 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class AutoEncoder(nn.Module):
    """A frozen classifier's layers through ``stage`` as the encoder, and a `Decoder`.

    Attributes:
        classifier: the classifier (only its part before the cut is used to encode).
        stage: the stage name the encoder ends at.
        decoder: the decoder.
        relu: whether the encoder's output is non-negative (AdvBN clamps at 0).
    """

    def __init__(self, classifier: nn.Module, stage: str, width: int = 32) -> None:
        super().__init__()
        self.classifier = classifier
        self.stage = stage
        self.relu = is_relu_cut(classifier, stage)
        with torch.no_grad():
            ref = next(classifier.parameters())
            was = classifier.training
            classifier.eval()
            f = classifier.forward_until(torch.zeros(1, 3, 32, 32, device=ref.device), stage)
            classifier.train(was)
        self.decoder = Decoder(f.shape[1], int(round(math.log2(32 / f.shape[-1]))), width)
        self.decoder.to(ref.device)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features (the classifier in eval mode, no gradient).

        Shape:
            - x: (N, 3, H, W) in [0, 1]
            - output: (N, C, H', W')
        """
        was = self.classifier.training
        self.classifier.eval()
        try:
            return self.classifier.forward_until(x, self.stage)
        finally:
            self.classifier.train(was)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontally and vertically neighbouring pixels.

    Shape:
        - x: (N, C, H, W)
        - output: scalar
    """
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def reconstruction_loss(x_rec: torch.Tensor, x: torch.Tensor, tv_weight: float) -> torch.Tensor:
    """MSE plus ``tv_weight`` times the total variation of the reconstruction."""
    return F.mse_loss(x_rec, x) + tv_weight * total_variation(x_rec)


def train_decoder(ae: AutoEncoder, x_train: torch.Tensor, *, epochs: int, batch_size: int,
                  lr: float, tv_weight: float, seed: int, checkpoint_path: Any = None,
                  progress: bool = False) -> pd.DataFrame:
    """Train ``ae.decoder`` (Adam) to reconstruct ``x_train``; resume from ``checkpoint_path``.

    Args:
        ae: the autoencoder; only its decoder is trained.
        x_train: uint8 images.
        epochs, batch_size, lr, tv_weight, seed: training settings.
        checkpoint_path: written after every epoch, read at the start to resume.
        progress: tqdm bar.

    Returns:
        Per-epoch history (``mse``, ``tv``, ``seconds``).

    Shape:
        - x_train: (N, 3, H, W) uint8
    """
    device = next(ae.decoder.parameters()).device
    opt = torch.optim.Adam(ae.decoder.parameters(), lr=lr)
    loop = ResumableEpochs(epochs, checkpoint_path, {"model": ae.decoder, "optimizer": opt},
                           what="decoder training")
    n = x_train.shape[0]
    for epoch in loop.remaining():
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            derive_seed(seed, "autoencoder", epoch)))
        ae.decoder.train()
        sums = torch.zeros(2, device=device)
        for i in tqdm(range(0, n, batch_size), desc=f"decoder {epoch + 1}/{epochs}",
                      disable=not progress, leave=False):
            x = x_train[order[i:i + batch_size]].to(device).float() / 255
            x_rec = ae.decoder(ae.encode(x))
            mse, tv = F.mse_loss(x_rec, x), total_variation(x_rec)
            opt.zero_grad(set_to_none=True)
            (mse + tv_weight * tv).backward()
            opt.step()
            sums += torch.stack([mse.detach(), tv.detach()]) * x.shape[0]
        log.info("decoder epoch %d/%d mse=%.5f", epoch + 1, epochs, float(sums[0]) / n)
        loop.end_epoch({"epoch": epoch + 1, "mse": float(sums[0]) / n,
                        "tv": float(sums[1]) / n, "seconds": time.perf_counter() - t0})
    ae.decoder.eval()
    return pd.DataFrame(loop.history)


def autoencoder_run(classifier_result: Any, stage: int = 2, *, progress: bool = False,
                    store: Callable[[Mapping[str, Any]], Any] | None = None,
                    **settings: Any) -> tuple[AutoEncoder, pd.DataFrame]:
    """Train (or load from its run) the decoder for a stored classifier run.

    Args:
        classifier_result: a `studykit.experiment.ExperimentResult` (its model, run and data).
        stage: the encoder ends after stage 1, 2 or 3 (`studykit.advbn.cut_stage`).
        progress: tqdm bars.
        store: where the decoder's run is kept, ``store(config) -> run``
            (``studykit.runs.RunStore``); default: the classifier run's store.
        **settings: any of ``AE_DEFAULTS`` (epochs, batch_size, lr, tv_weight, width, seed).

    Returns:
        The autoencoder (in eval mode) and its training history.
    """
    unknown = sorted(set(settings) - set(AE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown autoencoder setting(s) {unknown}; allowed: "
                         f"{', '.join(AE_DEFAULTS)}")
    s = {**AE_DEFAULTS, **settings}
    classifier = classifier_result.eval_model
    ds = classifier_result.dataset
    name = cut_stage(classifier, stage)
    config: Mapping[str, Any] = {"dataset": ds.name, "method": "autoencoder",
                                 "classifier_run": classifier_result.run.hash,
                                 "classifier_done": classifier_result.run.done_stamp(),
                                 "stage": name, "n_train": int(ds.x_train.shape[0]), **s}
    run = (store if store is not None else classifier_result.run.store)(config)

    def fresh() -> AutoEncoder:
        torch.manual_seed(derive_seed(s["seed"], "autoencoder-init"))
        return AutoEncoder(classifier, name, width=s["width"])

    def load(state: dict[str, Any]) -> tuple[AutoEncoder, pd.DataFrame]:
        ae = fresh()
        ae.decoder.load_state_dict(state["model"])
        log.info("loaded autoencoder run %s", run.hash)
        return ae.eval(), pd.DataFrame(state["history"])

    def train(checkpoint: Any) -> tuple[tuple[AutoEncoder, pd.DataFrame], pd.DataFrame]:
        ae = fresh()
        history = train_decoder(ae, ds.x_train, epochs=s["epochs"], batch_size=s["batch_size"],
                                lr=s["lr"], tv_weight=s["tv_weight"], seed=s["seed"],
                                checkpoint_path=checkpoint, progress=progress)
        return (ae.eval(), history), history

    return train_or_load_run(run, load=load, train=train)[0]


def shift_images(ae: AutoEncoder, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 steps: int, step_size: float = 0.2, eps: float = 1.1) -> torch.Tensor:
    """Decode AdvBN-shifted encoder features of one batch (m = ``steps``; 0: reconstruction).

    The statistics are attacked to raise ``classifier``'s cross-entropy on the decoded image,
    with the decoder and the classifier in eval mode and frozen.

    Shape:
        - x: (N, 3, H, W) in [0, 1]; y: (N,)
        - output: (N, 3, H, W) in [0, 1]
    """
    f = ae.encode(x).float()
    with attack_mode(ae), attack_mode(classifier):
        dm, ds = advbn_deltas(lambda h: F.cross_entropy(classifier(ae.decoder(h)), y), f,
                              steps=steps, step_size=step_size, eps=eps, relu=ae.relu)
    with torch.no_grad():
        return ae.decoder(shift_features(f, dm, ds, relu=ae.relu))


def shifted_set(ae: AutoEncoder, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                steps: int, step_size: float = 0.2, eps: float = 1.1,
                batch_size: int = 32) -> torch.Tensor:
    """`shift_images` over a whole set in unshuffled batches (the paper: batch 32), as uint8.

    Shape:
        - x: (N, 3, H, W) uint8; y: (N,)
        - output: (N, 3, H, W) uint8
    """
    device = next(ae.decoder.parameters()).device
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(device).float() / 255
        xs = shift_images(ae, classifier, xb, y[i:i + batch_size].to(device), steps=steps,
                          step_size=step_size, eps=eps)
        out.append((xs * 255).round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out)
