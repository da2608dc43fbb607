"""A report: several sections (each an HTML fragment from a shared renderer) on one page."""

from __future__ import annotations

from collections.abc import Sequence

from .html import escape, page


def report_page(title: str, sections: Sequence[tuple[str, str]], *, subtitle: str = "",
                css: str = "", js: str = "") -> str:
    """One self-contained page with a table of contents and the sections ``(heading, html)``."""
    toc = "".join(f'<li><a href="#s{i}">{escape(h)}</a></li>' for i, (h, _) in enumerate(sections))
    body = f'<nav><ol>{toc}</ol></nav>' + "".join(
        f'<section id="s{i}"><h2>{escape(h)}</h2>{html}</section>' for i, (h, html) in enumerate(sections))
    return page(title, body, subtitle=subtitle, css=css, js=js)
