"""The installed torch and torchvision are built for the same CUDA (cheap; no GPU needed).

A torchvision built for another CUDA minor version than torch imports fine (torchvision only
refuses a different major version), but its CUDA ops then run on torch's CUDA runtime. The
pins in pyproject.toml name a pair with one CUDA; these tests catch an environment that drifted.
"""

from __future__ import annotations

import re

import pytest
import torch

torchvision = pytest.importorskip("torchvision")


def cuda_tag(version: str) -> str | None:
    """The ``cuXXX`` local tag of a version string (``"2.14.1+cu130"`` -> ``"cu130"``), or None."""
    match = re.search(r"\+(cu\d+)", version)
    return match.group(1) if match else None


def test_cuda_tag_parsing():
    assert cuda_tag("2.14.1+cu130") == "cu130"
    assert cuda_tag("0.29.2+cu132") == "cu132"
    assert cuda_tag("2.13.0+cpu") is None
    assert cuda_tag("2.14.1") is None


def test_local_cuda_tags_agree():
    t, tv = cuda_tag(torch.__version__), cuda_tag(torchvision.__version__)
    if t is None or tv is None:
        pytest.skip(f"no CUDA tag on both: torch {torch.__version__}, "
                    f"torchvision {torchvision.__version__}")
    assert t == tv, (
        f"torch {torch.__version__} and torchvision {torchvision.__version__} are built for "
        "different CUDA versions; install the pair pinned in pyproject.toml (pip install -e .)"
    )


def test_compiled_cuda_versions_agree():
    # The same check without version tags (conda and source builds carry none): the CUDA version
    # torchvision's C++ ops were compiled with (e.g. 13000 for 13.0) against torch.version.cuda.
    from torchvision.extension import _check_cuda_version

    tv_cuda = _check_cuda_version()
    if tv_cuda <= 0 or torch.version.cuda is None:
        pytest.skip("torch or torchvision is not a CUDA build")
    major, minor = (int(part) for part in torch.version.cuda.split(".")[:2])
    assert (tv_cuda // 1000, tv_cuda % 1000 // 10) == (major, minor), (
        f"torchvision was compiled for CUDA {tv_cuda}, torch for {torch.version.cuda}"
    )
