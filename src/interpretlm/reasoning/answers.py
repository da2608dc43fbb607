"""Reading a chain of thought: its sentences, its answer line, and the choice an answer names
(the answer line, then a sentence stating the answer, then a number or a choice's words; the
path taken is returned with the answer).
"""

from __future__ import annotations

import re

from .question import NUMBER, Question

ANSWER_LINE = re.compile(r"(?im)^[ \t>*#]*(?:final\s+)?answer\s*(?:is)?\s*[:：]\s*(.+?)\s*$")
# "the (final) answer is X" inside a sentence (X: up to the sentence's end)
ANSWER_STATED = re.compile(r"(?i)\banswer\s+(?:is|would be|will be)\s*:?\s*([^.\n]+?(?:\.\d+)?)\s*(?:[.\n]|$)")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|\n+")


def split_answer(text: str) -> tuple[str, str | None]:
    """The reasoning (text before the last answer line) and the answer line's value (``None``: no line)."""
    found = list(ANSWER_LINE.finditer(text))
    if not found:
        return text.strip(), None
    last = found[-1]
    return text[: last.start()].strip(), last.group(1).strip()


def sentence_spans(reasoning: str) -> list[tuple[int, int]]:
    """Character spans of the reasoning's sentences (split after ``.!?`` and at line breaks)."""
    spans, start = [], 0
    for m in list(SENTENCE_END.finditer(reasoning)) + [None]:
        end = m.start() if m is not None else len(reasoning)
        piece = reasoning[start:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip())))
        start = m.end() if m is not None else end
    return spans


def _norm(s: str) -> str:
    return re.sub(r"[\s.,;:!?'\"()\[\]*]+", " ", s.lower()).strip()


def _match_choice(q: Question, value: str) -> str | None:
    """The choice ``value`` names: equal after normalising, else the only choice it contains as a word.

    A value that is a calculation (``"8 + 7 = 15"``) names its result, the text after the last ``=``
    (else its operands, often choices, would be read as the answer)."""
    if "=" in value and value.rsplit("=", 1)[1].strip():
        value = value.rsplit("=", 1)[1]
    v = _norm(value)
    for c in q.choices:
        if _norm(c) == v:
            return c
    if not q.choices:
        nums = NUMBER.findall(value)
        return nums[-1] if nums else None
    inside = [c for c in q.choices if re.search(rf"(?<!\w){re.escape(_norm(c))}(?!\w)", v)]
    if len(inside) == 1:
        return inside[0]
    letters = "abcdefghij"
    if len(v) == 1 and v in letters[: len(q.choices)]:
        return q.choices[letters.index(v)]
    return None


def extract(q: Question, text: str) -> tuple[str | None, str]:
    """The answer a generated text gives, and the path that found it.

    Paths: ``"answer_line"`` (an ``Answer: ...`` line naming a choice), ``"regex"`` (the last
    "the answer is X" statement naming a choice, else the last choice, or for open questions the
    last number, named in the text), ``"none"`` (the caller then forces the answer by scoring
    each choice after ``"Answer:"``: path ``"scored"``). A stated answer (line or statement) that
    names no choice gives ``"none"``: a choice named elsewhere (the choices echoed back) is not
    the model's answer.

    Example:
        >>> q = Question("2 + 2?", choices=["3", "4"])
        >>> extract(q, "Two plus two is 4.\\nAnswer: 4"), extract(q, "So we get 4 apples."), extract(q, "hmm")
        (('4', 'answer_line'), ('4', 'regex'), (None, 'none'))
        >>> extract(q, "3 or 4? The answer is 4."), extract(q, "3 or 4?\\nAnswer: 5")
        (('4', 'regex'), (None, 'none'))
        >>> extract(q, "We add.\\nAnswer: 1 + 3 = 4"), extract(q, "We add.\\nAnswer: 3 + 1 = 5")
        (('4', 'answer_line'), (None, 'none'))
    """
    reasoning, line = split_answer(text)
    if line is not None:
        got = _match_choice(q, line)
        if got is not None:
            return got, "answer_line"
    stated = [m.group(1) for m in ANSWER_STATED.finditer(text)]
    if stated:  # "... so the answer is 7." inside a sentence: the last such statement
        got = _match_choice(q, stated[-1])
        if got is not None:
            return got, "regex"
    if line is not None or stated:
        # the model stated an answer that is none of the choices: a choice merely named elsewhere
        # (often the choices echoed back) is not its answer, so the answer is forced instead
        return None, "none"
    v = _norm(text)
    if q.choices:
        last, where = None, -1
        for c in q.choices:
            for m in re.finditer(rf"(?<!\w){re.escape(_norm(c))}(?!\w)", v):
                if m.start() > where:
                    last, where = c, m.start()
        if last is not None:
            return last, "regex"
        return None, "none"
    nums = NUMBER.findall(text)
    return (nums[-1], "regex") if nums else (None, "none")
