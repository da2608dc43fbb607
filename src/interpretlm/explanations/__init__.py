"""Natural-language explanations, each scored for how far it can be trusted.

* ``il.explain_unit(lm, unit, corpus=..., explainer=..., scorer=..., simulator=...)``: what makes a
  unit fire, in words, from its top and quantile windows (EleutherAI delphi's manner), scored by
  detection and fuzzing (balanced accuracy from the scorer's yes/no log-probabilities), simulation
  (Bills et al.'s all-at-once form, Pearson r) and embedding similarity (all-MiniLM-L6-v2);
* ``il.explain_in_words(lm, prompt, target)``: the model's own explanation of its prediction, the
  words it cites aligned to tokens, and their ERASER comprehensiveness and sufficiency against as
  many random words, agreement with the attribution family, Madsen et al.'s redaction and
  counterfactual self-consistency and counterfactual simulatability (Chen et al.).

The package is plural: a subpackage named like a verb would replace the verb on import.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> exp = il.explain_unit(lm, il.Unit("blocks.12.mlp.neurons", 417), corpus=il.corpus("builtin"))  # doctest: +SKIP
    >>> exp.text, exp.scores  # doctest: +SKIP
"""

from __future__ import annotations

from .engine import ExplanationError, ExplanationFlagWarning, PlainPromptWarning
from .result import SelfExplanation, UnitExplanation
from .unit import SCORERS, explain_unit
from .words import explain_in_words

__all__ = ["ExplanationError", "ExplanationFlagWarning", "PlainPromptWarning", "SCORERS", "SelfExplanation",
           "UnitExplanation", "explain_in_words", "explain_unit"]
