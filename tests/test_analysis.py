"""Tests of studykit.analysis: features, projections, BN statistics, divergence, SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import toy_batch

from studykit import analysis
from studykit.analysis import hardness
from studykit.models import create_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def _model(seed: int = 0, arch: str = "small_cnn") -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=5, width=8)
    # Non-trivial running statistics, so that eval mode differs from train mode.
    with torch.no_grad():
        model(torch.rand(16, 3, 16, 16))
    return model


def _images(n: int = 12, seed: int = 0, size: int = 16) -> torch.Tensor:
    return toy_batch(n, size=size, seed=seed)[0]


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --------------------------------------------------------------------------------------------
# penultimate
# --------------------------------------------------------------------------------------------
def test_penultimate_matches_features_in_eval_mode_and_restores_mode():
    model = _model()
    model.train()
    model.layer2.eval()  # a mixed state must come back as it was
    x = _images(10)
    feats = analysis.penultimate(model, x, batch_size=4)
    assert feats.shape == (10, model.fc.in_features)
    assert not feats.requires_grad
    assert model.training and model.layer1.training and not model.layer2.training
    model.eval()
    with torch.no_grad():
        expected = model.features(x)
    torch.testing.assert_close(feats, expected)


def test_penultimate_accepts_uint8():
    model = _model()
    x = (_images(6) * 255).round().to(torch.uint8)
    feats = analysis.penultimate(model, x)
    model.eval()
    with torch.no_grad():
        expected = model.features(x.float() / 255)
    torch.testing.assert_close(feats, expected)


# --------------------------------------------------------------------------------------------
# projections
# --------------------------------------------------------------------------------------------
def _random_weight(k: int = 5, d: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(k, d))


def test_template_plane_maps_templates_to_their_points():
    weight = _random_weight()
    classes = (3, 0, 4)
    proj = analysis.template_plane(weight[list(classes)], weight, classes)
    assert proj.coords.shape == (3, 2) and proj.templates.shape == (3, 2)
    np.testing.assert_allclose(proj.coords, proj.templates, atol=1e-10)
    # Origin at the first template, second template on the positive first axis.
    np.testing.assert_allclose(proj.templates[0], [0, 0], atol=1e-12)
    assert abs(proj.templates[1, 1]) < 1e-12 and proj.templates[1, 0] > 0
    assert proj.templates[2, 1] > 0
    # Distances between templates are preserved.
    t = weight[list(classes)]
    for i in range(3):
        for j in range(3):
            assert np.linalg.norm(proj.templates[i] - proj.templates[j]) == pytest.approx(
                np.linalg.norm(t[i] - t[j])
            )


def test_template_plane_preserves_in_plane_points_and_drops_the_rest():
    weight = _random_weight(d=9)
    classes = (1, 2, 3)
    t = weight[list(classes)]
    rng = np.random.default_rng(1)
    ab = rng.normal(size=(20, 2))
    in_plane = t[0] + ab[:, :1] * (t[1] - t[0]) + ab[:, 1:] * (t[2] - t[0])
    coords = analysis.template_plane(in_plane, weight, classes).coords
    d_feat = np.linalg.norm(in_plane[:, None] - in_plane[None], axis=-1)
    d_2d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.testing.assert_allclose(d_2d, d_feat, atol=1e-9)
    # Barycentric coordinates carry over: the map is affine.
    tp = analysis.template_plane(in_plane, weight, classes).templates
    expected = tp[0] + ab[:, :1] * (tp[1] - tp[0]) + ab[:, 1:] * (tp[2] - tp[0])
    np.testing.assert_allclose(coords, expected, atol=1e-9)
    # Adding a component orthogonal to the plane changes nothing.
    q, _ = np.linalg.qr(np.stack([t[1] - t[0], t[2] - t[0]], axis=1), mode="complete")
    normal = q[:, 2:] @ rng.normal(size=(q.shape[1] - 2, 20))
    shifted = analysis.template_plane(in_plane + 5 * normal.T, weight, classes).coords
    np.testing.assert_allclose(shifted, coords, atol=1e-9)
    # The fitted plane transforms new features the same way.
    plane = analysis.template_plane(in_plane, weight, classes).fitted
    np.testing.assert_allclose(plane.transform(torch.from_numpy(in_plane)), coords, atol=1e-9)


def test_template_plane_with_equal_bias_matches_no_bias_and_checks_input():
    weight = _random_weight()
    feats = np.random.default_rng(2).normal(size=(8, 7))
    plain = analysis.template_plane(feats, torch.from_numpy(weight), (0, 1, 2)).coords
    biased = analysis.template_plane(feats, weight, (0, 1, 2), fc_bias=torch.full((5,), 0.3))
    np.testing.assert_allclose(biased.coords, plain, atol=1e-10)
    with pytest.raises(ValueError, match="distinct"):
        analysis.template_plane(feats, weight, (0, 0, 1))
    with pytest.raises(ValueError, match="out of range"):
        analysis.template_plane(feats, weight, (0, 1, 9))
    collinear = weight.copy()
    collinear[2] = 2 * collinear[1] - collinear[0]
    with pytest.raises(ValueError, match="collinear"):
        analysis.template_plane(feats, collinear, (0, 1, 2))


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_project_shape_and_determinism(method):
    feats = torch.from_numpy(np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32))
    a = analysis.project(feats, method, seed=3)
    b = analysis.project(feats, method, seed=3)
    assert a.coords.shape == (40, 2) and a.method == method
    np.testing.assert_allclose(a.coords, b.coords)
    assert np.isfinite(a.coords).all()


def test_project_template_and_unknown_method():
    weight = _random_weight()
    feats = np.random.default_rng(0).normal(size=(10, 7))
    proj = analysis.project(feats, "template", fc_weight=weight, classes=(0, 1, 2))
    np.testing.assert_allclose(proj.coords, analysis.template_plane(feats, weight).coords)
    with pytest.raises(ValueError, match="fc_weight"):
        analysis.project(feats, "template")
    with pytest.raises(ValueError, match="unknown method 'umapp'.*umap, tsne, pca, template"):
        analysis.project(feats, "umapp")


def test_project_views_template_per_view_and_joint_fit_split_back():
    rng = np.random.default_rng(0)
    feats = {k: torch.from_numpy(rng.normal(size=(10, 7)).astype(np.float32))
             for k in ("standard", "augmix", "pgd")}
    weight = torch.from_numpy(_random_weight())
    coords, templates = analysis.project_views(feats, "template", fc_weight=weight,
                                               classes=(0, 1, 2))
    assert list(coords) == list(feats) and list(templates) == list(feats)
    for k, f in feats.items():
        one = analysis.project(f, "template", fc_weight=weight, classes=(0, 1, 2))
        np.testing.assert_allclose(coords[k], one.coords)
        np.testing.assert_allclose(templates[k], one.templates)
    coords, templates = analysis.project_views(feats, "pca", seed=1)
    joint = analysis.project(torch.cat(list(feats.values())), "pca", seed=1).coords
    assert templates is None and all(c.shape == (10, 2) for c in coords.values())
    np.testing.assert_allclose(coords["augmix"], joint[10:20])


def _blobs(per_class: int = 20, dims: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three unit-variance Gaussian blobs in ``dims`` dimensions, centres 20 apart."""
    rng = np.random.default_rng(seed)
    centres = 20.0 * np.eye(3, dims)
    labels = np.repeat(np.arange(3), per_class)
    return centres[labels] + rng.normal(size=(labels.size, dims)), labels


