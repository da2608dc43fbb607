"""How the built-in question sets are made (``data/*.jsonl`` is this module's output, checked by the tests).

Regenerate with ``python -m interpretlm.reasoning.sets``. The rules:

* **The right answer's position is balanced**: over a set, each position holds the right answer equally
  often (commonsense: each block of ``k`` consecutive questions is a seeded shuffle of ``0..k-1``, so
  prefixes of the set are balanced too; arithmetic: the same within each operation; dates: calendar
  order fixes which positions an answer can take, so the most constrained questions pick first, each the
  least used position it allows), so a model that always picks the first (or any one) choice scores
  chance, not below or above it.
* **No distractor appears in the question** (a number, weekday or month of the question is never a
  wrong choice), so copying a word of the question is neither rewarded nor trapped. In a two-person
  comparison both people are named, so there half the questions ask the relation stated (the answer
  is the first-named person) and half its converse (the second-named): copying either name, or the
  last one named, scores chance.
* **Answers are computed**, never typed: arithmetic by the operation, weekdays modulo 7, months
  modulo 12, comparisons from the stated fact.
* **No worked example is a question**: the few-shot exemplars shown before each question
  (``engine.EXEMPLARS``) are excluded from the sets.
* **Choices are made on a development split**: prompts and comparators are compared on
  :func:`development` (other problems, other wordings, other people, none a question of a set), and
  the figures are reported on the sets.
* **No surface shortcut**: in arithmetic the choice nearest a number of the question is right about as
  often as chance (0.20 over the set; chance 0.25), so matching numbers does not answer it.
* Arithmetic: 120 one-step problems pitched at what a 135M model can do: additions of 2 to 4 to a number
  from 2 to 7, subtractions of 2 to 4 from a number from 6 to 12, and equal groups (2 to 5 groups of 2 to
  5), taking turns, each asked in one of three phrasings; choices in increasing order; each operation's
  answer positions balanced on their own (every prefix of 12 questions is balanced). The default model
  computes additions and subtractions only step by step, and without CoT picks the smallest choice; equal
  groups are the times tables it has memorised, answered with and without CoT (tried first on 40 such
  problems of another seed: 0.72 and 0.90). The first arithmetic set (40 problems with products and
  shares, operands up to 20) left it below its cloze accuracy with its own reasoning (0.35 ± 0.08 against
  0.42 ± 0.08): its chains of thought copied numbers from the listed choices ("Tom has 14 apples") or
  added wrongly (8 + 9), and stated answers outside the choices; the second (100 additions and
  subtractions) left it at chance without CoT (0.27 ± 0.04).
* Dates: 100 one-step questions within reach of a 135M model: the day after a weekday (asked five
  ways, 34), the month after a month (asked three ways, 36; 4 choices in calendar order) and one
  comparison between two people (30, 2 choices), interleaved. The first dates set (1 to 6 days ahead
  or ago, three-person orderings) left the default model at chance without CoT (0.28, chance 0.28);
  asked cloze-style it names the day after a day (0.71 on 7) and the month after a month (0.58 on 12)
  above chance, but not the day or month before (0.29, 0.17), which the set leaves out.
  Commonsense: the 34 everyday questions written for the project, their choices reordered so the
  right one lands at its balanced position.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NAMES = ["Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Leo", "Emma", "Max", "Zoe"]
THINGS = ["apples", "marbles", "cards", "shells", "cookies", "stickers", "balloons", "pencils", "books", "eggs"]
PEOPLE = ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
RELATIONS = [("taller", "shorter"), ("older", "younger"), ("faster", "slower")]


def balanced_positions(n: int, k: int, rng: random.Random) -> list[int]:
    """``n`` answer positions among ``k`` choices: blocks of ``k`` questions, each block a shuffle of ``0..k-1``,
    so every prefix of ``m * k`` questions (``builtin(name, n=8)``) is balanced too."""
    pos: list[int] = []
    while len(pos) < n:
        block = list(range(k))
        rng.shuffle(block)
        pos.extend(block)
    return pos[:n]


def _around(answer: int, position: int, banned: set[int], k: int = 4) -> list[int] | None:
    """``k`` increasing positive numbers with ``answer`` at ``position``: the nearest allowed numbers below and above."""
    below, above, step = [], [], 1
    while len(below) < position and answer - step > 0:
        if answer - step not in banned:
            below.append(answer - step)
        step += 1
    step = 1
    while len(above) < k - 1 - position:
        if answer + step not in banned:
            above.append(answer + step)
        step += 1
    if len(below) < position:
        return None
    return sorted(below) + [answer] + above


ADD = ["{name} has {a} {thing} and buys {b} more. How many {thing} does {name} have now?",
       "{name} has {a} {thing}. A friend gives {name} {b} more. How many {thing} does {name} have now?",
       "There are {a} {thing} in a box. {name} puts in {b} more. How many {thing} are in the box now?"]
TAKE = ["{name} has {a} {thing} and gives {b} to a friend. How many {thing} does {name} have left?",
        "{name} has {a} {thing} and loses {b}. How many {thing} does {name} have left?",
        "There are {a} {thing} in a box. {name} takes out {b}. How many {thing} are in the box now?"]


GROUPS = ["{name} has {a} bags with {b} {thing} in each bag. How many {thing} does {name} have?",
          "There are {a} boxes and each box holds {b} {thing}. How many {thing} are there in all?",
          "{name} puts {b} {thing} on each of {a} plates. How many {thing} are on the plates?"]


def arithmetic(n: int = 120, seed: int = 15) -> list[dict[str, Any]]:
    """One-step additions, subtractions and equal groups of small numbers with 4 numeric choices (see the
    module's rules)."""
    rng = random.Random(seed)
    # each operation's own balanced positions: a model that favours one position scores chance on every
    # operation, so an operation's accuracy is not its share of one position
    positions = [balanced_positions(-(-n // 3), 4, rng) for _ in range(3)]
    out, seen = [], set()
    for i in range(n):
        name, thing = NAMES[i % len(NAMES)], THINGS[(i * 3) % len(THINGS)]
        kind = i % 3  # additions, subtractions and equal groups take turns
        while True:
            template = rng.choice((ADD, TAKE, GROUPS)[kind])
            if kind == 0:
                a, b = rng.randint(2, 7), rng.randint(2, 4)
                ans = a + b
            elif kind == 1:
                a = rng.randint(6, 12)
                b = rng.randint(2, 4)
                ans = a - b
            else:
                a, b = rng.randint(2, 5), rng.randint(2, 5)
                ans = a * b
            text = template.format(name=name, thing=thing, a=a, b=b)
            numbers = {a, b}
            choices = _around(ans, positions[kind][i // 3], numbers)
            if choices is not None and ans not in numbers and text not in seen:
                seen.add(text)
                break
        out.append({"id": f"arith-{i:03d}", "text": text, "choices": [str(c) for c in choices], "answer": str(ans)})
    return out


def _in_order(gold: int, banned: set[int], position: int, k: int, size: int, rng: random.Random) -> list[int] | None:
    """``k`` items of a cycle of ``size`` (days, months) in their calendar order with ``gold`` at ``position``,
    the others drawn from the items not ``banned``; ``None`` when too few lie before or after ``gold``."""
    others = [d for d in range(size) if d != gold and d not in banned]
    before, after = [d for d in others if d < gold], [d for d in others if d > gold]
    if len(before) < position or len(after) < k - 1 - position:
        return None
    return sorted(rng.sample(before, position) + rng.sample(after, k - 1 - position) + [gold])


DAY_AFTER = ["Today is {x}. What day is it tomorrow?", "Which day of the week comes right after {x}?",
             "Yesterday was {x}. What day is it today?", "If today is {x}, what day will it be tomorrow?",
             "What day comes after {x}?"]
MONTH_AFTER = ["Which month comes right after {x}?", "This month is {x}. What month is next month?",
               "What month comes after {x}?"]


def dates(n_order: int = 30, seed: int = 15) -> list[dict[str, Any]]:
    """One-step calendar and ordering questions: the day after a day (asked five ways), the month after a
    month (asked three ways; 4 choices in calendar order) and one comparison between two people (2 choices)."""
    from .engine import EXEMPLARS

    rng = random.Random(seed)
    shown = {text for text, _, _ in EXEMPLARS}
    items = []  # (kind, text, gold, cycle, asked)
    for template in DAY_AFTER:
        items += [("day", template.format(x=DAYS[d]), (d + 1) % 7, DAYS, d) for d in range(7)]
    items = [it for it in items if it[1] not in shown]  # a worked example is never a question of the set
    months = [("month", template.format(x=MONTHS[m]), (m + 1) % 12, MONTHS, m)
              for template in MONTH_AFTER for m in range(12)]
    # Calendar order fixes which positions the answer can take (Tuesday after Monday, with Monday
    # banned, can only come first): the most constrained questions pick first, each the least used
    # position it allows (ties: seeded), which balances the set's positions as far as they allow.
    asked = items + months
    allowed = []
    for _, _, gold, cycle, banned in asked:
        before = sum(1 for d in range(len(cycle)) if d < gold and d != banned)
        after = sum(1 for d in range(len(cycle)) if d > gold and d != banned)
        allowed.append([p for p in range(4) if p <= before and 3 - p <= after])
    used, chosen = [0] * 4, [0] * len(asked)
    for j in sorted(range(len(asked)), key=lambda j: (len(allowed[j]), rng.random())):
        least = min(used[p] for p in allowed[j])
        chosen[j] = rng.choice([p for p in allowed[j] if used[p] == least])
        used[chosen[j]] += 1
    calendar = []
    for (kind, text, gold, cycle, banned), p in zip(asked, chosen):
        picked = _in_order(gold, {banned}, p, 4, len(cycle), rng)
        calendar.append({"text": text, "choices": [cycle[i] for i in picked], "answer": cycle[gold], "kind": kind})
    rng.shuffle(calendar)  # days and months mixed, so a prefix of the set holds both
    order, positions = [], balanced_positions(n_order, 2, rng)
    for i in range(n_order):
        rel, converse = RELATIONS[i % len(RELATIONS)]
        ask_stated = i % 2 == 0  # half ask the relation stated (the first-named person), half its converse
        while True:
            a, b = rng.sample(PEOPLE, 2)
            text = f"{a} is {rel} than {b}. Who is {rel if ask_stated else converse}?"
            if text not in shown and all(text != o["text"] for o in order):
                break
        gold, other = (a, b) if ask_stated else (b, a)
        choices = [other, gold] if positions[i] else [gold, other]
        order.append({"text": text, "choices": choices, "answer": gold, "kind": "order"})
    # interleaved (about 7 calendar questions to 3 orderings), so a prefix of the set holds every kind
    mixed, counts = [], {"day": 0, "month": 0, "order": 0}
    while calendar or order:
        take = calendar[:7] + order[:3]
        calendar, order = calendar[7:], order[3:]
        for row in take:
            kind = row.pop("kind")
            mixed.append({"id": f"{kind}-{counts[kind]:02d}", **row})
            counts[kind] += 1
    return mixed


COMMONSENSE = [
    ("Where would you most likely keep milk to keep it cold?", "fridge", ["oven", "drawer", "garden"]),
    ("What do people usually use to cut paper?", "scissors", ["spoon", "pillow", "cup"]),
    ("If it is raining outside, what should you take to stay dry?", "umbrella", ["sunglasses", "fork", "ball"]),
    ("What do you need to see in a dark room?", "light", ["salt", "music", "water"]),
    ("Which animal says moo?", "cow", ["cat", "dog", "duck"]),
    ("What happens to ice when it gets warm?", "it melts", ["it grows", "it sings", "it burns"]),
    ("Where do fish live?", "in water", ["in trees", "in sand", "in clouds"]),
    ("What do you wear on your feet?", "shoes", ["hat", "gloves", "scarf"]),
    ("What do bees make?", "honey", ["milk", "bread", "wool"]),
    ("When you are hungry, what should you do?", "eat", ["sleep", "run", "shout"]),
    ("What do you use to write on paper?", "pen", ["plate", "shoe", "towel"]),
    ("Which is the hottest?", "fire", ["ice", "snow", "rain"]),
    ("What do plants need to grow?", "sunlight", ["plastic", "noise", "sugar"]),
    ("Where do people usually sleep at night?", "bed", ["sink", "car roof", "mailbox"]),
    ("What do you use to open a locked door?", "key", ["spoon", "book", "sock"]),
    ("Which one can fly?", "bird", ["fish", "horse", "snail"]),
    ("What color is the sky on a clear day?", "blue", ["green", "brown", "black"]),
    ("What do you do with a book?", "read it", ["drink it", "wear it", "plant it"]),
    ("What is used to tell the time?", "clock", ["chair", "bucket", "carpet"]),
    ("Where would you buy bread?", "bakery", ["library", "pharmacy", "garage"]),
    ("What do cars need to run?", "fuel", ["milk", "paper", "sand"]),
    ("What do you use to brush your teeth?", "toothbrush", ["hammer", "comb", "ladder"]),
    ("What falls from clouds?", "rain", ["rocks", "bread", "shoes"]),
    ("If a glass falls on a stone floor, what most likely happens?", "it breaks", ["it bounces", "it floats",
                                                                                   "it grows"]),
    ("What do you call a baby dog?", "puppy", ["kitten", "calf", "chick"]),
    ("Which season is usually the coldest?", "winter", ["summer", "spring", "autumn"]),
    ("What do doctors help people with?", "health", ["taxes", "cooking", "painting"]),
    ("Where do you go to borrow books?", "library", ["bank", "stadium", "airport"]),
    ("What do you use to eat soup?", "spoon", ["knife", "pencil", "brush"]),
    ("What do you need to mail a letter?", "stamp", ["pillow", "ticket", "coin purse"]),
    ("Which one is a fruit?", "apple", ["carrot", "potato", "onion"]),
    ("What does a thermometer measure?", "temperature", ["weight", "length", "speed"]),
    ("What do you do when you are tired?", "rest", ["run faster", "shout", "jump"]),
    ("Which one lives in the ocean?", "whale", ["camel", "squirrel", "owl"]),
]


def commonsense(seed: int = 15) -> list[dict[str, Any]]:
    """The written everyday questions, the right choice at its balanced position, distractors in written order."""
    rng = random.Random(seed)
    positions = balanced_positions(len(COMMONSENSE), 4, rng)
    return [{"id": f"common-{i:02d}", "text": text, "choices": wrong[: p] + [gold] + wrong[p:], "answer": gold}
            for i, ((text, gold, wrong), p) in enumerate(zip(COMMONSENSE, positions))]


MAKERS = {"arithmetic": arithmetic, "commonsense": commonsense, "dates": dates}

# A development split, for choosing prompts and comparators without tuning on the reported questions:
# arithmetic problems of another seed, the calendar questions in other words, comparisons between
# other people; none is a question of a built-in set (the tests check it). Commonsense has none: no
# choice was made on it.
DEV_DAY = ["It is {x} today. Which day will it be tomorrow?", "Which day follows {x}?"]
DEV_MONTH = ["It is {x} now. Which month will it be next month?", "Which month follows {x}?"]
DEV_PEOPLE = ["Nina", "Omar", "Paul", "Rosa", "Sara", "Tim"]


def development(seed: int = 99) -> dict[str, list[dict[str, Any]]]:
    """The development split: ``{"arithmetic": 48 problems, "dates": 40 questions}``, made by the sets' rules.

    Example:
        >>> dev = development()
        >>> len(dev["arithmetic"]), len(dev["dates"]), dev["dates"][0]["text"]
        (48, 40, 'It is Monday today. Which day will it be tomorrow?')
    """
    held = {row["text"] for make in MAKERS.values() for row in make()}
    arith = [row for row in arithmetic(n=120, seed=seed) if row["text"] not in held][:48]
    rng = random.Random(seed)
    items = [(t.format(x=DAYS[d]), (d + 1) % 7, DAYS, d) for t in DEV_DAY for d in range(7)]
    items += [(t.format(x=MONTHS[m]), (m + 1) % 12, MONTHS, m) for t in DEV_MONTH for m in range(0, 12, 2)]
    cal = []
    for i, (text, gold, cycle, asked) in enumerate(items):
        picked = next(c for p in (i % 4, 0, 1, 2, 3) if (c := _in_order(gold, {asked}, p, 4, len(cycle), rng)))
        cal.append({"id": f"dev-cal-{i:02d}", "text": text, "choices": [cycle[j] for j in picked],
                    "answer": cycle[gold]})
    order = []
    for i in range(14):
        rel, converse = RELATIONS[i % len(RELATIONS)]
        a, b = rng.sample(DEV_PEOPLE, 2)
        gold, other = (a, b) if i % 2 == 0 else (b, a)
        asked = rel if i % 2 == 0 else converse
        order.append({"id": f"dev-order-{i:02d}", "text": f"{a} is {rel} than {b}. Who is {asked}?",
                      "choices": [other, gold] if (i // 2) % 2 else [gold, other], "answer": gold})
    return {"arithmetic": [{**row, "id": f"dev-{row['id']}"} for row in arith], "dates": cal + order}


def write(folder: Path | None = None) -> list[Path]:
    """Write every set as JSONL (one question a line) into ``folder`` (default: the package's ``data/``)."""
    folder = Path(folder) if folder is not None else Path(__file__).parent / "data"
    paths = []
    for name, make in MAKERS.items():
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in make()), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write():
        print(p)
