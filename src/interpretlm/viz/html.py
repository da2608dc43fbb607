"""Self-contained HTML pages: escaping, the page shell and plain tables.

Every string that came from a model, a tokenizer or a user goes through :func:`escape`
(a prompt containing ``<script>`` renders as text). Pages inline their CSS and JS, so
they work offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .figures import Table, Text

CSS = """
:root { --fg:#1d1d1f; --muted:#6b6b70; --line:#e3e3e8; --accent:#2f6fde; }
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--fg);
       margin: 2rem auto; max-width: 1100px; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.il-muted { color: var(--muted); font-size: .9rem; }
table.il-table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
table.il-table th, table.il-table td { border-bottom: 1px solid var(--line); padding: .25rem .6rem; text-align: left; }
table.il-table td.num { text-align: right; font-variant-numeric: tabular-nums; }
.il-tokens { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9rem; line-height: 2; }
.il-tok { padding: .1rem .05rem; border-radius: 3px; white-space: pre; border: 1px solid transparent; }
.il-tok.il-special { color: var(--muted); border: 1px dashed var(--line); }
.il-tok.il-boundary { border-color: var(--line); margin-right: 1px; }
.il-bar { display:inline-block; height:.7rem; background: var(--accent); border-radius:2px; vertical-align: middle; }
"""


def escape(text: Any) -> str:
    """HTML-escape any value (quotes included, so it is safe in attributes too)."""
    return html.escape(str(text), quote=True)


def page(title: str, body: str, *, css: str = "", js: str = "", subtitle: str = "") -> str:
    """A complete self-contained HTML page (inline CSS/JS, no network)."""
    sub = f'<p class="il-muted">{escape(subtitle)}</p>' if subtitle else ""
    script = f"<script>{js}</script>" if js else ""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{CSS}{css}</style></head><body><h1>{escape(title)}</h1>{sub}{body}{script}</body></html>\n"
    )


def fragment(body: str, css: str = "") -> str:
    """A body fragment with its styles, for notebooks (``_repr_html_``)."""
    return f"<div class=\"il-root\"><style>{CSS}{css}</style>{body}</div>"


class Markup(str):
    """HTML drawn by a renderer of this package: :func:`table` puts it in a cell unescaped."""


def _cell(v: Any) -> str:
    if isinstance(v, Markup):
        return f"<td>{v}</td>"
    if isinstance(v, float):
        return f'<td class="num">{v:.4g}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    return f"<td>{escape(v)}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, raw_columns: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped except in ``raw_columns`` (already-rendered HTML)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [f"<td>{v}</td>" if i in raw_columns else _cell(v) for i, v in enumerate(row)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="il-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'



def render_table(fig: "Table") -> str:
    """Draw a :class:`~interpretlm.viz.figures.Table`; payload cells are drawn by their own renderer."""
    from .figures import Figure
    from .render import render

    rows = [[Markup(render(c)) if isinstance(c, Figure) else ("" if c is None else c) for c in row]
            for row in fig.rows]
    return table(fig.header, rows)


def render_text(fig: "Text") -> str:
    """Draw a :class:`~interpretlm.viz.figures.Text` paragraph."""
    return f'<p class="il-muted">{escape(fig.text)}</p>' if fig.muted else f"<p>{escape(fig.text)}</p>"
