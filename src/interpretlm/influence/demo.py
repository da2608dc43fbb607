"""The influence section of ``interpretlm demo``: which of a handful of training texts the model's
answer leans on (EK-FAC over the default model's MLP layers, projection 16)."""

from __future__ import annotations

import warnings
from typing import Any

TRAIN = [
    "The capital of France is Paris, a city on the Seine.",
    "Paris is known for the Eiffel Tower and the Louvre.",
    "The capital of Italy is Rome, home of the Colosseum.",
    "Berlin is the capital and largest city of Germany.",
    "Cats are small domesticated carnivorous mammals.",
    "The stock market fell sharply on Monday morning.",
]


def influence_section(lm: Any, prompts: list[str]) -> Any:
    """Proponents and opponents of " Paris" after "The capital of France is" among six training
    texts (EK-FAC over every MLP layer, projection 16, one shard; a few seconds on the default model).

    The demo's prompts carry no training set, so the section uses its own handful of texts.
    """
    import interpretlm as il

    from ..demo import Section
    from ..viz.figures import Text

    prompt, target = "The capital of France is", il.Continuation(" Paris")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = il.influences(lm, prompt, target, train=TRAIN, estimator="ekfac", projection=16, k=3, progress=False)
    except il.InterpretLMError as exc:  # e.g. an encoder without a continuation target
        return Section("Influence functions (EK-FAC)", [Text(str(exc))], [f"skipped: {exc}"])
    figs = r.figures()
    lines = [r.summary(), f"check: {r.check}"] + \
            [f"  {p['score']:+.4g}  {p['text']}" for p in r.proponents[:3]] + \
            [f"  {o['score']:+.4g}  {o['text']}" for o in r.opponents[:2]]
    return Section("Influence functions (EK-FAC)", [figs["meaning"], figs["proponents"], figs["opponents"]], lines)
