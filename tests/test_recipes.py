"""Each paper's training recipe (`studykit.profiles.recipe`, issue 21): the table, what the
small profiles keep, how run_experiment applies one, and `studykit list recipes`."""

from __future__ import annotations

import pytest

from studykit import profiles
from studykit.cli import main
from studykit.experiment import TRAIN_KEYS, resolve_config
from studykit.models import list_models
from studykit.runs import config_hash
from studykit.train import TrainConfig, lr_at

# The table: (arch, epochs, batch, lr, nesterov, weight decay, schedule, milestones,
# warm-up epochs); momentum 0.9 everywhere.
TABLE = {
    "bench": ("resnet18", 200, 256, 0.1, False, 5e-4, "cosine", (), 0.0),
    "augmax": ("resnet18", 200, 256, 0.1, False, 5e-4, "cosine", (), 0.0),
    "robust_augmix": ("wrn50_2", 100, 128, 0.1, True, 5e-4, "cosine", (), 0.0),
    "maxup": ("resnet110", 200, 256, 0.1, False, 2.5e-4, "multistep", (100, 150), 0.0),
    "maxup_gauss": ("resnet110", 150, 256, 0.1, False, 2.5e-4, "multistep", (50, 100), 0.0),
    "ada": ("preact_resnet50", 300, 256, 0.1, True, 1e-4, "cosine", (), 5.0),
    "advbn": ("resnet18", 20, 256, 1e-3, False, 1e-4, "multistep", (10,), 0.0),
}
FIELDS = ("arch", "epochs", "batch_size", "lr", "nesterov", "weight_decay", "schedule",
          "milestones", "warmup_epochs")


@pytest.mark.parametrize("paper", sorted(TABLE))
def test_paper_recipes_match_the_table(paper):
    r = profiles.recipe("paper", paper)
    assert set(r) == set(profiles.RECIPE_KEYS)
    assert tuple(r[k] for k in FIELDS) == TABLE[paper]
    assert r["momentum"] == 0.9 and r["arch"] in list_models()


def test_bench_is_the_paper_profiles_own_values():
    assert profiles.recipe("paper", "bench") == profiles.recipe("paper", None)
    assert profiles.recipe("paper", "bench") == profiles.recipe("paper", "augmax")


@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_small_profiles_keep_their_own_values(profile):
    prof = profiles.get_profile(profile)
    for paper in [None, *profiles.list_recipes()]:
        r = profiles.recipe(profile, paper)
        assert {k: r[k] for k in ("arch", "epochs", "batch_size", "lr", "warmup_epochs")} == {
            k: prof[k] for k in ("arch", "epochs", "batch_size", "lr", "warmup_epochs")}
        assert r["schedule"] == "cosine" and r["milestones"] == ()


def test_recipe_defaults_equal_run_experiments():
    for key, value in profiles._RECIPE_DEFAULTS.items():
        if key != "milestones":
            assert TRAIN_KEYS[key] == value, key


def test_ada_lr_follows_the_batch_and_errors_name_the_papers():
    assert profiles.recipe("paper", "ada", batch_size=1024)["lr"] == pytest.approx(0.4)
    assert profiles.recipe("paper", "ada", batch_size=128)["lr"] == pytest.approx(0.1)
    assert profiles.recipe("paper", "maxup", batch_size=1024)["lr"] == 0.1
    with pytest.raises(ValueError, match="maxup_gauss"):
        profiles.recipe("paper", "cutout")


@pytest.mark.parametrize("profile, method", [("smoke", "standard"), ("smoke", "maxup"),
                                             ("quick", "maxup"), ("quick", "advbn"),
                                             ("paper", "augmax"), ("paper", "advbn")])
def test_a_recipe_that_changes_nothing_keeps_the_hash(profile, method):
    paper = {"augmax": "augmax", "advbn": "advbn"}.get(method, "maxup")
    if profile == "paper" and method == "advbn":
        paper = "advbn"
    plain = resolve_config(profile=profile, method=method, device="cpu")
    with_recipe = resolve_config(profile=profile, method=method, device="cpu", paper=paper)
    assert config_hash(with_recipe["train"]) == config_hash(plain["train"])
    assert with_recipe["runtime"]["paper"] == paper and plain["runtime"]["paper"] is None


def test_run_experiment_applies_the_recipe_under_explicit_keys():
    t = resolve_config(profile="paper", method="maxup", paper="maxup", device="cpu")["train"]
    assert (t["arch"], t["weight_decay"], t["schedule"], t["milestones"]) == (
        "resnet110", 2.5e-4, "multistep", [100, 150])
    cfg = TrainConfig(epochs=t["epochs"], lr=t["lr"], schedule=t["schedule"],
                      milestones=tuple(t["milestones"]))
    assert [lr_at(cfg, e * 10, 10) for e in (99, 100, 149, 150)] == pytest.approx(
        [0.1, 0.01, 0.01, 0.001])
    t = resolve_config(profile="paper", method="maxup", paper="maxup", arch="wrn28_10",
                       epochs=100, device="cpu")["train"]
    assert (t["arch"], t["epochs"], t["weight_decay"]) == ("wrn28_10", 100, 2.5e-4)
    t = resolve_config(profile="paper", method="ada", paper="ada", batch_size=512,
                       device="cpu")["train"]
    assert (t["lr"], t["warmup_epochs"], t["nesterov"]) == (0.2, 5.0, True)
    cfg = resolve_config(profile="paper", method="advbn", paper="advbn", device="cpu")
    assert cfg["train"]["milestones"] == [10.0] and cfg["base"]["arch"] == "resnet18"
    with pytest.raises(ValueError, match="robust_augmix"):
        resolve_config(profile="paper", paper="augmix", device="cpu")


