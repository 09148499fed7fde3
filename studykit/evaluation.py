"""Evaluation: clean accuracy, corruption accuracy per (corruption, severity), RA, mCE, and
adversarial accuracy vs epsilon, each returned as tables keyed by name (never by position).

Conventions (METHODS.md, "Evaluation conventions"):
  * RA = mean accuracy over the 15 benchmark corruptions x 5 severities.
  * CIFAR "mCE" = 100 - RA (no AlexNet normalization; AdA reports this).
  * Normalized mCE = per corruption, the sum over severities of the model's errors divided by a
    baseline model's, averaged over corruptions, in percent (ImageNet-C style; the baseline is the
    user's choice, e.g. a standard model of the same study).
Models are evaluated in eval mode; their train/eval mode is restored afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from studykit import attacks
from studykit.corruptions import BENCHMARK_CORRUPTIONS, list_corruptions
from studykit.data import ImageDataset, load_corrupted
from studykit.devices import model_device
from studykit.paths import data_root

log = logging.getLogger(__name__)

SEVERITIES = (1, 2, 3, 4, 5)



# Images per evaluation forward. On 2 CPU cores batches of 256 in channels_last order run the
# small CNN 1.9x and ResNet-18 1.45x faster than batches of 500 in NCHW order, with the same
# predictions (benchmarks/eval_throughput.py).
EVAL_BATCH = 256


@torch.no_grad()
def correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = EVAL_BATCH
) -> torch.Tensor:
    """Per-image outcome of ``model`` (in eval mode) on images ``x``: True where the top-1
    prediction is the label. The paired statistics of `studykit.claims` resample these.

    Args:
        model: classifier taking [0, 1] images.
        x: uint8 images (converted per batch) or float images in [0, 1], on any device.
        y: labels.
        batch_size: images per forward (each batch goes in channels_last order).

    Returns:
        Bool tensor on the CPU.

    Shape:
        - x: :math:`(N, 3, H, W)`, y: :math:`(N,)`, output: :math:`(N,)`
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    hits = [torch.zeros(0, dtype=torch.bool)]
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(device)
            if xb.dtype == torch.uint8:
                xb = xb.float().div_(255)
            if xb.ndim == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            hits.append((model(xb).argmax(1) == y[i : i + batch_size].to(device)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(hits)


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = EVAL_BATCH
) -> float:
    """Top-1 accuracy (%) of ``model`` (in eval mode) on images ``x`` (see :func:`correct`)."""
    hits = correct(model, x, y, batch_size=batch_size)
    return 100.0 * int(hits.sum()) / max(x.shape[0], 1)


def clean_accuracy(model: nn.Module, dataset: ImageDataset, *,
                   batch_size: int = EVAL_BATCH) -> float:
    """Accuracy (%) on the dataset's test set."""
    return accuracy(model, dataset.x_test, dataset.y_test, batch_size=batch_size)


def corruption_table(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    corruptions: Sequence[str] | str = "benchmark",
    severities: Sequence[int] = SEVERITIES,
    root: str | None = None,
    seed: int = 0,
    batch_size: int = EVAL_BATCH,
    progress: bool = True,
    outcomes: dict[str, torch.Tensor] | None = None,
) -> pd.DataFrame:
    """Accuracy per (corruption, severity) on the dataset's (possibly subset) test set.

    Corrupted test sets come from the released CIFAR-10-C/100-C files when present, else are
    generated once and cached (see ``studykit.data.load_corrupted``).

    Args:
        model: classifier taking [0, 1] images.
        dataset: its test images are corrupted.
        corruptions: names, or ``"benchmark"`` | ``"extra"`` | ``"all"``.
        severities: subset of 1..5.
        root: data root (default the project's ``data/``).
        seed: seed of the generated corruptions.
        batch_size: images per forward.
        progress: tqdm bars over (corruption, severity) and over a set being generated.
        outcomes: when given, filled with each set's per-image outcome (:func:`correct`) under
            the key ``"<corruption>/<severity>"``.

    Returns:
        Columns ``corruption, severity, accuracy, source`` (one row per pair).
    """
    names = list_corruptions(corruptions) if isinstance(corruptions, str) else list(corruptions)
    root = root if root is not None else data_root()
    rows = []
    pairs = [(n, s) for n in names for s in severities]
    for name, sev in tqdm(pairs, desc="corruptions", leave=False, disable=not progress):
        cs = load_corrupted(dataset, name, sev, root=root, seed=seed, progress=progress)
        hits = correct(model, cs.x, cs.y, batch_size=batch_size)
        if outcomes is not None:
            outcomes[f"{name}/{sev}"] = hits
        acc = 100.0 * int(hits.sum()) / max(cs.x.shape[0], 1)
        rows.append({"corruption": name, "severity": sev, "accuracy": acc, "source": cs.source})
    return pd.DataFrame(rows)


def robust_accuracy(
    table: pd.DataFrame, corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS
) -> float:
    """RA: mean accuracy over the given corruptions (default the 15 benchmark ones) x severities.

    Raises:
        ValueError: a requested corruption is missing from the table.
    """
    missing = sorted(set(corruptions) - set(table["corruption"]))
    if missing:
        raise ValueError(f"table lacks corruption(s) {missing}; cannot compute RA over them")
    return float(table[table["corruption"].isin(corruptions)]["accuracy"].mean())


def mean_corruption_error(
    table: pd.DataFrame, corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS
) -> float:
    """CIFAR mCE: 100 - RA (plain, unnormalized)."""
    return 100.0 - robust_accuracy(table, corruptions)


def _error_sums(table: pd.DataFrame, corruptions: Sequence[str], clean_acc: float = 100.0
                ) -> pd.Series:
    """Per corruption, the sum over severities of the error (%) minus the clean error
    ``100 - clean_acc`` (with the default 100: the plain error)."""
    t = table[table["corruption"].isin(corruptions)]
    return ((100.0 - t["accuracy"]) - (100.0 - clean_acc)).groupby(t["corruption"]).sum()


def _ratio_to_baseline(mine: pd.Series, base: pd.Series, corruptions: Sequence[str],
                       what: str) -> pd.Series:
    missing = sorted(set(corruptions) - set(mine.index) | set(corruptions) - set(base.index))
    if missing:
        raise ValueError(f"tables lack corruption(s) {missing}")
    base = base[list(corruptions)]
    if (base <= 0).any():
        raise ValueError(f"the baseline {what} on {list(base.index[base <= 0])}; "
                         "CE is undefined there")
    return 100.0 * mine[list(corruptions)] / base


def corruption_errors(
    table: pd.DataFrame,
    baseline: pd.DataFrame,
    corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS,
) -> pd.Series:
    """CE per corruption (%): sum_s err(model) / sum_s err(baseline) * 100, keyed by name."""
    return _ratio_to_baseline(_error_sums(table, corruptions), _error_sums(baseline, corruptions),
                              corruptions, "makes no error")


def normalized_mce(
    table: pd.DataFrame,
    baseline: pd.DataFrame,
    corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS,
) -> float:
    """ImageNet-C style mCE (%) against ``baseline``: the mean of ``corruption_errors``."""
    return float(corruption_errors(table, baseline, corruptions).mean())


def relative_mce(
    table: pd.DataFrame,
    clean_acc: float,
    baseline: pd.DataFrame,
    baseline_clean_acc: float,
    corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS,
) -> float:
    """Hendrycks & Dietterich's relative mCE (%) against ``baseline``: per corruption, the sum
    over severities of the model's error minus its clean error, divided by the same sum of the
    baseline's, averaged over corruptions. It measures how much accuracy a corruption costs,
    apart from how accurate the model is on clean images.

    Args:
        table, baseline: ``corruption_table`` outputs of the model and of the baseline.
        clean_acc, baseline_clean_acc: their clean accuracy (%) on the images the tables were
            measured on.

    Raises:
        ValueError: a corruption missing from a table, or one that costs the baseline nothing.
    """
    mine = _error_sums(table, corruptions, clean_acc)
    base = _error_sums(baseline, corruptions, baseline_clean_acc)
    return float(_ratio_to_baseline(mine, base, corruptions, "loses no accuracy").mean())


def accuracy_by_severity(table: pd.DataFrame) -> pd.DataFrame:
    """Pivot: rows corruption, columns severity, values accuracy; plus a ``mean`` row."""
    piv = table.pivot(index="corruption", columns="severity", values="accuracy")
    order = [c for c in list_corruptions("all") if c in piv.index]
    piv = piv.loc[order]
    piv.loc["mean"] = piv.mean()
    return piv


def mean_accuracy_by_corruption(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Accuracy (%) per corruption averaged over severities, one column per table.

    Args:
        tables: label -> ``corruption_table`` output.

    Returns:
        Rows: the corruptions every table has (alphabetical); columns: the labels.
    """
    return pd.DataFrame({label: t.groupby("corruption")["accuracy"].mean()
                         for label, t in tables.items()}).dropna()


def accuracy_on_sets(models: Mapping[str, nn.Module], sets: Mapping[Any, torch.Tensor],
                     y: torch.Tensor, *, index: str = "set") -> pd.DataFrame:
    """Accuracy (%) of every model on every image set with the same labels ``y``.

    Args:
        models: label -> classifier.
        sets: key -> images (e.g. a test set shifted by m steps, keyed by m).
        y: the labels of every set.
        index: name of the index (the sets' keys).

    Returns:
        Rows: the sets' keys; columns: the models' labels.
    """
    return pd.DataFrame({label: [accuracy(model, x, y) for x in sets.values()]
                         for label, model in models.items()},
                        index=pd.Index(list(sets), name=index))


def evaluate_model(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    corruptions: Sequence[str] | str = "benchmark",
    sets: Mapping[str, torch.Tensor] | None = None,
    y: torch.Tensor | None = None,
    progress: bool = False,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Clean accuracy, RA and mCE over ``corruptions``, and accuracy on further image sets, of
    a model outside the run store (e.g. one routed to its auxiliary BN by ``bn_route``).

    Args:
        model: classifier taking [0, 1] images.
        dataset: its test set, clean and corrupted (``corruption_table``).
        corruptions: names, or ``"benchmark"`` | ``"extra"`` | ``"all"``; RA and mCE are over
            these.
        sets: name -> images, each with labels ``y``.
        y: labels of ``sets``.
        progress: tqdm bar over the corruptions.

    Returns:
        The row ``clean_acc, ra, mce`` and one accuracy per set, and the corruption table.
    """
    names = list_corruptions(corruptions) if isinstance(corruptions, str) else list(corruptions)
    table = corruption_table(model, dataset, corruptions=names, progress=progress)
    row = {"clean_acc": clean_accuracy(model, dataset), "ra": robust_accuracy(table, names),
           "mce": mean_corruption_error(table, names)}
    row.update({name: accuracy(model, x, y) for name, x in (sets or {}).items()})
    return row, table


def adversarial_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps_list: Sequence[float],
    norm: str = "linf",
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
    outcomes: dict[float, torch.Tensor] | None = None,
    **pgd_kwargs,
) -> pd.DataFrame:
    """Accuracy (%) under PGD at each eps, in eval mode.

    Args:
        model: classifier taking [0, 1] images.
        x: uint8 or float [0, 1] images.
        y: labels.
        eps_list: radii in [0, 1] pixel units (0 = clean).
        norm: ``linf`` or ``l2``.
        steps: PGD steps.
        seed: seeds the random starts.
        outcomes: when given, filled with each eps's per-image outcome (True: still correct).

    Returns:
        Columns ``norm, eps, steps, accuracy``.
    """
    xf = x.float().div(255) if x.dtype == torch.uint8 else x
    g = torch.Generator().manual_seed(seed)
    accs = attacks.adversarial_accuracy(
        model, xf, y, eps_list=list(eps_list), norm=norm, steps=steps, batch_size=batch_size,
        generator=g, progress=progress, outcomes=outcomes, **pgd_kwargs,
    )
    return pd.DataFrame(
        [{"norm": norm, "eps": float(e), "steps": steps, "accuracy": a} for e, a in accs.items()]
    )


def spatial_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, k: int = 10,
                    max_rotation: float = 30.0, max_translation: float = 3.0, seed: int = 0,
                    batch_size: int = 500) -> torch.Tensor:
    """Per-image outcome (bool, on the CPU) under the worst-of-k random spatial attack
    (rotation up to 30 degrees, translation up to 3 px; ``attacks.spatial_worst_of_k``): True
    where the model keeps the label on all k transforms. The attack and the scoring both run
    under `attacks.attack_mode`: eval mode, BN running statistics untouched, every submodule's
    mode restored afterwards, so a model handed over in train mode is scored as it would be in
    eval mode and comes back unchanged."""
    device = model_device(model)
    g = torch.Generator(device=device).manual_seed(seed)
    hits = [torch.zeros(0, dtype=torch.bool)]
    with attacks.attack_mode(model):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device)
            xb = xb.float().div(255) if xb.dtype == torch.uint8 else xb
            yb = y[start:start + batch_size].to(device)
            worst = attacks.spatial_worst_of_k(model, xb, yb, k=k, max_rotation=max_rotation,
                                               max_translation=max_translation, generator=g)
            with torch.no_grad():
                hits.append((model(worst).argmax(1) == yb).cpu())
    return torch.cat(hits)


