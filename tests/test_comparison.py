"""Tables across runs (studykit.comparison) and the evaluation helpers they share: built from
stand-in results with known numbers, so every cell can be checked by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from studykit import comparison, evaluation
from studykit.corruptions import BENCHMARK_CORRUPTIONS


class ConstantClassifier(nn.Module):
    """Predicts class ``k`` for every image."""

    def __init__(self, k: int, num_classes: int = 4) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(k), num_classes)
                                   .float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def _corruption(base: float, names=BENCHMARK_CORRUPTIONS) -> pd.DataFrame:
    """Accuracy base - i - severity for the i-th corruption."""
    return pd.DataFrame([{"corruption": n, "severity": s, "accuracy": base - i - s}
                         for i, n in enumerate(names) for s in range(1, 6)])


def _curve(norm: str, eps: list[float], acc: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"norm": norm, "eps": eps, "steps": 10, "accuracy": acc})


@dataclass
class FakeResult:
    """What the tables read of an ``ExperimentResult``."""

    metrics: dict[str, float]
    seconds: list[float] = field(default_factory=lambda: [2.0, 4.0])
    corruption: pd.DataFrame | None = None
    adversarial: pd.DataFrame | None = None
    eval_model: nn.Module | None = None
    method: str = "standard"

    @property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame({"epoch": range(1, len(self.seconds) + 1), "seconds": self.seconds})

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "arch": "small_cnn", "dataset": "synthetic", "seed": 0,
                "epochs": 2, **self.metrics}


def test_metrics_table_rows_by_label_and_adversarial_columns():
    results = {"a": FakeResult({"clean_acc": 90.0, "ra": 70.0, "mce": 30.0, "adv_linf@0.01": 5.0,
                                "adv_linf@0.004": 20.0}),
               "b": FakeResult({"clean_acc": 80.0, "ra": 75.0, "mce": 25.0, "adv_linf@0.01": 9.0,
                                "adv_linf@0.004": 30.0}, method="augmix")}
    t = comparison.metrics_table(results)
    assert t.index.tolist() == ["a", "b"]
    assert t.columns.tolist() == ["clean_acc", "ra", "mce", "adv_linf@0.004", "adv_linf@0.01"]
    assert t.loc["b", "adv_linf@0.004"] == 30.0
    t = comparison.metrics_table(results, ["ra", "clean_acc"], adversarial=False)
    assert t.columns.tolist() == ["ra", "clean_acc"] and t.loc["a", "ra"] == 70.0


def test_accuracy_table_evaluates_the_sets_and_times_the_runs():
    y = torch.tensor([0, 0, 1, 2])
    sets = {"shifted": torch.rand(4, 3, 8, 8), "reconstructed": torch.rand(4, 3, 8, 8)}
    results = {"zero": FakeResult({"clean_acc": 90.0, "ra": 70.0, "mce": 30.0},
                                  eval_model=ConstantClassifier(0)),
               "two": FakeResult({"clean_acc": 80.0, "ra": 60.0, "mce": 40.0}, seconds=[1.0],
                                 eval_model=ConstantClassifier(2))}
    t = comparison.accuracy_table(results, ("clean_acc", "ra"), sets=sets, y=y,
                                  seconds_per_epoch=True)
    assert t.columns.tolist() == ["clean_acc", "ra", "shifted", "reconstructed",
                                  "seconds_per_epoch"]
    assert t.loc["zero"].tolist() == [90.0, 70.0, 50.0, 50.0, 3.0]
    assert t.loc["two"].tolist() == [80.0, 60.0, 25.0, 25.0, 1.0]
    assert comparison.accuracy_table(results).columns.tolist() == ["clean_acc", "ra", "mce"]


def test_corruption_error_table_is_ada_table_1():
    results = {"standard": FakeResult({"clean_acc": 90.0, "ra": 70.0, "mce": 30.0},
                                      corruption=_corruption(80.0, list(BENCHMARK_CORRUPTIONS)
                                                             + ["saturate"])),
               "AdA": FakeResult({"clean_acc": 85.0, "ra": 75.0, "mce": 25.0}, seconds=[6.0],
                                 corruption=_corruption(90.0))}
    t = comparison.corruption_error_table(results)
    assert t.index.tolist() == ["standard", "AdA"]
    assert t.columns.tolist() == ["s/epoch", "clean", "RA", "mCE", *BENCHMARK_CORRUPTIONS]
    assert t.loc["AdA", ["s/epoch", "clean", "RA", "mCE"]].tolist() == [6.0, 85.0, 75.0, 25.0]
    # error = 100 - (base - i - mean severity 3)
    expected = [100 - (80.0 - i - 3) for i in range(len(BENCHMARK_CORRUPTIONS))]
    np.testing.assert_allclose(t.loc["standard", list(BENCHMARK_CORRUPTIONS)], expected)
    assert t.loc["AdA", "gaussian_noise"] == pytest.approx(100 - (90.0 - 3))


def test_adversarial_table_is_ada_table_2():
    results = {"a": FakeResult({"clean_acc": 90.0},
                               adversarial=_curve("linf", [0.0, 2 / 255, 8 / 255],
                                                  [90.0, 40.0, 10.0])),
               "b": FakeResult({"clean_acc": 80.0},
                               adversarial=_curve("linf", [0.0, 2 / 255, 8 / 255],
                                                  [80.0, 50.0, 20.0]))}
    l2 = {k: _curve("l2", [0.0, 0.25, 0.5], [v, v - 10, v - 30]) for k, v in
          (("a", 90.0), ("b", 80.0))}
    t = comparison.adversarial_table(results, l2)
    assert t.columns.tolist() == ["clean", "L2 0.25", "L2 0.5", "Linf 2/255", "Linf 8/255"]
    assert t.loc["a"].tolist() == [90.0, 80.0, 60.0, 40.0, 10.0]
    assert t.loc["b", "Linf 8/255"] == 20.0
    assert comparison.adversarial_table(results).columns.tolist() == [
        "clean", "Linf 2/255", "Linf 8/255"]


def test_normalization_ablation_loops_and_aggregates(monkeypatch):
    calls = []

    def fake_run(**params):
        calls.append(params)
        clean = {"augmix": 80.0, "augmax": 70.0}[params["method"]] + params["seed"]
        ra = {"bn": 50.0, "dubin": 60.0}[params["norm"]] + 2 * params["seed"]
        return FakeResult({"clean_acc": clean, "ra": ra})

    monkeypatch.setattr(comparison, "run_experiment", fake_run)
    t = comparison.normalization_ablation(["bn", "dubin"], [0, 1], profile="smoke")
    assert [(c["seed"], c["method"], c["norm"]) for c in calls] == [
        (s, m, n) for s in (0, 1) for m in ("augmix", "augmax") for n in ("bn", "dubin")]
    assert all(c["profile"] == "smoke" for c in calls)
    assert t.index.tolist() == ["augmix-bn", "augmix-dubin", "augmax-bn", "augmax-dubin"]
    assert t.columns.tolist() == ["clean_acc_mean", "clean_acc_std", "ra_mean", "ra_std"]
    assert t.loc["augmax-dubin"].tolist() == pytest.approx([70.5, np.sqrt(0.5), 61.0,
                                                            np.sqrt(2.0)])
    one = comparison.normalization_ablation(["bn"], [0], methods=("augmix",))
    assert one.loc["augmix-bn", "ra_mean"] == 50.0 and np.isnan(one.loc["augmix-bn", "ra_std"])


def test_mean_accuracy_by_corruption_keeps_the_common_corruptions():
    t = evaluation.mean_accuracy_by_corruption({
        "all": _corruption(80.0, ["gaussian_noise", "contrast", "saturate"]),
        "two": _corruption(90.0, ["gaussian_noise", "contrast"])})
    assert t.index.tolist() == ["contrast", "gaussian_noise"]  # alphabetical, common only
    assert t.loc["contrast"].tolist() == [80.0 - 1 - 3, 90.0 - 1 - 3]


def test_accuracy_on_sets():
    y = torch.tensor([1, 1, 1, 0])
    sets = {0: torch.rand(4, 3, 8, 8), 2: torch.rand(4, 3, 8, 8).to(torch.uint8)}
    t = evaluation.accuracy_on_sets({"one": ConstantClassifier(1), "zero": ConstantClassifier(0)},
                                    sets, y, index="m")
    assert t.index.name == "m" and t.index.tolist() == [0, 2]
    assert t["one"].tolist() == [75.0, 75.0] and t["zero"].tolist() == [25.0, 25.0]


def test_evaluate_model_row_and_corruption_table(tmp_path, monkeypatch):
    from studykit.data import ImageDataset

    monkeypatch.setenv("STUDYKIT_DATA", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.tensor([2, 2, 2, 0, 1, 3])
    ds = ImageDataset(name="probe", x_train=x, y_train=y, x_test=x, y_test=y,
                      classes=("a", "b", "c", "d"))
    names = ["gaussian_noise", "brightness"]
    row, table = evaluation.evaluate_model(ConstantClassifier(2), ds, corruptions=names,
                                           sets={"shifted": x[:4].float() / 255}, y=y[:4])
    assert list(row) == ["clean_acc", "ra", "mce", "shifted"]
    assert row["clean_acc"] == pytest.approx(50.0) and row["shifted"] == pytest.approx(75.0)
    assert table["corruption"].unique().tolist() == names and len(table) == 10
    assert row["ra"] == pytest.approx(50.0) and row["mce"] == pytest.approx(50.0)


def test_setup_label_names_normalization_and_loss():
    from studykit.methods import create_method

    label = comparison.setup_label
    assert label(create_method("advmax")) == "dubin, AugMax's loss"
    assert label(create_method("augmax", norm="bn")) == "bn, AugMax's loss"
    assert label(create_method("augmix")) == "bn, own loss"
    assert label(create_method("augmix", norm="dubin")) == "dubin, own loss"
    assert label(create_method("pgd_at")) == "bn, own loss"  # no norm option: plain BN
