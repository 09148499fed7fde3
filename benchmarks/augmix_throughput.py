"""AugMix throughput: our batched tensor pipeline against a PIL pipeline written like the reference.

Both produce what AugMix's JSD training consumes per image: the clean image and two AugMix
views (width 3, depth 1-3, severity 3, Dirichlet(1)/Beta(1) mixing), after a random crop
(4-pixel zero padding) and a horizontal flip.

* ours: ``studykit.augment`` on whole batches on one device (uint8 data already there);
  ``--breakdown`` adds the time per stage (sampling, crop/flip, each op group, mixing).
* PIL reference: a ``torch.utils.data.Dataset`` whose ``__getitem__`` does per-image PIL work as
  the AugMix reference ``cifar.py`` does (``RandomHorizontalFlip``, ``RandomCrop(32, padding=4)``,
  then ``ToTensor`` + ``Normalize`` of the clean image and of two ``augment_and_mix`` views whose
  ops are PIL ``ImageOps`` / ``Image.transform`` calls and whose mixing is numpy), read through a
  ``DataLoader`` with 2 workers and batch 256.

Images come from the real-data file when present (``$STUDYKIT_SHARED_NPZ``; default: the
JPEG-75 CIFAR-10 copy in the shared folder next to the checkout, as the tests use it), else
random uint8.
Timings on a shared machine are noisy: the two pipelines are measured in turn ``--repeats``
times and the best and median are printed. ``--omp-passive`` and ``--thp`` set two process
options that matter on a small, shared CPU (see below).

    python benchmarks/augmix_throughput.py --threads 2 --batch-size 256 --breakdown
"""

from __future__ import annotations

import os
import sys

# Two process settings change the CPU numbers a lot on a small shared machine. They must be set
# before torch loads, so they are flags read here (or set the variables yourself):
# * --omp-passive sets OMP_WAIT_POLICY=PASSIVE. With 2 OpenMP threads on 2 cores that another
#   process also uses, libgomp's default spin-waiting makes every parallel op wait for a
#   descheduled thread (measured here: 2 threads ~25x slower than 1 under such load); passive
#   waiting avoids that collapse but costs a thread wake-up per op on an idle machine.
# * --thp sets THP_MEM_ALLOC_ENABLE=1: PyTorch's CPU allocator backs large tensors with
#   transparent huge pages, instead of a page fault per 4 KiB the first time each batch's fresh
#   multi-MB tensors are touched (measured here: up to ~30% of our pipeline's time).
_ENV = {"--omp-passive": ("OMP_WAIT_POLICY", "PASSIVE"), "--thp": ("THP_MEM_ALLOC_ENABLE", "1")}
for _flag, (_key, _value) in _ENV.items():
    if _flag in sys.argv:
        os.environ[_key] = _value

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from studykit.augment import augmix_chains, mix, sample_augmix_params  # noqa: E402
from studykit.paths import real_data_npz  # noqa: E402

logger = logging.getLogger("augmix_throughput")



