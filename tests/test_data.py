"""Tests for studykit.data: the synthetic generator, npz/CIFAR loading, corrupted sets, loader."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from studykit import data as sd
from studykit.data import (
    SYNTHETIC_CLASSES,
    CorruptedSet,
    DeviceLoader,
    ImageDataset,
    dataset_fingerprint,
    list_datasets,
    load_corrupted,
    load_dataset,
    load_npz,
    make_synthetic,
    synthetic,
)
from studykit.models import CIFAR_MEAN


@pytest.fixture(scope="module")
def synth() -> ImageDataset:
    return make_synthetic(1000, 500, seed=0)


@pytest.fixture(scope="module")
def synth10k() -> ImageDataset:
    return make_synthetic(10_000, 0, seed=0)


def _tiny_dataset(name: str = "tiny", n_train: int = 40, n_test: int = 30, size: int = 8):
    g = torch.Generator().manual_seed(0)
    return ImageDataset(
        name,
        torch.randint(0, 256, (n_train, 3, size, size), dtype=torch.uint8, generator=g),
        torch.arange(n_train) % 4,
        torch.randint(0, 256, (n_test, 3, size, size), dtype=torch.uint8, generator=g),
        torch.arange(n_test) % 4,
        ("a", "b", "c", "d"),
    )


# --------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_shapes_and_dtypes(synth):
    assert synth.name == "synthetic"
    assert synth.x_train.shape == (1000, 3, 32, 32) and synth.x_train.dtype == torch.uint8
    assert synth.x_test.shape == (500, 3, 32, 32) and synth.x_test.dtype == torch.uint8
    assert synth.y_train.dtype == torch.int64 and synth.y_train.shape == (1000,)
    assert synth.classes == SYNTHETIC_CLASSES and synth.num_classes == 10
    assert synth.image_size == 32
    assert int(synth.y_train.min()) == 0 and int(synth.y_train.max()) == 9
    assert len(set(synth.classes)) == 10
    assert "synthetic" in repr(synth) and "tensor" not in repr(synth)


def test_synthetic_deterministic_and_prefix(synth):
    again = make_synthetic(300, 100, seed=0)
    assert torch.equal(again.x_train, synth.x_train[:300])
    assert torch.equal(again.y_train, synth.y_train[:300])
    # The test set does not depend on n_train.
    assert torch.equal(again.x_test, synth.x_test[:100])
    assert torch.equal(again.x_test, make_synthetic(0, 100, seed=0).x_test)
    other = make_synthetic(300, 100, seed=1)
    assert not torch.equal(other.x_train, again.x_train)
    # Train and test are different draws.
    assert not torch.equal(synth.x_train[:100], synth.x_test[:100])


def test_synthetic_class_balance(synth):
    assert torch.bincount(synth.y_train, minlength=10).tolist() == [100] * 10
    odd = make_synthetic(1234, 0, seed=3)
    counts = torch.bincount(odd.y_train, minlength=10)
    assert counts.sum() == 1234
    assert (counts - 123.4).abs().max() <= synthetic._CHUNK / 10  # only the last chunk is partial


def test_synthetic_same_for_any_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = make_synthetic(600, 260, seed=5)
        torch.set_num_threads(2)  # two chunk-rendering Python threads
        two = make_synthetic(600, 260, seed=5)
    finally:
        torch.set_num_threads(threads)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(one, key), getattr(two, key)), key
    assert torch.get_num_threads() == threads


def test_synthetic_statistics(synth10k):
    x = synth10k.x_train.float() / 255
    mean = x.mean((0, 2, 3))
    assert ((mean > 0.40) & (mean < 0.55)).all(), mean
    assert (x.std((0, 2, 3)) > 0.15).all()
    # Colour and brightness carry no class information: per-class mean colours are close.
    per_image = x.mean((2, 3))
    class_means = torch.stack([per_image[synth10k.y_train == k].mean(0) for k in range(10)])
    assert (class_means - mean).abs().max() < 0.04, class_means
    # Nor does the images' contrast.
    contrast = x.mean(1).std((1, 2))
    class_contrast = torch.stack([contrast[synth10k.y_train == k].mean() for k in range(10)])
    assert (class_contrast - contrast.mean()).abs().max() < 0.02, class_contrast
    # Images are not flat: there is high-frequency content.
    grad = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()
    assert grad > 0.02


def _luminance_power_slope(x: torch.Tensor) -> float:
    """Slope of log radial power vs log frequency of the images' luminance (natural: about -2)."""
    lum = x.float().mean(1) / 255
    power = torch.fft.fft2(lum - lum.mean((1, 2), keepdim=True)).abs().square().mean(0)
    f = torch.fft.fftfreq(x.shape[-1])
    radius = torch.hypot(f.view(-1, 1), f.view(1, -1))
    bands = torch.logspace(math.log10(1 / 16), math.log10(0.45), 6)
    logs = [(math.log(float(lo * hi) ** 0.5), math.log(float(power[(radius >= lo) & (radius < hi)]
             .mean()))) for lo, hi in zip(bands[:-1], bands[1:])]
    fx, fy = torch.tensor(logs).t()
    return float(((fx - fx.mean()) * (fy - fy.mean())).sum() / ((fx - fx.mean()) ** 2).sum())


