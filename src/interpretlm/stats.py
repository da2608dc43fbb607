"""Small statistics the method families share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def spearman(x: Sequence[float], y: Sequence[float], *, constant: float = float("nan")) -> float:
    """Spearman rank correlation (average ranks for ties); ``constant`` when either side is constant
    or has fewer than 2 values (scipy would warn and give NaN).

    Example:
        >>> round(spearman([1, 2, 3, 4], [10, 20, 30, 25]), 6)
        0.8
        >>> spearman([1, 1, 1], [1, 2, 3], constant=0.0)
        0.0
    """
    from scipy.stats import spearmanr

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return constant
    return float(spearmanr(a, b).statistic)
