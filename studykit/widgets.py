"""Explorers: a knob a person turns in JupyterLab and the effect it has, one line per notebook.

Each explorer is an :class:`Explorer`: a few controls (ipywidgets), a function of their values
that returns a :class:`View` (image panels plus a small table), and one renderer that shows the
View either as live widgets or as one static PNG. Displaying an explorer emits both in one output
(the widget view and an ``image/png`` of its default state): JupyterLab renders the live widget,
while papermill, nbval and viewers without a widget manager keep the static figure. So batch
runs never depend on a frontend, and nothing here writes to ``figures/``.

Callbacks answer within a fraction of a second on a CPU: anything costly (corrupting the images,
AugMix chains, the AugMax search, reading the run store) is computed once per setting and
cached; a callback then mixes, classifies one image, or filters a table
(``benchmarks/explorer_latency.py`` measures it).

Explorers: :func:`corruption_explorer`, :func:`mixing_explorer`, :func:`ada_explorer`,
:func:`advbn_explorer`, :func:`results_browser`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as W
import matplotlib
import matplotlib.figure
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from studykit.analysis import as_float_images, ssim
from studykit.augmax_search import augmax_search
from studykit.augment import augmix_chains, mix, sample_augmix_params
from studykit.corruptions import corrupt, list_corruptions
from studykit.data import ImageDataset
from studykit.methods import method_config_fields
from studykit.runs import stored_runs
from studykit.threads import one_intra_op_thread

PANEL_SCALE = 4  # 32x32 images shown at 128x128, nearest neighbour


@dataclass
class View:
    """What an explorer shows for one setting of its controls.

    Attributes:
        panels: (caption, image) pairs; an image is a float tensor in [0, 1] of shape
            (C, H, W), or a matplotlib Figure (a chart).
        table: a small table under the panels (predictions, losses, metrics), or None.
        note: one line under the table.
    """

    panels: list[tuple[str, torch.Tensor | matplotlib.figure.Figure]]
    table: pd.DataFrame | None = None
    note: str = ""


def _png_of_image(img: torch.Tensor, scale: int = PANEL_SCALE) -> bytes:
    arr = (img.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255).round()
    arr = arr.astype(np.uint8)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    pil = Image.fromarray(arr)
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="png")
    return buf.getvalue()


def _png_of_figure(fig: matplotlib.figure.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def _png(panel: torch.Tensor | matplotlib.figure.Figure) -> bytes:
    if isinstance(panel, matplotlib.figure.Figure):
        return _png_of_figure(panel)
    return _png_of_image(panel)


def _table_html(table: pd.DataFrame | None, note: str) -> str:
    parts = []
    if table is not None:
        shown = table.reset_index() if table.index.name else table
        parts.append(shown.to_html(float_format=lambda v: f"{v:.3g}", border=0,
                                   index=not table.index.name))
    if note:
        parts.append(f"<p>{note}</p>")
    return "\n".join(parts)


def render_static(view: View, title: str = "") -> matplotlib.figure.Figure:
    """The View as one matplotlib figure: panels in a row, the table as text below."""
    images = [np.asarray(Image.open(io.BytesIO(_png(p)))) for _, p in view.panels]
    text = view.table.to_string(float_format=lambda v: f"{v:.3g}") if view.table is not None else ""
    if view.note:
        text = f"{text}\n{view.note}" if text else view.note
    n_lines = text.count("\n") + 1 if text else 0
    widths = [max(img.shape[1] / 128, 1.0) for img in images] or [1.0]
    fig = matplotlib.figure.Figure(figsize=(max(sum(widths) * 1.6, 6), 2.2 + 0.17 * n_lines))
    grid = fig.add_gridspec(2, max(len(images), 1), height_ratios=[2.2, 0.17 * n_lines + 0.05],
                            width_ratios=widths)
    for i, ((caption, _), img) in enumerate(zip(view.panels, images)):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    if text:
        ax = fig.add_subplot(grid[1, :])
        ax.axis("off")
        ax.text(0, 1, text, family="monospace", fontsize=7, va="top")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


class Explorer:
    """Controls, a View function of their values, and its live and static renderings.

    Args:
        title: shown above the controls (and on the static figure).
        controls: name -> value widget (sliders, dropdowns); each change calls ``compute``.
        compute: values (name -> value) -> View.
        buttons: extra widgets shown with the controls (their handlers set control values).
    """

    def __init__(self, title: str, controls: Mapping[str, W.ValueWidget],
                 compute: Callable[[dict[str, Any]], View],
                 buttons: Sequence[W.Widget] = ()) -> None:
        self.title = title
        self.controls = dict(controls)
        self.compute = compute
        self._panel_box = W.HBox()
        self.readout = W.HTML().add_class("studykit-readout")
        self.widget = W.VBox([W.HTML(f"<b>{title}</b>"),
                              W.HBox(list(self.controls.values()) + list(buttons)),
                              self._panel_box, self.readout]).add_class("studykit-explorer")
        self.widget.layout.flex_flow = "column"
        for child in self.widget.children[1].children:
            child.layout.flex = "0 1 auto"
        self.widget.children[1].layout.flex_flow = "row wrap"
        self.view = View([])
        self._default_png: bytes | None = None
        self.update()
        for w in self.controls.values():
            w.observe(lambda _change: self.update(), names="value")

    def values(self) -> dict[str, Any]:
        return {name: w.value for name, w in self.controls.items()}

    def update(self) -> View:
        """Recompute the View from the controls and show it (on one intra-op thread: a
        callback's work is small, and two threads on busy cores make it 10-200x slower)."""
        with one_intra_op_thread():
            self.view = self.compute(self.values())
        boxes = list(self._panel_box.children)
        if len(boxes) != len(self.view.panels):
            boxes = [W.VBox([W.Label(), W.Image(format="png")]) for _ in self.view.panels]
            self._panel_box.children = boxes
        for box, (caption, panel) in zip(boxes, self.view.panels):
            box.children[0].value = caption
            if isinstance(panel, torch.Tensor):  # the image's own size, scaled, not stretched
                box.children[1].layout.width = f"{panel.shape[-1] * PANEL_SCALE}px"
                box.children[1].layout.height = f"{panel.shape[-2] * PANEL_SCALE}px"
            box.children[1].value = _png(panel)
        self.readout.value = _table_html(self.view.table, self.view.note)
        return self.view

    def static_png(self) -> bytes:
        """PNG of the default state (the View when the explorer was built)."""
        if self._default_png is None:
            self._default_png = _png_of_figure(render_static(self.view, self.title))
        return self._default_png

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict:
        self.static_png()
        data = self.widget._repr_mimebundle_(**kwargs) or {}
        data = dict(data[0] if isinstance(data, tuple) else data)
        data["image/png"] = base64.b64encode(self._default_png).decode()
        data["text/plain"] = f"{self.title} (an interactive explorer; static view shown)"
        return data


def _class_name(classes: Sequence[str], k: int) -> str:
    return classes[k] if k < len(classes) else str(k)


@torch.no_grad()
def _eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """fp32 logits of ``x`` in eval mode, the model's mode restored."""
    was = model.training
    model.eval()
    try:
        return model(x.to(next(model.parameters()).device)).float()
    finally:
        model.train(was)


def _predict(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, softmax confidence) per image, in eval mode, mode restored."""
    conf, pred = F.softmax(_eval_logits(model, x), dim=1).cpu().max(1)
    return pred, conf


def corruption_explorer(dataset: ImageDataset, models: Mapping[str, nn.Module] | None = None, *,
                        n_images: int = 16, corruptions: str | Sequence[str] = "all",
                        severity: int = 3, seed: int = 0) -> Explorer:
    """Pick a test image, a corruption and a severity; see both images and every model's guess.

    Args:
        dataset: its first ``n_images`` test images are offered.
        models: name -> trained classifier (shown in eval mode); none: images only.
        corruptions: ``"all"``, ``"benchmark"``, ``"extra"`` or a list of names.
        severity: the initial severity (1-5). seed: seeds the corruptions' randomness.
    """
    names = list_corruptions(corruptions) if isinstance(corruptions, str) else list(corruptions)
    known = list_corruptions("all")
    bad = [c for c in names if c not in known]
    if bad:
        raise ValueError(f"unknown corruption(s) {bad}; choose from: {', '.join(known)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity!r}")
    n = min(n_images, dataset.x_test.shape[0])
    if n < 1:
        raise ValueError(f"n_images must be >= 1 and the test set non-empty, got {n_images!r}")
    x = as_float_images(dataset.x_test[:n])
    y = dataset.y_test[:n]
    models = dict(models or {})
    corrupted: dict[tuple[str, int], torch.Tensor] = {}
    guesses: dict[tuple[str, str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def images_for(name: str, sev: int) -> torch.Tensor:
        if (name, sev) not in corrupted:  # all n images at once: one batched call per setting
            g = torch.Generator().manual_seed(seed * 1000 + known.index(name) * 10 + sev)
            corrupted[(name, sev)] = corrupt(x, name, sev, generator=g)
        return corrupted[(name, sev)]

    def guess(model_name: str, key: str, sev: int, xs: torch.Tensor):
        if (model_name, key, sev) not in guesses:
            guesses[(model_name, key, sev)] = _predict(models[model_name], xs)
        return guesses[(model_name, key, sev)]

    def compute(v: dict[str, Any]) -> View:
        i, name, sev = v["image"], v["corruption"], v["severity"]
        xc = images_for(name, sev)
        rows = []
        for m in models:
            p0, c0 = guess(m, "clean", 0, x)
            p1, c1 = guess(m, name, sev, xc)
            rows.append({"model": m,
                         "clean": f"{_class_name(dataset.classes, int(p0[i]))} "
                                  f"({100 * float(c0[i]):.0f}%)",
                         f"{name} s{sev}": f"{_class_name(dataset.classes, int(p1[i]))} "
                                           f"({100 * float(c1[i]):.0f}%)",
                         "right on both": bool(p0[i] == y[i]) and bool(p1[i] == y[i])})
        table = pd.DataFrame(rows).set_index("model") if rows else None
        return View([("clean", x[i]), (f"{name}, severity {sev}", xc[i])], table,
                    f"label: {_class_name(dataset.classes, int(y[i]))}")

    controls = {
        "image": W.IntSlider(value=0, min=0, max=n - 1, description="image"),
        "corruption": W.Dropdown(options=names, value=names[0], description="corruption"),
        "severity": W.IntSlider(value=severity, min=1, max=5, description="severity"),
    }
    return Explorer("Corruptions: image, corruption, severity", controls, compute)


def mixing_explorer(model: nn.Module, dataset: ImageDataset, *, n_images: int = 8,
                    width: int = 3, severity: float = 3, steps: int = 10,
                    step_size: float = 0.1, seed: int = 0) -> Explorer:
    """AugMix / AugMax mixing of fixed chains on one image: sliders for m and the chain weights.

    The image is ``(1 - m) x + m sum_i w_i chain_i(x)`` (AugMix's mixture; AugMax searches m
    and w adversarially). The table gives the model's loss at the sliders' setting, at AugMix's
    own random draw (Dirichlet w, Beta m) and at the point the AugMax search found (``steps``
    sign-gradient steps of ``step_size``, no early stop), computed once for every image.

    Args:
        model: the classifier whose loss is shown (eval mode).
        dataset: its first ``n_images`` test images are offered.
    """
    n = min(n_images, dataset.x_test.shape[0])
    if n < 1 or width < 1:
        raise ValueError(f"need n_images >= 1 and width >= 1, got {n_images!r}, {width!r}")
    device = next(model.parameters()).device
    x = as_float_images(dataset.x_test[:n]).to(device)
    y = dataset.y_test[:n].to(device)
    g = torch.Generator().manual_seed(seed)
    params = sample_augmix_params(n, width=width, severity=severity, generator=g)
    chains = augmix_chains(x, params.to(device))
    # eval mode and fp32 inside the search (studykit.attacks.attack_mode)
    search = augmax_search(model, x, y, chains, steps=steps, step_size=step_size,
                           early_stop=None, generator=g)
    w_max = F.softmax(search.p, dim=1).detach()
    m_max = search.m.detach()

    def row(label: str, i: int, m: float, w: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """The table row of one mixing setting of image i, and its mixed image."""
        xm = mix(x[i:i + 1], chains[:, i:i + 1], w.reshape(1, -1).to(x), m)
        logits = _eval_logits(model, xm)
        prob = F.softmax(logits, 1)[0]
        return {"setting": label, "m": m, "w": " ".join(f"{float(a):.2f}" for a in w),
                "loss": float(F.cross_entropy(logits, y[i:i + 1])),
                "prediction": f"{_class_name(dataset.classes, int(prob.argmax()))} "
                              f"({100 * float(prob.max()):.0f}%)"}, xm[0]

    fixed: dict[int, list[dict]] = {}  # per image: the AugMix draw's and AugMax's rows

    def compute(v: dict[str, Any]) -> View:
        i = v["image"]
        w = torch.tensor([v[f"w{k + 1}"] for k in range(width)], dtype=torch.float32)
        w = w / w.sum() if float(w.sum()) > 0 else torch.full((width,), 1.0 / width)
        if i not in fixed:
            fixed[i] = [row("AugMix draw", i, float(params.m[i]), params.w[i])[0],
                        row("AugMax search", i, float(m_max[i]), w_max[i].cpu())[0]]
        slider_row, xm = row("sliders", i, float(v["m"]), w)
        rows = [slider_row, *fixed[i]]
        panels = [("clean", x[i].cpu())]
        panels += [(f"chain {k + 1}", chains[k, i].float().cpu()) for k in range(width)]
        panels.append((f"mixed (m={v['m']:.2f})", xm.detach().cpu()))
        return View(panels, pd.DataFrame(rows).set_index("setting"),
                    f"label: {_class_name(dataset.classes, int(y[i]))}")

    controls: dict[str, W.ValueWidget] = {
        "image": W.IntSlider(value=0, min=0, max=n - 1, description="image"),
        "m": W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="m"),
    }
    for k in range(width):
        controls[f"w{k + 1}"] = W.FloatSlider(value=1.0 / width, min=0.0, max=1.0, step=0.05,
                                              description=f"w{k + 1}")
    jump = W.Button(description="go to the AugMax point")

    def to_augmax(_button: Any) -> None:
        i = controls["image"].value
        with explorer.widget.hold_sync():
            controls["m"].value = round(float(m_max[i]), 2)
            for k in range(width):
                controls[f"w{k + 1}"].value = round(float(w_max[i, k]), 2)

    jump.on_click(to_augmax)
    explorer = Explorer("AugMix / AugMax mixing: m and the chain weights", controls, compute,
                        buttons=[jump])
    explorer.jump_to_augmax = lambda: to_augmax(jump)
    return explorer


def ada_explorer(classifier: nn.Module, dataset: ImageDataset, net: nn.Module, *,
                 radii: Sequence[float] = (0.0075, 0.015, 0.03, 0.06, 0.12), n_images: int = 8,
                 steps: int = 10, ssim_threshold: float = 0.3, exaggerate: float = 5.0,
                 seed: int = 0) -> Explorer:
    """AdA's radius nu on one image: the adversarial corruption, its SSIM, the guard's answer.

    For each radius (computed on first visit, for all ``n_images`` at once) AdA perturbs the
    corruption network ``net``'s weights inside per-layer balls of radius nu ||phi_l|| with
    ``steps`` iterated-FGSM steps against ``classifier``, then applies the SSIM guard (t =
    ``ssim_threshold``).

    Args:
        classifier: the model attacked (eval mode).
        dataset: its first ``n_images`` test images are offered.
        net: a pretrained `studykit.nets.corruption_net.CorruptionNet` (e.g. ``method.net`` of an
            AdA run, or ``pretrain_corruption_net(...).net``).
    """
    from studykit.methods import create_method

    radii = [float(r) for r in radii]
    if not radii or min(radii) <= 0:
        raise ValueError(f"radii must be positive numbers, got {radii!r}")
    n = min(n_images, dataset.x_test.shape[0])
    device = next(classifier.parameters()).device
    x = as_float_images(dataset.x_test[:n]).to(device)
    y = dataset.y_test[:n].to(device)
    done: dict[float, tuple[torch.Tensor, ...]] = {}

    def at(nu: float) -> tuple[torch.Tensor, ...]:
        if nu not in done:
            ada = create_method("ada", nu=nu, steps=steps, ssim_threshold=ssim_threshold)
            ada.seed(seed)
            ada.attach(net)
            # the search attacks in eval mode (studykit.attacks.attack_mode), mode restored
            x_hat, x_guard, _ = ada.corrupt(classifier, x, y, ada.rng(device))
            pred_hat, conf_hat = _predict(classifier, x_hat)
            done[nu] = (x_hat.detach(), x_guard.detach(), ssim(x, x_hat), ssim(x, x_guard),
                        pred_hat, conf_hat)
        return done[nu]

    pred_x, conf_x = _predict(classifier, x)

    def compute(v: dict[str, Any]) -> View:
        i, nu = v["image"], v["radius"]
        x_hat, x_guard, s_hat, s_guard, p_hat, c_hat = at(nu)
        diff = (0.5 + exaggerate * (x_hat[i] - x[i])).clamp(0, 1)
        caught = float(s_hat[i]) < ssim_threshold
        table = pd.DataFrame([
            {"image": "original", "SSIM to original": 1.0,
             "prediction": f"{_class_name(dataset.classes, int(pred_x[i]))} "
                           f"({100 * float(conf_x[i]):.0f}%)"},
            {"image": f"AdA, nu={nu:g}", "SSIM to original": float(s_hat[i]),
             "prediction": f"{_class_name(dataset.classes, int(p_hat[i]))} "
                           f"({100 * float(c_hat[i]):.0f}%)"},
            {"image": "after the SSIM guard", "SSIM to original": float(s_guard[i]),
             "prediction": "caught: pulled back to t" if caught else "unchanged (above t)"},
        ]).set_index("image")
        return View([("original", x[i].cpu()), (f"AdA (nu={nu:g})", x_hat[i].cpu()),
                     ("after the guard", x_guard[i].cpu()),
                     (f"difference x{exaggerate:g}", diff.cpu())], table,
                    f"label: {_class_name(dataset.classes, int(y[i]))}; mean SSIM over the "
                    f"{n} images at this radius: {float(s_hat.mean()):.3f}")

    controls = {
        "image": W.IntSlider(value=0, min=0, max=n - 1, description="image"),
        "radius": W.SelectionSlider(options=radii, value=radii[min(1, len(radii) - 1)],
                                    description="radius nu"),
    }
    return Explorer("AdA: the radius of the weight perturbation", controls, compute)


def advbn_explorer(ae: nn.Module, classifier: nn.Module, dataset: ImageDataset, *,
                   max_steps: int = 8, eps_values: Sequence[float] = (0.25, 0.5, 1.1, 1.5),
                   step_size: float = 0.2, n_images: int = 16) -> Explorer:
    """AdvBN's strength through the autoencoder: steps m and bound eps, and the decoded image.

    The ``n_images`` first test images are encoded together (AdvBN shifts the batch's
    per-channel statistics), shifted by m sign steps of ``step_size`` within [1 - eps, 1 + eps]
    against ``classifier``'s loss on the decoded images, and decoded
    (`studykit.nets.autoencoder.shift_images`); each (m, eps) is computed once.

    Args:
        ae: a trained `studykit.nets.autoencoder.AutoEncoder` (``autoencoder_run(...)[0]``).
        classifier: the model whose loss the shift raises (eval mode).
        dataset: its first ``n_images`` test images.
    """
    from studykit.nets.autoencoder import shift_images

    eps_values = [float(e) for e in eps_values]
    if max_steps < 1 or not eps_values or min(eps_values) <= 0:
        raise ValueError(f"need max_steps >= 1 and positive eps_values, got {max_steps!r}, "
                         f"{eps_values!r}")
    n = min(n_images, dataset.x_test.shape[0])
    device = next(classifier.parameters()).device
    x = as_float_images(dataset.x_test[:n]).to(device)
    y = dataset.y_test[:n].to(device)
    done: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def at(steps: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (steps, eps if steps else 0.0)  # m = 0: the plain reconstruction, any eps
        if key not in done:
            xs = shift_images(ae, classifier, x, y, steps=steps, step_size=step_size, eps=eps)
            pred, conf = _predict(classifier, xs)
            done[key] = (xs.detach().cpu(), pred, conf)
        return done[key]

    pred_x, conf_x = _predict(classifier, x)

    def compute(v: dict[str, Any]) -> View:
        i, m, eps = v["image"], v["steps"], v["eps"]
        rec, p_rec, c_rec = at(0, eps)
        sh, p_sh, c_sh = at(m, eps)
        rows = [("original", pred_x, conf_x), ("reconstruction (m=0)", p_rec, c_rec),
                (f"shifted (m={m}, eps={eps:g})", p_sh, c_sh)]
        table = pd.DataFrame([
            {"image": k, "right": bool(p[i].cpu() == y[i].cpu()),
             "prediction": f"{_class_name(dataset.classes, int(p[i]))} ({100 * float(c[i]):.0f}%)"}
            for k, p, c in rows])
        acc = 100 * float((p_sh.cpu() == y.cpu()).float().mean())
        return View([("original", x[i].cpu()), ("reconstruction (m=0)", rec[i]),
                     (f"AdvBN m={m}, eps={eps:g}", sh[i])], table.set_index("image"),
                    f"label: {_class_name(dataset.classes, int(y[i]))}; accuracy on the {n} "
                    f"shifted images: {acc:.0f}%")

    controls = {
        "image": W.IntSlider(value=0, min=0, max=n - 1, description="image"),
        "steps": W.IntSlider(value=min(2, max_steps), min=0, max=max_steps, description="steps m"),
        "eps": W.SelectionSlider(options=eps_values,
                                 value=min(eps_values, key=lambda e: abs(e - 1.1)),
                                 description="eps"),
    }
    return Explorer("AdvBN strength: feature statistics shifted, then decoded", controls, compute)


def _run_label(row: Mapping[str, Any]) -> str:
    """``method(option=value, ...)`` with the options that differ from the method's defaults."""
    try:
        defaults = method_config_fields(str(row["method"]))
    except ValueError:  # a method this version does not know: show every option
        defaults = {}
    def same(a: Any, b: Any) -> bool:  # JSON turned the defaults' tuples into lists
        return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)

    opts = {k: v for k, v in (row.get("options") or {}).items()
            if k not in defaults or not same(defaults[k], v)}
    inner = ", ".join(f"{k}={v}" for k, v in sorted(opts.items()))
    return f"{row['method']}({inner})" if inner else str(row["method"])


