"""The graph renderer: a :class:`Graph` as an SVG drawing, one row of nodes per ``row``.

The lowest row is drawn at the bottom (a circuit's input), the highest on top (the logits).
Each node is a box with its label inside, sized to the label, and boxes of a row never
overlap (a row wider than the page makes the drawing scroll sideways in its panel). Edge
width follows ``|score|`` and colour its sign, explained by a legend. Large graphs are
pruned for display (:meth:`Graph.levels`: 30, then 60, then 120 nodes by default, each
pruned by :meth:`Graph.prune`); a nested "show more" control steps through the levels, and each
level's caption says what is drawn and how faithful that subgraph was measured to be.
"""

from __future__ import annotations

import math

from .figures import Graph
from .html import escape, fmt, visible

CHAR_W, BOX_H, GAP, DY = 7.0, 22.0, 10.0, 64.0  # 11px monospace is ~6.6px per character


def _finite(v: float) -> float:
    # a NaN score (not measured) draws as the thinnest edge
    return v if math.isfinite(v) else 0.0


def _box_w(name: str) -> float:
    return CHAR_W * len(visible(name, spaces=False)) + 14


def _layout(nodes: list[dict], width: int) -> tuple[dict[str, tuple[float, float, float]], float, float]:
    """``name -> (x centre, y centre, box width)``, and the drawing's width and height."""
    rows: dict[int, list[dict]] = {}
    for n in nodes:
        rows.setdefault(n["row"], []).append(n)
    row_ids = sorted(rows)
    need = max((sum(_box_w(n["name"]) for n in items) + GAP * (len(items) + 1) for items in rows.values()), default=0)
    W = max(float(width), need)
    H = DY * len(row_ids) + 12
    pos: dict[str, tuple[float, float, float]] = {}
    for k, r in enumerate(row_ids):
        items = rows[r]
        y = H - DY * (k + 0.5)
        widths = [_box_w(n["name"]) for n in items]
        if len(items) == 1 and r not in (row_ids[0], row_ids[-1]):
            # lone nodes (an MLP) zig-zag near the right edge, so edges do not run through them
            x = min(W * (0.86 + 0.08 * (k % 2)), W - widths[0] / 2 - GAP)
            pos[items[0]["name"]] = (x, y, widths[0])
            continue
        step = W / (len(items) + 1)
        if step >= max(widths) + GAP:
            xs = [(j + 1) * step for j in range(len(items))]
        else:  # pack from the left, each box beside the previous one
            xs, cursor = [], GAP
            for w in widths:
                xs.append(cursor + w / 2)
                cursor += w + GAP
        for n, x, w in zip(items, xs, widths):
            pos[n["name"]] = (x, y, w)
    return pos, W, H


def graph_svg(nodes: list[dict], edges: list[dict], width: int, title: str = "") -> tuple[str, float]:
    """The SVG of ``nodes`` and ``edges`` and the largest ``|edge score|`` drawn (the width scale)."""
    pos, W, H = _layout(nodes, width)
    escale = max((abs(_finite(e["score"])) for e in edges), default=0.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W:.0f}" height="{H:.0f}" '
             f'viewBox="0 0 {W:.0f} {H:.0f}" role="img" aria-label="{escape(title or "graph")}" class="il-graph" '
             'style="font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px;background:#fff">']
    for e in sorted(edges, key=lambda e: abs(_finite(e["score"]))):  # strongest drawn last, on top
        src, dst, s = e["source"], e["target"], e["score"]
        (x1, y1, _), (x2, y2, _) = pos[src], pos[dst]
        y1, y2 = (y1 - BOX_H / 2, y2 + BOX_H / 2) if y1 > y2 else (y1 + BOX_H / 2, y2 - BOX_H / 2)
        w = 0.75 + 4.25 * abs(_finite(s)) / escale
        col = "#d62728" if s >= 0 else "#1f77b4"
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{col}" '
                     f'stroke-opacity="0.6" stroke-width="{w:.2f}" data-score="{s!r}"><title>{escape(src)} → '
                     f"{escape(dst)}: {fmt(s)}</title></line>")
    for n in nodes:
        name, score = n["name"], n["score"]
        x, y, w = pos[name]
        fill = "#f2c14e" if n["terminal"] else ("#fde0e0" if score >= 0 else "#dcebf7")
        parts.append(f'<g class="il-node"><rect x="{x - w / 2:.1f}" y="{y - BOX_H / 2:.1f}" width="{w:.1f}" '
                     f'height="{BOX_H}" rx="5" fill="{fill}" stroke="#555"/>'
                     f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" fill="#1d1d1f">'
                     f"{escape(visible(name, spaces=False))}</text><title>{escape(name)}: score {fmt(score)}</title></g>")
    parts.append("</svg>")
    return "".join(parts), escale


