"""What AdA and DeepAugment share: a pretrained corruption network whose weights are perturbed
per example, the SSIM guard, and how the corrupted images join the training batch.

    beta ~ U(balls), [AdA: beta <- FGSM search],  x_hat = guard(x, c_{phi+beta}(x))
    [DeepAugment: x_hat = its distorted network's output (``perturb``), no guard by default]
    batch = x_hat, each image left clean with probability ``clean_share``
            ([x, x_hat] with ``clean``);  [AugMix last: one view, or JSD over 3 views]

Which images are corrupted follows the paper's pipeline (Appendix A: "we first draw random
samples either from the clean training dataset, or from the DeepAugment-processed training set
if DeepAugment is used ... If AdA is used, we apply the method now in the pipeline"): AdA
corrupts every image, as Eq. 3 minimizes the loss on c_{phi+beta}(x) alone (``clean_share``
0); DeepAugment draws each image from the union of the clean and the processed set
(``clean_share`` 0.5 in ``methods.deepaugment``). Only the images drawn for corruption go through
the network and the guard. ``clean=True`` trains on the whole clean batch besides the corrupted
one (twice the images per step), a reading of "clean + AdA" the paper's text does not support.

The corruption network is pretrained (``studykit.nets.corruption_net``) and kept in the run store
that ``run_experiment`` hands the method with the training data before training
(``prepare(context)``), which loads the pretrained net or trains it first. Outside
``run_experiment`` (tests, benchmarks, notebook figures) call ``setup(dataset, ...)`` or
``attach(net)`` yourself.

AugMix is the last stage of the paper's pipeline (Appendix A). ``augmix="jsd"`` is AugMix as
its paper trains it: CE on the batch plus lambda JSD over the batch and two AugMix views of it;
``"plain"`` replaces the batch by one AugMix view. The paper does not say which it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from studykit.augment import augmix, augmix_views
from studykit.checks import AT_LEAST_1, FRACTION, POSITIVE
from studykit.losses import jsd_consistency
from studykit.methods.base import Method, MethodConfig, MethodContext, StepOutput
from studykit.nets.corruption_net import (
    CorruptionNet,
    base_params,
    per_example_params,
    pretrain_corruption_net,
)
from studykit.ssim_guard import ssim_guard
from studykit.weight_perturbation import block_radii, sample_in_balls

AUGMIX_STAGES = ("none", "plain", "jsd")


@dataclass(frozen=True, kw_only=True)
class PerturbedNetConfig(MethodConfig):
    """Options shared by AdA and DeepAugment (paper values where the paper has them).

    ``nu``: relative radius of every parameter block's ball (paper 0.015). ``ssim_threshold``:
    the guard's t (paper 0.3; 0 turns it off). ``clean_share``: probability that an image of
    the batch stays clean (AdA: 0, Eq. 3; DeepAugment: 0.5, a draw from the union of the clean
    and the processed training set). ``clean``: also train on the whole clean batch (2N images
    per step; off: the paper's pipeline has no such step). ``net_*``: the corruption network
    (the paper's EDSR-baseline: 64 channels, 16 blocks) and its pretraining, which the paper
    does not do (it downloads EDSR): the kit's choices, see ``studykit.nets.corruption_net``.
    """

    nu: float = 0.015
    ssim_threshold: float = 0.3
    clean_share: float = 0.0
    clean: bool = False
    augmix: str = "none"
    jsd_lambda: float = 12.0
    net_channels: int = 64
    net_blocks: int = 16
    net_epochs: int = 10
    net_lr: float = 1e-3
    net_batch_size: int = 128

    RANGES: ClassVar[dict[str, Any]] = {
        "nu": POSITIVE, "ssim_threshold": FRACTION, "clean_share": FRACTION,
        "net_channels": AT_LEAST_1,
        "net_epochs": AT_LEAST_1, "net_lr": POSITIVE, "net_batch_size": AT_LEAST_1}
    CHOICES: ClassVar[dict[str, tuple]] = {"augmix": AUGMIX_STAGES}


class PerturbedNetMethod(Method):
    """Base of AdA and DeepAugment; a subclass says how beta is chosen (``search``)."""

    Config = PerturbedNetConfig
    config: PerturbedNetConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.net: CorruptionNet | None = None

    def prepare(self, context: MethodContext) -> None:
        """Load the pretrained corruption network for the context's data from its run store
        (pretraining it there first when it is missing)."""
        c, ds = self.config, context.dataset
        pre = pretrain_corruption_net(
            ds.x_train, ds.x_test, dataset=ds.name, data_key=context.data_key,
            channels=c.net_channels, blocks=c.net_blocks, epochs=c.net_epochs, lr=c.net_lr,
            batch_size=c.net_batch_size, device=context.device, store=context.store,
            progress=context.progress)
        self.pretrained = pre  # its run, history and reconstruction quality
        self.attach(pre.net)

    def attach(self, net: CorruptionNet) -> None:
        """Use ``net`` (its current weights are phi) as the corruption network."""
        self.net = net.eval().requires_grad_(False)
        self.phi = base_params(net)
        self.radii = block_radii(self.phi, self.config.nu)

    def search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               beta: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """beta after the inner maximization, and the loss at the start (DeepAugment: none)."""
        return beta, None

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """c_{phi+beta}(x) with beta drawn in the balls (and searched: AdA), and the search's
        loss at the start (None without a search). x is fp32 in [0, 1]."""
        beta = sample_in_balls(self.phi, self.radii, x.shape[0], generator=generator)
        beta, start_ce = self.search(model, x, y, beta)
        with torch.no_grad():
            return self.net(x, per_example_params(self.phi, beta)), start_ce

    def corrupt(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The corrupted batch before and after the SSIM guard, and step metrics.

        Shape:
            - x: (N, 3, H, W); y: (N,)
            - output: (N, 3, H, W) unguarded, (N, 3, H, W) guarded
        """
        if self.net is None:
            raise RuntimeError(f"method {self.name!r} has no corruption network: call "
                               "setup(dataset, ...) or attach(net) first (run_experiment "
                               "prepares it)")
        if next(self.net.parameters()).device != x.device:
            self.attach(self.net.to(x.device))
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            x_hat, start_ce = self.perturb(model, x, y, generator)
            x_guarded, gamma = ssim_guard(x, x_hat, self.config.ssim_threshold)
        metrics = {"guard_frac": (gamma < 1).float().mean()}
        if start_ce is not None:
            metrics["start_ce"] = start_ce.mean()
        return x_hat, x_guarded, metrics

    def corrupt_share(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The batch with every image corrupted (guarded) except a random ``clean_share`` of
        them (only the corrupted ones go through the network), which images were corrupted,
        and step metrics.

        Shape:
            - x: (N, 3, H, W); y: (N,)
            - output: (N, 3, H, W), (N,) bool
        """
        share = self.config.clean_share
        if share <= 0:
            _, x_aug, metrics = self.corrupt(model, x, y, generator)
            metrics["corrupted_frac"] = torch.ones((), device=x.device)
            return x_aug.to(x.dtype), torch.ones_like(y, dtype=torch.bool), metrics
        pick = torch.rand(x.shape[0], generator=generator, device=generator.device
                          if generator is not None else x.device).to(x.device) >= share
        out = x.clone()
        metrics = {"guard_frac": torch.zeros((), device=x.device)}
        if pick.any():
            _, x_aug, part = self.corrupt(model, x[pick], y[pick], generator)
            out[pick] = x_aug.to(x.dtype)
            # The guard's and the search's metrics are over the corrupted images only.
            metrics.update(part)
        metrics["corrupted_frac"] = pick.float().mean()
        return out, pick, metrics

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        c = self.config
        g = self.rng(x.device)
        n = x.shape[0]
        x_aug, picked, metrics = self.corrupt_share(model, x, y, g)
        xb, yb = (torch.cat([x, x_aug]), y.repeat(2)) if c.clean else (x_aug, y)
        if c.augmix == "plain":
            xb = augmix(xb, generator=g)
        if c.augmix == "jsd":
            x1, x2 = augmix_views(xb, 2, generator=g)
            logits_b, l1, l2 = model(torch.cat([xb, x1, x2])).chunk(3)
            jsd = jsd_consistency([logits_b, l1, l2])
            metrics["jsd"] = jsd.detach()
        else:
            logits_b = model(xb)
            jsd = 0.0
        ce = F.cross_entropy(logits_b, yb)
        # Accuracy on the corrupted images of the batch (all of them for AdA).
        aug_logits = logits_b[n:] if c.clean else logits_b[:n]
        hits = (aug_logits.detach().argmax(1) == y) & picked
        metrics["aug_acc"] = hits.sum() / picked.sum().clamp_min(1) * 100
        metrics["ce"] = ce.detach()
        return StepOutput(loss=ce + c.jsd_lambda * jsd, logits=logits_b[:n], metrics=metrics)
