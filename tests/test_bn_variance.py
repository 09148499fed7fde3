"""AugMax Table 1 at the placement layers: the running variances come from each model's BNs and
the heterogeneity ratio is a scale-free fraction of the batch variance."""

from __future__ import annotations

import pytest
import torch

from studykit import methods
from studykit.analysis import bn_variance
from studykit.analysis.bn_stats import bn_running_variance
from studykit.models import create_model
from studykit.normalization import DuBIN


def _augmax_model(norm):
    torch.manual_seed(0)
    m = methods.create_method("augmax", norm=norm, steps=1)
    model = m.prepare_model(create_model("small_cnn", 4, width=8)).train()
    x = torch.rand(32, 3, 32, 32)
    y = torch.arange(32) % 4
    m.training_step(model, x, y)  # fills both BNs' running statistics
    return model.eval()


def test_placement_table_reports_the_dubin_layers_of_both_models():
    models = {"dubn": _augmax_model("dubn"), "dubin": _augmax_model("dubin")}
    assert bn_variance.placement_layers(models) == ["layer1.bn", "layer2.bn", "layer3.bn"]
    x = (torch.rand(40, 3, 32, 32) * 255).to(torch.uint8)
    y = torch.arange(40) % 4
    table = bn_variance.placement_table(models, x, y, steps=2)
    assert list(table["model"]) == ["dubn"] * 3 + ["dubin"] * 3
    kinds = table.set_index(["model", "layer"])["kind"]
    assert set(kinds["dubn"]) == {"dubn"} and set(kinds["dubin"]) == {"dubin"}
    running = bn_running_variance(models["dubin"]).set_index("layer")
    got = table[table["model"] == "dubin"].set_index("layer")
    for name in got.index:
        assert got.loc[name, "clean_var"] == pytest.approx(running.loc[name, "clean_var"])
        assert got.loc[name, "aux_var"] == pytest.approx(running.loc[name, "aux_var"])
    ratios = table[["het_clean", "het_augmax"]].to_numpy()
    assert ((ratios > 0) & (ratios < 1)).all()
    # Scale-free: multiplying the first conv's weights leaves layer1's ratio unchanged.
    scaled = _augmax_model("dubin")
    with torch.no_grad():
        scaled.layer1.conv.weight.mul_(3.0)
        if scaled.layer1.conv.bias is not None:
            scaled.layer1.conv.bias.mul_(3.0)
    again = bn_variance.placement_table({"dubin": scaled}, x, y, layers=["layer1.bn"], steps=2)
    assert again["het_clean"].iloc[0] == pytest.approx(got.loc["layer1.bn", "het_clean"], rel=1e-4)
    assert any(isinstance(mod, DuBIN) for mod in models["dubin"].modules())


def test_placement_table_errors_name_the_layers():
    models = {"bn": create_model("small_cnn", 4, width=8)}
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4) % 4
    with pytest.raises(ValueError, match="no placement layers"):
        bn_variance.placement_table(models, x, y)
    with pytest.raises(ValueError, match="no normalization layer 'layer9.bn'; choose from"):
        bn_variance.placement_table(models, x, y, layers=["layer9.bn"])
