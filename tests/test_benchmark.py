"""Notebook 08's pieces: the benchmark rows and table, Hendrycks' normalized and relative mCE,
per-image spatial outcomes, the side-by-side step timing, and its claims."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from studykit import benchmark, claims, evaluation, step_cost, viz
from studykit.corruptions import BENCHMARK_CORRUPTIONS
from studykit.methods import list_methods


def _table(acc: float, corruptions=BENCHMARK_CORRUPTIONS) -> pd.DataFrame:
    return pd.DataFrame([{"corruption": c, "severity": s, "accuracy": acc, "source": "generated"}
                         for c in corruptions for s in evaluation.SEVERITIES])


def _result(clean: float, corrupted: float, adv: dict[float, float], norm: str = "linf"):
    curve = pd.DataFrame([{"norm": norm, "eps": e, "steps": 10, "accuracy": a}
                          for e, a in adv.items()])
    return SimpleNamespace(metrics={"clean_acc": clean, "ra": corrupted, "mce": 100 - corrupted},
                           corruption=_table(corrupted), adversarial=curve,
                           clean_acc_for_corruptions=clean)


def test_relative_and_normalized_mce_follow_hendrycks():
    base, model = _table(80.0), _table(90.0)
    # Errors 10 vs 20 per set: half the baseline's (normalized mCE 50).
    assert evaluation.normalized_mce(model, base) == pytest.approx(50.0)
    # Clean 95 vs 90: the corruption costs 5 points against 10: relative mCE 50.
    assert evaluation.relative_mce(model, 95.0, base, 90.0) == pytest.approx(50.0)
    assert evaluation.relative_mce(base, 90.0, base, 90.0) == pytest.approx(100.0)
    # A model that loses nothing to corruptions has relative mCE 0 whatever its clean accuracy.
    assert evaluation.relative_mce(_table(70.0), 70.0, base, 90.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="loses no accuracy"):
        evaluation.relative_mce(model, 95.0, base, 80.0)
    with pytest.raises(ValueError, match="lack corruption"):
        evaluation.relative_mce(_table(90.0, ["fog"]), 95.0, base, 90.0)


def test_every_registered_method_is_a_benchmark_row():
    assert {o["method"] for o in benchmark.ROWS.values()} == set(list_methods())
    assert set(benchmark.GAUSSIAN_ROWS) <= set(benchmark.ROWS)


def test_rows_are_checked_and_standard_comes_first():
    assert benchmark.check_rows(["augmix", "standard", "augmix"]) == ["standard", "augmix"]
    with pytest.raises(ValueError, match=r"unknown benchmark row\(s\) \['augmox'\]; choose from"):
        benchmark.check_rows(["standard", "augmox"])
    with pytest.raises(ValueError, match="must include 'standard'"):
        benchmark.check_rows(["augmix"])


def test_benchmark_table_puts_every_evaluation_in_one_row():
    results = {"standard": _result(90, 70, {0.0: 90, 8 / 255: 5}),
               "robust": _result(85, 80, {0.0: 85, 8 / 255: 40}),
               "gauss": _result(80, 75, {0.0: 80, 8 / 255: 20})}
    l2 = {k: SimpleNamespace(adversarial=pd.DataFrame(
        [{"norm": "l2", "eps": e, "steps": 10, "accuracy": 50.0} for e in (0.0, 0.5)]))
        for k in results}
    spatial = {k: torch.tensor([True, False, True, True]) for k in results}
    table = benchmark.benchmark_table(results, l2=l2, spatial=spatial,
                                      certified={"gauss": {0.25: 60.0, 0.5: 30.0}})
    assert list(table.index) == list(results)
    assert table.loc["standard", "mCE vs standard"] == pytest.approx(100.0)
    assert table.loc["standard", "relative mCE"] == pytest.approx(100.0)
    # Errors 20 vs 30: two thirds; corruption cost 5 vs 20: a quarter.
    assert table.loc["robust", "mCE vs standard"] == pytest.approx(200 / 3)
    assert table.loc["robust", "relative mCE"] == pytest.approx(25.0)
    assert table.loc["robust", "Linf 8/255"] == 40
    assert table.loc["robust", "L2 0.5"] == 50
    assert table.loc["robust", "spatial"] == pytest.approx(75.0)
    assert table.loc["gauss", "certified@0.25"] == 60
    assert np.isnan(table.loc["standard", "certified@0.25"])
    assert "CIFAR-10.1" not in table.columns  # nothing measured: no column


def test_claim_without_its_measurement_is_not_run_and_the_rest_are_measured():
    n = 200
    rng = np.random.default_rng(0)
    rows = {label: [{"clean_acc": 100.0 * (rng.random(n) < p), "ra": 100.0 * (rng.random(n) < p),
                     "mce": 100.0 * (rng.random(n) > p), "spatial": 100.0 * (rng.random(n) < p)}]
            for label, p in [("standard", 0.3), ("augmix", 0.5), ("augmax-dubin", 0.9),
                             ("pgd_at", 0.2), ("advmix", 0.5), ("augmix_pgdat", 0.5),
                             ("advmax", 0.5), ("deepaugment", 0.5)]}
    table = claims.evaluate_claims("08_benchmark", rows).set_index("key")
    assert table.loc["augmax_over_augmix_cifar10_1", "verdict"] == "not run"
    assert "cifar10.1 not measured" in table.loc["augmax_over_augmix_cifar10_1", "interval"]
    assert table.loc["augmax_over_standard_sta", "verdict"] == "shown"
    assert (table.drop("augmax_over_augmix_cifar10_1")["verdict"] != "not run").all()


def test_spatial_outcomes_average_to_the_spatial_accuracy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10)).eval()
    x = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8)
    y = torch.randint(0, 10, (12,))
    hits = evaluation.spatial_correct(model, x, y, k=3, seed=1, batch_size=5)
    assert hits.dtype == torch.bool and hits.shape == (12,)
    assert 100 * hits.float().mean().item() == pytest.approx(
        evaluation.spatial_accuracy(model, x, y, k=3, seed=1, batch_size=5))


def test_step_timing_leaves_the_runs_untouched_and_gives_ratios_to_standard(store):
    from studykit.experiment import run_experiment

    kw = dict(profile="smoke", progress=False, device="cpu", eval_corruptions=None,
              eval_adversarial=None)
    results = {m: run_experiment(method=m, **kw) for m in ("standard", "augmix")}
    before = {k: [p.detach().clone() for p in r.model.parameters()] for k, r in results.items()}
    seconds = step_cost.measure_step_seconds(results, batch_size=32, steps=2)
    assert (seconds > 0).all() and list(seconds.index) == ["standard", "augmix"]
    for k, r in results.items():
        assert all(torch.equal(a, b) for a, b in zip(before[k], r.model.parameters()))
        assert not r.model.training
    cost = step_cost.cost_table(results, seconds)
    assert cost.loc["standard", "x standard"] == pytest.approx(1.0)
    assert cost.loc["augmix", "s/epoch"] == pytest.approx(
        seconds["augmix"] * np.ceil(results["augmix"].dataset.x_train.shape[0] / 128))
    with pytest.raises(ValueError, match="baseline 'nothing' was not timed"):
        step_cost.cost_table(results, seconds, baseline="nothing")


def test_comparison_figures_draw_every_method():
    drops = pd.DataFrame({"a": [1.0, -2.0], "b": [30.0, 4.0]}, index=["fog", "snow"])
    fig = viz.plot_drop_heatmap(drops)
    assert len(fig.axes[0].texts) == 4
    sev = pd.DataFrame({0: [90.0, 80.0], 1: [80.0, 75.0]}, index=["a", "b"])
    fig2 = viz.plot_severity_lines(sev)
    assert len(fig2.axes[0].lines) == 2
    t = pd.DataFrame({"clean": [90.0, 80.0, np.nan], "RA": [70.0, 75.0, 60.0]},
                     index=["a", "b", "c"])
    fig3 = viz.plot_tradeoff(t, "clean", "RA")
    assert [x.get_text() for x in fig3.axes[0].texts] == ["a", "b"]
    with pytest.raises(ValueError, match="no row has both"):
        viz.plot_tradeoff(t.assign(clean=np.nan), "clean", "RA")
    plt.close("all")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDYKIT_DATA", str(tmp_path / "data"))
    return tmp_path
