"""Every kind of picture drawn in Chromium (Playwright): the text read back from the page is the
escaped token, legends match the data, labels do not overlap, no page scrolls sideways at
1280 px, text contrast is at least 4.5:1, and the console stays clean.

Skipped only when no ``chromium`` is on PATH (``make test`` installs it).
"""

import math
import warnings

import numpy as np
import pytest

import interpretlm as il
from interpretlm.testing import tiny_lm
from interpretlm.viz import render_all
from interpretlm.viz.figures import AttentionView, Graph, Heatmap, Table, TokenShading
from interpretlm.viz.html import SPACE, page, visible

from conftest import CHROMIUM  # noqa: E402  (the browser fixture is conftest's)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (make test installs it)")

# tokens that lie when drawn naively: a right-to-left override (the " evil" after it would read
# "live"), isolates, zero-width characters, a BOM, newline, tab, leading / trailing / only spaces,
# a no-break space, right-to-left script, and markup
TRICKY = ["The", "\u202e", " evil", "\u2066x\u2069", "\u200b", "a\u200db", "\ufeff", "\n", "\t", "  lead",
          "trail ", "   ", "\u00a0", " עברית", "<b>x</b>", "\\n"]
IOI = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"

# in the page: each matched element's text, box, colour and the background it is drawn on
PROBE = """sel => Array.from(document.querySelectorAll(sel)).map(e => {
  const r = e.getBoundingClientRect();
  function rgba(s) { const m = s.match(/[\\d.]+/g).map(Number); return m.length === 3 ? [...m, 1] : m; }
  let bg = [255, 255, 255], layers = [];
  for (let n = e; n && n.nodeType === 1; n = n.parentElement) layers.push(rgba(getComputedStyle(n).backgroundColor));
  for (const c of layers.reverse()) bg = bg.map((v, i) => v * (1 - c[3]) + c[i] * c[3]);
  return {text: e.innerText !== undefined ? e.innerText : e.textContent, x: r.x, y: r.y, w: r.width, h: r.height, fg: rgba(getComputedStyle(e).color), bg: bg};
})"""


def _lum(rgb):
    def ch(c):
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (ch(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg, bg) -> float:
    fg = [f * fg[3] + b * (1 - fg[3]) for f, b in zip(fg[:3], bg)]
    a, b = sorted([_lum(fg), _lum(bg)], reverse=True)
    return (a + 0.05) / (b + 0.05)


def overlaps(boxes) -> list:
    """Pairs of boxes (with a size) that intersect by more than half a pixel."""
    bad = []
    boxes = [b for b in boxes if b["w"] > 0 and b["h"] > 0]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if (min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]) > 0.5
                    and min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]) > 0.5):
                bad.append((a["text"], b["text"]))
    return bad


@pytest.fixture()
def show(browser):
    """``show(html) -> page`` at 1280 px; after the test: no console error, no sideways page scroll."""
    pages = []

    def _show(html: str, width: int = 1280):
        pg = browser.new_page(viewport={"width": width, "height": 900})
        errors = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.set_content(html)
        pg.wait_for_timeout(100)
        pages.append((pg, errors))
        return pg

    yield _show
    for pg, errors in pages:
        assert not errors, errors
        assert pg.evaluate("document.documentElement.scrollWidth") <= pg.viewport_size["width"]
        pg.close()


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama", seed=0)


def _legend(pg, sel=".il-legend"):
    return [(float(pg.get_attribute(f"{sel} >> nth={i}", "data-min")), float(pg.get_attribute(f"{sel} >> nth={i}",
            "data-max"))) for i in range(pg.locator(sel).count())]


def test_visible_escapes_every_invisible_character():
    assert visible(" evil") == SPACE + "evil"
    assert visible("\u202e\u200b\ufeff\n\t\r\u00a0") == "\\u202e\\u200b\\ufeff\\n\\t\\r\\u00a0"
    assert visible("\U000e0041") == "\\U000e0041"  # a tag character, invisible
    assert visible("a b", spaces=False) == "a b" and visible("עברית") == "עברית"


