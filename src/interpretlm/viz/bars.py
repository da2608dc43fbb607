"""The bars renderer: inline bars (:class:`Bar`, a table cell) and bar charts (:class:`Bars`).

One drawing for every bar of the library (next-token probabilities, relevance per block,
the logit lens' top probability): a span whose width is ``|value| / scale`` of the full width.
"""

from __future__ import annotations

import math

from .figures import Bar, Bars
from .html import Markup, escape, fmt, table


def bar_span(value: float, scale: float, width: int = 160, signed: bool = False) -> str:
    """One inline bar (HTML): ``|value| / scale × width`` pixels, red/blue by sign when ``signed``."""
    v = float(value)
    px = 0.0 if not math.isfinite(v) or scale <= 0 else min(abs(v) / scale, 1.0) * width
    color = (f';background:{"#d62728" if v >= 0 else "#1f77b4"}' if signed else "")
    return f'<span class="il-bar" style="width:{px:.0f}px{color}" title="{escape(f"{v:.4g}")}"></span>'


def render_bar(fig: Bar) -> str:
    """Draw a :class:`Bar`."""
    return bar_span(fig.value, fig.scale, fig.width, fig.signed)


def value_axis(scale: float, width: int, unit: str = "", signed: bool = False) -> str:
    """The value axis drawn over a column of bars: ticks at 0, ``scale / 2`` and ``scale`` placed where a
    bar of that length ends, and the unit. It carries ``data-min`` / ``data-max`` (the axis range,
    in the values' unit) and ``data-width`` (its length in pixels), so a test can compare them with
    the bars."""
    ticks = "".join(
        f'<span class="il-tick" style="left:{f * width:.1f}px;transform:translateX(-{100 * f:.0f}%)"'
        f'>{fmt(f * scale)}</span>' for f in (0.0, 0.5, 1.0))
    what = ("|value|, " if signed else "") + (unit or "value")
    sign = "; red > 0, blue < 0" if signed else ""
    return (f'<div class="il-axis" data-min="0.0" data-max="{float(scale)!r}" data-width="{width}" '
            f'style="width:{width}px">{ticks}</div><div class="il-axis-label">{escape(what + sign)}</div>')


def render_bars(fig: Bars) -> str:
    """Draw a :class:`Bars`: a table of label, then a bar and its value per series, under a value axis
    with the unit."""
    finite = [abs(v) for vals in fig.series.values() for v in vals if math.isfinite(v)]
    scale = fig.scale if fig.scale is not None else (max(finite, default=0.0) or 1.0)
    header = [fig.label_header]
    for name in fig.series:
        header += ["", name]
    axis: list = [""]
    for _ in fig.series:
        axis += [Markup(value_axis(scale, fig.width, fig.unit, fig.signed)), ""]
    rows = [axis]
    for i, label in enumerate(fig.labels):
        row: list = [label]
        for vals in fig.series.values():
            row += [bar_span(vals[i], scale, fig.width, fig.signed), vals[i]]
        rows.append(row)
    return table(header, rows, raw_columns=range(1, len(header), 2))  # the bars; labels and values escaped