def test_list_recipes(capsys):
    assert main(["list", "recipes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["paper", "arch", "epochs"]
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert set(rows) == set(TABLE)
    assert rows["maxup"][1:3] == ["resnet110", "200"] and "100,150" in rows["maxup"]
    assert main(["list", "recipes", "--profile", "quick"]) == 0
    assert all(" small_cnn " in line for line in capsys.readouterr().out.splitlines()[2:])


# Every notebook's trainings under its paper's recipe (paper=... at the paper profile):
# notebook -> (paper, [(method, options), ...]), the options each notebook passes.
NOTEBOOK_RUNS = {
    "01_baselines": ("augmax", [("standard", {}), ("augmix", {})]),
    "02_augmax_dubin": ("augmax", [
        ("standard", {}), ("augmix", {}), ("pgd_at", {}),
        *[("augmax", {"norm": n}) for n in ("bn", "dubn", "dubin", "ibn")],
        ("augmix", {"norm": "dubin"})]),
    "03_diversity_and_hardness": ("augmax", [
        ("augmix", {}), ("pgd_at", {}), ("augmix_pgdat", {}), ("advmix", {}), ("advmax", {}),
        ("augmax", {})]),
    "04_robust_augmix": ("robust_augmix", [
        ("standard", {}), ("augmix", {}), ("pgd_at", {"preset": "l2_1.0"}),
        ("robust_augmix", {})]),
    "05_maxup": ("maxup", [("standard", {}), ("maxup", {"augmentation": "cutout", "m": 4})]),
    "05_maxup (Gaussian)": ("maxup_gauss", [
        ("maxup", {"augmentation": "gauss", "m": 4, "sigma": 0.25})]),
    "06_adversarial_augment": ("ada", [
        ("standard", {}), ("deepaugment", {}), ("ada", {}), ("ada", {"augmix": "plain"})]),
    "07_advbn": ("advbn", [("advbn", {"base_method": "standard"})]),
}


def _one_step_cases() -> list:
    """One case per distinct (paper, method, options), with the notebooks that train it."""
    cases: dict[tuple, list[str]] = {}
    for notebook, (paper, runs) in NOTEBOOK_RUNS.items():
        for method, options in runs:
            key = (paper, method, tuple(sorted(options.items())))
            cases.setdefault(key, []).append(notebook.split()[0][:2])
    return [pytest.param(paper, method, dict(opts), id="-".join(
                [paper, method, *(f"{k}={v}" for k, v in opts), "nb" + "+".join(nbs)]),
                         marks=[pytest.mark.slow] if _slow_step(paper, method) else [])
            for (paper, method, opts), nbs in cases.items()]


def _slow_step(paper: str, method: str) -> bool:
    """Steps of 20-110 s on 2 busy CPU cores (--durations): every step through WRN-50-2
    (66.8M parameters; RobustAugMix and L2 PGD-AT: 7-10 attack steps), AdA's 10 search steps
    through the full-size corruption network and PreAct ResNet-50, and the 10-step attacks of
    AugMix+PGD-AT, AdvMax and PGD-AT on ResNet-18."""
    return paper == "robust_augmix" or (paper, method) in {
        ("ada", "ada"), ("augmax", "augmix_pgdat"), ("augmax", "advmax"), ("augmax", "pgd_at")}


# One training step of every method of every notebook under its paper's recipe, with the
# recipe's network at full width and depth and a batch of 4 8x8 images: the method's step and
# the paper's classifier fit together (BN conversions, AdvBN's cut, the corruption network on
# the classifier's input). AdA and DeepAugment get a freshly built corruption network of the
# Config's size in place of the pretrained one; AdvBN fine-tunes the untrained network in
# place of its base run (the base supplies initial weights only).
@pytest.mark.parametrize("paper, method, options", _one_step_cases())
def test_one_step_under_the_paper_recipe(paper, method, options):
    import torch

    from studykit.methods import create_method
    from studykit.models import create_model
    from studykit.nets.corruption_net import CorruptionNet

    cfg = resolve_config(profile="paper", paper=paper, method=method, device="cpu", **options)
    t = cfg["train"]
    resolved = {**t, "milestones": tuple(t.get("milestones", ()))}
    assert tuple(resolved[k] for k in FIELDS) == TABLE[paper]  # AdvBN's too, from its schedule
    torch.manual_seed(0)
    m = create_method(method, **t["method_config"])
    assert all(getattr(m.config, k) == v for k, v in options.items())
    if hasattr(m, "attach"):  # AdA, DeepAugment
        m.attach(CorruptionNet(m.config.net_channels, m.config.net_blocks))
    model = m.prepare_model(create_model(t["arch"], 10, width=t["width"])).train()
    opt = torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=t["momentum"],
                          nesterov=t["nesterov"], weight_decay=t["weight_decay"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # 8x8 images, but 16x16 where an SSIM guard needs room for its 11x11 window (AdA).
    side = 16 if getattr(m.config, "ssim_threshold", 0) > 0 else 8
    x, y = torch.rand(4, 3, side, side), torch.tensor([0, 1, 2, 3])
    m.set_progress(500, 1000)  # halfway: past every warm-up
    out = m.training_step(model, x, y)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert torch.isfinite(out.loss) and out.logits.shape == (4, 10)
    params = dict(model.named_parameters())
    moved = {n for n, p in params.items() if not torch.equal(p.detach(), before[n])}
    grads = {n for n, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and grads <= moved, sorted(grads - moved)[:5]
    frozen = {n for n, p in params.items() if not p.requires_grad}
    assert not frozen & moved  # AdvBN's encoder stays as the base run left it
    assert "fc.weight" in moved
