"""DeepAugment's distortions of the corruption network (Hendrycks et al., ICCV 2021, "The Many
Faces of Robustness", Sec. 4): large random operations on a pretrained image-to-image network's
weights and features, drawn per image, so that the network's output is a new kind of image.

Three groups of operations, each with its own probability per image:

* **weights** (17 operations, each applied independently): on the convolutions of the residual
  blocks: reverse the order of a block's filters, negate, zero, replace w by -gelu(w), multiply
  every kernel by a Laplacian or an edge kernel, scale by random factors, mirror, convolve the
  kernels with random shift, random or Dirichlet kernels, add noise, rotate (spatially, or
  transpose the channel axes), multiply by random sign or 0/1 masks, negate whole filters, keep
  only each kernel's largest tap;
* **head** (at most one): on the features after the head: swap channels, drop 5 % of them,
  negate 2.5 % of them;
* **body** (at most one): after the first 5/16 of the blocks: negate the features, apply a
  ReLU or GELU, flip them over channels and one spatial axis; or skip blocks.

The operations, their layers, counts and magnitudes follow the reference code
(``DeepAugment/EDSR_distort_imagenet.py`` of the authors' repository), read for an EDSR-baseline
of 16 blocks: a block index i of the reference becomes floor(i * blocks / 16), so a 16-block
net gets the reference's layers and a shallower one the same relative depths. The reference
draws 3 of its 17 weight operations with replacement; here each is applied with the probability
that it is among those draws, 1 - (16/17)^3. The head and body groups draw one of 4 and one of 5
outcomes (the last: nothing), as the reference does. Everything is drawn per image and the
whole batch runs as one forward: a layer that any image changes gets per-example weights
(grouped convolutions, ``corruption_net.grouped_conv``), the others keep the shared ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from studykit.nets.corruption_net import CorruptionNet

REF_BLOCKS = 16  # the reference's EDSR-baseline
WEIGHT_P = 1 - (16 / 17) ** 3  # P(an operation is among 3 draws of 17 with replacement)
_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
_EDGE = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))

Tensor = torch.Tensor
Gen = torch.Generator | None


@dataclass(frozen=True)
class Operation:
    """One distortion: its group (``weights``, ``head`` or ``body``), default probability per
    image, and for weight operations the reference's block indices, which convolutions, and how
    many (block, conv) picks are changed."""

    name: str
    group: str
    probability: float
    description: str
    ref_blocks: range = range(0)
    convs: tuple[str, ...] = ()
    picks: int = 1


_W = "weights"
OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    Operation("reverse_filters", _W, WEIGHT_P, "reverse the filter order of both convs of a block",
              range(0, 10, 3), ("conv1", "conv2")),
    Operation("negate_conv", _W, WEIGHT_P, "negate a block's first conv (weight and bias)",
              range(1, 10, 3), ("conv1",)),
    Operation("zero_conv", _W, WEIGHT_P, "zero a block's first conv (weight and bias)",
              range(0, 10, 3), ("conv1",)),
    Operation("negative_gelu", _W, WEIGHT_P, "w -> -gelu(w) on both convs of a block",
              range(0, 10, 3), ("conv1", "conv2")),
    Operation("laplacian", _W, WEIGHT_P, "multiply every 3x3 kernel by a Laplacian kernel",
              range(0, 10, 3), ("conv1",)),
    Operation("edge_kernel", _W, WEIGHT_P, "multiply every 3x3 kernel by an edge kernel",
              range(0, 10, 3), ("conv1",)),
    Operation("scale_weights", _W, WEIGHT_P, "w * (1 + 2u U(0, 2)) per weight, u ~ U(0, 1)",
              range(0, 10, 3), ("conv2",)),
    Operation("mirror_negate", _W, WEIGHT_P, "mirror conv1's kernels, negate conv2",
              range(0, 10, 3), ("conv1", "conv2")),
    Operation("shift_mix", _W, WEIGHT_P, "convolve the kernels with random signed shifts",
              range(1, 13, 4), ("conv1",)),
    Operation("random_conv", _W, WEIGHT_P, "convolve the kernels with a random kernel",
              range(0, 10, 3), ("conv1",)),
    Operation("dirichlet_conv", _W, WEIGHT_P, "convolve the kernels with Dirichlet(0.1) kernels",
              range(1, 12, 4), ("conv2",)),
    Operation("weight_noise", _W, WEIGHT_P, "add U(-0.5, 0.5) noise to a block's second conv",
              range(0, 15), ("conv2",)),
    Operation("rotate", _W, WEIGHT_P, "rot90 of kernels or transpose of channels, 5 convs",
              range(0, 15), ("conv1", "conv2"), picks=5),
    Operation("sign_mask", _W, WEIGHT_P, "multiply by a random +-1 mask, 5 convs",
              range(0, 15), ("conv1",), picks=5),
    Operation("zero_mask", _W, WEIGHT_P, "multiply by a random 0/1 mask, 5 convs",
              range(0, 15), ("conv1",), picks=5),
    Operation("negate_filters", _W, WEIGHT_P, "negate half the filters (drawn), 5 convs",
              range(0, 15), ("conv1",), picks=5),
    Operation("max_tap", _W, WEIGHT_P, "keep only the largest tap of every kernel, 5 convs",
              range(0, 15), ("conv1", "conv2"), picks=5),
    Operation("swap_channels", "head", 0.25, "swap 5 random pairs of head feature channels"),
    Operation("drop_features", "head", 0.25, "zero 5 % of the head features"),
    Operation("negate_features_head", "head", 0.25, "negate 2.5 % of the head features"),
    Operation("negate_features", "body", 0.2, "negate the features after 5/16 of the blocks"),
    Operation("activation", "body", 0.2, "ReLU (1/3) or GELU (2/3) on those features"),
    Operation("flip_features", "body", 0.2, "flip them over channels and height or width"),
    Operation("skip_blocks", "body", 0.2, "skip up to 3 blocks from the third on"),
)}
GROUPS = ("weights", "head", "body")


def check_probabilities(probabilities: Mapping[str, float] | None) -> dict[str, float]:
    """Every operation's probability: the defaults with ``probabilities`` over them (one-line
    ValueError for an unknown name, a value outside [0, 1] or a group summing above 1)."""
    probs = {name: op.probability for name, op in OPERATIONS.items()}
    for name, p in (probabilities or {}).items():
        if name not in OPERATIONS:
            raise ValueError(f"unknown DeepAugment operation {name!r}; choose from: "
                             f"{', '.join(OPERATIONS)}")
        if not 0 <= float(p) <= 1:
            raise ValueError(f"probability of {name!r} must be in [0, 1], got {p!r}")
        probs[name] = float(p)
    for group in ("head", "body"):
        total = sum(p for n, p in probs.items() if OPERATIONS[n].group == group)
        if total > 1 + 1e-9:
            raise ValueError(f"the {group} operations exclude each other: their probabilities "
                             f"must sum to at most 1, got {total:g}")
    return probs


def only(name: str) -> dict[str, float]:
    """Probabilities that apply operation ``name`` to every image and nothing else."""
    if name not in OPERATIONS:
        raise ValueError(f"unknown DeepAugment operation {name!r}; choose from: "
                         f"{', '.join(OPERATIONS)}")
    return {n: float(n == name) for n in OPERATIONS}


# --------------------------------------------------------------------------------------------
# Random draws on the generator's device, moved to the data's
# --------------------------------------------------------------------------------------------
def _rand(shape: tuple[int, ...], g: Gen, device: torch.device) -> Tensor:
    dev = g.device if g is not None else device
    return torch.rand(shape, generator=g, device=dev).to(device)


def _randn(shape: tuple[int, ...], g: Gen, device: torch.device) -> Tensor:
    dev = g.device if g is not None else device
    return torch.randn(shape, generator=g, device=dev).to(device)


def _randint(high: int, shape: tuple[int, ...], g: Gen, device: torch.device) -> Tensor:
    return (_rand(shape, g, device) * high).long().clamp(max=high - 1)


def _log_gamma(alpha: float, shape: tuple[int, ...], g: Gen, device: torch.device) -> Tensor:
    """log of Gamma(alpha, 1) draws for alpha < 1 (Marsaglia and Tsang on alpha + 1, times
    U^(1/alpha)), with the generator (torch's own Gamma sampler takes none)."""
    d = alpha + 1 - 1 / 3
    c = 1 / math.sqrt(9 * d)
    out = torch.empty(shape, device=device)
    todo = torch.ones(shape, dtype=torch.bool, device=device)
    while todo.any():
        z, u = _randn(shape, g, device), _rand(shape, g, device)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (u.clamp_min(1e-30).log()
                        < 0.5 * z * z + d - d * v + d * v.clamp_min(1e-30).log())
        new = ok & todo
        out = torch.where(new, math.log(d) + v.clamp_min(1e-30).log(), out)
        todo = todo & ~ok
    return out + _rand(shape, g, device).clamp_min(1e-30).log() / alpha


# --------------------------------------------------------------------------------------------
# Weight operations on per-example weights w (N, O, C, k, k) and biases b (N, O)
# --------------------------------------------------------------------------------------------
def _kernel_conv(w: Tensor, z: Tensor) -> Tensor:
    """Each example's kernels convolved with its own z, as the reference convolves a weight
    tensor (out filters as a batch, in channels as channels) with z ('same' padding).

    Shape: w (N, O, C, k, k), z (N, C, C, 3, 3) -> (N, O, C, k, k)
    """
    n, o, c, k, _ = w.shape
    h = w.permute(1, 0, 2, 3, 4).reshape(o, n * c, k, k)
    out = F.conv2d(h, z.reshape(n * c, c, 3, 3), padding=1, groups=n)
    return out.view(o, n, c, k, k).permute(1, 0, 2, 3, 4)


def _per_example(a: Tensor, b: Tensor, pick: Tensor) -> Tensor:
    """a where ``pick`` (N,) else b."""
    return torch.where(pick.view(-1, *([1] * (a.ndim - 1))), a, b)


def _weight_op(name: str, conv: str, w: Tensor, b: Tensor, g: Gen) -> tuple[Tensor, Tensor]:
    """Operation ``name`` on a block's ``conv`` (all examples; the caller keeps it where
    drawn)."""
    n, o, c = w.shape[:3]
    dev = w.device
    if name == "reverse_filters":
        return w.flip(1), b.flip(1)
    if name in ("negate_conv", "zero_conv"):
        s = -1.0 if name == "negate_conv" else 0.0
        return s * w, s * b
    if name == "negative_gelu":
        return -F.gelu(w), b
    if name in ("laplacian", "edge_kernel"):
        kernel = torch.tensor(_LAPLACIAN if name == "laplacian" else _EDGE, device=dev)
        return w * kernel, b
    if name == "scale_weights":
        u = _rand((n,), g, dev).view(-1, 1, 1, 1, 1)
        return w * (1 + 2 * u * 2 * _rand(tuple(w.shape), g, dev)), b
    if name == "mirror_negate":
        return (w.flip(-1), b) if conv == "conv1" else (-w, b)
    if name == "shift_mix":
        # One signed tap per input channel j, the same for every output of z: every filter
        # becomes the sum over j of its shifted, signed kernels.
        tap = _randint(9, (n, c), g, dev)
        sign = _rand((n, c), g, dev).round() * 2 - 1
        z = F.one_hot(tap, 9).float() * sign[..., None]
        z = z.view(n, 1, c, 3, 3).expand(n, c, c, 3, 3)
        return _kernel_conv(w, z), b
    if name == "random_conv":
        u = _rand((n,), g, dev).view(-1, 1, 1, 1, 1)
        z = (2 * _rand((n, c, c, 3, 3), g, dev) * u - 1) / 6
        return _kernel_conv(w, z), b
    if name == "dirichlet_conv":
        z = _log_gamma(0.1, (n, c, c, 9), g, dev).softmax(-1).view(n, c, c, 3, 3)
        return _kernel_conv(w, z), b
    if name == "weight_noise":
        return w + _rand(tuple(w.shape), g, dev) - 0.5, b
    if name == "rotate":
        turns = _randint(3, (n,), g, dev) + 1
        spatial = _rand((n,), g, dev) < 0.5
        out = w
        for k in (1, 2, 3):
            for dims, keep in (((3, 4), spatial), ((1, 2), ~spatial)):
                out = _per_example(torch.rot90(w, k, dims), out, (turns == k) & keep)
        return out, b
    if name == "sign_mask":
        return w * (_rand(tuple(w.shape), g, dev).round() * 2 - 1), b
    if name == "zero_mask":
        return w * _rand(tuple(w.shape), g, dev).round(), b
    if name == "negate_filters":
        hit = torch.zeros(n, o, device=dev)
        hit.scatter_(1, _randint(o, (n, max(1, o // 2)), g, dev), 1.0)
        return w * (1 - 2 * hit).view(n, o, 1, 1, 1), b
    if name == "max_tap":
        flat = w.flatten(3)
        top = flat.argmax(-1, keepdim=True)
        return torch.zeros_like(flat).scatter(-1, top, flat.gather(-1, top)).view_as(w), b
    raise AssertionError(name)


def _ref_block(i: int, blocks: int) -> int:
    return min(blocks - 1, i * blocks // REF_BLOCKS)


@dataclass
class DistortionDraw:
    """One batch's draws: which operations each image got (``applied``: name -> (N,) bool),
    the per-example weights of the layers they change, and the feature hook."""

    applied: dict[str, Tensor]
    params: dict[str, Tensor]
    hook: Callable[[str, Tensor, Tensor], Tensor]


def draw_distortions(net: CorruptionNet, n: int, *, probabilities: Mapping[str, float] | None
                     = None, generator: Gen = None,
                     device: torch.device | str | None = None) -> DistortionDraw:
    """Draw DeepAugment's operations for ``n`` images (module docstring) on ``net``."""
    probs = check_probabilities(probabilities)
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    blocks = len(net.blocks)
    applied: dict[str, Tensor] = {}
    for group in GROUPS:
        names = [k for k, op in OPERATIONS.items() if op.group == group]
        if group == "weights":
            for k in names:
                applied[k] = _rand((n,), g=generator, device=dev) < probs[k]
        else:  # one outcome of the group per image
            u = _rand((n,), g=generator, device=dev)
            edges = torch.tensor([probs[k] for k in names], device=dev).cumsum(0)
            which = (u[:, None] >= edges).sum(1)
            for i, k in enumerate(names):
                applied[k] = which == i

    params: dict[str, Tensor] = {}
    for name, op in OPERATIONS.items():
        if op.group != "weights" or not blocks or not applied[name].any():
            continue
        candidates = sorted({_ref_block(i, blocks) for i in op.ref_blocks})
        for _ in range(op.picks):
            block = torch.tensor(candidates, device=dev)[
                _randint(len(candidates), (n,), generator, dev)]
            conv_pick = _randint(len(op.convs), (n,), generator, dev)
            # Ops that change several convs of one block (picks 1) change all of op.convs;
            # ops of several picks change one conv per pick.
            convs = list(enumerate(op.convs)) if op.picks > 1 else [(-1, c) for c in op.convs]
            for j, conv in convs:
                for blk in candidates:
                    hit = applied[name] & (block == blk) & ((conv_pick == j) if j >= 0 else True)
                    idx = hit.nonzero().squeeze(1)
                    if not idx.numel():
                        continue
                    layer = f"blocks.{blk}.{conv}"
                    if f"{layer}.weight" not in params:  # the layer's own weights, per example
                        module = net.get_submodule(layer)
                        params[f"{layer}.weight"] = module.weight.detach().to(dev).repeat(
                            n, 1, 1, 1, 1)
                        params[f"{layer}.bias"] = module.bias.detach().to(dev).repeat(n, 1)
                    w, bias = params[f"{layer}.weight"], params[f"{layer}.bias"]
                    # Computed for the images it hits only (their own draws), written in place.
                    w[idx], bias[idx] = _weight_op(name, conv, w[idx], bias[idx], generator)
    hook = _feature_hook(applied, n, blocks, net.head.out_channels, generator, dev)
    return DistortionDraw(applied, params, hook)


def _feature_hook(applied: Mapping[str, Tensor], n: int, blocks: int, channels: int, g: Gen,
                  dev: torch.device) -> Callable[[str, Tensor, Tensor], Tensor]:
    """The head and body operations as a ``CorruptionNet.forward`` hook: their draws are made
    here, but the head's masks, which take the features' shape, at the hook's first call."""
    # 5 swaps of two distinct channels (an odd permutation: never the identity).
    first = _randint(channels, (5, n), g, dev)
    second = (first + 1 + _randint(max(1, channels - 1), (5, n), g, dev)) % channels
    swaps = torch.stack([first, second], -1)  # (5, n, 2)
    relu = _rand((n,), g, dev) < 1 / 3
    flip_height = _rand((n,), g, dev) < 1 / 3
    skips = torch.zeros(n, blocks, dtype=torch.bool, device=dev)
    if blocks:
        skipped = torch.tensor([_ref_block(i, blocks) for i in range(2, REF_BLOCKS)], device=dev)
        skips.scatter_(1, skipped[_randint(len(skipped), (n, 3), g, dev)], True)
        skips &= applied["skip_blocks"][:, None]
    body_at = f"blocks.{max(1, round(5 * blocks / REF_BLOCKS)) - 1}"
    state: dict[str, Tensor] = {}  # the masks of the head, drawn at the first forward

    def head(h: Tensor) -> Tensor:
        if "drop" not in state:
            state["drop"] = _rand(tuple(h.shape), g, dev) >= 0.05
            state["negate"] = _rand(tuple(h.shape), g, dev) >= 0.025
        out = h
        if applied["swap_channels"].any():
            idx = torch.arange(channels, device=dev).repeat(n, 1)
            rows = torch.arange(n, device=dev)
            for pair in swaps:
                a, b = pair.unbind(-1)
                ia, ib = idx[rows, a].clone(), idx[rows, b].clone()
                idx[rows, a], idx[rows, b] = ib, ia
            swapped = h.gather(1, idx[:, :, None, None].expand_as(h))
            out = _per_example(swapped, out, applied["swap_channels"])
        out = _per_example(h * state["drop"], out, applied["drop_features"])
        signs = state["negate"].float() * 2 - 1
        return _per_example(h * signs, out, applied["negate_features_head"])

    def body(r: Tensor) -> Tensor:
        out = _per_example(-r, r, applied["negate_features"])
        act = torch.where(relu.view(-1, 1, 1, 1), F.relu(r), F.gelu(r))
        out = _per_example(act, out, applied["activation"])
        flipped = torch.where(flip_height.view(-1, 1, 1, 1), r.flip(1, 2), r.flip(1, 3))
        return _per_example(flipped, out, applied["flip_features"])

    def hook(stage: str, before: Tensor, after: Tensor) -> Tensor:
        if stage == "head":
            return head(after)
        i = int(stage.split(".")[1])
        out = _per_example(before, after, skips[:, i])
        return body(out) if stage == body_at else out

    return hook


@torch.no_grad()
def distort(net: CorruptionNet, x: Tensor, *, probabilities: Mapping[str, float] | None = None,
            generator: Gen = None) -> Tensor:
    """DeepAugment images of ``x`` (in [0, 1]): a new draw of the operations per image.

    Shape:
        - x: (N, 3, H, W)
        - output: (N, 3, H, W)
    """
    draw = draw_distortions(net, x.shape[0], probabilities=probabilities, generator=generator,
                            device=x.device)
    out = net(x, draw.params, draw.hook)
    return torch.nan_to_num(out, nan=0.5)
