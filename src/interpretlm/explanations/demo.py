"""The demo's natural-language explanation sections: one neuron explained and scored, and one prediction
explained by the model itself (both bounded: few windows, short answers)."""

from __future__ import annotations

import warnings
from typing import Any


def section(lm: Any, prompts: list[str]) -> Any:
    """A neuron of the model explained from 160 windows of the built-in corpus and scored by detection and
    fuzzing on 8 + 8 windows, one question a window (simulation, the encoder and the default word
    questions, which ask about each word against twelve reference descriptions and took 150 of the
    demo's 250 s, are left to ``interpretlm explain_unit``)."""
    from ..demo import Section
    from ..maximization.corpus import builtin_or
    from ..units import Unit
    from .unit import explain_unit

    layer = min(12, lm.n_layers - 1)
    unit = Unit(f"blocks.{layer}.mlp.neurons", 417 % lm.d_mlp)
    corpus, note = builtin_or(prompts, 8)
    lines = [note] if note else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = explain_unit(lm, unit, corpus=corpus, k=12, window=24, n_explain=6, n_windows=8, max_windows=160,
                         scorers=("detection", "fuzzing"), question="window", max_new_tokens=24, progress=False)
    lines.append(r.summary())
    lines.append("  scored with one question a window (question='window'); the default word questions are "
                 "slower and tell true rules from wrong ones better: interpretlm explain_unit ...")
    e = r.explained[0]
    for name in ("detection", "fuzzing"):
        d = e["scores"].get(name)
        if d:
            lines.append(f"  {name}: balanced accuracy {d['balanced_accuracy']:.2f} (raw yes/no "
                         f"{d['balanced_accuracy_raw']:.2f}), AUROC {d['auroc']:.2f}, {d['forward_passes']} batched passes")
    return Section(f"Unit explanation in words ({unit.name})", list(r.figures().values()), lines)


def words_section(lm: Any, prompts: list[str]) -> Any:
    """The model explains a sentiment prediction; its cited words are scored against random words."""
    from ..demo import Section
    from ..targets import Label
    from .words import explain_in_words

    prompt = "Review: the food was cold and the waiter rude.\nSentiment:"
    words = [" positive", " negative"]
    if any(len(lm.tokenizer(w, add_special_tokens=False)["input_ids"]) != 1 for w in words):
        words = [" good", " bad"]   # a small vocabulary (the tiny test models)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = explain_in_words(lm, prompt, Label({"positive": [words[0]], "negative": [words[1]]}), samples=10,
                             edits=2, max_new_tokens=40, progress=False)
    lines = [f"answer {r.answer!r}; the model says: {r.text!r}", r.summary()]
    if r.flags:
        lines.append("flags: " + ", ".join(r.flags))
    return Section("Self-explanation in words", list(r.figures().values()), lines)
