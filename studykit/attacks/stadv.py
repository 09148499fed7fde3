"""StAdv: spatially transformed adversarial examples (Xiao et al., ICLR 2018), batched.

A per-pixel flow field f = (du, dv) moves where each output pixel p reads the input: the image
is resampled bilinearly at p + f(p) (Eq. 1-2 of the paper), and the flow is chosen to

    maximize  L_adv(f(x_f), y) - tau * L_flow(f),
    L_flow(f) = sum_p sum_{q in N(p)} sqrt(||du_p - du_q||^2 + ||dv_p - dv_q||^2 + eps)

(Eq. 4; N(p): the 4 neighbours of p inside the image), with tau = 0.05 as in the paper. The
paper minimizes a C&W margin plus tau * L_flow with L-BFGS and no bound on the flow; here, as
an inner maximization for training, cross-entropy is ascended by signed gradient steps from the
zero flow, and each flow component is clipped to ``[-bound, bound]`` pixels (an Linf bound on
the flow) after every step, like Linf PGD: ``bound`` 1 pixel, 10 steps of ``bound / 4`` (the
kit's Linf PGD convention, 10 steps of eps/4). The bound and the step are this kit's choice;
the paper has neither.

Flows are in pixels; the sampling grid maps pixel centres to grid_sample's [-1, 1] with
``align_corners=True`` (pixel 0 at -1, pixel W-1 at +1), and reads outside the image clamp to
its border. The model runs under ``attack_mode`` (eval mode by default, BN buffers, modes and
``requires_grad`` flags restored).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studykit.attacks.mode import _unwrap, attack_mode
from studykit.attacks.pgd import _check_count

FLOW_EPS = 1e-8  # inside the square root of L_flow, so its gradient exists at a smooth flow


def _identity_grid(n: int, h: int, w: int, like: Tensor) -> Tensor:
    """grid_sample coordinates of every pixel centre (align_corners=True), (N, H, W, 2)."""
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).expand(n, h, w, 2)


def flow_warp(x: Tensor, flow: Tensor) -> Tensor:
    """Resample ``x`` bilinearly at p + flow(p), flow in pixels (StAdv Eq. 1-2).

    Channel 0 of the flow moves along the width (du), channel 1 along the height (dv). A
    read outside the image takes the nearest border pixel. grid_sample's unnormalization
    rounds pixel centres by ~1e-6, so the result is written as ``x`` plus the difference
    between the flowed and the identity resampling: a zero flow returns ``x`` bit for bit, and
    the gradient with respect to the flow is bilinear sampling's.

    Returns:
        The warped images, clipped to [0, 1] (bilinear weights sum to 1, so only rounding
        can step outside).

    Shape:
        - x: :math:`(N, C, H, W)`; flow: :math:`(N, 2, H, W)`; output: like ``x``
    """
    n, _, h, w = x.shape
    if flow.shape != (n, 2, h, w):
        raise ValueError(f"flow must have shape {(n, 2, h, w)} for images {tuple(x.shape)}, "
                         f"got {tuple(flow.shape)}")
    base = _identity_grid(n, h, w, x)
    # Pixels to grid units: the H or W - 1 gaps between pixel centres span 2.
    scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=x.device, dtype=x.dtype)
    grid = base + flow.permute(0, 2, 3, 1).to(x.dtype) * scale
    kw = dict(mode="bilinear", padding_mode="border", align_corners=True)
    moved = F.grid_sample(x, grid, **kw)
    still = F.grid_sample(x, base, **kw)
    return (x + (moved - still)).clamp(0, 1)


def flow_loss(flow: Tensor, eps: float = FLOW_EPS) -> Tensor:
    """StAdv's smoothness loss L_flow per sample (Eq. 4), 4-neighbourhood.

    Each ordered pair (p, q) with q a neighbour of p inside the image counts once, so an
    unordered pair counts twice, as in the sum over p and q in N(p).

    Shape:
        - flow: :math:`(N, 2, H, W)`; output: :math:`(N,)`
    """
    def term(d: Tensor) -> Tensor:
        return (d.pow(2).sum(1) + eps).sqrt().flatten(1).sum(1)

    return 2 * (term(flow[:, :, :, 1:] - flow[:, :, :, :-1])
                + term(flow[:, :, 1:, :] - flow[:, :, :-1, :]))


def _check_number(name: str, value: float, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, "
                         f"got {value!r}")


def stadv_flow(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    bound: float = 1.0,
    steps: int = 10,
    step_size: float | None = None,
    tau: float = 0.05,
    eval_mode: bool = True,
) -> Tensor:
    """The StAdv flow field of ``x``: signed gradient ascent on CE - tau * L_flow.

    From the zero flow, each step computes, per sample, the gradient of
    ``CE(model(flow_warp(x, flow)), y) - tau * flow_loss(flow)`` with respect to the flow
    (cross-entropy summed over the batch, so a sample's step does not depend on the batch
    size), moves every flow component by ``step_size`` along its sign, and clips it to
    ``[-bound, bound]`` pixels.

    Args:
        model: classifier taking [0, 1] images (normalization inside the model).
        x: images in [0, 1]. y: labels.
        bound: largest displacement of a flow component, in pixels (Linf bound on the flow).
            0 returns the zero flow.
        steps: ascent steps; 0 returns the zero flow.
        step_size: pixels per step; default ``bound / 4``.
        tau: weight of the smoothness loss (the paper's 0.05).
        eval_mode: run the model in eval mode (default); see ``attack_mode``.

    Returns:
        The flow, detached, within the bound.

    Shape:
        - x: :math:`(N, C, H, W)`; y: :math:`(N,)`; output: :math:`(N, 2, H, W)`

    Raises:
        ValueError: a negative or non-finite ``bound``, ``step_size`` or ``tau``, a negative
            ``steps``, or mismatched batch sizes.
    """
    _check_number("bound", bound)
    _check_count("steps", steps)
    _check_number("tau", tau)
    step_size = bound / 4 if step_size is None else step_size
    _check_number("step_size", step_size)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y disagree on the batch size: {x.shape[0]} vs {y.shape[0]}")
    x = x.detach()
    n, _, h, w = x.shape
    flow = torch.zeros(n, 2, h, w, device=x.device, dtype=x.dtype)
    if bound == 0 or steps == 0:
        return flow
    model = _unwrap(model)
    with attack_mode(model, eval_mode=eval_mode):
        for _ in range(int(steps)):
            f = flow.requires_grad_(True)
            ce = F.cross_entropy(model(flow_warp(x, f)), y, reduction="sum")
            objective = ce - tau * flow_loss(f).sum()
            (grad,) = torch.autograd.grad(objective, f)
            flow = (f.detach() + step_size * grad.sign()).clamp(-bound, bound)
    return flow.detach()


def stadv(model: nn.Module, x: Tensor, y: Tensor, **kwargs) -> Tensor:
    """StAdv images: ``x`` warped by :func:`stadv_flow` (same arguments), detached, in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`; y: :math:`(N,)`; output: like ``x``
    """
    flow = stadv_flow(model, x, y, **kwargs)
    return flow_warp(x.detach(), flow)
