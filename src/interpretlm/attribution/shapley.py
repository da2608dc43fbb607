"""Shapley values of input features: ``exact_shap``, ``kernel_shap`` and ``partition_shap``.

The game is ``v(S)`` = the target with only the features in ``S`` present (the others
masked as recorded in the result). Every method here satisfies efficiency exactly:
the scores add up to ``v(all) - v(none)``.

* ``exact_shap`` scores every coalition (``2^F``, batched) — up to 16 features.
* ``kernel_shap`` (Lundberg & Lee 2017) fits the Shapley kernel regression on paired
  coalitions (each sampled coalition comes with its complement), enumerates whole
  coalition sizes first where that takes a small share of the budget, scores each
  distinct coalition once (weighted by its kernel weight over its probability of being
  drawn), and solves the regression under the efficiency constraint.
* ``partition_shap`` gives Owen values over a hierarchy of phrases, words and tokens
  (the game of shap's ``Partition`` explainer); cost grows with the square of the
  number of features, not exponentially.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np

from ..errors import CheckWarning, InterpretLMError
from ..model import LM
from ..targets import TargetLike
from .explained import Explained
from .features import _starts_word
from .registry import register_method
from .result import Attribution

MAX_EXACT_FEATURES = 16
Game = Callable[[np.ndarray], np.ndarray]  # keep [n, F] bool -> values [n, R]


class ShapleyWarning(CheckWarning):
    """A Shapley estimate that could not separate every feature (too few samples)."""


class ShapleyError(InterpretLMError, ValueError):
    """Shapley options that cannot work (too many features for exact values, too few samples)."""


# ---------------------------------------------------------------------------- exact
def exact_shapley(game: Game, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Shapley values by scoring all ``2^F`` coalitions.

    Returns:
        ``phi [R, F]`` and the coalition values ``[2^F, R]`` (coalition ``k`` keeps feature
        ``i`` when bit ``i`` of ``k`` is set).

    Example:
        >>> w = np.array([1.0, 2.0, -3.0])
        >>> phi, _ = exact_shapley(lambda keep: (keep @ w)[:, None], 3)
        >>> phi.round(6).tolist()
        [[1.0, 2.0, -3.0]]
    """
    F = n_features
    codes = np.arange(2 ** F)
    keep = ((codes[:, None] >> np.arange(F)) & 1).astype(bool)
    v = game(keep)
    size = keep.sum(1)
    weight = np.array([math.factorial(s) * math.factorial(F - s - 1) / math.factorial(F) if s < F else 0.0
                       for s in range(F + 1)])
    phi = np.zeros((v.shape[1], F))
    for i in range(F):
        without = codes[(codes >> i) & 1 == 0]
        phi[:, i] = ((v[without | (1 << i)] - v[without]) * weight[size[without]][:, None]).sum(0)
    return phi, v


# ---------------------------------------------------------------------------- kernel
def _kernel_size_weights(F: int) -> np.ndarray:
    """Total Shapley-kernel weight of each coalition size ``1..F-1`` (index = size)."""
    w = np.zeros(F + 1)
    s = np.arange(1, F)
    w[1:F] = (F - 1) / (s * (F - s))
    return w / w.sum()


