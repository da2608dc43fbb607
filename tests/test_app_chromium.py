"""The web app in Chromium (Playwright, Debian's chromium): the page loads from the registry, three
families run end to end from the form on a tiny model (one on the default model, slow), the views
show the result's tokens with colours scaled to its values and its check figure, a saved result
reopens, two results compare side by side, and a ``<script>`` prompt stays text. Every test fails on
a console error, a failed request or a sideways scroll at 1280 px, and writes a screenshot when it fails
(into ``$INTERPRETLM_SCREENSHOTS`` or the test's temporary folder).

Skipped only when no ``chromium`` is on PATH (``make test`` installs it).
"""

import math
import os
import re
import socket
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
import uvicorn  # noqa: E402

import interpretlm as il  # noqa: E402
from interpretlm.app import create_app  # noqa: E402
from interpretlm.testing import tiny_lm  # noqa: E402
from interpretlm.viz.figures import Heatmap, TokenShading  # noqa: E402
from interpretlm.viz.html import visible  # noqa: E402

from conftest import CHROMIUM  # noqa: E402  (the browser fixture is conftest's)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (make test installs it)")
# Chromium keeps a colour's alpha in 8 bits and prints it with 2 decimals when that round-trips
ALPHA_TOL = 1 / 255 + 0.005
IOI = "When Mary and John went to the store, John gave a drink to"


@contextmanager
def running(app):
    """Serve ``app`` with uvicorn on a free loopback port; yields its URL."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started and time.monotonic() < end:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("runs")
    app = create_app({"tiny-llama": tiny_lm("llama", seed=0)}, data)
    with running(app) as url:
        yield url, app


@pytest.fixture()
def page(browser, served, request, tmp_path):
    """The app's page at 1280 px. After the test: no console error, no failed request, no dialog
    (a ``<script>`` that ran would open one), no sideways scroll; a screenshot if the test failed."""
    url, _ = served
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} {r.failure}"))
    pg.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    pg.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    pg.goto(url + "/")
    pg.wait_for_selector("body[data-ready]")
    yield pg
    shots = Path(os.environ.get("INTERPRETLM_SCREENSHOTS", tmp_path))
    try:
        assert problems == [], problems
        assert pg.evaluate("document.documentElement.scrollWidth") <= 1280
    except AssertionError:
        shots.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
        raise
    finally:
        pg.close()


@contextmanager
def screenshot_on_failure(pg, name):
    try:
        yield
    except BaseException:
        shots = Path(os.environ.get("INTERPRETLM_SCREENSHOTS",
                                    Path(tempfile.gettempdir()) / "interpretlm-screenshots"))
        shots.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        print(f"screenshot: {shots / name}.png")
        raise


def run_form(pg, method, pane="a", timeout=60_000, **fields):
    """Choose ``method`` in the form, fill ``fields`` (element id -> value), run, wait for the view."""
    pg.select_option("#method", method)
    for key, value in fields.items():
        if key.startswith("select:"):
            pg.select_option(f"#{key[7:]}", value)
        elif key.startswith("check:"):
            pg.set_checked(f"#{key[6:]}", value)
        else:
            pg.fill(f"#{key}", value)
    pg.select_option("#pane-pick", pane)
    pg.click("#run")
    pg.wait_for_function("() => /^(done|error|cancelled|refused)/.test(document.getElementById('job-status')"
                         ".textContent)", timeout=timeout)
    text = pg.text_content("#job-status")
    assert text.startswith("done"), text
    name = re.search(r"(\S+\.json)", text).group(1)
    pg.wait_for_selector(f'#pane-{pane}[data-result="{name}"] section.figure', timeout=timeout)
    return name


def alpha(css: str) -> tuple[str, float]:
    """``rgba(214, 39, 40, 0.3)`` -> ("red", 0.3); transparent -> ("", 0)."""
    nums = [float(x) for x in re.findall(r"[\d.]+", css)]
    if len(nums) < 4:
        return "", 0.0 if css.startswith("rgba") or css == "transparent" else 1.0
    return ("red" if nums[0] > 100 else "blue"), nums[3]


def check_shading(pg, pane, fig):
    """Tokens drawn are the figure's tokens; each background is red/blue with alpha 0.6 |v| / scale."""
    got = pg.eval_on_selector_all(f"#pane-{pane} section.figure .il-tokens .il-tok",
                                  "els => els.map(e => [e.textContent, getComputedStyle(e).backgroundColor, e.title])")
    assert [g[0] for g in got] == [visible(t) for t in fig.tokens]
    finite = [abs(v) for v in fig.values if math.isfinite(v)]
    scale = fig.scale or max(finite)
    for (_, bg, title), v in zip(got, fig.values):
        side, a = alpha(bg)
        assert a == pytest.approx(0.6 * min(abs(v) / scale, 1.0), abs=ALPHA_TOL), (v, bg)
        if a > 0.01:
            assert side == ("red" if v > 0 else "blue")
        assert f"{v:.3g}" in title  # hovering a token shows its value
    return got


