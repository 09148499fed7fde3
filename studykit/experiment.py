"""``run_experiment(**params)``: validate, resolve the profile, train or load from the run
store, evaluate, and return the model with its history and metrics.

Every parameter is checked before any work: an unknown key or a bad value raises a
``ValueError`` naming the allowed ones. The training part of the resolved config is hashed
(``studykit.runs``); asking again returns the stored run, an interrupted run resumes from its
last epoch, and a truncated or corrupt checkpoint is reported, moved aside and retrained.
Evaluation results are stored in the run folder under a hash of the evaluation settings, so
changing how a model is evaluated never retrains it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from studykit import distributed, models, preflight, profiles
from studykit.checks import (
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    ParamError,
    Range,
    check_value,
    describe_type,
)
from studykit.data import DeviceLoader, ImageDataset, list_datasets, load_dataset
from studykit.data.npz import npz_label
from studykit.methods import (
    Method,
    MethodContext,
    create_method,
    list_methods,
    method_config_fields,
)
from studykit.paths import data_root
from studykit.rng import derive_seed
from studykit.run_evaluation import evaluate_run
from studykit.runs import (
    Run,
    RunStore,
    config_hash,
)
from studykit.train import SCHEDULES, FitResult, TrainConfig, fit, train_or_load_run

log = logging.getLogger(__name__)

DEFAULT_EPS = {"linf": (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255), "l2": (0.0, 0.1, 0.25, 0.5, 1.0)}

# Keys of run_experiment besides the method's own options; a profile may set any of them
# (``studykit.profiles``), and None defaults must come from the profile.
TRAIN_KEYS: dict[str, Any] = {
    "dataset": None, "n_train": None, "n_test": None, "data_seed": 0,
    "arch": None, "width": None, "method": "standard",
    "epochs": None, "batch_size": None, "lr": None, "momentum": 0.9, "nesterov": False,
    "weight_decay": 5e-4, "schedule": "cosine", "warmup_epochs": 0.0, "seed": 0,
}
EVAL_KEYS: dict[str, Any] = {
    "eval_corruptions": "all",          # "benchmark" | "extra" | "all" | list of names | None
    "eval_corruption_images": None,     # test images corrupted (None: the whole test set)
    "eval_adversarial": "linf",         # "linf" | "l2" | None
    "eval_eps": None,                   # tuple of eps (default DEFAULT_EPS[norm])
    "eval_adversarial_images": None,
    "eval_pgd_steps": 10,
}
# Bumped when evaluation changes what it computes, so stored evaluations are recomputed.

RUNTIME_KEYS: dict[str, Any] = {"profile": "quick", "device": "auto", "progress": True,
                                "runs_root": None, "download": False, "paper": None,
                                "sync_bn": False}


@dataclass
class ExperimentResult:
    """What ``run_experiment`` returns.

    Attributes:
        config: the resolved configuration (training, evaluation and runtime parts).
        run: the run store entry (``run.dir`` holds the files).
        model: the trained model, prepared by its method, in eval mode.
        method: the method instance (``method.eval_model(model)`` is what was evaluated).
        dataset: the dataset it was trained and evaluated on.
        history: per-epoch training history.
        metrics: ``clean_acc``, ``ra``, ``mce``, ``adv_acc@<eps>`` ...
        corruption: accuracy per (corruption, severity), or None.
        adversarial: accuracy per eps, or None.
        trained: whether this call trained (or resumed) the model rather than loading it.
        outcomes: per-image outcomes of the evaluation (`studykit.outcomes`): which test
            images the model gets right, clean, corrupted and attacked.
    """

    config: dict[str, Any]
    run: Run
    model: nn.Module
    method: Method
    dataset: ImageDataset
    history: pd.DataFrame
    metrics: dict[str, Any]
    corruption: pd.DataFrame | None
    adversarial: pd.DataFrame | None
    trained: bool
    outcomes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def eval_model(self) -> nn.Module:
        return self.method.eval_model(self.model)

    @property
    def clean_acc_for_corruptions(self) -> float:
        """Clean accuracy on the images the corruption table was measured on (accuracy drops
        and severity-0 points use this)."""
        return self.metrics.get("clean_acc_subset", self.metrics["clean_acc"])

    def summary(self) -> dict[str, Any]:
        """One flat row for comparison tables."""
        t = self.config["train"]
        row = {"method": t["method"], "arch": t["arch"], "dataset": npz_label(t["dataset"]),
               "seed": t["seed"], "epochs": t["epochs"]}
        row.update({k: v for k, v in self.metrics.items() if isinstance(v, (int, float))})
        return row


# Type and range of every key above (``studykit.checks``); dataset, arch, method, profile and
# eval_corruptions are checked against their registries in ``resolve_config``.
_SPECS: dict[str, tuple[Any, Range | None]] = {
    "dataset": (str, None), "n_train": (int | None, AT_LEAST_1),
    "n_test": (int | None, AT_LEAST_1), "data_seed": (int, NON_NEGATIVE), "arch": (str, None),
    "width": (int | None, AT_LEAST_1), "method": (str, None), "epochs": (int, AT_LEAST_1),
    "batch_size": (int, AT_LEAST_1), "lr": (float, POSITIVE),
    "momentum": (float, Range(0, 1, hi_open=True)), "nesterov": (bool, None),
    "weight_decay": (float, NON_NEGATIVE), "schedule": (str, None),
    "warmup_epochs": (float, NON_NEGATIVE), "seed": (int, NON_NEGATIVE),
    "eval_corruptions": (str | tuple[str, ...] | None, None),
    "eval_corruption_images": (int | None, AT_LEAST_1),
    "eval_adversarial": (str | None, None), "eval_eps": (tuple[float, ...] | None, NON_NEGATIVE),
    "eval_adversarial_images": (int | None, AT_LEAST_1),
    "eval_pgd_steps": (int, NON_NEGATIVE),
    "profile": (str, None), "device": (str, None), "progress": (bool, None),
    "runs_root": (str | os.PathLike | None, None), "download": (bool, None),
    "paper": (str | None, None), "sync_bn": (bool, None),
}
_CHOICES: dict[str, tuple] = {"schedule": SCHEDULES, "eval_adversarial": (None, *DEFAULT_EPS)}


def param_spec(key: str) -> tuple[str, str]:
    """(type, allowed values) of a ``run_experiment`` key as text, for ``studykit list params``
    (``studykit.checks.describe_field`` does the same for method options)."""
    tp, allowed = _SPECS[key]
    tp = describe_type(tp)
    registries = {"dataset": list_datasets,
                  "arch": models.list_models, "method": list_methods,
                  "profile": profiles.list_profiles,
                  "paper": lambda: ["None", *profiles.list_recipes()],
                  "eval_corruptions": lambda: ["benchmark", "extra", "all", "a list of names"],
                  "device": lambda: ["auto", "cpu", "cuda", "cuda:N"]}
    if key in registries:
        return tp, ", ".join(registries[key]())
    if key in _CHOICES:
        return tp, ", ".join(map(str, _CHOICES[key]))
    return tp, str(allowed) if allowed is not None else "any"


def check_params(params: Mapping[str, Any]) -> None:
    """Check the type and range of every ``run_experiment`` key in ``params``.

    Raises:
        ParamError: naming the key, the bad value and what is allowed.
    """
    for key, value in params.items():
        if key in _SPECS:
            tp, allowed = _SPECS[key]
            check_value(key, value, tp, allowed, _CHOICES.get(key))


@dataclass
class _Resolved:
    """A resolved configuration with the method built (once) to validate its options, and the
    resolved base run of a fine-tuning method."""

    cfg: dict[str, Any]
    method: Method
    base: _Resolved | None = None


def resolve_config(**params: Any) -> dict[str, Any]:
    """Validate ``params`` and fill the rest from the profile and the method's Config.

    Returns:
        ``{"train": {...}, "eval": {...}, "runtime": {...}}``; ``train`` is what gets hashed.

    Raises:
        ValueError: unknown key or bad value (naming the allowed ones).
    """
    return _resolve(**params).cfg


def _resolve(**params: Any) -> _Resolved:
    profile = params.get("profile", RUNTIME_KEYS["profile"])
    prof = profiles.get_profile(profile)
    method = params.get("method", TRAIN_KEYS["method"])
    method_fields = method_config_fields(method)  # raises for an unknown method
    allowed = set(TRAIN_KEYS) | set(EVAL_KEYS) | set(RUNTIME_KEYS) | set(method_fields)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown}; allowed: {', '.join(sorted(allowed))} "
            f"(method {method!r} options: {', '.join(sorted(method_fields)) or 'none'})"
        )

    # A paper's recipe (``paper="maxup"``): its values for the training keys not given
    # explicitly; at smoke and quick it is the profile's own values (``profiles.recipe``).
    paper = params.get("paper")
    if paper is not None and not isinstance(paper, str):
        raise ParamError(f"paper must be a name or None, got {paper!r}; choose one of: "
                         f"{', '.join(profiles.list_recipes())}")
    rec = (profiles.recipe(profile, paper, batch_size=params.get("batch_size"))
           if paper is not None else {})

    def pick(key: str, defaults: Mapping[str, Any]) -> Any:
        # An explicit parameter wins over the recipe, then the profile, then the default.
        if key in params:
            return params[key]
        if key in rec:
            return rec[key]
        return prof.get(key, defaults[key])

    train = {k: pick(k, TRAIN_KEYS) for k in TRAIN_KEYS}
    if rec and train["schedule"] == "multistep" and rec["milestones"]:
        # Only a recipe's multistep schedule adds the key, so other runs keep their hashes.
        train["milestones"] = list(rec["milestones"])
    ev = {k: pick(k, EVAL_KEYS) for k in EVAL_KEYS}
    runtime = {k: params.get(k, prof.get(k, v)) for k, v in RUNTIME_KEYS.items()}
    overrides = profiles.method_overrides(profile, method)
    overrides.update({k: params[k] for k in method_fields if k in params})
    # The method, built once: its Config checks its own values.
    method_obj = create_method(method, **overrides)
    train["method_config"] = method_obj.config.record()

    ds = train["dataset"]
    if not isinstance(ds, str) or not (ds in list_datasets() or ds.startswith("npz:")):
        raise ValueError(f"unknown dataset {ds!r}; choose one of: {', '.join(list_datasets())}")
    if train["arch"] not in models.list_models():
        raise ValueError(
            f"unknown arch {train['arch']!r}; choose one of: {', '.join(models.list_models())}"
        )
    if isinstance(ev["eval_eps"], (int, float)) and not isinstance(ev["eval_eps"], bool):
        ev["eval_eps"] = [ev["eval_eps"]]  # one eps given as a number
    check_params({**train, **ev, **runtime})
    base = _resolve_base(method_obj, train, params, prof)
    if train["nesterov"] and train["momentum"] == 0:
        raise ParamError("nesterov=True needs momentum > 0, got momentum=0")
    if ev["eval_adversarial"] is not None and ev["eval_eps"] is None:
        ev["eval_eps"] = DEFAULT_EPS[ev["eval_adversarial"]]
    if ev["eval_eps"] is not None:
        ev["eval_eps"] = [float(e) for e in ev["eval_eps"]]
    if ev["eval_corruptions"] is not None:
        from studykit.corruptions import list_corruptions

        c = ev["eval_corruptions"]
        names = list_corruptions(c) if isinstance(c, str) else list(c)
        bad = sorted(set(names) - set(list_corruptions("all")))
        if bad:
            raise ValueError(f"unknown corruption(s) {bad}; choose from: "
                             f"{', '.join(list_corruptions('all'))}")
        if not names:
            raise ParamError(f"eval_corruptions={c!r} names no corruption; give names, a group "
                             "(benchmark, extra, all) or None for no corruption evaluation")
    if runtime["device"] == "auto":
        runtime["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    runtime["device"] = distributed.local_device(runtime["device"])  # cuda:LOCAL_RANK
    distributed.check_batch_size(train["batch_size"])
    if runtime["sync_bn"]:  # only then in the hash: other runs keep theirs
        if torch.device(runtime["device"]).type != "cuda":
            raise ParamError(f"sync_bn=True needs a CUDA device, got device="
                             f"{runtime['device']!r}; use sync_bn=False on the CPU")
        train["sync_bn"] = True
    preflight.check_device(runtime["device"])
    preflight.check_data_size(train)
    cfg = {"train": train, "eval": ev, "runtime": runtime}
    if base is not None:
        cfg["base"] = base[0]
    return _Resolved(cfg, method_obj, base[1] if base is not None else None)


# Keys a fine-tuning run shares with its base run when given explicitly (the rest of the
# base's config comes from the profile, so it is the run the profile's notebooks train).
_BASE_SHARED = ("dataset", "n_train", "n_test", "data_seed", "arch", "width", "batch_size",
                "seed", "profile", "device", "progress", "runs_root", "download")


def _resolve_base(method: Method, train: dict[str, Any], params: Mapping[str, Any],
                  prof: Mapping[str, Any]) -> tuple[dict[str, Any], _Resolved] | None:
    """For a method that fine-tunes a base run (``method.finetunes``, e.g. advbn): its
    training settings (unless given explicitly) and the base run's parameters and resolution,
    whose hash becomes part of this run's config (``base_run``)."""
    if not method.finetunes:
        return None
    for key, value in method.finetune_schedule(prof["epochs"]).items():
        if key not in params:
            train[key] = value
    train["milestones"] = method.milestones(train["epochs"])
    base = {k: params[k] for k in _BASE_SHARED if k in params}
    if params.get("paper") is not None:
        base["arch"] = train["arch"]  # the recipe's arch: the standard run of the same network
    base["method"] = method.base_method
    resolved = _resolve(**base)
    train["base_run"] = config_hash(resolved.cfg["train"])
    return base, resolved


