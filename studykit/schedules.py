"""Schedules that methods derive from training progress (``Method.set_progress``).

Each is a pure function of the global step and the total, so a resumed run equals an
uninterrupted one. PGD-AT and RobustAugMix share the eps ramp (`EpsRamp`).
"""

from __future__ import annotations


def ramp_scale(step: int, total_steps: int, ramp: float, delay: float = 0.0) -> float:
    """The fraction of eps in use at global ``step``: 0 for the first ``delay * total`` steps,
    then (step + 1 - delay * total) / (ramp * total), at most 1."""
    if total_steps <= 0:
        return 1.0
    t = step + 1 - delay * total_steps
    if t <= 0:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, t / (ramp * total_steps))


class EpsRamp:
    """Mix-in for a method whose Config has ``eps_ramp`` and ``eps_delay``: ``self.scale`` is
    the fraction of eps (and of the step size) in use, 1 until the loop reports progress."""

    scale: float = 1.0

    def set_progress(self, step: int, total_steps: int) -> None:
        cfg = self.config  # type: ignore[attr-defined]
        self.scale = ramp_scale(step, total_steps, cfg.eps_ramp, cfg.eps_delay)
