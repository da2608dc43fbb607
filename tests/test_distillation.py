"""Distillation: planted linear teachers recovered, fidelity by hand, a student that agrees, resumable
checkpoints, the saved student loading with il.load, and clear errors on bad input."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm.distillation import DistillationError
from interpretlm.distillation.teacher import label_logprobs
from interpretlm.distillation.features import counts, words
from interpretlm.testing import tiny_lm

# Single tokens of the tiny tokenizer, so each word is one position of the planted model below.
PLANTED = {"great": 3.0, "terrible": -3.0, "good": 2.0, "bad": -2.0, "wonderful": 1.2, "tired": -1.2}
NEUTRAL = ["the", "movie", "food", "was", "book", "and", "cat", "park"]
VERBALIZERS = {"negative": [" no"], "positive": [" yes"]}
TEMPLATE = "Review: {text} is"  # every word follows a space: one token each
BIAS = 0.05      # the weight of the template's last word, " is": every text has it once, an intercept
BIG = 100.0      # a constant channel that keeps every RMS norm nearly fixed, so log-odds are nearly linear


def linear_lm() -> il.LM:
    """A one-layer Llama whose log-odds of " yes" over " no" after ``TEMPLATE`` are a weighted sum over
    the words it read, by construction: queries and keys are zero, so attention averages the value of
    every position; each token's embedding carries its planted weight in one channel, which the value
    and output projections copy into the channel the unembedding reads; the MLP writes nothing.
    Its sign is exactly the sign of ``sum_t w(token_t)`` (RMS norms scale by a positive number),
    with ``w`` from :func:`planted_weight`; on texts of one length the log-odds are linear in the counts
    up to the final norm's variation (below 0.1%)."""
    lm = tiny_lm("llama", seed=0, num_hidden_layers=1)
    m, tok = lm.model, lm.tokenizer
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        blk = m.model.layers[0]
        for norm in (blk.input_layernorm, blk.post_attention_layernorm, m.model.norm):
            norm.weight.fill_(1.0)
        E = m.model.embed_tokens.weight
        E[:, 2] = BIG
        # channels 3.. are random and read by nothing on the decision path: they give each token
        # its own direction, which is what Aug-Linear's n-gram embeddings need to tell words apart
        E[:, 3:] = torch.randn(E.shape[0], E.shape[1] - 3, generator=torch.Generator().manual_seed(0))
        for word, w in {**PLANTED, "is": BIAS}.items():
            (i,) = tok(" " + word, add_special_tokens=False)["input_ids"]
            E[i, 1] = _a_for(w, E.shape[1], float(E[i, 2:].norm()))
        blk.self_attn.v_proj.weight[0, 1] = 1.0       # kv head 0, dim 0 <- the weight channel
        blk.self_attn.o_proj.weight[0, 0] = 1.0       # query head 0 (reads kv head 0), dim 0 -> channel 0
        for word, sign in (("yes", 1.0), ("no", -1.0)):
            (i,) = tok(" " + word, add_special_tokens=False)["input_ids"]
            m.lm_head.weight[i, 0] = sign
    return lm


def _a_for(w: float, d: int, rest: float) -> float:
    """The embedding value ``a`` whose RMS-normalised value ``a / rms([a, rest])`` equals ``w``
    (``rest``: the norm of the token's other channels)."""
    # a * sqrt(d) / sqrt(a² + rest²) = w  <=>  a = w * rest / sqrt(d - w²)
    return w * rest / float(np.sqrt(d - w * w))


def _linear_texts(n: int, seed: int = 0, length: tuple[int, int] = (4, 9)) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = list(PLANTED) + NEUTRAL
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(*length))) for _ in range(n)]
    labels = ["positive" if _log_odds(t) > 0 else "negative" for t in texts]
    return texts, labels


def _log_odds(text: str) -> float:
    return sum(PLANTED.get(w, 0.0) for w, _, _ in words(text)) + BIAS


@pytest.fixture(scope="module")
def linear_teacher():
    return linear_lm()


