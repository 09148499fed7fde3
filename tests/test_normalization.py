"""DualBN / DuBIN / IBN layers, `convert_norm` placements, routing and the BN-variance table."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn as nn
from helpers import toy_batch

from studykit.analysis.bn_stats import bn_running_variance
from studykit.models import create_model
from studykit.normalization import (
    IBN,
    DualBN,
    DuBIN,
    bn_route,
    convert_norm,
    dual_bn_layers,
    set_bn_route,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def feats(n: int = 8, c: int = 6, size: int = 5, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g) * (1 + shift) + shift


def images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return toy_batch(n, size=size, seed=seed)[0]


def bn_state(bn: nn.BatchNorm2d) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in bn.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def names_of(model: nn.Module, cls: type) -> list[str]:
    return [name for name, m in model.named_modules() if type(m) is cls]


# --------------------------------------------------------------------------------------------
# DualBN
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["clean", "aug"])
def test_dualbn_train_forward_updates_only_routed_bn(route):
    layer = DualBN(6).train()
    assert layer.route == "clean"  # the default
    used, other = (
        (layer.bn_clean, layer.bn_aug) if route == "clean" else (layer.bn_aug, layer.bn_clean)
    )
    used_before, other_before = bn_state(used), bn_state(other)
    layer.route = route
    layer(feats(shift=2.0))
    assert not torch.equal(used.running_mean, used_before["running_mean"])
    assert not torch.equal(used.running_var, used_before["running_var"])
    assert int(used.num_batches_tracked) == 1
    assert same_state(bn_state(other), other_before)  # incl. num_batches_tracked


def test_dualbn_eval_uses_routed_running_stats_and_routes_differ():
    layer = DualBN(6).train()
    with torch.no_grad():
        for seed in range(5):
            layer.route = "clean"
            layer(feats(seed=seed))
            layer.route = "aug"
            layer(feats(seed=seed, shift=3.0))
    layer.eval()
    x = feats(seed=99, shift=1.0)
    for route, bn in (("clean", layer.bn_clean), ("aug", layer.bn_aug)):
        layer.route = route
        expected = nn.functional.batch_norm(
            x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
        )
        torch.testing.assert_close(layer(x), expected)
    layer.route = "clean"
    y_clean = layer(x)
    layer.route = "aug"
    assert not torch.allclose(y_clean, layer(x), atol=1e-3)


def test_dualbn_from_bn_copies_and_bad_route():
    bn = nn.BatchNorm2d(4, momentum=0.3, eps=1e-3)
    with torch.no_grad():
        bn.weight.uniform_()
        bn.bias.uniform_()
        bn.running_mean.uniform_()
        bn.running_var.uniform_(0.5, 2.0)
    bn.eval()
    dual = DualBN.from_bn(bn)
    assert not dual.training and dual.bn_clean.momentum == 0.3 and dual.bn_aug.eps == 1e-3
    assert same_state(bn_state(dual.bn_clean), bn_state(bn))
    assert same_state(bn_state(dual.bn_aug), bn_state(bn))
    fresh = DualBN.from_bn(bn, copy_to_aux=False)
    assert torch.equal(fresh.bn_aug.running_var, torch.ones(4))
    fresh.copy_clean_to_aux()
    assert same_state(bn_state(fresh.bn_aug), bn_state(bn))
    # The aux BN is a copy, not the same tensors.
    assert dual.bn_aug.weight.data_ptr() != dual.bn_clean.weight.data_ptr()
    with pytest.raises(ValueError, match="clean, aug"):
        dual.route = "main"


def test_dualbn_state_dict_deepcopy_and_functional_call():
    layer = DualBN(3).train()
    layer.route = "aug"
    layer(feats(c=3, shift=1.0))
    clone = copy.deepcopy(layer)
    assert clone.route == "aug"
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    loaded = DualBN(3)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert loaded.route == "clean"  # the route is not part of the state
    assert same_state(bn_state(loaded.bn_aug), bn_state(layer.bn_aug))
    loaded.eval().route = "aug"
    x = feats(c=3, seed=3)
    params = dict(loaded.named_parameters())
    out = torch.func.functional_call(loaded, params, (x,))
    torch.testing.assert_close(out, clone.eval()(x))
    grads = torch.func.grad(lambda p: torch.func.functional_call(loaded, p, (x,)).square().sum())(
        params
    )
    assert grads["bn_aug.weight"].abs().sum() > 0
    assert torch.equal(grads["bn_clean.weight"], torch.zeros(3))


# --------------------------------------------------------------------------------------------
# DuBIN and IBN
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels, n_in", [(8, 4), (7, 3), (5, 2), (2, 1)])
def test_split_sizes_and_shapes(channels, n_in):
    x = feats(c=channels)
    for layer in (DuBIN(channels), IBN(channels)):
        assert layer.IN.num_features == n_in
        assert layer.BN.num_features == channels - n_in
        assert layer.IN.affine
        assert layer(x).shape == x.shape
    dubin = DuBIN(channels)
    assert dubin.BN.bn_clean.num_features == dubin.BN.bn_aug.num_features == channels - n_in


def test_split_is_instance_norm_then_batch_norm():
    x = feats(c=6, shift=2.0)
    for layer in (DuBIN(6), IBN(6)):
        out = layer.train()(x)
        torch.testing.assert_close(out[:, :3], nn.functional.instance_norm(x[:, :3]))
        torch.testing.assert_close(
            out[:, 3:], nn.functional.batch_norm(x[:, 3:], None, None, training=True)
        )
    assert isinstance(IBN(6).BN, nn.BatchNorm2d)
    assert DuBIN(6).to(torch.float64)(x.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="instance-norm channels"):
        DuBIN(1)
    with pytest.raises(ValueError, match="instance-norm channels"):
        IBN(4, in_ratio=1.0)


def test_split_from_bn_copies_channels():
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.copy_(torch.arange(5.0) + 1)
        bn.bias.copy_(-torch.arange(5.0))
        bn.running_mean.copy_(torch.arange(5.0))
    dubin, ibn = DuBIN.from_bn(bn), IBN.from_bn(bn)
    for layer in (dubin, ibn):
        assert torch.equal(layer.IN.weight, torch.tensor([1.0, 2.0]))
        assert torch.equal(layer.IN.bias, torch.tensor([0.0, -1.0]))
    for part in (dubin.BN.bn_clean, dubin.BN.bn_aug, ibn.BN):
        assert torch.equal(part.weight, torch.tensor([3.0, 4.0, 5.0]))
        assert torch.equal(part.running_mean, torch.tensor([2.0, 3.0, 4.0]))


def test_dubin_in_shared_and_aug_gradient_skips_clean_bn():
    layer = DuBIN(6).train()
    # One IN module: no route-specific IN parameters exist.
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in layer.modules()) == 1
    with torch.no_grad():
        layer.IN.weight.uniform_(0.5, 1.5)
    x = feats(c=6, seed=1)
    w = torch.randn(1, 6, 1, 1, generator=torch.Generator().manual_seed(2))
    outs = {}
    for route in ("clean", "aug"):
        layer.zero_grad()
        layer.route = route
        assert layer.BN.route == route
        out = layer(x)
        outs[route] = out
        (out * w).sum().backward()
        assert layer.IN.weight.grad is not None and layer.IN.weight.grad.abs().sum() > 0
        assert layer.IN.bias.grad.abs().sum() > 0
        used, unused = (
            (layer.BN.bn_aug, layer.BN.bn_clean)
            if route == "aug"
            else (layer.BN.bn_clean, layer.BN.bn_aug)
        )
        assert used.weight.grad is not None and used.weight.grad.abs().sum() > 0
        assert unused.weight.grad is None or not unused.weight.grad.any()
    # The IN half is the same function on both routes.
    torch.testing.assert_close(outs["clean"][:, :3], outs["aug"][:, :3])


# --------------------------------------------------------------------------------------------
# convert_norm
# --------------------------------------------------------------------------------------------
PAPER_PLACEMENT = {
    "resnet18": [f"layer{s}.{b}.bn1" for s in (1, 2, 3) for b in (0, 1)],
    "wrn40_2": [f"block{s}.{b}.bn1" for s in (1, 2) for b in range(6)],
    "resnext29": [f"stage_{s}.{b}.bn_reduce" for s in (1, 2) for b in range(3)],
}
N_BATCHNORMS = {"resnet18": 20, "wrn40_2": 37, "resnext29": 31}

_MODELS: dict[str, nn.Module] = {}


def small_model(arch: str) -> nn.Module:
    """A fresh copy of a width-8 model (built once per arch; building is the slow part)."""
    if arch not in _MODELS:
        torch.manual_seed(0)
        _MODELS[arch] = create_model(arch, num_classes=5, width=8)
    return copy.deepcopy(_MODELS[arch])


@pytest.mark.parametrize("arch", sorted(PAPER_PLACEMENT))
def test_convert_counts_and_paper_placement(arch):
    n_bn = len(names_of(small_model(arch), nn.BatchNorm2d))
    assert n_bn == N_BATCHNORMS[arch]
    n_split = len(PAPER_PLACEMENT[arch])

    model = convert_norm(small_model(arch), "bn")
    assert len(names_of(model, nn.BatchNorm2d)) == n_bn

    model = small_model(arch)
    assert convert_norm(model, "dubn") is model
    assert len(names_of(model, DualBN)) == n_bn
    assert len(list(dual_bn_layers(model))) == n_bn

    model = convert_norm(small_model(arch), "dubin")
    assert names_of(model, DuBIN) == PAPER_PLACEMENT[arch]
    top_level = [name for name in names_of(model, DualBN) if not name.endswith(".BN")]
    assert len(top_level) == n_bn - n_split
    assert len(list(dual_bn_layers(model))) == n_bn  # incl. those inside DuBIN

    model = convert_norm(small_model(arch), "ibn")
    assert names_of(model, IBN) == PAPER_PLACEMENT[arch]
    assert not names_of(model, DualBN)
    assert len([m for m in model.modules() if type(m) is nn.BatchNorm2d]) == n_bn  # incl. IBN.BN


def test_convert_dubn_keeps_outputs_and_trains():
    model = small_model("resnet18")
    x = images()
    model.train()
    model(x)  # non-trivial running stats
    model.eval()
    with torch.no_grad():
        expected = model(x)
    convert_norm(model, "dubn")
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
        with bn_route(model, "aug"):
            torch.testing.assert_close(model(x), expected)
    # Still trains: one SGD step through both routes changes the weights.
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    y = torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    with bn_route(model, "aug"):
        loss = loss + nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    before = model.layer1[0].bn1.bn_aug.weight.detach().clone()
    opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.layer1[0].bn1.bn_aug.weight, before)


def test_convert_dubin_trains_and_round_trips():
    model = convert_norm(small_model("wrn40_2"), "dubin")
    x, y = images(), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for route in ("clean", "aug"):
        with bn_route(model, route):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    # Each route updated its own statistics once.
    dubin = model.block1[0].bn1
    assert int(dubin.BN.bn_clean.num_batches_tracked) == 1
    assert int(dubin.BN.bn_aug.num_batches_tracked) == 1
    fresh = convert_norm(small_model("wrn40_2"), "dubin")
    fresh.load_state_dict(copy.deepcopy(model.state_dict()))
    model.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
        with bn_route(fresh, "aug"), bn_route(model, "aug"):
            torch.testing.assert_close(fresh(x), model(x))


def test_convert_placement_defaults_and_errors():
    # Explicit names and one-component patterns.
    model = convert_norm(small_model("resnet18"), "dubin", placement=["layer4.1.bn2"])
    assert names_of(model, DuBIN) == ["layer4.1.bn2"]
    model = convert_norm(small_model("resnet18"), "ibn", placement=["layer2.*.bn2"])
    assert names_of(model, IBN) == ["layer2.0.bn2", "layer2.1.bn2"]
    # Package defaults for the other archs.
    model = convert_norm(create_model("small_cnn", width=8), "dubin")
    assert names_of(model, DuBIN) == ["layer1.bn", "layer2.bn", "layer3.bn"]
    with pytest.raises(ValueError, match="bn, dubn, dubin, ibn"):
        convert_norm(small_model("resnet18"), "dubni")
    with pytest.raises(ValueError, match="matches no module"):
        convert_norm(small_model("resnet18"), "dubin", placement=["layer9.0.bn1"])
    with pytest.raises(ValueError, match="placement applies"):
        convert_norm(small_model("resnet18"), "dubn", placement=["layer1.0.bn1"])
    dubn = convert_norm(small_model("resnet18"), "dubn")
    with pytest.raises(ValueError, match="not a plain BatchNorm2d"):
        convert_norm(dubn, "dubin")
    # Converting to dubn twice changes nothing the second time.
    assert len(names_of(convert_norm(dubn, "dubn"), DualBN)) == N_BATCHNORMS["resnet18"]
    unknown = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="no default DuBIN/IBN placement"):
        convert_norm(unknown, "ibn")
    assert isinstance(convert_norm(unknown, "ibn", placement=["1"])[1], IBN)


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------
def test_bn_route_restores_and_validates():
    model = convert_norm(create_model("small_cnn", width=8), "dubin")
    layers = list(dual_bn_layers(model))
    assert [layer.route for layer in layers] == ["clean"] * 4
    layers[0].route = "aug"  # a mixed state is restored exactly
    with pytest.raises(RuntimeError, match="boom"):
        with bn_route(model, "aug") as routed:
            assert routed is model
            assert all(layer.route == "aug" for layer in layers)
            assert model.layer1.bn.route == "aug"
            raise RuntimeError("boom")
    assert [layer.route for layer in layers] == ["aug", "clean", "clean", "clean"]
    assert set_bn_route(model, "clean") is model
    assert all(layer.route == "clean" for layer in layers)
    with pytest.raises(ValueError, match="clean, aug"):
        with bn_route(model, "adv"):
            pass
    with pytest.raises(ValueError, match="clean, aug"):
        set_bn_route(model, "main")
    # Models without dual layers are fine.
    with bn_route(create_model("small_cnn", width=8), "aug"):
        pass


# --------------------------------------------------------------------------------------------
# BN-variance table
# --------------------------------------------------------------------------------------------
def test_bn_running_variance():
    columns = ["layer", "kind", "num_features", "clean_var", "aux_var"]
    model = create_model("small_cnn", width=8)
    table = bn_running_variance(model)
    assert list(table.columns) == columns
    assert table["layer"].tolist() == ["layer1.bn", "layer2.bn", "layer3.bn", "layer4.bn"]
    assert table["kind"].tolist() == ["bn"] * 4
    assert table["aux_var"].isna().all() and (table["clean_var"] == 1.0).all()

    model = convert_norm(create_model("small_cnn", width=8), "dubin")
    model.train()
    with bn_route(model, "aug"):
        model(images() * 4)
    table = bn_running_variance(model)
    assert table["kind"].tolist() == ["dubin", "dubin", "dubin", "dubn"]
    assert table["num_features"].tolist() == [4, 8, 16, 32]
    assert (table["clean_var"] == 1.0).all()  # the clean BN saw no data
    assert (table["aux_var"] != 1.0).all()
    row = table.iloc[3]
    expected = model.layer4.bn.bn_aug.running_var.mean().item()
    assert math.isclose(row["aux_var"], expected, rel_tol=1e-6)

    model = convert_norm(create_model("small_cnn", width=8), "ibn")
    table = bn_running_variance(model)
    assert table["kind"].tolist() == ["ibn", "ibn", "ibn", "bn"]
    assert table["aux_var"].isna().all()
    no_stats = nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False))
    assert len(bn_running_variance(no_stats)) == 0


# The papers' networks of issue 21 (narrow copies: the same depth and module names). DuBIN goes
# into the first block norm of the first two of three stages (first three of four for wrn50_2).
NEW_PLACEMENT = {
    "resnet110": [f"layer{s}.{b}.bn1" for s in (1, 2) for b in range(18)],
    "preact_resnet110": [f"layer{s}.{b}.bn1" for s in (1, 2) for b in range(18)],
    "wrn28_10": [f"block{s}.{b}.bn1" for s in (1, 2) for b in range(4)],
    "wrn50_2": [f"layer{s}.{b}.bn1" for s, n in ((1, 3), (2, 4), (3, 6)) for b in range(n)],
}
# stem bn1 + 2 a block + 2 shortcuts; 2 a block + final bn; 2 a block + final bn1;
# stem bn1 + 3 a block + 4 shortcuts.
NEW_BATCHNORMS = {"resnet110": 111, "preact_resnet110": 109, "wrn28_10": 25, "wrn50_2": 53}


@pytest.mark.parametrize("arch", sorted(NEW_PLACEMENT))
def test_convert_dubin_on_the_papers_networks(arch):
    model = small_model(arch)
    assert len(names_of(model, nn.BatchNorm2d)) == NEW_BATCHNORMS[arch]
    model = convert_norm(model, "dubin")
    assert names_of(model, DuBIN) == NEW_PLACEMENT[arch]
    assert len(list(dual_bn_layers(model))) == NEW_BATCHNORMS[arch]
    x = images(4, size=8)
    for route in ("clean", "aug"):
        with bn_route(model.train(), route):
            y = model(x)
        y.sum().backward()
        assert torch.isfinite(y).all() and y.shape == (4, 5)
