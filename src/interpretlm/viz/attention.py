"""The attention renderer: an interactive head view and a model view of all layers × heads.

One renderer for reports and the web app: :func:`attention_payload` builds the JSON the
browser code (``viz/static/attention.js``) draws, and :func:`attention_view` embeds that
payload, the script and its styles in one offline HTML fragment.

Long inputs stay light: each head's pattern is stored as one byte per cell, and when all
kept heads would exceed ``max_bytes`` the head view aggregates ``block × block`` token
pairs per cell (the model view always uses small thumbnails). Drawing uses a canvas,
thumbnails are drawn only when scrolled into view, and tokens are set as text (never as
HTML).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .figures import AttentionView

_IDS = itertools.count()


@lru_cache(maxsize=None)
def _static(name: str) -> str:
    return resources.files("interpretlm.viz").joinpath("static", name).read_text(encoding="utf-8")


def _pool(p: np.ndarray, block: int) -> np.ndarray:
    """``[..., n, n]`` -> ``[..., g, g]`` block means (``g = ceil(n / block)``)."""
    if block == 1:
        return p
    n = p.shape[-1]
    g = math.ceil(n / block)
    padded = np.zeros(p.shape[:-2] + (g * block, g * block), dtype=np.float32)
    padded[..., :n, :n] = p
    counts = np.zeros((g * block, g * block), dtype=np.float32)
    counts[:n, :n] = 1
    shape = p.shape[:-2] + (g, block, g, block)
    sums = padded.reshape(shape).sum(axis=(-3, -1))
    return sums / np.maximum(counts.reshape(g, block, g, block).sum(axis=(1, 3)), 1)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode("ascii")


def attention_payload(tokens: Sequence[str], patterns: np.ndarray, layers: Sequence[int], heads: Sequence[int],
                      *, special: Sequence[bool] | None = None, max_bytes: int = 8_000_000,
                      thumb: int = 48) -> dict[str, Any]:
    """The data the attention view draws (JSON-able; what the web app serves).

    Args:
        tokens: ``[pos]`` display strings.
        patterns: ``[layers, heads, query, key]`` attention probabilities.
        layers, heads: the real indices of the first two axes.
        special: ``[pos]`` special-token marks.
        max_bytes: budget for the head view's patterns (one byte per cell); above it,
            cells aggregate ``block × block`` token pairs.
        thumb: side of the model view's thumbnails, in cells.

    Returns:
        ``{"tokens", "special", "layers", "heads", "grid", "block", "thumb", "full", "thumbs"}``
        where ``full`` / ``thumbs`` are base64 ``uint8`` images, one per (layer, head),
        layer-major, with ``value / 255`` the attention probability (thumbnails are scaled
        to their own maximum).
    """
    p = np.asarray(patterns, dtype=np.float32)
    if p.ndim != 4 or p.shape[-1] != p.shape[-2] or p.shape[-1] != len(tokens):
        raise ValueError(f"patterns must be [layers, heads, {len(tokens)}, {len(tokens)}]; got {p.shape}")
    n_maps, n = p.shape[0] * p.shape[1], len(tokens)
    block = max(1, math.ceil(math.sqrt(n_maps * n * n / max_bytes)))
    full = _pool(p, block)
    tblock = max(1, math.ceil(n / thumb))
    th = _pool(p, tblock)
    th = th / np.maximum(th.max(axis=(-2, -1), keepdims=True), 1e-12)
    return {
        "tokens": [str(t) for t in tokens], "special": [bool(s) for s in (special or [False] * n)],
        "layers": [int(x) for x in layers], "heads": [int(x) for x in heads],
        "grid": int(full.shape[-1]), "block": block, "thumb": int(th.shape[-1]),
        "full": [_b64(np.rint(np.clip(m, 0, 1) * 255)) for m in full.reshape(n_maps, *full.shape[-2:])],
        "thumbs": [_b64(np.rint(np.clip(m, 0, 1) * 255)) for m in th.reshape(n_maps, *th.shape[-2:])],
    }


def _json_for_script(data: Any) -> str:
    # inside <script type="application/json"> a "</script" or "<!--" could end or confuse the
    # element; JSON's \u escapes of <, > and & leave no markup at all (JSON.parse restores them)
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def attention_view(tokens: Sequence[str], patterns: np.ndarray, layers: Sequence[int], heads: Sequence[int],
                   *, special: Sequence[bool] | None = None, max_bytes: int = 8_000_000) -> str:
    """An offline HTML fragment: pick a layer and head, hover tokens, and see every head at once.

    Args: as :func:`attention_payload`.

    Example:
        >>> import numpy as np
        >>> html = attention_view(["a", "b"], np.full((1, 1, 2, 2), 0.5), [0], [0])
        >>> "il-attn" in html
        True
    """
    from .figures import AttentionView

    return render_attention_view(AttentionView.from_patterns(list(tokens), patterns, list(layers), list(heads),
                                                             special=special, max_bytes=max_bytes))


def render_attention_view(fig: "AttentionView") -> str:
    """Draw an :class:`~interpretlm.viz.figures.AttentionView` (its payload, the script and the styles)."""
    from .html import visible

    payload = {k: getattr(fig, k) for k in ("tokens", "special", "layers", "heads", "grid", "block", "thumb",
                                           "full", "thumbs")}
    # what the page shows of each token (escapes computed once, here, for every view)
    payload["labels"] = [visible(t) for t in fig.tokens]
    payload["reprs"] = [repr(t) for t in fig.tokens]
    uid = f"il-attn-{next(_IDS)}"
    return (f'<style>{_static("attention.css")}</style>'
            f'<div class="il-attn" id="{uid}" data-il-pending="1">'
            f'<script type="application/json">{_json_for_script(payload)}</script></div>'
            f'<script>{_static("attention.js")}</script>')
