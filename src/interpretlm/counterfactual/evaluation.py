"""The built-in evaluation set: 220 short labelled texts written for the project.

120 one-sentence reviews (60 positive, 60 negative: films, food, products, places) and 100
one-sentence texts on four topics (sports, business, science, food; 25 each). Each example
is a prompt with its :class:`~interpretlm.targets.Label` target (verbalizer tokens ``" positive"``
/ ``" negative"``, or the topic names) and the template words the search must keep.

Example:
    >>> from interpretlm.counterfactual.evaluation import evaluation_set
    >>> ex = evaluation_set("sentiment")[0]
    >>> ex.prompt
    'Review: The acting was wonderful and the story moving.\\nSentiment:'
    >>> ex.label, list(ex.target.verbalizers), ex.keep
    ('positive', ['positive', 'negative'], ('Review:', 'Sentiment:'))
    >>> len(evaluation_set()), len(evaluation_set("topic"))
    (220, 100)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from ..errors import InterpretLMError
from ..targets import Label

TASKS = {
    "sentiment": ("Review: {text}\nSentiment:", ("Review:", "Sentiment:"),
                  {"positive": [" positive"], "negative": [" negative"]}),
    "topic": ("Text: {text}\nTopic:", ("Text:", "Topic:"),
              {"sports": [" sports"], "business": [" business"], "science": [" science"], "food": [" food"]}),
}


@dataclass(frozen=True)
class Example:
    """One labelled example: the bare ``text``, its ``prompt``, gold ``label``, ``target`` and ``keep`` words."""

    task: str
    text: str
    label: str
    prompt: str
    target: Label
    keep: tuple[str, ...]


def evaluation_set(task: str | None = None) -> list[Example]:
    """The built-in examples (``task``: ``"sentiment"``, ``"topic"`` or ``None`` for both), in file order."""
    if task is not None and task not in TASKS:
        raise InterpretLMError(f"Unknown task {task!r}; the evaluation set has {sorted(TASKS)}.")
    text = resources.files(__package__).joinpath("data/evaluation.jsonl").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        row = json.loads(line)
        if task is not None and row["task"] != task:
            continue
        template, keep, verbalizers = TASKS[row["task"]]
        out.append(Example(row["task"], row["text"], row["label"], template.format(text=row["text"]),
                           Label(verbalizers, label=row["label"]), keep))
    return out
