"""The counterfactual part of ``interpretlm demo``: the smallest edits that flip a sentiment label."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import TargetError
from ..model import LM
from ..targets import Label
from .search import counterfactuals

if TYPE_CHECKING:
    from ..demo import Section

REVIEW = "Review: The acting was wonderful and the story moving.\nSentiment:"
# the verbalizers of the built-in evaluation set; " good" / " bad" where a tokenizer splits those
SENTIMENT = ({"positive": [" positive"], "negative": [" negative"]}, {"positive": [" good"], "negative": [" bad"]})


def counterfactuals_section(lm: LM, prompts: list[str]) -> Section:
    """Edits of a short review that flip the model's sentiment label."""
    from ..demo import Section  # here, not at import: demo.py imports this module

    for verbalizers in SENTIMENT:
        target = Label(verbalizers)
        try:
            target.bind(lm)
            break
        except TargetError:
            continue
    else:
        raise TargetError("Neither ' positive' / ' negative' nor ' good' / ' bad' are single tokens for this model.")
    cf = counterfactuals(lm, REVIEW, target, n=3, keep=["Review:", "Sentiment:"], progress=False)
    lines = [f"{REVIEW!r}: predicted {cf.original_label}; {len(cf.edits)} edit(s), flip rate {cf.flip_rate:.2f}, "
             f"{cf.queries} queries"]
    for e in cf.edits:
        lines.append(f"    {e['text']!r} -> {e['label']} ({'flipped' if e['flipped'] else 'not flipped'}, "
                     f"{e['distance']} word(s))")
    figs = cf.figures()
    return Section("Counterfactual edits (sentiment)", [figs["edits"], figs["original"]], lines)