def check_heatmap(pg, pane, fig):
    cells = pg.eval_on_selector_all(f"#pane-{pane} table.il-heat td", "els => els.map(e => getComputedStyle(e)"
                                                                      ".backgroundColor)")
    values = [v for row in fig.values for v in row]
    assert len(cells) == len(values)
    scale = fig.scale or max(abs(v) for v in values if math.isfinite(v))
    for bg, v in zip(cells, values):
        if math.isfinite(v):
            assert alpha(bg)[1] == pytest.approx(0.6 * min(abs(v) / scale, 1.0), abs=ALPHA_TOL), (v, bg)
    lo, hi = (float(pg.get_attribute(f"#pane-{pane} .il-legend >> nth=0", k)) for k in ("data-min", "data-max"))
    assert (lo, hi) == pytest.approx((-scale, scale), rel=1e-6)


def check_figure_shown(pg, pane, result):
    text = pg.text_content(f"#pane-{pane} .il-check")
    assert result.check.name in text
    assert ("passed" in text) == bool(result.check.passed)


def test_page_lists_every_registered_method(page):
    with screenshot_on_failure(page, "page"):
        names = page.eval_on_selector_all("#method option", "os => os.map(o => o.value)")
        assert sorted(names) == sorted(il.methods().names())
        page.select_option("#method", "integrated_gradients")
        assert page.input_value("#options [data-option=tol]") == ""  # empty: the default, shown as placeholder
        assert page.get_attribute("#options [data-option=tol]", "placeholder") == "0.01"
        page.select_option("#method", "probe")
        assert page.is_visible("#task") and not page.is_visible("#prompt")
        assert page.locator("#options [data-option=path]").count() == 0
        ready_ms = float(page.get_attribute("body", "data-ready"))
        assert ready_ms >= 0


def test_three_families_end_to_end(page, served):
    _, app = served
    root = app.state.store.root
    with screenshot_on_failure(page, "three-families"):
        # attribution: tokens, colours scaled to the scores, the completeness check
        name = run_form(page, "integrated_gradients", prompt=IOI, **{"select:target-kind": "NextToken"},
                        **{"t-token": " Mary"})
        r = il.Result.load(root / name)
        check_shading(page, "a", r.figures()["scores"])
        check_figure_shown(page, "a", r)
        # attention: the same attention.js mounts the view; its check figure is shown
        name = run_form(page, "attention", prompt=IOI)
        r = il.Result.load(root / name)
        page.wait_for_selector("#pane-a .il-attn[data-il-mount-ms]")
        labels = page.text_content("#pane-a .il-attn")
        assert all(visible(t) in labels for t in r.tokens)
        check_figure_shown(page, "a", r)
        # circuits: a patching heatmap from one clean / corrupted pair, colours scaled to the effects
        name = run_form(page, "patch", **{"select:dataset": ""}, clean=IOI,
                        corrupted=IOI.replace("John gave", "Mary gave"), **{"select:target-kind": "Contrast"},
                        **{"t-a": " Mary", "t-b": " John"})
        r = il.Result.load(root / name)
        (heat,) = [f for f in r.figures().values() if isinstance(f, Heatmap)]
        check_heatmap(page, "a", heat)
        check_figure_shown(page, "a", r)


def test_reopen_compare_and_download(page, served):
    _, app = served
    root = app.state.store.root
    with screenshot_on_failure(page, "reopen"):
        first = run_form(page, "saliency", prompt=IOI, **{"select:target-kind": "NextToken"}, **{"t-token": " Mary"})
        second = run_form(page, "input_x_gradient", pane="b", prompt=IOI, **{"select:target-kind": "NextToken"},
                          **{"t-token": " Mary"})
        assert page.is_visible("#pane-a") and page.is_visible("#pane-b")
        a, b = page.locator("#pane-a").bounding_box(), page.locator("#pane-b").bounding_box()
        assert a["x"] + a["width"] <= b["x"] + 1 and abs(a["y"] - b["y"]) < 1  # side by side
        check_shading(page, "b", il.Result.load(root / second).figures()["scores"])
        # reopen the first from the saved list into the left view after a reload
        page.reload()
        page.wait_for_selector("body[data-ready]")
        page.click(f'#saved li[data-name="{first}"] button[data-open=a]')
        page.wait_for_selector(f'#pane-a[data-result="{first}"] section.figure')
        check_shading(page, "a", il.Result.load(root / first).figures()["scores"])
        with page.expect_download() as dl:
            page.click(f'#pane-a a[href$="{first}/download"]')
        assert dl.value.suggested_filename == first.replace(".json", ".zip")


