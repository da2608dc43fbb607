"""The attention renderer: an interactive head view and a model view of all layers × heads.

One renderer for reports and the web app: :func:`attention_payload` builds the JSON the
browser code (``viz/static/attention.js``) draws, and :func:`attention_view` embeds that
payload, the script and its styles in one offline HTML fragment.

Long inputs stay light: each head's pattern is stored as one byte per cell, only its lower
triangle for a causal model, every layer but the first deflate-compressed (inflated in the
browser when shown); when all kept heads would exceed ``max_bytes`` cells the head view
aggregates ``block × block`` token pairs per cell. The model view's thumbnails are pooled in
the browser from the same data. Drawing uses a canvas, thumbnails are drawn in batches after
the head view, and tokens are set as text (never as HTML).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import zlib
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


def _tril(m: np.ndarray) -> np.ndarray:
    """``[..., g, g]`` -> ``[..., g (g + 1) / 2]``: the lower triangle (diagonal included), row by row."""
    i, j = np.tril_indices(m.shape[-1])
    return m[..., i, j]


def attention_payload(tokens: Sequence[str], patterns: np.ndarray, layers: Sequence[int], heads: Sequence[int],
                      *, special: Sequence[bool] | None = None, max_bytes: int = 8_000_000,
                      thumb: int = 48) -> dict[str, Any]:
    """The data the attention view draws (JSON-able; what the web app serves).

    Each head's pattern is one byte per cell (``value / 255`` is the probability). A causal
    model's patterns are zero above the diagonal, so only the lower triangle is stored
    (``tri``). One block per layer (its heads one after the other): the first layer, drawn
    first, is stored raw; the others are deflate-compressed (the browser inflates a layer
    when it is shown, with the built-in ``DecompressionStream``). Thumbnails of the model
    view are computed in the browser from the same data, so nothing is stored twice.

    Args:
        tokens: ``[pos]`` display strings.
        patterns: ``[layers, heads, query, key]`` attention probabilities.
        layers, heads: the real indices of the first two axes.
        special: ``[pos]`` special-token marks.
        max_bytes: budget for the stored cells (before compression); above it, cells
            aggregate ``block × block`` token pairs.
        thumb: side of the model view's thumbnails, in cells (at most the grid).

    Returns:
        ``{"tokens", "special", "layers", "heads", "grid", "block", "thumb", "tri", "full", "packed"}``
        where ``full[l]`` is layer ``l``'s base64 block of ``len(heads)`` images of ``grid × grid``
        cells (``grid (grid + 1) / 2`` when ``tri``) and ``packed[l]`` is ``"raw"`` or ``"deflate"``.

    Example:
        >>> import numpy as np
        >>> p = attention_payload(["a", "b"], np.array([[[[1, 0], [0.5, 0.5]]]]), [0], [0])
        >>> p["tri"], p["grid"], base64.b64decode(p["full"][0]).hex()
        (True, 2, 'ff8080')
    """
    p = np.asarray(patterns, dtype=np.float32)
    if p.ndim != 4 or p.shape[-1] != p.shape[-2] or p.shape[-1] != len(tokens):
        raise ValueError(f"patterns must be [layers, heads, {len(tokens)}, {len(tokens)}]; got {p.shape}")
    n_maps, n = p.shape[0] * p.shape[1], len(tokens)
    tri = bool(np.all(np.triu(p, 1) == 0))  # causal: nothing above the diagonal to store
    cells = n * (n + 1) / 2 if tri else n * n
    block = max(1, math.ceil(math.sqrt(n_maps * cells / max_bytes)))
    q = np.rint(np.clip(_pool(p, block), 0, 1) * 255).astype(np.uint8)  # [L, H, g, g]
    if tri:
        q = _tril(q)
    full, packed = [], []
    for li in range(p.shape[0]):
        raw = np.ascontiguousarray(q[li]).tobytes()
        first = li == 0  # drawn at once, before any inflating
        full.append(base64.b64encode(raw if first else zlib.compress(raw, 6)).decode("ascii"))
        packed.append("raw" if first else "deflate")
    g = int(math.ceil(n / block))
    return {
        "tokens": [str(t) for t in tokens], "special": [bool(s) for s in (special or [False] * n)],
        "layers": [int(x) for x in layers], "heads": [int(x) for x in heads],
        "grid": g, "block": block, "thumb": min(int(thumb), g), "tri": tri, "full": full, "packed": packed,
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
                                           "tri", "full", "packed")}
    # what the page shows of each token (escapes computed once, here, for every view)
    payload["labels"] = [visible(t) for t in fig.tokens]
    payload["reprs"] = [repr(t) for t in fig.tokens]
    uid = f"il-attn-{next(_IDS)}"
    return (f'<style>{_static("attention.css")}</style>'
            f'<div class="il-attn" id="{uid}" data-il-pending="1">'
            f'<script type="application/json">{_json_for_script(payload)}</script></div>'
            f'<script>{_static("attention.js")}</script>')
