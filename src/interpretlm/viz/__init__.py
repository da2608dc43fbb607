"""HTML renderers shared by results, reports, the CLI and the web app: one per kind of picture."""

from .html import escape, page, table
from .tokens import token_heatmap, token_strip

__all__ = ["escape", "page", "table", "token_heatmap", "token_strip"]
