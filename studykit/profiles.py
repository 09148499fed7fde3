"""Profiles: the scale a study runs at, as named tables of values in one place.

``smoke``: CI; seconds per notebook on 2 CPU cores; tiny synthetic data and model.
``quick``: minutes per notebook on a laptop CPU (seconds on a GPU); the embedded synthetic
set, a small CNN (width 8), 8 epochs: the whole series in under an hour on 2 CPU cores.
``paper``: GPU; CIFAR-10 and the papers' architectures, epochs and hyperparameters: the
profile's own values are the common recipe (``bench``: ResNet-18, 200 epochs, cosine), and
`recipe` gives each paper's own (``recipe("paper", "maxup")``: ResNet-110, MaxUp's steps).

Each value can be overridden per call; a notebook's ``parameters`` cell names only the profile.
``METHOD_OVERRIDES`` holds the few method options a profile changes to fit its budget (the
``paper`` profile changes none: every method's Config defaults are the paper's values).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

_PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "dataset": "synthetic",
        "n_train": 512,
        "n_test": 256,
        "arch": "small_cnn",
        "width": 8,
        "epochs": 1,
        "batch_size": 128,
        "lr": 0.1,
        "warmup_epochs": 0.0,
        "eval_corruption_images": None,
        "eval_adversarial_images": 64,
        "gallery_images": 2,
        "certify_images": 8,
        "certify_n0": 10,
        "certify_n": 100,
        "download": False,
    },
    "quick": {
        "dataset": "synthetic",
        "n_train": 10_000,
        "n_test": 2_000,
        # Sized so the whole series (00-08) runs in under an hour on 2 CPU cores (two notebooks
        # at a time). The standard run on the synthetic set reaches about 53 % clean accuracy
        # this way; width 16 and 15 epochs of batch 128 reach 64 % at about 4x the cost, width 8
        # and 8 epochs of batch 128 only 44 %.
        "arch": "small_cnn",
        "width": 8,
        "epochs": 8,
        "batch_size": 64,
        "lr": 0.1,
        "warmup_epochs": 1.0,
        "eval_corruption_images": None,
        "eval_adversarial_images": 500,
        "gallery_images": 3,
        # 100 images x (50 + 500) noisy forwards per smoothed model keeps notebook 05 inside
        # its 10 minutes (200 x 1,050 took 70 s of its 631); n = 500 caps the certifiable
        # radius at sigma * Phi^-1(0.001^(1/500)) = 0.55 for sigma 0.25 (n = 1,000: 0.62).
        "certify_images": 100,
        "certify_n0": 50,
        "certify_n": 500,
        "download": False,
    },
    "paper": {
        "dataset": "cifar10",
        "n_train": None,
        "n_test": None,
        "arch": "resnet18",
        "width": None,
        "epochs": 200,
        "batch_size": 256,
        "lr": 0.1,
        "warmup_epochs": 0.0,
        "eval_corruption_images": None,
        "eval_adversarial_images": 1_000,
        "gallery_images": 3,
        "certify_images": 500,
        "certify_n0": 100,  # Cohen et al. / MaxUp Table 6: n0 = 100, n = 100,000, alpha 0.001
        "certify_n": 100_000,
        "download": True,  # fetch CIFAR-10 when it is missing (studykit fetch)
    },
}

PROFILES = MappingProxyType({k: MappingProxyType(v) for k, v in _PROFILES.items()})

# The corruption network of AdA and DeepAugment at the small profiles: its per-example forward
# and backward cost more than the small CNN's on 2 CPU cores.
_SMALL_NET = {"smoke": {"net_channels": 4, "net_blocks": 1, "net_epochs": 1},
              # 4 epochs at lr 3e-3: PSNR 35 dB, SSIM 0.96 on test images (2 at 1e-3: 26 dB, 0.82)
              "quick": {"net_channels": 8, "net_blocks": 1, "net_epochs": 4, "net_lr": 3e-3}}

# On 2 CPU cores the inner maximizations dominate (AugMax 10 steps: ~13x a standard step;
# PGD-10: ~11x); the smoke and quick profiles halve or cut them. Noted in every run's config.
_METHOD_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {"augmax": {"steps": 2}, "pgd_at": {"steps": 2},
              "advmax": {"steps": 2, "k": 2, "stadv_steps": 2},
              "advmix": {"k": 2}, "augmix_pgdat": {"pgd_steps": 2}, "robust_augmix": {"steps": 2},
              "ada": {"steps": 1, **_SMALL_NET["smoke"]}, "deepaugment": _SMALL_NET["smoke"]},
    # PGD-AT trains clean for the first 30% of the quick budget, then ramps eps over the next
    # 30%: at full 8/255 from the first step a 15-epoch width-16 small CNN stays at chance
    # (10.8% SA), with a ramp from step 0 it reached 23% SA, with this warm start 36%
    # (synthetic data).
    "quick": {"augmax": {"steps": 5}, "pgd_at": {"steps": 5, "eps_delay": 0.3, "eps_ramp": 0.3},
              "advmax": {"steps": 5, "stadv_steps": 5}, "augmix_pgdat": {"pgd_steps": 5},
              # RobustAugMix: 3 L2 PGD steps of 2.5 eps / 3 instead of 7 of 2.5 eps / 7.
              "robust_augmix": {"steps": 3},
              # AdA: 1 FGSM step instead of 10 (AdA-10 costs ~25 standard steps here, AdA-1 ~5);
              # a step of a quarter of the median radius already takes the large blocks to the
              # sphere. Both use an 8-channel, 1-block corruption net (EDSR-baseline: 64 x 16).
              "ada": {"steps": 1, **_SMALL_NET["quick"]}, "deepaugment": _SMALL_NET["quick"]},
    "paper": {},
}
METHOD_OVERRIDES = MappingProxyType(
    {k: MappingProxyType(v) for k, v in _METHOD_OVERRIDES.items()}
)


def method_overrides(profile: str, method: str) -> dict[str, Any]:
    """The options ``profile`` sets for ``method`` (empty for most)."""
    get_profile(profile)
    return dict(METHOD_OVERRIDES[profile].get(method, {}))


def list_profiles() -> list[str]:
    return list(PROFILES)


def get_profile(name: str, **overrides: Any) -> dict[str, Any]:
    """The profile's values as a new dict, with ``overrides`` applied (each must be a known key)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    values = dict(PROFILES[name])
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ValueError(
            f"unknown profile key(s) {unknown}; allowed: {', '.join(sorted(values))}"
        )
    values.update(overrides)
    return values


