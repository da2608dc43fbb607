"""Questions and the built-in question sets (package data, one JSON object a line)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..errors import InterpretLMError

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class QuestionError(InterpretLMError, ValueError):
    """A question that cannot be asked or scored (empty, no choices and no numeric answer)."""


@dataclass(frozen=True)
class Question:
    """A question to reason about: its text, its choices and (optionally) the right answer.

    Args:
        text: the question.
        choices: the answers offered (strings; a multiple-choice question). Empty for an
            open question, which then needs a numeric ``answer`` (answers are read as numbers).
        answer: the right answer (one of ``choices``), or ``None`` if unknown (accuracy
            is then measured against the model's own answer).
        id: a name for tables.

    Example:
        >>> q = Question("Tom has 3 apples and buys 4 more. How many apples does he have?",
        ...              choices=["6", "7", "8", "9"], answer="7")
        >>> q.choices, q.answer_index
        (('6', '7', '8', '9'), 1)
    """

    text: str
    choices: tuple[str, ...] = ()
    answer: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        text = str(self.text).strip() if self.text is not None else ""
        if not text:
            raise QuestionError("The question is empty; give its text, e.g. Question('2 + 2 = ?', choices=['3', '4']).")
        choices = tuple(str(c).strip() for c in (self.choices or ()))
        if any(not c for c in choices):
            raise QuestionError(f"A choice is empty: {list(choices)}.")
        if len(set(c.lower() for c in choices)) != len(choices):
            raise QuestionError(f"Choices repeat: {list(choices)}; each must differ.")
        if len(choices) == 1:
            raise QuestionError(f"One choice ({choices[0]!r}) is no choice; give two or more, or none for an "
                                "open numeric question.")
        answer = None if self.answer is None else str(self.answer).strip()
        if choices and answer is not None and answer not in choices:
            raise QuestionError(f"The answer {answer!r} is not one of the choices {list(choices)}.")
        if not choices and (answer is None or not NUMBER.fullmatch(answer)):
            raise QuestionError("A question with no choices needs a numeric answer (answers are then read as the "
                                f"last number of the reasoning); got answer={answer!r}. Give choices=[...] instead.")
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "choices", choices)
        object.__setattr__(self, "answer", answer)

    @property
    def answer_index(self) -> int | None:
        """The index of the right answer among the choices (``None``: unknown or open)."""
        return self.choices.index(self.answer) if self.answer is not None and self.choices else None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "choices": list(self.choices), "answer": self.answer, "id": self.id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Question":
        return cls(d["text"], tuple(d.get("choices") or ()), d.get("answer"), d.get("id", ""))


def as_question(question: Any, choices: Any = None, answer: Any = None) -> Question:
    """A :class:`Question` from a question or its text (``choices`` / ``answer`` override its own)."""
    if isinstance(question, dict):
        question = Question.from_dict(question)
    if isinstance(question, Question):
        if choices is None and answer is None:
            return question
        return Question(question.text, tuple(choices) if choices is not None else question.choices,
                        answer if answer is not None else question.answer, question.id)
    if not isinstance(question, str):
        raise QuestionError(f"A question is a string or il.reasoning.Question, not {type(question).__name__}.")
    if isinstance(choices, str):
        choices = [c for c in choices.split(",")]
    return Question(question, tuple(choices or ()), answer)


SETS = ("arithmetic", "commonsense", "dates")


def builtin(name: str, n: int | None = None) -> list[Question]:
    """A built-in multiple-choice question set written for the project (``SETS``; ≥ 30 each).

    Example:
        >>> qs = builtin("arithmetic")
        >>> len(qs) >= 30 and all(q.answer in q.choices for q in qs)
        True
    """
    if name not in SETS:
        raise QuestionError(f"Unknown question set {name!r}; built-in sets: {', '.join(SETS)}.")
    text = resources.files(__package__).joinpath("data", f"{name}.jsonl").read_text(encoding="utf-8")
    qs = [Question.from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]
    return qs[:n] if n is not None else qs


def question_from_text(word: str, lm: Any = None) -> Question | list[Question]:
    """The command line's input: a built-in set name, a ``.jsonl`` file of questions, or a question's text
    (its choices then come from ``--choices``)."""
    if word in SETS:
        return builtin(word)
    if word.endswith(".jsonl"):
        from pathlib import Path

        return [Question.from_dict(json.loads(line)) for line in Path(word).read_text().splitlines() if line.strip()]
    return word
