"""The frost layer of the ``frost`` corruption: the reference's photographs, or a texture
synthesized to match their statistics.

Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", blend each image with frost, ``c0 * x + c1 * frost`` (the constants live
with the other CIFAR-10-C parameters in ``studykit.corruptions``). Their frost is a random crop
of one of five photographs (``frost1.png`` ... ``frost5.jpg`` of hendrycks/robustness; a sixth
file is listed but never drawn), shrunk to 0.2x for CIFAR. This module makes that layer:

* :func:`photograph_frost` crops the photographs the reference way when all five are in
  :func:`frost_dir` with the expected sha256 (see :func:`download_frost_photographs`);
* :func:`synthesized_frost` otherwise: a procedural texture calibrated to the photographs'
  crop statistics (pooled mean about 0.64, spread of the per-crop mean about 0.15, one
  strongly cyan photograph), see ``CORRUPTIONS.md``;
* :func:`frost_layer` picks between them and :func:`frost_source` says which one it picks.

Every random draw comes from the ``generator`` passed in (torch's default CPU generator when it
is ``None``) and happens on the generator's device, so a seeded CPU generator gives the same
layer on CPU and CUDA. The layer is returned on the generator's device.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from studykit.paths import data_root

logger = logging.getLogger(__name__)

__all__ = [
    "FROST_DIR_ENV",
    "FROST_PHOTOGRAPHS",
    "FROST_STYLES",
    "FROST_URL",
    "FrostStyle",
    "download_frost_photographs",
    "find_frost_photographs",
    "frost_dir",
    "frost_cache_tag",
    "frost_layer",
    "frost_source",
    "photograph_frost",
    "synthesized_frost",
]

# The five photographs the reference draws from, with their sha256 (CORRUPTIONS.md).
FROST_PHOTOGRAPHS: dict[str, str] = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
}
FROST_URL = "https://raw.githubusercontent.com/hendrycks/robustness/master/ImageNet-C/create_c/"
FROST_DIR_ENV = "STUDYKIT_FROST"
# Bumped whenever synthesized_frost's output changes, so caches of generated sets notice.
SYNTHESIZED_VERSION = 2
# The reference shrinks each photograph to 0.2x before cropping 32x32 CIFAR images.
_PHOTO_SCALE = 0.2


class FrostStyle(NamedTuple):
    """How one photograph's crops look: RGB level, texture amplitude, crop-to-crop spread."""

    rgb: tuple[float, float, float]
    texture: float
    spread: float


# One "photo style" per reference photograph, drawn uniformly per image like the reference's
# file: RGB level (the crop mean), texture amplitude (pixel std inside a crop) and the std of
# the crop mean around the level. Levels follow the photographs' per-file means: frost1
# strongly cyan, frost2/frost3 bright near duplicates, frost5 the darkest; frost4's level is
# the one that brings the pooled mean to the photographs' 0.64.
FROST_STYLES: tuple[FrostStyle, ...] = (
    FrostStyle(rgb=(0.30, 0.57, 0.65), texture=0.10, spread=0.05),  # frost1: cyan
    FrostStyle(rgb=(0.78, 0.80, 0.83), texture=0.08, spread=0.04),  # frost2: bright
    FrostStyle(rgb=(0.77, 0.80, 0.84), texture=0.08, spread=0.04),  # frost3: frost2's twin
    FrostStyle(rgb=(0.62, 0.66, 0.71), texture=0.10, spread=0.05),  # frost4
    FrostStyle(rgb=(0.40, 0.44, 0.48), texture=0.09, spread=0.05),  # frost5: dark
)


# ----------------------------------------------------------------------------- randomness


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, dtype=torch.float32):
    return torch.rand(shape, generator=generator, device=_device(generator), dtype=dtype)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=_device(generator))


# ----------------------------------------------------------------------------- synthesized


