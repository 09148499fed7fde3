"""Leaderboard models beside ours: published CIFAR checkpoints from RobustBench's model zoo,
loaded by their zoo names and put through the kit's own evaluation.

A zoo model arrives as a read-only run in the store, ``runs/<dataset>/zoo/<name>-<threat>/``:
its ``config.json`` says where it came from (zoo name, threat model, paper, architecture) and
its evaluations are stored beside it exactly as for a trained run
(`studykit.run_evaluation.evaluate_run`). `load_zoo_run` returns an `ExperimentResult`, so
every notebook and comparison that takes one takes a zoo model too.

The weights are read from RobustBench's cache layout, ``<model_dir>/<dataset>/<threat>/<name>.pt``
(``model_dir``: ``$STUDYKIT_ZOO`` or ``models/`` of the project). Nothing is downloaded unless
``download=True``, which needs the optional ``robustbench`` package (``pip install
'studykit[zoo]'``) and the network; the architectures of the real entries come from that package
too. RobustBench models take images in [0, 1] and normalise inside, as the kit's models do.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from studykit.experiment import ExperimentResult, _load_data, resolve_config
from studykit.methods import create_method
from studykit.paths import project_root
from studykit.run_evaluation import evaluate_run
from studykit.runs import Run, read_json, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

THREAT_MODELS = ("corruptions", "Linf", "L2")
DATASETS = ("cifar10",)


class ZooError(OSError):
    """A zoo model that cannot be had here: not cached, or the robustbench package missing
    (printed by the command line as one line, exit status 1)."""


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo the kit knows.

    Attributes:
        name: its zoo name (``Hendrycks2020AugMix_WRN``).
        threat_model: corruptions, Linf or L2 (the leaderboard it is on).
        paper: the method it was trained with, as the kit's papers name it.
        arch: its architecture, in words.
        checkpoint: whether the zoo publishes its weights (some leaderboard entries have none).
        build: makes the untrained architecture; None: robustbench's own class.
    """

    name: str
    threat_model: str
    paper: str
    arch: str
    dataset: str = "cifar10"
    checkpoint: bool = True
    build: Callable[[], nn.Module] | None = None


_ZOO: dict[tuple[str, str, str], ZooEntry] = {}


def register_zoo_model(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the table (a model the zoo holds that the curated table lacks, or a
    stand-in with a kit architecture)."""
    if entry.threat_model not in THREAT_MODELS:
        raise ValueError(f"unknown threat_model {entry.threat_model!r}; choose one of: "
                         f"{', '.join(THREAT_MODELS)}")
    _ZOO[(entry.dataset, entry.threat_model, entry.name)] = entry
    return entry


for _e in (
    ZooEntry("Standard", "corruptions", "standard training", "WRN-28-10"),
    ZooEntry("Hendrycks2020AugMix_WRN", "corruptions", "AugMix", "WRN-40-2"),
    ZooEntry("Hendrycks2020AugMix_ResNeXt", "corruptions", "AugMix", "ResNeXt-29 32x4d"),
    ZooEntry("Kireev2021Effectiveness_AugMixNoJSD", "corruptions", "AugMix (no JSD)",
             "PreAct ResNet-18"),
    ZooEntry("Kireev2021Effectiveness_RLATAugMix", "corruptions",
             "AugMix + latent adversarial training", "PreAct ResNet-18"),
    ZooEntry("Calian2021Defending", "corruptions", "AdA", "PreAct ResNet-50",
             checkpoint=False),
    ZooEntry("Standard", "Linf", "standard training", "WRN-28-10"),
    ZooEntry("Engstrom2019Robustness", "Linf", "PGD-AT", "ResNet-50"),
    ZooEntry("Rice2020Overfitting", "Linf", "PGD-AT (early stopping)", "WRN-34-20"),
    ZooEntry("Standard", "L2", "standard training", "WRN-28-10"),
    ZooEntry("Engstrom2019Robustness", "L2", "PGD-AT", "ResNet-50"),
    ZooEntry("Rice2020Overfitting", "L2", "PGD-AT (early stopping)", "PreAct ResNet-18"),
):
    register_zoo_model(_e)


def list_zoo(threat_model: str | None = None, dataset: str = "cifar10") -> list[ZooEntry]:
    """The entries the kit knows, in table order (one threat model, or all)."""
    return [e for (d, t, _), e in _ZOO.items()
            if d == dataset and (threat_model is None or t == threat_model)]


def zoo_table(model_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per known entry: name, threat model, paper, architecture, and what loading it
    needs: ``cached`` (its checkpoint is in the zoo cache), ``network`` (a download first,
    with robustbench installed), or ``unavailable`` (the leaderboard lists it, the zoo
    publishes no weights)."""
    def needs(e: ZooEntry) -> str:
        if not e.checkpoint:
            return "unavailable"
        return "cached" if zoo_checkpoint_path(e, model_dir).is_file() else "network"

    rows = [{"name": e.name, "threat_model": e.threat_model, "dataset": e.dataset,
             "paper": e.paper, "arch": e.arch, "needs": needs(e)} for e in _ZOO.values()]
    return pd.DataFrame(rows)


def get_zoo_entry(name: str, threat_model: str = "corruptions",
                  dataset: str = "cifar10") -> ZooEntry:
    """The entry of ``name`` on ``threat_model``'s leaderboard; a `ValueError` naming the
    known ones otherwise."""
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"unknown threat_model {threat_model!r}; choose one of: "
                         f"{', '.join(THREAT_MODELS)}")
    if dataset not in {d for d, _, _ in _ZOO}:
        raise ValueError(f"no zoo models for dataset {dataset!r}; choose one of: "
                         f"{', '.join(sorted({d for d, _, _ in _ZOO}))}")
    entry = _ZOO.get((dataset, threat_model, name))
    if entry is None:
        known = ", ".join(e.name for e in list_zoo(threat_model, dataset))
        raise ValueError(f"unknown zoo model {name!r} for threat model {threat_model}; "
                         f"choose one of: {known} ('studykit zoo list' shows them all)")
    return entry


