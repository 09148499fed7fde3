"""Datasets, loaders and corrupted test sets.

- :mod:`~studykit.data.dataset`: `ImageDataset` (uint8 NCHW images, integer labels), a leaf.
- :mod:`~studykit.data.loaders`: `load_dataset` by name: ``synthetic`` (the embedded default,
  :mod:`~studykit.data.synthetic` and its disk cache :mod:`~studykit.data.synthetic_cache`),
  ``cifar10``, ``cifar100``, ``npz:<path>`` (:mod:`~studykit.data.npz`).
- :mod:`~studykit.data.corrupted`: CIFAR-C style test sets, released or generated and cached.
- :mod:`~studykit.data.device_loader`: `DeviceLoader`, batches augmented on the device.
- :mod:`~studykit.data.fetch` and :mod:`~studykit.data.cifar10_1`: downloads with checksums,
  and the CIFAR-10.1 test set.

Images are uint8 NCHW tensors on the CPU until a loader moves them to the device.
"""

from studykit.data.corrupted import CorruptedSet, load_corrupted
from studykit.data.dataset import CIFAR10_CLASSES, ImageDataset, dataset_fingerprint
from studykit.data.device_loader import DeviceLoader, random_crop_flip
from studykit.data.loaders import list_datasets, load_dataset
from studykit.data.npz import load_npz
from studykit.data.synthetic import GENERATOR_VERSION, SYNTHETIC_CLASSES, make_synthetic

__all__ = [
    "CIFAR10_CLASSES",
    "GENERATOR_VERSION",
    "SYNTHETIC_CLASSES",
    "CorruptedSet",
    "DeviceLoader",
    "ImageDataset",
    "dataset_fingerprint",
    "list_datasets",
    "load_corrupted",
    "load_dataset",
    "load_npz",
    "make_synthetic",
    "random_crop_flip",
]
