"""Token renderers: a plain token strip (tokenization view) and a signed heatmap.

:func:`render_token_strip` and :func:`render_token_shading` draw the :class:`TokenStrip` /
:class:`TokenShading` payloads; :func:`token_strip` and :func:`token_heatmap` are the same
drawings from plain arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .figures import TokenShading, TokenStrip
from .html import escape


def token_strip(tokens: Sequence[str], special: Sequence[bool] | None = None,
                hover: Sequence[str] | None = None) -> str:
    """Tokens with visible boundaries; special tokens dashed; ``hover`` text per token (default:
    the position). Returns an HTML fragment."""
    special = special or [False] * len(tokens)
    hover = hover or [f"position {i}" for i in range(len(tokens))]
    spans = []
    for t, s, h in zip(tokens, special, hover):
        cls = "il-tok il-special" if s else "il-tok il-boundary"
        spans.append(f'<span class="{cls}" title="{escape(h)}">{escape(t)}</span>')
    return f'<div class="il-tokens">{"".join(spans)}</div>'


def _color(score: float, scale: float) -> str:
    if not math.isfinite(score):
        return "transparent"
    a = 0.0 if scale <= 0 else min(abs(score) / scale, 1.0)
    # positive: red, negative: blue (the convention of Captum and inseq views)
    rgb = "214,39,40" if score >= 0 else "31,119,180"
    return f"rgba({rgb},{a * 0.85:.3f})"


def token_heatmap(tokens: Sequence[str], scores: Sequence[float], *, special: Sequence[bool] | None = None,
                  scale: float | None = None, label: str = "score") -> str:
    """Tokens coloured by a signed score (red positive, blue negative); hover shows the value."""
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens but {len(scores)} scores")
    scale = scale if scale is not None else max((abs(float(s)) for s in scores if math.isfinite(float(s))),
                                                default=1.0)
    special = special or [False] * len(tokens)
    spans = []
    for i, (t, s, sp) in enumerate(zip(tokens, scores, special)):
        cls = "il-tok il-special" if sp else "il-tok"
        spans.append(f'<span class="{cls}" style="background:{_color(float(s), scale)}" '
                     f'title="{escape(label)} {float(s):+.4g} (position {i})">{escape(t)}</span>')
    return f'<div class="il-tokens">{"".join(spans)}</div>'


def render_token_strip(fig: TokenStrip) -> str:
    """Draw a :class:`TokenStrip`."""
    return token_strip(fig.tokens, fig.special, fig.hover)


def render_token_shading(fig: TokenShading) -> str:
    """Draw a :class:`TokenShading`."""
    return token_heatmap(fig.tokens, fig.values, special=fig.special, scale=fig.scale, label=fig.label)
