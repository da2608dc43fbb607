"""Figure payloads and their renderers: escaping, JSON round trips, results' figures across save/load,
and no picture HTML written outside ``viz/``."""

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import interpretlm as il
from interpretlm.testing import tiny_lm
from interpretlm.viz import render, render_all
from interpretlm.viz.figures import (AttentionView, Bar, Bars, Figure, FigureError, Graph, Heatmap, LineChart,
                                     Table, Text, TokenGrid, TokenShading, TokenStrip)

EVIL = '<script>alert("x")</script>'
IOI = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def _attention(s: str = "a", **text) -> AttentionView:
    return AttentionView.from_patterns([s, "b"], np.full((1, 2, 2, 2), 0.5), [0], [0, 1], **text)


# One factory per kind and per string slot: the payload with ``s`` in that slot only.
SLOTS = {
    "TokenShading": {
        "tokens": lambda s: TokenShading(["a", s], [0.5, -1.0]),
        "label": lambda s: TokenShading(["a", "b"], [0.5, -1.0], label=s),
    },
    "TokenStrip": {
        "tokens": lambda s: TokenStrip([s, "b"]),
        "hover": lambda s: TokenStrip(["a", "b"], hover=[s, "x"]),
    },
    "Bar": {},
    "Bars": {
        "labels": lambda s: Bars([s, "b"], {"p": [0.5, 0.25]}),
        "series": lambda s: Bars(["a", "b"], {s: [0.5, 0.25]}),
        "label_header": lambda s: Bars(["a", "b"], {"p": [0.5, 0.25]}, label_header=s),
    },
    "Heatmap": {
        "rows": lambda s: Heatmap([s, "r"], ["c"], [[1.0], [-1.0]]),
        "cols": lambda s: Heatmap(["r"], [s, "c"], [[1.0, -1.0]]),
        "label": lambda s: Heatmap(["r"], ["c"], [[1.0]], label=s),
    },
    "TokenGrid": {
        "rows": lambda s: TokenGrid([s], ["c"], [["t"]], [[0.5]]),
        "cols": lambda s: TokenGrid(["r"], [s], [["t"]], [[0.5]]),
        "cells": lambda s: TokenGrid(["r"], ["c"], [[s]], [[0.5]]),
        "marks": lambda s: TokenGrid(["r"], ["c"], [["t"]], [[0.5]], marks=[[s]], marks_label="rank"),
        "label": lambda s: TokenGrid(["r"], ["c"], [["t"]], [[0.5]], label=s),
    },
    "LineChart": {
        "x": lambda s: LineChart([s, "1"], {"acc": [0.5, 0.9]}),
        "series": lambda s: LineChart(["0", "1"], {s: [0.5, 0.9]}),
        "x_label": lambda s: LineChart(["0", "1"], {"acc": [0.5, 0.9]}, x_label=s),
        "y_label": lambda s: LineChart(["0", "1"], {"acc": [0.5, 0.9]}, y_label=s),
    },
    "Graph": {
        "nodes": lambda s: Graph([{"name": s, "row": 0, "score": 1.0}, {"name": "out", "row": 1, "score": 0.5}],
                                 [{"source": s, "target": "out", "score": -0.5}]),
    },
    "AttentionView": {"tokens": _attention},
    "Table": {
        "header": lambda s: Table([s, "v"], [["a", 1.0]]),
        "rows": lambda s: Table(["k", "v"], [[s, 1.0]]),
        "nested": lambda s: Table(["k", "v"], [["a", TokenStrip([s])]]),
    },
    "Text": {"text": lambda s: Text(s), "muted": lambda s: Text(s, muted=True)},
}
PLAIN = {  # one ordinary payload of each kind, for the common text slots
    "TokenShading": lambda **t: TokenShading(["a", "b"], [0.5, -1.0], **t),
    "TokenStrip": lambda **t: TokenStrip(["a", "b"], [False, True], **t),
    "Bar": lambda **t: Bar(0.25, **t),
    "Bars": lambda **t: Bars(["a", "b"], {"p": [0.5, 0.25]}, **t),
    "Heatmap": lambda **t: Heatmap(["r"], ["c"], [[1.0]], **t),
    "LineChart": lambda **t: LineChart(["0", "1"], {"acc": [0.5, 0.9]}, **t),
    "TokenGrid": lambda **t: TokenGrid(["L0"], ["a"], [["b"]], [[0.25]], **t),
    "Graph": lambda **t: Graph([{"name": "in", "row": 0, "score": 1.0}], [], **t),
    "AttentionView": lambda **t: _attention(**t),
    "Table": lambda **t: Table(["k"], [["a"]], **t),
    "Text": lambda **t: Text("a", **t),
}


