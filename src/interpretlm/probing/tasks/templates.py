"""Template tasks: sentiment, number agreement minimal pairs, IOI name position.

Each is generated from built-in word lists with a ``seed``; the label is known by
construction, so no annotator or parser is involved.
"""

from __future__ import annotations

import itertools
import random

from ..errors import ProbingError
from .base import Task

POSITIVE = ["good", "great", "wonderful", "excellent", "lovely", "delightful", "superb", "fantastic", "pleasant",
            "charming"]
NEGATIVE = ["bad", "terrible", "awful", "boring", "horrible", "dreadful", "poor", "disappointing", "unpleasant",
            "dull"]
THINGS = ["movie", "food", "book", "hotel", "concert", "service", "game", "trip", "show", "meal", "song", "class"]
FRAMES = ["The {thing} was {adj}.", "I thought the {thing} was {adj}.", "Honestly, the {thing} was really {adj}.",
          "Everyone said the {thing} was {adj}.", "Our {thing} turned out {adj}.", "What a {adj} {thing}!"]

SUBJECTS = [("key", "keys"), ("author", "authors"), ("picture", "pictures"), ("boy", "boys"), ("road", "roads"),
            ("bottle", "bottles"), ("painting", "paintings"), ("manager", "managers"), ("door", "doors")]
ATTRACTORS = [("cabinet", "cabinets"), ("book", "books"), ("wall", "walls"), ("girl", "girls"), ("village", "villages"),
              ("table", "tables"), ("museum", "museums"), ("worker", "workers"), ("house", "houses")]
PREPS = ["to", "near", "behind", "beside", "of", "by", "next to"]

IOI_NAMES = ["Mary", "John", "Anna", "Tom", "Alice", "Bob", "Sarah", "James", "Emma", "David", "Laura", "Mark"]
IOI_PLACES = ["store", "park", "school", "office", "garden", "station", "market", "beach"]
IOI_OBJECTS = ["drink", "book", "ball", "letter", "gift", "key", "ticket", "flower"]
IOI_FRAMES = ["When {a} and {b} went to the {place}, {s} gave a {obj} to",
              "Then, {a} and {b} had a long day at the {place}. {s} handed a {obj} to",
              "After {a} and {b} arrived at the {place}, {s} passed a {obj} to"]


def _need(n: int) -> None:
    if not isinstance(n, int) or n < 2:
        raise ProbingError(f"n={n!r}: a template task needs at least 2 examples.")


def sentiment(n: int = 200, *, seed: int = 0, pooling: str = "last") -> Task:
    """Sentence polarity (``"positive"`` / ``"negative"``) from templates.

    Example:
        >>> t = sentiment(4, seed=0)
        >>> sorted(set(t.labels))
        ['negative', 'positive']
    """
    _need(n)
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        adj = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        frame = rng.choice(FRAMES)
        text = frame.format(thing=rng.choice(THINGS), adj=adj)
        if frame.startswith("What a") and adj[0] in "aeiou":
            text = text.replace("What a ", "What an ", 1)
        texts.append(text)
        labels.append(label)
    return Task.sentences("sentiment", texts, labels, pooling=pooling, source="templates", seed=seed)


def agreement(n: int = 200, *, seed: int = 0) -> Task:
    """Subject number (``"singular"`` / ``"plural"``) before the verb, from minimal pairs.

    Each pair is "The key to the cabinets" / "The keys to the cabinets": the same prefix with
    only the subject's number changed, and an attractor noun in between. The label is read
    at the last token (where the verb comes next); the two halves of a pair always fall on
    the same side of the train/test split.
    """
    _need(n)
    rng = random.Random(seed)
    texts, labels, groups = [], [], []
    for pair in range((n + 1) // 2):
        subj = rng.choice(SUBJECTS)
        attr = rng.choice(ATTRACTORS)[rng.randrange(2)]
        prep = rng.choice(PREPS)
        for number, word in (("singular", subj[0]), ("plural", subj[1])):
            texts.append(f"The {word} {prep} the {attr}")
            labels.append(number)
            groups.append(pair)
    return Task.sentences("agreement", texts[:n], labels[:n], groups=groups[:n], pooling="last",
                          source="templates", seed=seed)


def ioi(n: int = 200, *, seed: int = 0) -> Task:
    """Indirect-object name position (``"first"`` / ``"second"`` name) in IOI prompts.

    "When Mary and John went to the store, John gave a drink to" ends before the indirect
    object, Mary, the *first* name; with "Mary gave" it is the *second*. The label is read
    at the last token; the two orders of a name pair stay on one side of the split.
    """
    _need(n)
    rng = random.Random(seed)
    pairs = list(itertools.permutations(IOI_NAMES, 2))
    texts, labels, groups = [], [], []
    for g in range((n + 1) // 2):
        a, b = rng.choice(pairs)
        frame, place, obj = rng.choice(IOI_FRAMES), rng.choice(IOI_PLACES), rng.choice(IOI_OBJECTS)
        texts.append(frame.format(a=a, b=b, s=b, place=place, obj=obj))
        labels.append("first")
        texts.append(frame.format(a=a, b=b, s=a, place=place, obj=obj))
        labels.append("second")
        groups += [g, g]
    return Task.sentences("ioi_name_position", texts[:n], labels[:n], groups=groups[:n], pooling="last",
                          source="templates", seed=seed)
