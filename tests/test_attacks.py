"""Attack contract tests: a table of PGD configurations against a tiny trained model.

In the style of foolbox: every configuration must stay in the eps ball and the [0, 1] box,
raise the loss, be reproducible from a seed, and leave the model exactly as it found it.
"""

from __future__ import annotations

import copy
import itertools
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from studykit.attacks import (
    PGD_PRESETS,
    adversarial_accuracy,
    affine_transform,
    attack_mode,
    default_step_size,
    flow_loss,
    flow_warp,
    gradient_masking_warnings,
    pgd,
    pgd_preset,
    sample_spatial_params,
    spatial_worst_of_k,
    stadv,
    stadv_flow,
)

NUM_CLASSES = 3


class TinyNet(nn.Module):
    """Two convs with a BatchNorm; normalization of the input is its first step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25
        x = F.relu(self.bn(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable toy problem: the class is the channel that is a little brighter."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = 0.5 + 0.2 * torch.randn(n, 3, 8, 8, generator=g)
    x[torch.arange(n), y] += 0.07
    return x.clamp(0, 1), y


@pytest.fixture(autouse=True)
def _one_thread():
    # The models here are tiny: one thread is faster than two fighting other jobs for 2 cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained_state() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TinyNet()
    x, y = make_data(128, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    torch.set_num_threads(threads)
    return copy.deepcopy(model.state_dict())


@pytest.fixture
def model(trained_state) -> TinyNet:
    net = TinyNet()
    net.load_state_dict(trained_state)
    return net.eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(64, seed=2)


def total_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y, reduction="sum"))


def random_noise(x: torch.Tensor, eps: float, norm: str, seed: int = 0) -> torch.Tensor:
    """Random perturbation of the attack's size (Linf: a random corner; L2: norm eps)."""
    g = torch.Generator().manual_seed(seed)
    if norm == "linf":
        delta = eps * torch.randint(0, 2, x.shape, generator=g).float().mul(2).sub(1)
    else:
        delta = torch.randn(x.shape, generator=g)
        delta = eps * delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return (x + delta).clamp(0, 1)


def assert_in_ball_and_box(x_adv, x, eps, norm):
    assert x_adv.shape == x.shape
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if norm == "linf":
        assert (x_adv - x).abs().max() <= eps + 1e-6
    else:
        assert (x_adv - x).flatten(1).norm(dim=1).max() <= eps + 1e-5


# ---------------------------------------------------------------------------------------------
# The table of PGD configurations.

CONFIGS = [
    (norm, eps, random_start, early_stop)
    for norm, eps in [("linf", 4 / 255), ("linf", 8 / 255), ("l2", 0.25), ("l2", 1.0)]
    for random_start, early_stop in itertools.product([True, False], [None, 1])
]


