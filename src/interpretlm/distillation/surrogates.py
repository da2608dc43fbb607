"""Interpretable surrogates fitted on the LM's predictions: scikit-learn and interpret estimators.

Each ``fit_*`` takes ``[n_texts, n_terms]`` n-gram counts and the LM's predicted class per
text and returns the fitted model as *plain data* (``params``: NumPy arrays, lists,
numbers), from which :func:`logits` and :func:`contributions` predict and explain with
NumPy alone; a saved surrogate therefore works in any process, without scikit-learn's
objects or the LM.

* ``sparse_linear``: L1-regularised logistic regression (scikit-learn, liblinear), the
  largest ``C`` on a regularisation path whose model keeps at most ``max_terms`` terms;
* ``tree``: a shallow ``DecisionTreeClassifier``; its local explanation is the exact
  path decomposition (each split's change of the class probability, Saabas' method);
* ``ebm``: interpret's ``ExplainableBoostingClassifier`` with ``max_rounds`` bounded
  (its default of 50,000 rounds can run for many minutes on separable text features);
* ``aug_linear``: Aug-Linear (Singh et al., 2023): each n-gram embedded once by the LM,
  a logistic regression on the texts' summed n-gram embeddings, collapsed exactly into one
  coefficient per n-gram.

The ``fit_*_score`` forms regress a real-valued score (the LM's log-odds between two
classes) instead: scikit-learn's lasso path, ``DecisionTreeRegressor``,
interpret's ``ExplainableBoostingRegressor`` and ridge regression on the Aug-Linear
embeddings. Their ``params`` carry ``regression: True`` and predict ``[0, z]`` class scores,
``z`` the log-odds, so prediction and explanation read them like the binary classifiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DistillationError

KINDS = ("sparse_linear", "tree", "ebm", "aug_linear")


# ---------------------------------------------------------------------------- fitting
def fit_sparse_linear(X: np.ndarray, y: np.ndarray, n_classes: int, *, max_terms: int, seed: int,
                      n_path: int = 40) -> dict[str, Any]:
    """L1 logistic regression on counts; the largest ``C`` of a log-spaced path from ``l1_min_c``
    whose model uses at most ``max_terms`` terms (columns with a non-zero coefficient), refined by
    bisection between that step and the next."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import l1_min_c

    if max_terms < 1:
        raise DistillationError(f"max_terms={max_terms} must be at least 1.")
    c0 = l1_min_c(X, y, loss="log")

    def fit(C: float) -> tuple[Any, int]:
        m = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=float(C), max_iter=2000, random_state=seed)
        m.fit(X, y)
        used = int(np.any(m.coef_ != 0, axis=0).sum())
        path.append((float(C), used))
        return m, used

    best, path, over = None, [], None
    for C in c0 * np.logspace(0.05, 4, n_path):
        m, used = fit(C)
        if used > max_terms:
            over = C
            break
        best = m
    if best is None:  # even the first step of the path uses too many terms: keep the sparsest one
        best = m
    elif over is not None:  # bisect (in log C) between the last model within the bound and the first beyond it
        lo, hi = float(best.C), float(over)
        for _ in range(12):
            mid = float(np.sqrt(lo * hi))
            m, used = fit(mid)
            if used > max_terms:
                hi = mid
            else:
                lo, best = mid, m
    return {"coef": best.coef_.astype(np.float64), "intercept": best.intercept_.astype(np.float64),
            "C": float(best.C), "path_C": [c for c, _ in path], "path_terms": [u for _, u in path]}