def test_every_kind_has_a_renderer_and_escape_cases():
    from interpretlm.viz.render import RENDERERS
    assert set(Figure.kinds) == set(SLOTS) == set(PLAIN) == {k.__name__ for k in RENDERERS}


@pytest.mark.parametrize("kind,slot", [(k, s) for k, slots in SLOTS.items() for s in slots]
                         + [(k, s) for k in PLAIN for s in ("title", "caption", "note")])
def test_renderer_escapes_every_string_slot(kind, slot):
    fig = PLAIN[kind](**{slot: EVIL}) if slot in ("title", "caption", "note") else SLOTS[kind][slot](EVIL)
    html = render(fig)
    assert "<script>alert" not in html and 'alert("x")</script>' not in html
    if kind == "AttentionView" and slot == "tokens":
        # the tokens travel as JSON inside the page: no markup characters at all, and JSON.parse restores them
        blob = re.search(r'<script type="application/json">(.*?)</script>', html).group(1)
        assert "<" not in blob and json.loads(blob)["tokens"][0] == EVIL
    elif kind == "LineChart" and slot == "title":
        assert "&lt;script&gt;" in html  # drawn inside the SVG
    else:
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def _examples() -> list[Figure]:
    nan = float("nan")
    return [
        TokenShading(["The", " cat"], [0.5, nan], scale=2.0, label="ig", special=[True, False], title="t"),
        TokenStrip(["a", "b"], [False, True], hover=["p=0.5", "p=0.1"], caption="c"),
        Bar(-0.25, scale=0.5, width=100, signed=True, note="n"),
        Bars(["L0", "L1"], {"attention": [0.1, -0.2], "MLP": [nan, 0.3]}, signed=True, label_header="layer"),
        Heatmap(["L0", "L1"], ["H0", "H1"], [[1.0, nan], [float("inf"), -0.5]], label="effect"),
        LineChart(["0", "1", "2"], {"acc": [0.5, nan, 0.9], "ctl": [0.4, 0.4, 0.4]}, y_min=0, y_max=1),
        TokenGrid(["L1", "L0"], ["a", " b"], [["x", "\n"], [" y", "z"]], [[0.5, nan], [1.0, 0.0]],
                  marks=[["", "#1"], ["", "#3"]], marks_label="rank"),
        Graph([{"name": "input", "row": -1, "score": 1.0, "terminal": True}, {"name": "L0H1", "row": 0, "score": nan}],
              [{"source": "input", "target": "L0H1", "score": 0.25}], faithfulness=0.75, pruned_faithfulness=nan),
        _attention("x", title="attention"),
        Table(["k", "v", "shading"], [["a", 1.5, TokenShading(["x"], [1.0])], ["b", nan, None], ["c", 3, True]]),
        Text("hello", muted=True),
    ]


@pytest.mark.parametrize("fig", _examples(), ids=lambda f: f.kind)
def test_payload_round_trips_through_json(fig):
    d = fig.to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: NaN and infinities are encoded
    back = Figure.from_dict(json.loads(text))
    assert type(back) is type(fig) and back.to_dict() == d
    assert _same_ids(render(back)) == _same_ids(render(fig))
    with pytest.raises(FigureError):
        Figure.from_dict({**d, "kind": "NoSuchKind"})


def _same_ids(html: str) -> str:
    """Each attention view gets a fresh element id: compare drawings without it."""
    return re.sub(r'id="il-attn-\d+"', 'id="il-attn"', html)


def test_nan_and_infinity_survive_round_trip():
    fig = Heatmap(["r"], ["a", "b", "c"], [[float("nan"), float("inf"), -float("inf")]])
    back = Figure.from_dict(json.loads(json.dumps(fig.to_dict(), allow_nan=False)))
    v = back.values[0]
    assert math.isnan(v[0]) and v[1] == math.inf and v[2] == -math.inf
    t = Table(["v"], [[float("nan")], [None]])
    back = Figure.from_dict(json.loads(json.dumps(t.to_dict(), allow_nan=False)))
    assert math.isnan(back.rows[0][0]) and back.rows[1][0] is None  # a NaN cell is not an empty cell