def load_images(n: int, seed: int) -> tuple[np.ndarray, str]:
    """(n, 32, 32, 3) uint8 images: real CIFAR-10 (JPEG q75) when available, else random."""
    path = real_data_npz()
    if path.exists():
        with np.load(path) as data:
            x = data["x_train"]
        reps = -(-n // len(x))
        return np.concatenate([x] * reps)[:n], f"{path.name} (first {n})"
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "random uint8"


# ---------------------------------------------------------------------------------------------
# Ours.


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def crop_flip(x_u8: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip (uint8), one gather per batch."""
    n, c, h, w = x_u8.shape
    dev = x_u8.device
    off = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(dev)
    flip = torch.randint(0, 2, (n,), generator=generator).to(dev).bool()
    cols = torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], cols.flip(0), cols) + off[1][:, None]  # (n, w)
    rows = torch.arange(h, device=dev) + off[0][:, None]  # (n, h)
    width_padded = w + 2 * padding
    index = (rows[:, :, None] * width_padded + cols[:, None, :]).view(n, 1, h * w)
    padded = F.pad(x_u8, (padding,) * 4).view(n, c, -1)
    return padded.gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def ours_batch(
    x_u8: torch.Tensor, generator: torch.Generator, timings: dict[str, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean + 2 AugMix views of a uint8 NCHW batch already on the device."""
    dev = x_u8.device

    def tick(name: str, t0: float) -> float:
        if timings is not None:
            _sync(dev)
            t1 = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + t1 - t0
            return t1
        return t0

    t = time.perf_counter()
    clean_u8 = crop_flip(x_u8, generator)
    clean = clean_u8.float().div_(255.0)
    t = tick("crop + flip", t)
    n = clean.shape[0]
    params = sample_augmix_params(2 * n, generator=generator).to(dev)
    t = tick("sample params", t)
    # The chains run on the uint8 levels directly (no float round trip).
    chains = augmix_chains(clean_u8.repeat(2, 1, 1, 1), params, as_levels=True, timings=timings)
    t = tick("_chains", t)
    views = mix(clean.repeat(2, 1, 1, 1), chains, params.w, params.m)
    tick("mix", t)
    return clean, views[:n], views[n:]


def time_ours(
    x_all: torch.Tensor, batch_size: int, n_batches: int, seed: int, breakdown: bool
) -> tuple[float, dict[str, float]]:
    """Images per second of our pipeline (after one warm-up batch), and per-stage seconds."""
    g = torch.Generator().manual_seed(seed)
    dev = x_all.device
    ours_batch(x_all[:batch_size], g)
    timings: dict[str, float] | None = {} if breakdown else None
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(n_batches):
        start = (i * batch_size) % (len(x_all) - batch_size + 1)
        ours_batch(x_all[start : start + batch_size], g, timings)
    _sync(dev)
    seconds = time.perf_counter() - t0
    return n_batches * batch_size / seconds, timings or {}


# ---------------------------------------------------------------------------------------------
# PIL reference (AugMix's cifar.py / augmentations.py structure, written from their facts).

IMAGE_SIZE = 32


def _int_parameter(level: float, maxval: float) -> int:
    return int(level * maxval / 10)


def _float_parameter(level: float, maxval: float) -> float:
    return float(level) * maxval / 10.0


def _sample_level(severity: float) -> float:
    return np.random.uniform(low=0.1, high=severity)


def _signed(value: float) -> float:
    return -value if np.random.uniform() > 0.5 else value


def _affine(img: Image.Image, coeffs: tuple) -> Image.Image:
    return img.transform((IMAGE_SIZE, IMAGE_SIZE), Image.AFFINE, coeffs, resample=Image.BILINEAR)


def pil_op(name: str, img: Image.Image, severity: float) -> Image.Image:
    """One AugMix op on a PIL image, drawing its level as the reference does."""
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    level = _sample_level(severity)
    if name == "posterize":
        return ImageOps.posterize(img, 4 - _int_parameter(level, 4))
    if name == "rotate":
        return img.rotate(_signed(_int_parameter(level, 30)), resample=Image.BILINEAR)
    if name == "solarize":
        return ImageOps.solarize(img, 256 - _int_parameter(level, 256))
    if name == "shear_x":
        return _affine(img, (1, _signed(_float_parameter(level, 0.3)), 0, 0, 1, 0))
    if name == "shear_y":
        return _affine(img, (1, 0, 0, _signed(_float_parameter(level, 0.3)), 1, 0))
    if name == "translate_x":
        return _affine(img, (1, 0, _signed(_int_parameter(level, IMAGE_SIZE / 3)), 0, 1, 0))
    if name == "translate_y":
        return _affine(img, (1, 0, 0, 0, 1, _signed(_int_parameter(level, IMAGE_SIZE / 3))))
    raise ValueError(f"unknown op {name!r}")


PIL_OPS = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)


def pil_augment_and_mix(img, preprocess, width=3, depth=-1, severity=3, alpha=1.0):
    """AugMix's per-image ``aug``: numpy Dirichlet/Beta, chains of PIL ops, tensor mixing."""
    ws = np.float32(np.random.dirichlet([alpha] * width))
    m = np.float32(np.random.beta(alpha, alpha))
    mixed = torch.zeros_like(preprocess(img))
    for i in range(width):
        img_aug = img.copy()
        d = depth if depth > 0 else np.random.randint(1, 4)
        for _ in range(d):
            img_aug = pil_op(PIL_OPS[np.random.randint(len(PIL_OPS))], img_aug, severity)
        mixed += ws[i] * preprocess(img_aug)
    return (1 - m) * preprocess(img) + m * mixed


class PilAugMixDataset(torch.utils.data.Dataset):
    """Per-image PIL pipeline: crop/flip, then (clean, augmix, augmix) as in the reference."""

    def __init__(self, images: np.ndarray) -> None:
        from torchvision import transforms

        self.images = images
        self.train_transform = transforms.Compose(
            [transforms.RandomHorizontalFlip(), transforms.RandomCrop(32, padding=4)]
        )
        self.preprocess = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.train_transform(Image.fromarray(self.images[i]))
        views = (
            self.preprocess(img),
            pil_augment_and_mix(img, self.preprocess),
            pil_augment_and_mix(img, self.preprocess),
        )
        return views, 0


def time_pil(images: np.ndarray, batch_size: int, workers: int) -> float:
    """Images per second of the PIL pipeline, not counting the first batch (worker start-up)."""
    loader = torch.utils.data.DataLoader(
        PilAugMixDataset(images), batch_size=batch_size, shuffle=True, num_workers=workers
    )
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    count = 0
    for (clean, _, _), _ in it:
        count += clean.shape[0]
    return count / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (ours only)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (ours)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per repeat (ours)")
    parser.add_argument("--pil-images", type=int, default=5120, help="images per PIL repeat")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (PIL)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true", help="time per stage (ours)")
    parser.add_argument("--skip-pil", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--omp-passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--thp", action="store_true", help="THP_MEM_ALLOC_ENABLE=1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n_ours = args.batch_size * max(args.batches, 1)
    images, source = load_images(max(n_ours, args.pil_images), args.seed)
    x_all = torch.from_numpy(images[:n_ours]).permute(0, 3, 1, 2).contiguous().to(device)

    # Alternate the two pipelines so that both see the same (shared, fluctuating) machine.
    ours, pil, stages = [], [], {}
    for r in range(args.repeats):
        ours.append(time_ours(x_all, args.batch_size, args.batches, args.seed + r, False)[0])
        if not args.skip_pil:
            pil.append(time_pil(images[: args.pil_images], args.batch_size, args.workers))
    if args.breakdown:
        _, stages = time_ours(x_all, args.batch_size, args.batches, args.seed, True)

    logger.info(
        "AugMix clean + 2 views per image, 32x32, batch %d, images: %s", args.batch_size, source
    )
    logger.info(
        "machine: %s, %d CPUs, torch %s, %d threads (ours), device %s; %s",
        platform.processor() or platform.machine(),
        os.cpu_count() or 0,
        torch.__version__,
        args.threads,
        device,
        ", ".join(f"{key}={os.environ.get(key, '(unset)')}" for key, _ in _ENV.values()),
    )
    logger.info("")
    logger.info("| pipeline | images/s (best) | images/s (median) |")
    logger.info("|---|---:|---:|")
    logger.info("| ours (batched, %s) | %.0f | %.0f |", device, max(ours), statistics.median(ours))
    if pil:
        label = f"PIL reference ({args.workers} DataLoader workers)"
        logger.info("| %s | %.0f | %.0f |", label, max(pil), statistics.median(pil))
        logger.info(
            "| ratio | %.1fx | %.1fx |",
            max(ours) / max(pil),
            statistics.median(ours) / statistics.median(pil),
        )
    if stages:
        logger.info("")
        logger.info(
            "Per-stage time of ours (%d batches; device synchronized per stage):", args.batches
        )
        logger.info("| stage | ms per batch | share |")
        logger.info("|---|---:|---:|")
        for name, seconds in _stage_rows(stages):
            logger.info(
                "| %s | %.2f | %.0f%% |",
                name,
                1e3 * seconds / args.batches,
                100 * seconds / sum(v for _, v in _stage_rows(stages)),
            )
    logger.info("")
    logger.info("Reproduce: %s", shlex.join([sys.executable, *sys.argv]))
    return 0


def _stage_rows(stages: dict[str, float]) -> list[tuple[str, float]]:
    """Outer stages in pipeline order, with the chain stages (slowest first) in between."""
    outer = ("crop + flip", "sample params", "_chains", "mix")
    inner = sorted(((k, v) for k, v in stages.items() if k not in outer), key=lambda kv: -kv[1])
    other = stages.get("_chains", 0.0) - sum(v for _, v in inner)
    rows = [(k, stages[k]) for k in outer[:2] if k in stages]
    rows += [(f"chains: {k}", v) for k, v in inner]
    rows += [
        ("chains: other (magnitudes, set-up)", max(other, 0.0)),
        ("mix", stages.get("mix", 0.0)),
    ]
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
