"""AdA and DeepAugment: the kit's SSIM against an independent implementation, the corruption
network's batched per-example forward, the perturbation balls, the inner maximization, the SSIM
guard, and the pretraining run (stored, resumable)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import fit_batch

from studykit import methods
from studykit.analysis import ssim
from studykit.models import create_model
from studykit.nets.corruption_net import (
    CorruptionNet,
    base_params,
    per_example_params,
    pretrain_corruption_net,
)
from studykit.ssim_guard import quadratic_root_near_one, ssim_guard
from studykit.weight_perturbation import (
    ada_search,
    block_radii,
    corruption_loss,
    median_step_size,
    project,
    sample_in_balls,
)


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of Wang et al. (2004) written from the paper, independent of the kit and of kornia:
    an 11 x 11 Gaussian window (sigma 1.5, normalized), K1 = 0.01, K2 = 0.03, data range 1,
    population (co)variances; the local statistics at every position where the window lies
    inside the image (no padding), the map averaged over those positions and the channels, as
    scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1) and tf.image.ssim average it.

    Shape: a, b: (C, H, W)."""
    t = np.arange(11) - 5.0
    g = np.exp(-t ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()

    def local_mean(img):  # (C, H, W) -> (C, H - 10, W - 10): weighted mean of every window
        windows = np.lib.stride_tricks.sliding_window_view(img, (11, 11), axis=(1, 2))
        return np.einsum("chwij,ij->chw", windows, w)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a ** 2
    var_b = local_mean(b * b) - mu_b ** 2
    cov = local_mean(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
         / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    assert s.shape == (a.shape[0], a.shape[1] - 10, a.shape[2] - 10)
    return float(s.mean())


def _smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    return F.interpolate(x, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


def _pairs(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Versions of 8 images ``x`` from identical to unrelated: noise of growing strength, a
    contrast change, a mirror image, an unrelated image."""
    g = torch.Generator().manual_seed(seed)
    noise = lambda i, s: x[i] + s * torch.randn(x[i].shape, generator=g)  # noqa: E731
    return torch.stack([x[0], noise(1, 0.02), noise(2, 0.1), noise(3, 0.3), x[4] * 0.5 + 0.2,
                        x[5].flip(-1), torch.rand(x[6].shape, generator=g),
                        noise(7, 0.6)]).clamp(0, 1)


def _check_against_reference(x: torch.Tensor, y: torch.Tensor) -> None:
    ours = ssim(x, y).double().numpy()
    ref = np.array([reference_ssim(a, b) for a, b in zip(x.double().numpy(), y.double().numpy())])
    assert ours[0] == pytest.approx(1.0, abs=1e-6)
    assert ref.min() < 0.3 < ref.max()  # the cases span the range the guard works in
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_ssim_matches_an_independent_valid_region_implementation():
    x = _smooth_images(8)
    _check_against_reference(x, _pairs(x, seed=1))


def test_ssim_matches_an_independent_implementation_on_real_images(shared_npz):
    with np.load(shared_npz) as d:
        x = torch.from_numpy(d["x_test"][:8]).permute(0, 3, 1, 2).float() / 255
    _check_against_reference(x, _pairs(x, seed=2))


def test_ssim_averages_the_valid_region_only():
    # The mean over a padded map (kornia's default, which mirrors the borders) is what the
    # reference tests must tell apart: on these pairs it is off by far more than their tolerance.
    from kornia.metrics import ssim as kornia_ssim

    x = _smooth_images(8)
    y = _pairs(x, seed=1)
    ref = np.array([reference_ssim(a, b) for a, b in zip(x.double().numpy(), y.double().numpy())])
    padded = kornia_ssim(x, y, 11, max_val=1.0).mean(dim=(1, 2, 3)).double().numpy()
    assert np.abs(padded - ref).max() > 1e-2
    with pytest.raises(ValueError, match="window_size"):
        ssim(x[:, :, :8, :8], y[:, :, :8, :8])
    with pytest.raises(ValueError, match="window_size"):
        ssim(x, y, window_size=10)


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained a little on smooth random images with 4 random labels."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, width=8)
    x = _smooth_images(64, seed=2)
    y = torch.arange(64) % 4
    return fit_batch(model, x, y, steps=30), x, y


def _net(seed: int = 0, channels: int = 8, blocks: int = 2) -> CorruptionNet:
    torch.manual_seed(seed)
    return CorruptionNet(channels, blocks).eval().requires_grad_(False)


def _random_start(nu: float, n: int):
    """A fresh net, its parameters, their radii at ``nu`` and a seeded start for ``n`` images."""
    net = _net()
    phi = base_params(net)
    radii = block_radii(phi, nu)
    return net, phi, radii, sample_in_balls(phi, radii, n, torch.Generator().manual_seed(0))


def test_batched_per_example_forward_equals_a_loop_over_images():
    net = _net()
    phi = base_params(net)
    x = _smooth_images(5)
    beta = sample_in_balls(phi, block_radii(phi, 0.05), 5, torch.Generator().manual_seed(0))
    batched = net(x, per_example_params(phi, beta))
    for i in range(5):
        params_i = {k: phi[k] + beta[k][i] for k in phi}
        one = torch.func.functional_call(net, params_i, (x[i:i + 1],))
        torch.testing.assert_close(batched[i:i + 1], one, atol=1e-5, rtol=1e-5)
    # beta = 0 is the network itself.
    zero = {k: torch.zeros_like(v) for k, v in beta.items()}
    torch.testing.assert_close(net(x, per_example_params(phi, zero)), net(x), atol=1e-5, rtol=0)


def test_batched_search_equals_a_search_per_image(trained):
    model, x, y = trained
    x, y = x[:4], y[:4]
    net, phi, radii, beta0 = _random_start(0.02, 4)
    batched, _ = ada_search(net, phi, model, x, y, beta0, radii, steps=3)
    for i in range(4):
        one, _ = ada_search(net, phi, model, x[i:i + 1], y[i:i + 1],
                            {k: v[i:i + 1] for k, v in beta0.items()}, radii, steps=3)
        for k in phi:
            torch.testing.assert_close(batched[k][i:i + 1], one[k], atol=1e-6, rtol=1e-5)


def test_every_block_stays_in_its_ball_after_every_step(trained):
    model, x, y = trained
    net, phi, radii, beta0 = _random_start(0.015, 16)
    for k, b in beta0.items():  # the random start is inside, and not at the centre
        norms = b.flatten(1).norm(dim=1)
        assert (norms <= radii[k] * (1 + 1e-5)).all() and (norms > 0).all(), k
    seen = []

    def check(step, beta, loss):
        seen.append(step)
        for k, b in beta.items():
            assert (b.flatten(1).norm(dim=1) <= radii[k] * (1 + 1e-5)).all(), (step, k)

    ada_search(net, phi, model, x[:16], y[:16], beta0, radii, steps=10, callback=check)
    assert seen == list(range(1, 11))
    # The step is a quarter of the median radius; projection leaves points inside unchanged.
    assert median_step_size(radii) == pytest.approx(0.25 * float(np.median(list(radii.values()))))
    inside = {k: 0.5 * v for k, v in beta0.items()}
    for k, v in project(inside, radii).items():
        torch.testing.assert_close(v, inside[k])


def test_inner_loop_raises_the_loss_over_its_random_start(trained):
    model, x, y = trained
    net, phi, radii, beta0 = _random_start(0.015, 32)
    start = corruption_loss(net, phi, model, x[:32], y[:32], beta0)
    beta, start_reported = ada_search(net, phi, model, x[:32], y[:32], beta0, radii, steps=10)
    end = corruption_loss(net, phi, model, x[:32], y[:32], beta)
    torch.testing.assert_close(start_reported, start)
    assert end.mean() > start.mean() * 1.1
    assert (end > start).float().mean() > 0.8


def test_ssim_guard_brings_caught_images_to_the_threshold_and_leaves_others():
    x = _smooth_images(8)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    strength = torch.tensor([0.02, 0.05, 0.3, 0.5, 0.8, 1.0, 0.03, 0.6]).view(-1, 1, 1, 1)
    x_hat = (x + strength * noise).clamp(0, 1)
    t = 0.3
    before = ssim(x, x_hat)
    caught = before < t
    assert 0 < caught.sum() < 8
    out, gamma = ssim_guard(x, x_hat, t)
    after = ssim(x, out)
    assert torch.equal(out[~caught], x_hat[~caught])
    assert (gamma[~caught] == 1).all() and (gamma[caught] < 1).all()
    # Within the quadratic fit's error (the appendix calls it approximate; ssim_guard.py).
    assert (after[caught] - t).abs().max() < 0.03
    # The guarded image lies on the segment from x to x_hat.
    gc = gamma[caught].view(-1, 1, 1, 1)
    torch.testing.assert_close(out[caught], (1 - gc) * x[caught] + gc * x_hat[caught])
    # t = 0 turns the guard off.
    assert torch.equal(ssim_guard(x, x_hat, 0.0)[0], x_hat)


def test_quadratic_root_is_the_one_in_the_unit_interval_closest_to_one():
    coef = torch.tensor([
        [1.0, -1.5, 0.5],  # roots 0.5 and 1.0 -> 1.0
        [1.0, -2.5, 1.0],  # roots 0.5 and 2.0 -> 0.5 (2 is outside, not clipped to 1)
        [0.0, -1.0, 0.25],  # linear: 0.25
        [1.0, 0.0, 1.0],  # no real root -> nan
    ])
    r = quadratic_root_near_one(coef)
    torch.testing.assert_close(r[:3], torch.tensor([1.0, 0.5, 0.25]))
    assert torch.isnan(r[3])


def _training_batch(method, model, x, y):
    """The images of the training forward of one ``training_step`` and its output."""
    seen = []
    handle = model.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach()))
    try:
        model.train()
        out = method.training_step(model, x, y)
    finally:
        handle.remove()
        model.eval()
    return seen[-1], out


def _unchanged(batch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (batch - x).flatten(1).abs().amax(1) == 0


@pytest.mark.parametrize("name", ["ada", "deepaugment"])
def test_training_batch_follows_the_papers_pipeline(name, trained):
    """AdA corrupts every image (Eq. 3); DeepAugment draws each from the clean or the
    processed set (half corrupted on average), and only those go through the network."""
    model, x, y = trained
    m = methods.create_method(name, **({"steps": 2} if name == "ada" else {}))
    m.seed(0)
    m.attach(_net(channels=8, blocks=1))
    net_inputs = []
    hook = m.net.register_forward_pre_hook(lambda mod, inp: net_inputs.append(inp[0].shape[0]))
    try:
        batch, out = _training_batch(m, model, x, y)
    finally:
        hook.remove()
    assert batch.shape == x.shape and out.logits.shape[0] == x.shape[0]
    clean = _unchanged(batch, x)
    if name == "ada":
        assert not clean.any()
        assert "start_ce" in out.metrics
    else:
        # 64 Bernoulli(0.5) draws: outside [16, 48] with probability below 1e-4.
        assert 16 <= int(clean.sum()) <= 48
        assert set(net_inputs) == {int((~clean).sum())}
        assert float(out.metrics["corrupted_frac"]) == pytest.approx(float((~clean).float().mean()))
    assert 0 <= float(out.metrics["guard_frac"]) <= 1


@pytest.mark.parametrize("options", [{"clean": True, "clean_share": 0.0}, {"clean": True}])
def test_clean_option_adds_the_whole_clean_batch(options, trained):
    model, x, y = trained
    m = methods.create_method("deepaugment", **options)
    m.seed(1)
    m.attach(_net(channels=8, blocks=1))
    batch, out = _training_batch(m, model, x[:8], y[:8])
    assert batch.shape[0] == 16 and out.logits.shape[0] == 8
    assert _unchanged(batch[:8], x[:8]).all()
    assert (~_unchanged(batch[8:], x[:8])).any()


def test_method_without_corruption_net_says_how_to_get_one(trained):
    model, x, y = trained
    with pytest.raises(RuntimeError, match="setup"):
        methods.create_method("deepaugment").training_step(model, x[:4], y[:4])


@pytest.mark.parametrize("distortion", ["hendrycks", "ball"])
def test_deepaugment_step_trains_with_either_distortion(distortion, trained):
    """DeepAugment's step with Hendrycks et al.'s operations (default) or a draw in AdA's
    balls: a finite loss with gradients, and distorted images that differ from the clean ones
    and from the network's reconstruction."""
    model, x, y = trained
    m = methods.create_method("deepaugment", distortion=distortion, clean_share=0.0)
    assert m.config.ssim_threshold == 0  # DeepAugment has no SSIM guard
    m.seed(0)
    net = _net(channels=8, blocks=2)
    m.attach(net)
    model = copy.deepcopy(model).train()
    out = m.training_step(model, x[:16], y[:16])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    x_hat, _, _ = m.corrupt(model, x[:16], y[:16], torch.Generator().manual_seed(0))
    with torch.no_grad():
        recon = net(x[:16])
    assert (x_hat - x[:16]).abs().flatten(1).amax(1).min() > 0
    assert (x_hat - recon).abs().flatten(1).amax(1).min() > 0


def test_deepaugment_bad_distortion_is_one_line_naming_the_choices():
    with pytest.raises(ValueError, match="'gaussian'.*hendrycks, ball") as err:
        methods.create_method("deepaugment", distortion="gaussian")
    assert "\n" not in str(err.value)


def test_pretraining_is_stored_and_resumes_like_any_run(tmp_path, monkeypatch):
    import studykit.train as train_module
    from studykit.runs import RunStore

    x_train = (_smooth_images(96, seed=4) * 255).to(torch.uint8)
    x_test = (_smooth_images(32, seed=5) * 255).to(torch.uint8)
    kw = dict(dataset="toy", data_key="abc", channels=4, blocks=1, epochs=3, lr=3e-3,
              batch_size=32)
    full = pretrain_corruption_net(x_train, x_test, store=RunStore(tmp_path / "a"), **kw)
    assert full.trained and full.run.is_done
    assert full.run.dir.parent.name == "corruption_net"
    assert {"psnr", "ssim"} <= set(full.metrics)
    assert full.history["l1"].iloc[-1] < full.history["l1"].iloc[0]
    again = pretrain_corruption_net(x_train, x_test, store=RunStore(tmp_path / "a"), **kw)
    assert not again.trained
    assert again.metrics == full.metrics
    for a, b in zip(full.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)
    # Without a store: trained here, the same net, nothing written.
    unstored = pretrain_corruption_net(x_train, x_test, **kw)
    assert unstored.trained and unstored.run is None
    for a, b in zip(full.net.state_dict().values(), unstored.net.state_dict().values()):
        assert torch.equal(a, b)

    save = train_module._save_atomic

    def save_then_stop(obj, path):
        save(obj, path)
        if obj["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_atomic", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        pretrain_corruption_net(x_train, x_test, store=RunStore(tmp_path / "b"), **kw)
    monkeypatch.setattr(train_module, "_save_atomic", save)
    resumed = pretrain_corruption_net(x_train, x_test, store=RunStore(tmp_path / "b"), **kw)
    assert resumed.trained
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), k
    assert full.history["l1"].tolist() == resumed.history["l1"].tolist()
    # A damaged checkpoint of a finished pretraining is moved aside and trained again.
    full.run.checkpoint.write_bytes(full.run.checkpoint.read_bytes()[:100])
    redone = pretrain_corruption_net(x_train, x_test, store=RunStore(tmp_path / "a"), **kw)
    assert redone.trained and list(full.run.dir.glob("checkpoint.corrupt-*.pt"))
    for a, b in zip(full.net.state_dict().values(), redone.net.state_dict().values()):
        assert torch.equal(a, b)


def test_run_experiment_hands_the_method_its_data_and_run_store(tmp_path, monkeypatch):
    import json

    from studykit import experiment

    hashed = []
    fingerprint = experiment.data_fingerprint
    monkeypatch.setattr(experiment, "data_fingerprint",
                        lambda ds: hashed.append(ds.name) or fingerprint(ds))
    r = experiment.run_experiment(method="deepaugment", profile="smoke", n_train=64, n_test=32,
                                  runs_root=str(tmp_path), eval_corruptions=None,
                                  eval_adversarial=None, progress=False, device="cpu")
    pre = r.method.pretrained
    assert pre.trained and pre.run.is_done
    # Kept in the classifier's store, next to it, for the data the classifier trained on.
    assert pre.run.dir.parent.parent == r.run.dir.parent.parent
    stored = json.loads((r.run.dir / "config.json").read_text())
    assert pre.run.config["data_key"] == stored["data_fingerprint"]
    assert len(hashed) == 1, "the data is hashed once"