@pytest.mark.parametrize(("norm", "eps", "random_start", "early_stop"), CONFIGS)
def test_pgd_table(model, data, norm, eps, random_start, early_stop):
    x, y = data
    g = torch.Generator().manual_seed(0)
    x_adv = pgd(
        model,
        x,
        y,
        eps=eps,
        norm=norm,
        random_start=random_start,
        early_stop=early_stop,
        generator=g,
    )
    assert not x_adv.requires_grad
    assert_in_ball_and_box(x_adv, x, eps, norm)
    clean = total_loss(model, x, y)
    noise = total_loss(model, random_noise(x, eps, norm), y)
    attacked = total_loss(model, x_adv, y)
    assert attacked > clean
    assert attacked > noise
    # Same seed, same result.
    again = pgd(
        model,
        x,
        y,
        eps=eps,
        norm=norm,
        random_start=random_start,
        early_stop=early_stop,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(x_adv, again)


@pytest.mark.parametrize("name", list(PGD_PRESETS))
def test_presets(model, data, name):
    cfg = pgd_preset(name)
    cfg["eps"] += 0  # a copy: changing it must not change the table
    assert pgd_preset(name) == PGD_PRESETS[name]
    x, y = data
    x_adv = pgd(model, x[:16], y[:16], generator=torch.Generator().manual_seed(0), **cfg)
    assert_in_ball_and_box(x_adv, x[:16], cfg["eps"], cfg["norm"])


def test_preset_values():
    assert pgd_preset("linf_8") == dict(
        norm="linf", eps=8 / 255, step_size=2 / 255, steps=10, random_start=True
    )
    assert pgd_preset("linf_1")["step_size"] == pytest.approx(0.25 / 255)
    assert pgd_preset("l2_0.5")["step_size"] == pytest.approx(2.5 * 0.5 / 10)
    assert pgd_preset("l2_0.1")["eps"] == 0.1
    l2_1 = pgd_preset("l2_1.0")
    assert (l2_1["eps"], l2_1["steps"]) == (1.0, 7)
    assert l2_1["step_size"] == pytest.approx(2.5 / 7)
    with pytest.raises(ValueError, match="unknown PGD preset 'linf_9'; choose one of: linf_8"):
        pgd_preset("linf_9")


def test_default_step_sizes():
    assert default_step_size("linf", 8 / 255, 10) == pytest.approx(2 / 255)
    assert default_step_size("l2", 1.0, 7) == pytest.approx(2.5 / 7)


def test_same_seed_same_x_adv_different_seed_differs(model, data):
    x, y = data
    runs = [
        pgd(model, x, y, eps=0.1, norm=norm, generator=torch.Generator().manual_seed(s))
        for norm in ("linf", "l2")
        for s in (3, 3, 4)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert torch.equal(runs[3], runs[4]) and not torch.equal(runs[3], runs[5])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_trivial_budgets_return_x(model, data, norm):
    x, y = data
    assert torch.equal(pgd(model, x, y, eps=0.1, steps=0, norm=norm, random_start=False), x)
    assert torch.equal(pgd(model, x, y, eps=0.0, norm=norm), x)
    # steps=0 with a random start returns the (clipped) start point.
    start = pgd(model, x, y, eps=0.1, steps=0, norm=norm, generator=torch.Generator())
    assert_in_ball_and_box(start, x, 0.1, norm)
    assert not torch.equal(start, x)


def test_numpy_scalars_are_accepted(model, data):
    x, y = data
    x_adv = pgd(model, x, y, eps=np.float32(0.03), steps=np.int64(2), generator=torch.Generator())
    assert_in_ball_and_box(x_adv, x, 0.03, "linf")


def test_targeted_moves_towards_target(model, data):
    x, y = data
    target = (y + 1) % NUM_CLASSES
    x_adv = pgd(model, x, target, eps=0.1, targeted=True, random_start=False)
    assert total_loss(model, x_adv, target) < total_loss(model, x, target)


def test_zero_gradient_gives_no_nan(data):
    x, y = data
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES))
    nn.init.zeros_(flat[1].weight)  # the loss does not depend on the input
    for norm in ("linf", "l2"):
        x_adv = pgd(flat, x, y, eps=0.5, norm=norm, random_start=False)
        assert torch.equal(x_adv, x)
    messages = gradient_masking_warnings(flat, x, y)
    assert any("zero input gradient" in m for m in messages)


# ---------------------------------------------------------------------------------------------
# Early stopping (FAT): checked sample by sample against the full trajectory.


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("early_stop", [0, 1, 2])
def test_early_stop_is_per_sample(model, data, norm, early_stop):
    x, y = data
    eps, steps = (0.03, 6) if norm == "linf" else (0.5, 6)
    kw = dict(eps=eps, norm=norm, random_start=False, step_size=eps / 4)
    # Without randomness and in eval mode each sample's trajectory is independent of the others,
    # so running s steps replays the first s steps of any longer run.
    trajectory = [pgd(model, x, y, steps=s, **kw) for s in range(steps + 1)]
    with torch.no_grad():
        wrong = torch.stack([model(xs).argmax(1) != y for xs in trajectory[:steps]])
    # FAT: a sample stops at its (tau + 1)-th misclassified evaluation.
    count = wrong.long().cumsum(0)
    reached = count >= early_stop + 1
    stop_at = torch.where(reached.any(0), reached.float().argmax(0), torch.full_like(y, steps))
    expected = torch.stack([trajectory[int(s)][i] for i, s in enumerate(stop_at)])

    x_adv = pgd(model, x, y, steps=steps, early_stop=early_stop, **kw)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-6)

    # The toy problem must exercise all cases: wrong at the start, stopped midway, never stopped.
    assert wrong[0].any()
    assert ((stop_at > 0) & (stop_at < steps)).any()
    assert (stop_at == steps).any()
    if early_stop == 0:
        assert torch.equal(x_adv[wrong[0]], x[wrong[0]])