def test_the_planted_model_is_linear_in_its_words(linear_teacher):
    texts, _ = _linear_texts(60, seed=5)
    lp = label_logprobs(linear_teacher, texts, VERBALIZERS, TEMPLATE)
    z = (lp[:, 1] - lp[:, 0]).double().numpy()
    assert ((z > 0) == (np.array([_log_odds(t) for t in texts]) > 0)).all()   # the sign is the planted sum's


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama", seed=0)


def _task(n: int = 240, seed: int = 0):
    texts, labels = _linear_texts(n, seed)
    return il.tasks.Task.sentences("planted", texts, labels)


def _distill(teacher, task, **kw):
    return il.distill(teacher, task, template=TEMPLATE, verbalizers=VERBALIZERS, ngram=1, progress=False, **kw)


def test_sparse_linear_recovers_a_linear_teachers_words_and_weights(linear_teacher):
    sur = _distill(linear_teacher, _task(400), into="sparse_linear", max_terms=6)
    w = dict(sur.weights())
    assert set(w) == set(PLANTED)                                   # exactly the planted words, nothing else
    assert all(np.sign(w[k]) == np.sign(v) for k, v in PLANTED.items())
    true, got = np.array(list(PLANTED.values())), np.array([w[k] for k in PLANTED])
    assert np.corrcoef(true, got)[0, 1] > 0.95                      # weights proportional to the planted ones
    assert sur.fidelity >= 0.9 and sur.accuracy >= 0.9   # the L1 shrinkage moves the boundary a little


def test_fidelity_and_explanations_equal_a_hand_computation(linear_teacher):
    sur = _distill(linear_teacher, _task(120, seed=1), into="sparse_linear", max_terms=4)
    coef, b = np.asarray(sur.params["coef"])[0], float(np.asarray(sur.params["intercept"])[0])
    agree = []
    for text in sur.heldout["texts"]:
        ws = [w for w, _, _ in words(text)]
        z = b + sum(c * ws.count(t) for t, c in zip(sur.terms, coef))   # the surrogate's log-odds, by hand
        agree.append((z > 0) == (_log_odds(text) > 0))
    assert sur.fidelity == pytest.approx(np.mean(agree), abs=0)
    text = sur.heldout["texts"][0]
    e = sur.explain(text)
    z = sur.scores([text])[0]
    k = sur.classes.index(e.prediction)
    assert e.base + sum(v for _, v in e.terms) == pytest.approx(z[k] - z[1 - k], rel=1e-9)
    assert sum(v for _, v in e.words) == pytest.approx(sum(v for _, v in e.terms), rel=1e-9)


@pytest.mark.parametrize("into", ["tree", "ebm", "aug_linear"])
def test_every_surrogate_reaches_a_linear_teacher_and_round_trips(linear_teacher, into, tmp_path):
    sur = _distill(linear_teacher, _task(200, seed=2), into=into, max_depth=4, max_rounds=300)
    floor = {"tree": 0.8, "ebm": 0.9, "aug_linear": 0.8}[into]
    assert sur.fidelity >= floor, sur.summary()
    if into == "tree":
        assert sur.size["depth"] <= 4 and "tree" in sur.figures() and "rules" in sur.figures()
        e = sur.explain(sur.heldout["texts"][0])            # the path decomposition adds up to the leaf's p
        k = sur.classes.index(e.prediction)
        assert e.base + sum(v for _, v in e.terms) == pytest.approx(sur.scores([e.text])[0][k], rel=1e-9)
    back = il.Result.load(sur.save(tmp_path / "s.json"))
    texts = sur.heldout["texts"]
    assert back.predict(texts) == sur.predict(texts) and back.terms == sur.terms


def test_perturbed_fidelity_and_speed_are_measured(linear_teacher):
    sur = _distill(linear_teacher, _task(80, seed=3), into="sparse_linear", perturbations=2)
    d = sur.diagnostics
    assert d["n_perturbed"] == 2 * d["n_test"] and 0 <= sur.fidelity_perturbed <= 1
    sec = d["seconds"]
    assert sur.speedup == pytest.approx(sec["lm_per_text"] / sec["surrogate_per_text"], rel=1e-12)
    assert set(sur.figures()) >= {"metrics", "terms", "examples"}