def _build_model(train: Mapping[str, Any], num_classes: int, method: Method) -> nn.Module:
    model = models.create_model(train["arch"], num_classes, width=train["width"])
    return method.prepare_model(model)


def _train_config(train: Mapping[str, Any]) -> TrainConfig:
    return TrainConfig(
        epochs=train["epochs"], lr=train["lr"], momentum=train["momentum"],
        nesterov=train["nesterov"], weight_decay=train["weight_decay"],
        schedule=train["schedule"], warmup_epochs=train["warmup_epochs"], seed=train["seed"],
        milestones=tuple(train.get("milestones", ())), sync_bn=train.get("sync_bn", False),
    )


def _fit(cfg: dict[str, Any], ds: ImageDataset, method: Method, data_key: str,
         checkpoint: Path) -> FitResult:
    train, rt = cfg["train"], cfg["runtime"]
    device = torch.device(rt["device"])
    loader = DeviceLoader(ds.x_train, ds.y_train, train["batch_size"], device=device,
                          train=True, seed=train["seed"], rank=distributed.rank(),
                          world_size=distributed.world_size())
    test_loader = DeviceLoader(ds.x_test, ds.y_test, 500, device=device, train=False)
    method.prepare(MethodContext(dataset=ds, data_key=data_key, device=device,
                                 store=RunStore(rt["runs_root"]), progress=rt["progress"]))
    torch.manual_seed(derive_seed(train["seed"], "init"))  # the initial weights: their own stream
    model = models.create_model(train["arch"], ds.num_classes, width=train["width"])
    return fit(model, method, loader, _train_config(train), device=device,
               test_loader=test_loader, checkpoint_path=checkpoint, progress=rt["progress"])