class ScriptedNet(nn.Module):
    """Classifies sample i (its id is written in pixel (0, 0, 0)) as wrong or right at each
    call as its script says, with a gradient of constant sign so every step moves it."""

    def __init__(self, scripts: list[str]):
        super().__init__()
        self.scripts = scripts
        self.calls = 0
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        ids = ((x[:, 0, 0, 0] - 0.05) * 10).round().long()
        wrong = torch.tensor([self.scripts[int(i)][self.calls] == "x" for i in ids])
        self.calls += 1
        logits = torch.stack([(~wrong).float(), wrong.float()], 1) * 10
        return logits + self.w * x.flatten(1).mean(1, keepdim=True) * torch.tensor([1.0, -1.0])


def fat_steps(script: str, tau: int) -> int:
    """Friendly Adversarial Training's rule, one sample at a time, as a plain loop."""
    budget = tau
    for step, mark in enumerate(script):
        if mark == "x":
            if budget == 0:
                return step
            budget -= 1
    return len(script)


@pytest.mark.parametrize("eval_mode", [True, False])
@pytest.mark.parametrize("tau", [0, 1, 2])
def test_fat_tau_counts_misclassified_steps_only(tau, eval_mode):
    # "x": misclassified at that step's check, ".": correct. The third script is wrong, then
    # right, then wrong again: counting steps after the first hit would stop it too early.
    scripts = ["......", "x.....", "x.x...", ".x.x.x", "xxxxxx", "..x..x"]
    n, steps, step = len(scripts), 6, 1e-3
    x = torch.full((n, 1, 2, 2), 0.5)
    x[:, 0, 0, 0] = torch.arange(n) / 10 + 0.05
    net = ScriptedNet(scripts)
    x_adv = pgd(net, x, torch.zeros(n, dtype=torch.long), eps=1.0, steps=steps, step_size=step,
                random_start=False, early_stop=tau, eval_mode=eval_mode)
    taken = ((x_adv - x)[:, 0, 1, 1].abs() / step).round().long()
    assert taken.tolist() == [fat_steps(s, tau) for s in scripts]


# ---------------------------------------------------------------------------------------------
# Model state: modes, BN statistics, requires_grad and .grad are left exactly as they were.


def set_modes(net: TinyNet, kind: str) -> TinyNet:
    if kind == "train":
        net.train()
    elif kind == "eval":
        net.eval()
    else:  # mixed: a train-mode model with its BN in eval mode and a conv in train mode
        net.train()
        net.bn.eval()
        net.head.eval()
    return net


def snapshot(net: nn.Module):
    modes = {name: m.training for name, m in net.named_modules()}
    buffers = {name: b.clone() for name, b in net.named_buffers()}
    flags = {name: p.requires_grad for name, p in net.named_parameters()}
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in net.named_parameters()}
    return modes, buffers, flags, grads


def assert_same_state(net: nn.Module, before) -> None:
    modes, buffers, flags, grads = before
    assert {name: m.training for name, m in net.named_modules()} == modes
    for name, b in net.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert {name: p.requires_grad for name, p in net.named_parameters()} == flags
    for name, p in net.named_parameters():
        if grads[name] is None:
            assert p.grad is None, name
        else:
            assert torch.equal(p.grad, grads[name]), name


