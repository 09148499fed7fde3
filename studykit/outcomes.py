"""Per-image outcomes of an evaluation: which test images a model gets right, clean, under
each corruption and severity, and under each attack strength.

Aggregate accuracies cannot carry their own uncertainty; these vectors can. Two models
evaluated on the same images give paired outcomes, and `studykit.claims` resamples the images
to put an interval on their difference. They are stored beside the evaluation's tables
(``<run>/eval/<key>/outcomes.npz``), one boolean vector per key:

* ``clean``: the whole test set;
* ``clean_subset``: the images the corruption table used, when it used a subset;
* ``corruption/<name>/<severity>``: those images corrupted;
* ``adv/<norm>/<eps>``: the images attacked (eps written with ``:.4g``).
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from studykit.run_integrity import move_aside
from studykit.runs import write_bytes_atomic

log = logging.getLogger(__name__)

FILE_NAME = "outcomes.npz"


def adv_key(norm: str, eps: float) -> str:
    """The key of the outcomes under an attack (``adv/linf/0.03137``)."""
    return f"adv/{norm}/{float(eps):.4g}"


def corruption_key(name: str, severity: int) -> str:
    """The key of the outcomes on a corrupted set (``corruption/fog/3``)."""
    return f"corruption/{name}/{int(severity)}"


def as_array(hits: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(hits, torch.Tensor):
        hits = hits.detach().cpu().numpy()
    return np.asarray(hits, dtype=bool).reshape(-1)


def save_outcomes(path: Path, outcomes: Mapping[str, torch.Tensor | np.ndarray]) -> None:
    """Write the outcomes atomically (compressed npz of boolean vectors)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: as_array(v) for k, v in outcomes.items()})
    write_bytes_atomic(path, buf.getvalue(), "outcomes")


def load_outcomes(path: Path, *, expected: Mapping[str, int] | None = None
                  ) -> dict[str, np.ndarray] | None:
    """The stored outcomes; None when missing or damaged (not an npz, a vector not boolean, or
    a key of ``expected`` missing or of another length): a damaged file is moved aside with one
    warning, so the caller evaluates again."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        move_aside(path, f"not an outcomes file: {' '.join(str(e).split())}")
        return None
    problem = _problem(out, expected or {})
    if problem is not None:
        move_aside(path, problem)
        return None
    return out


def _problem(out: Mapping[str, np.ndarray], expected: Mapping[str, int]) -> str | None:
    for k, v in out.items():
        if v.dtype != bool or v.ndim != 1:
            return f"{k} is {v.dtype} of shape {v.shape}, expected a boolean vector"
    for k, n in expected.items():
        if k not in out:
            return f"{k} is missing"
        if len(out[k]) != n:
            return f"{k} holds {len(out[k])} images, expected {n}"
    return None
