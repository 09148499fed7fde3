"""Tests for studykit.corruptions.frost: the synthesized texture's statistics against the reference
photographs' (CORRUPTIONS.md), reproducibility, and the photograph path on small generated
files with their checksums patched in (the real photographs are not needed)."""

from __future__ import annotations

import hashlib
import io
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from studykit.corruptions import corrupt, frost
from studykit.corruptions.frost import (
    FROST_PHOTOGRAPHS,
    download_frost_photographs,
    find_frost_photographs,
    frost_source,
    photograph_frost,
    synthesized_frost,
)
from studykit.corruptions.params import _PARAMS


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _no_installed_photographs(tmp_path_factory, monkeypatch):
    # Photographs a developer installed must not change what these tests see.
    monkeypatch.setenv(frost.FROST_DIR_ENV, str(tmp_path_factory.mktemp("no_frost")))


# ----------------------------------------------------------------------------- synthesized


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return synthesized_frost(2000, 32, 32, gen(0))


def test_synthesized_matches_photograph_statistics(crops):
    crop_means = crops.mean((1, 2, 3))
    assert 0.60 < crops.mean() < 0.68  # photographs: about 0.64
    assert 0.11 < crop_means.std() < 0.19  # photographs: about 0.15
    r, g, b = crops.mean((0, 2, 3))
    assert r < g < b and 0.5 < r and b < 0.8  # pale blue overall, not a colour wash


def test_synthesized_has_a_cyan_photograph(crops):
    rgb = crops.mean((2, 3))
    cyan = (rgb[:, 0] < 0.4) & (rgb[:, 2] > 0.55)
    # one style in five, like frost1 (R about 0.30, B about 0.65)
    assert 0.12 < cyan.float().mean() < 0.28
    assert rgb[cyan, 0].mean() < 0.35 and rgb[cyan, 2].mean() > 0.6


def test_synthesized_spans_the_photographs_levels(crops):
    crop_means = crops.mean((1, 2, 3))
    assert (crop_means < 0.48).float().mean() > 0.1  # the dark frost5
    assert (crop_means > 0.75).float().mean() > 0.25  # the bright frost2 and frost3


def test_synthesized_keeps_ice_structure(crops):
    # ridges: texture inside each crop, brightest pixels well above the crop's level
    assert crops.std((2, 3)).mean() > 0.05
    grey = crops.mean(1)
    assert (grey.amax((1, 2)) - grey.mean((1, 2))).mean() > 0.15
    # and spatially coherent, not white noise
    step = (grey[:, 1:] - grey[:, :-1]).abs().mean()
    assert step < 0.8 * (grey - grey.roll(16, 1)).abs().mean()


@pytest.mark.parametrize("size", [(32, 32), (24, 40), (64, 64), (5, 7)])
def test_synthesized_shape_range_determinism(size):
    h, w = size
    a = synthesized_frost(6, h, w, gen(3))
    assert a.shape == (6, 3, h, w) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, synthesized_frost(6, h, w, gen(3)))
    assert not torch.equal(a, synthesized_frost(6, h, w, gen(4)))


def test_corrupt_uses_synthesized_without_photographs():
    assert frost_source() == "synthesized"
    x = torch.rand(4, 3, 32, 32, generator=gen(1))
    c0, c1 = _PARAMS["frost"][2]
    expected = (c0 * x + c1 * synthesized_frost(4, 32, 32, gen(2))).clamp(0, 1)
    assert torch.allclose(corrupt(x, "frost", 3, generator=gen(2)), expected)


# ----------------------------------------------------------------------------- photographs

SIZES = {  # (rows, cols) of the fake photographs; the real ones are larger
    "frost1.png": (300, 400),
    "frost2.png": (250, 250),
    "frost3.png": (250, 260),
    "frost4.jpg": (200, 300),
    "frost5.jpg": (260, 210),
}


def _fake_photographs(folder, seed: int = 0) -> dict[str, np.ndarray]:
    """Small PNG/JPG files with distinct channels; returns what a decoder reads back."""
    rng = np.random.default_rng(seed)
    decoded = {}
    for name, (rows, cols) in SIZES.items():
        arr = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
        arr[..., 0] //= 4  # red darker than blue, so a channel swap shows
        Image.fromarray(arr).save(folder / name)
        with Image.open(folder / name) as im:
            decoded[name] = np.asarray(im.convert("RGB"))
    return decoded


@pytest.fixture
def photographs(tmp_path, monkeypatch):
    decoded = _fake_photographs(tmp_path)
    sums = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in FROST_PHOTOGRAPHS}
    monkeypatch.setattr(frost, "FROST_PHOTOGRAPHS", sums)
    return tmp_path, decoded


def test_photographs_are_found_and_verified(photographs):
    folder, _ = photographs
    assert [p.name for p in find_frost_photographs(folder)] == list(SIZES)
    assert frost_source(folder) == "photographs"


def test_photograph_crops_follow_the_reference(photographs):
    folder, decoded = photographs
    n = 64
    out = photograph_frost(n, 32, 32, gen(5), folder)
    assert out.shape == (n, 3, 32, 32) and out.dtype == torch.float32

    # Replay the draws: a file uniformly from the five, then offsets in [0, H - 32).
    g = gen(5)
    choice = torch.randint(5, (n,), generator=g)
    where = torch.rand((n, 2), generator=g, dtype=torch.float64)
    names = list(SIZES)
    for i in range(n):
        # OpenCV's 0.2x bilinear resize samples pixel (5i + 2, 5j + 2), no antialiasing
        small = decoded[names[choice[i]]][2::5, 2::5]
        top = int(where[i, 0] * (small.shape[0] - 32))
        left = int(where[i, 1] * (small.shape[1] - 32))
        ref = small[top : top + 32, left : left + 32].transpose(2, 0, 1)  # HWC RGB -> CHW
        assert torch.equal(out[i], torch.from_numpy(ref.copy()).float() / 255), i
    assert set(choice.tolist()) == set(range(5))


