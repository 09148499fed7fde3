"""How similar AdA's and DeepAugment's corrupted images stay to the originals (notebook 06):
SSIM(x, AdA(x)) over the radius nu against a random perturbation in the same balls (AdA Fig. 1b),
and what the SSIM guard does to the images it catches (Appendix G).

The methods are made here from their registry names with the caller's corruption network
attached (``Method.attach``), so the figures can use other options (e.g. the paper's 10 search
steps) than the trained models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from studykit.analysis.batches import as_float_images
from studykit.analysis.ssim import ssim
from studykit.devices import model_device
from studykit.methods import create_method, method_config_fields


# --------------------------------------------------------------------------------------------
# AdA's corruptions over the radius (Fig. 1b) and the SSIM guard (Appendix G)
# --------------------------------------------------------------------------------------------
def perturbed_net_method(name: str, net: nn.Module, *, nu: float,
                         options: Mapping[str, Any] | None = None, seed: int = 0) -> Any:
    """An ``ada`` or ``deepaugment`` method with radius ``nu`` that corrupts with ``net``.

    Args:
        name: ``"ada"`` or ``"deepaugment"``.
        net: the corruption network (its weights are phi; ``studykit.nets.corruption_net``).
        nu: the relative radius of every parameter block's ball.
        options: further method options (e.g. AdA's ``steps``, ``ssim_threshold``); options
            the method does not have are left out, so one AdA option set serves both.
        seed: seed of the method's generator.
    """
    fields = method_config_fields(name)
    kept = {k: v for k, v in (options or {}).items() if k in fields and k != "nu"}
    method = create_method(name, **kept, nu=nu)
    method.seed(seed)
    method.attach(net)
    return method


def ssim_by_radius(
    classifier: nn.Module,
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    nus: Sequence[float],
    *,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 128,
) -> pd.DataFrame:
    """SSIM between images and their AdA and DeepAugment corruptions, per image and radius.

    For every radius nu: AdA (``options``, e.g. its ``steps``, against ``classifier``) and a
    random perturbation in the same balls (DeepAugment's ``distortion="ball"``), both seeded
    with ``seed``, corrupt ``x`` in batches of ``batch_size``. SSIM is measured before the
    SSIM guard; whether the classifier is right is measured on the guarded images (what
    training would see).

    Args:
        classifier: the model AdA attacks (used as given; pass an eval-mode model).
        net: the corruption network.
        x: images, uint8 or float in [0, 1]; moved to the classifier's device.
        y: labels.
        nus: the radii.
        options: AdA options (``perturbed_net_method``); ``nu`` is each radius in turn.
        seed: seed of both methods at every radius.
        batch_size: images per corruption batch.

    Returns:
        One row per radius and image: ``nu``, ``image`` (index in ``x``), ``ssim_ada``,
        ``ssim_random`` (float32), ``correct_ada``, ``correct_random`` (bool).

    Shape:
        - x: (N, 3, H, W); y: (N,)
    """
    device = model_device(classifier)
    x, y = as_float_images(x.to(device)), y.to(device)
    parts = []
    for nu in nus:
        ada = perturbed_net_method("ada", net, nu=nu, options=options, seed=seed)
        rand = perturbed_net_method("deepaugment", net, nu=nu, seed=seed,
                                    options={**(options or {}), "distortion": "ball"})
        cols: dict[str, list[torch.Tensor]] = {"ssim_ada": [], "ssim_random": [],
                                                "correct_ada": [], "correct_random": []}
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            x_hat, x_guarded, _ = ada.corrupt(classifier, xb, yb, ada.rng(device))
            x_rand, x_rand_guarded, _ = rand.corrupt(classifier, xb, yb, rand.rng(device))
            cols["ssim_ada"].append(ssim(xb, x_hat))
            cols["ssim_random"].append(ssim(xb, x_rand))
            with torch.no_grad():
                cols["correct_ada"].append(classifier(x_guarded).argmax(1) == yb)
                cols["correct_random"].append(classifier(x_rand_guarded).argmax(1) == yb)
        frame = {k: torch.cat(v).detach().cpu().numpy() for k, v in cols.items()}
        parts.append(pd.DataFrame({"nu": float(nu), "image": np.arange(x.shape[0]), **frame}))
    return pd.concat(parts, ignore_index=True)


def _percent(correct: pd.Series) -> float:
    """Share of True (%), computed as torch does for a float32 mean."""
    return 100 * torch.tensor(correct.to_numpy()).float().mean().item()


def ssim_radius_summary(per_image: pd.DataFrame, threshold: float = 0.3) -> pd.DataFrame:
    """The table of ``ssim_by_radius``: one row per radius (index ``nu``) with the mean and
    standard deviation of SSIM(x, AdA(x)), the share of AdA images below the guard's
    ``threshold``, the mean SSIM of the random perturbations, and the classifier's accuracy (%)
    on the (guarded) AdA and random images."""
    rows = []
    for nu, g in per_image.groupby("nu", sort=False):
        s_ada = np.ascontiguousarray(g["ssim_ada"].to_numpy())
        s_rand = np.ascontiguousarray(g["ssim_random"].to_numpy())
        rows.append({"nu": nu, "SSIM mean (AdA)": s_ada.mean(), "SSIM std (AdA)": s_ada.std(),
                     f"share < {threshold} (AdA)": (s_ada < threshold).mean(),
                     "SSIM mean (random)": s_rand.mean(),
                     "acc. on AdA (%)": _percent(g["correct_ada"]),
                     "acc. on random (%)": _percent(g["correct_random"])})
    return pd.DataFrame(rows).set_index("nu")


@dataclass
class GuardEffect:
    """AdA images before and after the SSIM guard (``ssim_guard_effect``).

    Attributes:
        nu: the radius of the AdA that made them.
        threshold: the guard's t.
        x: the images; x_hat: AdA's images; x_guarded: after the guard.
        ssim_before: SSIM(x, x_hat) per image; ssim_after: SSIM(x, x_guarded).
    """

    nu: float
    threshold: float
    x: torch.Tensor
    x_hat: torch.Tensor
    x_guarded: torch.Tensor
    ssim_before: torch.Tensor
    ssim_after: torch.Tensor

    @property
    def caught(self) -> torch.Tensor:
        """Indices of the images the guard caught (SSIM before it below the threshold)."""
        return (self.ssim_before < self.threshold).nonzero().flatten()

    def others_unchanged(self) -> bool:
        """Whether the guard left every image it did not catch exactly as AdA made it."""
        keep = self.ssim_before >= self.threshold
        return bool(torch.equal(self.x_guarded[keep], self.x_hat[keep]))

    def examples(self, n: int) -> torch.Tensor:
        """Indices of up to ``n`` caught images to show (the first ``n`` images if none)."""
        caught = self.caught
        if caught.numel():
            return caught[:n]
        return torch.arange(min(n, self.ssim_before.numel()), device=self.ssim_before.device)

    def table(self) -> pd.DataFrame:
        """SSIM of the caught images before and after the guard: one row each (index
        ``before`` / ``after the guard``) with their count, mean, min, 5th percentile, median,
        95th percentile and max, and the mean distance to the threshold (nan when none was
        caught)."""
        caught = self.caught
        columns = ["mean", "min", "5 %", "median", "95 %", "max", "mean |SSIM - t|"]
        rows = {}
        for name, values in (("before", self.ssim_before), ("after the guard", self.ssim_after)):
            v = values[caught].double().cpu().numpy()
            stats = [np.nan] * len(columns)
            if v.size:
                stats = [v.mean(), v.min(), *np.quantile(v, [0.05, 0.5, 0.95]), v.max(),
                         np.abs(v - self.threshold).mean()]
            rows[name] = {"images": int(v.size), **dict(zip(columns, stats))}
        return pd.DataFrame.from_dict(rows, orient="index")

    def report(self) -> str:
        """One line: how many images were caught, their SSIM after the guard, and whether the
        others are unchanged."""
        caught, after = self.caught, self.ssim_after[self.caught]
        low = after.min() if caught.numel() else float("nan")
        return (f"nu={self.nu}: {caught.numel()} of {self.ssim_before.numel()} images below "
                f"t={self.threshold}; after the guard their SSIM is {after.mean():.3f} on "
                f"average (min {low:.3f}), the others unchanged: {self.others_unchanged()}")


def ssim_guard_effect(classifier: nn.Module, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      *, nu: float, options: Mapping[str, Any] | None = None,
                      seed: int = 0) -> GuardEffect:
    """AdA at radius ``nu`` (``options``, seeded with ``seed``) on one batch ``x``, and the
    SSIM of its images to ``x`` before and after the SSIM guard (its ``ssim_threshold``).

    Shape:
        - x: (N, 3, H, W) float in [0, 1] on the classifier's device; y: (N,)
    """
    ada = perturbed_net_method("ada", net, nu=nu, options=options, seed=seed)
    device = model_device(classifier)
    x_hat, x_guarded, _ = ada.corrupt(classifier, x, y, ada.rng(device))
    return GuardEffect(nu, ada.config.ssim_threshold, x, x_hat, x_guarded, ssim(x, x_hat),
                       ssim(x, x_guarded))