def fit_tree(X: np.ndarray, y: np.ndarray, n_classes: int, *, max_depth: int, seed: int,
             min_samples_leaf: int = 1) -> dict[str, Any]:
    """A ``DecisionTreeClassifier`` of depth at most ``max_depth``, as its node arrays."""
    from sklearn.tree import DecisionTreeClassifier

    m = DecisionTreeClassifier(max_depth=max_depth, random_state=seed, min_samples_leaf=min_samples_leaf).fit(X, y)
    t = m.tree_
    value = np.zeros((t.node_count, n_classes))
    value[:, m.classes_.astype(int)] = t.value[:, 0, :] / t.value[:, 0, :].sum(-1, keepdims=True)
    return {"left": t.children_left.astype(np.int64), "right": t.children_right.astype(np.int64),
            "feature": t.feature.astype(np.int64), "threshold": t.threshold.astype(np.float64), "value": value,
            "n_samples": t.n_node_samples.astype(np.int64)}


def fit_ebm(X: np.ndarray, y: np.ndarray, n_classes: int, *, max_rounds: int, interactions: int, seed: int,
            outer_bags: int = 4) -> dict[str, Any]:
    """interpret's ``ExplainableBoostingClassifier`` (bounded ``max_rounds``, one job), as its
    bins and term-score tables."""
    from interpret.glassbox import ExplainableBoostingClassifier

    if n_classes > 2 and interactions:
        interactions = 0  # interpret fits pairs for binary classification and regression only
    m = ExplainableBoostingClassifier(feature_types=["continuous"] * X.shape[1], max_rounds=max_rounds,
                                      interactions=interactions, outer_bags=outer_bags, n_jobs=1,
                                      random_state=seed)
    m.fit(X, y)
    feats = [list(map(int, f)) for f in m.term_features_]
    cuts = []
    for f in feats:
        level = 0 if len(f) == 1 else 1  # interpret bins pairs more coarsely (its second binning level)
        cuts.append([np.asarray(m.bins_[j][min(level, len(m.bins_[j]) - 1)], dtype=np.float64) for j in f])
    scores = [np.asarray(s, dtype=np.float64) for s in m.term_scores_]
    classes = m.classes_.astype(int)
    if n_classes == 2 and len(classes) == 2:
        intercept = np.atleast_1d(np.asarray(m.intercept_, dtype=np.float64))
    else:
        intercept = np.asarray(m.intercept_, dtype=np.float64)
    return {"term_features": feats, "cuts": cuts, "scores": scores, "intercept": intercept,
            "max_rounds": int(max_rounds), "n_interactions": sum(len(f) > 1 for f in feats)}


# ---------------------------------------------------------------------------- fitting scores (R²)
def fit_sparse_linear_score(X: np.ndarray, y: np.ndarray, *, max_terms: int, n_path: int = 200) -> dict[str, Any]:
    """Lasso on counts for a real-valued score: the least-regularised point of scikit-learn's
    coordinate-descent ``lasso_path`` (``n_path`` log-spaced penalties down to 1e-4 of the
    largest) whose model uses at most ``max_terms`` terms. (Coordinate descent, not LARS: word
    counts are collinear — words every template text has — and on the sentiment task's counts
    LARS's active set degenerates after 7 steps.)"""
    from sklearn.linear_model import lasso_path

    if max_terms < 1:
        raise DistillationError(f"max_terms={max_terms} must be at least 1.")
    mx, my = X.mean(0), float(y.mean())
    alphas, coefs, _ = lasso_path(X - mx, y - my, eps=1e-4, n_alphas=n_path, max_iter=5000)
    used = (coefs != 0).sum(0)                                    # terms at each penalty (alphas decrease)
    j = int(np.flatnonzero(used <= max_terms).max())
    coef = coefs[:, j]
    return {"coef": coef[None, :].astype(np.float64), "intercept": np.array([my - float(mx @ coef)]),
            "alpha": float(alphas[j]), "regression": True}