def test_corrupt_uses_photographs_when_installed(photographs, monkeypatch):
    folder, _ = photographs
    monkeypatch.setenv(frost.FROST_DIR_ENV, str(folder))
    assert frost_source() == "photographs"
    x = torch.rand(8, 3, 32, 32, generator=gen(1))
    c0, c1 = _PARAMS["frost"][4]
    expected = (c0 * x + c1 * photograph_frost(8, 32, 32, gen(2), folder)).clamp(0, 1)
    assert torch.allclose(corrupt(x, "frost", 5, generator=gen(2)), expected)


def test_photographs_for_larger_images(photographs):
    folder, _ = photographs
    # 0.2x of the 250x250 photograph is 50x50: too small for 64x80 crops, so shrink less
    out = photograph_frost(10, 64, 80, gen(0), folder)
    assert out.shape == (10, 3, 64, 80) and 0 <= out.min() and out.max() <= 1


def test_checksum_mismatch_names_the_file(photographs):
    folder, _ = photographs
    (folder / "frost4.jpg").write_bytes(b"not the photograph")
    with pytest.raises(ValueError, match=r"frost4\.jpg has sha256 [0-9a-f]{64}, expected"):
        find_frost_photographs(folder)
    with pytest.raises(ValueError, match="frost4.jpg"):
        frost_source(folder)


def test_incomplete_photographs_fall_back_with_a_warning(photographs):
    folder, _ = photographs
    (folder / "frost2.png").unlink()
    with pytest.warns(UserWarning, match="missing frost2.png"):
        assert frost_source(folder) == "synthesized"
    with pytest.raises(FileNotFoundError, match="frost photographs not found"):
        with pytest.warns(UserWarning):
            photograph_frost(2, 32, 32, gen(), folder)


@pytest.mark.parametrize("scale", [0.2, 0.37, 0.5])
def test_resize_is_bilinear_without_antialiasing(scale):
    # dimensions where OpenCV's round(n * scale) equals torch's floor(n * scale)
    photo = torch.randint(0, 256, (3, 101, 90), generator=gen(), dtype=torch.uint8)
    out = frost._resize_bilinear(photo, scale)
    ref = F.interpolate(
        photo[None].float(),
        scale_factor=scale,
        mode="bilinear",
        align_corners=False,
        antialias=False,
        recompute_scale_factor=False,
    )[0]
    assert out.shape == ref.shape
    assert (out.float() - ref).abs().max() <= 0.5 + 1e-3
    if scale == 0.2:
        assert torch.equal(out, photo[:, 2::5, 2::5])


# ----------------------------------------------------------------------------- download


def test_download_fails_in_one_line_when_offline(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(frost.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError) as info:
        download_frost_photographs(tmp_path / "frost")
    message = str(info.value)
    assert "\n" not in message and "frost1.png" in message and "could not download" in message
    assert not (tmp_path / "frost").exists()
    assert frost_source(tmp_path / "frost") == "synthesized"


def test_download_writes_verified_files(tmp_path, monkeypatch):
    source = tmp_path / "source"
    source.mkdir()
    _fake_photographs(source)
    sums = {n: hashlib.sha256((source / n).read_bytes()).hexdigest() for n in FROST_PHOTOGRAPHS}
    monkeypatch.setattr(frost, "FROST_PHOTOGRAPHS", sums)
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return io.BytesIO((source / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(frost.urllib.request, "urlopen", fake_urlopen)
    target = download_frost_photographs(tmp_path / "frost")
    assert urls == [frost.FROST_URL + n for n in FROST_PHOTOGRAPHS]
    assert urls[0].startswith("https://raw.githubusercontent.com/hendrycks/robustness/master/")
    assert frost_source(target) == "photographs"
    download_frost_photographs(target)  # already there and valid: nothing fetched
    assert len(urls) == 5

    sums["frost5.jpg"] = "0" * 64
    (target / "frost5.jpg").unlink()
    with pytest.raises(ValueError, match="frost5.jpg has sha256"):
        download_frost_photographs(target)
    assert not (target / "frost5.jpg").exists()


# ----------------------------------------------------------------------------- caches


def test_generated_frost_sets_are_cached_per_frost_source(photographs, tmp_path, monkeypatch):
    from studykit.data import ImageDataset, load_corrupted

    x = (torch.rand(6, 3, 32, 32, generator=gen(8)) * 255).to(torch.uint8)
    y = torch.arange(6) % 2
    data = ImageDataset("tiny", x, y, x.clone(), y.clone(), ("a", "b"))
    root = tmp_path / "data"
    synthesized = load_corrupted(data, "frost", 2, root=root).x
    folder, _ = photographs
    monkeypatch.setenv(frost.FROST_DIR_ENV, str(folder))
    from_photos = load_corrupted(data, "frost", 2, root=root).x
    assert not torch.equal(synthesized, from_photos)  # the synthesized cache is not reused
    names = sorted(p.name for p in (root / "cache" / "corrupted").rglob("*.pt"))
    version = frost.SYNTHESIZED_VERSION
    assert names == ["frost-2-seed0-photographs.pt", f"frost-2-seed0-synthesized{version}.pt"]
