"""AugMix: per-sample replayable parameters, the chain engine and mixing, on whole batches.

Hendrycks et al. (2020), "AugMix: A Simple Data Processing Method to Improve Robustness and
Uncertainty" (ICLR): ``x_augmix = (1 - m) x + m sum_i w_i chain_i(x)`` with ``width`` chains of
1-3 random ops each, ``w ~ Dirichlet(alpha, ..., alpha)`` and ``m ~ Beta(alpha, alpha)``.

Everything works on float NCHW images in [0, 1] on any device, as whole batches: there is no
per-image Python loop and no PIL. Sampling is kept apart from applying (kornia style):
:func:`sample_augmix_params` draws every random choice from a ``torch.Generator`` (on the
generator's device, CPU by default) into an :class:`AugMixParams`, and :func:`augmix_chains`
applies those parameters deterministically, so the same parameters give the same images and
AugMax can re-mix the same chains with adversarial weights (:func:`mix` is differentiable in
``w`` and ``m``).

The op set and its parameterization are those of the reference ``augmentations.py`` at
``IMAGE_SIZE = 32``: each op call draws ``level ~ U(0.1, severity)`` afresh and

* ``posterize``: keep ``4 - int(0.4 * level)`` bits (4 or 3 at severity 3);
* ``rotate``: ``int(3 * level)`` degrees (0..8), random sign, bilinear, about the centre;
* ``solarize``: invert levels ``>= 256 - int(25.6 * level)`` (threshold 180..254);
* ``shear_x`` / ``shear_y``: ``0.03 * level`` (0.003..0.09), random sign, PIL affine
  ``(1, s, 0, 0, 1, 0)`` / ``(1, 0, 0, s, 1, 0)``, i.e. about the top-left corner;
* ``translate_x`` / ``translate_y``: ``int(level * (size / 3) / 10)`` pixels (0..3 at 32 px),
  random sign, PIL affine ``(1, 0, t, 0, 1, 0)`` / ``(1, 0, 0, 0, 1, t)``;
* ``autocontrast`` and ``equalize`` take no magnitude.

What is emulated of PIL, exactly:

* Affine ops follow ``Image.transform(AFFINE, BILINEAR)``: the output pixel centre
  ``(x + 0.5, y + 0.5)`` maps to the input point ``(a x' + b y' + c, d x' + e y' + f)``;
  a point outside ``[0, W) x [0, H)`` is black, a point inside is interpolated bilinearly with
  edge clamping (one ``grid_sample`` with a grid built for that). ``rotate`` uses Pillow's
  matrix for ``Image.rotate`` (centre ``(W/2, H/2)``, positive angles counter-clockwise).
  Whole-pixel translations are exact copies.
* Colour ops (``autocontrast``, ``equalize``, ``posterize``, ``solarize``) are lookup tables on
  the 256 uint8 levels as in ``PIL.ImageOps``; a float pixel's level is ``floor(255 x + 1e-3)``
  (exact for ``uint8 / 255`` images). ``equalize`` reproduces Pillow's LUT (``step = (total -
  count of the brightest used level) // 255``) and ``autocontrast`` Pillow's float64
  ``int(v * scale + offset)`` (which sends the brightest level to 254 for some ranges). Both
  match ``ImageOps`` bit for bit on uint8 images.
* Inside :func:`augmix_chains` the images are uint8 levels between ops, as the reference's PIL
  images are, and each resampling is truncated to uint8 as Pillow does: on uint8 inputs the
  chains match a PIL run with the same ops and magnitudes on over 99.9% of pixels (the rest
  are float round-off at an exact level boundary; tests/test_augmentations.py). The public op
  functions take and return float images; the affine ones skip the truncation (so they differ
  from Pillow by less than 1/255).

kornia: none of these ops calls it. Its ``equalize`` computes the same LUT as ours (the tests
check they agree), but measured here it took 2-3x longer than the uint8 kernel used in the
chains; its ``posterize`` truncates unquantized values with no tolerance and is slower still,
its ``solarize`` takes a float threshold, it has no Pillow-style autocontrast, and
``warp_affine`` cannot express Pillow's edge clamping with a hard black cut-off. torchvision's
``v2.AugMix`` is no substitute (one parameter draw per batch, 13 ops).

Speed (see benchmarks/augmix_throughput.py for the per-stage breakdown): all ``width * N``
chain images form one uint8 batch. On the CPU (``mode="grouped"``), at each chain step the rows
still running are gathered into that step's buffer sorted by the op they drew (one device sync
per step), so every op runs once on one contiguous slice: all rotations and shears of the step
in one ``grid_sample`` with a per-sample matrix (chunked on the CPU), whole-pixel translations
as slice copies, posterize and solarize as bitwise ops, equalize and autocontrast as per-plane
histograms / min-max and a gathered LUT. Rows whose chain has ended (or whose affine magnitude
is 0) are skipped; one final gather restores the order. On a GPU (``mode="dense"``) the host
must not wait for group sizes: every op kind runs on every row, with neutral magnitudes for rows
that apply another op, and each row keeps its own op's result (same levels bit for bit; no
host synchronization in the chains, nor in :func:`sample_augmix_params` with a generator on the
data's device, nor in :func:`mix`, :func:`augmix` or :func:`augmix_views` given one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from studykit.augment._common import _check_images, _per_sample
from studykit.augment.augmix_params import sample_augmix_params
from studykit.augment.chains import augmix_chains


def mix(x: Tensor, chains: Tensor, w: Tensor, m: float | Tensor) -> Tensor:
    """AugMix's mixture ``(1 - m) x + m sum_i w_i chain_i``, differentiable in x, w and m.

    Args:
        x: clean images.
        chains: chain outputs from :func:`augmix_chains`: float images in [0, 1], or uint8
            levels (``as_levels=True``), which are scaled by 1/255 on the fly.
        w: chain weights per image (AugMix: Dirichlet; AugMax: softmax of adversarial logits).
        m: mixing weight per image in [0, 1] (or one for all).

    Returns:
        The mixed images (in [0, 1] when w is a convex combination and m in [0, 1]).

    Shape:
        - x: :math:`(N, C, H, W)`
        - chains: :math:`(width, N, C, H, W)`
        - w: :math:`(N, width)`
        - m: scalar or :math:`(N,)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    k, n = chains.shape[:2]
    if chains.shape[1:] != x.shape or w.shape != (n, k):
        raise ValueError(
            f"shapes do not match: x {tuple(x.shape)}, chains {tuple(chains.shape)} "
            f"(expected (width, *x.shape)), w {tuple(w.shape)} (expected ({n}, {k}))"
        )
    if chains.dtype != torch.uint8 and not chains.is_floating_point():
        raise ValueError(f"chains must be float images or uint8 levels; got {chains.dtype}")
    levels = chains.dtype == torch.uint8
    w = w.to(device=x.device, dtype=x.dtype)
    w = (w / 255.0 if levels else w).view(n, k, 1, 1, 1)

    def chain(i: int) -> Tensor:
        # Cast one chain at a time: uint8 x float arithmetic is not vectorized on the CPU, and
        # a cast of all chains at once is a large temporary.
        return chains[i].to(x.dtype) if levels else chains[i]

    mixed = chain(0).mul_(w[:, 0]) if levels else chains[0] * w[:, 0]
    for i in range(1, k):
        mixed.addcmul_(chain(i), w[:, i])
    return torch.lerp(x, mixed, _per_sample(m, x, "m"))


def augmix(
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
    width: int = 3,
    depth: int | Sequence[int] = -1,
    severity: float = 3,
    alpha: float = 1.0,
) -> Tensor:
    """One AugMix view of every image: sample parameters, apply the chains, mix.

    Args:
        x: clean images in [0, 1].
        generator: random source (parameters are drawn on its device).
        width: chains per image.
        depth: ops per chain (-1: uniform 1..3).
        severity: level range upper end.
        alpha: Dirichlet/Beta concentration.

    Returns:
        The augmented images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    _check_images(x)
    params = sample_augmix_params(
        x.shape[0], width=width, depth=depth, severity=severity, alpha=alpha, generator=generator
    ).to(x.device)
    return mix(x, augmix_chains(x, params, as_levels=True), params.w, params.m)


def augmix_views(
    x: Tensor, k: int = 2, *, generator: torch.Generator | None = None, **kwargs
) -> list[Tensor]:
    """``k`` independent AugMix views of every image, computed as one batch.

    Args:
        x: clean images in [0, 1].
        k: number of views (AugMix's JSD loss: 2).
        generator: random source.
        **kwargs: ``width``, ``depth``, ``severity``, ``alpha`` as in :func:`augmix`.

    Returns:
        ``k`` tensors of augmented images in [0, 1].

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: ``k`` x :math:`(N, C, H, W)`
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    return list(augmix(x.repeat(k, 1, 1, 1), generator=generator, **kwargs).chunk(k))
