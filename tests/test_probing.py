"""Probing: planted signals, chance on shuffled labels, control selectivity, MDL, structural probe, probes."""

import math
import random
import warnings

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm.probing import tasks as T
from interpretlm.probing.alignment import align_words
from interpretlm.probing.probes import LogisticProbe, MLPProbe, RidgeProbe, macro_f1, r2
from interpretlm.probing.structural import DistanceProbe, spearman, tree_distances
from interpretlm.testing import tiny_lm


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama", seed=0)


@pytest.fixture(scope="module")
def texts():
    return T.sentences(160, seed=3)


def _word_task(lm, texts, name, label_fn):
    """A word-level task over whitespace words, labels from ``label_fn(text_i, word_j, word)``."""
    words = [t.rstrip(".?").split() for t in texts]
    labels = [[label_fn(i, j, w) for j, w in enumerate(ws)] for i, ws in enumerate(words)]
    return T.Task.words_task(name, texts, words, labels)


def _planted(lm, texts, layer, numeric=False):
    """Labels = which side of a random hyperplane a word's last sub-token lies at one layer."""
    base = _word_task(lm, texts, "tmp", lambda i, j, w: "a")
    positions = []
    for i, t in enumerate(texts):
        b = lm.tokenize(t)
        positions.append(align_words(b.offsets[0], base.spans[i], b.special[0].tolist(), "last"))
    name = f"blocks.{layer}.resid_post"
    acts = il.activations(lm, texts, name, pooling="none", positions=positions)[name]
    g = torch.Generator().manual_seed(7)
    direction = torch.randn(acts.shape[1], generator=g)
    proj = (acts - acts.mean(0)) @ direction
    it = iter(proj.tolist()) if numeric else iter((proj > proj.median()).tolist())
    labels = [[(next(it) if numeric else ("up" if next(it) else "down")) for _ in p] for p in positions]
    return T.Task.words_task("planted", texts, base.words, labels, spans=base.spans)


