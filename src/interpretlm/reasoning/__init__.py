"""Chain-of-thought analysis: elicit reasoning, and measure whether the answers depend on it.

``il.chain_of_thought(lm, question)`` samples chains of thought through the chat template and
reads their answers; ``il.reasoning.faithfulness(lm, run, tests=[...])`` runs the tests of
Lanham et al. 2023 (early answering, added mistakes, paraphrase, filler), Turpin et al. 2023
(biased context), Chen et al. 2025 (hints) and step necessity;
``il.reasoning.evaluate(lm, il.reasoning.builtin("arithmetic"))`` runs a question set.
"""

from __future__ import annotations

from .cot import ChainOfThought, ChatTemplateWarning, UnextractedWarning, chain_of_thought, from_texts
from .answers import extract, sentence_spans, split_answer
from .engine import EXEMPLARS, SHOTS, Body, Forcer, GenerationError
from .evaluate import evaluate
from .faithfulness import ALL_TESTS, TESTS, GeneratorFallbackWarning, ShortReasoningWarning, faithfulness
from .question import SETS, Question, QuestionError, builtin
from .result import CotEvaluation, CotFaithfulness

__all__ = ["ALL_TESTS", "EXEMPLARS", "SHOTS", "Body", "ChainOfThought", "ChatTemplateWarning", "CotEvaluation", "CotFaithfulness", "Forcer",
           "GenerationError", "GeneratorFallbackWarning", "Question", "QuestionError", "SETS", "ShortReasoningWarning", "TESTS",
           "UnextractedWarning", "builtin", "chain_of_thought", "evaluate", "extract", "faithfulness", "from_texts",
           "sentence_spans", "split_answer"]
