"""Token renderers: a plain token strip (tokenization view) and a signed heatmap.

:func:`render_token_strip` and :func:`render_token_shading` draw the :class:`TokenStrip` /
:class:`TokenShading` payloads; :func:`token_strip` and :func:`token_heatmap` are the same
drawings from plain arguments. Every token is its own bidi-isolated element showing
:func:`~interpretlm.viz.html.visible` text (a right-to-left override or a newline in a token is
drawn as an escape, never applied), with its ``repr`` on hover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .figures import TokenShading, TokenStrip
from .html import color_signed, fmt, legend, token_html


def token_strip(tokens: Sequence[str], special: Sequence[bool] | None = None,
                hover: Sequence[str] | None = None) -> str:
    """Tokens with visible boundaries; special tokens dashed; ``hover`` text per token (default:
    the position). Returns an HTML fragment."""
    special = special or [False] * len(tokens)
    hover = hover or [f"position {i}" for i in range(len(tokens))]
    spans = [token_html(t, cls="il-tok il-special" if s else "il-tok il-boundary", hover=h)
             for t, s, h in zip(tokens, special, hover)]
    return f'<div class="il-tokens">{"".join(spans)}</div>'


def _color(score: float, scale: float) -> str:
    return color_signed(score, scale)


def token_heatmap(tokens: Sequence[str], scores: Sequence[float], *, special: Sequence[bool] | None = None,
                  scale: float | None = None, label: str = "score", unit: str = "") -> str:
    """Tokens coloured by a signed score (red positive, blue negative) above a colour bar; hover
    shows the value."""
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens but {len(scores)} scores")
    finite = [abs(float(s)) for s in scores if math.isfinite(float(s))]
    top = max(finite, default=0.0)
    scale = scale if scale is not None else (top or 1.0)
    special = special or [False] * len(tokens)
    spans = []
    for i, (t, s, sp) in enumerate(zip(tokens, scores, special)):
        spans.append(token_html(t, cls="il-tok il-special" if sp else "il-tok",
                                hover=f"{label} {fmt(s)} (position {i})", style=f"background:{_color(float(s), scale)}"))
    nan = "not scored" if len(finite) < len(scores) else ""
    return (f'<div class="il-tokens">{"".join(spans)}</div>'
            + legend(-scale, scale, label, unit=unit, clipped=top > scale * (1 + 1e-9), nan=nan))


def render_token_strip(fig: TokenStrip) -> str:
    """Draw a :class:`TokenStrip`."""
    return token_strip(fig.tokens, fig.special, fig.hover)


def render_token_shading(fig: TokenShading) -> str:
    """Draw a :class:`TokenShading`."""
    return token_heatmap(fig.tokens, fig.values, special=fig.special, scale=fig.scale, label=fig.label,
                         unit=fig.unit)
