"""A built-in English sentence generator, so the linguistic tasks run without a downloaded corpus.

A small grammar (subjects with prepositional phrases and relative clauses, transitive and
intransitive verbs, adverbs, questions, coordination) with words that are nouns in one
sentence and verbs in another ("the watch", "they watch"), so part of speech is not a
property of the word alone and control tasks (one random label per word type) are
harder than the real task.

Example:
    >>> s = sentences(3, seed=0)
    >>> len(s), all(x.endswith(('.', '?')) for x in s)
    (3, True)
"""

from __future__ import annotations

import random

DET = ["the", "a", "this", "that", "every", "my", "her", "our", "his", "their", "one", "each"]
ADJ = ("old small green quiet bright heavy young strange happy cold warm tiny famous lazy brave clever dark empty "
       "gentle golden hidden honest huge late loud modern narrow nervous polite proud rare rich rough sharp shy "
       "silent simple soft strong sweet tall thin wild wise wooden yellow busy calm careful cheap clean curious "
       "distant dusty eager fancy fresh friendly grey hungry kind little lonely lucky noisy pale patient").split()
ADV = ("quickly often rarely slowly quietly never always suddenly carefully gladly barely finally happily "
       "openly easily loudly").split()
PREP = ["near", "behind", "under", "with", "from", "beside", "on", "above", "inside", "across", "past", "without"]
_NOUNS = ("dog teacher park letter house garden friend ship farmer doctor river window table chair city village "
          "child student bird horse car road bridge mountain island forest lake cloud song story painting picture "
          "kitchen school office market station shop bottle box key door wall street tower castle king queen "
          "soldier sailor artist writer baker driver nurse pilot singer dancer neighbor stranger lawyer judge "
          "captain guard monkey rabbit tiger lion cat mouse apple orange cake bread cup plate engine machine "
          "computer phone camera map coin ring hat coat shoe glove blanket lamp clock mirror candle basket "
          "garden fence gate field hill valley meadow beach harbor boat truck bus").split()
# Words that are nouns here and verbs below: part of speech depends on the sentence.
_AMBIGUOUS = "watch book run plant light train park ship play check paint drink fish walk dance cook".split()
_VT = ("see like find help visit follow carry open clean paint watch book plant train park ship check cook "
       "push pull call greet answer climb fix hold lift move order wash fill kick love hate need want").split()
_VI = "sleep wait play laugh arrive run walk dance smile cry rest swim jump work travel fish drink cook".split()
_IRREGULAR = {"see": "saw", "find": "found", "hold": "held", "run": "ran", "swim": "swam", "drink": "drank",
              "light": "lit", "buy": "bought"}


def _plural(n: str) -> str:
    if n in ("child",):
        return "children"
    if n.endswith(("s", "sh", "ch", "x")):
        return n + "es"
    if n.endswith("y") and n[-2] not in "aeiou":
        return n[:-1] + "ies"
    return n + "s"


def _forms(v: str) -> tuple[str, str, str]:
    """(3rd person singular, base, past)."""
    third = v + "es" if v.endswith(("s", "sh", "ch", "x", "o")) else (v[:-1] + "ies" if v.endswith("y") and
                                                                      v[-2] not in "aeiou" else v + "s")
    if v in _IRREGULAR:
        past = _IRREGULAR[v]
    elif v.endswith("e"):
        past = v + "d"
    elif v.endswith("y") and v[-2] not in "aeiou":
        past = v[:-1] + "ied"
    elif v in ("ship", "plan", "hop"):
        past = v + v[-1] + "ed"
    else:
        past = v + "ed"
    return third, v, past


NOUN = [(n, _plural(n)) for n in dict.fromkeys(_NOUNS + _AMBIGUOUS)]
VT = [_forms(v) for v in dict.fromkeys(_VT)]
VI = [_forms(v) for v in dict.fromkeys(_VI)]
PRON = [("she", "sg"), ("he", "sg"), ("they", "pl"), ("we", "pl"), ("it", "sg")]
NAMES = ["Mary", "John", "Anna", "Tom", "Alice", "Bob", "Sarah", "James", "Emma", "David", "Laura", "Peter"]


def _np(rng: random.Random, number: str, depth: int = 0) -> str:
    det = rng.choice(DET if number == "sg" else ["the", "my", "her", "our", "some", "these"])
    adj = (rng.choice(ADJ) + " ") if rng.random() < 0.4 else ""
    noun = rng.choice(NOUN)[0 if number == "sg" else 1]
    out = f"{det} {adj}{noun}"
    if depth == 0 and rng.random() < 0.3:
        out += f" {rng.choice(PREP)} {_np(rng, rng.choice(['sg', 'pl']), depth + 1)}"
    elif depth == 0 and rng.random() < 0.2:
        v = rng.choice(VT)
        out += f" that {rng.choice(NAMES)} {v[2]}"
    return out


def _vp(rng: random.Random, number: str, tense: str) -> str:
    k = 0 if number == "sg" else 1
    if tense == "past":
        k = 2
    adv = (rng.choice(ADV) + " ") if rng.random() < 0.3 else ""
    if rng.random() < 0.55:
        v = rng.choice(VT)
        return f"{adv}{v[k]} {_np(rng, rng.choice(['sg', 'pl']), 1)}"
    v = rng.choice(VI)
    tail = f" {rng.choice(PREP)} {_np(rng, rng.choice(['sg', 'pl']), 1)}" if rng.random() < 0.5 else ""
    return f"{adv}{v[k]}{tail}"


def sentence(rng: random.Random) -> str:
    """One random sentence."""
    number = rng.choice(["sg", "pl"])
    tense = rng.choice(["present", "past"])
    r = rng.random()
    if r < 0.15:
        pron, number = rng.choice(PRON)
        subj = pron
    elif r < 0.3:
        subj, number = rng.choice(NAMES), "sg"
    else:
        subj = _np(rng, number)
    s = f"{subj} {_vp(rng, number, tense)}"
    if rng.random() < 0.2:
        s += f" and {_vp(rng, number, tense)}"
    if rng.random() < 0.1:
        s = f"did {subj} {rng.choice(VI)[1]}?"
        return s[0].upper() + s[1:]
    return s[0].upper() + s[1:] + "."


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct random sentences (seeded)."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 50 * n:
        s = sentence(rng)
        tries += 1
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