def test_script_prompt_stays_text(page, served):
    _, app = served
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    with screenshot_on_failure(page, "escaping"):
        name = run_form(page, "saliency", prompt=evil, **{"select:target-kind": "NextToken"}, **{"t-token": " Mary"})
        r = il.Result.load(app.state.store.root / name)
        got = check_shading(page, "a", r.figures()["scores"])
        assert "".join(g[0] for g in got) == visible("".join(r.tokens))
        assert page.locator("#pane-a img, #pane-a script:not([type])").count() == 0
        assert page.get_attribute("#pane-a .il-prompt", "title") == evil  # the prompt, as text


@pytest.mark.slow
def test_default_model_in_the_page(browser, tmp_path):
    data = tmp_path / "runs"
    app = create_app({"smollm2-135m": "smollm2-135m"}, data)
    with running(app) as url:
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        problems = []
        pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        pg.on("requestfailed", lambda r: problems.append(r.url))
        pg.goto(url + "/")
        pg.wait_for_selector("body[data-ready]")
        with screenshot_on_failure(pg, "default-model"):
            name = run_form(pg, "saliency", timeout=300_000, prompt=IOI, **{"select:target-kind": "Contrast"},
                            **{"t-a": " Mary", "t-b": " John"})
            r = il.Result.load(data / name)
            check_shading(pg, "a", r.figures()["scores"])
            check_figure_shown(pg, "a", r)
            assert problems == []
        pg.close()


# the inputs each kind of method takes, and the few options without a usable default
INPUTS = {"prompt": {"prompt": IOI}, "item": {"prompt": IOI}, "pairs": {"dataset": "ioi", "n": 4},
          "dataset": {"prompts": [IOI, IOI]}, "task": {"task": "sentiment", "n": 24},
          "unit": {"unit": "blocks.1.mlp.neurons 0"}}
NEEDED = {"path_patch": {"senders": [[0, 1]]}, "ablate": {"heads": [[1, 2]]},
          "chain_of_thought": {"choices": ["Mary", "John"], "samples": 2, "max_new_tokens": 6},
          "cot_evaluate": {"choices": ["Mary", "John"], "samples": 1, "max_new_tokens": 4},
          "cot_faithfulness": {"tests": ["early_answering", "step_necessity"]},
          "mine": {"corpus": [IOI, "Then John and Mary went home"] * 3, "k": 3, "window": 4},
          "epo": {"length": 4, "population": 3, "swaps": 4, "top_k": 16, "steps": 2},
          "gcg": {"length": 4, "swaps": 4, "top_k": 16, "steps": 2}, "continuous": {"length": 4, "steps": 2},
          "counterfactuals": {"threshold": 0.0, "max_queries": 48, "n": 1},   # log p never reaches 0: flagged, shown
          "surrogate": {"calibrate": True}, "student": {"layers": 1, "d_model": 16, "heads": 2, "steps": 4},
          "steer": {"strengths": [0.0, 8.0], "prompts": ["Mary and John"], "max_new_tokens": 4},
          "influences": {"train": [IOI, "Then John and Mary went home", "The cat sat on the mat"], "projection": 8},
          "explain_unit": {"corpus": [IOI, "Then John and Mary went home"] * 3, "k": 3, "window": 4, "n_explain": 2,
                           "n_windows": 2, "embedder": None, "max_new_tokens": 4},
          "explain_in_words": {"samples": 3, "edits": 1, "max_new_tokens": 4},
          "attribution_graph": {"transcoders": "TRANSCODERS"}}   # the folder the test writes (below)
# Methods that take another method's result: the saved result they are fed.
SAVED_FOR = {"cot_faithfulness": "for-cot.json"}


