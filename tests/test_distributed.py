"""One run over several processes (``torchrun``, ``studykit.distributed``), on the CPU with gloo.

One launch of two processes (``python -m torch.distributed.run --nproc_per_node=2``) trains the
smoke profile's ``standard`` and ``pgd_at`` runs into a store, and a short training that is cut
after its first epoch and resumed next to one that is not; the same runs trained here in one
process are the reference. About 30 s of CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import REPO

from studykit import models
from studykit.data import DeviceLoader
from studykit.experiment import resolve_config, run_experiment
from studykit.rng import derive_seed
from studykit.runs import Run, RunStoreError

METHODS = ("standard", "pgd_at")
SMOKE = {"profile": "smoke", "device": "cpu", "progress": False, "eval_corruptions": None,
         "eval_adversarial": None}

# What the two processes run: the store's runs, then a resumed training next to an
# uninterrupted one (rank 0 saves both final models for the test).
SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from studykit import distributed
    from studykit.data import DeviceLoader
    from studykit.experiment import run_experiment
    from studykit.methods import create_method
    from studykit.models import create_model
    from studykit.train import TrainConfig, fit

    root, out = sys.argv[1], sys.argv[2]
    for method in {methods!r}:
        run_experiment(method=method, runs_root=root, **{smoke!r})

    class Cut(Exception):
        pass

    def cut(epoch, record, model):
        if epoch == 1:
            raise Cut

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (256,), generator=g)

    def train(ckpt, callbacks=()):
        torch.manual_seed(1)
        loader = DeviceLoader(x, y, 64, seed=0, rank=distributed.rank(),
                              world_size=distributed.world_size())
        method = create_method("pgd_at", steps=2)
        return fit(create_model("small_cnn", 10, width=8), method, loader,
                   TrainConfig(epochs=2, lr=0.05, seed=3), checkpoint_path=ckpt,
                   callbacks=callbacks, progress=False).model.state_dict()

    whole = train(out + "/whole.pt")
    try:
        train(out + "/cut.pt", [cut])
    except Cut:
        pass
    # Rank 0 alone writes the checkpoint: every rank resumes from it once it is written.
    distributed.wait_for_main()
    resumed = train(out + "/cut.pt")
    if distributed.is_main():
        torch.save({{"whole": whole, "resumed": resumed}}, out + "/resume.pt")
""")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The store two processes trained, and the folder of their resume check."""
    base = tmp_path_factory.mktemp("dist")
    script = base / "two_ranks.py"
    script.write_text(SCRIPT.format(methods=METHODS, smoke=SMOKE))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(base / "runs"), str(base)],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in state["model"].items() if v.is_floating_point()}


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_train_what_one_process_trains_with_the_same_global_batch(
        two_processes, tmp_path, method):
    one = run_experiment(method=method, runs_root=tmp_path, **SMOKE)
    two_dir = Run(one.config["train"], root=two_processes / "runs").dir
    assert (two_dir / "DONE").exists()
    w1, w2 = _weights(one.run.dir), _weights(two_dir)
    # The initial weights, as run_experiment draws them (their own seeded stream).
    torch.manual_seed(derive_seed(one.config["train"]["seed"], "init"))
    init = models.create_model("small_cnn", 10, width=8).state_dict()
    w0 = {k: init[k].float() for k in w1}
    moved = _distance(w1, w0)
    assert moved > 0
    # Tolerance: the two trainings differ only in BN statistics over a rank's half of each
    # batch and in the ranks' own random streams, so they end far closer to each other than
    # either is to where it started: within a quarter of the distance training moved.
    assert _distance(w1, w2) < 0.25 * moved
    h1 = one.history.iloc[-1]
    h2 = pd.read_csv(two_dir / "history.csv").iloc[-1]
    assert abs(h1["train_loss"] - h2["train_loss"]) < 0.1 * h1["train_loss"]


def test_only_rank_0_wrote_the_store(two_processes, tmp_path):
    one = run_experiment(method="standard", runs_root=tmp_path, **SMOKE)
    two_dir = Run(one.config["train"], root=two_processes / "runs").dir
    # The same files as a one-process run: no temporary file of a second writer, one config
    # recording the two processes.
    names = lambda d: sorted(p.relative_to(d).parts[0] for p in d.iterdir())  # noqa: E731
    assert names(two_dir) == names(one.run.dir)
    assert json.loads((two_dir / "config.json").read_text())["world_size"] == 2


def test_a_resumed_two_process_training_equals_an_uninterrupted_one(two_processes):
    saved = torch.load(two_processes / "resume.pt", weights_only=True)
    whole, resumed = saved["whole"], saved["resumed"]
    assert whole.keys() == resumed.keys()
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k


def test_a_rank_other_than_0_never_writes_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = Run({"dataset": "synthetic", "method": "standard"}, root=tmp_path)
    assert not run.writable
    with pytest.raises(RunStoreError, match="read-only"):
        run.write_config()
    assert not run.dir.exists()


def test_ranks_take_disjoint_slices_of_every_global_batch():
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(40)
    whole = [b for _, b in DeviceLoader(x, y, 8, seed=5)]
    ranks = [[b for _, b in DeviceLoader(x, y, 8, seed=5, rank=r, world_size=2)]
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole)
    for i, batch in enumerate(whole):
        assert torch.equal(torch.cat([ranks[0][i], ranks[1][i]]), batch)


def test_a_global_batch_that_does_not_divide_over_the_processes_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match=r"batch_size=128 does not divide over 3 processes"):
        resolve_config(profile="smoke", device="cpu")
    with pytest.raises(ValueError, match="sync_bn=True needs a CUDA device"):
        resolve_config(profile="smoke", device="cpu", batch_size=129, sync_bn=True)