def _edge_legend(escale: float, label: str) -> str:
    def sample(w: float, col: str) -> str:
        return (f'<svg width="34" height="10" aria-hidden="true"><line x1="2" y1="5" x2="32" y2="5" stroke="{col}" '
                f'stroke-opacity="0.6" stroke-width="{w}"/></svg>')
    return (f'<div class="il-legend il-graph-legend" data-min="0.0" data-max="{escale!r}">'
            f'{sample(3, "#d62728")}<span>{escape(label)} &gt; 0 (raises the metric)</span>'
            f'{sample(3, "#1f77b4")}<span>&lt; 0 (lowers it)</span>'
            f'<span>· width ∝ |{escape(label)}|:</span>{sample(0.75, "#555")}<span>0</span>'
            f'{sample(5, "#555")}<span class="il-legend-hi">{fmt(escale)}</span>'
            '<span>· node boxes: yellow input/output, red/blue by the sign of the node score</span></div>')


def _faith(v: float | None) -> str:
    return "not measured" if v is None else fmt(v)


def _level(fig: Graph, k: int) -> tuple[str, int, int]:
    """The drawing of the ``k`` strongest nodes (:meth:`Graph.prune`) and their 4 × ``k`` strongest edges;
    its SVG, legend and caption, and how many nodes and edges it draws."""
    shown = set(fig.prune(fig.nodes, k))
    nodes = [n for n in fig.nodes if n["name"] in shown]
    edges = [e for e in fig.edges if e["source"] in shown and e["target"] in shown]
    edges = sorted(edges, key=lambda e: -abs(_finite(e["score"])))[:4 * k]
    svg, escale = graph_svg(nodes, edges, fig.width, fig.title)
    return f'<div class="il-scroll">{svg}</div>' + _edge_legend(escale, fig.edge_label), len(nodes), len(edges)


def render_graph(fig: Graph) -> str:
    """Draw a :class:`Graph` (inline SVG in a panel that scrolls sideways if needed): the first level
    of :meth:`Graph.levels`, then a "show more" control per further level, nested, each drawing
    its own pruned subgraph with its legend and its measured faithfulness."""
    levels = fig.levels()
    total = f"{len(fig.nodes)} nodes and {len(fig.edges)} edges"
    out, closing = [], []
    for i, k in enumerate(levels):
        body, n_nodes, n_edges = _level(fig, k)
        if n_nodes == len(fig.nodes):
            faith = fig.faithfulness
            head = (f"All {len(fig.nodes)} nodes and {n_edges} of {len(fig.edges)} edges (the strongest); "
                    f"faithfulness of this graph: {_faith(faith)}.")
        else:
            faith = fig.pruned_faithfulness if i == 0 else (
                fig.level_faithfulness[i - 1] if i - 1 < len(fig.level_faithfulness) else None)
            faith = None if faith is not None and math.isnan(faith) else faith
            head = (f"Showing the {n_nodes} strongest of {len(fig.nodes)} nodes (inputs and outputs always) and "
                    f"{n_edges} of {len(fig.edges)} edges; faithfulness of the drawn subgraph: {_faith(faith)}; "
                    f"of the whole graph: {_faith(fig.faithfulness)}.")
        if i:
            out.append(f'<details class="il-more" data-level="{k}"><summary>Show {k} nodes</summary>')
            closing.append("</details>")
        out.append(f'<p class="il-muted il-graph-caption">{escape(head)}</p>{body}')
    if levels and levels[-1] < len(fig.nodes):
        out.append(f'<p class="il-muted">The whole graph ({escape(total)}) is too dense to draw legibly; '
                   "its nodes and edges are in the tables.</p>")
    return "".join(out) + "".join(reversed(closing))
