"""HTML renderers shared by results, reports, the CLI and the web app: one per kind of picture.

Results expose figure payloads (:mod:`interpretlm.viz.figures`: data, no HTML);
:func:`render` draws any of them.
"""

from .figures import (AttentionView, Bar, Bars, Figure, FigureError, Graph, Heatmap, LineChart, Table, Text,
                      TokenGrid, TokenShading, TokenStrip)
from .html import escape, page, table, visible
from .render import render, render_all
from .tokens import token_heatmap, token_strip

__all__ = ["AttentionView", "Bar", "Bars", "Figure", "FigureError", "Graph", "Heatmap", "LineChart", "Table",
           "Text", "TokenGrid", "TokenShading", "TokenStrip", "escape", "page", "render", "render_all", "table", "visible",
           "token_heatmap", "token_strip"]