def fit_tree_score(X: np.ndarray, y: np.ndarray, *, max_depth: int, seed: int,
                   min_samples_leaf: int = 1) -> dict[str, Any]:
    """A ``DecisionTreeRegressor`` of depth at most ``max_depth`` (leaf value: the mean score)."""
    from sklearn.tree import DecisionTreeRegressor

    m = DecisionTreeRegressor(max_depth=max_depth, random_state=seed, min_samples_leaf=min_samples_leaf).fit(X, y)
    t = m.tree_
    return {"left": t.children_left.astype(np.int64), "right": t.children_right.astype(np.int64),
            "feature": t.feature.astype(np.int64), "threshold": t.threshold.astype(np.float64),
            "value": t.value[:, 0, :1].astype(np.float64), "n_samples": t.n_node_samples.astype(np.int64),
            "importance": m.feature_importances_.astype(np.float64), "regression": True}


def fit_ebm_score(X: np.ndarray, y: np.ndarray, *, max_rounds: int, interactions: int, seed: int,
                  outer_bags: int = 4) -> dict[str, Any]:
    """interpret's ``ExplainableBoostingRegressor`` (bounded ``max_rounds``, one job), as its bins
    and term-score tables."""
    from interpret.glassbox import ExplainableBoostingRegressor

    m = ExplainableBoostingRegressor(feature_types=["continuous"] * X.shape[1], max_rounds=max_rounds,
                                     interactions=interactions, outer_bags=outer_bags, n_jobs=1, random_state=seed)
    m.fit(X, y)
    feats = [list(map(int, f)) for f in m.term_features_]
    cuts = [[np.asarray(m.bins_[j][min(0 if len(f) == 1 else 1, len(m.bins_[j]) - 1)], dtype=np.float64)
             for j in f] for f in feats]
    return {"term_features": feats, "cuts": cuts, "scores": [np.asarray(s, dtype=np.float64) for s in m.term_scores_],
            "intercept": np.atleast_1d(np.asarray(m.intercept_, dtype=np.float64)), "max_rounds": int(max_rounds),
            "n_interactions": sum(len(f) > 1 for f in feats), "regression": True}


def fit_aug_linear_score(X: np.ndarray, y: np.ndarray, E: np.ndarray, *, C: float) -> dict[str, Any]:
    """Ridge regression (``alpha = 1 / C``) on the standardised summed n-gram embeddings ``X @ E``,
    collapsed exactly to one coefficient per n-gram, as :func:`fit_aug_linear`."""
    from sklearn.linear_model import Ridge

    Z = X @ E
    mu, sd = Z.mean(0), Z.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    m = Ridge(alpha=1.0 / C).fit((Z - mu) / sd, y)
    w = (m.coef_ / sd)[None, :]                                   # [1, d_model]
    return {"coef": (w @ E.T).astype(np.float64), "intercept": np.atleast_1d(m.intercept_ - w @ mu).astype(np.float64),
            "C": float(C), "regression": True}


