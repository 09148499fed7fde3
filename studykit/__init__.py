"""studykit: train, compare and see adversarial augmentation methods for robust classifiers.

The package is the source of truth for all logic; the notebooks in ``notebooks/`` are thin
callers. The names below are the public entry points; each lives in its own module and is
imported on first use, so ``import studykit`` stays cheap.

    studykit.run_experiment(**params)    # studykit.experiment: train or load, then evaluate
    studykit.list_methods(pattern)       # studykit.methods: the registered training methods
    studykit.create_method(name, **opts)
    studykit.list_models(pattern)        # studykit.models: the registered architectures
    studykit.create_model(arch, num_classes, ...)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "run_experiment": "studykit.experiment",
    "resolve_config": "studykit.experiment",
    "list_methods": "studykit.methods",
    "create_method": "studykit.methods",
    "list_models": "studykit.models",
    "create_model": "studykit.models",
    "list_datasets": "studykit.data",
    "load_dataset": "studykit.data",
    "list_corruptions": "studykit.corruptions",
    "corrupt": "studykit.corruptions",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'studykit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_PUBLIC))