@functools.lru_cache(maxsize=32)
def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n, n) Gaussian blur along one axis, radius 3 sigma, edge-replicated border folded in."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    m = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)[:, None].expand(n, len(t))
    m.index_put_((rows, (rows + t.long()).clamp(0, n - 1)), k.expand(n, -1), accumulate=True)
    return m.float()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur over the last two dims, as two matrix products (fast on CPU)."""
    rows = _blur_matrix(x.shape[-2], sigma).to(x.device)
    cols = _blur_matrix(x.shape[-1], sigma).to(x.device)
    return rows @ x @ cols.T


@functools.lru_cache(maxsize=32)
def _upsample_matrix(n_grid: int, step: float, n: int) -> torch.Tensor:
    """(n, n_grid) bicubic upsampling by ``step`` (torch's kernel), rows ``int(step)`` onwards."""
    eye = torch.eye(n_grid, dtype=torch.float64).view(n_grid, 1, n_grid, 1)
    big = F.interpolate(eye, scale_factor=(step, 1.0), mode="bicubic", align_corners=False)
    return big.view(n_grid, -1)[:, int(step) : int(step) + n].T.float()


def _value_noise(n: int, h: int, w: int, cells: int, generator) -> torch.Tensor:
    """Bicubic interpolation of a random grid with about ``cells`` cells along the long side."""
    step = max(h, w) / cells
    gh, gw = math.ceil(h / step) + 3, math.ceil(w / step) + 3
    grid = _rand((n, 1, gh, gw), generator)
    rows = _upsample_matrix(gh, step, h).to(grid.device)
    cols = _upsample_matrix(gw, step, w).to(grid.device)
    return rows @ grid @ cols.T


def _ice_pattern(n: int, h: int, w: int, generator: torch.Generator | None) -> torch.Tensor:
    """Grey frost structure, (n, 1, h, w), zero mean and unit std per image.

    A low-frequency density (thick and thin frost, two octaves of value noise) modulates a
    network of bright ridges: the zero crossings of smoothed noise at two scales, like the
    edges of ice crystals.
    """
    s = max(h, w) / 32  # the photographs' structure scale at CIFAR size
    density = 0.65 * _value_noise(n, h, w, 2, generator) + 0.35 * _value_noise(
        n, h, w, 4, generator
    )
    ridges = torch.zeros(n, 1, h, w, device=_device(generator))
    for sigma, weight in ((2.0, 0.6), (1.0, 0.4)):
        noise = _blur(_randn((n, 1, h, w), generator), sigma * s)
        noise = noise / noise.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        ridges += weight * (1 - 1.5 * noise.abs()).clamp(min=0) ** 2
    pattern = 0.6 * density + ridges * (0.3 + 0.7 * density)
    pattern = pattern - pattern.mean(dim=(2, 3), keepdim=True)
    return pattern / pattern.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)


def synthesized_frost(n: int, h: int, w: int, generator: torch.Generator | None) -> torch.Tensor:
    """Procedural stand-in for crops of the reference's frost photographs.

    Each image draws one of the :data:`FROST_STYLES` uniformly, as the reference draws one of
    its five photographs; the style sets the crop's RGB level (plus a per-image offset of std
    ``spread``, the crop-to-crop variation inside one photograph) and the contrast of the ice
    pattern laid over it. Over many 32x32 crops the pooled mean is about 0.64 and the std of the
    per-crop mean about 0.15, as for the photographs; one style in five is strongly cyan
    (R about 0.30, B about 0.65). ``benchmarks/frost_statistics.py`` prints these numbers.

    Args:
        n: Number of layers (one per image).
        h: Height.
        w: Width.
        generator: Source of every draw; the layer is made on its device.

    Returns:
        float32 RGB layers in [0, 1] on the generator's device.

    Shape:
        - output: (n, 3, h, w)
    """
    device = _device(generator)
    style = torch.randint(len(FROST_STYLES), (n,), generator=generator, device=device)
    offset = _randn((n, 1, 1, 1), generator)
    pattern = _ice_pattern(n, h, w, generator)
    rgb = torch.tensor([s.rgb for s in FROST_STYLES], device=device)[style]
    texture = torch.tensor([s.texture for s in FROST_STYLES], device=device)[style]
    spread = torch.tensor([s.spread for s in FROST_STYLES], device=device)[style]
    level = rgb.view(n, 3, 1, 1) + spread.view(n, 1, 1, 1) * offset
    return (level + texture.view(n, 1, 1, 1) * pattern).clamp(0, 1)


# ----------------------------------------------------------------------------- photographs


def frost_dir() -> Path:
    """Where the frost photographs are looked for: ``$STUDYKIT_FROST`` or ``<data root>/frost``."""
    env = os.environ.get(FROST_DIR_ENV)
    return Path(env) if env else data_root() / "frost"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=16)
