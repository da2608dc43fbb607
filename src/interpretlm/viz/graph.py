"""The graph renderer: a :class:`Graph` as an SVG drawing, one row of nodes per ``row``.

The lowest row is drawn at the bottom (a circuit's input), the highest on top (the logits).
Edge width follows ``|score|`` and colour its sign; node radius follows ``|score|``;
terminal nodes (inputs, outputs) are yellow. Every label is escaped.
"""

from __future__ import annotations

import math

from .figures import Graph
from .html import escape


def _finite(v: float) -> float:
    # a NaN score (not measured) draws as the smallest node / thinnest edge
    return v if math.isfinite(v) else 0.0


def render_graph(fig: Graph) -> str:
    """Draw a :class:`Graph` (inline SVG)."""
    width = fig.width
    rows: dict[int, list[str]] = {}
    for n in fig.nodes:
        rows.setdefault(n["row"], []).append(n["name"])
    row_ids = sorted(rows)
    dy = 70
    height = dy * (len(row_ids) + 1)
    pos: dict[str, tuple[float, float]] = {}
    for k, r in enumerate(row_ids):
        items = rows[r]
        y = height - dy * (k + 0.5) - 10
        for j, name in enumerate(items):
            x = (j + 1) * width / (len(items) + 1)
            if len(items) == 1 and r not in (min(rows), max(rows)):
                # lone nodes (an MLP) zig-zag near the right edge, so edges do not run through them
                x = width * (0.86 + 0.08 * (k % 2))
            pos[name] = (x, y)
    escale = max((abs(_finite(e["score"])) for e in fig.edges), default=1.0) or 1.0
    nscale = max((abs(_finite(n["score"])) for n in fig.nodes), default=1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(fig.title or "graph")}" '
             'style="font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px">']
    for e in fig.edges:
        src, dst, s = e["source"], e["target"], e["score"]
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        w = 0.5 + 4.5 * abs(_finite(s)) / escale
        col = "#d62728" if s >= 0 else "#1f77b4"
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{col}" '
                     f'stroke-opacity="0.55" stroke-width="{w:.2f}"><title>{escape(src)} → {escape(dst)}: '
                     f"{s:+.4g}</title></line>")
    for n in fig.nodes:
        name, score = n["name"], n["score"]
        x, y = pos[name]
        r = 9 + 9 * math.sqrt(abs(_finite(score)) / nscale)
        fill = "#f2c14e" if n["terminal"] else ("#fbd3d3" if score >= 0 else "#cfe3f5")
        parts.append(f'<g><circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{fill}" stroke="#555"/>'
                     f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{escape(name)}</text>'
                     f"<title>{escape(name)}: score {score:+.4g}</title></g>")
    parts.append("</svg>")
    return "".join(parts)
