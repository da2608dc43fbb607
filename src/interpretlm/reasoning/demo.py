"""The chain-of-thought section of ``interpretlm demo``: one question, three samples, two tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..viz.figures import Text

if TYPE_CHECKING:
    from ..demo import Section
    from ..model import LM

QUESTION = ("Tom has 3 apples and buys 4 more. How many apples does he have?", ["6", "7", "8", "9"], "7")


def section(lm: "LM", prompts: list[str]) -> "Section":
    """Sampled chains of thought, their answers, early answering and step necessity."""
    from ..demo import Section
    from .cot import chain_of_thought
    from .faithfulness import faithfulness

    if not lm.is_causal or not lm.has_head:
        return Section("Chain of thought", [Text("Needs a causal language model.", muted=True)],
                       ["(skipped: needs a causal language model)"])
    text, choices, answer = QUESTION
    run = chain_of_thought(lm, text, choices=choices, answer=answer, samples=3, seed=0, max_new_tokens=96,
                           progress=False)
    t = faithfulness(lm, run, tests=["early_answering", "step_necessity"], progress=False)
    lines = [f"CoT: {text!r} -> answers {run.answers} (found by {run.paths}); accuracy "
             f"{run.diagnostics['accuracy']:.2f}, without CoT {run.diagnostics['accuracy_no_cot']:.2f}",
             f"  early answering AOC {t.metrics.get('early_answering.aoc', float('nan')):.3f}; step necessity mean "
             f"{t.metrics.get('step_necessity.mean', float('nan')):+.3f}; KV reuse error "
             f"{t.diagnostics['kv_reuse_error']:.1e}"]
    figures = [Text(f"Question {text!r}, choices {choices}; three chains of thought sampled through the chat "
                    "template (seed 0), answers read from the answer line, a regex, or forced by scoring."),
               *run.figures().values(), *t.figures().values()]
    return Section("Chain of thought: elicitation and faithfulness", figures, lines)