def test_token_shading_reads_back_as_escaped_tokens(show):
    values = [(-1) ** i * (i + 1) / len(TRICKY) for i in range(len(TRICKY))]
    pg = show(page("shading", render_all([TokenShading(TRICKY, values, label="saliency", unit="log p(' Mary')")])))
    toks = pg.evaluate(PROBE, ".il-tokens bdi")
    assert [t["text"] for t in toks] == [visible(t) for t in TRICKY]
    # one line, drawn in token order: nothing was reordered by a bidi control or a right-to-left token
    assert all(a["x"] + a["w"] <= b["x"] + 0.5 for a, b in zip(toks, toks[1:]) if abs(a["y"] - b["y"]) < 1)
    assert not overlaps(toks)
    assert min(contrast(t["fg"], t["bg"]) for t in toks) >= 4.5
    assert _legend(pg) == [(-1.0, 1.0)]  # the largest |value| is the last token's, 16/16
    assert "saliency (log p(' Mary'))" in pg.inner_text(".il-legend")


def test_heatmap_legend_labels_and_nan(show, lm):
    p = il.patch(lm, IOI, IOI_CORRUPT, il.Contrast(" Mary", " John"), progress=False)
    e = np.asarray(p.effect, dtype=float)
    pg = show(p.to_html())
    assert pg.locator(".il-heat").count() == 1
    lo, hi = _legend(pg)[0]
    assert hi == pytest.approx(np.nanmax(np.abs(e)), rel=1e-6) and lo == -hi
    assert "(patched − corrupted) / (clean − corrupted)" in pg.inner_text(".il-legend")
    cols = pg.evaluate(PROBE, "table.il-heat th.il-col bdi")
    rows = pg.evaluate(PROBE, "table.il-heat th.il-row bdi")
    assert [c["text"] for c in cols] == [f"{i} {t!r}" for i, t in enumerate(p.tokens)]
    assert not overlaps(cols) and not overlaps(rows)
    assert min(contrast(c["fg"], c["bg"]) for c in cols + rows) >= 4.5
    # the subject: model, prompt, the target with its tokens, the check and whether it passed
    head = pg.inner_text(".il-subject")
    assert "tiny-llama" in head and "logit(' Mary') − logit(' John')" in head and "Check:" in head
    assert ("passed" in head) == bool(p.check.passed)
    # NaN cells are drawn hatched and explained in the legend
    nan = Heatmap(["L0", "L1"], ["H0", "H1"], [[0.5, float("nan")], [-0.25, 0.1]], label="effect",
                  nan="the receiver comes before the sender")
    pg = show(page("nan", render_all([nan])))
    assert pg.locator("td.il-nan-cell").count() == 1 and "NaN: the receiver comes before the sender" in pg.inner_text(
        ".il-legend") and _legend(pg) == [(-0.5, 0.5)]


def test_prompt_in_the_title_is_escaped_and_truncated(show, lm):
    prompt = "The \u202e evil plan " + "and more " * 20
    a = il.attribute(lm, prompt, il.NextToken(" Mary"), method="saliency")
    pg = show(a.to_html())
    shown = pg.inner_text(".il-subject .il-prompt")
    assert "\u202e" not in shown and "\\u202e" in shown and shown.endswith("…”")
    assert pg.get_attribute(".il-subject .il-prompt", "title") == visible(prompt, spaces=False)
    toks = pg.evaluate(PROBE, ".il-tokens bdi")
    assert [t["text"] for t in toks] == [visible(t) for t in a.features]
    lo, hi = _legend(pg)[0]
    assert hi == pytest.approx(float(np.nanmax(np.abs(np.asarray(a.scores, dtype=float)))), rel=1e-6)