def _decoded(path: str, size: int, mtime_ns: int, expected: str) -> torch.Tensor:
    """The verified photograph as uint8 (3, H, W) RGB; cached per file version."""
    from PIL import Image, ImageOps

    data = Path(path).read_bytes()
    got = _sha256(data)
    if got != expected:
        raise ValueError(
            f"frost photograph {path} has sha256 {got}, expected {expected}; delete it and "
            "fetch it again (studykit.corruptions.frost.download_frost_photographs)"
        )
    with Image.open(io.BytesIO(data)) as im:
        # OpenCV's imread (the reference's reader) applies the EXIF orientation and drops alpha.
        rgb = ImageOps.exif_transpose(im).convert("RGB")
        array = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        return array.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def _axis_taps(n_in: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV INTER_LINEAR source taps along one axis: output size round(n * scale), sample
    point (i + .5) / scale - .5, clamped to the first and last pixel."""
    n_out = max(1, round(n_in * scale))
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) / scale - 0.5
    lo = src.floor()
    frac = src - lo
    frac[lo < 0] = 0
    frac[lo >= n_in - 1] = 0
    lo = lo.clamp(0, n_in - 1).long()
    return lo, (lo + 1).clamp(max=n_in - 1), frac.float()


def _resize_bilinear(photo: torch.Tensor, scale: float) -> torch.Tensor:
    """``cv2.resize(photo, None, fx=scale, fy=scale)`` of uint8 (3, H, W), rounded to uint8.

    OpenCV's bilinear filter has no antialiasing; at 0.2x each output pixel is exactly input
    pixel (5i + 2, 5j + 2). Elsewhere float weights stand in for OpenCV's 11-bit fixed point
    (at most one grey level apart).
    """
    y0, y1, fy = _axis_taps(photo.shape[1], scale)
    x0, x1, fx = _axis_taps(photo.shape[2], scale)
    p = photo.float()
    top = p[:, y0][:, :, x0] * (1 - fx) + p[:, y0][:, :, x1] * fx
    bottom = p[:, y1][:, :, x0] * (1 - fx) + p[:, y1][:, :, x1] * fx
    out = top * (1 - fy[:, None]) + bottom * fy[:, None]
    return out.round().clamp(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=16)
def _resized(path: str, size: int, mtime_ns: int, expected: str, h: int, w: int) -> torch.Tensor:
    """The photograph shrunk for h x w crops: 0.2x as the reference, or less shrinking where
    the 0.2x photograph would not hold an h x w crop with a free offset."""
    photo = _decoded(path, size, mtime_ns, expected)
    rows, cols = photo.shape[1:]
    scale = _PHOTO_SCALE
    if round(rows * scale) <= h or round(cols * scale) <= w:
        scale = max((h + 1) / rows, (w + 1) / cols) * (1 + 1e-9)
        logger.debug("frost photograph %s resized by %.3f for %dx%d crops", path, scale, h, w)
    if round(rows * scale) <= h or round(cols * scale) <= w:
        raise ValueError(f"frost photograph {path} ({rows}x{cols}) is too small for {h}x{w} crops")
    return _resize_bilinear(photo, scale)


def _file_key(path: Path, name: str) -> tuple[str, int, int, str]:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns, FROST_PHOTOGRAPHS[name]


def find_frost_photographs(folder: str | os.PathLike | None = None) -> list[Path] | None:
    """The five frost photographs in ``folder``, verified, or None when not all are there.

    Args:
        folder: Where to look (default :func:`frost_dir`).

    Returns:
        Paths of ``frost1.png`` ... ``frost5.jpg`` in the reference's order, or None when any
        of them is missing (with a warning when only some are there).

    Raises:
        ValueError: if a file is there but its sha256 is not the expected one.
    """
    folder = Path(folder) if folder is not None else frost_dir()
    paths = [folder / name for name in FROST_PHOTOGRAPHS]
    present = [p for p in paths if p.is_file()]
    if len(present) < len(paths):
        if present:
            missing = ", ".join(p.name for p in paths if not p.is_file())
            warnings.warn(
                f"frost photographs incomplete in {folder} (missing {missing}); "
                "using the synthesized frost texture",
                stacklevel=2,
            )
        return None
    for p in paths:
        _decoded(*_file_key(p, p.name))
    return paths


def frost_source(folder: str | os.PathLike | None = None) -> str:
    """Which frost :func:`frost_layer` (and so ``corrupt(x, "frost", s)``) uses now.

    Args:
        folder: Where to look (default :func:`frost_dir`).

    Returns:
        ``"photographs"`` when the five reference photographs are in ``folder`` with the
        expected checksums, else ``"synthesized"``.

    Raises:
        ValueError: if a photograph is there with the wrong sha256.
    """
    return "synthesized" if find_frost_photographs(folder) is None else "photographs"


def frost_cache_tag(folder: str | os.PathLike | None = None) -> str:
    """Names the frost in use for caches of generated sets: ``"photographs"`` or
    ``"synthesized<version>"`` (the texture's :data:`SYNTHESIZED_VERSION`)."""
    if frost_source(folder) == "photographs":
        return "photographs"
    return f"synthesized{SYNTHESIZED_VERSION}"


def photograph_frost(
    n: int,
    h: int,
    w: int,
    generator: torch.Generator | None,
    folder: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Random crops of the reference's frost photographs, drawn the reference's way.

    Per image: one of the five photographs uniformly, shrunk 0.2x with OpenCV's bilinear
    filter (cached), then an h x w crop at offsets uniform in ``[0, H - h)`` and
    ``[0, W - w)`` (numpy ``randint``'s open end: the last row and column are never reached).
    Images larger than the shrunk photographs allow get a milder shrink.

    Args:
        n: Number of crops (one per image).
        h: Crop height.
        w: Crop width.
        generator: Source of every draw.
        folder: Where the photographs are (default :func:`frost_dir`).

    Returns:
        float32 RGB crops in [0, 1] (multiples of 1/255) on the generator's device.

    Raises:
        FileNotFoundError: if not all five photographs are in ``folder``.
        ValueError: if one has the wrong sha256.

    Shape:
        - output: (n, 3, h, w)
    """
    paths = find_frost_photographs(folder)
    if paths is None:
        where = Path(folder) if folder is not None else frost_dir()
        raise FileNotFoundError(
            f"frost photographs not found in {where}; need {', '.join(FROST_PHOTOGRAPHS)}"
        )
    device = _device(generator)
    choice = torch.randint(len(paths), (n,), generator=generator, device=device).cpu()
    where = _rand((n, 2), generator, torch.float64).cpu()
    out = torch.empty(n, 3, h, w, dtype=torch.uint8)
    for i, p in enumerate(paths):
        take = (choice == i).nonzero().flatten()
        if take.numel() == 0:
            continue
        photo = _resized(*_file_key(p, p.name), h, w)
        top = (where[take, 0] * (photo.shape[1] - h)).long()
        left = (where[take, 1] * (photo.shape[2] - w)).long()
        rows = top[:, None] + torch.arange(h)
        cols = left[:, None] + torch.arange(w)
        out[take] = photo[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)
    return out.to(device).float() / 255


def frost_layer(n: int, h: int, w: int, generator: torch.Generator | None) -> torch.Tensor:
    """The frost of ``corrupt(x, "frost", s)``: photograph crops when the five reference
    photographs are in :func:`frost_dir`, else the synthesized texture (see
    :func:`frost_source`).

    Shape:
        - output: (n, 3, h, w), float32 in [0, 1] on the generator's device
    """
    source = frost_source()
    logger.debug("frost layer for %d images from the %s frost", n, source)
    if source == "photographs":
        return photograph_frost(n, h, w, generator)
    return synthesized_frost(n, h, w, generator)


def download_frost_photographs(
    folder: str | os.PathLike | None = None, timeout: float = 30.0
) -> Path:
    """Fetch the five frost photographs from hendrycks/robustness and check their sha256.

    Never needed: without the photographs the frost corruption uses the synthesized texture.
    Files already there with the right checksum are kept.

    Args:
        folder: Where to put them (default :func:`frost_dir`).
        timeout: Seconds per request.

    Returns:
        The folder.

    Raises:
        RuntimeError: one line, when a file cannot be fetched (offline, for instance).
        ValueError: when a fetched file has the wrong sha256 (it is not kept).
    """
    folder = Path(folder) if folder is not None else frost_dir()
    for name, expected in FROST_PHOTOGRAPHS.items():
        path = folder / name
        if path.is_file() and _sha256(path.read_bytes()) == expected:
            continue
        url = FROST_URL + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise RuntimeError(
                f"could not download {url} ({reason}); the frost corruption uses the "
                f"synthesized texture unless {', '.join(FROST_PHOTOGRAPHS)} are in {folder}"
            ) from None
        got = _sha256(data)
        if got != expected:
            raise ValueError(f"downloaded {url} has sha256 {got}, expected {expected}; not kept")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        logger.info("downloaded %s", path)
    return folder