def ngram_embeddings(lm: Any, terms: Sequence[str], layer: int, *, batch_size: int = 64,
                     cache: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """``[n_terms, d_model]``: each n-gram read alone by the LM, the hidden state after block
    ``layer`` mean-pooled over its real (non-special) tokens. Each n-gram is run once; ``cache``
    (``{term: vector}``) is read and filled."""
    import torch

    from ..progress import track

    cache = {} if cache is None else cache
    todo = [t for t in dict.fromkeys(terms) if t not in cache]
    name = f"blocks.{layer}.resid_post"
    for start in track(range(0, len(todo), batch_size), "embedding n-grams"):
        chunk = todo[start:start + batch_size]
        with torch.no_grad(), lm.capture([name]) as acts:
            batch = lm.run(chunk, until=layer, head=False)
        h = acts[name].float()                                    # [batch, pos, d_model]
        keep = (batch.attention_mask.bool() & ~batch.special.bool()).to(h.device)
        keep = torch.where(keep.any(1, keepdim=True), keep, batch.attention_mask.bool().to(h.device))
        w = keep.float().unsqueeze(-1)
        pooled = (h * w).sum(1) / w.sum(1)                        # [batch, d_model]
        for t, v in zip(chunk, pooled.cpu().numpy().astype(np.float64)):
            cache[t] = v
    return np.stack([cache[t] for t in terms]) if terms else np.zeros((0, lm.d_model))


def fit_aug_linear(X: np.ndarray, y: np.ndarray, n_classes: int, E: np.ndarray, *, C: float,
                   seed: int) -> dict[str, Any]:
    """Logistic regression on ``X @ E`` (each text the sum of its n-grams' embeddings), collapsed
    to one coefficient per n-gram: ``coef = (w / sd) @ E.T``, exact because the model is linear."""
    from sklearn.linear_model import LogisticRegression

    Z = X @ E                                                     # [n_texts, d_model]
    mu, sd = Z.mean(0), Z.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    m = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit((Z - mu) / sd, y)
    w = m.coef_ / sd                                              # [K', d_model]
    coef = w @ E.T                                                # [K', n_terms]
    intercept = m.intercept_ - w @ mu
    return {"coef": coef.astype(np.float64), "intercept": intercept.astype(np.float64), "C": float(C)}


# ---------------------------------------------------------------------------- predicting
def _as_classes(z: np.ndarray, n_classes: int) -> np.ndarray:
    """``[n, K']`` decision values -> ``[n, K]`` class scores (binary: ``[0, z]``)."""
    if n_classes == 2 and z.shape[1] == 1:
        return np.concatenate([np.zeros_like(z), z], axis=1)
    return z


def _ebm_bins(cuts: np.ndarray, x: np.ndarray) -> np.ndarray:
    # interpret's bin 0 is "missing"; value v falls in bin 1 + (number of cuts <= v)
    return np.searchsorted(cuts, x, side="right") + 1


def ebm_term_values(params: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """``[n, n_terms, K']`` each EBM term's score for each text."""
    out = []
    for feats, cuts, scores in zip(params["term_features"], params["cuts"], params["scores"]):
        idx = tuple(_ebm_bins(c, X[:, f]) for f, c in zip(feats, cuts))
        v = np.asarray(scores)[idx]
        out.append(v.reshape(len(X), -1))
    return np.stack(out, axis=1) if out else np.zeros((len(X), 0, 1))


def tree_leaves(params: dict[str, Any], X: np.ndarray) -> list[list[int]]:
    """Each text's path of node indices from the root to its leaf."""
    paths = []
    for x in X:
        node, path = 0, [0]
        while params["left"][node] >= 0:
            node = int(params["left"][node] if x[params["feature"][node]] <= params["threshold"][node]
                       else params["right"][node])
            path.append(node)
        paths.append(path)
    return paths


def logits(kind: str, params: dict[str, Any], X: np.ndarray, n_classes: int) -> np.ndarray:
    """``[n, n_classes]`` class scores of the surrogate (argmax: its prediction)."""
    if kind in ("sparse_linear", "aug_linear"):
        return _as_classes(X @ np.asarray(params["coef"]).T + np.asarray(params["intercept"]), n_classes)
    if kind == "tree":
        value = np.asarray(params["value"])
        width = value.shape[1]
        z = np.stack([value[p[-1]] for p in tree_leaves(params, X)]) if len(X) else np.zeros((0, width))
        return _as_classes(z, n_classes) if params.get("regression") else z
    if kind == "ebm":
        z = ebm_term_values(params, X).sum(1) + np.asarray(params["intercept"])
        return _as_classes(z, n_classes)
    raise DistillationError(f"Unknown surrogate kind {kind!r}; one of {KINDS}.")


def contributions(kind: str, params: dict[str, Any], x: np.ndarray, n_classes: int,
                  cls: int) -> tuple[float, dict[tuple[int, ...], float]]:
    """One text's explanation for class ``cls``: ``(base, {term feature indices: contribution})``.

    ``base + sum(contributions)`` equals the surrogate's score of ``cls`` for this text
    (binary linear models, EBMs and every surrogate of a score: the log-odds of class 1,
    negated for class 0; classification trees: the probability of ``cls``).
    """
    sign = -1.0 if (n_classes == 2 and cls == 0) else 1.0
    col = 0 if n_classes == 2 else cls
    if kind in ("sparse_linear", "aug_linear"):
        coef = np.asarray(params["coef"])[col]
        nz = np.flatnonzero((x != 0) & (coef != 0))
        return (sign * float(np.asarray(params["intercept"])[col]),
                {(int(j),): sign * float(x[j] * coef[j]) for j in nz})
    if kind == "ebm":
        vals = ebm_term_values(params, x[None, :])[0][:, col]
        return (sign * float(np.asarray(params["intercept"])[col]),
                {tuple(f): sign * float(v) for f, v in zip(params["term_features"], vals) if v != 0})
    if kind == "tree":
        value = np.asarray(params["value"])
        # a regression tree's value is the log-odds of class 1: read it as the linear models' column
        col, sgn = (0, sign) if params.get("regression") else (cls, 1.0)
        path = tree_leaves(params, x[None, :])[0]
        out: dict[tuple[int, ...], float] = {}
        for parent, child in zip(path, path[1:]):
            f = (int(params["feature"][parent]),)
            out[f] = out.get(f, 0.0) + sgn * float(value[child, col] - value[parent, col])
        return sgn * float(value[0, col]), out
    raise DistillationError(f"Unknown surrogate kind {kind!r}; one of {KINDS}.")


def used_features(kind: str, params: dict[str, Any]) -> list[int]:
    """Indices of the terms the fitted model reads."""
    if kind in ("sparse_linear", "aug_linear"):
        return np.flatnonzero(np.any(np.asarray(params["coef"]) != 0, axis=0)).tolist()
    if kind == "tree":
        f = np.asarray(params["feature"])
        return sorted(set(f[f >= 0].tolist()))
    return sorted({j for fs in params["term_features"] for j in fs})


def compact(kind: str, params: dict[str, Any], terms: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The model restricted to the terms it reads (feature indices renumbered)."""
    keep = used_features(kind, params)
    new_index = {j: i for i, j in enumerate(keep)}
    p = dict(params)
    if kind in ("sparse_linear", "aug_linear"):
        p["coef"] = np.asarray(params["coef"])[:, keep]
    elif kind == "tree":
        p["feature"] = np.array([new_index.get(int(j), -2) for j in params["feature"]], dtype=np.int64)
        if "importance" in p:  # per feature: keep the used ones, in the new order
            p["importance"] = np.asarray(p["importance"])[keep]
    else:
        p["term_features"] = [[new_index[j] for j in fs] for fs in params["term_features"]]
    return p, [terms[j] for j in keep]


def size(kind: str, params: dict[str, Any]) -> dict[str, int]:
    """Size figures: terms read; tree depth and leaves; EBM main and interaction terms."""
    out = {"terms": len(used_features(kind, params))}
    if kind == "tree":
        left = np.asarray(params["left"])
        depth = max((len(p) - 1 for p in _all_paths(params)), default=0)
        out.update(depth=int(depth), leaves=int((left < 0).sum()), nodes=int(len(left)))
    if kind == "ebm":
        out.update(main_effects=sum(len(f) == 1 for f in params["term_features"]),
                   interactions=sum(len(f) > 1 for f in params["term_features"]))
    if kind in ("sparse_linear", "aug_linear"):
        out["parameters"] = int(np.count_nonzero(np.asarray(params["coef"]))) + len(np.atleast_1d(params["intercept"]))
    return out


def _all_paths(params: dict[str, Any]) -> list[list[int]]:
    left, right = np.asarray(params["left"]), np.asarray(params["right"])
    out, stack = [], [[0]]
    while stack:
        p = stack.pop()
        n = p[-1]
        if left[n] < 0:
            out.append(p)
        else:
            stack += [p + [int(left[n])], p + [int(right[n])]]
    return out
