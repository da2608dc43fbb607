"""HTML / SVG pictures of circuit results: a signed grid heatmap and a circuit graph.

Both are self-contained (inline styles, no script from the network) and escape every label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..viz.html import escape


def _color(v: float, scale: float) -> str:
    if not np.isfinite(v):
        return "#f4f4f4"
    a = 0.0 if scale <= 0 else min(abs(v) / scale, 1.0)
    rgb = "214,39,40" if v >= 0 else "31,119,180"  # red positive, blue negative
    return f"rgba({rgb},{a * 0.9:.3f})"


def grid_heatmap(values: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], *,
                 title: str = "value", scale: float | None = None) -> str:
    """A table whose cells are coloured by a signed value (hover shows it). ``values`` is ``[rows, cols]``."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    scale = scale if scale is not None else (float(np.abs(finite).max()) if finite.size else 1.0)
    head = "".join(f'<th style="writing-mode:vertical-rl;font-weight:normal;font-size:.75rem">{escape(c)}</th>'
                   for c in col_labels)
    body = []
    for r, lab in enumerate(row_labels):
        cells = "".join(
            f'<td title="{escape(lab)} / {escape(col_labels[c])}: {escape(title)} {v[r, c]:+.4g}" '
            f'style="background:{_color(float(v[r, c]), scale)};width:1.4rem;height:1.1rem;padding:0"></td>'
            for c in range(v.shape[1]))
        body.append(f'<tr><th style="font-weight:normal;font-size:.75rem;text-align:right">{escape(lab)}</th>'
                    f"{cells}</tr>")
    legend = (f'<p class="il-muted">red: positive, blue: negative; full colour at |{escape(title)}| = '
              f"{scale:.3g}</p>")
    return (f'<table style="border-collapse:collapse"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{legend}')


def circuit_svg(nodes: Sequence[tuple[str, int, float]], edges: Sequence[tuple[str, str, float]], *,
                n_layers: int, width: int = 900) -> str:
    """An SVG drawing of a circuit: one row per layer (inputs at the bottom, logits on top).

    Args:
        nodes: ``(name, row, score)``; ``row`` is ``-1`` for the input, ``n_layers`` for logits.
        edges: ``(from name, to name, score)``; line width follows ``|score|``, colour its sign.
    """
    rows: dict[int, list[tuple[str, float]]] = {}
    for name, row, score in nodes:
        rows.setdefault(row, []).append((name, score))
    row_ids = sorted(rows)
    dy = 70
    height = dy * (len(row_ids) + 1)
    pos: dict[str, tuple[float, float]] = {}
    for k, r in enumerate(row_ids):
        items = rows[r]
        y = height - dy * (k + 0.5) - 10
        for j, (name, _) in enumerate(items):
            x = (j + 1) * width / (len(items) + 1)
            if len(items) == 1 and r not in (min(rows), max(rows)):
                # lone nodes (an MLP) zig-zag near the right edge, so edges do not run through them
                x = width * (0.86 + 0.08 * (k % 2))
            pos[name] = (x, y)
    escale = max((abs(s) for _, _, s in edges), default=1.0) or 1.0
    nscale = max((abs(s) for _, _, s in nodes), default=1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="circuit graph" '
             'style="font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px">']
    for src, dst, s in edges:
        if src not in pos or dst not in pos:
            continue
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        w = 0.5 + 4.5 * abs(s) / escale
        col = "#d62728" if s >= 0 else "#1f77b4"
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{col}" '
                     f'stroke-opacity="0.55" stroke-width="{w:.2f}"><title>{escape(src)} → {escape(dst)}: '
                     f"{s:+.4g}</title></line>")
    for name, row, score in nodes:
        x, y = pos[name]
        r = 9 + 9 * math.sqrt(abs(score) / nscale) if nscale else 9
        fill = "#f2c14e" if row in (-1, n_layers) else ("#fbd3d3" if score >= 0 else "#cfe3f5")
        parts.append(f'<g><circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{fill}" stroke="#555"/>'
                     f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{escape(name)}</text>'
                     f"<title>{escape(name)}: score {score:+.4g}</title></g>")
    parts.append("</svg>")
    return "".join(parts)
