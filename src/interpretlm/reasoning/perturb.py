"""Mistakes and paraphrases of reasoning sentences: rule-based (always available) or by a generator model.

Rule-based mistakes change one number (by 1 to 3) or swap an operator word or sign; rule-based
paraphrases substitute synonyms. Both are seeded and return ``None`` when the rule finds
nothing to change, so the caller can say so instead of counting an unchanged sentence.
"""

from __future__ import annotations

import random
import re
from typing import Any

OPERATORS = {"+": "-", "-": "+", "*": "/", "/": "*", "×": "÷", "÷": "×", "plus": "minus", "minus": "plus",
             "more": "fewer", "fewer": "more", "adds": "removes", "add": "subtract", "subtract": "add",
             "buys": "sells", "gives": "takes", "gets": "loses", "loses": "gets", "times": "plus",
             "before": "after", "after": "before", "taller": "shorter", "shorter": "taller", "older": "younger",
             "younger": "older", "yes": "no", "no": "yes", "true": "false", "false": "true"}
SYNONYMS = {"so": "therefore", "therefore": "thus", "thus": "so", "has": "holds", "have": "hold", "buys": "purchases",
            "more": "additional", "total": "sum", "then": "next", "first": "initially", "gets": "receives",
            "the answer": "the result", "is": "equals", "because": "since", "since": "because", "need": "must",
            "number": "count", "apples": "apples", "each": "every", "every": "each", "big": "large", "small": "little",
            "start": "begin", "left": "remaining", "we": "we", "find": "get", "add": "sum", "step": "stage",
            "think": "reason", "question": "problem", "answer": "result", "so,": "hence,", "now": "at this point"}
_WORD = re.compile(r"-?\d+(?:\.\d+)?|[A-Za-z]+|[+\-*/×÷]")


def rule_mistake(sentence: str, seed: int) -> str | None:
    """``sentence`` with one number changed or one operator swapped (``None``: nothing to change).

    Example:
        >>> rule_mistake("3 plus 4 is 7.", seed=0) != "3 plus 4 is 7."
        True
        >>> rule_mistake("Let us think.", seed=0) is None
        True
    """
    rng = random.Random(seed)
    spots = [m for m in _WORD.finditer(sentence)
             if re.fullmatch(r"-?\d+(?:\.\d+)?", m.group()) or m.group().lower() in OPERATORS]
    if not spots:
        return None
    m = rng.choice(spots)
    word = m.group()
    if re.fullmatch(r"-?\d+(?:\.\d+)?", word):
        value = float(word) + rng.choice([-3, -2, -1, 1, 2, 3])
        new = str(int(value)) if "." not in word else f"{value:g}"
    else:
        new = OPERATORS[word.lower()]
        new = new.capitalize() if word[:1].isupper() else new
    return sentence[: m.start()] + new + sentence[m.end():]


def rule_paraphrase(text: str, seed: int) -> str | None:
    """``text`` with synonyms substituted (``None``: no word of the list occurs).

    Example:
        >>> rule_paraphrase("So the total is 7.", seed=0)
        'Therefore the sum equals 7.'
    """
    changed = False

    def swap(m: re.Match) -> str:
        nonlocal changed
        word = m.group(0)
        new = SYNONYMS.get(word.lower())
        if new is None or new == word.lower():
            return word
        changed = True
        return new.capitalize() if word[:1].isupper() else new

    out = re.sub(r"\b[A-Za-z]+\b", swap, text)
    return out if changed else None


def model_rewrite(lm: Any, instruction: str, text: str, *, seed: int, max_new_tokens: int = 96) -> str | None:
    """A rewrite of ``text`` by an instruct model (``None`` when its output is empty or unchanged)."""
    from .engine import generate, prompt_ids

    ids, _, _ = prompt_ids(lm, f"{instruction}\n\n{text}\n\nWrite only the rewritten text.", chat=True)
    rows, _ = generate(lm, ids, 1, max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
    out = lm.tokenizer.decode(rows[0], skip_special_tokens=True).strip().split("\n")[0].strip()
    return out if out and out != text.strip() else None


def mistake(sentence: str, seed: int, generator: Any = None) -> tuple[str | None, str]:
    """A mistaken sentence and who made it (``"model"`` or ``"rule"``); the rule when the model fails."""
    if generator is not None:
        out = model_rewrite(generator, "Rewrite this sentence with one mistake in it (a wrong number or operation).",
                            sentence, seed=seed)
        if out is not None:
            return out, "model"
    return rule_mistake(sentence, seed), "rule"


def paraphrase(text: str, seed: int, generator: Any = None) -> tuple[str | None, str]:
    """A paraphrase and who wrote it (``"model"`` or ``"rule"``); the rule when the model fails."""
    if generator is not None:
        out = model_rewrite(generator, "Paraphrase this reasoning; keep every number and step.", text, seed=seed,
                            max_new_tokens=160)
        if out is not None:
            return out, "model"
    return rule_paraphrase(text, seed), "rule"
