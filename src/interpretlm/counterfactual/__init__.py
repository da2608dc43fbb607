"""Counterfactual explanations: ``il.counterfactuals(lm, prompt, target, ...)``.

The smallest word deletions, substitutions and insertions that flip a target (a label's
prediction, a contrast's sign, or any value past a threshold), found by a beam search over
attribution-ranked words with candidates from the model itself, scored in batched passes.
"""

from __future__ import annotations

from .result import Counterfactuals
from .scoring import AlreadyFlippedError
from .search import NotFlippedWarning, NothingToEditError, counterfactuals

__all__ = ["AlreadyFlippedError", "Counterfactuals", "NotFlippedWarning", "NothingToEditError", "counterfactuals"]