def test_logit_lens_grid(show, lm):
    prompt = "When Mary\n and\u202e John went"
    r = il.logit_lens(lm, prompt, " Mary")
    pg = show(r.to_html())
    cells = pg.evaluate(PROBE, "table.il-grid td bdi")
    # rows: the output layer on top; each cell's token reads back escaped
    expected = [visible(t) for row in reversed(r.grid_tokens) for t in row]
    assert [c["text"] for c in cells] == expected
    cols = pg.evaluate(PROBE, "table.il-grid th.il-col bdi")
    assert [c["text"] for c in cols] == [visible(t) for t in r.tokens] and not overlaps(cols)
    assert not overlaps(cells) and min(contrast(c["fg"], c["bg"]) for c in cells) >= 4.5
    assert _legend(pg)[0] == (0.0, 1.0)
    # the prediction column carries the target's 1-based rank
    text = pg.inner_text("table.il-grid")
    assert f"#{int(np.asarray(r.target_rank)[-1]) + 1}" in text
    assert "rank of ' Mary' (1 = top)" in pg.inner_text("body")


@pytest.mark.parametrize("n", [12, 128, 512])
def test_attention_view_scales_with_the_sequence(show, n):
    rng = np.random.default_rng(0)
    tokens = [TRICKY[i % len(TRICKY)] for i in range(n)]
    logits = rng.normal(size=(2, 3, n, n))
    logits = np.where(np.tril(np.ones((n, n), bool)), logits, -np.inf)
    patterns = np.exp(logits - logits.max(-1, keepdims=True))
    patterns /= patterns.sum(-1, keepdims=True)
    view = AttentionView.from_patterns(tokens, patterns, [0, 1], [0, 1, 2], title="attention")
    html = page("attention", render_all([view]))
    pg = show(html)
    rows = pg.evaluate(PROBE, ".il-attn-rl")
    cols = pg.evaluate(PROBE, ".il-attn-cl")
    assert len(rows) == len(cols) and len(rows) >= min(n, 40)  # tokens on both axes (every k-th at 512)
    assert not overlaps(rows) and not overlaps(cols)
    if view.block == 1:
        every = round(n / len(rows)) if len(rows) < n else 1
        assert [r["text"] for r in rows] == [visible(t) for t in tokens[::every]][:len(rows)]
    size = pg.evaluate("document.querySelector('.il-attn-canvas').getBoundingClientRect().width")
    assert size >= n * (11 if n <= 128 else 1)  # at 128 tokens every row is 11 px: labels readable
    assert _legend(pg, ".il-attn-legend") == [(0.0, 1.0)]
    assert pg.locator(".il-attn-model canvas").count() == 6  # the model view: every layer × head
    assert (pg.locator(".il-attn-lines").count() == 1) == (n <= 48)  # the line view for short inputs
    if n <= 48:
        left = pg.evaluate(PROBE, ".il-attn-lines .il-left bdi")
        assert [x["text"] for x in left] == [visible(t) for t in tokens] and not overlaps(left)
    assert len(html) < 3_000_000


