"""Explorers: driven programmatically, what they show changes with their controls; displayed,
they carry a live widget view and a static PNG of their default state."""

from __future__ import annotations

import base64
import json

import pytest
import torch

from studykit import widgets
from studykit.data import ImageDataset
from studykit.models import create_model
from studykit.threads import one_intra_op_thread


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (12,), generator=g)
    ds = ImageDataset("tiny", x, y, x, y, tuple(f"c{i}" for i in range(10)))
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, width=8).eval()
    return ds, model


def _shown(ex: widgets.Explorer) -> tuple:
    panels = tuple(box.children[1].value for box in ex._panel_box.children)
    return panels, ex.readout.value


def test_corruption_explorer_follows_image_corruption_and_severity(tiny):
    ds, model = tiny
    ex = widgets.corruption_explorer(ds, {"standard": model}, n_images=6,
                                     corruptions=["fog", "gaussian_noise"])
    before = _shown(ex)
    assert "standard" in before[1] and "label: c" in before[1]
    ex.controls["severity"].value = 5
    after_sev = _shown(ex)
    assert after_sev[0][0] == before[0][0]  # the clean image stays
    assert after_sev[0][1] != before[0][1]  # the corrupted one changes
    assert "fog s5" in after_sev[1]
    ex.controls["corruption"].value = "gaussian_noise"
    assert _shown(ex)[0][1] != after_sev[0][1]
    ex.controls["image"].value = 3
    assert _shown(ex)[0][0] != before[0][0]
    with pytest.raises(ValueError, match="'fogg'"):
        widgets.corruption_explorer(ds, corruptions=["fogg"])


def test_mixing_explorer_loss_follows_the_sliders_and_the_augmax_point_raises_it(tiny):
    ds, model = tiny
    ex = widgets.mixing_explorer(model, ds, n_images=4, steps=5)
    table0 = ex.view.table
    assert list(table0.index) == ["sliders", "AugMix draw", "AugMax search"]
    ex.controls["m"].value = 0.0  # m = 0: the clean image, whatever the weights
    clean_loss = ex.view.table.loc["sliders", "loss"]
    panels0 = _shown(ex)[0]
    assert panels0[-1] == panels0[0]  # mixed == clean image at m = 0
    ex.controls["m"].value = 1.0
    ex.controls["w1"].value = 1.0
    ex.controls["w2"].value = 0.0
    ex.controls["w3"].value = 0.0
    panels1 = _shown(ex)[0]
    assert panels1[-1] == panels1[1]  # m = 1, w = (1, 0, 0): chain 1 itself
    assert ex.view.table.loc["sliders", "loss"] != clean_loss
    ex.jump_to_augmax()
    t = ex.view.table
    assert t.loc["sliders", "m"] == pytest.approx(t.loc["AugMax search", "m"], abs=0.01)
    assert t.loc["sliders", "loss"] == pytest.approx(t.loc["AugMax search", "loss"], rel=0.1,
                                                     abs=0.05)
    # the search ascends: its loss is not below AugMix's random draw for most images
    higher = 0
    for i in range(4):
        ex.controls["image"].value = i
        t = ex.view.table
        higher += t.loc["AugMax search", "loss"] >= t.loc["AugMix draw", "loss"] - 1e-6
    assert higher >= 3


def _fake_run(root, method, hash_, options, metrics, n_train=100):
    d = root / "synthetic" / method / hash_
    (d / "eval" / "e1").mkdir(parents=True)
    cfg = {"dataset": "synthetic", "method": method, "arch": "small_cnn", "width": 8,
           "n_train": n_train, "epochs": 1, "seed": 0, "method_config": options}
    (d / "config.json").write_text(json.dumps({"config": cfg, "hash": hash_}))
    (d / "eval" / "e1" / "metrics.json").write_text(json.dumps(metrics))
    (d / "metrics.json").write_text(json.dumps({"clean_acc": metrics["clean_acc"]}))
    (d / "DONE").write_text("now")