def test_synthetic_natural_image_statistics(synth10k):
    x = synth10k.x_train[:3000]
    # A 1/f amplitude spectrum, as natural images have (the real CIFAR copy: about -2.8).
    assert -3.5 < _luminance_power_slope(x) < -2.0
    # Luminance carries the edges; chroma is smooth, as in photographs (and JPEG's 4:2:0).
    xf = x.float() / 255
    lum = xf.mean(1, keepdim=True)
    chroma = xf - lum
    grad_lum = (lum[..., 1:] - lum[..., :-1]).abs().mean()
    grad_chroma = (chroma[..., 1:] - chroma[..., :-1]).abs().mean()
    assert grad_chroma < 0.25 * grad_lum, (grad_chroma, grad_lum)


def test_synthetic_textures_are_the_sklearn_photographs():
    sample_images = pytest.importorskip("sklearn.datasets").load_sample_images
    photos = synthetic._sample_photographs()
    assert [p.shape for p in photos] == [(427, 640, 3)] * 2
    for ours, theirs in zip(photos, sample_images().images):
        assert np.array_equal(ours, theirs)
    canvas, rects = synthetic._photo_atlas()
    assert canvas.shape[:2] == (1, 3) and 0 <= float(canvas.min()) and float(canvas.max()) <= 1
    for top, left, h, w in rects.tolist():  # every level lies on the canvas
        assert top + h <= canvas.shape[2] and left + w <= canvas.shape[3]


def test_synthetic_chunk_is_in_range_and_varied():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(50) % 10
    img = synthetic._render_chunk(labels, 32, g)
    assert img.shape == (50, 3, 32, 32) and img.dtype == torch.float32
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    # No two images alike, and no image flat.
    flat = img.flatten(1)
    assert torch.cdist(flat, flat).add_(torch.eye(50) * 1e3).min() > 1.0
    assert (img.std((1, 2, 3)) > 0.01).all()


