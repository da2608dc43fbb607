"""Ground truth: a tiny Llama trained on repeated random sequences learns induction; patching,
ablation and circuit discovery must single out the heads its attention patterns show.

The heads are identified independently of the methods under test: the previous-token head
is the layer-0 head attending most to the previous position, the induction heads are the
layer-1 heads attending from the second copy to the token after the first occurrence.
Patching a layer-0 head alone into a run whose first copy is corrupted cannot restore the
copied token (the key now matches but the value is the corrupted token), so the
previous-token head is checked by ablation on clean runs and by discovery.
"""

import warnings

import pytest
import torch

import interpretlm as il
from _induction_model import HIGH, LOW, train_induction_lm

K = 6  # repeated segment length of the test prompts


@pytest.fixture(scope="module")
def trained():
    lm, stats = train_induction_lm(seed=0)
    # training time (about 25 s on one idle thread) is reported in the README, not asserted here
    assert stats["accuracy"] > 0.8, stats  # it does induction
    ds = il.datasets.induction(n=32, seq_len=K, lm=lm, vocab=(LOW, HIGH), seed=1)
    with lm.capture(["blocks.0.attn.pattern", "blocks.1.attn.pattern"]) as cache:
        lm.forward(ds.clean)
    p0, p1 = cache["blocks.0.attn.pattern"], cache["blocks.1.attn.pattern"]
    prev_score = torch.stack([p0[:, h].diagonal(-1, dim1=-2, dim2=-1).mean() for h in range(4)])
    # query k+j holds r_j; the token after r_j's first occurrence is at j+1
    ind_score = torch.stack([torch.stack([p1[:, h, K + j, j + 1] for j in range(K - 1)]).mean() for h in range(4)])
    prev_head = int(prev_score.argmax())
    induction_heads = {h for h in range(4) if ind_score[h] > 0.5}
    assert prev_score[prev_head] > 0.8 and induction_heads, (prev_score, ind_score)
    return lm, ds, prev_head, induction_heads


def test_patching_finds_the_induction_heads(trained):
    lm, ds, prev_head, induction_heads = trained
    p = il.patch(lm, ds.clean, ds.corrupted, ds.target, over="heads")
    strong = {(l, h) for l in range(2) for h in range(4) if p.effect[l, h] > 0.2}
    assert strong == {(1, h) for h in induction_heads}
    assert p.effect[0].abs().max() < 0.2
    # the residual stream at the last position of layer 1 carries the answer
    r = il.patch(lm, ds.clean, ds.corrupted, ds.target, over="resid_post", positions="last")
    assert r.effect[-1] == pytest.approx(1.0, abs=1e-4)


def test_ablation_finds_the_previous_token_head(trained):
    lm, ds, prev_head, induction_heads = trained
    a = il.ablate(lm, ds.clean, ds.target, heads="each", kind="mean")
    worst = divmod(int(a.effect.argmin()), 4)
    assert worst == (0, prev_head)
    assert a.effect[0, prev_head] < -0.5  # nats of log-probability lost
    # knocking out all induction heads together breaks induction
    both = il.ablate(lm, ds.clean, ds.target, heads=[(1, h) for h in induction_heads], kind="mean")
    assert both.effect < -1.0


def test_discovery_finds_the_circuit(trained):
    lm, ds, prev_head, induction_heads = trained
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no failed check
        c = il.discover_circuit(lm, ds, estimator="eap_ig", keep=0.1)
    assert (0, prev_head) in c.heads
    assert {(1, h) for h in induction_heads} <= set(c.heads)
    assert int(c.head_scores[0].argmax()) == prev_head
    assert c.faithfulness > 0.8
    assert c.diagnostics["conservation_error"] < 1e-3
    html = c.to_html()
    assert "<svg" in html and f"L0H{prev_head}" in html
