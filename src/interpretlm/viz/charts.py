"""The line-chart renderer: a :class:`LineChart` as inline SVG (one line per series, NaN skipped).

The chart draws its own title, so :func:`line_chart_svg` is also a complete standalone
SVG file (the probing benchmark writes one per model).
"""

from __future__ import annotations

import math

from .figures import LineChart
from .html import escape, fmt

PALETTE = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#868e96", "#e8590c"]


def line_chart_svg(fig: LineChart, *, width: int = 720, height: int = 260) -> str:
    """The SVG drawing of a :class:`LineChart` (title inside): y ticks with their values, x ticks with
    their labels, both axis titles (the y title with the unit). The ``<svg>`` carries ``data-min`` /
    ``data-max``, the y range drawn (it holds every finite value).

    Example:
        >>> svg = line_chart_svg(LineChart(["0", "1"], {"accuracy": [0.5, 0.9]}, title="POS"))
        >>> svg.startswith("<svg")
        True
    """
    x_labels, series = fig.x, fig.series
    vals = [v for s in series.values() for v in s if math.isfinite(v)]
    lo = min(vals + ([fig.y_min] if fig.y_min is not None else [])) if vals else 0.0
    hi = max(vals + ([fig.y_max] if fig.y_max is not None else [])) if vals else 1.0
    if fig.y_min is not None:
        lo = min(lo, fig.y_min)
    if hi - lo < 1e-9:
        hi = lo + 1
    L, R, T, B = 48, 150, 24, 36
    pw, ph = width - L - R, height - T - B
    n = max(len(x_labels), 2)

    def px(i: int) -> float:
        return L + pw * i / (n - 1)

    def py(v: float) -> float:
        return T + ph * (1 - (v - lo) / (hi - lo))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(fig.title)}" class="il-line" '
             f'data-min="{float(lo)!r}" data-max="{float(hi)!r}" style="font: 11px sans-serif"><rect width="100%" height="100%" fill="white"/>']
    if fig.title:
        parts.append(f'<text x="{L}" y="14" font-weight="bold">{escape(fig.title)}</text>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = py(v)
        parts.append(f'<line x1="{L}" x2="{L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e8"/>'
                     f'<text class="il-ytick" x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    step = max(1, len(x_labels) // 16)
    for i, lab in enumerate(x_labels):
        if i % step == 0 or i == len(x_labels) - 1:
            parts.append(f'<text class="il-xtick" x="{px(i):.1f}" y="{T + ph + 14}" '
                         f'text-anchor="middle">{escape(lab)}</text>')
    if fig.x_label:
        parts.append(f'<text class="il-xtitle" x="{L + pw / 2:.1f}" y="{height - 4}" '
                     f'text-anchor="middle">{escape(fig.x_label)}</text>')
    y_title = fig.y_label + (f" ({fig.unit})" if fig.unit else "")
    if y_title:
        parts.append(f'<text class="il-ytitle" x="12" y="{T + ph / 2:.1f}" transform="rotate(-90 12 {T + ph / 2:.1f})" '
                     f'text-anchor="middle">{escape(y_title)}</text>')
    for c, (name, ys) in enumerate(series.items()):
        color = PALETTE[c % len(PALETTE)]
        pts = [(px(i), py(v)) for i, v in enumerate(ys) if math.isfinite(v)]
        if pts:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{d}"/>')
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}" data-value="{v!r}"/>'
                      for (x, y), v in zip(pts, [v for v in ys if math.isfinite(v)])]
        ly = T + 14 * c + 6
        parts.append(f'<line x1="{L + pw + 12}" x2="{L + pw + 30}" y1="{ly}" y2="{ly}" stroke="{color}" '
                     f'stroke-width="2"/><text x="{L + pw + 34}" y="{ly + 4}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_line_chart(fig: LineChart) -> str:
    """Draw a :class:`LineChart` (the SVG in a block)."""
    return f"<div>{line_chart_svg(fig)}</div>"
