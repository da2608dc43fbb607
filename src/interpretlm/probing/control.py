"""Control tasks and selectivity (Hewitt & Liang, 2019).

A control task gives every word *type* one random label, drawn from the real task's label
distribution, and keeps it wherever the type occurs. A probe that does well on it is
memorizing word identity rather than reading the property; *selectivity* is the real
task's accuracy minus the control task's, and a good probe has a high one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


def control_labels(types: Sequence[str], labels: Sequence[Any], seed: int = 0) -> list[Any]:
    """One random label per word type, drawn from the empirical distribution of ``labels``.

    Args:
        types: ``[n]`` each example's word type (e.g. the lower-cased word).
        labels: ``[n]`` the real labels (their frequencies are the sampling distribution).
        seed: the control task's random seed.

    Returns:
        ``[n]`` control labels: equal types always get equal labels.

    Example:
        >>> control_labels(["the", "cat", "the"], ["DET", "NOUN", "DET"], seed=0)[0] == \\
        ...     control_labels(["the", "cat", "the"], ["DET", "NOUN", "DET"], seed=0)[2]
        True
    """
    rng = random.Random(seed)
    pool = list(labels)
    assigned: dict[str, Any] = {}
    for t in sorted(set(types)):   # sorted: the same seed gives the same task whatever the order
        assigned[t] = pool[rng.randrange(len(pool))]
    return [assigned[t] for t in types]


def selectivity(accuracy: float, control_accuracy: float) -> float:
    """Task accuracy minus control-task accuracy."""
    return accuracy - control_accuracy
