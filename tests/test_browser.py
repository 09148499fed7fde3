"""The notebooks in JupyterLab in a real browser: headless Chromium opens each notebook (its
parameters set to the smoke profile by papermill, not executed), runs every cell, and the test
checks that no cell failed, that the notebook's explorer rendered as a live widget, and that
what it shows changes when a slider (or, without one, a selection) moves. One screenshot per
notebook goes to ``test-output/browser/`` (``$STUDYKIT_TEST_OUTPUT`` overrides).

A live explorer needs a live kernel, so the cells run again here, but against the session's
run store and data folder (`notebook_session`), which the papermill executions of
tests/test_notebooks.py share: each smoke run is trained and evaluated once per session (the
run store's lock makes a kernel that asks for a run in training wait for it), and here loads.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and Playwright's Python client (a dev
dependency); it never downloads a browser. Skipped when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from studykit import study

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = study.list_notebooks(REPO / "notebooks")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What a closed network needs: no background connections, no GPU, no sandbox (root in CI).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]

# CI (.ci/run) installs the browser and sets STUDYKIT_REQUIRE_BROWSER: there a missing browser
# or client fails the test instead of skipping it.
REQUIRED = bool(os.environ.get("STUDYKIT_REQUIRE_BROWSER"))
if CHROMIUM is None and REQUIRED:
    raise RuntimeError("STUDYKIT_REQUIRE_BROWSER is set but chromium is not on PATH")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)"),
]
if REQUIRED:
    from playwright import sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api")

# True once every code cell ran with the kernel idle; "error: ..." as soon as a cell failed.
DONE_JS = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.sessionContext || !w.sessionContext.session) return false;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  for (const c of cells) {
    const outs = c.model.outputs.toJSON();
    const err = outs.find(o => o.output_type === 'error');
    if (err) return 'error: ' + err.ename + ': ' + err.evalue;
  }
  const kernel = w.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && cells.length > 0 &&
         cells.every(c => c.model.executionCount !== null);
}"""

# What the explorer shows: its readout's text and its images' sources.
SHOWN_JS = """(el) => [el.querySelector('.studykit-readout') ?
  el.querySelector('.studykit-readout').innerText : '',
  ...Array.from(el.querySelectorAll('img')).map(i => i.src)].join('|')"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Session-scoped: each xdist worker runs the browser test of a notebook next to that notebook's
# other tests (conftest.py), so one JupyterLab and one browser per worker serve them all.
@pytest.fixture(scope="session")
def lab(tmp_path_factory, notebook_session):
    """JupyterLab on a loopback port serving smoke-parameterized copies of the notebooks, its
    kernels on the session's run store and data folder."""
    import papermill

    work = tmp_path_factory.mktemp("lab")
    copies = work / "notebooks"
    copies.mkdir()
    for path in NOTEBOOKS:
        papermill.execute_notebook(str(path), str(copies / path.name),
                                   parameters={"PROFILE": "smoke"}, prepare_only=True,
                                   kernel_name="python3", progress_bar=False)
    env = dict(os.environ, **notebook_session.env("browser"),
               JUPYTER_CONFIG_DIR=str(work / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(work / "jupyter-runtime"))
    # No "get notified about Jupyter news?" prompt over the screenshots.
    settings = work / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env["JUPYTERLAB_SETTINGS_DIR"] = str(work / "lab-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(work / "lab-workspaces")
    port, token = _free_port(), "studykit-browser-test"
    log = open(work / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={copies}",
         "--allow-root", "--expose-app-in-browser", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("JupyterLab did not start:\n"
                                + (work / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, token, copies
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _screens() -> Path:
    out = Path(os.environ.get("STUDYKIT_TEST_OUTPUT") or REPO / "test-output") / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _nudge(page, explorer) -> None:
    """Move the explorer's first slider one step right; without a slider, keep only the first
    entry of its (all-selected) multiple-choice list."""
    handle = explorer.locator(".noUi-handle")
    if handle.count():
        handle.first.focus()
        page.keyboard.press("ArrowRight")
        return
    select = explorer.locator("select[multiple]").first  # the results browser's runs
    options = select.locator("option").all_inner_texts()
    assert len(options) > 1, f"nothing to choose from: {options}"
    select.select_option(options[:1])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab_and_its_explorer_responds(path, lab, browser):
    url, token, copies = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        # A workspace of its own, reset: only this notebook open, so it is the current widget.
        page.goto(f"{url}/lab/workspaces/{path.stem}/tree/{path.name}?reset&token={token}",
                  wait_until="domcontentloaded")
        page.wait_for_function(
            "(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!(w && w.context && w.context.path.endsWith(name) && w.sessionContext &&"
            " w.sessionContext.session && w.sessionContext.session.kernel && w.content); }",
            arg=path.name, timeout=120_000)
        page.evaluate("async () => { const w = window.jupyterapp.shell.currentWidget;"
                      " await w.sessionContext.ready;"
                      " await window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        done = page.wait_for_function(DONE_JS, timeout=900_000, polling=1000).json_value()
        assert done is True, f"{path.name}: {done}"
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        explorer = page.locator(".studykit-explorer").first
        explorer.wait_for(state="visible", timeout=60_000)
        explorer.scroll_into_view_if_needed()
        page.wait_for_function(f"(el) => ({SHOWN_JS})(el).length > 0",
                               arg=explorer.element_handle(), timeout=30_000)
        before = explorer.evaluate(SHOWN_JS)
        _nudge(page, explorer)
        page.wait_for_function(f"([el, before]) => ({SHOWN_JS})(el) !== before",
                               arg=[explorer.element_handle(), before], timeout=30_000)
        page.wait_for_timeout(300)  # let the new images paint before the screenshot
        page.screenshot(path=str(_screens() / f"{path.stem}.png"))
    finally:
        try:  # one kernel at a time: shut this notebook's down before the next one starts
            page.evaluate("async () => { const w = window.jupyterapp.shell.currentWidget;"
                          " if (w && w.sessionContext) await w.sessionContext.shutdown(); }")
        except Exception:  # the page may already be gone; the server's exit ends the kernel
            pass
        page.close()
    saved = json.loads((copies / path.name).read_text())
    errors = [o for c in saved["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors[0]
