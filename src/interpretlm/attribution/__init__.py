"""Feature attribution: ``il.attribute(lm, inputs, target, method=...)``.

Methods register themselves in :mod:`.registry`; each returns an :class:`Attribution`.
"""

from __future__ import annotations

from typing import Any

from ..model import LM
from ..registry import call, register_verb
from ..targets import TargetLike
from .registry import ALIASES, METHODS, get_method, register_method
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
        options: the method's own options (``n_steps``, ``n_samples``, ``seed``...); an
            unknown name raises :class:`~interpretlm.errors.OptionError` listing the valid ones.

    A list of prompts gives a list of results (the calling convention of
    :mod:`interpretlm.registry`).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> a = il.attribute(tiny_lm("llama"), "a b c", il.NextToken(5), method="integrated_gradients")
        >>> a.check.name, a.check.passed
        ('completeness_error', True)
    """
    get_method(method)
    return call(ALIASES.get(method, method), lm, inputs, target, **options)


register_verb("attribute", attribute)


__all__ = ["Attribution", "Comparison", "FaithfulnessScores", "METHODS", "attribute", "compare", "faithfulness",
           "get_method", "rank_correlation", "register_method"]
from . import lrp  # noqa: E402,F401  registers method="lrp"