def test_payloads_check_their_shapes():
    with pytest.raises(FigureError):
        TokenShading(["a", "b"], [1.0])
    with pytest.raises(FigureError):
        Heatmap(["r0", "r1"], ["c"], [[1.0]])
    with pytest.raises(FigureError):
        Bars(["a"], {"p": [1.0, 2.0]})
    with pytest.raises(FigureError):
        Graph([{"name": "a", "row": 0, "score": 1.0}], [{"source": "a", "target": "b", "score": 1.0}])


def test_bars_and_shading_draw_their_numbers():
    # bar width = |value| / scale × width; the default scale is the largest |value| of all series
    html = render(Bars(["a", "b", "c"], {"x": [0.5, -0.25, 0.0], "y": [0.125, 0.0, 0.0]}, width=160, signed=True))
    assert re.findall(r"il-bar\" style=\"width:(\d+)px", html) == ["160", "40", "80", "0", "0", "0"]
    assert html.count("#1f77b4") == 1 and html.count("#d62728") == 5  # only -0.25 is blue
    html = render(Bar(0.3, scale=0.6, width=200))
    assert "width:100px" in html
    # shading alpha = 0.6 × |value| / scale (capped so dark text keeps its contrast); NaN left transparent
    html = render(TokenShading(["a", "b", "c"], [1.0, -0.5, float("nan")], scale=2.0))
    assert "rgba(214,39,40,0.300)" in html and "rgba(31,119,180,0.150)" in html and "transparent" in html


def test_heatmap_colours_and_legend():
    html = render(Heatmap(["L0"], ["H0", "H1", "H2"], [[0.5, -1.0, float("nan")]], label="effect"))
    # scale = largest finite |value| = 1.0: 0.5 -> alpha 0.3 red, -1.0 -> 0.6 blue, NaN hatched and explained
    assert "rgba(214,39,40,0.300)" in html and "rgba(31,119,180,0.600)" in html and "il-nan-cell" in html
    assert 'data-min="-1.0" data-max="1.0"' in html and "NaN: not defined" in html


# ---------------------------------------------------------------- results' figures
@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama", seed=0)


def _results(lm) -> dict:
    from interpretlm.attribution.faithfulness import faithfulness
    from interpretlm.probing import tasks as T

    t = il.Contrast(" Mary", " John")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ig = il.attribute(lm, IOI, il.NextToken(" Mary"), method="integrated_gradients")
        task = T.Task.sentences("polar", ["It was good", "It was bad"] * 10, ["pos", "neg"] * 10)
        return {
            "attribution": ig,
            "continuation": il.attribute(lm, "The cat", il.Continuation(" sat on"), method="saliency"),
            "lrp": il.attribute(lm, IOI, il.NextToken(" Mary"), method="lrp"),
            "comparison": il.compare(lm, "The cat sat", il.NextToken(" on"), methods=["saliency", "occlusion"]),
            "faithfulness": faithfulness(lm, ig),
            "attention": il.attention(lm, "The cat sat on the mat"),
            "rollout": il.attention_rollout(lm, "The cat sat"),
            "patch": il.patch(lm, IOI, IOI_CORRUPT, t, over="heads", progress=False),
            "patch_positions": il.patch(lm, IOI, IOI_CORRUPT, t, progress=False),
            "ablation": il.ablate(lm, IOI, t, heads=[(0, 1)]),
            "ablation_sweep": il.ablate(lm, IOI, t, heads="each"),
            "logit_lens": il.logit_lens(lm, IOI, " Mary"),
            "path_patch": il.path_patch(lm, IOI, IOI_CORRUPT, t, senders=[(0, 1)]),
            "circuit": il.discover_circuit(lm, clean=[IOI], corrupted=[IOI_CORRUPT], target=t, keep=6),
            "probe": il.probe(lm, task, layers=[0, 1], control=True, mdl=True),
        }