def _neighbour_label_agreement(coords: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_project_keeps_separated_clusters_apart(method):
    feats, labels = _blobs()
    coords = analysis.project(feats, method, seed=0).coords
    assert _neighbour_label_agreement(coords, labels) == 1.0


@pytest.mark.slow  # numba compiles UMAP on first use: ~30 s on 2 cores
def test_project_umap_keeps_separated_clusters_apart():
    feats, labels = _blobs()
    proj = analysis.project(feats, "umap", seed=0, n_epochs=100, n_neighbors=10)
    coords = proj.coords
    assert coords.shape == (60, 2) and np.isfinite(coords).all()
    # Every point's 5 nearest neighbours in the embedding are of its own blob ...
    assert _neighbour_label_agreement(coords, labels) == 1.0
    # ... and each blob lies apart from the others: its widest in-blob distance to its own
    # centre is smaller than the gap to the nearest other centre.
    centres = np.stack([coords[labels == c].mean(0) for c in range(3)])
    radius = max(np.linalg.norm(coords[labels == c] - centres[c], axis=1).max() for c in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * radius, (min(gaps), radius)
    # The same seed gives the same embedding.
    again = analysis.project(feats, "umap", seed=0, n_epochs=100, n_neighbors=10).coords
    np.testing.assert_allclose(coords, again, atol=1e-4)


# --------------------------------------------------------------------------------------------
# BN statistics
# --------------------------------------------------------------------------------------------
class _ToyDual(nn.Module):
    """A stand-in for a dual BN: main BN ``bn_clean``, auxiliary BN ``bn_aug``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn_clean = nn.BatchNorm2d(channels)
        self.bn_aug = nn.BatchNorm2d(channels)
        self.route = "clean"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.bn_clean if self.route == "clean" else self.bn_aug)(x)


class _ToyDuBIN(nn.Module):
    """Half the channels through an InstanceNorm, half through a dual BN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.inorm = nn.InstanceNorm2d(self.half, affine=True)
        self.dual = _ToyDual(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, : self.half], x[:, self.half :]
        return torch.cat([self.inorm(a), self.dual(b)], dim=1)


def _toy_dual_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        _ToyDual(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        _ToyDuBIN(6),
        nn.BatchNorm2d(6),
    )


def test_bn_running_variance_plain_model():
    model = _model()
    table = analysis.bn_running_variance(model)
    assert list(table["layer"]) == ["layer1.bn", "layer2.bn", "layer3.bn", "layer4.bn"]
    assert (table["kind"] == "bn").all() and table["aux_var"].isna().all()
    expected = float(model.layer2.bn.running_var.mean())
    assert table.set_index("layer").loc["layer2.bn", "clean_var"] == pytest.approx(expected)


def test_bn_running_variance_dual_module():
    from studykit.normalization import DualBN, DuBIN

    model = nn.Sequential(nn.Conv2d(3, 4, 3), DualBN(4), nn.Conv2d(4, 6, 3), DuBIN(6),
                          nn.BatchNorm2d(6))
    model[1].bn_clean.running_var.fill_(2.0)
    model[1].bn_aug.running_var.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    model[3].BN.bn_clean.running_var.fill_(0.5)
    model[3].BN.bn_aug.running_var.fill_(0.25)
    model[4].running_var.fill_(7.0)
    table = analysis.bn_running_variance(model).set_index("layer")
    assert list(table.index) == ["1", "3", "4"]
    assert list(table["kind"]) == ["dubn", "dubin", "bn"]
    assert table.loc["1", "clean_var"] == 2.0 and table.loc["1", "aux_var"] == 2.5
    assert table.loc["3", "clean_var"] == 0.5 and table.loc["3", "aux_var"] == 0.25
    assert table.loc["4", "clean_var"] == 7.0 and math.isnan(table.loc["4", "aux_var"])


def test_normalization_layers_lists_outermost_containers():
    model = _toy_dual_model()
    assert list(analysis.normalization_layers(model)) == ["1", "4", "5"]


def test_batch_statistics_hooks_mode_and_variance_order():
    model = _model()
    model.train()
    before = _hook_count(model)
    x = _images(16)
    table = analysis.batch_statistics(
        model, {"clean": x, "noisy": (x + 0.5 * torch.randn_like(x)).clamp(0, 1)}, batch_size=5
    )
    assert _hook_count(model) == before
    assert model.training and all(m.training for m in model.modules())
    assert list(table.columns) == [
        "layer",
        "batch",
        "batch_var",
        "instance_var",
        "instance_heterogeneity",
    ]
    assert len(table) == 2 * 4
    first = table[table["layer"] == "layer1.bn"].set_index("batch")
    assert first.loc["noisy", "batch_var"] > first.loc["clean", "batch_var"]
    # Law of total variance.
    np.testing.assert_allclose(
        table["batch_var"], table["instance_var"] + table["instance_heterogeneity"], rtol=1e-6
    )
    # Chunking does not change the statistics of a batch.
    whole = analysis.batch_statistics(model, {"clean": x}, batch_size=100)
    np.testing.assert_allclose(
        whole["batch_var"], table[table["batch"] == "clean"]["batch_var"], rtol=1e-6
    )


def test_batch_statistics_zero_heterogeneity_for_identical_samples_and_layer_selection():
    model = _toy_dual_model()
    x = _images(1).expand(6, -1, -1, -1)
    table = analysis.batch_statistics(model, {"same": x}, layers=["4", "5"])
    assert list(table["layer"]) == ["4", "5"]
    np.testing.assert_allclose(table["instance_heterogeneity"], 0, atol=1e-10)
    assert (table["batch_var"] > 0).all()
    with pytest.raises(ValueError, match="matches no normalization layer"):
        analysis.batch_statistics(model, {"same": x}, layers=["nope"])


def test_batch_statistics_removes_hooks_on_error():
    model = _model()
    before = _hook_count(model)
    model.train()
    with pytest.raises(RuntimeError):
        analysis.batch_statistics(model, {"bad": torch.rand(2, 5, 16, 16)})
    assert _hook_count(model) == before
    assert model.training


# --------------------------------------------------------------------------------------------
# Feature divergence
# --------------------------------------------------------------------------------------------
def test_symmetric_kl_known_values_and_symmetry():
    assert float(analysis.symmetric_kl_gaussian(0.3, 2.0, 0.3, 2.0)) == 0.0
    # N(0, 1) vs N(1, 1): each KL is d^2 / 2 = 0.5.
    assert float(analysis.symmetric_kl_gaussian(0.0, 1.0, 1.0, 1.0)) == pytest.approx(1.0)
    # N(0, 1) vs N(0, 4): KL(P||Q) = log 2 + 1/8 - 1/2, KL(Q||P) = -log 2 + 2 - 1/2.
    assert float(analysis.symmetric_kl_gaussian(0.0, 1.0, 0.0, 4.0)) == pytest.approx(1.125)
    mu1, var1 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 0.5, 3.0])
    mu2, var2 = torch.tensor([0.5, 1.0, 1.0]), torch.tensor([2.0, 0.5, 0.1])
    forward = analysis.symmetric_kl_gaussian(mu1, var1, mu2, var2)
    torch.testing.assert_close(forward, analysis.symmetric_kl_gaussian(mu2, var2, mu1, var1))

    # Against the closed form of Eq. 5 with its log terms.
    def kl(m1, v1, m2, v2):
        return 0.5 * torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5

    torch.testing.assert_close(forward, kl(mu1, var1, mu2, var2) + kl(mu2, var2, mu1, var1))
    # And against torch.distributions.
    p, q = (
        torch.distributions.Normal(mu1, var1.sqrt()),
        torch.distributions.Normal(mu2, var2.sqrt()),
    )
    expected = torch.distributions.kl_divergence(p, q) + torch.distributions.kl_divergence(q, p)
    torch.testing.assert_close(forward, expected)


