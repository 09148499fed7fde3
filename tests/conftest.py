"""Shared pytest fixtures and markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_jpeg75_20k.npz"
)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_npz() -> Path:
    """The JPEG-compressed CIFAR-10 subset: ``$STUDYKIT_SHARED_NPZ``, by default the copy in the
    shared folder next to the checkout; skips the test when absent."""
    path = Path(os.environ.get("STUDYKIT_SHARED_NPZ", SHARED_DATA))
    if not path.exists():
        pytest.skip(f"real-data file not found: {path}")
    return path


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep torch from oversubscribing when pytest-xdist is not in use.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