# --------------------------------------------------------------------------------------------
# Recipes: what a paper's study trains with
# --------------------------------------------------------------------------------------------
# The training keys a recipe sets. Defaults of the keys a profile does not set: these equal
# ``studykit.experiment.TRAIN_KEYS`` (a test checks it; this floor cannot import that one).
RECIPE_KEYS = ("arch", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
               "schedule", "milestones", "warmup_epochs")
_RECIPE_DEFAULTS: dict[str, Any] = {"momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
                                    "schedule": "cosine", "milestones": (),
                                    "warmup_epochs": 0.0}

_BENCH = {"arch": "resnet18", "epochs": 200, "batch_size": 256, "lr": 0.1, "momentum": 0.9,
          "nesterov": False, "weight_decay": 5e-4, "schedule": "cosine", "milestones": (),
          "warmup_epochs": 0.0}

# Each paper's own CIFAR-10 recipe (issue 21). Where a paper is silent, the choice is named.
_PAPER_RECIPES: dict[str, dict[str, Any]] = {
    # One common recipe for every method (notebook 08's fair comparison): the paper profile's
    # own values.
    "bench": dict(_BENCH),
    # AugMax (Wang et al. 2021) and its code: ResNet-18 (WRN-40-2, ResNeXt-29 as options), SGD
    # lr 0.1 cosine, 200 epochs, batch 256, weight decay 5e-4 (the code's default), momentum
    # 0.9 without Nesterov, no warm-up: the bench recipe itself.
    "augmax": dict(_BENCH),
    # RobustAugMix: WRN-50-2, 100 epochs, batch 128, SGD Nesterov, lr 0.1 cosine. Silent on
    # weight decay and warm-up: 5e-4 (AugMix's CIFAR recipe, which it extends) and none.
    "robust_augmix": {**_BENCH, "arch": "wrn50_2", "epochs": 100, "batch_size": 128,
                      "nesterov": True},
    # MaxUp (Gong et al. 2021), CIFAR-10 Cutout: ResNet-110 (PreAct-ResNet-110, WRN-28-10 as
    # options), 200 epochs, batch 256, lr 0.1 / 10 at epochs 100 and 150, weight decay 2.5e-4,
    # momentum 0.9. Its 5 plain epochs first are the method's ``warmup`` option (5/200), not
    # an lr warm-up.
    "maxup": {**_BENCH, "arch": "resnet110", "weight_decay": 2.5e-4, "schedule": "multistep",
              "milestones": (100, 150)},
    # MaxUp+Gauss (certified robustness, after Cohen et al.'s ResNet-110): lr 0.1 / 10 every 50
    # epochs over 150; the rest as ``maxup``.
    "maxup_gauss": {**_BENCH, "arch": "resnet110", "epochs": 150, "weight_decay": 2.5e-4,
                    "schedule": "multistep", "milestones": (50, 100)},
    # AdA (Calian et al. 2022): pre-activation ResNet-50 with the 3x3 stem, 300 epochs, batch
    # 256, SGD Nesterov momentum 0.9, weight decay 1e-4, cosine to 0 after 5 linear warm-up
    # epochs, lr 0.1 x max(1, batch / 256) (rescaled when the batch size is overridden).
    "ada": {**_BENCH, "arch": "preact_resnet50", "epochs": 300, "nesterov": True,
            "weight_decay": 1e-4, "warmup_epochs": 5.0},
    # AdvBN (Shu et al. 2021) fine-tunes a pretrained model: 20 epochs, lr 0.001 / 10 after 10,
    # batch 256, momentum 0.9, weight decay 1e-4 (the method's ``finetune_schedule``), from the
    # stored standard run of the same architecture. The paper's ImageNet ResNet-50 becomes the
    # CIFAR ResNet-18 of the bench recipe, so the base is the bench standard run.
    "advbn": {**_BENCH, "epochs": 20, "lr": 1e-3, "weight_decay": 1e-4, "schedule": "multistep",
              "milestones": (10,)},
}
PAPER_RECIPES = MappingProxyType({k: MappingProxyType(v) for k, v in _PAPER_RECIPES.items()})

