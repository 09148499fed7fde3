"""Leaderboard models (studykit.zoo): a checkpoint in RobustBench's cache layout is loaded by
its zoo name, arrives as a read-only run in the store and goes through the kit's evaluation.

Offline: the tests write the checkpoint themselves. Without robustbench a stand-in entry with a
kit architecture plays the zoo model; with it, a real entry's architecture is checked too.
"""

from __future__ import annotations

import argparse
import importlib
import json

import pytest
import torch

from studykit import evaluation, models, zoo
from studykit.cli import main
from studykit.runs import stored_runs

FAKE = "Fake2026Standin"


def _build() -> torch.nn.Module:
    torch.manual_seed(3)
    return models.create_model("small_cnn", 10, width=8)


@pytest.fixture(scope="module")
def fake_entry():
    entry = zoo.register_zoo_model(zoo.ZooEntry(FAKE, "corruptions", "test stand-in",
                                                "small_cnn", build=_build))
    yield entry
    zoo._ZOO.pop((entry.dataset, entry.threat_model, entry.name))


@pytest.fixture
def cache(tmp_path, fake_entry):
    """A zoo cache holding the stand-in's weights as a DataParallel checkpoint would."""
    net = _build()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = zoo.zoo_checkpoint_path(fake_entry, tmp_path / "zoo")
    assert path == tmp_path / "zoo" / "cifar10" / "corruptions" / f"{FAKE}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return tmp_path / "zoo", net.eval()


EVAL = {"profile": "smoke", "device": "cpu", "progress": False, "n_test": 64,
        "eval_corruptions": ["gaussian_noise", "fog"], "eval_adversarial": "linf",
        "eval_eps": (0.0, 8 / 255), "eval_pgd_steps": 2, "eval_adversarial_images": 16}


def test_a_zoo_model_is_a_read_only_run_evaluated_as_ours(cache, tmp_path):
    model_dir, net = cache
    runs = tmp_path / "runs"
    r = zoo.load_zoo_run(FAKE, "corruptions", "synthetic", model_dir=model_dir,
                         runs_root=runs, **EVAL)
    assert r.run.dir == runs / "synthetic" / "zoo" / f"{FAKE}-corruptions"
    stored = json.loads((r.run.dir / "config.json").read_text())["config"]
    assert stored["zoo_name"] == FAKE and stored["threat_model"] == "corruptions"
    assert stored["arch"] == "small_cnn" and "robustbench" in stored["source"]
    assert not r.trained and r.history.empty and r.eval_model is r.model
    # The published weights are what got evaluated.
    hits = evaluation.correct(net, r.dataset.x_test, r.dataset.y_test)
    assert r.metrics["clean_acc"] == pytest.approx(100.0 * hits.float().mean().item())
    assert r.outcomes["clean"].tolist() == hits.tolist()
    assert set(r.corruption["corruption"]) == {"gaussian_noise", "fog"}
    assert list(r.adversarial["eps"]) == pytest.approx([0.0, 8 / 255])
    assert len(r.outcomes["adv/linf/0.03137"]) == 16
    # Asked again: the stored evaluation, not a new one.
    metrics = next(r.run.dir.glob("eval/*/metrics.json"))
    stamp = metrics.stat().st_mtime_ns
    again = zoo.load_zoo_run(FAKE, dataset="synthetic", model_dir=model_dir, runs_root=runs,
                             **EVAL)
    assert again.metrics == r.metrics and metrics.stat().st_mtime_ns == stamp
    # It sits in the store beside trained runs, and a results table takes it.
    table = stored_runs(runs)
    assert list(table["method"]) == ["zoo"] and table["clean_acc"].iloc[0] == r.metrics[
        "clean_acc"]
    assert r.summary()["method"] == "zoo"


