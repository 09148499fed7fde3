"""studykit: train, compare and see adversarial augmentation methods for robust classifiers.

The package is the source of truth for all logic; the notebooks in ``notebooks/`` are thin
callers. See the README for the two commands (``make study``, ``make test``).
"""

from __future__ import annotations

__version__ = "0.1.0"
