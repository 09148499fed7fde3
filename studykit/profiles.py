"""Profiles: the scale a study runs at, as named tables of values in one place.

``smoke``: CI; seconds per notebook on 2 CPU cores; tiny synthetic data and model.
``quick``: minutes per notebook on a laptop CPU (seconds on a GPU); the embedded synthetic
set, a small CNN, a few epochs: enough to show each paper's effect qualitatively.
``paper``: GPU; CIFAR-10 and the papers' architectures, epochs and hyperparameters.

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
        "arch": "small_cnn",
        "width": None,
        "epochs": 15,
        "batch_size": 128,
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
    "smoke": {"augmax": {"steps": 2}, "pgd_at": {"steps": 2}, "advmax": {"steps": 2, "k": 2},
              "advmix": {"k": 2}, "augmix_pgdat": {"pgd_steps": 2}, "robust_augmix": {"steps": 2},
              "ada": {"steps": 1, **_SMALL_NET["smoke"]}, "deepaugment": _SMALL_NET["smoke"]},
    # PGD-AT trains clean for the first 30% of the quick budget, then ramps eps over the next
    # 30%: at full 8/255 from the first step a 15-epoch small CNN stays at chance (10.8% SA),
    # with a ramp from step 0 it reached 23% SA, with this warm start 36% (synthetic data).
    "quick": {"augmax": {"steps": 5}, "pgd_at": {"steps": 5, "eps_delay": 0.3, "eps_ramp": 0.3},
              "advmax": {"steps": 5}, "augmix_pgdat": {"pgd_steps": 5},
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