ATTACKS = {
    "pgd_linf": lambda net, x, y, em: pgd(net, x, y, eps=0.03, steps=2, eval_mode=em),
    "pgd_l2_fat": lambda net, x, y, em: pgd(
        net, x, y, eps=0.5, norm="l2", steps=2, early_stop=0, eval_mode=em
    ),
    "spatial": lambda net, x, y, em: spatial_worst_of_k(net, x, y, k=2, eval_mode=em),
    "stadv": lambda net, x, y, em: stadv(net, x, y, steps=2, eval_mode=em),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("kind", ["train", "eval", "mixed"])
@pytest.mark.parametrize("eval_mode", [True, False])
def test_model_state_is_restored(model, data, attack, kind, eval_mode):
    x, y = data
    net = set_modes(model, kind)
    net.conv2.bias.requires_grad_(False)
    net.head.weight.grad = torch.full_like(net.head.weight, 0.5)
    before = snapshot(net)

    seen = []
    handle = net.bn.register_forward_hook(lambda m, i, o: seen.append(m.training))
    ATTACKS[attack](net, x, y, eval_mode)
    handle.remove()

    assert_same_state(net, before)
    # eval_mode=True attacks in eval mode; eval_mode=False keeps the BN's own mode.
    assert seen and set(seen) == {False if eval_mode else before[0]["bn"]}


def test_attack_under_no_grad_and_inside_a_training_step(model, data):
    x, y = data
    net = model.train()
    with torch.no_grad():
        x_adv = pgd(net, x, y, eps=0.03, steps=2)
    assert not x_adv.requires_grad and (x_adv != x).any()
    # A graph built before the attack still backpropagates into the parameters afterwards.
    loss = F.cross_entropy(net(x), y)
    x_adv = pgd(net, x, y, eps=0.03, steps=2)
    (loss + F.cross_entropy(net(x_adv), y)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_attack_mode_restores_on_error(model):
    net = set_modes(model, "train")
    before = snapshot(net)
    with pytest.raises(RuntimeError), attack_mode(net, eval_mode=False):
        net.bn.running_mean.add_(1.0)
        raise RuntimeError("boom")
    assert_same_state(net, before)


# ---------------------------------------------------------------------------------------------
# Spatial worst-of-k.


def test_affine_transform_identity_shift_and_rotation():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    zeros = torch.zeros(2)
    torch.testing.assert_close(affine_transform(x, zeros, torch.zeros(2, 2)), x)
    shifted = affine_transform(x, zeros, torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    torch.testing.assert_close(shifted[0, :, :, 1:], x[0, :, :, :-1])  # right by 1 px
    assert shifted[0, :, :, 0].abs().max() == 0  # black fill
    torch.testing.assert_close(shifted[1, :, 2:, :], x[1, :, :-2, :])  # down by 2 px
    rotated = affine_transform(x, torch.full((2,), 90.0), torch.zeros(2, 2))
    torch.testing.assert_close(rotated, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_spatial_keeps_the_worst_of_k_per_sample(model, data):
    x, y = data
    k = 5
    x_adv = spatial_worst_of_k(model, x, y, k=k, generator=torch.Generator().manual_seed(7))
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1

    angles, shifts = sample_spatial_params(
        len(x), k, max_rotation=30.0, max_translation=3.0,
        generator=torch.Generator().manual_seed(7),
    )  # fmt: skip
    assert angles.abs().max() <= 30 and shifts.abs().max() <= 3
    with torch.no_grad():
        trials = torch.stack([affine_transform(x, angles[t], shifts[t]) for t in range(k)])
        losses = torch.stack(
            [F.cross_entropy(model(trials[t]), y, reduction="none") for t in range(k)]
        )
        got = F.cross_entropy(model(x_adv), y, reduction="none")
    torch.testing.assert_close(got, losses.max(0).values)
    torch.testing.assert_close(x_adv, trials[losses.argmax(0), torch.arange(len(x))])
    again = spatial_worst_of_k(model, x, y, k=k, generator=torch.Generator().manual_seed(7))
    assert torch.equal(x_adv, again)


# ---------------------------------------------------------------------------------------------
# StAdv.


@pytest.mark.parametrize("size", [(8, 8), (32, 32), (7, 5), (64, 64)])
def test_zero_flow_returns_the_image_exactly(model, data, size):
    x = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(flow_warp(x, torch.zeros(3, 2, *size)), x)
    xd, y = data
    assert torch.equal(stadv(model, xd, y, steps=0), xd)
    assert torch.equal(stadv(model, xd, y, bound=0.0), xd)


def test_flow_is_in_pixels():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    flow = torch.zeros(2, 2, 8, 8)
    flow[0, 0] = 1.0  # image 0: every pixel reads its right neighbour
    flow[1, 1] = -2.0  # image 1: every pixel reads two rows up
    out = flow_warp(x, flow)
    torch.testing.assert_close(out[0, :, :, :-1], x[0, :, :, 1:])
    torch.testing.assert_close(out[0, :, :, -1], x[0, :, :, -1])  # the border clamps
    torch.testing.assert_close(out[1, :, 2:], x[1, :, :-2])
    half = flow_warp(x, flow / 2)  # half a pixel: the mean of the two neighbours
    torch.testing.assert_close(half[0, :, :, :-1], (x[0, :, :, :-1] + x[0, :, :, 1:]) / 2)


def test_flow_loss_counts_each_neighbour_pair_both_ways():
    flow = torch.zeros(1, 2, 3, 4)
    assert flow_loss(flow, eps=0.0).item() == 0
    flow[0, :, 1, 1] = torch.tensor([3.0, 4.0])  # one pixel moved by 5 px, four neighbours
    # p and each of its 4 neighbours differ by 5, counted from both sides.
    assert flow_loss(flow, eps=0.0).item() == pytest.approx(2 * 4 * 5.0)
    # A uniform flow is perfectly smooth: only the eps terms, one per ordered pair.
    pairs = 2 * (3 * 3 + 2 * 4)
    assert flow_loss(torch.full((1, 2, 3, 4), 0.7), eps=1e-4).item() == pytest.approx(
        pairs * 1e-2)


def test_stadv_raises_the_loss_and_stays_within_its_bound(model, data):
    x, y = data
    for bound in (0.5, 1.0):
        flow = stadv_flow(model, x, y, bound=bound, steps=5)
        assert flow.shape == (len(x), 2, 8, 8)
        assert flow.abs().max() <= bound  # the clip is active: some components sit on it
        assert (flow.abs() == bound).any()
        x_adv = flow_warp(x, flow)
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert total_loss(model, x_adv, y) > total_loss(model, x, y)
        assert torch.equal(stadv(model, x, y, bound=bound, steps=5), x_adv)  # deterministic
    # The smoothness term makes the flow smoother than pure loss ascent.
    rough = stadv_flow(model, x, y, steps=5, tau=0.0)
    smooth = stadv_flow(model, x, y, steps=5, tau=0.05)
    assert flow_loss(smooth).sum() < flow_loss(rough).sum()


def test_stadv_errors_name_the_bad_value(model, data):
    x, y = data
    with pytest.raises(ValueError, match=r"bound must be .* got -1"):
        stadv(model, x, y, bound=-1.0)
    with pytest.raises(ValueError, match=r"tau must be .* got nan"):
        stadv(model, x, y, tau=float("nan"))
    with pytest.raises(ValueError, match=r"steps must be .* got -1"):
        stadv(model, x, y, steps=-1)
    with pytest.raises(ValueError, match="batch size"):
        stadv(model, x, y[:3])
    with pytest.raises(ValueError, match=r"flow must have shape \(64, 2, 8, 8\)"):
        flow_warp(x, torch.zeros(64, 2, 4, 4))


# ---------------------------------------------------------------------------------------------
# Accuracy curves, masking checks and errors.


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_adversarial_accuracy_curve(model, data, norm):
    x, y = data
    eps_list = [0.0, 0.02, 0.05, 0.1] if norm == "linf" else [0.0, 0.25, 0.5, 1.0]
    net = set_modes(model, "mixed")
    before = snapshot(net)
    acc = adversarial_accuracy(
        net,
        x,
        y,
        eps_list=eps_list,
        norm=norm,
        steps=5,
        batch_size=24,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert_same_state(net, before)
    assert list(acc) == eps_list
    with torch.no_grad():
        clean = 100.0 * float((model.eval()(x).argmax(1) == y).float().mean())
    assert acc[0.0] == pytest.approx(clean)
    assert clean > 80  # the toy model learned something
    values = list(acc.values())
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert values[-1] < values[0]
    # The generator restarts for every eps: one eps alone gives the same number.
    alone = adversarial_accuracy(
        model,
        x,
        y,
        eps_list=[eps_list[2]],
        norm=norm,
        steps=5,
        batch_size=24,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert alone[eps_list[2]] == acc[eps_list[2]]


def test_adversarial_accuracy_step_size_function(model, data):
    x, y = data
    kw = dict(eps_list=[0.5], norm="l2", steps=3, progress=False, random_start=False)
    by_fn = adversarial_accuracy(model, x, y, step_size=lambda e: 2.5 * e / 7, **kw)
    by_value = adversarial_accuracy(model, x, y, step_size=2.5 * 0.5 / 7, **kw)
    assert by_fn == by_value


def test_gradient_masking_checks(model, data, caplog):
    x, y = data
    assert gradient_masking_warnings(model, x, y) == []

    class Randomized(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x + 0.1 * torch.randn_like(x))

    with caplog.at_level(logging.WARNING, logger="studykit.attacks"):
        messages = gradient_masking_warnings(Randomized(model), x, y)
    assert any("randomized" in m for m in messages)
    assert "randomized" in caplog.text


def test_errors_name_the_bad_value(model, data):
    x, y = data
    with pytest.raises(ValueError, match=r"unknown norm 'l3'; choose one of: linf, l2"):
        pgd(model, x, y, eps=0.1, norm="l3")
    with pytest.raises(ValueError, match=r"eps must be .* got -0\.1"):
        pgd(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match=r"steps must be .* got -1"):
        pgd(model, x, y, eps=0.1, steps=-1)
    with pytest.raises(ValueError, match=r"early_stop must be .* got -2"):
        pgd(model, x, y, eps=0.1, early_stop=-2)
    with pytest.raises(ValueError, match=r"step_size must be .* got -0\.5"):
        pgd(model, x, y, eps=0.1, step_size=-0.5)
    with pytest.raises(ValueError, match="batch size"):
        pgd(model, x, y[:3], eps=0.1)
    with pytest.raises(ValueError, match=r"unknown norm 'linf2'"):
        adversarial_accuracy(model, x, y, eps_list=[0.0], norm="linf2")
    with pytest.raises(ValueError, match=r"eps must be .* got nan"):
        adversarial_accuracy(model, x, y, eps_list=[float("nan")])
    with pytest.raises(ValueError, match=r"k must be"):
        spatial_worst_of_k(model, x, y, k=0)


@pytest.mark.gpu
def test_on_gpu_with_cpu_generator(trained_state, data):
    net = TinyNet()
    net.load_state_dict(trained_state)
    net = net.cuda().eval()
    x, y = data
    xc, yc = x.cuda(), y.cuda()
    for norm in ("linf", "l2"):
        runs = [
            pgd(net, xc, yc, eps=0.1, norm=norm, generator=torch.Generator().manual_seed(1))
            for _ in range(2)
        ]
        assert runs[0].device == xc.device and torch.equal(runs[0], runs[1])
        assert_in_ball_and_box(runs[0].cpu(), x, 0.1, norm)
    adv = spatial_worst_of_k(net, xc, yc, generator=torch.Generator().manual_seed(1))
    assert adv.device == xc.device
    # Data on the CPU, model on the GPU: batches move to the model.
    acc = adversarial_accuracy(net, x, y, eps_list=[0.0, 0.05], progress=False)
    assert acc[0.0] >= acc[0.05]