def test_results_browser_table_and_chart_follow_the_choices(tmp_path):
    _fake_run(tmp_path, "standard", "a1", {}, {"clean_acc": 60.0, "ra": 50.0})
    _fake_run(tmp_path, "maxup", "b2", {"augmentation": "cutout", "m": 2},
              {"clean_acc": 55.0, "ra": 52.0})
    _fake_run(tmp_path, "maxup", "c3", {"augmentation": "cutout", "m": 2},
              {"clean_acc": 1.0, "ra": 1.0}, n_train=7)  # another setting
    (tmp_path / "synthetic" / "standard" / "zz").mkdir()  # unfinished: skipped
    ex = widgets.results_browser(tmp_path)
    t = ex.view.table
    assert set(t.index) == {"standard", "maxup(m=2)"}  # only non-default options named
    assert t.loc["standard", "clean_acc"] == 60.0 and t.loc["maxup(m=2)", "ra"] == 52.0
    chart0 = _shown(ex)[0]
    ex.controls["runs"].value = ("standard",)
    assert list(ex.view.table.index) == ["standard"]
    assert _shown(ex)[0] != chart0
    ex.controls["metrics"].value = ("ra",)
    assert list(ex.view.table.columns) == ["ra"]
    other = [s for s in ex.controls["setting"].options if "7 images" in s][0]
    ex.controls["setting"].value = other
    assert list(ex.view.table.index) == ["maxup(m=2)"]  # its runs, all chosen again
    assert ex.view.table.loc["maxup(m=2)", "ra"] == 1.0


def test_results_browser_of_an_empty_store_says_so(tmp_path):
    ex = widgets.results_browser(tmp_path)
    assert "no finished runs" in ex.readout.value


def test_display_carries_the_widget_and_a_static_png_of_the_default_state(tiny):
    ds, model = tiny
    ex = widgets.corruption_explorer(ds, {"standard": model}, n_images=2, corruptions=["fog"])
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    png = base64.b64decode(bundle["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    ex.controls["severity"].value = 1  # the static view stays the default state
    assert base64.b64decode(ex._repr_mimebundle_()["image/png"]) == png


def test_ada_explorer_follows_the_radius_and_larger_radii_lower_ssim(tiny):
    from studykit.nets.corruption_net import CorruptionNet

    ds, model = tiny
    torch.manual_seed(0)
    net = CorruptionNet(channels=8, blocks=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)  # near the identity, as pretrained
    x = ds.x_train.float() / 255
    with one_intra_op_thread():
        for _ in range(100):
            loss = (net(x) - x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    ex = widgets.ada_explorer(model, ds, net, radii=(0.01, 0.2), n_images=3, steps=2)
    ex.controls["radius"].value = 0.01
    small = _shown(ex)
    s_small = ex.view.table.loc["AdA, nu=0.01", "SSIM to original"]
    ex.controls["radius"].value = 0.2
    large = _shown(ex)
    assert large[0][0] == small[0][0]  # the original stays
    assert large[0][1] != small[0][1]  # the AdA image changes with the radius
    s_large = ex.view.table.loc["AdA, nu=0.2", "SSIM to original"]
    assert s_large < s_small
    ex.controls["image"].value = 2
    assert _shown(ex)[0][0] != large[0][0]
    with pytest.raises(ValueError, match="radii"):
        widgets.ada_explorer(model, ds, net, radii=(0.0,))


def test_advbn_explorer_follows_steps_and_eps(tiny):
    from studykit.advbn import cut_stage
    from studykit.nets.autoencoder import AutoEncoder

    ds, model = tiny
    torch.manual_seed(0)
    ae = AutoEncoder(model, cut_stage(model, 2), width=8).eval()
    ex = widgets.advbn_explorer(ae, model, ds, max_steps=3, eps_values=(0.5, 1.1), n_images=4)
    ex.controls["steps"].value = 0
    zero = _shown(ex)
    assert zero[0][1] == zero[0][2]  # m = 0: the shifted image is the reconstruction
    ex.controls["steps"].value = 3
    three = _shown(ex)
    assert three[0][2] != zero[0][2] and three[0][1] == zero[0][1]
    ex.controls["eps"].value = 0.5
    assert _shown(ex)[0][2] != three[0][2]
    with pytest.raises(ValueError, match="max_steps"):
        widgets.advbn_explorer(ae, model, ds, max_steps=0)
