"""Single-gradient methods: ``saliency`` and ``input_x_gradient``.

Both take one gradient of the target with respect to the input embeddings. For a
``Continuation`` target every generated token gets its own copy of the input in the same
batch, so one forward and one backward give the whole ``[rows, features]`` matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InterpretLMError
from ..model import LM
from ..targets import TargetLike
from .explained import Explained
from .registry import register_method
from .result import Attribution

SALIENCY_REDUCE = ("norm", "dot")


def gradient_check(ex: Explained, x: torch.Tensor, g: torch.Tensor, f0: float) -> float:
    """Relative error of the gradient's prediction of the target along its own direction.

    Central difference ``(f(x + h u) - f(x - h u)) / 2h`` with ``u = g / |g|`` against
    ``|g|`` (the directional derivative the gradient claims), ``h = 1e-3 |x|``. Two extra
    forward passes; a large error means the target is not smooth at ``x`` on the scale of
    the embeddings, so gradient scores mislead.

    Args:
        x: ``[pos, d_model]`` input embeddings; g: ``[pos, d_model]`` their gradient.
    """
    norm = float(g.norm())
    if norm == 0.0:
        return 0.0
    u = g / norm
    h = 1e-3 * float(x.float().norm())
    spent = dict(vars(ex.passes))
    vals, _ = ex.gradients(torch.stack([x + h * u.to(x.dtype), x - h * u.to(x.dtype)]))
    vars(ex.passes).update(spent)  # the check's own passes are not the method's cost
    slope = (float(vals[0, 0]) - float(vals[1, 0])) / (2 * h)
    return abs(slope - norm) / max(abs(norm), abs(slope), 1e-12)


def _common(lm: LM, inputs: Any, target: TargetLike, granularity: str, spans, batch_size: int,
            chat: bool) -> Explained:
    return Explained.build(lm, inputs, target, granularity=granularity, spans=spans, batch_size=batch_size,
                           chat=chat)


@register_method("saliency")
def saliency(lm: LM, inputs: Any, target: TargetLike, *, reduce: str = "norm", granularity: str = "token",
             spans: Sequence[tuple[int, int] | str] | None = None, batch_size: int = 16,
             chat: bool = False) -> Attribution:
    """Gradient saliency of each feature.

    ``reduce="norm"``: the L2 norm of the gradient over the feature's embedding vectors
    ``[pos, d_model]`` (always >= 0, Simonyan et al. 2014); ``reduce="dot"``: gradient · embedding
    (signed; the same as ``input_x_gradient``).

    Returns:
        :class:`Attribution` with ``scores [features]`` (``[rows, features]`` for ``Continuation``).

    Example:
        >>> a = il.attribute(lm, "When Mary and John went to the store, John gave a drink to",  # doctest: +SKIP
        ...                  il.NextToken(" Mary"), method="saliency")
        >>> a.top(3)  # doctest: +SKIP
    """
    if reduce not in SALIENCY_REDUCE:
        raise InterpretLMError(f"reduce must be one of {SALIENCY_REDUCE}; got {reduce!r}.")
    ex = _common(lm, inputs, target, granularity, spans, batch_size, chat)
    x = ex.embeddings()
    vals, grads = ex.gradients(x.unsqueeze(0))  # grads [1, R, pos, d]
    g = grads[0].float()
    if reduce == "dot":
        scores = ex.feature_sums((g * x.float()).sum(-1))
    else:
        sq = ex.feature_sums((g * g).sum(-1))
        scores = np.sqrt(sq)
    check = gradient_check(ex, x, g[0], float(vals[0][0]))
    return ex.result("saliency", scores, target_value=vals[0],
                     diagnostics={"reduce": reduce, "gradient_check_error": check},
                     options={"reduce": reduce, "granularity": granularity, "batch_size": batch_size})


@register_method("input_x_gradient")
def input_x_gradient(lm: LM, inputs: Any, target: TargetLike, *, granularity: str = "token",
                     spans: Sequence[tuple[int, int] | str] | None = None, batch_size: int = 16,
                     chat: bool = False) -> Attribution:
    """Gradient × input embedding, summed over each feature's ``[pos, d_model]`` entries.

    Example:
        >>> il.attribute(lm, "The capital of France is", il.NextToken(" Paris"),  # doctest: +SKIP
        ...              method="input_x_gradient").top(3)
    """
    ex = _common(lm, inputs, target, granularity, spans, batch_size, chat)
    x = ex.embeddings()
    vals, grads = ex.gradients(x.unsqueeze(0))
    scores = ex.feature_sums((grads[0].float() * x.float()).sum(-1))
    check = gradient_check(ex, x, grads[0, 0].float(), float(vals[0][0]))
    return ex.result("input_x_gradient", scores, target_value=vals[0],
                     diagnostics={"gradient_check_error": check},
                     options={"granularity": granularity, "batch_size": batch_size})