def data_fingerprint(ds: ImageDataset) -> str:
    """Short hash of a dataset's name, images and labels: a stored run is only reused for the
    data it was trained on (a changed generator or npz file makes it stale)."""
    h = hashlib.sha256(ds.name.encode())
    for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_or_load(cfg: dict[str, Any], ds: ImageDataset) -> tuple[Run, nn.Module, Method,
                                                                   pd.DataFrame, bool]:
    """The run store's core (``studykit.train.train_or_load_run``): the lock, a hit, a resume,
    or a fresh fit of the resolved config ``cfg`` on ``ds``.

    A finished run loads from a read-only store; training into one raises `RunStoreError`.
    A checkpoint, finished or not, is only used for the data it was trained on.
    """
    base = _resolve(**cfg["base"]) if "base" in cfg else None
    method = create_method(cfg["train"]["method"], **cfg["train"]["method_config"])
    return _train_or_load(_Resolved(cfg, method, base), ds, data_fingerprint(ds))


def _train_or_load(resolved: _Resolved, ds: ImageDataset, data_key: str
                   ) -> tuple[Run, nn.Module, Method, pd.DataFrame, bool]:
    cfg, method = resolved.cfg, resolved.method
    train, rt = cfg["train"], cfg["runtime"]
    # Before the run folder is touched: images enough for a step, of a size the model takes,
    # and memory for the model.
    preflight.check_model_size(train, ds.num_classes, torch.device(rt["device"]))
    preflight.check_dataset(train, ds)
    run = Run(train, root=rt["runs_root"])

    def load(state: dict[str, Any]) -> tuple[nn.Module, pd.DataFrame]:
        if any(h.get("train_loss") == 0 and h.get("train_acc") == 0 for h in state["history"]):
            # An epoch without a step (a loss and an accuracy of exactly 0: an older studykit
            # dropped the only, incomplete batch): an untrained model, never to be used.
            raise ValueError("it was marked done after an epoch that took no training step")
        if state["epoch"] != train["epochs"]:  # an earlier epoch's checkpoint put back
            raise ValueError(f"it is marked done but holds epoch {state['epoch']} of "
                             f"{train['epochs']}")
        model = _build_model(train, ds.num_classes, method)
        model.load_state_dict(state["model"])  # RuntimeError when the architecture changed
        method.load_state_dict(state["method"])
        log.info("loaded run %s (%s/%s)", run.hash, train["method"], train["arch"])
        return model.to(rt["device"]).eval(), pd.DataFrame(state["history"])

    def set_base() -> None:
        # A fine-tuning run's base: trained first when it is missing (same data).
        if resolved.base is not None:
            method.set_base(*_load_base(resolved.base, ds, data_key))

    def train_model(checkpoint: Path) -> tuple[tuple[nn.Module, pd.DataFrame], pd.DataFrame]:
        result = _fit(cfg, ds, method, data_key, checkpoint)
        return (result.model.eval(), result.history), result.history

    (model, history), trained = train_or_load_run(run, load=load, train=train_model,
                                                  data_key=data_key, before_training=set_base)
    return run, model, method, history, trained


