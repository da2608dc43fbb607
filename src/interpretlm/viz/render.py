"""``render(figure)``: draw any figure payload with its kind's renderer.

One renderer per kind (:data:`RENDERERS`); :func:`render` adds the payload's ``title``
(a heading), ``caption`` (a muted line above) and ``note`` (a muted line below).
Results, the demo and reports compose payloads and call :func:`render_all`; nothing outside
:mod:`interpretlm.viz` writes HTML for a picture.

Example:
    >>> from interpretlm.viz import render
    >>> from interpretlm.viz.figures import Bars
    >>> "il-bar" in render(Bars(["a", "b"], {"p": [0.75, 0.25]}, scale=1.0, title="<b>"))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .attention import render_attention_view
from .bars import render_bar, render_bars
from .charts import render_line_chart
from .figures import (AttentionView, Bar, Bars, Figure, FigureError, Graph, Heatmap, LineChart, Table, Text,
                      TokenGrid, TokenShading, TokenStrip)
from .graph import render_graph
from .heatmap import render_heatmap, render_token_grid
from .html import escape, render_table, render_text, visible
from .tokens import render_token_shading, render_token_strip

RENDERERS: dict[type[Figure], Callable[..., str]] = {
    TokenShading: render_token_shading,
    TokenStrip: render_token_strip,
    Bar: render_bar,
    Bars: render_bars,
    Heatmap: render_heatmap,
    TokenGrid: render_token_grid,
    LineChart: render_line_chart,
    Graph: render_graph,
    AttentionView: render_attention_view,
    Table: render_table,
    Text: render_text,
}

_OWN_TITLE = (LineChart,)  # draws its title inside the picture


def render(fig: Figure, level: int = 2) -> str:
    """One payload as an HTML fragment; its title becomes an ``<h{level}>`` heading."""
    for klass in type(fig).__mro__:
        if klass in RENDERERS:
            body = RENDERERS[klass](fig)
            break
    else:
        raise FigureError(f"No renderer for figures of kind {type(fig).__name__}; known: "
                          f"{', '.join(k.__name__ for k in RENDERERS)}.")
    head = (f"<h{level}>{escape(visible(fig.title, spaces=False))}</h{level}>"
            if fig.title and not isinstance(fig, _OWN_TITLE) else "")
    cap = f'<p class="il-muted">{escape(fig.caption)}</p>' if fig.caption else ""
    note = f'<p class="il-muted">{escape(fig.note)}</p>' if fig.note else ""
    return head + cap + body + note


def render_all(figures: Mapping[str, Figure] | Iterable[Figure], level: int = 2) -> str:
    """Several payloads in order (a mapping's values, as ``result.figures()`` gives them)."""
    items = figures.values() if isinstance(figures, Mapping) else figures
    return "".join(render(f, level) for f in items)