def kernel_coalitions(F: int, n_samples: int, rng: np.random.Generator,
                      enumerate_share: float = 0.2) -> tuple[np.ndarray, np.ndarray, bool]:
    """Coalitions and their regression weights for KernelSHAP.

    Whole sizes ``(s, F - s)`` are enumerated from the smallest up while they take at most
    ``enumerate_share`` of the budget (each subset gets its exact kernel weight); the rest
    of the budget samples the other sizes from the kernel distribution in complementary
    pairs, until it holds that many distinct coalitions.

    Returns:
        ``keep [n, F]``, ``weights [n]`` and whether every coalition was enumerated (then
        the result equals the exact Shapley values).
    """
    size_w = _kernel_size_weights(F)
    rows: list[np.ndarray] = []
    weights: list[float] = []
    budget = n_samples
    left = 1.0
    sizes_done: set[int] = set()
    for s in range(1, F // 2 + 1):
        pair = [s] if s == F - s else [s, F - s]
        need = sum(math.comb(F, t) for t in pair)
        everything = n_samples >= 2 ** F - 2
        # enumerate a size only when it leaves enough samples for the sizes not enumerated
        if need > budget or (not everything and n_samples - budget + need > enumerate_share * n_samples):
            break
        for t in pair:
            for combo in _combinations(F, t):
                k = np.zeros(F, dtype=bool)
                k[list(combo)] = True
                rows.append(k)
                weights.append(size_w[t] / math.comb(F, t))
            sizes_done.add(t)
            left -= size_w[t]
        budget -= need
    complete = len(sizes_done) == F - 1
    if not complete and budget >= 2:
        # Paired draws from the kernel distribution over the remaining sizes, until the budget
        # holds that many *distinct* coalitions. Each distinct coalition gets its kernel weight
        # divided by its probability of having been drawn at all (Horvitz-Thompson, the
        # "c-kernel" of Olsen & Jullum 2024), which is much less noisy than weighting by counts.
        rest = np.array([t for t in range(1, F) if t not in sizes_done])
        p = size_w[rest] / size_w[rest].sum()
        seen: dict[bytes, np.ndarray] = {}
        draws = 0
        while len(seen) + 2 <= budget and draws < 50 * budget:
            t = int(rng.choice(rest, p=p))
            k = np.zeros(F, dtype=bool)
            k[rng.permutation(F)[:t]] = True
            draws += 1
            for kk in (k, ~k):
                seen.setdefault(kk.tobytes(), kk)
        p_of = dict(zip(rest.tolist(), p.tolist()))
        for kk in seen.values():
            t = int(kk.sum())
            # a pair draw yields kk when it draws kk or its complement
            p_pair = p_of[t] / math.comb(F, t) + p_of[F - t] / math.comb(F, F - t)
            incl = 1 - (1 - p_pair) ** draws
            rows.append(kk)
            weights.append(size_w[t] / math.comb(F, t) / incl)
    return np.array(rows, dtype=bool).reshape(-1, F), np.array(weights), complete


def _combinations(F: int, s: int):
    from itertools import combinations
    return combinations(range(F), s)


def constrained_shapley_regression(Z: np.ndarray, y: np.ndarray, weights: np.ndarray, v0: np.ndarray,
                                   v1: np.ndarray) -> np.ndarray:
    """Solve ``min Σ w (y - v0 - Z φ)²`` subject to ``Σ φ = v1 - v0`` (efficiency, exact).

    ``Z [n, F]``, ``y [n, R]``, ``v0, v1 [R]`` -> ``phi [R, F]``.
    """
    delta = v1 - v0
    F = Z.shape[1]
    # eliminate the last feature: phi_F = delta - sum(phi_<F)
    A = Z[:, :-1] - Z[:, -1:]
    B = y - v0 - Z[:, -1:] * delta
    sw = np.sqrt(weights)[:, None]
    sol, _, rank, _ = np.linalg.lstsq(A * sw, B * sw, rcond=None)  # [F-1, R]
    if rank < F - 1:
        # too few distinct coalitions to tell some features apart: the minimum-norm solution
        # splits their joint value evenly; say so instead of returning it silently
        warnings.warn(f"KernelSHAP: the {Z.shape[0]} sampled coalitions cannot separate all {F} features "
                      f"(rank {rank} < {F - 1}); features always kept or dropped together share their value. "
                      "Raise n_samples.", ShapleyWarning, stacklevel=3)
    phi = np.zeros((y.shape[1], F))
    phi[:, :-1] = sol.T
    phi[:, -1] = delta - sol.sum(0)
    return phi


def kernel_shapley(game: Game, F: int, n_samples: int, seed: int,
                   visible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """KernelSHAP estimate: returns ``phi [R, F]``, ``v(none) [R]``, ``v(all) [R]`` and completeness.

    ``visible [R, F]`` marks the features each row can depend on (a continuation's later
    tokens cannot change an earlier token's probability); the others get exactly 0.

    Example:
        >>> w = np.array([1.0, 2.0, -3.0, 0.5])
        >>> phi, *_ = kernel_shapley(lambda keep: (keep @ w)[:, None], 4, 12, seed=0)
        >>> phi.round(6).tolist()
        [[1.0, 2.0, -3.0, 0.5]]
    """
    if F == 1:
        v = game(np.array([[False], [True]]))
        return (v[1] - v[0])[:, None], v[0], v[1], True
    rng = np.random.default_rng(seed)
    Z, w, complete = kernel_coalitions(F, max(2, n_samples - 2), rng)
    ends = np.array([np.zeros(F, bool), np.ones(F, bool)])
    v = game(np.concatenate([ends, Z]))
    v0, v1, y = v[0], v[1], v[2:]
    if visible is None or visible.all():
        return constrained_shapley_regression(Z.astype(float), y, w, v0, v1), v0, v1, complete
    phi = np.zeros((y.shape[1], F))
    for r in range(y.shape[1]):
        cols = np.flatnonzero(visible[r])
        if len(cols) == 1:
            phi[r, cols] = v1[r] - v0[r]
        elif len(cols) > 1:
            phi[r, cols] = constrained_shapley_regression(Z[:, cols].astype(float), y[:, r:r + 1], w, v0[r:r + 1],
                                                          v1[r:r + 1])[0]
    return phi, v0, v1, complete


# ---------------------------------------------------------------------------- partition (Owen)
Tree = Union[int, list]


def _balanced(items: list) -> Tree:
    if len(items) == 1:
        return items[0]
    mid = (len(items) + 1) // 2
    return [_balanced(items[:mid]), _balanced(items[mid:])]


_END = re.compile(r"[.,;:!?\n]\s*$")


def feature_hierarchy(labels: Sequence[str]) -> Tree:
    """A binary hierarchy of feature indices: phrases (split after punctuation), words, tokens.

    Example:
        >>> feature_hierarchy(["When", " Mary", " went", ",", " John", " left"])
        [[[0, 1], [2, 3]], [4, 5]]
    """
    phrases: list[list[int]] = [[]]
    for i, lab in enumerate(labels):
        phrases[-1].append(i)
        if _END.search(lab) and i < len(labels) - 1:
            phrases.append([])
    nodes = []
    for ph in phrases:
        words: list[list[int]] = []
        for i in ph:
            if not words or _starts_word(labels[i], labels[words[-1][-1]]):
                words.append([i])
            else:
                words[-1].append(i)
        nodes.append(_balanced([_balanced(w) for w in words]))
    return _balanced(nodes)


def _leaves(tree: Tree) -> list[int]:
    return [tree] if isinstance(tree, int) else [i for t in tree for i in _leaves(t)]


def owen_values(game: Game, F: int, tree: Tree) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Exact Owen values of a binary hierarchy, scored level by level in batches.

    At a node with children ``L, R`` and a context ``C`` (the features outside the node that
    are present), ``L`` gets ``½[v(C∪L) - v(C)] + ½[v(C∪L∪R) - v(C∪R)]``; ``L``'s own
    members are then valued in the contexts ``C`` and ``C∪R`` (weight ½ each).

    Returns:
        ``phi [R, F]``, ``v(none)``, ``v(all)`` and the number of distinct coalitions scored.

    Example:
        >>> w = np.array([1.0, 2.0, -3.0])
        >>> phi, *_ = owen_values(lambda keep: (keep @ w)[:, None], 3, [[0, 1], 2])
        >>> phi.round(6).tolist()
        [[1.0, 2.0, -3.0]]
    """
    cache: dict[bytes, np.ndarray] = {}

    def evaluate(masks: list[np.ndarray]) -> None:
        todo, seen = [], set()
        for m in masks:
            key = m.tobytes()
            if key not in cache and key not in seen:
                seen.add(key)
                todo.append(m)
        if todo:
            for m, val in zip(todo, game(np.array(todo))):
                cache[m.tobytes()] = val

    def with_(ctx: np.ndarray, idx: list[int]) -> np.ndarray:
        m = ctx.copy()
        m[idx] = True
        return m

    none, full = np.zeros(F, bool), np.ones(F, bool)
    evaluate([none, full])
    R = cache[none.tobytes()].shape[0]
    phi = np.zeros((R, F))
    if isinstance(tree, int):
        phi[:, tree] = cache[full.tobytes()] - cache[none.tobytes()]
        return phi, cache[none.tobytes()], cache[full.tobytes()], len(cache)
    level = [(tree, none, 1.0)]
    while level:
        need = []
        for node, ctx, _ in level:
            left, right = _leaves(node[0]), _leaves(node[1])
            need += [ctx, with_(ctx, left), with_(ctx, right), with_(ctx, left + right)]
        evaluate(need)
        nxt = []
        for node, ctx, w in level:
            left, right = _leaves(node[0]), _leaves(node[1])
            v00 = cache[ctx.tobytes()]
            v10 = cache[with_(ctx, left).tobytes()]
            v01 = cache[with_(ctx, right).tobytes()]
            v11 = cache[with_(ctx, left + right).tobytes()]
            for child, own, other, on_other, off_other in ((node[0], left, right, v11 - v01, v10 - v00),
                                                           (node[1], right, left, v11 - v10, v01 - v00)):
                if isinstance(child, int):
                    phi[:, child] += w * 0.5 * (on_other + off_other)
                else:
                    nxt += [(child, ctx, w / 2), (child, with_(ctx, other), w / 2)]
        level = nxt
    return phi, cache[none.tobytes()], cache[full.tobytes()], len(cache)


# ---------------------------------------------------------------------------- registered methods
def _build(lm, inputs, target, granularity, spans, masking, baseline_token, batch_size, chat) -> Explained:
    return Explained.build(lm, inputs, target, granularity=granularity, spans=spans, masking=masking,
                           baseline_token=baseline_token, batch_size=batch_size, chat=chat)


def _efficiency(phi: np.ndarray, v0: np.ndarray, v1: np.ndarray, visible: np.ndarray) -> float:
    delta = v1 - v0
    total = np.where(visible, phi, 0).sum(1)
    return float(np.max(np.abs(total - delta) / np.maximum(np.abs(delta), 1e-12)))


def _opts(**kw: Any) -> dict[str, Any]:
    return kw


@register_method("exact_shap")
def exact_shap(lm: LM, inputs: Any, target: TargetLike, *, granularity: str = "token",
               spans: Sequence[tuple[int, int] | str] | None = None, masking: str = "token",
               baseline_token: str | int | None = None, batch_size: int = 32, chat: bool = False) -> Attribution:
    """Exact Shapley values: every coalition of up to 16 features is scored (in batches).

    Example:
        >>> il.attribute(lm, "The capital of France is", il.NextToken(" Paris"), method="exact_shap")  # doctest: +SKIP
    """
    ex = _build(lm, inputs, target, granularity, spans, masking, baseline_token, batch_size, chat)
    F = len(ex.features)
    if F > MAX_EXACT_FEATURES:
        raise ShapleyError(f"exact_shap scores all 2^F coalitions; this input has F={F} features "
                           f"(limit {MAX_EXACT_FEATURES}, {2 ** F:,} coalitions). Use granularity='word' or spans "
                           "to group tokens, or method='kernel_shap' / 'partition_shap'.")
    phi, v = exact_shapley(lambda keep: ex.values(keep, "exact shap"), F)
    return ex.result("exact_shap", phi, target_value=v[-1], baseline_value=v[0], masking=ex.masking_label,
                     diagnostics={"completeness_error": _efficiency(phi, v[0], v[-1], ex.visible()),
                                  "coalitions": 2 ** F},
                     options=_opts(granularity=granularity, masking=masking, baseline_token=baseline_token,
                                   batch_size=batch_size))


@register_method("kernel_shap")
def kernel_shap(lm: LM, inputs: Any, target: TargetLike, *, n_samples: int = 256, seed: int = 0,
                granularity: str = "token", spans: Sequence[tuple[int, int] | str] | None = None,
                masking: str = "token", baseline_token: str | int | None = None, batch_size: int = 32,
                chat: bool = False) -> Attribution:
    """KernelSHAP with paired sampling and exact efficiency.

    Args:
        n_samples: model evaluations allowed (the full and empty inputs included); with
            ``n_samples >= 2^F`` every coalition is enumerated and the values are exact.
        seed: the sampling seed (same seed, same values).

    Example:
        >>> il.attribute(lm, prompt, il.Contrast(" Mary", " John"), method="kernel_shap",  # doctest: +SKIP
        ...              n_samples=256, seed=0)
    """
    if n_samples < 4:
        raise ShapleyError(f"n_samples must be >= 4 (the full input, the empty input and a pair); got {n_samples}.")
    ex = _build(lm, inputs, target, granularity, spans, masking, baseline_token, batch_size, chat)
    F = len(ex.features)
    phi, v0, v1, complete = kernel_shapley(lambda keep: ex.values(keep, "kernel shap"), F, n_samples, seed,
                                           ex.visible())
    return ex.result("kernel_shap", phi, target_value=v1, baseline_value=v0, masking=ex.masking_label,
                     diagnostics={"completeness_error": _efficiency(phi, v0, v1, ex.visible()),
                                  "exact": complete, "n_samples": n_samples, "seed": seed},
                     options=_opts(n_samples=n_samples, seed=seed, granularity=granularity, masking=masking,
                                   baseline_token=baseline_token, batch_size=batch_size))


@register_method("partition_shap")
def partition_shap(lm: LM, inputs: Any, target: TargetLike, *, granularity: str = "token",
                   spans: Sequence[tuple[int, int] | str] | None = None, masking: str = "token",
                   baseline_token: str | int | None = None, batch_size: int = 32, chat: bool = False) -> Attribution:
    """Owen values over a hierarchy of phrases, words and tokens (for long inputs).

    Phrases end after punctuation; each level is split in balanced halves, so the cost is
    about ``0.7 F²`` coalitions instead of ``2^F``. Efficiency holds exactly.

    Example:
        >>> il.attribute(lm, long_prompt, il.NextToken(" Mary"), method="partition_shap", granularity="word")  # doctest: +SKIP
    """
    ex = _build(lm, inputs, target, granularity, spans, masking, baseline_token, batch_size, chat)
    F = len(ex.features)
    tree = feature_hierarchy(ex.features.labels)
    phi, v0, v1, n = owen_values(lambda keep: ex.values(keep, "partition shap"), F, tree)
    return ex.result("partition_shap", phi, target_value=v1, baseline_value=v0, masking=ex.masking_label,
                     diagnostics={"completeness_error": _efficiency(phi, v0, v1, ex.visible()), "coalitions": n,
                                  "hierarchy": repr(tree)},
                     options=_opts(granularity=granularity, masking=masking, baseline_token=baseline_token,
                                   batch_size=batch_size))
