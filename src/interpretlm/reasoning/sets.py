"""How the built-in question sets are made (``data/*.jsonl`` is this module's output, checked by the tests).

The rules were fixed before any model was measured on the sets:

* **The right answer's position is balanced**: over a set, each position holds the right answer
  equally often (each block of ``k`` consecutive questions is a seeded shuffle of ``0..k-1``, so
  prefixes of the set are balanced too), so a model that always picks the first (or any one)
  choice scores chance, not below or above it.
* **No distractor appears in the question** (a number or weekday of the question is never a wrong
  choice), so copying a word of the question is neither rewarded nor trapped.
* **Answers are computed**, never typed: arithmetic by the operation, weekdays modulo 7, orderings
  from the chain of comparisons.
* Arithmetic: one step (add, take away, equal groups, equal shares), operands at most 20, choices
  in increasing order. Dates: days of the week (1 to 6 days ahead or ago, choices in week order)
  and three-person orderings (3 choices). Commonsense: the 34 everyday questions written for the
  project, their choices reordered so the right one lands at its balanced position.
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
RELATIONS = [("taller", "tallest", "shortest"), ("older", "oldest", "youngest"), ("faster", "fastest", "slowest")]


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


def arithmetic(n: int = 40, seed: int = 15) -> list[dict[str, Any]]:
    """One-step word problems with 4 numeric choices (see the module's rules)."""
    rng = random.Random(seed)
    positions = balanced_positions(n, 4, rng)
    out, seen = [], set()
    for i in range(n):
        name, thing = NAMES[i % len(NAMES)], THINGS[(i * 3) % len(THINGS)]
        kind = i % 4
        while True:
            if kind == 0:
                a, b = rng.randint(2, 9), rng.randint(2, 9)
                text, ans = f"{name} has {a} {thing} and buys {b} more. How many {thing} does {name} have now?", a + b
            elif kind == 1:
                a = rng.randint(6, 15)
                b = rng.randint(1, a - 2)
                text = f"{name} has {a} {thing} and gives {b} to a friend. How many {thing} does {name} have left?"
                ans = a - b
            elif kind == 2:
                a, b = rng.randint(2, 5), rng.randint(2, 5)
                text = (f"{name} has {a} bags with {b} {thing} in each bag. How many {thing} does {name} have "
                        "in all?")
                ans = a * b
            else:
                b, ans = rng.randint(2, 5), rng.randint(2, 5)
                text = f"{name} shares {b * ans} {thing} equally among {b} friends. How many {thing} does each friend get?"
            numbers = {int(w) for w in text.replace("?", " ").replace(".", " ").split() if w.isdigit()}
            choices = _around(ans, positions[i], numbers)
            if choices is not None and ans not in numbers and text not in seen:
                seen.add(text)
                break
        out.append({"id": f"arith-{i:02d}", "text": text, "choices": [str(c) for c in choices], "answer": str(ans)})
    return out


def dates(n_days: int = 24, n_order: int = 16, seed: int = 15) -> list[dict[str, Any]]:
    """Weekday arithmetic (4 choices in week order) and three-person orderings (3 choices)."""
    rng = random.Random(seed)
    out, seen = [], set()
    positions = balanced_positions(n_days, 4, rng)
    for i in range(n_days):
        while True:
            today, k, ahead = rng.randrange(7), rng.randint(1, 6), rng.random() < 0.5
            gold = (today + k) % 7 if ahead else (today - k) % 7
            days = "day" if k == 1 else "days"
            when = f"will it be in {k} {days}" if ahead else f"was it {k} {days} ago"
            others = [d for d in range(7) if d not in (today, gold)]
            before, after = [d for d in others if d < gold], [d for d in others if d > gold]
            p = positions[i]
            if len(before) >= p and len(after) >= 3 - p and (today, k, ahead) not in seen:
                seen.add((today, k, ahead))
                picked = sorted(rng.sample(before, p) + rng.sample(after, 3 - p) + [gold])
                break
        out.append({"id": f"date-{i:02d}", "text": f"Today is {DAYS[today]}. What day of the week {when}?",
                    "choices": [DAYS[d] for d in picked], "answer": DAYS[gold]})
    days_part, out = out, []
    positions = balanced_positions(n_order, 3, rng)
    for i in range(n_order):
        rel, most, least = RELATIONS[i % len(RELATIONS)]
        while True:
            who = rng.sample(PEOPLE, 3)  # who[0] is the most (tallest...), who[2] the least
            facts = [f"{who[0]} is {rel} than {who[1]}.", f"{who[1]} is {rel} than {who[2]}."]
            rng.shuffle(facts)
            ask_most = rng.random() < 0.5
            if (tuple(facts), ask_most) not in seen:
                seen.add((tuple(facts), ask_most))
                break
        gold = who[0] if ask_most else who[2]
        rest = sorted(w for w in who if w != gold)
        choices = rest[: positions[i]] + [gold] + rest[positions[i]:]
        out.append({"id": f"order-{i:02d}", "text": f"{' '.join(facts)} Who is the {most if ask_most else least}?",
                    "choices": choices, "answer": gold})
    # interleaved, 3 weekday questions then 2 orderings, so a prefix of the set holds both kinds
    mixed: list[dict[str, Any]] = []
    while days_part or out:
        mixed.extend(days_part[:3] + out[:2])
        days_part, out = days_part[3:], out[2:]
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