EXPECTED = {  # the figures each result exposes, in order
    "attribution": ["scores"], "continuation": ["scores"], "lrp": ["scores", "relevance_flow", "block_relevance"],
    "comparison": ["attributions", "cost", "agreement"], "faithfulness": ["scores", "curves", "curve_values"],
    "attention": ["attention", "head_summary"], "patch": ["effect"], "patch_positions": ["effect"],
    "ablation": ["ablation"], "ablation_sweep": ["effect"], "logit_lens": ["grid", "lens"], "path_patch": ["effect"],
    "circuit": ["faithfulness", "graph", "top_edges", "head_scores"], "probe": ["task", "curves", "mdl", "per_layer"],
}


def test_results_figures_survive_save_and_load(lm, tmp_path):
    for name, r in _results(lm).items():
        figs = r.figures()
        if name in EXPECTED:
            assert list(figs) == EXPECTED[name], name
        else:
            assert figs and all(k.startswith("into_") for k in figs), name
        before = {k: f.to_dict() for k, f in figs.items()}
        json.dumps(before, allow_nan=False)  # what the app would send
        r.save(tmp_path / f"{name}.json")
        back = il.Result.load(tmp_path / f"{name}.json")
        assert type(back) is type(r)
        assert {k: f.to_dict() for k, f in back.figures().items()} == before, name
        # the page is the figures drawn in order (plus the diagnostics)
        page = r.to_html()
        body = render_all(figs)
        assert _same_ids(body) in _same_ids(page), name


def test_result_figures_carry_the_numbers(lm):
    """The payloads hold the result's numbers, not a rounding of them."""
    r = il.attribute(lm, IOI, il.NextToken(" Mary"), method="integrated_gradients")
    fig = r.figures()["scores"]
    assert fig.tokens == r.features and np.allclose(fig.values, np.asarray(r.scores, dtype=float), rtol=1e-6)
    p = il.patch(lm, IOI, IOI_CORRUPT, il.Contrast(" Mary", " John"), over="heads", progress=False)
    h = p.figures()["effect"]
    assert h.rows == [f"L{l}" for l in p.layers] and h.cols == [f"H{i}" for i in range(lm.n_heads)]
    assert np.allclose(np.asarray(h.values), np.asarray(p.effect, dtype=float), rtol=1e-6, equal_nan=True)
    c = il.discover_circuit(lm, clean=[IOI], corrupted=[IOI_CORRUPT], target=il.Contrast(" Mary", " John"), keep=6)
    g = c.figures()["graph"]
    assert [n["name"] for n in g.nodes] == [n["name"] for n in c.nodes] and len(g.edges) == len(c.edges)
    assert {n["name"] for n in g.nodes if n["terminal"]} <= {"input", "logits"}


def test_section_composes_payloads(lm):
    from interpretlm.demo import Section, next_tokens_section

    sec = next_tokens_section(lm, ["The cat sat", EVIL])
    assert all(isinstance(f, Figure) for f in sec.figures)
    assert [type(f).__name__ for f in sec.figures] == ["TokenStrip", "Bars"] * 2
    bars = sec.figures[1]
    assert sum(bars.series["probability"]) <= 1.0 + 1e-6 and bars.series["probability"] == sorted(
        bars.series["probability"], reverse=True)
    assert "<script>alert" not in sec.html and "<h3>" in sec.html  # titles under the section's <h2>
    assert Section("s", [Text("x")]).html == "<p>x</p>"


# ---------------------------------------------------------------- no picture HTML outside viz/
def test_no_picture_html_outside_viz():
    src = Path(il.__file__).parent
    offenders = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src).as_posix()
        if rel.startswith("viz/"):
            continue
        text = path.read_text(encoding="utf-8")
        for pattern, what in [(r"<svg", "builds an <svg string"),
                              (r"""\.split\(\s*(f?["'])<h""", "cuts HTML at a heading"),
                              (r"(?<!self)(?<!super\(\))\._html_body\(", "takes another result's HTML body"),
                              (r"\bH\.table\(|\btoken_heatmap\(|\btoken_strip\(",
                               "draws with a viz helper, not a payload")]:
            if re.search(pattern, text) and not (rel == "results.py" and what.startswith("draws")):
                offenders.append(f"{rel}: {what}")
    assert not offenders, offenders
