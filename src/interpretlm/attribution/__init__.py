"""Feature attribution: ``il.attribute(lm, inputs, target, method=...)``.

Methods register themselves in :mod:`.registry`; each returns an :class:`Attribution`.
"""

from __future__ import annotations

from typing import Any

from ..model import LM
from ..targets import TargetLike
from .registry import METHODS, register_method, get_method
from .result import Attribution
from . import gradients, integrated_gradients, perturbation, shapley  # noqa: F401  (register the methods)
from .compare import Comparison, compare
from .faithfulness import FaithfulnessScores, faithfulness, rank_correlation


def attribute(lm: LM, inputs: Any, target: TargetLike, method: str = "integrated_gradients",
              **options: Any) -> Attribution:
    """Attribute ``target`` to the input features of ``inputs`` with ``method``.

    Args:
        lm: the model handle.
        inputs: a prompt (or token ids).
        target: what is explained (``il.NextToken(" Mary")``...).
        method: a registered method name (``sorted(il.attribution.METHODS)``).
        options: the method's own options (``n_steps``, ``n_samples``, ``seed``...).
    """
    return get_method(method)(lm, inputs, target, **options)


__all__ = ["Attribution", "Comparison", "FaithfulnessScores", "METHODS", "attribute", "compare", "faithfulness",
           "get_method", "rank_correlation", "register_method"]
from . import lrp  # noqa: E402,F401  registers method="lrp"