def test_new_weights_under_the_same_name_are_evaluated_afresh(cache, tmp_path):
    model_dir, net = cache
    ev = {**EVAL, "eval_corruptions": None, "eval_adversarial": None}
    first = zoo.load_zoo_run(FAKE, dataset="synthetic", model_dir=model_dir,
                             runs_root=tmp_path / "runs", **ev)
    flipped = {k: -v if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save(flipped, zoo.zoo_checkpoint_path(zoo.get_zoo_entry(FAKE), model_dir))
    second = zoo.load_zoo_run(FAKE, dataset="synthetic", model_dir=model_dir,
                              runs_root=tmp_path / "runs", **ev)
    assert len(list(first.run.dir.glob("eval/*/metrics.json"))) == 2
    assert torch.equal(next(second.model.parameters()), -next(first.model.parameters()))


def test_a_missing_checkpoint_is_one_line_naming_the_model_and_path(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(OSError) as info:
        zoo.load_zoo_run("Hendrycks2020AugMix_WRN", dataset="synthetic",
                         model_dir=tmp_path / "zoo", runs_root=runs, **EVAL)
    text = str(info.value)
    assert "\n" not in text and "Hendrycks2020AugMix_WRN" in text
    assert str(tmp_path / "zoo" / "cifar10" / "corruptions" / "Hendrycks2020AugMix_WRN.pt") in text
    assert not runs.exists()


def test_bad_names_and_training_keys_are_one_line_errors(cache, tmp_path):
    model_dir, _ = cache
    with pytest.raises(ValueError, match="unknown zoo model 'Nope'.*Hendrycks2020AugMix_WRN"):
        zoo.load_zoo_run("Nope", model_dir=model_dir)
    with pytest.raises(ValueError, match="unknown threat_model 'linf'.*Linf"):
        zoo.get_zoo_entry("Standard", "linf")
    with pytest.raises(ValueError, match=r"drop \['epochs'\]"):
        zoo.load_zoo_run(FAKE, dataset="synthetic", model_dir=model_dir,
                         runs_root=tmp_path / "runs", epochs=3)
    with pytest.raises(OSError, match="publishes no checkpoint"):
        zoo.load_zoo_model(zoo.get_zoo_entry("Calian2021Defending"), model_dir)
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_of_another_architecture_is_reported(cache):
    model_dir, _ = cache
    path = zoo.zoo_checkpoint_path(zoo.get_zoo_entry(FAKE), model_dir)
    torch.save(models.create_model("small_cnn", 10, width=16).state_dict(), path)
    with pytest.raises(OSError, match=f"does not fit the architecture of '{FAKE}'") as info:
        zoo.load_zoo_model(zoo.get_zoo_entry(FAKE), model_dir)
    assert "\n" not in str(info.value)


def test_a_truncated_checkpoint_is_one_line(cache):
    model_dir, _ = cache
    path = zoo.zoo_checkpoint_path(zoo.get_zoo_entry(FAKE), model_dir)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(OSError, match="cannot be read") as info:
        zoo.load_zoo_model(zoo.get_zoo_entry(FAKE), model_dir)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_checkpoint_pickled_with_its_training_arguments_loads(cache):
    model_dir, net = cache
    path = zoo.zoo_checkpoint_path(zoo.get_zoo_entry(FAKE), model_dir)
    torch.save({"state_dict": net.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    loaded = zoo.load_zoo_model(zoo.get_zoo_entry(FAKE), model_dir)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 net.state_dict().values()))


class _Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("unpickled",))


def test_a_checkpoint_holding_other_objects_is_refused_unread(cache, capsys):
    model_dir, net = cache
    path = zoo.zoo_checkpoint_path(zoo.get_zoo_entry(FAKE), model_dir)
    torch.save({"state_dict": net.state_dict(), "extra": _Payload()}, path)
    with pytest.raises(OSError, match="holds more than weights"):
        zoo.load_zoo_model(zoo.get_zoo_entry(FAKE), model_dir)
    assert "unpickled" not in capsys.readouterr().out


def test_checkpoint_wrappers_are_unwrapped():
    w = torch.ones(2)
    assert list(zoo.state_dict_of({"last": {"module.a": w}, "best": {}})) == ["a"]
    assert list(zoo.state_dict_of({"state_dict": {"model.b": w}})) == ["b"]
    with pytest.raises(OSError, match="not weights"):
        zoo.state_dict_of([w])


def test_the_table_covers_each_threat_model_and_says_what_loading_needs(cache):
    model_dir, _ = cache
    table = zoo.zoo_table(model_dir)
    assert set(table["threat_model"]) == set(zoo.THREAT_MODELS)
    needs = dict(zip(table["name"], table["needs"]))
    assert needs[FAKE] == "cached" and needs["Calian2021Defending"] == "unavailable"
    assert needs["Hendrycks2020AugMix_ResNeXt"] == "network"
    assert {"AugMix", "AdA", "PGD-AT"} <= set(table["paper"])


def test_cli_zoo_list_and_eval(cache, tmp_path, capsys):
    model_dir, _ = cache
    assert main(["zoo", "list", "--threat-model", "Linf", "--model-dir", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert "Engstrom2019Robustness" in out and "Hendrycks2020AugMix_WRN" not in out
    assert main(["zoo", "eval", "Hendrycks2020AugMix_WRN", "--model-dir", str(model_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not cached at" in err
    assert main(["zoo", "eval", "Nope"]) == 2
    assert "unknown zoo model 'Nope'" in capsys.readouterr().err
    runs = tmp_path / "runs"
    assert main(["zoo", "eval", FAKE, "--profile", "smoke", "--model-dir", str(model_dir),
                 "-p", "dataset=synthetic", "-p", f"runs_root='{runs}'", "-p", "n_test=32",
                 "-p", "eval_corruptions=['fog']", "-p", "eval_adversarial=None",
                 "-p", "progress=False", "-p", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert f"{FAKE}-corruptions" in out and "clean_acc" in out


def _robustbench() -> bool:
    try:
        importlib.import_module("robustbench.model_zoo")
    except Exception:  # missing, or it fails to import with this environment's packages
        return False
    return True


@pytest.mark.skipif(not _robustbench(), reason="robustbench is not importable")
def test_a_real_entry_loads_into_robustbench_architecture(tmp_path):
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    entry = zoo.get_zoo_entry("Hendrycks2020AugMix_WRN")
    build = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.corruptions][entry.name]["model"]
    torch.manual_seed(0)
    net = build().eval()
    path = zoo.zoo_checkpoint_path(entry, tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    loaded = zoo.load_zoo_model(entry, tmp_path)
    x = torch.rand(4, 3, 32, 32)  # [0, 1] images: the model normalises inside
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x))


def test_a_zoo_model_joins_the_benchmark_beside_a_trained_run(cache, tmp_path):
    from studykit import benchmark, viz
    from studykit.experiment import run_experiment

    model_dir, _ = cache
    ev = {**EVAL, "runs_root": tmp_path / "runs", "eval_corruptions": "benchmark"}
    results = {"standard": run_experiment(method="standard", **ev),
               f"zoo:{FAKE}": zoo.load_zoo_run(FAKE, dataset="synthetic", model_dir=model_dir,
                                               **ev)}
    table = benchmark.benchmark_table(results)
    assert list(table.index) == ["standard", f"zoo:{FAKE}"]
    assert table.loc[f"zoo:{FAKE}", "clean"] == results[f"zoo:{FAKE}"].metrics["clean_acc"]
    assert table.loc["standard", "mCE vs standard"] == pytest.approx(100.0)
    assert table.loc[f"zoo:{FAKE}", "Linf 8/255"] == results[f"zoo:{FAKE}"].metrics[
        "adv_linf@0.03137"]
    assert benchmark.drop_table(results).shape == (15, 2)
    assert benchmark.severity_table(results).shape == (2, 6)
    rows = benchmark.claim_rows(results)
    assert len(rows[f"zoo:{FAKE}"][0]["ra"]) == 64
    viz.plot_drop_heatmap(benchmark.drop_table(results))