# Papers whose lr scales with the batch: lr x max(1, batch_size / base batch).
_LR_SCALED = {"ada": 256}


def list_recipes() -> list[str]:
    """The papers `recipe` knows."""
    return list(PAPER_RECIPES)


def recipe(profile: str, paper: str | None = None, *,
           batch_size: int | None = None) -> dict[str, Any]:
    """The training recipe of ``paper``'s study at ``profile``.

    At the ``paper`` profile it is the paper's own CIFAR-10 recipe (`PAPER_RECIPES`: arch,
    epochs, batch size, SGD momentum and Nesterov, lr, schedule and its milestones, warm-up,
    weight decay); at ``smoke`` and ``quick`` it is the profile's own values whatever the paper
    (these profiles keep their budget). ``paper=None`` is the profile's own values everywhere.

    Args:
        profile: a profile name.
        paper: one of `list_recipes` (``bench``, ``augmax``, ``robust_augmix``, ``maxup``,
            ``maxup_gauss``, ``ada``, ``advbn``), or None.
        batch_size: a batch size to use instead of the recipe's; AdA's lr follows it
            (0.1 x max(1, batch_size / 256)).

    Returns:
        A new dict with the keys `RECIPE_KEYS`; ``milestones`` is a tuple of epochs.

    Raises:
        ValueError: for an unknown profile or paper.
    """
    prof = get_profile(profile)
    if paper is not None and paper not in PAPER_RECIPES:
        raise ValueError(f"unknown paper {paper!r}; choose one of: {', '.join(PAPER_RECIPES)}")
    if profile == "paper" and paper is not None:
        out = dict(PAPER_RECIPES[paper])
    else:
        out = {k: prof.get(k, _RECIPE_DEFAULTS.get(k)) for k in RECIPE_KEYS}
    if batch_size is not None:
        out["batch_size"] = batch_size
    if profile == "paper" and paper in _LR_SCALED:
        out["lr"] = out["lr"] * max(1.0, out["batch_size"] / _LR_SCALED[paper])
    out["milestones"] = tuple(out["milestones"])
    return out
