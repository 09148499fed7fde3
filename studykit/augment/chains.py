"""The AugMix chain engine: applies drawn :class:`AugMixParams` to a batch, with the images
kept as uint8 levels between ops as the reference's PIL images are.

On the CPU (``mode="grouped"``) the rows of each chain step are sorted by op so every op runs
once on a contiguous slice; on a GPU (``mode="dense"``) every op kind runs on every row with
neutral magnitudes elsewhere, so the host never waits for group sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from studykit.augment._common import _check_images, _timed
from studykit.augment.augmix_params import (
    _OP,
    AUGMIX_OPS,
    AugMixParams,
)
from studykit.augment.colour import (
    _LEVEL_EPS,
    _apply_lut_u8_,
    _autocontrast_lut,
    _autocontrast_u8_,
    _equalize_lut,
    _equalize_u8_,
    _from_levels,
    _posterize_u8_,
    _solarize_u8_,
    _to_levels,
)
from studykit.augment.geometric import _pil_grid, _rotate_coeffs, _shift_

_CPU_CHUNK_PIXELS = 1 << 18  # values per chunk of CPU resampling (see _resample_u8_)
_DENSE_CHUNK_VALUES = 1 << 23  # uint8 values per chunk of rows of the dense chains

# Step groups. Rows of a chain step are sorted by group so that each group is one contiguous
# slice of the batch; translations are further sorted by their offset.
_G_GRID, _G_TX, _G_TY = 0, 1, 2  # rotate + shear (one grid_sample), translate_x, translate_y
_G_COLOUR = {"autocontrast": 3, "equalize": 4, "posterize": 5, "solarize": 6}
_G_IDLE, _G_ENDED = 7, 8  # zero-magnitude affine op (identity); chain already ended
_OP_GROUP = torch.tensor(
    [
        _G_COLOUR.get(
            name, _G_TX if name == "translate_x" else _G_TY if name == "translate_y" else _G_GRID
        )
        for name in AUGMIX_OPS
    ]
)


def _step_keys(op: Tensor, mag: Tensor, live: Tensor, span: int) -> Tensor:
    """Sort key per row: group * (2 span + 1) + (translation offset + span)."""
    group = _OP_GROUP.to(op.device)[op]
    is_affine = group <= _G_TY
    group = torch.where(is_affine & (mag == 0), _G_IDLE, group)
    group = torch.where(live, group, _G_ENDED)
    offset = torch.where((group == _G_TX) | (group == _G_TY), mag.long(), 0)
    return group * (2 * span + 1) + offset + span


def _grid_coeffs(op: Tensor, mag: Tensor, h: int, w: int) -> Tensor:
    """Pillow affine coefficients of rotate / shear_x / shear_y rows."""
    coeffs = _rotate_coeffs(torch.where(op == _OP["rotate"], mag, 0.0), h, w)
    coeffs[:, 1] = torch.where(op == _OP["shear_x"], mag, coeffs[:, 1])
    coeffs[:, 3] = torch.where(op == _OP["shear_y"], mag, coeffs[:, 3])
    return coeffs


def _resample_u8_(s: Tensor, coeffs: Tensor, dtype: torch.dtype) -> None:
    """In place: Pillow's affine resampling of uint8 images, truncated back to uint8."""
    # On the CPU, chunks keep the float temporaries small (cache-resident, and below the size
    # where the allocator maps fresh pages for every call).
    chunk = len(s) if s.device.type != "cpu" else max(1, _CPU_CHUNK_PIXELS // s[0].numel())
    for i in range(0, len(s), chunk):
        part = s[i : i + chunk]
        grid = _pil_grid(coeffs[i : i + chunk], s.shape[2], s.shape[3], dtype)
        resampled = F.grid_sample(part.to(dtype), grid, "bilinear", "zeros", False)
        # Pillow stores the result as uint8, truncating; so do these casts (via int32
        # because a direct float -> uint8 cast is slow on the CPU).
        part.copy_(resampled.add_(_LEVEL_EPS).to(torch.int32))


def _grouped_chains(
    x_levels: Tensor,
    op: Tensor,
    mag: Tensor,
    depth: Tensor,
    timings: dict[str, float] | None,
    dtype: torch.dtype,
) -> Tensor:
    """The chains with rows sorted into op groups at each step (one host sync per step).

    Args: as :func:`_dense_chains`. Returns the chain levels, (rows, C, H, W) uint8.
    """
    n, c, h, w = x_levels.shape
    dev = x_levels.device
    rows_total, steps = op.shape
    span = max(h, w)
    # Step s writes its own buffer (positions [s B, s B + running)), so a row that ends stays
    # where its last step left it, and one final gather collects all rows (gathers are much
    # faster than scatters on the CPU). Only the pages that are written get touched.
    work = torch.empty(steps * rows_total, c, h, w, device=dev, dtype=torch.uint8)
    rows = torch.arange(rows_total, device=dev)  # chain row (k * N + n) at each position
    final = torch.empty(rows_total, device=dev, dtype=torch.long)  # row -> position in `work`

    for step in range(steps):
        with _timed(timings, "sort + gather", dev):
            keys = _step_keys(op[rows, step], mag[rows, step], depth[rows] > step, span)
            keys, order = torch.sort(keys, stable=True)
            groups, counts = torch.unique_consecutive(keys, return_counts=True)
            plan = torch.stack([groups, counts]).tolist()  # the step's device sync
            n_run = len(rows)
            if plan[0] and plan[0][-1] // (2 * span + 1) == _G_ENDED:
                n_run -= plan[1][-1]
                del plan[0][-1], plan[1][-1]
                # Rows whose chain ended stay in the previous step's buffer.
                final[rows[order[n_run:]]] = order[n_run:] + (step - 1) * rows_total
            order = order[:n_run]
            rows = rows[order]
            cur = work[step * rows_total : step * rows_total + n_run]
            if step == 0:
                torch.index_select(x_levels, 0, rows % n, out=cur)
            else:
                prev = work[(step - 1) * rows_total : step * rows_total]
                torch.index_select(prev, 0, order, out=cur)
        start = 0
        for key, count in zip(*plan, strict=True):
            group, offset = divmod(key, 2 * span + 1)
            offset -= span
            s = cur[start : start + count]
            idx = rows[start : start + count]
            start += count
            if group == _G_GRID:
                with _timed(timings, "rotate/shear (grid_sample)", dev):
                    coeffs = _grid_coeffs(op[idx, step], mag[idx, step], h, w)
                    _resample_u8_(s, coeffs, dtype)
            elif group in (_G_TX, _G_TY):
                with _timed(timings, "translate", dev):
                    _shift_(s, -1 if group == _G_TX else -2, offset)
            elif group == _G_COLOUR["autocontrast"]:
                with _timed(timings, "autocontrast", dev):
                    _autocontrast_u8_(s)
            elif group == _G_COLOUR["equalize"]:
                with _timed(timings, "equalize", dev):
                    _equalize_u8_(s)
            elif group == _G_COLOUR["posterize"]:
                with _timed(timings, "posterize", dev):
                    _posterize_u8_(s, mag[idx, step].view(-1, 1, 1, 1))
            elif group == _G_COLOUR["solarize"]:
                with _timed(timings, "solarize", dev):
                    _solarize_u8_(s, mag[idx, step].view(-1, 1, 1, 1))
    with _timed(timings, "unsort", dev):
        last = (steps - 1) * rows_total
        final[rows] = torch.arange(last, last + len(rows), device=dev)
        return work.index_select(0, final)


def _dense_step_(
    s: Tensor,
    op: Tensor,
    mag: Tensor,
    live: Tensor,
    timings: dict[str, float] | None,
    dtype: torch.dtype,
) -> None:
    """In place: one chain step of every row of ``s``, with no host sync.

    Every op kind runs on every row, with the row's own magnitude where the row applies that
    op and a neutral one elsewhere (an identity LUT, a zero offset), or is selected per row
    (the resampling). A row whose chain has ended (``live`` false) gets neutral values for all.
    Each op computes each row from that row alone, with the same arithmetic as the grouped
    kernels, so the levels equal the grouped path's bit for bit.
    """
    r, c, h, w = s.shape
    dev = s.device

    def applies(name: str) -> Tensor:
        return live & (op == _OP[name])

    with _timed(timings, "colour LUTs", dev):
        # All four colour ops as one LUT per plane, applied in one gather.
        planes = s.view(r * c, h * w)
        index = planes.long()

        def per_plane(mask: Tensor) -> Tensor:
            return mask.view(r, 1, 1).expand(r, c, 1).reshape(r * c, 1)

        lut = torch.arange(256, device=dev, dtype=torch.uint8).expand(r * c, 256)
        auto = _autocontrast_lut(planes).to(torch.uint8)
        lut = torch.where(per_plane(applies("autocontrast")), auto, lut)
        equal = _equalize_lut(planes, index).to(torch.uint8)
        lut = torch.where(per_plane(applies("equalize")), equal, lut)
        # Posterize keeping 8 bits and solarize at 256 leave every level as it is.
        by_row = lut.view(r, c, 256)
        _posterize_u8_(by_row, torch.where(applies("posterize"), mag, 8.0).view(r, 1, 1))
        _solarize_u8_(by_row, torch.where(applies("solarize"), mag, 256.0).view(r, 1, 1))
        _apply_lut_u8_(s, lut, index)
    with _timed(timings, "translate", dev):
        # Whole-pixel translations as one gather of each row's source pixel, black outside.
        tx = torch.where(applies("translate_x"), mag, 0.0).long().view(r, 1, 1)
        ty = torch.where(applies("translate_y"), mag, 0.0).long().view(r, 1, 1)
        src_x = torch.arange(w, device=dev).view(1, 1, w) + tx
        src_y = torch.arange(h, device=dev).view(1, h, 1) + ty
        inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
        src = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(r, 1, h * w)
        moved = torch.gather(s.view(r, c, h * w), 2, src.expand(r, c, h * w))
        moved = moved.mul_(inside.view(r, 1, h * w)).view(r, c, h, w)
    with _timed(timings, "rotate/shear (grid_sample)", dev):
        # `moved` holds every row's result so far, so the resampling can overwrite `s`: rows
        # that rotate or shear are still as they were there (identity LUT, zero offset).
        resample = (op == _OP["rotate"]) | (op == _OP["shear_x"]) | (op == _OP["shear_y"])
        resample = resample & live & (mag != 0)  # a zero angle is the identity, as grouped
        _resample_u8_(s, _grid_coeffs(op, mag, h, w), dtype)
        torch.where(resample.view(r, 1, 1, 1), s, moved, out=s)


def _dense_chains(
    x_levels: Tensor,
    op: Tensor,
    mag: Tensor,
    depth: Tensor,
    timings: dict[str, float] | None,
    dtype: torch.dtype,
) -> Tensor:
    """The chains with every op computed for every row and selected per row (no host sync).

    Args:
        x_levels: clean images as uint8 levels, (N, C, H, W).
        op, mag: op index and magnitude of chain row ``k * N + n`` at each step, (rows, D).
        depth: ops of each chain row, (rows,).
        timings: seconds per stage, or None.
        dtype: float type of the resampling.

    Returns:
        The chain levels, (rows, C, H, W) uint8.
    """
    n, c, h, w = x_levels.shape
    dev = x_levels.device
    rows_total, steps = op.shape
    out = torch.empty(rows_total, c, h, w, device=dev, dtype=torch.uint8)
    # Rows go through all steps in chunks of bounded size: every op's temporaries (the int64
    # LUT index, the float resampling) are for the whole chunk.
    chunk = max(1, _DENSE_CHUNK_VALUES // max(1, c * h * w))
    for start in range(0, rows_total, chunk):
        stop = min(start + chunk, rows_total)
        s = out[start:stop]
        with _timed(timings, "gather", dev):
            rows = torch.arange(start, stop, device=dev)
            torch.index_select(x_levels, 0, rows % n, out=s)
        for step in range(steps):
            live = depth[start:stop] > step
            _dense_step_(s, op[start:stop, step], mag[start:stop, step], live, timings, dtype)
    return out


#: The ways :func:`augmix_chains` can run (see there).
CHAIN_MODES: tuple[str, ...] = ("auto", "grouped", "dense")


@torch.no_grad()
def augmix_chains(
    x: Tensor,
    params: AugMixParams,
    *,
    as_levels: bool = False,
    mode: str = "auto",
    timings: dict[str, float] | None = None,
) -> Tensor:
    """Apply the AugMix chains of ``params`` to every image (deterministic given ``params``).

    All ``width * N`` chain images form one batch, kept as uint8 levels between ops. Two ways
    to run a chain step, with the same output bit for bit:

    * ``"grouped"``: the rows still running are gathered into a new buffer sorted by the op
      they apply, so each op runs once, in place, on one contiguous slice: one ``grid_sample``
      for all rotations and shears, slice copies for the whole-pixel translations, lookup
      tables for the colour ops; rows whose chain has ended drop out. Learning the group sizes
      is one host synchronization per step. Fastest on the CPU.
    * ``"dense"``: every op kind runs on every row (with a neutral magnitude where the row
      applies another op) and each row keeps its own op's result: one per-plane LUT for all
      colour ops, one gather for all translations, one ``grid_sample`` selected per row. About
      the op count times the work, but no host synchronization at all, so on a GPU the host
      never waits for the device (a training step keeps the queue full).
    * ``"auto"`` (default): grouped on the CPU, dense on any other device.

    No gradient flows through the chains (AugMax differentiates through :func:`mix` only).

    Args:
        x: clean images, float in [0, 1] or uint8 levels 0..255 (e.g. the stored data).
        params: parameters from :func:`sample_augmix_params` with ``batch_size == N``; moved to
            x's device if needed (a host-to-device copy: draw them on x's device instead).
        as_levels: return the uint8 levels (0..255) the chains compute in, instead of float
            images in [0, 1]: a quarter of the memory, and :func:`mix` takes them as they are.
        mode: ``"auto"``, ``"grouped"`` or ``"dense"``, as above.
        timings: if given, seconds per stage are added to it (the device is synchronized around
            each stage; for profiling only).

    Returns:
        The chain outputs: float in [0, 1] (x's dtype, float32 for uint8 x), or uint8 levels
        with ``as_levels``.

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(width, N, C, H, W)`
    """
    if x.dtype != torch.uint8:
        _check_images(x)
    elif x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got {tuple(x.shape)}")
    if mode not in CHAIN_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(CHAIN_MODES)}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    n, c, h, w = x.shape
    if params.batch_size != n:
        raise ValueError(f"params are for {params.batch_size} images; x has {n}")
    dev = x.device
    rows_total, steps = params.width * n, params.op.shape[2]
    op = params.op.to(dev).reshape(rows_total, steps)
    mag = params.magnitudes(h, w).to(dev).reshape(rows_total, steps)
    depth = params.depth.to(dev).reshape(rows_total)
    x_levels = x if x.dtype == torch.uint8 else _to_levels(x)
    dense = mode == "dense" or (mode == "auto" and dev.type != "cpu")
    run = _dense_chains if dense else _grouped_chains
    levels = run(x_levels, op, mag, depth, timings, dtype).view(params.width, n, c, h, w)
    if as_levels:
        return levels
    with _timed(timings, "to float", dev):
        return _from_levels(levels, dtype)