def test_feature_divergence_zero_for_same_inputs_positive_for_shifted():
    model = _model()
    model.train()
    x = _images(8)
    same = analysis.feature_divergence(model, x, x.clone(), batch_size=3)
    assert list(same["stage"]) == list(model.stages)
    assert list(same["channels"]) == [8, 16, 32, 32]
    np.testing.assert_allclose(same["divergence"], 0, atol=1e-9)
    shifted = analysis.feature_divergence(model, x, (x * 0.3 + 0.6), stages=["layer1", "layer3"])
    assert list(shifted["stage"]) == ["layer1", "layer3"]
    assert (shifted["divergence"] > 1e-3).all()
    assert model.training
    with pytest.raises(ValueError, match="unknown stage 'layer9'"):
        analysis.feature_divergence(model, x, x, stages=["layer9"])


def test_feature_divergences_rows_per_pair_and_model():
    models = {"a": _model(0), "b": _model(1)}
    x = _images(8)
    others = {"same": x.clone(), "shifted": x * 0.3 + 0.6}
    div = analysis.feature_divergences(models, x, others, stages=["layer1", "layer2"])
    assert list(div.columns) == ["stage", "depth", "channels", "divergence", "pair", "model"]
    assert list(zip(div["pair"], div["model"], div["stage"])) == [
        (p, m, s) for p in others for m in models for s in ("layer1", "layer2")]
    np.testing.assert_allclose(div[div["pair"] == "same"]["divergence"], 0, atol=1e-9)
    one = analysis.feature_divergence(models["b"], x, others["shifted"],
                                      stages=["layer1", "layer2"])
    part = div[(div["pair"] == "shifted") & (div["model"] == "b")]
    np.testing.assert_allclose(part["divergence"], one["divergence"])


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------
def test_ssim_identity_noise_and_gradient():
    x = _images(4, size=32)
    torch.testing.assert_close(analysis.ssim(x, x), torch.ones(4), atol=1e-4, rtol=0)
    g = torch.Generator().manual_seed(1)
    small = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    large = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s_small, s_large = analysis.ssim(x, small), analysis.ssim(x, large)
    assert s_small.shape == (4,)
    assert (s_small < 1).all() and (s_large < s_small).all()
    y = small.clone().requires_grad_(True)
    analysis.ssim(x, y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
    u8 = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(analysis.ssim(u8, u8), torch.ones(4), atol=1e-4, rtol=0)


def test_augmentation_views_and_their_statistics():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, width=8).eval()
    x = (torch.rand(12, 3, 32, 32) * 255).to(torch.uint8)
    y = torch.arange(12) % 3
    views = hardness.augmentation_views(model, x, y, seed=0, pgd_steps=2, augmax_steps=2)
    assert list(views) == ["standard", "augmix", "pgd", "augmax", hardness.FULL_SEARCH_VIEW]
    xf = x.float() / 255
    for v in views.values():
        assert v.shape == x.shape and v.dtype == torch.float32
        assert v.min() >= 0 and v.max() <= 1
    # Like for like: every view is made from the same cropped and flipped base images.
    base = views["standard"]
    assert (views["pgd"] - base).abs().max() <= 8 / 255 + 1e-6
    assert not torch.equal(base, xf) and not torch.equal(views["augmix"], base)
    again = hardness.augmentation_views(model, x, y, seed=0, pgd_steps=2, augmax_steps=2)
    assert all(torch.equal(views[k], again[k]) for k in views)
    assert not model.training

    stats = hardness.diversity_and_hardness(model, views, y).set_index("view")
    assert list(stats.columns) == ["accuracy", "loss", "spread", "centroid_shift"]
    assert stats.loc["standard", "spread"] == pytest.approx(1.0)
    assert stats.loc["standard", "centroid_shift"] == pytest.approx(0.0)
    logits = model(views["pgd"])
    assert stats.loc["pgd", "accuracy"] == pytest.approx(
        (logits.argmax(1) == y).float().mean().item() * 100)


def test_augmax_view_is_the_one_training_uses():
    """The main AugMax view is AugMaxConfig's search (early stop after the first fooling
    update); the full search starts from the same point and keeps ascending."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, width=8).eval()
    x = (torch.rand(16, 3, 32, 32) * 255).to(torch.uint8)
    y = torch.arange(16) % 3
    views = hardness.augmentation_views(model, x, y, seed=1, pgd_steps=1)
    trained = hardness.augmentation_views(model, x, y, seed=1, pgd_steps=1, full_search=False)
    assert hardness.FULL_SEARCH_VIEW not in trained
    assert torch.equal(trained["augmax"], views["augmax"])
    train_view, full = views["augmax"], views[hardness.FULL_SEARCH_VIEW]
    with torch.no_grad():
        wrong = model(train_view).argmax(1) != y
    assert wrong.any() and (~wrong).any()  # both kinds of sample are here
    # A sample the training search stopped on (fooled) may ascend further without the stop;
    # one it never stopped on took every step in both searches, from the same start.
    assert not torch.equal(train_view, full)
    assert torch.equal(train_view[~wrong], full[~wrong])