def test_every_registered_method_has_a_view(page, served):
    """Every method of the registry runs through the API and its view shows all its figures in the
    page (the renderers' HTML, mounted attention views, circuit graphs, probe curves) without a
    console error: a family registered later is covered here without changes."""
    import httpx

    url, app = served
    root = app.state.store.root
    saved = il.attribute(tiny_lm("llama", seed=0), IOI, il.NextToken(" Mary"), method="saliency")
    saved.save(root / "for-results.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        il.chain_of_thought(tiny_lm("llama", seed=0), IOI, choices=["Mary", "John"], samples=2,
                            max_new_tokens=6).save(root / "for-cot.json")
    from interpretlm.features import Dictionary

    for l in range(tiny_lm("llama", seed=0).n_layers):   # per-layer transcoders in sub-folders, as users give them
        Dictionary.random(tiny_lm("llama", seed=0).d_model, 16, component=f"blocks.{l}.mlp.input",
                          output=f"blocks.{l}.mlp", k=2, seed=l).save(root / "transcoders" / f"layer_{l}")
    with screenshot_on_failure(page, "every-method"), httpx.Client(timeout=120) as client:
        for m in il.methods():
            options = {k: str(root / "transcoders") if v == "TRANSCODERS" else v
                       for k, v in NEEDED.get(m.name, {}).items()}
            body = {"method": m.name, **INPUTS.get(m.takes, {"result": SAVED_FOR.get(m.name, "for-results.json")}),
                    "options": options}
            if m.target == "required" and m.takes != "pairs":
                body["target"] = {"kind": "NextToken", "token": " Mary"}
            r = client.post(f"{url}/api/jobs", json=body)
            assert r.status_code == 202, (m.name, r.text)
            job = app.state.jobs.wait(r.json()["id"], 120)
            assert job.state == "done", (m.name, job.error)
            result = il.Result.load(root / job.results[0])
            page.evaluate("async n => { await window.interpretlmApp.open(n, 'a'); }", job.results[0])
            shown = page.eval_on_selector_all("#pane-a section.figure", "els => els.map(e => [e.dataset.kind, "
                                              "e.getBoundingClientRect().height])")
            assert [k for k, _ in shown] == [type(f).__name__ for f in result.figures().values()], m.name
            assert all(h > 0 for _, h in shown), (m.name, shown)
            if any(k == "AttentionView" for k, _ in shown):
                page.wait_for_selector("#pane-a .il-attn[data-il-mount-ms]")
            if result.check is not None:
                assert result.check.name in page.text_content("#pane-a .il-check"), m.name


def test_label_and_continuation_targets_from_the_form(page, served):
    _, app = served
    root = app.state.store.root
    with screenshot_on_failure(page, "targets"):
        name = run_form(page, "input_x_gradient", prompt="The movie was", **{"select:target-kind": "Label"},
                        **{"t-label": "negative", "t-verbalizers": '{"positive": [" good"], "negative": [" bad"]}'})
        r = il.Result.load(root / name)
        assert r.target == il.Label({"positive": [" good"], "negative": [" bad"]}, label="negative").to_dict()
        check_shading(page, "a", r.figures()["scores"])
        assert "label 'negative'" in page.text_content("#pane-a .il-target")
        name = run_form(page, "saliency", prompt="The cat sat on the", **{"select:target-kind": "Continuation"},
                        **{"t-text": " mat because"})
        r = il.Result.load(root / name)
        assert r.target["kind"] == "Continuation" and r.target["text"] == " mat because"
        assert page.locator("#pane-a section.figure .il-tokens").count() >= 1
        check_figure_shown(page, "a", r)


def test_progress_bar_and_cancel_from_the_page(page, served):
    _, app = served
    with screenshot_on_failure(page, "cancel"):
        page.select_option("#method", "lime")
        page.fill("#prompt", "\n".join([IOI] * 60))
        page.set_checked("#many", True)
        page.select_option("#target-kind", "NextToken")
        page.fill("#t-token", " Mary")
        # 4,096 samples a prompt: the job lasts minutes, so it cannot finish before the click arrives
        page.click("#options-box summary")
        page.fill("#options [data-option=n_samples]", "4096")
        page.click("#run")
        # the bar follows the loop over the 60 prompts
        page.wait_for_function("() => { const p = document.getElementById('progress');"
                               " return p.max === 60 && p.value >= 2; }", timeout=120_000)
        assert re.search(r"lime \d+/60", page.text_content("#job-status"))
        page.click("#cancel")
        page.wait_for_function("() => document.getElementById('job-status').textContent.startsWith('cancelled')",
                               timeout=60_000)
        (job,) = [j for j in app.state.jobs.jobs.values() if j.loop("lime", 60) is not None]
        assert job.state == "cancelled" and 2 <= job.loop("lime", 60) < 60 and job.results == []
        assert page.is_enabled("#run") and not page.is_enabled("#cancel")
