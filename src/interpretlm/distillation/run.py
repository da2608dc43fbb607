"""``il.distill(lm, task, into=...)``: a surrogate of the LM's predictions on a task, with fidelity."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..registry import CheckSpec, register
from . import surrogates as S
from .errors import DistillationError
from .features import counts, delete_words, vectorizer
from .result import Surrogate
from .teacher import label_logprobs, template_for, verbalizers_for


def _task_parts(task: Any, fit: str | None,
                verbalizers: Mapping[str, Any] | None) -> tuple[str, list[str], list[Any], list[Any], str, str]:
    """Name, texts, gold labels, classes, the task's kind and the fit (``"label"`` / ``"score"``) of a
    sentence-level task (a probing ``Task`` or anything with ``texts`` and ``labels``)."""
    texts, labels = getattr(task, "texts", None), getattr(task, "labels", None)
    if texts is None or labels is None:
        raise DistillationError(f"distill needs a labelled task (il.tasks.sentiment(), il.tasks.from_records(...)); "
                                f"got {type(task).__name__}. A student takes texts: into='student'.")
    if getattr(task, "level", "sentence") != "sentence":
        raise DistillationError(f"Task {getattr(task, 'name', '')!r} labels words; a surrogate of the LM's prediction "
                                "needs one label per text (a sentence-level task).")
    kind = getattr(task, "kind", "categorical")
    if kind not in ("categorical", "numeric"):
        raise DistillationError(f"Task {getattr(task, 'name', '')!r} is a {kind} task; surrogates take classes "
                                "(categorical) or real-valued scores (numeric).")
    if fit not in (None, "label", "score"):
        raise DistillationError(f"fit={fit!r}: 'label' (the LM's class, fidelity = agreement) or 'score' "
                                "(the LM's log-odds between two classes, fidelity = R²).")
    fit = fit or ("score" if kind == "numeric" else "label")
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise DistillationError(f"{len(texts)} texts but {len(labels)} labels.")
    if kind == "numeric":
        if fit == "label":
            raise DistillationError("A numeric task has no classes to agree on: use fit='score'.")
        if not verbalizers or len(verbalizers) != 2:
            raise DistillationError("A numeric task is read as the LM's log-odds between two classes: pass "
                                    "verbalizers={'low': [' bad'], 'high': [' good']} (the score is toward the "
                                    "second class).")
        classes: list[Any] = list(verbalizers)
    else:
        classes = sorted(set(labels), key=lambda y: (str(type(y)), y))
        if len(classes) < 2:
            raise DistillationError(f"The task has one class ({classes[0]!r} for all {len(texts)} texts): a "
                                    "surrogate needs at least two classes to tell apart.")
        if fit == "score" and len(classes) != 2:
            raise DistillationError(f"fit='score' reads the LM's log-odds between two classes; the task has "
                                    f"{len(classes)}. Use fit='label'.")
    return str(getattr(task, "name", "task")), texts, labels, classes, kind, fit


def _split(labels: list[Any], test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices, stratified by the gold class."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise DistillationError(f"test_size={test_size} must be between 0 and 1.")
    n = len(labels)
    numeric = any(isinstance(y, float) for y in labels)
    counts_ = {"texts": n} if numeric else {c: labels.count(c) for c in set(labels)}
    n_test = int(np.ceil(test_size * n))
    if n - n_test < 4 or n_test < 2 or min(counts_.values()) < 2:
        raise DistillationError(f"{n} texts ({', '.join(f'{c!r}: {k}' for c, k in counts_.items())}) are too few for "
                                f"a held-out split of {test_size:.0%}: give at least 2 texts per class and 6 in all "
                                "(better: hundreds).")
    idx = np.arange(n)
    strat = labels if not numeric and n_test >= len(counts_) and n - n_test >= len(counts_) else None
    tr, te = train_test_split(idx, test_size=n_test, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(te)


def _fidelity_check(r: Surrogate) -> float | None:
    return r.diagnostics.get("fidelity")


@register("surrogate", verb="distill", family="model distillation", takes="task", result=Surrogate, target="none",
          summary="an interpretable surrogate (sparse linear, tree, EBM, Aug-Linear) of the LM's predictions",
          check=CheckSpec("fidelity", 0.8, higher_is_better=True, read=_fidelity_check,
                          advice="the surrogate disagrees with the LM on held-out texts: allow more terms "
                                 "(max_terms, max_depth), longer n-grams, or more texts."),
          demo="interpretlm.distillation.demo:distillation_section", demo_order=90,
          cli_input="interpretlm.probing.tasks:from_spec")
def surrogate(lm: Any, task: Any, into: str = "sparse_linear", *, max_terms: int = 30, max_depth: int = 3,
              max_rounds: int = 1000, interactions: int = 0, layer: int = -1, C: float = 1.0, ngram: int = 2,
              template: str | None = None, verbalizers: Mapping[str, Any] | None = None, test_size: float = 0.25,
              perturbations: int = 2, delete_p: float = 0.2, calibrate: bool = False, fit: str | None = None,
              batch_size: int = 32, seed: int = 0) -> Surrogate:
    """Fit an interpretable surrogate of the LM's predictions on a task and measure its fidelity.

    The LM's prediction for a text is the class whose verbalizer tokens are most likely after
    ``template`` (the core's :class:`~interpretlm.targets.Label` target, batched). The texts
    are split (stratified by gold class); the surrogate is fitted on the LM's predictions
    for the training texts, read as counts of word 1..``ngram``-grams.

    With ``fit="score"`` (the default for a numeric task) the surrogate regresses the LM's
    *score*, the log-odds ``log p(classes[1]) - log p(classes[0])`` over the two classes'
    verbalizers, with the regression form of each estimator (lasso, a regression tree,
    interpret's ``ExplainableBoostingRegressor``, ridge on the Aug-Linear embeddings);
    its fidelity is then R² against the LM's held-out scores, and ``label_agreement`` the
    share of texts on the same side of 0. A numeric task's gold labels are compared by
    Spearman correlation (``gold_spearman``) instead of accuracy.

    Args:
        lm: the teacher (decoder or encoder).
        task: a sentence-level task with classes (``il.tasks.sentiment()``...).
        into: ``"sparse_linear"`` (L1 logistic regression, at most ``max_terms`` terms, the
            largest ``C`` of the regularisation path within that bound), ``"tree"``
            (``DecisionTreeClassifier`` of depth ``max_depth``), ``"ebm"`` (interpret's
            ``ExplainableBoostingClassifier``: ``max_rounds`` is bounded here, 1000 by default,
            because its own default of 50,000 can run for many minutes on separable word
            features; ``interactions`` pairs; the 200 most frequent n-grams) or ``"aug_linear"``
            (Singh et al., 2023: each n-gram embedded once by the LM, mean-pooled hidden states
            after block ``layer``; a logistic regression with inverse regularisation ``C`` on
            the summed embeddings, collapsed to one coefficient per n-gram).
        template: the prompt (``{text}``, and ``{mask}`` for encoders); default
            ``"Review: {text}\\nSentiment:"`` (encoders: ``"Review: {text} Sentiment: {mask}."``).
        verbalizers: ``{class: [single tokens]}``; default from the class names
            (``positive``: " positive", " good", " great"...; any class: its own name).
        calibrate: read the LM's class as the argmax of its label log-probabilities minus their
            mean over the training texts (contextual calibration, after Zhao et al., 2021), for
            a model whose verbalizers carry a strong prior toward one class.
        test_size: held-out fraction; ``perturbations`` word-deleted versions of each held-out
            text (each word deleted with probability ``delete_p``) measure fidelity off the
            training distribution.
        fit: ``"label"`` (the LM's class; fidelity = agreement) or ``"score"`` (the LM's
            log-odds of two classes; fidelity = R²); default ``"score"`` for numeric tasks,
            ``"label"`` otherwise.
        seed: the split, the perturbations and the estimators.

    Returns:
        a :class:`~interpretlm.distillation.result.Surrogate`: ``fidelity``,
        ``fidelity_perturbed``, ``accuracy`` (gold), ``lm_accuracy``, ``size``, ``speedup``,
        ``terms``, ``top(k)``, ``predict(texts)``, ``explain(text)``; with ``fit="score"``
        also ``r2``, ``label_agreement`` and (numeric tasks) ``gold_spearman``.

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> lm = il.load()  # doctest: +SKIP
        >>> sur = il.distill(lm, il.tasks.sentiment(), into="sparse_linear", max_terms=30)  # doctest: +SKIP
        >>> sur.fidelity, sur.accuracy, sur.top(5)  # doctest: +SKIP
    """
    if into not in S.KINDS:
        raise DistillationError(f"into={into!r}: a surrogate is one of {', '.join(S.KINDS)} (or 'student').")
    if not isinstance(ngram, int) or ngram < 1:
        raise DistillationError(f"ngram={ngram!r} must be an integer >= 1.")
    name, texts, gold, classes, task_kind, fit = _task_parts(task, fit, verbalizers)
    cls_names = [str(c) for c in classes]
    tr, te = _split(gold, test_size, seed)
    tmpl = template_for(lm, template)
    verb = verbalizers_for(lm, classes, verbalizers)

    # ---------------------------------------------------------------- the LM's predictions
    lm_lp = label_logprobs(lm, [texts[i] for i in tr], verb, tmpl, batch_size=batch_size, desc="teacher (train)")
    t0 = time.perf_counter()
    lm_lp_te = label_logprobs(lm, [texts[i] for i in te], verb, tmpl, batch_size=batch_size, desc="teacher (held-out)")
    lm_seconds = (time.perf_counter() - t0) / len(te)
    shift = lm_lp.mean(0) if calibrate else torch.zeros(len(classes))
    y_tr = (lm_lp - shift).argmax(-1).numpy()
    y_te = (lm_lp_te - shift).argmax(-1).numpy()
    score = fit == "score"
    if score:  # the LM's log-odds of classes[1] over classes[0]: what a score surrogate regresses
        s_tr = (lm_lp - shift)[:, 1] - (lm_lp - shift)[:, 0]
        s_te = (lm_lp_te - shift)[:, 1] - (lm_lp_te - shift)[:, 0]
        s_tr, s_te = s_tr.double().numpy(), s_te.double().numpy()
        if float(s_tr.std()) == 0.0:
            raise DistillationError("The LM gives every training text the same score; nothing to regress.")
    elif len(set(y_tr.tolist())) < 2:
        raise DistillationError(f"The LM predicts {cls_names[int(y_tr[0])]!r} for every training text, so there is "
                                "nothing for a surrogate to tell apart; change the template or the verbalizers "
                                f"(now {verb}), or pass calibrate=True, or fit='score'.")
    rng = np.random.default_rng(seed)
    pert = [delete_words(texts[i], rng, delete_p) for i in te for _ in range(perturbations)]
    lp_pert = (label_logprobs(lm, pert, verb, tmpl, batch_size=batch_size, desc="teacher (perturbed)") - shift
               if pert else torch.zeros(0, len(classes)))
    y_pert = lp_pert.argmax(-1).numpy()
    s_pert = (lp_pert[:, 1] - lp_pert[:, 0]).double().numpy() if score else None

    # ---------------------------------------------------------------- features and fit
    train_texts = [texts[i] for i in tr]
    vec = vectorizer(ngram, max_features=200 if into == "ebm" else None).fit(train_texts)
    terms = [str(t) for t in vec.get_feature_names_out()]
    X = counts(train_texts, terms, ngram)
    K = len(classes)
    extra: dict[str, Any] = {}
    if into == "aug_linear":
        L = lm.indices(layer)[0]
        E = S.ngram_embeddings(lm, terms, L, batch_size=64)
        extra["aug_layer"] = L
        extra["ngrams_embedded"] = len(terms)
    if score:
        params = (S.fit_sparse_linear_score(X, s_tr, max_terms=max_terms) if into == "sparse_linear"
                  else S.fit_tree_score(X, s_tr, max_depth=max_depth, seed=seed) if into == "tree"
                  else S.fit_ebm_score(X, s_tr, max_rounds=max_rounds, interactions=interactions, seed=seed)
                  if into == "ebm" else S.fit_aug_linear_score(X, s_tr, E, C=C))
    elif into == "sparse_linear":
        params = S.fit_sparse_linear(X, y_tr, K, max_terms=max_terms, seed=seed)
    elif into == "tree":
        params = S.fit_tree(X, y_tr, K, max_depth=max_depth, seed=seed)
    elif into == "ebm":
        params = S.fit_ebm(X, y_tr, K, max_rounds=max_rounds, interactions=interactions, seed=seed)
    else:
        params = S.fit_aug_linear(X, y_tr, K, E, C=C, seed=seed)
    if into == "tree" and "importance" not in params:
        params["importance"] = _tree_importance(params, X.shape[1])
    if into == "ebm":
        vals = S.ebm_term_values(params, X)                      # [n_train, n_terms, K']
        params["importance"] = np.abs(vals).mean(axis=(0, 2))
    params, terms = S.compact(into, params, terms)
    r = Surrogate(model=lm.name, into=into, fit=fit, task={"name": name, "n_texts": len(texts), "kind": task_kind},
                  classes=cls_names,
                  template=tmpl, verbalizers=verb, ngram=ngram, terms=terms, params=params,
                  size=S.size(into, params))
    z_te, z_pert = r.scores([texts[i] for i in te]), r.scores(pert) if pert else np.zeros((0, K))
    pred_te, pred_pert = z_te.argmax(1), z_pert.argmax(1)
    sur_seconds = r.seconds_per_text([texts[i] for i in te])
    r.heldout = {"texts": [texts[i] for i in te], "gold": [gold[i] if task_kind == "numeric" else str(gold[i])
                                                             for i in te],
                 "lm": [cls_names[int(k)] for k in y_te], "surrogate": [cls_names[int(k)] for k in pred_te]}
    agree = float((pred_te == y_te).mean())
    fid = {"fidelity": agree,
           "fidelity_perturbed": float((pred_pert == y_pert).mean()) if pert else float("nan"),
           "train_fidelity": float((S.logits(into, params, counts(train_texts, terms, ngram), K).argmax(1)
                                    == y_tr).mean())}
    if score:
        from sklearn.metrics import r2_score

        r.heldout["lm_score"], r.heldout["surrogate_score"] = s_te.tolist(), zs(z_te).tolist()
        fid = {"fidelity": float(r2_score(s_te, zs(z_te))), "r2": float(r2_score(s_te, zs(z_te))),
               "fidelity_perturbed": float(r2_score(s_pert, zs(z_pert))) if len(pert) > 1 else float("nan"),
               "train_fidelity": float(r2_score(s_tr, zs(S.logits(into, params, counts(train_texts, terms, ngram),
                                                                   K)))),
               "label_agreement": float(((zs(z_te) > 0) == (s_te > 0)).mean())}
    if task_kind == "numeric":
        from scipy.stats import spearmanr

        g = np.array([float(gold[i]) for i in te])
        gold_fig = {"gold_spearman": float(spearmanr(g, zs(z_te)).statistic),
                    "lm_gold_spearman": float(spearmanr(g, s_te).statistic)}
    else:
        gold_idx = np.array([classes.index(gold[i]) for i in te])
        gold_fig = {"accuracy": float((pred_te == gold_idx).mean()), "lm_accuracy": float((y_te == gold_idx).mean())}
    r.diagnostics = {
        **fid, **gold_fig,
        "n_train": int(len(tr)), "n_test": int(len(te)), "n_perturbed": len(pert),
        "forward_passes": -(-len(tr) // batch_size) + -(-len(te) // batch_size) + -(-len(pert) // batch_size),
        "seconds": {"lm_per_text": lm_seconds, "surrogate_per_text": sur_seconds,
                    "speedup": lm_seconds / sur_seconds},
        **extra}
    if into == "ebm":
        r.diagnostics["ebm_max_rounds"] = int(max_rounds)
    return r


def zs(z: np.ndarray) -> np.ndarray:
    """``[n, 2]`` class scores -> ``[n]`` log-odds of ``classes[1]``."""
    return z[:, 1] - z[:, 0]


def _tree_importance(params: dict[str, Any], n_features: int) -> np.ndarray:
    """Weighted Gini impurity decrease per feature (scikit-learn's ``feature_importances_``, unnormalised)."""
    value, n = np.asarray(params["value"]), np.asarray(params["n_samples"], dtype=float)
    gini = 1.0 - (value ** 2).sum(1)
    out = np.zeros(n_features)
    for i, (l, r) in enumerate(zip(params["left"], params["right"])):
        if l >= 0:
            out[params["feature"][i]] += n[i] * gini[i] - n[l] * gini[l] - n[r] * gini[r]
    total = out.sum()
    return out / total if total > 0 else out
