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

DET = ["the", "a", "this", "that", "every", "my", "her", "our"]
ADJ = ["old", "small", "green", "quiet", "bright", "heavy", "young", "strange", "happy", "cold"]
ADV = ["quickly", "often", "rarely", "slowly", "quietly", "never", "always"]
PREP = ["near", "behind", "under", "with", "from", "beside", "on"]
# (singular noun, plural noun); several are also verbs below.
NOUN = [("watch", "watches"), ("book", "books"), ("dog", "dogs"), ("teacher", "teachers"), ("park", "parks"),
        ("light", "lights"), ("run", "runs"), ("plant", "plants"), ("letter", "letters"), ("house", "houses"),
        ("train", "trains"), ("garden", "gardens"), ("friend", "friends"), ("ship", "ships"), ("play", "plays")]
# (3rd singular, plural/base, past) transitive verbs; several are also nouns above.
VT = [("watches", "watch", "watched"), ("books", "book", "booked"), ("plants", "plant", "planted"),
      ("trains", "train", "trained"), ("parks", "park", "parked"), ("ships", "ship", "shipped"),
      ("sees", "see", "saw"), ("likes", "like", "liked"), ("finds", "find", "found"), ("lights", "light", "lit")]
VI = [("runs", "run", "ran"), ("sleeps", "sleep", "slept"), ("waits", "wait", "waited"), ("plays", "play", "played"),
      ("laughs", "laugh", "laughed"), ("arrives", "arrive", "arrived")]
PRON = [("she", "sg"), ("he", "sg"), ("they", "pl"), ("we", "pl"), ("it", "sg")]
NAMES = ["Mary", "John", "Anna", "Tom", "Alice", "Bob"]


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
