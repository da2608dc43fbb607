"""Distillation: planted linear teachers recovered, fidelity by hand, a student that agrees, resumable
checkpoints, the saved student loading with il.load, and clear errors on bad input."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm.distillation import DistillationError, run as distill_run
from interpretlm.distillation.features import counts, words
from interpretlm.testing import tiny_lm

PLANTED = {"superb": 3.0, "dull": -3.0, "good": 2.0, "bad": -2.0, "fine": 1.2, "meh": -1.2}
NEUTRAL = ["the", "movie", "food", "was", "really", "a", "show", "and"]


def _linear_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = list(PLANTED) + NEUTRAL
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 9))) for _ in range(n)]
    labels = ["positive" if _log_odds(t) > 0 else "negative" for t in texts]
    return texts, labels


def _log_odds(text: str) -> float:
    return sum(PLANTED.get(w, 0.0) for w, _, _ in words(text)) + 0.05  # ties go to "positive"


@pytest.fixture
def linear_teacher(monkeypatch):
    """The LM's prediction step replaced by a model linear in word counts: log-odds = Σ w·count."""
    def label_logprobs(lm, texts, verbalizers, template, **_):
        z = torch.tensor([_log_odds(t) for t in texts], dtype=torch.float64)
        return torch.log_softmax(torch.stack([torch.zeros_like(z), z], -1), -1)   # [n, 2]: negative, positive
    monkeypatch.setattr(distill_run, "label_logprobs", label_logprobs)


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama", seed=0)


def _task(n: int = 240, seed: int = 0):
    texts, labels = _linear_texts(n, seed)
    return il.tasks.Task.sentences("planted", texts, labels)


def test_sparse_linear_recovers_a_linear_teachers_words_and_weights(lm, linear_teacher):
    sur = il.distill(lm, _task(400), into="sparse_linear", max_terms=6, ngram=1, progress=False)
    w = dict(sur.weights())
    assert set(w) == set(PLANTED)                                   # exactly the planted words, nothing else
    assert all(np.sign(w[k]) == np.sign(v) for k, v in PLANTED.items())
    true, got = np.array(list(PLANTED.values())), np.array([w[k] for k in PLANTED])
    assert np.corrcoef(true, got)[0, 1] > 0.95                      # weights proportional to the planted ones
    assert sur.fidelity >= 0.9 and sur.accuracy >= 0.9   # the L1 shrinkage moves the boundary a little


def test_fidelity_and_explanations_equal_a_hand_computation(lm, linear_teacher):
    sur = il.distill(lm, _task(120, seed=1), into="sparse_linear", max_terms=4, ngram=1, progress=False)
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
def test_every_surrogate_reaches_a_linear_teacher_and_round_trips(lm, linear_teacher, into, tmp_path):
    sur = il.distill(lm, _task(200, seed=2), into=into, max_depth=4, max_rounds=300, ngram=1, progress=False)
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


def test_perturbed_fidelity_and_speed_are_measured(lm, linear_teacher):
    sur = il.distill(lm, _task(80, seed=3), into="sparse_linear", ngram=1, perturbations=2, progress=False)
    d = sur.diagnostics
    assert d["n_perturbed"] == 2 * d["n_test"] and 0 <= sur.fidelity_perturbed <= 1
    sec = d["seconds"]   # the planted teacher costs nothing, so only the ratio's definition is checked here
    assert sur.speedup == pytest.approx(sec["lm_per_text"] / sec["surrogate_per_text"], rel=1e-12)
    assert set(sur.figures()) >= {"metrics", "terms", "examples"}


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
