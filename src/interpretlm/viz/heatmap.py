"""The heatmap renderer: a :class:`Heatmap` as a table of coloured cells (hover shows each value).

Red is positive, blue negative, grey NaN (e.g. a receiver that cannot receive); the legend
says which |value| is drawn at full colour. Self-contained: inline styles, no script.
"""

from __future__ import annotations

import math

from .figures import Heatmap
from .html import escape


def _color(v: float, scale: float) -> str:
    if not math.isfinite(v):
        return "#f4f4f4"
    a = 0.0 if scale <= 0 else min(abs(v) / scale, 1.0)
    rgb = "214,39,40" if v >= 0 else "31,119,180"  # red positive, blue negative
    return f"rgba({rgb},{a * 0.9:.3f})"


def render_heatmap(fig: Heatmap) -> str:
    """Draw a :class:`Heatmap`."""
    finite = [abs(v) for row in fig.values for v in row if math.isfinite(v)]
    scale = fig.scale if fig.scale is not None else (max(finite) if finite else 1.0)
    head = "".join(f'<th style="writing-mode:vertical-rl;font-weight:normal;font-size:.75rem">{escape(c)}</th>'
                   for c in fig.cols)
    body = []
    for lab, vals in zip(fig.rows, fig.values):
        cells = "".join(
            f'<td title="{escape(lab)} / {escape(col)}: {escape(fig.label)} {v:+.4g}" '
            f'style="background:{_color(v, scale)};width:1.4rem;height:1.1rem;padding:0"></td>'
            for col, v in zip(fig.cols, vals))
        body.append(f'<tr><th style="font-weight:normal;font-size:.75rem;text-align:right">{escape(lab)}</th>'
                    f"{cells}</tr>")
    legend = (f'<p class="il-muted">red: positive, blue: negative; full colour at |{escape(fig.label)}| = '
              f"{scale:.3g}</p>")
    return (f'<table style="border-collapse:collapse"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{legend}')
