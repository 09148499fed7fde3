"""Certified L2 robustness of a Gaussian-smoothed classifier (Cohen, Rosenfeld and Kolter 2019).

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I). CERTIFY:

1. n0 noisy copies of x: their most frequent prediction is the guess c_A;
2. n more noisy copies: n_A of them predict c_A; p_A_lower is the one-sided (1 - alpha)
   Clopper-Pearson lower bound of P(f(x + e) = c_A), i.e. the alpha quantile of
   Beta(n_A, n - n_A + 1);
3. if p_A_lower > 1/2, predict c_A with radius sigma * Phi^-1(p_A_lower); otherwise abstain.

MaxUp's Table 6 reports the certified accuracy at radius r: the share of test images certified
correct with radius >= r. The noisy copies are drawn and classified on the model's device in
large batches (many images at once); sample counts are parameters (Cohen et al. and MaxUp:
n0 = 100, n = 100,000, alpha = 0.001; the kit's smoke and quick profiles use far fewer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from scipy.stats import beta, norm
from torch import nn
from tqdm.auto import tqdm

ABSTAIN = -1


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound on a binomial proportion, confidence 1 - alpha."""
    if n_a <= 0:
        return 0.0
    return float(beta.ppf(alpha, n_a, n - n_a + 1))


def certified_radius(p_a_lower: float, sigma: float) -> float:
    """sigma * Phi^-1(p_A_lower) when p_A_lower > 1/2, else 0 (the certificate abstains)."""
    return float(sigma * norm.ppf(p_a_lower)) if p_a_lower > 0.5 else 0.0


@torch.no_grad()
def _counts(model: nn.Module, x: torch.Tensor, num: int, sigma: float, num_classes: int,
            batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """(N, K) counts of the predictions of ``num`` noisy copies of each image."""
    n = x.shape[0]
    counts = torch.zeros(n, num_classes, dtype=torch.long, device=x.device)
    per_image = max(1, batch_size // n)
    done = 0
    while done < num:
        k = min(per_image, num - done)
        batch = x.repeat_interleave(k, dim=0)
        noise = torch.randn(batch.shape, generator=generator, device=batch.device)
        pred = model(batch + sigma * noise).argmax(1).view(n, k)
        counts.scatter_add_(1, pred, torch.ones_like(pred))
        done += k
    return counts


def certify(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    images_per_batch: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """CERTIFY (Cohen et al. 2019) for every image of ``x``.

    Args:
        model: the base classifier f on [0, 1] images (evaluated in eval mode).
        x: images, uint8 or float in [0, 1]. y: labels.
        sigma: the smoothing noise's standard deviation (in [0, 1] pixel units).
        n0: selection samples per image. n: estimation samples per image. alpha: failure
            probability of the certificate.
        batch_size: noisy images per forward. images_per_batch: images certified together.
        seed: the noise.

    Returns:
        One row per image: ``label, prediction`` (-1: abstain), ``count`` (n_A), ``p_lower``,
        ``radius`` (0 when abstaining), ``correct`` (prediction == label).
    """
    for key, value in (("n0", n0), ("n", n), ("batch_size", batch_size),
                       ("images_per_batch", images_per_batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    device = next(iter(model.parameters())).device
    xf = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    g = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    rows = []
    try:
        bar = tqdm(range(0, xf.shape[0], images_per_batch), desc=f"certify sigma={sigma}",
                   disable=not progress, leave=False)
        for start in bar:
            xb = xf[start:start + images_per_batch].to(device)
            num_classes = model(xb[:1]).shape[1]
            guess = _counts(model, xb, n0, sigma, num_classes, batch_size, g).argmax(1)
            counts = _counts(model, xb, n, sigma, num_classes, batch_size, g)
            n_a = counts.gather(1, guess[:, None]).squeeze(1).cpu()
            for i in range(xb.shape[0]):
                p_lower = lower_confidence_bound(int(n_a[i]), n, alpha)
                radius = certified_radius(p_lower, sigma)
                pred = int(guess[i]) if p_lower > 0.5 else ABSTAIN
                label = int(y[start + i])
                rows.append({"label": label, "prediction": pred, "count": int(n_a[i]),
                             "p_lower": p_lower, "radius": radius, "correct": pred == label})
    finally:
        model.train(was_training)
    return pd.DataFrame(rows)


def certified_accuracy(table: pd.DataFrame, radii: Sequence[float]) -> pd.DataFrame:
    """Certified accuracy (%) at each radius: images certified correct with radius >= r."""
    return pd.DataFrame([
        {"radius": float(r),
         "certified_acc": 100.0 * float((table["correct"] & (table["radius"] >= r)).mean())}
        for r in radii
    ])


def certified_accuracy_curves(
    models: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    radii: Sequence[float],
    *,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, pd.DataFrame]:
    """``certified_accuracy`` at ``radii`` of every model smoothed with ``sigma``, each certified
    on the same images with the same seed (``certify``): label -> ``radius, certified_acc``."""
    return {label: certified_accuracy(
        certify(model, x, y, sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed, progress=progress),
        radii) for label, model in models.items()}


def certified_accuracy_table(curves: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``certified_accuracy_curves`` as one table: a row per model, a column ``r=<radius>`` per
    radius (MaxUp Table 6 layout)."""
    table = pd.DataFrame({k: c.set_index("radius")["certified_acc"]
                          for k, c in curves.items()}).T
    table.columns = [f"r={r:g}" for r in table.columns]
    return table