def zoo_root() -> Path:
    """Where zoo checkpoints are cached: ``$STUDYKIT_ZOO`` or ``<project root>/models``."""
    return Path(os.environ.get("STUDYKIT_ZOO") or project_root() / "models")


def zoo_checkpoint_path(entry: ZooEntry, model_dir: str | os.PathLike | None = None) -> Path:
    """RobustBench's cache path of ``entry``: ``<model_dir>/<dataset>/<threat>/<name>.pt``."""
    base = Path(model_dir) if model_dir is not None else zoo_root()
    return base / entry.dataset / entry.threat_model / f"{entry.name}.pt"


def _robustbench_model(entry: ZooEntry) -> nn.Module:
    """robustbench's untrained architecture of ``entry``."""
    try:
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except ImportError as e:
        raise ZooError(f"zoo model {entry.name!r} needs the robustbench package for its "
                       f"architecture ({e}); install it with pip install 'studykit[zoo]'"
                       ) from e
    zoo = model_dicts[BenchmarkDataset(entry.dataset)][ThreatModel(entry.threat_model)]
    return zoo[entry.name]["model"]()


def state_dict_of(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The weights inside a zoo checkpoint: unwrapped from ``last`` (the final model of a
    ``last``/``best`` pair) and ``state_dict``, with ``module.`` and ``model.`` prefixes (a
    DataParallel or wrapper's) removed."""
    if isinstance(checkpoint, Mapping) and "last" in checkpoint and "best" in checkpoint:
        checkpoint = checkpoint["last"]
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise ZooError(f"a zoo checkpoint holds {type(checkpoint).__name__}, not weights")
    out = {}
    for key, value in checkpoint.items():
        for prefix in ("module.", "model."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def load_zoo_model(entry: ZooEntry, model_dir: str | os.PathLike | None = None,
                   download: bool = False) -> nn.Module:
    """The zoo model of ``entry`` with its published weights, in eval mode, on the CPU.

    Raises:
        ZooError: no published checkpoint; not cached (and ``download`` off) — naming the
            model and the path looked in; or robustbench missing where it is needed.
    """
    path = zoo_checkpoint_path(entry, model_dir)
    if not entry.checkpoint:
        raise ZooError(f"zoo model {entry.name!r} is on the {entry.threat_model} leaderboard "
                       "but the zoo publishes no checkpoint for it")
    if not path.is_file():
        if not download:
            raise ZooError(f"zoo model {entry.name!r} is not cached at {path}; put the "
                           "checkpoint there or pass download=True (studykit zoo eval --download; "
                           "needs the network and pip install 'studykit[zoo]')")
        try:
            from robustbench.utils import load_model
        except ImportError as e:
            raise ZooError(f"downloading zoo model {entry.name!r} needs the robustbench "
                           f"package ({e}); pip install 'studykit[zoo]'") from e
        log.info("downloading zoo model %s to %s", entry.name, path)
        base = Path(model_dir) if model_dir is not None else zoo_root()
        return load_model(entry.name, model_dir=base, dataset=entry.dataset,
                          threat_model=entry.threat_model).eval()
    model = entry.build() if entry.build is not None else _robustbench_model(entry)
    try:
        # Weights only: a pickle holding objects (code) is refused, never executed; the one
        # object some zoo checkpoints carry beside their weights, their training arguments
        # (an argparse.Namespace), is allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ZooError(f"zoo checkpoint {path} of {entry.name!r} holds more than weights, and "
                       "studykit loads weights only; save its state_dict with torch.save and "
                       "put that file there instead") from e
    except (OSError, EOFError, RuntimeError) as e:
        raise ZooError(f"zoo checkpoint {path} of {entry.name!r} cannot be read "
                       f"({' '.join(str(e).split())[:200]}); delete it and download it again"
                       ) from e
    try:
        model.load_state_dict(state_dict_of(checkpoint))
    except RuntimeError as e:
        raise ZooError(f"zoo checkpoint {path} does not fit the architecture of "
                       f"{entry.name!r}: {' '.join(str(e).split())[:300]}") from e
    return model.eval()


class ZooRun(Run):
    """A zoo model's place in the run store, ``<root>/<dataset>/zoo/<name>-<threat>/``: no
    checkpoint of its own (the weights stay in the zoo cache), never trained. ``DONE`` holds
    the digest of the weights, so new weights under the same name are evaluated afresh."""

    def __init__(self, config: Mapping[str, Any], root: str | os.PathLike | None = None) -> None:
        super().__init__(config, root)
        self.dir = self.dir.parent / f"{config['zoo_name']}-{config['threat_model']}"

    @property
    def is_done(self) -> bool:
        return self.done_marker.exists()

    def require_writable(self, what: str) -> None:
        raise ValueError(f"cannot {what} zoo model {self.config['zoo_name']!r}: a zoo run is "
                         "read-only (it holds published weights)")

    def record(self, weights_digest: str) -> None:
        """Write ``config.json`` and ``DONE`` when they are missing or name other weights."""
        if not (self.writable and self.done_stamp() != weights_digest):
            return
        from studykit.runs import environment_info

        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "config.json",
                          {"config": self.config, "hash": self.hash,
                           "environment": environment_info(), "source": "robustbench"})
        write_text_atomic(self.done_marker, weights_digest + "\n", "marker")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_zoo_run(name: str, threat_model: str = "corruptions", dataset: str = "cifar10",
                 *, model_dir: str | os.PathLike | None = None, download: bool = False,
                 **params: Any) -> ExperimentResult:
    """Load a zoo model and evaluate it as `run_experiment` evaluates a trained run.

    Args:
        name: its zoo name (`list_zoo` lists the known ones).
        threat_model: the leaderboard: corruptions, Linf or L2.
        dataset: the dataset whose test set it is evaluated on: its own (cifar10), or another
            of the same classes and image size (``npz:...``; synthetic, for tests).
        model_dir: the zoo cache (default `zoo_root`).
        download: fetch a missing checkpoint (needs robustbench and the network).
        **params: ``profile``, ``n_test``, ``data_seed``, the ``eval_*`` settings and the
            runtime keys of `run_experiment` (``device``, ``progress``, ``runs_root``).

    Returns:
        An `ExperimentResult` whose ``run`` is the zoo run, ``method`` standard (the model is
        evaluated as it is), ``history`` empty and ``trained`` False.
    """
    # A dataset the zoo has no models for (synthetic, an npz file) is evaluated with the
    # CIFAR-10 models; their classes must match (checked below).
    entry = get_zoo_entry(name, threat_model, dataset if dataset in DATASETS else "cifar10")
    eval_dataset = dataset
    training = {"arch", "width", "method", "epochs", "batch_size", "lr", "paper",
                "n_train"} & set(params)
    if training:
        raise ValueError(f"zoo model {name!r} is not trained here: drop {sorted(training)} "
                         "(allowed: profile, n_test, data_seed, eval_*, device, progress, "
                         "runs_root)")
    params.setdefault("profile", "quick")
    cfg = resolve_config(dataset=eval_dataset, **params)
    model = load_zoo_model(entry, model_dir, download)
    weights = zoo_checkpoint_path(entry, model_dir)
    train = {"dataset": eval_dataset, "method": "zoo", "arch": entry.arch,
             "zoo_name": entry.name, "threat_model": entry.threat_model, "paper": entry.paper,
             "zoo_dataset": entry.dataset, "source": "robustbench model zoo",
             "n_train": cfg["train"]["n_train"], "n_test": cfg["train"]["n_test"],
             "data_seed": cfg["train"]["data_seed"], "seed": None, "epochs": None,
             "width": None}
    cfg = {**cfg, "train": train}
    ds = _load_data(train, cfg["runtime"])
    classes = {"cifar10": 10}[entry.dataset]
    if ds.num_classes != classes:
        raise ValueError(f"zoo model {name!r} tells {classes} classes apart, dataset "
                         f"{eval_dataset!r} has {ds.num_classes}; evaluate it on {entry.dataset}")
    run = ZooRun(train, root=cfg["runtime"]["runs_root"])
    run.record(_file_digest(weights))
    model = model.to(cfg["runtime"]["device"]).eval()
    method = create_method("standard")
    metrics, corr, adv, hits = evaluate_run(run, cfg, model, method, ds)
    return ExperimentResult(cfg, run, model, method, ds, pd.DataFrame(), metrics, corr, adv,
                            False, hits)


def zoo_run_config(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The stored config of a zoo run folder (None when it is not one)."""
    stored = read_json(Path(run_dir) / "config.json")
    cfg = stored.get("config") if isinstance(stored, dict) else None
    return cfg if isinstance(cfg, dict) and cfg.get("method") == "zoo" else None