def test_load_dataset_synthetic_caches(tmp_path, monkeypatch):
    first = load_dataset("synthetic", tmp_path, seed=2, n_train=60, n_test=20)
    path = tmp_path / "synthetic" / f"synthetic-s2-n60-20-v{sd.GENERATOR_VERSION}.pt"
    assert path.exists()
    assert not list(path.parent.glob(".*tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("cache miss")

    from studykit.data import synthetic_cache

    monkeypatch.setattr(synthetic_cache, "make_synthetic", fail)
    second = load_dataset("synthetic", tmp_path, seed=2, n_train=60, n_test=20)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(first, key), getattr(second, key))
    assert second.classes == SYNTHETIC_CLASSES


def test_list_and_unknown_dataset():
    assert list_datasets() == ["synthetic", "cifar10", "cifar100", "npz:<path>"]
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'.*synthetic, cifar10"):
        load_dataset("cifar11")


# --------------------------------------------------------------------------------------------
# subsets, npz, CIFAR


def test_subset_balanced_deterministic():
    data = _tiny_dataset(n_train=40, n_test=30)
    sub = data.subset(n_train=20, n_test=10, seed=1)
    assert torch.bincount(sub.y_train, minlength=4).tolist() == [5, 5, 5, 5]
    assert sorted(torch.bincount(sub.y_test, minlength=4).tolist()) == [2, 2, 3, 3]
    again = data.subset(n_train=20, n_test=10, seed=1)
    assert torch.equal(sub.x_train, again.x_train) and torch.equal(sub.x_test, again.x_test)
    assert not torch.equal(sub.x_train, data.subset(n_train=20, seed=2).x_train)
    # test_indices point back into the full test set, also through nested subsets.
    assert torch.equal(data.x_test[sub.test_indices], sub.x_test)
    nested = sub.subset(n_test=4, seed=0)
    assert torch.equal(data.x_test[nested.test_indices], nested.x_test)
    assert data.subset() is not None and data.subset().x_train is data.x_train
    with pytest.raises(ValueError, match="subset size must be in \\[1, 40\\]; got 41"):
        data.subset(n_train=41)


def test_image_dataset_validates():
    data = _tiny_dataset()
    with pytest.raises(ValueError, match="x_train must be uint8"):
        ImageDataset("bad", data.x_train.float(), data.y_train, data.x_test, data.y_test, ("a",))
    with pytest.raises(ValueError, match="y_test must be int64"):
        ImageDataset("bad", data.x_train, data.y_train, data.x_test, data.y_test.int(), ("a",))


def _write_npz(path, n_train=12, n_test=8, size=6, **extra):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
        "y_train": np.arange(n_train) % 3,
        "x_test": rng.integers(0, 256, (n_test, size, size, 3), dtype=np.uint8),
        "y_test": np.arange(n_test) % 3,
    }
    arrays.update(extra)
    np.savez(path, **arrays)
    return arrays


def test_load_npz(tmp_path):
    arrays = _write_npz(tmp_path / "tiny.npz")
    data = load_npz(tmp_path / "tiny.npz")
    assert data.name == "npz:tiny"
    assert data.x_train.shape == (12, 3, 6, 6)
    assert torch.equal(data.x_train.permute(0, 2, 3, 1), torch.from_numpy(arrays["x_train"]))
    assert data.y_test.dtype == torch.int64
    assert data.classes == ("0", "1", "2")
    named = tmp_path / "named.npz"
    _write_npz(named, classes=np.array(["cat", "dog", "emu"]))
    assert load_npz(named).classes == ("cat", "dog", "emu")
    via_name = load_dataset(f"npz:{named}", n_train=6, seed=0)
    assert via_name.x_train.shape[0] == 6 and via_name.x_test.shape[0] == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_train": np.zeros((4, 6, 6, 3), np.float32)}, "x_train must be uint8 NHWC"),
        ({"x_test": np.zeros((8, 3, 6, 6), np.uint8)}, "x_test must be uint8 NHWC"),
        ({"y_train": np.zeros(5, np.int64)}, "y_train must be integer labels of shape \\(12,\\)"),
        ({"y_test": np.full(8, -1)}, "negative label"),
        ({"classes": np.array(["a"])}, "classes has 1 names but labels go up to 2"),
    ],
)
def test_load_npz_rejects_bad_files(tmp_path, change, message):
    _write_npz(tmp_path / "bad.npz", **change)
    with pytest.raises(ValueError, match=message):
        load_npz(tmp_path / "bad.npz")


def test_load_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "part.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="lacks arrays \\['y_train', 'x_test', 'y_test'\\]"):
        load_npz(tmp_path / "part.npz")
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_dataset(f"npz:{tmp_path / 'nowhere.npz'}")


def test_shared_npz(shared_npz):
    data = load_dataset(f"npz:{shared_npz}")
    assert data.x_train.shape == (20_000, 3, 32, 32) and data.x_test.shape == (10_000, 3, 32, 32)
    assert data.num_classes == 10 and data.classes[0] == "0"
    mean = data.x_train[:2000].float().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(CIFAR_MEAN), atol=0.03)


@pytest.mark.parametrize(
    ("name", "url", "md5", "folder"),
    [
        (
            "cifar10",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            "cifar-10-batches-py",
        ),
        (
            "cifar100",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            "cifar-100-python",
        ),
    ],
)
def test_cifar_missing_files_say_what_to_fetch(tmp_path, name, url, md5, folder):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, tmp_path)
    message = str(info.value)
    assert url in message and md5 in message
    assert str(tmp_path / folder) in message and "tar -xzf" in message