def spatial_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     **kwargs: Any) -> float:
    """Accuracy (%) under the worst-of-k random spatial attack (:func:`spatial_correct`, which
    takes the same keyword arguments)."""
    hits = spatial_correct(model, x, y, **kwargs)
    return 100.0 * int(hits.sum()) / max(x.shape[0], 1)


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                        norm: str = "Linf", version: str = "standard",
                        attacks: list[str] | None = None, seed: int = 0,
                        batch_size: int = 500) -> float:
    """Accuracy (%) under AutoAttack (Croce and Hein 2020), a stronger check than PGD-10.

    Optional: needs the registry package ``pyautoattack`` (``pip install -e '.[autoattack]'``;
    its module is ``pyautoattack``). The original GitHub package (module ``autoattack``) works
    too. ``version="custom"`` with ``attacks`` (e.g. ``["apgd-ce", "apgd-t"]``) runs a subset.

    Args:
        model: classifier taking images in [0, 1]; evaluated in eval mode, its mode restored.
        x: uint8 (0-255) or float ([0, 1]) images. y: labels.
        eps: radius in [0, 1] pixel units. norm: ``Linf``, ``L2`` or ``L1``.

    Shape:
        x: (N, C, H, W); y: (N,).
    """
    try:
        from pyautoattack import AutoAttack
        registry_api = True
    except ImportError:
        try:
            from autoattack import AutoAttack
            registry_api = False
        except ImportError:
            raise ImportError("AutoAttack needs the optional package pyautoattack: "
                              "pip install -e '.[autoattack]'") from None
    if norm not in ("Linf", "L2", "L1"):
        raise ValueError(f"unknown AutoAttack norm {norm!r}; choose one of: Linf, L2, L1")
    if (attacks is None) != (version != "custom"):
        raise ValueError("AutoAttack: pass attacks=[...] exactly when version='custom' "
                         f"(got version={version!r}, attacks={attacks!r})")
    device = model_device(model)
    # AutoAttack's targeted APGD views its inputs with .view(), which fails on a non-contiguous
    # batch (a slice along the width, a channels-last tensor): hand it contiguous copies.
    xf = (x.float().div(255) if x.dtype == torch.uint8 else x).to(device).contiguous()
    yd = y.to(device).contiguous()
    was_training = model.training
    model.eval()
    try:
        if registry_api:
            adversary = AutoAttack(model, norm=norm, eps=eps, version=version, attacks=attacks,
                                   device=device, seed=seed)
            x_adv, _ = adversary.run_standard_evaluation(xf, yd, batch_size=batch_size)
        else:
            adversary = AutoAttack(model, norm=norm, eps=eps, version=version, device=device,
                                   verbose=False, seed=seed)
            if attacks is not None:
                adversary.attacks_to_run = list(attacks)
            x_adv = adversary.run_standard_evaluation(xf, yd, bs=batch_size)
        with torch.no_grad():
            pred = torch.cat([model(b).argmax(1) for b in x_adv.to(device).split(batch_size)])
    finally:
        model.train(was_training)
    return 100.0 * float((pred == yd).float().mean())