def _load_base(base: _Resolved, ds: ImageDataset, data_key: str
               ) -> tuple[Method, dict[str, torch.Tensor]]:
    """The trained base run of a fine-tuning run (trained first when it is missing)."""
    log.info("fine-tuning needs the base run %s/%s", base.cfg["train"]["method"],
             config_hash(base.cfg["train"]))
    _, model, method, _, _ = _train_or_load(base, ds, data_key)
    return method, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _load_data(train: Mapping[str, Any], runtime: Mapping[str, Any]) -> ImageDataset:
    """The dataset at the configured size; an ``n_train``/``n_test`` larger than a file or
    CIFAR holds is a `ParamError` naming the key and the size available. With ``download``
    (the paper profile's default) a missing CIFAR set is fetched (``studykit.data.fetch``)."""
    name, seed = train["dataset"], train["data_seed"]
    if name == "synthetic":  # generated at exactly the requested size
        return load_dataset(name, data_root(), seed=seed, n_train=train["n_train"],
                            n_test=train["n_test"])
    try:
        full = load_dataset(name, data_root(), seed=seed)
    except FileNotFoundError:
        if not (runtime["download"] and name in ("cifar10", "cifar100")):
            raise
        from studykit.data.fetch import fetch

        log.info("%s is missing; fetching it (download=True)", name)
        fetch(name, data_root(), progress=runtime["progress"])
        full = load_dataset(name, data_root(), seed=seed)
    for key, have in (("n_train", full.x_train.shape[0]), ("n_test", full.x_test.shape[0])):
        if train[key] is not None and train[key] > have:
            raise ParamError(f"{key}={train[key]} is more than the {have} images {name} holds; "
                             f"use {key} <= {have} or {key}=None (all)")
    if train["n_train"] is None and train["n_test"] is None:
        return full
    return full.subset(train["n_train"], train["n_test"], seed=seed)