def test_cifar_damaged_files_say_what_to_fetch(tmp_path):
    # The folder exists but the batches are empty: torchvision's md5 check fails.
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for part in ["data_batch_1", "data_batch_2", "test_batch", "batches.meta"]:
        (folder / part).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", tmp_path)


# --------------------------------------------------------------------------------------------
# corrupted sets


@pytest.fixture()
def stub_corrupt(monkeypatch):
    """Replace the corruption function the corrupted sets call with a recording stub: adds
    `shift` levels + noise."""
    corrupted = pytest.importorskip("studykit.data.corrupted")
    calls = []
    state = types.SimpleNamespace(shift=0.7 / 255, noise=0.0, calls=calls)

    def corrupt(x, name, severity, generator=None):
        calls.append((x.shape[0], name, severity, generator))
        noise = torch.rand(x.shape, generator=generator) * state.noise
        return (x + state.shift + noise).clamp(0, 1)

    monkeypatch.setattr(corrupted, "corrupt", corrupt)
    return state


def test_load_corrupted_generated_truncates_and_batches(tmp_path, stub_corrupt):
    data = _tiny_dataset(n_test=150)
    cs = load_corrupted(data, "gaussian_noise", 2, root=tmp_path, cache=False, batch_size=64)
    assert isinstance(cs, CorruptedSet) and cs.source == "generated"
    assert (cs.name, cs.severity) == ("gaussian_noise", 2)
    assert [c[0] for c in stub_corrupt.calls] == [64, 64, 22]
    assert all(isinstance(c[3], torch.Generator) for c in stub_corrupt.calls)
    # +0.7 of a level truncates back to the clean value (rounding would add one).
    assert cs.x.dtype == torch.uint8 and torch.equal(cs.x, data.x_test)
    assert torch.equal(cs.y, data.y_test)
    stub_corrupt.shift = 1.2 / 255
    shifted = load_corrupted(data, "gaussian_noise", 2, root=tmp_path, cache=False)
    assert torch.equal(shifted.x, (data.x_test.int() + 1).clamp(max=255).to(torch.uint8))
    assert not (tmp_path / "cache").exists()


def test_load_corrupted_seeded_and_cached(tmp_path, stub_corrupt):
    data = _tiny_dataset(n_test=50)
    stub_corrupt.noise = 0.2
    a = load_corrupted(data, "fog", 3, root=tmp_path, cache=False)
    b = load_corrupted(data, "fog", 3, root=tmp_path, cache=False)
    c = load_corrupted(data, "fog", 3, root=tmp_path, cache=False, seed=1)
    d = load_corrupted(data, "fog", 4, root=tmp_path, cache=False)
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, c.x) and not torch.equal(a.x, d.x)

    cached = load_corrupted(data, "fog", 3, root=tmp_path, seed=0)
    path = tmp_path / "cache" / "corrupted" / dataset_fingerprint(data) / "fog-3-seed0.pt"
    assert path.exists() and torch.equal(cached.x, a.x)
    n_calls = len(stub_corrupt.calls)
    hit = load_corrupted(data, "fog", 3, root=tmp_path, seed=0)
    assert len(stub_corrupt.calls) == n_calls  # served from the cache
    assert hit.source == "generated" and torch.equal(hit.x, a.x) and torch.equal(hit.y, a.y)
    # Another dataset (or the same images under another name) has another fingerprint.
    assert dataset_fingerprint(_tiny_dataset("other", n_test=50)) != dataset_fingerprint(data)


def test_load_corrupted_rejects_bad_arguments(tmp_path, stub_corrupt):
    data = _tiny_dataset()
    with pytest.raises(ValueError, match="severity must be one of 1, 2, 3, 4, 5; got 6"):
        load_corrupted(data, "fog", 6, root=tmp_path)
    with pytest.raises(ValueError, match="unknown corruption 'fgo'; choose one of: .*fog"):
        load_corrupted(data, "fgo", 1, root=tmp_path)


