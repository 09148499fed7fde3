"""Adversarial Batch Normalization (AdvBN; Shu et al., NeurIPS 2021, "Encoding Robustness to
Image Style via Adversarial Feature Perturbations"), Eq. 1-2:

    f_adv = delta_sigma * (f - mu(f)) + delta_mu * mu(f),     f = g^{1,l}(x)
    (delta_mu, delta_sigma) = argmax L[g^{l+1,L}(f_adv), y]
    subject to ||delta_mu - 1||_inf <= eps, ||delta_sigma - 1||_inf <= eps

``mu`` and ``sigma`` are per-channel statistics of the batch (pooled over N, H and W), so
``delta_mu`` and ``delta_sigma`` are vectors of length C shared by the whole batch. The
maximization is m PGD sign steps of size tau from delta = 1 (Algorithm 1), each followed by
clipping to [1 - eps, 1 + eps]. After a cut point whose output ends with a ReLU the shifted
features are clamped at 0 by default, so the head never sees values its input cannot take; the
authors' code does this, Eq. 1-2 do not. The clamp moves the shifted statistics away from the
Eq. 2 targets (delta_mu mu and |delta_sigma| sigma; far away in channels whose delta_mu or
delta_sigma is small or negative); ``head_attack(..., clamp=False)`` is Eq. 1-2 as written.

The cut: "after stage k" (k = 1, 2, 3) is the k-th entry of ``model.stages`` that is not the
stem (small_cnn: ``layer1``-``layer3``; ResNet-18: ``layer1``-``layer3``, where ``layer1``
plays the part of ResNet-50's conv2_3, the paper's default; WRN-40-2: ``block1``-``block3``).
`encoder_module_names` finds the modules the part before the cut runs (by tracing one
forward), so freezing and the auxiliary BN work for any model of `studykit.models`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import attack_mode
from studykit.normalization import DualBN, bn_route

STAGE_RANGE = (1, 3)


def cut_stage(model: nn.Module, stage: int) -> str:
    """The name of the stage after which "stage ``stage``" of ``model`` ends.

    Args:
        model: a `studykit.models.ImageClassifier`.
        stage: 1, 2 or 3 (counting stages after the stem).

    Returns:
        A name from ``model.stages``.

    Raises:
        ValueError: when the model has fewer stages.
    """
    names = [s for s in model.stages if s != "stem"]
    if not 1 <= stage <= len(names):
        raise ValueError(f"stage must be 1..{len(names)} for {model.arch}, got {stage}")
    return names[stage - 1]


def is_relu_cut(model: nn.Module, name: str) -> bool:
    """Whether the features at the end of stage ``name`` come out of a ReLU (non-negative)."""
    return name in getattr(model, "relu_stages", frozenset())


@torch.no_grad()
def encoder_module_names(model: nn.Module, name: str) -> list[str]:
    """Names of the modules ``model.forward_until(x, name)`` runs (the part before the cut).

    Traced with one small eval-mode forward (modes restored), so stems that are methods, not
    modules, are found too.
    """
    called: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: called.append(n))
             for n, m in model.named_modules() if n]
    modes = [(m, m.training) for m in model.modules()]
    ref = next(model.buffers(), None)
    x = torch.rand(2, model.in_channels, 32, 32,
                   device=ref.device if ref is not None else "cpu")
    try:
        model.eval()
        model.forward_until(x, name)
    finally:
        for h in hooks:
            h.remove()
        for m, t in modes:
            m.train(t)
    return list(dict.fromkeys(called))


def encoder_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """The parameters of the part before the cut (each module's own, not its children's)."""
    out: list[nn.Parameter] = []
    for n in encoder_module_names(model, name):
        out.extend(model.get_submodule(n).parameters(recurse=False))
    return out


def add_auxiliary_bn(model: nn.Module, name: str) -> int:
    """Give every BatchNorm2d after the cut an auxiliary copy (a `DualBN`, both BNs copies of
    the original); dual layers already there get their auxiliary BN reset to the main one.

    Returns:
        The number of layers now dual after the cut.
    """
    encoder = set(encoder_module_names(model, name))
    count = 0
    for n, m in list(model.named_modules()):
        if not n or n in encoder or any(n.startswith(e + ".") for e in encoder):
            continue
        if isinstance(m, DualBN):
            m.copy_clean_to_aux()
            count += 1
        elif type(m) is nn.BatchNorm2d and not isinstance(_parent(model, n), DualBN):
            parent_name, _, child = n.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child,
                    DualBN.from_bn(m))
            count += 1
    return count


def _parent(model: nn.Module, name: str) -> nn.Module:
    parent_name = name.rpartition(".")[0]
    return model.get_submodule(parent_name) if parent_name else model


def channel_stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of a batch of feature maps.

    Shape:
        - f: (N, C, H, W)
        - output: two tensors (1, C, 1, 1)
    """
    mu = f.mean(dim=(0, 2, 3), keepdim=True)
    return mu, f.std(dim=(0, 2, 3), keepdim=True, unbiased=False)