def run_experiment(**params: Any) -> ExperimentResult:
    """Train (or load) and evaluate one configuration.

    Args:
        **params: ``profile`` (smoke | quick | paper) and any of ``dataset, n_train, n_test,
            data_seed, arch, width, method, epochs, batch_size, lr, momentum, nesterov,
            weight_decay, schedule, warmup_epochs, seed``, the evaluation settings
            ``eval_corruptions, eval_corruption_images, eval_adversarial, eval_eps,
            eval_adversarial_images, eval_pgd_steps``, ``device`` ("auto", "cpu", "cuda"),
            ``progress``, ``runs_root``, ``paper`` (a paper's recipe, `studykit.profiles.recipe`:
            it sets the training keys not given explicitly; at smoke and quick it is the
            profile's own values), and the chosen method's Config options.

    Returns:
        An ``ExperimentResult``.
    """
    resolved = _resolve(**params)
    cfg = resolved.cfg
    distributed.setup(cfg["runtime"]["device"])  # under torchrun: join the process group
    # Under torchrun rank 0 fetches the data, then evaluates and stores the evaluation; the
    # other ranks wait for it, then read what it wrote.
    main = distributed.is_main()
    if not main:
        distributed.wait_for_main()
    ds = _load_data(cfg["train"], cfg["runtime"])
    if main:
        distributed.wait_for_main()
    run, model, method, history, trained = _train_or_load(resolved, ds, data_fingerprint(ds))
    if not main:
        distributed.wait_for_main()
    metrics, corr, adv, hits = evaluate_run(run, cfg, model, method, ds)
    if main:
        distributed.wait_for_main()
    return ExperimentResult(cfg, run, model, method, ds, history, metrics, corr, adv, trained,
                            hits)


def results_table(results: Sequence[ExperimentResult]) -> pd.DataFrame:
    """One row per result (method, arch, seed, clean, RA, mCE, adversarial accuracies)."""
    df = pd.DataFrame([r.summary() for r in results])
    first = ["method", "arch", "dataset", "seed", "epochs", "clean_acc", "clean_acc_subset", "ra",
             "mce"]
    adv = sorted((c for c in df.columns if c.startswith("adv_")),
                 key=lambda c: (c.split("@")[0], float(c.split("@")[1])))
    cols = [c for c in first if c in df.columns] + adv
    return df[cols + [c for c in df.columns if c not in cols]]


def run_dir_of(**params: Any) -> Path:
    """Where ``run_experiment(**params)`` stores (or would store) its run."""
    cfg = resolve_config(**params)
    return Run(cfg["train"], root=cfg["runtime"]["runs_root"]).dir
