"""Datasets of clean / corrupted pairs: structure, single-token names, user pairs."""

import pytest
import torch

import interpretlm as il
from interpretlm.datasets import DatasetError


def test_ioi_drops_multi_token_names_with_a_warning(llama):
    with pytest.warns(UserWarning, match="not single tokens"):
        ds = il.datasets.ioi(n=8, seed=0, lm=llama)
    tok = llama.tokenizer
    for m in ds.meta:
        for name in (m["IO"], m["S"]):
            assert len(tok(name, add_special_tokens=False)["input_ids"]) == 1
    lengths = {len(llama.tokenize(p).tokens[0]) for p in ds.clean + ds.corrupted}
    assert len(lengths) == 1


def test_ioi_structure_and_abc_corruption(llama):
    with pytest.warns(UserWarning):
        ds = il.datasets.ioi(n=6, seed=3, lm=llama)
    for clean, corrupt, m in zip(ds.clean, ds.corrupted, ds.meta):
        assert clean.count(m["S"].strip()) == 2 and clean.count(m["IO"].strip()) == 1
        assert m["IO"].strip() not in corrupt and m["S"].strip() not in corrupt  # three other names
        assert clean.endswith(" to")
    assert {m["order"] for m in ds.meta} == {"ABBA", "BABA"}
    assert list(ds.target.correct) == [m["IO"] for m in ds.meta]
    assert il.datasets.ioi(n=6, seed=3, lm=llama).clean == ds.clean  # reproducible
    with pytest.raises(DatasetError):
        il.datasets.ioi(n=2, lm=llama, templates=[42])


def test_induction_structure(gpt2_tiny):
    ds = il.datasets.induction(n=5, seq_len=4, lm=gpt2_tiny, seed=0)
    for clean, corrupt, answer in zip(ds.clean, ds.corrupted, ds.target.correct):
        assert clean[4:] == clean[:3] and clean[3] == answer
        assert corrupt[4:] == clean[4:] and corrupt[3] != answer
    scores = gpt2_tiny.score(ds.clean, ds.target)
    assert scores.shape == (5,) and (scores < 0).all()  # log-probabilities


def test_greater_than_metric_signs(gpt2_tiny):
    ds = il.datasets.greater_than(n=4, seed=0, lm=gpt2_tiny)
    t = ds.target
    batch = t.prepare(gpt2_tiny, gpt2_tiny.tokenize(ds.clean))
    sign = batch.extra["year_sign"]
    for row, yy in zip(sign, t.years):
        assert row[yy // 10 + 1:].eq(1).all() if row.numel() == 10 else row[yy + 1:].eq(1).all()
    v = gpt2_tiny.score(ds.clean, t)
    assert ((v >= -1) & (v <= 1)).all()


def test_user_pairs_and_jsonl(tmp_path, llama):
    clean = ["When Mary and John went to the store, John gave a drink to",
             "When Tom and Anna went to the park, Anna gave a ball to"]
    corrupt = ["When Mary and John went to the store, Mary gave a drink to",
               "When Tom and Anna went to the park, Tom gave a ball to"]
    with pytest.warns(UserWarning, match="Dropped 1 of 2"):
        ds = il.datasets.pairs(clean, corrupt, [" Mary", " Zyxwvut"], [" John", " Tom"], lm=llama)
    assert len(ds) == 1 and ds.clean == clean[:1]
    full = il.datasets.pairs(clean, corrupt, [" Mary", " Tom"], [" John", " Anna"], lm=llama)
    back = il.datasets.from_jsonl(full.to_jsonl(tmp_path / "pairs.jsonl"), lm=llama)
    assert back.clean == full.clean and back.target.correct == full.target.correct
    assert torch.allclose(llama.score(back.clean, back.target), llama.score(full.clean, full.target))
    (tmp_path / "bad.jsonl").write_text('{"clean": "a"}\n')
    with pytest.raises(DatasetError, match="lacks"):
        il.datasets.from_jsonl(tmp_path / "bad.jsonl", lm=llama)
    with pytest.raises(il.TargetError, match="not a single token"):
        llama.score(clean[0], il.datasets.Answers([" Zyxwvut"], [" John"]))


@pytest.fixture(scope="module")
def gpt2_tiny():
    from interpretlm.testing import tiny_lm
    return tiny_lm("gpt2")
