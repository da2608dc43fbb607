"""Token renderers: a plain token strip (tokenization view) and a signed heatmap."""

from __future__ import annotations

from collections.abc import Sequence

from .html import escape


def token_strip(tokens: Sequence[str], special: Sequence[bool] | None = None) -> str:
    """Tokens with visible boundaries; special tokens dashed. Returns an HTML fragment."""
    special = special or [False] * len(tokens)
    spans = []
    for i, (t, s) in enumerate(zip(tokens, special)):
        cls = "il-tok il-special" if s else "il-tok il-boundary"
        spans.append(f'<span class="{cls}" title="position {i}">{escape(t)}</span>')
    return f'<div class="il-tokens">{"".join(spans)}</div>'


def _color(score: float, scale: float) -> str:
    a = 0.0 if scale <= 0 else min(abs(score) / scale, 1.0)
    # positive: red, negative: blue (the convention of Captum and inseq views)
    rgb = "214,39,40" if score >= 0 else "31,119,180"
    return f"rgba({rgb},{a * 0.85:.3f})"


def token_heatmap(tokens: Sequence[str], scores: Sequence[float], *, special: Sequence[bool] | None = None,
                  scale: float | None = None, label: str = "score") -> str:
    """Tokens coloured by a signed score (red positive, blue negative); hover shows the value."""
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens but {len(scores)} scores")
    scale = scale if scale is not None else max((abs(float(s)) for s in scores), default=1.0)
    special = special or [False] * len(tokens)
    spans = []
    for i, (t, s, sp) in enumerate(zip(tokens, scores, special)):
        cls = "il-tok il-special" if sp else "il-tok"
        spans.append(f'<span class="{cls}" style="background:{_color(float(s), scale)}" '
                     f'title="{escape(label)} {float(s):+.4g} (position {i})">{escape(t)}</span>')
    return f'<div class="il-tokens">{"".join(spans)}</div>'
