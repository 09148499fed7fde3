"""`studykit.claims` and `studykit.outcomes`: the intervals cover what they claim to, the
verdict follows the interval, every claim's rows and metric are ones a notebook can give, the
per-image outcomes stored with an evaluation reproduce its accuracies, and a damaged outcomes
file is recomputed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from studykit import claims, outcomes
from studykit.claims.stats import difference, paired_bootstrap, t_interval, verdict
from studykit.evaluation import BENCHMARK_CORRUPTIONS, SEVERITIES, robust_accuracy


def test_verdict_reads_the_interval_on_the_papers_side():
    assert verdict(0.5, 2.0, higher=True) == "shown"
    assert verdict(0.5, 2.0, higher=False) == "opposite"
    assert verdict(-2.0, -0.1, higher=True) == "opposite"
    assert verdict(-2.0, -0.1, higher=False) == "shown"
    assert verdict(-0.1, 0.3, higher=True) == "not resolved"


def test_paired_bootstrap_covers_the_true_difference_about_95_percent_of_the_time():
    # Paired Bernoulli outcomes whose true difference of means is 0.05: the interval should
    # hold it in about 95 % of independent test sets.
    rng = np.random.default_rng(0)
    n, trials, hits = 400, 150, 0
    for t in range(trials):
        u = rng.random(n)
        a = (u < 0.65).astype(float)  # P = 0.65
        b = (u < 0.60).astype(float)  # P = 0.60, correlated with a as paired models are
        low, high = paired_bootstrap(a, b, n_boot=400, seed=t)
        hits += low <= 0.05 <= high
    assert 0.88 <= hits / trials <= 0.995


def test_paired_bootstrap_is_narrower_than_ignoring_the_pairing():
    rng = np.random.default_rng(1)
    u = rng.random(2000)
    a, b = (u < 0.7).astype(float), (u < 0.68).astype(float)
    low, high = paired_bootstrap(a, b, seed=0)
    # Unpaired standard error of the difference of two means:
    se_unpaired = np.sqrt(a.var() / a.size + b.var() / b.size)
    assert high - low < 2 * 1.96 * se_unpaired / 3
    assert low > 0  # the pairing resolves a 2-point difference on 2,000 images


def test_identical_rows_give_a_zero_interval_and_no_verdict():
    a = np.array([1.0, 0.0, 1.0, 1.0])
    d = difference([a], [a.copy()])
    assert (d.measured, d.low, d.high, d.seeds, d.method) == (0.0, 0.0, 0.0, 1, "bootstrap")
    assert verdict(d.low, d.high, higher=True) == "not resolved"


def test_several_seeds_use_a_t_interval_of_the_per_seed_differences():
    from scipy import stats

    diffs = [1.0, 2.0, 0.5, 1.5]
    low, high = t_interval(diffs)
    half = stats.t.ppf(0.975, 3) * np.std(diffs, ddof=1) / 2
    assert low == pytest.approx(np.mean(diffs) - half) and high == pytest.approx(
        np.mean(diffs) + half)
    a = [np.full(10, d) for d in diffs]
    b = [np.zeros(10) for _ in diffs]
    d = difference(a, b)
    assert d.method == "t" and d.seeds == 4
    assert (d.low, d.high) == pytest.approx((low, high))


def test_difference_refuses_unpaired_rows():
    with pytest.raises(ValueError, match="same number"):
        difference([np.ones(3)], [np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match="same non-zero number of units"):
        difference([np.ones(3)], [np.ones(4)])


def _fake_result(p_clean: float, p_corrupt: float, n: int = 300, seed: int = 0):
    """An object with stored-style outcomes: clean, the 75 benchmark sets and one attack."""
    rng = np.random.default_rng(seed)
    hits = {"clean": rng.random(n) < p_clean,
            outcomes.adv_key("linf", 8 / 255): rng.random(n) < 0.1}
    for c in BENCHMARK_CORRUPTIONS:
        for s in SEVERITIES:
            hits[outcomes.corruption_key(c, s)] = rng.random(n) < p_corrupt
    return SimpleNamespace(outcomes=hits)


def test_ra_per_image_averages_to_the_robust_accuracy_of_the_same_outcomes():
    r = _fake_result(0.9, 0.6)
    table = pd.DataFrame([{"corruption": c, "severity": s,
                           "accuracy": 100 * r.outcomes[outcomes.corruption_key(c, s)].mean()}
                          for c in BENCHMARK_CORRUPTIONS for s in SEVERITIES])
    ra = claims.unit_values(r, "ra")
    assert ra.mean() == pytest.approx(robust_accuracy(table))
    assert claims.unit_values(r, "mce").mean() == pytest.approx(100 - robust_accuracy(table))
    assert claims.unit_values(r, "adv/linf/0.03137").mean() == pytest.approx(
        100 * r.outcomes["adv/linf/0.03137"].mean())
    with pytest.raises(ValueError, match="not attacked at adv/l2/0.5"):
        claims.unit_values(r, "adv/l2/0.5")
    with pytest.raises(ValueError, match="unknown accuracy metric"):
        claims.unit_values(r, "top5")


def test_every_claim_is_complete_and_keys_are_unique():
    keys = [c.key for c in claims.CLAIMS]
    assert len(keys) == len(set(keys)) >= 15
    assert len({c.notebook for c in claims.CLAIMS}) == 8  # notebooks 01-08
    for c in claims.CLAIMS:
        assert c.a != c.b and c.statement and c.source and c.setting
        assert (c.paper_a is None) == (c.paper_b is None)
        if c.paper_a is not None:  # the paper's own numbers point the way the claim says
            assert (c.paper_a > c.paper_b) == c.higher, c.key


def test_evaluate_claims_writes_a_row_per_claim_with_a_computed_verdict(tmp_path):
    better, worse = _fake_result(0.9, 0.75, n=2000, seed=1), _fake_result(0.9, 0.55, n=2000, seed=2)
    rows = {"augmix": [better], "standard": [worse]}
    saver = SimpleNamespace(written={})
    saver.table = lambda df, name, **kw: saver.written.setdefault(name, df)
    table = claims.evaluate_claims("01_baselines", rows, save=saver)
    assert list(table.columns) == list(claims.COLUMNS)
    ra = table.set_index("key").loc["augmix_over_standard_ra"]
    assert ra.verdict == "shown" and ra.low > 0 and ra.seeds == 1
    assert ra.measured == pytest.approx(claims.unit_values(better, "ra").mean()
                                        - claims.unit_values(worse, "ra").mean(), abs=1e-3)
    assert "claims" in saver.written
    # A row the notebook did not run is reported, not an error.
    partial = claims.evaluate_claims("01_baselines", {"augmix": [better]})
    assert set(partial["verdict"]) == {"not run"}
    with pytest.raises(ValueError, match="no claims for notebook"):
        claims.evaluate_claims("99_nothing", rows)


def test_scorecard_counts_the_verdicts(tmp_path):
    for nb, verdicts in (("01_baselines", ["shown", "not resolved"]), ("05_maxup", ["opposite"])):
        folder = tmp_path / nb
        folder.mkdir()
        pd.DataFrame([{**dict.fromkeys(claims.COLUMNS, "x"), "measured": 1.0, "low": 0.5,
                       "high": 1.5, "verdict": v, "seeds": 1} for v in verdicts]).to_csv(
            folder / "claims.csv", index=False)
    text = claims.write_scorecard(tmp_path).read_text()
    assert "**3 claims**: 1 shown, 1 opposite, 1 not resolved" in text
    assert text.count("| 01_baselines |") == 2 and "[+0.50, +1.50]" in text


def test_scorecard_of_another_dataset_names_it_and_its_command(tmp_path):
    folder = tmp_path / "01_baselines"
    folder.mkdir()
    pd.DataFrame([{**dict.fromkeys(claims.COLUMNS, "x"), "measured": 1.0, "low": 0.5,
                   "high": 1.5, "verdict": "shown", "seeds": 1}]).to_csv(
        folder / "claims.csv", index=False)
    text = claims.write_scorecard(tmp_path, dataset="npz:/somewhere/else/real.npz").read_text()
    assert text.startswith("# Claims scorecard: npz:<path>/real.npz\n")
    assert "/somewhere/else" not in text  # the machine's path stays out of a committed file
    assert "make study DATASET=npz:<path>/real.npz" in text
    assert "Not run on this dataset" in text and "Not measured yet" not in text
    assert claims.write_scorecard(tmp_path).read_text().startswith("# Claims scorecard\n")


def test_outcomes_round_trip_and_damage_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "outcomes.npz"
    hits = {"clean": np.array([True, False, True]), "adv/linf/0.03137": np.array([False] * 3)}
    outcomes.save_outcomes(path, hits)
    back = outcomes.load_outcomes(path, expected={"clean": 3, "adv/linf/0.03137": 3})
    assert {k: v.tolist() for k, v in back.items()} == {k: v.tolist() for k, v in hits.items()}
    assert outcomes.load_outcomes(path, expected={"clean": 4}) is None  # another test set
    assert not path.exists() and list(tmp_path.glob("outcomes.npz.corrupt-*"))
    path.write_bytes(b"not a zip")
    assert outcomes.load_outcomes(path) is None
    assert "damaged" in caplog.text


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDYKIT_DATA", str(tmp_path / "data"))
    return tmp_path


def test_stored_outcomes_reproduce_the_runs_accuracies_and_are_recomputed_when_damaged(store):
    from studykit.experiment import run_experiment

    kw = dict(profile="smoke", progress=False, device="cpu", eval_corruptions=("fog",),
              eval_eps=(0.0, 2 / 255))
    first = run_experiment(**kw)
    hits = first.outcomes
    assert 100 * hits["clean"].mean() == pytest.approx(first.metrics["clean_acc"])
    fog = first.corruption.set_index("severity")["accuracy"]
    for s in SEVERITIES:
        assert 100 * hits[outcomes.corruption_key("fog", s)].mean() == pytest.approx(fog[s])
    adv = first.adversarial.set_index("eps")["accuracy"]
    assert 100 * hits[outcomes.adv_key("linf", 2 / 255)].mean() == pytest.approx(adv[2 / 255])
    # Loaded again: the same outcomes from the store.
    again = run_experiment(**kw)
    assert not again.trained
    assert all((again.outcomes[k] == v).all() for k, v in hits.items())
    # A damaged file is moved aside and the evaluation recomputed to the same outcomes.
    stored = next((store / "runs").rglob(outcomes.FILE_NAME))
    stored.write_bytes(b"\0" * 64)
    third = run_experiment(**kw)
    assert all((third.outcomes[k] == v).all() for k, v in hits.items())
    assert list(stored.parent.glob(f"{outcomes.FILE_NAME}.corrupt-*"))