def test_circuit_graph_is_pruned_labelled_and_legended(show):
    rng = np.random.default_rng(1)
    nodes = [{"name": "input", "row": -1, "score": 1.0, "terminal": True},
             {"name": "logits", "row": 30, "score": 1.0, "terminal": True}]
    for layer in range(15):
        nodes += [{"name": f"L{layer}H{h}", "row": 2 * layer, "score": float(rng.normal())} for h in range(8)]
        nodes.append({"name": f"mlp{layer}", "row": 2 * layer + 1, "score": float(rng.normal())})
    names = [n["name"] for n in nodes]
    order = {n["name"]: n["row"] for n in nodes}
    edges = [{"source": a, "target": b, "score": float(rng.normal())}
             for a in names for b in names if order[a] < order[b] and rng.random() < 0.12]
    g = Graph(nodes, edges, max_nodes=30, faithfulness=0.8, pruned_faithfulness=0.6, edge_label="edge attribution",
              level_faithfulness=[0.7, float("nan")])
    pg = show(page("graph", render_all([g])))
    first = pg.locator(".il-scroll svg.il-graph").first
    texts = first.evaluate("""s => Array.from(s.querySelectorAll('g.il-node')).map(g => {
        const t = g.querySelector('text').getBBox(), r = g.querySelector('rect').getBBox();
        return {text: g.querySelector('text').textContent, x: t.x, y: t.y, w: t.width, h: t.height,
                rx: r.x, ry: r.y, rw: r.width, rh: r.height}; })""")
    assert len(texts) == 30 and {"input", "logits"} <= {t["text"] for t in texts}
    assert not overlaps(texts)
    boxes = [{"text": t["text"], "x": t["rx"], "y": t["ry"], "w": t["rw"], "h": t["rh"]} for t in texts]
    assert not overlaps(boxes)
    assert all(t["x"] >= t["rx"] - 0.5 and t["x"] + t["w"] <= t["rx"] + t["rw"] + 0.5 for t in texts)  # inside
    drawn = first.evaluate("s => Array.from(s.querySelectorAll('line')).map(l => +l.dataset.score)")
    assert len(drawn) <= 4 * 30
    assert _legend(pg, ".il-graph-legend")[0] == (0.0, pytest.approx(max(abs(s) for s in drawn), rel=1e-9))
    cap = pg.inner_text(".il-graph-caption")
    assert "30 strongest of 137 nodes" in cap and "drawn subgraph: 0.6" in cap and "whole graph: 0.8" in cap
    # the "show more" control: 60 then 120 nodes (not the 137-node hairball), each legible and captioned
    assert g.levels() == [30, 60, 120]
    for k, faith in ((60, "0.7"), (120, "not measured")):
        pg.click(f"details.il-more[data-level='{k}'] > summary")
        svg = pg.locator(f"details.il-more[data-level='{k}'] > .il-scroll > svg.il-graph")
        boxes = svg.evaluate("""s => Array.from(s.querySelectorAll('g.il-node')).map(g => {
            const t = g.querySelector('text').getBBox(), r = g.querySelector('rect').getBBox();
            return {text: g.querySelector('text').textContent, x: t.x, y: t.y, w: t.width, h: t.height,
                    rx: r.x, ry: r.y, rw: r.width, rh: r.height}; })""")
        assert len(boxes) == k and not overlaps(boxes)
        assert not overlaps([{"text": b["text"], "x": b["rx"], "y": b["ry"], "w": b["rw"], "h": b["rh"]} for b in boxes])
        assert all(b["x"] >= b["rx"] - 0.5 and b["x"] + b["w"] <= b["rx"] + b["rw"] + 0.5 for b in boxes)
        n_edges = svg.evaluate("s => s.querySelectorAll('line').length")
        assert n_edges <= 4 * k
        cap = pg.inner_text(f"details.il-more[data-level='{k}'] > p.il-graph-caption")
        assert f"{k} strongest of 137 nodes" in cap and f"drawn subgraph: {faith}" in cap
        lo, hi = _legend(pg, f"details.il-more[data-level='{k}'] > .il-graph-legend")[0]
        drawn = svg.evaluate("s => Array.from(s.querySelectorAll('line')).map(l => Math.abs(+l.dataset.score))")
        assert hi == pytest.approx(max(drawn), rel=1e-9)
    assert "too dense to draw legibly" in pg.inner_text("body")