def test_planted_linear_signal_is_recovered_at_its_layer(lm, texts):
    task = _planted(lm, texts, layer=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = il.probe(lm, task, layers="all", probe="logistic", control=True, mdl=True, seed=0)
    acc = dict(zip(rep.layers, rep.scores["accuracy"]))
    assert acc["blocks.1.resid_post"] >= 0.95, rep.table
    # Not a property of the word alone: the control task stays well below it (selectivity).
    assert rep.scores["selectivity"][rep.layers.index("blocks.1.resid_post")] > 0.1
    assert rep.split["n_test"] >= 150
    # The planted labels compress far better than the uniform code at their layer.
    comp = dict(zip(rep.layers, rep.scores["mdl_compression"]))
    assert comp["blocks.1.resid_post"] > 2.0


def test_planted_signal_with_ridge_regression_and_the_mlp_probe(lm, texts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = il.probe(lm, _planted(lm, texts, layer=1, numeric=True), layers=[1], probe="ridge", control=True,
                       mdl=False)
        mlp = il.probe(lm, _planted(lm, texts, layer=1), layers=[1], probe=MLPProbe(hidden=64, epochs=30),
                       control=False, mdl=False)
    assert reg.task["kind"] == "numeric" and reg.scores["r2"][0] > 0.95   # an exact linear function, up to the ridge
    assert reg.scores["selectivity"][0] > 0.2
    assert mlp.probe["name"] == "MLPProbe" and mlp.scores["accuracy"][0] > 0.9


def test_shuffled_labels_stay_at_chance_at_every_layer(lm, texts):
    rng = random.Random(0)
    task = _word_task(lm, texts, "shuffled", lambda i, j, w: rng.choice(["x", "y"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = il.probe(lm, task, layers="all", probe="logistic", control=False, mdl=True, seed=0)
    n_test = rep.split["n_test"]
    tol = 3 * math.sqrt(0.25 / n_test) + 0.02   # three standard errors of a coin
    for layer, acc in zip(rep.layers, rep.scores["accuracy"]):
        assert abs(acc - 0.5) < tol, (layer, acc, tol)
    # Nothing to compress: the online code is no shorter than the uniform code (within 10%).
    assert max(rep.scores["mdl_compression"]) < 1.1
    # The report flags that no layer beats the baseline.
    assert any("no better than the majority-class baseline" in str(w.message) for w in caught)


def test_control_task_selectivity_is_low_for_a_lexical_task(lm, texts):
    """A task that is a function of the word type alone is exactly what control tasks match."""
    rng = random.Random(5)
    vocab = "Mary John Tom Anna Alice Bob store drink good bad cat mat sat the went gave city Paris Rome key".split()
    small = [" ".join(rng.choice(vocab) for _ in range(rng.randint(5, 9))) + "." for _ in range(160)]
    table: dict[str, str] = {}
    task = _word_task(lm, small, "lexical", lambda i, j, w: table.setdefault(w.lower(), rng.choice("abc")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = il.probe(lm, task, layers="all", control=True, mdl=False, seed=0)
    # Both tasks are learned well above the majority baseline, and equally well: selectivity ~ 0.
    for acc, ctrl, sel in zip(rep.scores["accuracy"], rep.scores["control_accuracy"], rep.scores["selectivity"]):
        assert acc > rep.baseline + 0.2 and ctrl > rep.baseline + 0.2
        assert abs(sel) < 0.05
    assert any("selectivity" in str(w.message) for w in caught)


def test_control_labels_are_per_type_with_the_task_distribution():
    types = [f"w{i % 50}" for i in range(5000)]
    labels = ["a"] * 4000 + ["b"] * 1000
    ctrl = il.probing.control_labels(types, labels, seed=1)
    by_type = {}
    for t, c in zip(types, ctrl):
        assert by_type.setdefault(t, c) == c
    share_a = sum(1 for t in set(types) if by_type[t] == "a") / 50
    assert 0.6 < share_a < 0.95   # drawn from 80% / 20%
    assert ctrl == il.probing.control_labels(types, labels, seed=1)


def test_ridge_matches_the_closed_form_and_logistic_matches_sklearn():
    sk = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 12, generator=g, dtype=torch.float64).float()
    w = torch.randn(12, generator=g).float()
    y = X @ w + 0.1 * torch.randn(300, generator=g).float()
    p = RidgeProbe(alpha=3.0).fit(X, y)
    Z = ((X - X.mean(0)) / X.std(0, unbiased=False)).numpy()
    ref = sk.Ridge(alpha=3.0).fit(Z, y.numpy())
    assert np.allclose(p.coef_.squeeze(1).numpy(), ref.coef_, atol=1e-4)
    assert r2(p.predict(X), y) > 0.99
    yc = (X[:, :3] @ w[:3] > 0).long() + (X[:, 3] > 1).long()
    lp = LogisticProbe(l2=1e-2, max_iter=500).fit(X, yc)
    ref = sk.LogisticRegression(C=1 / (1e-2 * 300), max_iter=5000, tol=1e-10).fit(Z, yc.numpy())
    assert np.allclose(lp.predict_proba(X).numpy(), ref.predict_proba(Z), atol=2e-3)


def test_mlp_probe_learns_a_nonlinear_rule_that_a_linear_probe_cannot():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(1200, 2, generator=g)
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).long()   # XOR
    tr, te = slice(0, 900), slice(900, None)
    lin = LogisticProbe().fit(X[tr], y[tr]).score(X[te], y[te])
    mlp = MLPProbe(hidden=32, epochs=80, seed=0).fit(X[tr], y[tr]).score(X[te], y[te])
    assert lin < 0.65 and mlp > 0.9
    assert macro_f1(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])) == pytest.approx((2 / 3 + 0.8) / 2)


def test_structural_probe_recovers_tree_distances_from_an_exact_embedding():
    """Word vectors = sum of orthogonal edge vectors on the root path: ||h_i - h_j||² is the tree distance."""
    rng = random.Random(0)
    d = 48
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    H, D = [], []
    for _ in range(120):
        n = rng.randint(5, 12)
        heads = [-1] + [rng.randrange(i) for i in range(1, n)]
        edge = Q[torch.randperm(d, generator=g)[:n]]
        vec = []
        for i in range(n):
            v, k = torch.zeros(d), i
            while heads[k] >= 0:
                v += edge[k]
                k = heads[k]
            vec.append(v)
        noise = torch.randn(n, 16, generator=g) * 0.1   # nuisance dimensions
        H.append(torch.cat([torch.stack(vec), noise], 1))
        D.append(tree_distances(heads))
    p = DistanceProbe(rank=48, epochs=60, seed=0).fit(H[:90], D[:90])
    ev = p.evaluate(H[90:], D[90:])
    assert ev["spearman"] > 0.9 and ev["uuas"] > 0.9


def test_spearman_and_tree_distances_match_references():
    stats = pytest.importorskip("scipy.stats")
    a, b = np.array([1, 2, 2, 3, 5.0]), np.array([2, 1, 4, 4, 9.0])
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert tree_distances([-1, 0, 0, 1]).tolist() == [[0, 1, 1, 2], [1, 0, 2, 1], [1, 2, 0, 3], [2, 1, 3, 0]]


def test_alignment_first_or_last_subtoken(lm):
    text = "Marygold sat."
    b = lm.tokenize(text)
    span = [(0, 8)]
    toks = [i for i, (s, e) in enumerate(b.offsets[0]) if s < 8 and e > 0]
    assert len(toks) >= 2   # the tiny tokenizer splits the word
    assert align_words(b.offsets[0], span, which="first") == [toks[0]]
    assert align_words(b.offsets[0], span, which="last") == [toks[-1]]


def test_report_round_trip_table_and_html(lm, tmp_path):
    task = T.Task.sentences("polar", ["It was good", "It was bad"] * 10, ["<b>pos</b>", "neg"] * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = il.probe(lm, task, layers=[1], control=True, mdl=True)
    assert [r["component"] for r in rep.table] == ["blocks.1.resid_post"]
    assert {"accuracy", "macro_f1", "control_accuracy", "selectivity", "mdl_compression"} <= set(rep.table[0])
    rep.save(tmp_path / "r.json")
    back = il.Result.load(tmp_path / "r.json")
    assert back.layers == rep.layers and back.scores.keys() == rep.scores.keys()
    for k in rep.scores:
        assert np.allclose(back.scores[k], rep.scores[k], equal_nan=True)
    html = rep.to_html()
    assert "<svg" in html and "&lt;b&gt;pos" in html and "<b>pos" not in html


@pytest.mark.parametrize("module", ["alignment", "control", "mdl", "structural", "probes", "tasks.base",
                                    "tasks.templates", "tasks.corpus"])
def test_docstring_examples_run(module):
    import doctest
    import importlib
    m = importlib.import_module(f"interpretlm.probing.{module}")
    result = doctest.testmod(m, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 1
