"""A grid of runs launched as jobs (``studykit.sweep``, ``studykit sweep``) with submitit's local
executor: two smoke jobs, each its own process, into one run store that the notebooks read."""

from __future__ import annotations

import pytest
from helpers import REPO

from studykit.cli import main
from studykit.experiment import run_experiment
from studykit.runs import stored_runs
from studykit.sweep import expand_grid, sweep

pytest.importorskip("submitit")

SMOKE = ["-p", "device='cpu'", "-p", "eval_corruptions=None", "-p", "eval_adversarial=None"]


def test_two_local_jobs_train_into_the_store_the_notebooks_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "runs"
    code = main(["sweep", "--methods", "standard", "--seeds", "0,1", "--profile", "smoke",
                 "-p", f"runs_root='{root}'", *SMOKE, "--executor", "local",
                 "--folder", str(tmp_path / "jobs")])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("job_id") == 2  # the job table, then the results table
    stored = stored_runs(root)
    assert sorted(stored["seed"]) == [0, 1]
    assert set(stored["method"]) == {"standard"}
    for h in stored["hash"]:
        assert h in out
    # What a notebook asks for is loaded from the store, not trained again.
    r = run_experiment(profile="smoke", method="standard", seed=1, runs_root=root,
                       device="cpu", eval_corruptions=None, eval_adversarial=None,
                       progress=False)
    assert not r.trained
    assert str(r.run.dir) in set(stored["dir"])


def test_a_grid_is_every_combination_once():
    jobs = expand_grid({"method": ["standard", "augmix", "standard"], "seed": [0, 1]},
                       {"profile": "smoke"})
    assert len(jobs) == 4
    assert {(j["method"], j["seed"]) for j in jobs} == {
        (m, s) for m in ("standard", "augmix") for s in (0, 1)}
    assert all(j["profile"] == "smoke" for j in jobs)


def test_a_bad_job_stops_the_sweep_before_any_job_starts(tmp_path):
    folder = tmp_path / "jobs"
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        sweep({"method": ["standard", "nope"]}, profile="smoke", folder=folder)
    with pytest.raises(ValueError, match="unknown executor 'pbs'; choose one of: local, slurm"):
        sweep({"method": ["standard"]}, executor="pbs", folder=folder)
    with pytest.raises(ValueError, match="grid\\['seed'\\] is empty"):
        sweep({"method": ["standard"], "seed": []}, folder=folder)
    assert not folder.exists()


def test_sweep_command_mistakes_are_one_line(capsys):
    assert main(["sweep", "--methods", "standard", "--seeds", "a,b"]) == 2
    assert "--seeds 'a,b' must be comma-separated integers" in capsys.readouterr().err