def shift_features(f: torch.Tensor, delta_mu: torch.Tensor, delta_sigma: torch.Tensor,
                   *, relu: bool = False) -> torch.Tensor:
    """``delta_sigma * (f - mu) + delta_mu * mu`` (Eq. 2), clamped at 0 after a ReLU cut.

    Shape:
        - f: (N, C, H, W)
        - delta_mu, delta_sigma: (C,)
        - output: (N, C, H, W)
    """
    mu, _ = channel_stats(f)
    dm, ds = delta_mu.view(1, -1, 1, 1), delta_sigma.view(1, -1, 1, 1)
    out = ds * (f - mu) + dm * mu
    return out.clamp_min(0) if relu else out


def advbn_deltas(loss_fn: Callable[[torch.Tensor], torch.Tensor], f: torch.Tensor, *,
                 steps: int, step_size: float, eps: float, relu: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD on the feature statistics (Algorithm 1's inner loop).

    The caller sets the modes (see `head_attack`): this runs ``steps`` sign-gradient ascent
    steps on ``loss_fn(shift_features(f, delta_mu, delta_sigma))`` in fp32, from delta = 1,
    projecting both deltas to [1 - eps, 1 + eps] after each step.

    Args:
        loss_fn: maps shifted features to the scalar loss to raise.
        f: the clean features (not modified; no gradient flows into them).
        steps: m; 0 returns deltas of 1 (no shift).
        step_size: tau.
        eps: the bound.
        relu: clamp shifted features at 0.

    Returns:
        ``(delta_mu, delta_sigma)``, detached.

    Shape:
        - f: (N, C, H, W)
        - output: two tensors (C,)
    """
    f = f.detach().float()
    c = f.shape[1]
    delta = torch.ones(2, c, device=f.device, dtype=torch.float32)
    with torch.enable_grad(), torch.autocast(f.device.type, enabled=False):
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = loss_fn(shift_features(f, delta[0], delta[1], relu=relu))
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + step_size * grad.sign()).clamp(1 - eps, 1 + eps)
    delta = delta.detach()
    return delta[0], delta[1]


@contextlib.contextmanager
def auxiliary_route(model: nn.Module) -> Iterator[nn.Module]:
    """Forwards inside use the auxiliary BN of every dual layer (`bn_route` ``"aug"``)."""
    with bn_route(model, "aug"):
        yield model


def head_attack(model: nn.Module, f: torch.Tensor, y: torch.Tensor, name: str, *, steps: int,
                step_size: float, eps: float, clamp: bool = True) -> torch.Tensor:
    """AdvBN on the head of ``model`` after stage ``name``: the shifted features.

    The attack runs in eval mode through the auxiliary BN (`studykit.attacks.attack_mode`
    saves and restores modes and ``requires_grad``; no running statistic moves) and returns
    ``shift_features(f, delta_mu, delta_sigma)`` outside it, ready for a training forward.
    ``clamp``: clamp the shifted features at 0 after a ReLU cut (the authors' code), in the
    attack and in the result; False: Eq. 1-2 as written, never clamped.

    Shape:
        - f: (N, C, H, W) features ``model.forward_until(x, name)``
        - y: (N,)
        - output: (N, C, H, W)
    """
    relu = clamp and is_relu_cut(model, name)
    with attack_mode(model), auxiliary_route(model):
        dm, ds = advbn_deltas(lambda h: F.cross_entropy(model.forward_after(h, name), y), f,
                              steps=steps, step_size=step_size, eps=eps, relu=relu)
    return shift_features(f.detach(), dm, ds, relu=relu)