def _fixed_length_task(n: int, seed: int, numeric: bool = False):
    texts, labels = _linear_texts(n, seed, length=(6, 6))  # one length: the log-odds are linear in the counts
    gold = [_log_odds(t) for t in texts] if numeric else labels
    return il.tasks.Task.sentences("planted-score", texts, gold)


def test_a_score_surrogate_recovers_the_log_odds_and_its_r2_is_the_hand_computed_one(linear_teacher):
    sur = _distill(linear_teacher, _fixed_length_task(300, seed=4), into="sparse_linear", max_terms=6, fit="score")
    w = dict(sur.weights())
    assert set(w) == set(PLANTED)
    true, got = np.array(list(PLANTED.values())), np.array([w[k] for k in PLANTED])
    assert np.corrcoef(true, got)[0, 1] > 0.999                     # a lasso on exact log-odds: proportional
    texts = sur.heldout["texts"]
    lp = label_logprobs(linear_teacher, texts, VERBALIZERS, TEMPLATE).double().numpy()
    y = lp[:, 1] - lp[:, 0]                                         # the LM's log-odds, read again
    z = np.array([sur.explain(t).base + sum(v for _, v in sur.explain(t).terms) for t in texts])
    z = np.where([sur.explain(t).prediction == "positive" for t in texts], z, -z)   # toward "positive"
    r2 = 1 - ((y - z) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert sur.fidelity == sur.r2 == pytest.approx(r2, rel=1e-6) and sur.r2 > 0.99
    assert sur.label_agreement >= 0.95 and sur.check.passed


@pytest.mark.parametrize("into", ["tree", "ebm", "aug_linear"])
def test_every_surrogate_regresses_a_numeric_task(linear_teacher, into, tmp_path):
    sur = _distill(linear_teacher, _fixed_length_task(200, seed=6, numeric=True), into=into, max_depth=4,
                   max_rounds=300)
    assert sur.fit == "score" and sur.task["kind"] == "numeric"
    floor = {"tree": 0.5, "ebm": 0.9, "aug_linear": 0.8}[into]
    assert sur.r2 >= floor and sur.gold_spearman >= 0.7, sur.summary()
    e = sur.explain(sur.heldout["texts"][0])
    k = sur.classes.index(e.prediction)
    z = sur.scores([e.text])[0]
    assert e.base + sum(v for _, v in e.terms) == pytest.approx(z[k] - z[1 - k], rel=1e-9, abs=1e-12)
    back = il.Result.load(sur.save(tmp_path / "s.json"))
    assert back.fit == "score" and np.allclose(back.scores(sur.heldout["texts"]), sur.scores(sur.heldout["texts"]))
    assert "Spearman vs gold (surrogate)" in str(sur.figures()["metrics"].to_dict())


def test_counts_match_a_hand_count():
    X = counts(["Good, good film", "bad film"], ["good", "film", "good film"], 2)
    assert X.tolist() == [[2, 1, 1], [0, 1, 0]]


# ---------------------------------------------------------------------------- bad input
def test_bad_tasks_raise_clear_errors(lm):
    with pytest.raises(DistillationError, match="one class"):
        il.distill(lm, il.tasks.Task.sentences("one", ["a good one", "a fine one", "ok"] * 4, ["pos"] * 12))
    with pytest.raises(DistillationError, match="too few"):
        il.distill(lm, il.tasks.Task.sentences("few", ["good", "bad", "fine"], ["pos", "neg", "pos"]))
    with pytest.raises(DistillationError, match="into="):
        il.distill(lm, il.tasks.sentiment(20), into="forest")
    numeric = il.tasks.Task.sentences("num", ["good", "bad", "fine", "ok"] * 3, [1.0, -1.0, 0.5, 0.0] * 3)
    with pytest.raises(DistillationError, match="verbalizers="):
        il.distill(lm, numeric)
    with pytest.raises(DistillationError, match="fit='score'"):
        il.distill(lm, numeric, fit="label", verbalizers=VERBALIZERS)
    with pytest.raises(il.InterpretLMError, match="sentence-level"):
        il.distill(lm, il.tasks.Task.words_task("w", ["a b"], [["a", "b"]], [["x", "y"]]))
    with pytest.raises(DistillationError, match="vocab_size"):
        il.distill(lm, ["a b c", "d e f"], into="student", vocab_size=lm.vocab_size + 1)
    with pytest.raises(DistillationError, match="at least 2"):
        il.distill(lm, ["only one text"], into="student")
    with pytest.raises(DistillationError, match="divisible"):
        il.distill(lm, ["a b c", "d e f"], into="student", d_model=30, heads=4)


# ---------------------------------------------------------------------------- the student
def _token_map_teacher() -> il.LM:
    """A teacher whose next-token distribution depends on the current token only (attention and MLP
    write nothing), peaked by a scaled head: a mapping a small student can learn in seconds."""
    t = tiny_lm("llama", seed=1)
    for blk in t.model.model.layers:
        blk.self_attn.o_proj.weight.zero_()
        blk.mlp.down_proj.weight.zero_()
    t.model.lm_head.weight.mul_(8.0)
    return t


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = ["Mary", "John", "store", "drink", "good", "bad", "the", "cat", "sat", "Paris"]
    return [" ".join(rng.choice(vocab) for _ in range(8)) for _ in range(n)]


def test_a_student_of_a_tiny_teacher_agrees_on_held_out_text(tmp_path):
    teacher = _token_map_teacher()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = il.distill(teacher, _texts(120), into="student", layers=1, d_model=32, steps=120, batch_size=16,
                       lr=1e-2, temperature=1.0, path=str(tmp_path / "student"), progress=False)
    assert s.agreement >= 0.9, s.summary()
    assert s.kl < 0.5 and s.losses[-1] < s.losses[0]
    small = il.load(str(tmp_path / "student"))                     # the saved folder loads like any model
    ids = teacher.tokenize("Mary sat the cat").input_ids
    assert torch.allclose(small.forward(ids).logits, s.lm.forward(ids).logits, rtol=1e-4, atol=1e-5)
    a = il.attribute(small, "Mary sat the cat", il.NextToken(5), method="integrated_gradients")
    assert a.check.passed                                           # methods run on the student


def test_an_interrupted_student_resumes_to_the_same_weights(tmp_path):
    teacher = tiny_lm("llama", seed=0)
    texts = _texts(20, seed=1)
    opts = dict(into="student", layers=1, d_model=16, heads=2, steps=12, batch_size=4, checkpoint_every=4, seed=3)
    whole = il.distill(teacher, texts, path=str(tmp_path / "a"), progress=False, **opts)

    def stop(done, total, desc):
        if desc.startswith("distilling") and done == 6:   # after step 6's body, its checkpoint at 4 on disk
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        il.distill(teacher, texts, path=str(tmp_path / "b"), progress=stop, **opts)
    resumed = il.distill(teacher, texts, path=str(tmp_path / "b"), progress=False, **opts)
    assert resumed.diagnostics["resumed_from"] == 4
    for (k, v), (_, w) in zip(whole.lm.model.state_dict().items(), resumed.lm.model.state_dict().items()):
        assert torch.equal(v, w), k
    assert resumed.agreement == whole.agreement and resumed.kl == pytest.approx(whole.kl, rel=1e-6)


def test_compare_explanations_is_one_for_a_model_with_itself(lm):
    r = il.compare_explanations(lm, lm, ["The cat sat on the", "When Mary and John"], method="saliency")
    assert r.spearman == pytest.approx([1.0, 1.0])
    from interpretlm.distillation import spearman
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_the_command_line_distils_a_task(lm, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from interpretlm import cli

    monkeypatch.setattr(il, "load", lambda name="smollm2-135m", **kw: lm)
    res = CliRunner().invoke(cli.app, ["distill", "sentiment", "--n", "60", "--into", "tree", "--calibrate", "True",
                                       "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "s.html")])
    assert res.exit_code == 0, res.output
    assert "check: fidelity" in res.output
    back = il.Result.load(tmp_path / "s.json")
    assert back.into == "tree" and "<svg" in (tmp_path / "s.html").read_text()