def results_browser(root: str | Path | None = None, *, metrics: Sequence[str] = ("clean_acc",
                                                                                    "ra")
                    ) -> Explorer:
    """Choose stored runs and metrics; see the table and a bar chart.

    Args:
        root: the run store (default: the project's ``runs/`` or ``$STUDYKIT_RUNS``).
        metrics: the metrics selected at first (the others can be added).
    """
    table = stored_runs(root)
    if table.empty:
        def compute_empty(_v: dict[str, Any]) -> View:
            return View([], None, f"no finished runs in {root or 'the run store'} yet")
        return Explorer("Results browser", {}, compute_empty)
    table = table.assign(run=[_run_label(r) for r in table.to_dict("records")])
    table["setting"] = [f"{d} / {a} / {n} images / {e} epochs" for d, a, n, e in
                        zip(table["dataset"], table["arch"], table["n_train"], table["epochs"])]
    numeric = [c for c in table.columns if c.startswith(("clean_acc", "ra", "mce", "adv_"))
               and pd.api.types.is_numeric_dtype(table[c])]
    settings = table["setting"].value_counts().index.tolist()
    chosen = [m for m in metrics if m in numeric] or numeric[:1]

    def runs_of(setting: str) -> list[str]:
        return sorted(table.loc[table["setting"] == setting, "run"].unique())

    def compute(v: dict[str, Any]) -> View:
        sub = table[(table["setting"] == v["setting"]) & table["run"].isin(v["runs"])]
        cols = [c for c in v["metrics"] if c in sub.columns]
        shown = sub.groupby("run")[cols].mean() if cols else pd.DataFrame()
        panels = []
        if not shown.empty:
            fig = matplotlib.figure.Figure(figsize=(1.2 + 0.9 * len(shown), 2.6))
            ax = fig.add_subplot()
            shown.plot.bar(ax=ax, rot=30, width=0.8)
            ax.set_ylabel("%")
            ax.legend(fontsize=7)
            ax.tick_params(axis="x", labelsize=7)
            panels.append(("", fig))
        return View(panels, shown if not shown.empty else None,
                    "" if cols and v["runs"] else "choose at least one run and one metric")

    first = runs_of(settings[0])
    controls = {
        "setting": W.Dropdown(options=settings, value=settings[0], description="setting"),
        "runs": W.SelectMultiple(options=first, value=tuple(first), rows=6, description="runs"),
        "metrics": W.SelectMultiple(options=numeric, value=tuple(chosen), rows=6,
                                    description="metrics"),
    }

    def on_setting(change: dict) -> None:
        runs = runs_of(change["new"])
        controls["runs"].options = runs
        controls["runs"].value = tuple(runs)

    controls["setting"].observe(on_setting, names="value")
    return Explorer("Results browser: stored runs and their metrics", controls, compute)


__all__ = ["Explorer", "View", "ada_explorer", "advbn_explorer", "corruption_explorer",
           "mixing_explorer", "render_static", "results_browser"]