def test_load_corrupted_with_real_corruptions(tmp_path):
    pytest.importorskip("studykit.corruptions")
    data = _tiny_dataset(n_test=20, size=32)
    cs = load_corrupted(data, "gaussian_noise", 5, root=tmp_path, cache=False)
    assert cs.x.shape == data.x_test.shape and cs.x.dtype == torch.uint8
    diff = (cs.x.float() - data.x_test.float()).abs().mean()
    assert diff > 10  # severity 5 noise has std 0.1 = 25 levels, less where it clips


def _write_released(root, labels: np.ndarray, size: int = 4):
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    rows = np.arange(50_000)
    x = np.empty((50_000, size, size, 3), np.uint8)
    x[...] = (rows % 251).astype(np.uint8)[:, None, None, None]
    x[:, 0, 0, 0] = (rows // 10_000).astype(np.uint8)  # severity - 1
    np.save(folder / "frost.npy", x)
    np.save(folder / "labels.npy", np.tile(labels.astype(np.uint8), 5))
    return x


def test_load_corrupted_released(tmp_path):
    n = 10_000
    labels = np.arange(n) % 10
    data = ImageDataset(
        "cifar10",
        torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
        torch.zeros(2, dtype=torch.int64),
        torch.zeros(n, 3, 4, 4, dtype=torch.uint8),
        torch.from_numpy(labels),
        sd.CIFAR10_CLASSES,
    )
    x = _write_released(tmp_path, labels)
    cs = load_corrupted(data, "frost", 3, root=tmp_path)
    assert cs.source == "released" and cs.x.shape == (n, 3, 4, 4)
    expected = torch.from_numpy(x[20_000:30_000]).permute(0, 3, 1, 2)
    assert torch.equal(cs.x, expected) and torch.equal(cs.y, data.y_test)
    assert not (tmp_path / "cache").exists()
    # A subset reads the matching rows.
    sub = data.subset(n_test=50, seed=0)
    cs_sub = load_corrupted(sub, "frost", 5, root=tmp_path)
    rows = 40_000 + sub.test_indices.numpy()
    assert torch.equal(cs_sub.x, torch.from_numpy(x[rows]).permute(0, 3, 1, 2))
    # Labels that do not match mean the files belong to another dataset.
    wrong = data.subset(n_test=50, seed=0)
    wrong = ImageDataset(
        "cifar10", wrong.x_train, wrong.y_train, wrong.x_test, (wrong.y_test + 1) % 10,
        wrong.classes, wrong.test_indices,
    )  # fmt: skip
    with pytest.raises(ValueError, match="do not match"):
        load_corrupted(wrong, "frost", 1, root=tmp_path)


# --------------------------------------------------------------------------------------------
# loader


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _source_data(n: int = 10, size: int = 8):
    g = torch.Generator().manual_seed(5)
    x = torch.randint(1, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return x, torch.arange(n)  # the label is the index: each output names its source


def test_loader_deterministic_and_seeded():
    x, y = _source_data()
    a = _batches(DeviceLoader(x, y, 4, seed=3))
    b = _batches(DeviceLoader(x, y, 4, seed=3))
    c = _batches(DeviceLoader(x, y, 4, seed=4))
    assert len(a) == 2
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )
    assert any(not torch.equal(p[0], q[0]) for p, q in zip(a, c, strict=True))
    xb, yb = a[0]
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert xb.shape == (4, 3, 8, 8) and float(xb.min()) >= 0 and float(xb.max()) <= 1


def _reference_views(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every zero-padded crop of `img`, flipped or not: the slow reference."""
    _, h, w = img.shape
    padded = F.pad(img, (pad, pad, pad, pad))
    views = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            views += [crop, crop.flip(-1)]
    return views


def test_loader_crop_and_flip_match_reference():
    x, y = _source_data(n=12)
    loader = DeviceLoader(x, y, 5, seed=0, drop_last=False)
    seen_flip = seen_shift = False
    for epoch in range(2):
        for xb, yb in loader:
            out = (xb * 255).round().to(torch.uint8)
            for img, i in zip(out, yb.tolist(), strict=True):
                views = _reference_views(x[i], 4)
                assert any(torch.equal(img, v) for v in views), f"epoch {epoch} sample {i}"
                seen_flip |= torch.equal(img, x[i].flip(-1))
                seen_shift |= not torch.equal(img, x[i]) and not torch.equal(img, x[i].flip(-1))
    assert seen_shift  # offsets other than the centre occur; flips are checked below
    plain = DeviceLoader(x, y, 5, crop_padding=0, flip=False, seed=0, drop_last=False)
    flipped = DeviceLoader(x, y, 5, crop_padding=0, seed=0, drop_last=False)
    order = []
    for xb, yb in plain:
        assert torch.equal((xb * 255).round().to(torch.uint8), x[yb])
        order += yb.tolist()
    assert order != list(range(12)) and sorted(order) == list(range(12))  # shuffled
    n_flipped = 0
    for xb, yb in flipped:
        for img, i in zip((xb * 255).round().to(torch.uint8), yb.tolist(), strict=True):
            assert torch.equal(img, x[i]) or torch.equal(img, x[i].flip(-1))
            n_flipped += int(torch.equal(img, x[i].flip(-1)))
    assert 0 < n_flipped < 12


def test_loader_eval_mode_is_plain():
    x, y = _source_data(n=10)
    loader = DeviceLoader(x, y, 4, train=False)
    assert len(loader) == 3
    batches = _batches(loader)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), x.float() / 255)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_loader_each_sample_once_per_epoch():
    x, y = _source_data(n=23)
    loader = DeviceLoader(x, y, 5, drop_last=False, seed=1)
    orders = []
    for _ in range(3):
        seen = torch.cat([yb for _, yb in loader])
        assert sorted(seen.tolist()) == list(range(23))
        orders.append(seen.tolist())
    assert orders[0] != orders[1]  # a new permutation each epoch
    dropped = torch.cat([yb for _, yb in DeviceLoader(x, y, 5, seed=1)])
    assert len(dropped) == 20 and len(set(dropped.tolist())) == 20


def test_loader_len():
    x, y = _source_data(n=10)
    assert len(DeviceLoader(x, y, 4)) == 2  # train drops the last partial batch by default
    assert len(DeviceLoader(x, y, 4, drop_last=False)) == 3
    assert len(DeviceLoader(x, y, 4, train=False)) == 3
    assert len(DeviceLoader(x, y, 4, train=False, drop_last=True)) == 2
    assert len(DeviceLoader(x, y, 5)) == 2


def test_loader_resumes_from_epoch_boundary():
    x, y = _source_data(n=16)
    uninterrupted = DeviceLoader(x, y, 4, seed=7)
    for _ in range(3):
        _batches(uninterrupted)
    assert uninterrupted.state_dict() == {"epoch": 3, "seed": 7}
    fourth = _batches(uninterrupted)

    resumed = DeviceLoader(x, y, 4, seed=0)
    resumed.load_state_dict({"epoch": 3, "seed": 7})
    again = _batches(resumed)
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1])
        for p, q in zip(fourth, again, strict=True)
    )
    assert resumed.state_dict() == {"epoch": 4, "seed": 7}

    # A pass abandoned midway does not advance the epoch; set_epoch picks one explicitly.
    partial = DeviceLoader(x, y, 4, seed=7)
    next(iter(partial))
    assert partial.state_dict()["epoch"] == 0
    partial.set_epoch(3)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(fourth, _batches(partial), strict=True))


def test_loader_rejects_bad_input():
    x, y = _source_data()
    with pytest.raises(ValueError, match="x must be uint8"):
        DeviceLoader(x.float(), y, 4)
    with pytest.raises(ValueError, match="batch_size must be >= 1; got 0"):
        DeviceLoader(x, y, 0)


@pytest.mark.gpu
def test_loader_cuda_matches_cpu():
    x, y = _source_data(n=32)
    cpu = _batches(DeviceLoader(x, y, 8, seed=2))
    gpu = _batches(DeviceLoader(x, y, 8, seed=2, device="cuda"))
    assert gpu[0][0].device.type == "cuda"
    assert all(
        torch.equal(p[0], q[0].cpu()) and torch.equal(p[1], q[1].cpu())
        for p, q in zip(cpu, gpu, strict=True)
    )


def test_npz_label_keeps_the_machines_folders_out_of_tables():
    from studykit.data.npz import npz_label

    assert npz_label("npz:/home/me/data/real copy.npz") == "npz:<path>/real copy.npz"
    assert npz_label("cifar10") == "cifar10" and npz_label(None) is None
