"""AugMax's inner maximization: adversarial mixing weights for fixed augmentation chains.

Wang et al., NeurIPS 2021, Eq. 4 and Algorithm 1:

    x* = (1 - m) x + m sum_i softmax(p)_i chain_i(x)
    m*, p* = argmax_{m in [0, 1], p in R^width} CE(f(x*), y)

found by sign-gradient ascent (step alpha on m, then clip to [0, 1], and on p) from a U(0, 1)
start, per sample. Shared by ``augmax``, ``advmax`` (AugMax Table 10) and the Fig. 1 views.

Early stopping (FAT-style, k misclassified steps) has two rules:

* ``"paper"`` (Algorithm 1): the check follows each update, so every sample takes at least one
  step, and a sample stops once it has been misclassified after k of its updates, keeping its
  m and p. Only the samples still active are computed at each step (gather, step, scatter), so
  the early stop saves the time it promises: one host synchronization per step gathers them.
* ``"reference"``: what the authors' code effectively does. Its per-sample mask does not
  mask, so every sample keeps ascending, and the check (before each update, the random start
  included) only ends the whole batch once every sample has been misclassified k times.

The search runs in eval mode (and fp32, see ``studykit.attacks.attack_mode``) with no parameter
gradients; the caller routes the model (AugMax: through the auxiliary BN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import attack_mode
from studykit.augment import mix
from studykit.rng import device_generator

STOP_RULES = ("paper", "reference")


@dataclass
class AugMaxSearch:
    """Result of the inner maximization.

    Attributes:
        m: (N,) mixing weight of the augmented part. p: (N, width) chain logits.
        steps_taken: (N,) ascent updates applied to each sample.
        computed: sample-steps computed (forward and backward of one sample): the cost.
        start_loss: mean CE at the random start (0-dim tensor, on the device).
    """

    m: torch.Tensor
    p: torch.Tensor
    steps_taken: torch.Tensor
    computed: int
    start_loss: torch.Tensor

    def images(self, x: torch.Tensor, chains: torch.Tensor) -> torch.Tensor:
        """The AugMax images x* of these parameters."""
        return mix(x, chains, F.softmax(self.p, dim=1), self.m)


def check_stop_rule(rule: str) -> None:
    if rule not in STOP_RULES:
        raise ValueError(f"unknown stop_rule {rule!r}; choose one of: {', '.join(STOP_RULES)}")


def augmax_search(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, chains: torch.Tensor, *,
    steps: int = 10, step_size: float = 0.1, early_stop: int | None = 1,
    stop_rule: str = "paper", generator: torch.Generator | None = None,
) -> AugMaxSearch:
    """Adversarial mixing parameters for fixed chains (AugMax Eq. 4, Algorithm 1).

    Args:
        model: classifier on [0, 1] images, routed by the caller.
        x: clean images. y: labels.
        chains: ``studykit.augment.augmix_chains`` output.
        steps: ascent steps n. step_size: alpha, on m and p.
        early_stop: k, misclassified steps before a sample stops; None: never stop.
        stop_rule: ``"paper"`` or ``"reference"`` (module docstring).
        generator: the random start (drawn on ``x``'s device, see ``studykit.rng``).

    Shape:
        - x: (N, C, H, W); chains: (width, N, C, H, W); m: (N,); p: (N, width)
    """
    check_stop_rule(stop_rule)
    if early_stop is not None and early_stop < 1:
        raise ValueError(f"early_stop must be an integer >= 1 or None, got {early_stop!r}")
    n, width = x.shape[0], chains.shape[0]
    g = device_generator(generator, x.device)
    m = torch.rand(n, generator=g, device=x.device)
    p = torch.rand(n, width, generator=g, device=x.device)
    taken = torch.zeros(n, dtype=torch.long, device=x.device)
    misses = torch.zeros(n, dtype=torch.long, device=x.device)
    start_loss = torch.zeros((), device=x.device)
    computed = 0

    def ascent(idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sel = slice(None) if idx is None else idx
        m_ = m[sel].clone().requires_grad_(True)
        p_ = p[sel].clone().requires_grad_(True)
        logits = model(mix(x[sel], chains[:, sel], F.softmax(p_, dim=1), m_))
        loss = F.cross_entropy(logits, y[sel], reduction="sum")
        g_m, g_p = torch.autograd.grad(loss, [m_, p_])
        return logits.detach(), loss.detach(), torch.cat([g_m[:, None], g_p], 1).sign()

    def update(idx: torch.Tensor | None, sign: torch.Tensor) -> None:
        sel = slice(None) if idx is None else idx
        m[sel] = (m[sel] + step_size * sign[:, 0]).clamp(0, 1)
        p[sel] = p[sel] + step_size * sign[:, 1:]
        taken[sel] += 1

    with attack_mode(model, eval_mode=True):
        if stop_rule == "reference" or early_stop is None:
            for i in range(steps):
                logits, loss, sign = ascent(None)
                computed += n
                if i == 0:
                    start_loss = loss / n
                if early_stop is not None:
                    misses += (logits.argmax(1) != y).long()
                    if bool((misses >= early_stop).all()):  # the step's one synchronization
                        break
                update(None, sign)
        else:
            idx = torch.arange(n, device=x.device)
            for i in range(steps):
                logits, loss, sign = ascent(idx)
                computed += int(idx.numel())
                if i == 0:
                    start_loss = loss / n
                else:  # this forward checks the previous update's result
                    misses[idx] += (logits.argmax(1) != y[idx]).long()
                    keep = (misses[idx] < early_stop).nonzero().squeeze(1)  # one sync
                    if keep.numel() == 0:
                        break
                    idx, sign = idx[keep], sign[keep]
                update(idx, sign)
    return AugMaxSearch(m, p, taken, computed, start_loss)