def test_circuit_result_page(show, lm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = il.discover_circuit(lm, clean=[IOI], corrupted=[IOI_CORRUPT], target=il.Contrast(" Mary", " John"),
                                keep=1.0)
    assert c.drawn_faithfulness is None  # 12 nodes: all drawn, so the whole circuit's figure applies
    pg = show(c.to_html())
    assert f"faithfulness of this graph: {float(c.faithfulness):.3g}" in pg.inner_text(".il-graph-caption")
    lo, hi = _legend(pg, ".il-graph-legend")[0]
    assert hi == pytest.approx(max(abs(e["score"]) for e in c.edges[:4 * 30]), rel=1e-9)


def test_tables_wrap_or_scroll_inside_their_panel(show, lm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = il.compare(lm, " ".join(["The cat sat on the mat"] * 6), il.NextToken(" on"),
                         methods=["saliency", "occlusion", "input_x_gradient"])
        att = il.attention(lm, "a b")  # two tokens: no induction score, a NaN explained
    show(cmp.to_html())
    pg = show(att.to_html())
    assert "NaN*" in pg.inner_text("table.il-table") and "induction needs a token repeated" in pg.inner_text("body")
    nums = Table(["v"], [[1234.5678], [0.000123456]])
    pg = show(page("t", render_all([nums])))
    assert pg.inner_text("table.il-table tbody").split() == ["1235", "0.0001235"]


def test_page_text_contrast(show, lm):
    p = il.patch(lm, IOI, IOI_CORRUPT, il.Contrast(" Mary", " John"), over="heads", progress=False)
    pg = show(p.to_html())
    items = pg.evaluate(PROBE, "p, h1, h2, th, td, span, bdi")
    low = [(i["text"][:30], round(contrast(i["fg"], i["bg"]), 2)) for i in items
           if i["text"].strip() and contrast(i["fg"], i["bg"]) < 4.5]
    assert not low, low
    assert math.isfinite(float(p.check.value))


def _causal_patterns(L, H, n, seed=0, sigma=1.0):
    rng = np.random.default_rng(seed)
    out = np.empty((L, H, n, n), np.float32)
    causal = np.tril(np.ones((n, n), bool))
    for layer in range(L):
        logits = np.where(causal, rng.normal(scale=sigma, size=(H, n, n)), -np.inf)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        out[layer] = e / e.sum(-1, keepdims=True)
    return out


@pytest.mark.parametrize("n,bound", [(128, 2_000_000), (512, 2_000_000)])
def test_attention_page_of_the_default_models_shape_stays_small(show, n, bound):
    """30 layers × 9 heads (the default model's shape): the page was 11.4 MB at 512 tokens; the lower
    triangle, one deflated block per layer and thumbnails pooled in the browser keep it under 2 MB,
    and every layer is still drawn from it exactly."""
    from interpretlm.viz.attention import _pool

    L, H = 30, 9
    p = _causal_patterns(L, H, n)
    view = AttentionView.from_patterns([f"t{i}" for i in range(n)], p, list(range(L)), list(range(H)))
    html = page("attention", render_all([view]))
    assert view.tri and len(html) < bound
    pg = show(html)
    pg.wait_for_selector("div.il-attn[data-il-thumbs-done]", timeout=60_000)
    assert pg.locator(".il-attn-model canvas").count() == L * H
    # the last layer (stored deflated) and last head: canvas pixels are the stored bytes through the colour scale
    pg.select_option(".il-attn-controls select >> nth=0", str(L - 1))
    pg.select_option(".il-attn-controls select >> nth=1", str(H - 1))
    g = view.grid
    want = np.rint(np.clip(_pool(p[L - 1, H - 1], view.block), 0, 1) * 255)
    cells = [(0, 0), (g - 1, 0), (g - 1, g - 1), (g // 2, g // 3), (g // 3, g // 2)]  # the last is above the diagonal
    got = pg.evaluate("""cells => { const c = document.querySelector('.il-attn-canvas').getContext('2d');
        return cells.map(([r, k]) => Array.from(c.getImageData(k, r, 1, 1).data.slice(0, 3))); }""", cells)
    for (r, k), rgb in zip(cells, got):
        t = math.sqrt(want[r, k] / 255)
        assert rgb == [round(255 - 225 * t), round(255 - 170 * t), round(255 - 60 * t)], (r, k)
    assert got[-1] == [255, 255, 255]
    # every thumbnail was drawn (its darkest pixel is its own maximum, drawn at full colour)
    darkest = pg.evaluate("""() => Array.from(document.querySelectorAll('.il-attn-model canvas')).map(cv => {
        const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data; let m = 255;
        for (let i = 0; i < d.length; i += 4) m = Math.min(m, d[i]); return m; })""")
    assert darkest == [30] * (L * H)


def _axis(pg, sel=".il-axis"):
    return [(float(pg.get_attribute(f"{sel} >> nth={i}", "data-min")), float(pg.get_attribute(f"{sel} >> nth={i}",
            "data-max"))) for i in range(pg.locator(sel).count())]


def test_bars_have_a_value_axis_with_units(show, lm):
    """LRP's block relevance (signed, fitted to the data) and the demo's probabilities (fixed scale 1):
    the axis range matches the data, its end sits where the longest bar ends, ticks do not overlap."""
    from interpretlm.viz.figures import Bars

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = il.attribute(lm, IOI, il.NextToken(" Mary"), method="lrp")
    bars = a.figures()["block_relevance"]
    top = max(abs(v) for s in bars.series.values() for v in s)
    pg = show(a.to_html())
    assert _axis(pg) == [(0.0, pytest.approx(top, rel=1e-12))] * 2  # one axis per series
    assert "|value|, relevance, in units of the explained output; red > 0, blue < 0" in pg.inner_text("body")
    widths = pg.evaluate("() => Array.from(document.querySelectorAll('.il-bar')).map(b => b.getBoundingClientRect().width)")
    assert max(widths) == pytest.approx(bars.width, abs=0.5)  # the longest bar reaches the axis' end
    ticks = pg.evaluate(PROBE, ".il-axis .il-tick")
    assert not overlaps(ticks) and min(contrast(t["fg"], t["bg"]) for t in ticks) >= 4.5
    probs = Bars(["' Mary'", "' John'"], {"probability": [0.625, 0.125]}, scale=1.0, unit="probability")
    pg = show(page("bars", render_all([probs])))
    assert _axis(pg) == [(0.0, 1.0)] and [t["text"] for t in pg.evaluate(PROBE, ".il-axis .il-tick")] == ["0", "0.5", "1"]
    widths = pg.evaluate("() => Array.from(document.querySelectorAll('.il-bar')).map(b => b.getBoundingClientRect().width)")
    assert widths == [pytest.approx(0.625 * 160, abs=0.5), pytest.approx(0.125 * 160, abs=0.5)]


def test_line_chart_axes_units_and_range(show):
    from interpretlm.viz.figures import LineChart

    curves = {"deletion": [1.5, 0.75, -0.25, float("nan")], "insertion": [-0.5, 0.25, 1.0, 1.25]}
    fig = LineChart(["0", "1", "2", "3"], curves, x_label="k (features removed or kept)", y_label="f",
                    unit="log p(' Mary')", title="curves")
    pg = show(page("line", render_all([fig])))
    svg = pg.locator("svg.il-line")
    lo, hi = float(svg.get_attribute("data-min")), float(svg.get_attribute("data-max"))
    assert (lo, hi) == (-0.5, 1.5)  # exactly the finite data's range
    ticks = pg.evaluate(PROBE, "svg.il-line text.il-ytick")
    assert [t["text"] for t in ticks] == ["-0.5", "0", "0.5", "1", "1.5"] and not overlaps(ticks)
    assert pg.text_content("svg.il-line text.il-ytitle") == "f (log p(' Mary'))"
    assert pg.text_content("svg.il-line text.il-xtitle") == "k (features removed or kept)"
    assert [t["text"] for t in pg.evaluate(PROBE, "svg.il-line text.il-xtick")] == ["0", "1", "2", "3"]
    # each point sits at its value on the y axis: the 1.5 point at the top tick, -0.5 at the bottom one
    pts = pg.evaluate("() => Array.from(document.querySelectorAll('svg.il-line circle')).map(c => "
                      "[+c.dataset.value, c.getBoundingClientRect().y + c.getBoundingClientRect().height / 2])")
    ys = {v: y for v, y in pts}
    tick_y = {t["text"]: t["y"] + t["h"] / 2 for t in ticks}
    assert ys[1.5] == pytest.approx(tick_y["1.5"], abs=3) and ys[-0.5] == pytest.approx(tick_y["-0.5"], abs=3)
    assert len(pts) == 7  # the NaN point is skipped


# every element with its own visible text: its colour (an SVG text's fill) and what it is drawn on
# (an SVG node label: its box's fill)
SCAN = """() => Array.from(document.querySelectorAll('body *')).filter(e =>
    Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim())).map(e => {
  const r = e.getBoundingClientRect(), cs = getComputedStyle(e);
  function rgba(s) { const m = s.match(/[\\d.]+/g).map(Number); return m.length === 3 ? [...m, 1] : m; }
  let bg = [255, 255, 255], layers = [];
  for (let n = e; n && n.nodeType === 1; n = n.parentElement) layers.push(rgba(getComputedStyle(n).backgroundColor));
  for (const c of layers.reverse()) bg = bg.map((v, i) => v * (1 - c[3]) + c[i] * c[3]);
  const svg = e instanceof SVGElement, box = svg && e.parentElement.querySelector('rect');
  if (box) bg = rgba(getComputedStyle(box).fill).slice(0, 3);
  const shown = r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && e.closest('details:not([open]) > :not(summary)') === null;
  return {text: (e.textContent || '').trim().slice(0, 30), shown, fg: rgba(svg ? cs.fill : cs.color), bg};
})"""


def _pages(lm):
    from interpretlm.viz.figures import Bars, LineChart, TokenStrip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = il.attribute(lm, IOI, il.NextToken(" Mary"), method="saliency")
        yield "patch positions", il.patch(lm, IOI, IOI_CORRUPT, il.Contrast(" Mary", " John"), progress=False).to_html()
        yield "patch heads", il.patch(lm, IOI, IOI_CORRUPT, il.Contrast(" Mary", " John"), over="heads",
                                      progress=False).to_html()
        yield "attribution", a.to_html()
        yield "lrp", il.attribute(lm, IOI, il.NextToken(" Mary"), method="lrp").to_html()
        yield "compare", il.compare(lm, "The cat sat on the mat", il.NextToken(" on"),
                                    methods=["saliency", "occlusion"]).to_html()
        yield "faithfulness", il.faithfulness(lm, a).to_html()
        yield "logit lens", il.logit_lens(lm, IOI, " Mary").to_html()
        yield "attention", il.attention(lm, IOI).to_html()
        yield "circuit", il.discover_circuit(lm, clean=[IOI], corrupted=[IOI_CORRUPT],
                                             target=il.Contrast(" Mary", " John"), keep=1.0).to_html()
    yield "figures", page("figures", render_all([
        TokenStrip(TRICKY, title="tokens"), Bars(["a", "b"], {"p": [0.5, -0.25]}, signed=True, unit="logit"),
        LineChart(["0", "1"], {"acc": [0.5, 0.75]}, y_label="accuracy", unit="fraction", title="curve"),
        Table(["x"], [[float("nan")]], nan="explained"), Heatmap(["r"], ["c"], [[float("nan")]])]))


def test_every_page_kind_has_readable_text(browser, lm):
    """Contrast of at least 4.5:1 for every visible text element of every kind of page, graph labels,
    legends, captions and the attention view's controls included."""
    low = {}
    for name, html in _pages(lm):
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_content(html)
        pg.wait_for_timeout(150)
        for d in pg.locator("details").all():
            d.evaluate("e => e.open = true")  # the "show more" levels too
        items = [i for i in pg.evaluate(SCAN) if i["shown"]]
        assert len(items) > 5, name
        bad = [(i["text"], round(contrast(i["fg"], i["bg"]), 2)) for i in items if contrast(i["fg"], i["bg"]) < 4.5]
        if bad:
            low[name] = bad[:8]
        pg.close()
    assert not low, low
    # the scan sees what it should: grey text on white, and a label on an SVG box of its own fill
    pg = browser.new_page()
    pg.set_content('<p style="color:#aaa">faint</p><svg><g><rect width="40" height="20" fill="#1d1d1f"/>'
                   '<text y="15" fill="#333">dark</text></g></svg>')
    found = {i["text"]: contrast(i["fg"], i["bg"]) for i in pg.evaluate(SCAN)}
    assert found["faint"] < 4.5 and found["dark"] < 1.5
    pg.close()
