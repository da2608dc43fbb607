"""Influence functions on tiny models where the answer is known.

* a strongly regularised softmax-regression head (only the LM head trained, convex) where leaving
  one example out is retrained exactly: the scores rank the leave-one-out changes of the query's
  loss (Spearman ≥ 0.9) and are on their scale (nats);
* a planted training text that alone teaches a fact is the top proponent of that fact;
* EK-FAC's and K-FAC's inverse-Hessian products equal dense computations from independently
  captured per-example gradients (grouped-query attention's smaller k_proj / v_proj included);
* identities: a text's cosine with itself is 1, TracIn over one checkpoint is the gradient dot
  product, a full-rank query is the query;
* resumability and bad input.
"""

from __future__ import annotations

import importlib
import itertools
import random

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm.influence.gradients import lm_loss_rows
from interpretlm.influence.validate import train_lm
from interpretlm.stats import spearman
from interpretlm.testing import tiny_lm

index_module = importlib.import_module("interpretlm.influence.index")


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny problems run fastest on one thread (and do not fight other processes for cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_lm(seed: int = 0):
    return tiny_lm("llama", seed=seed, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                   num_key_value_heads=1)


def template_texts(n: int, seed: int = 0) -> list[str]:
    names = ["Mary", "John", "The cat", "The dog", "God"]
    verbs = ["went to", "gave", "ate", "saw", "sold"]
    nouns = ["the store", "bread", "the game", "milk", "a drink", "home"]
    return random.Random(seed).sample([f"{a} {b} {c}" for a, b, c in itertools.product(names, verbs, nouns)], n)


def test_scores_rank_exact_leave_one_out_retraining():
    lm = small_lm()
    texts, query, reg = template_texts(40), "Mary and John went to the store", 1.0
    W = lm.model.lm_head.weight
    batch = lm.tokenize(texts)
    feats = {}
    h = lm.model.lm_head.register_forward_hook(lambda m, i, o: feats.__setitem__("x", i[0].detach()))
    with torch.no_grad():
        lm.forward(batch)
    h.remove()
    X = feats["x"][:, :-1].double()                       # [N, pos, d] the head's fixed inputs
    ids = batch.input_ids[:, 1:]
    mask = (batch.attention_mask[:, 1:] * batch.attention_mask[:, :-1]).double()

    def fit(weights: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """argmin_W (1/N) Σ_n w_n L_n(W) + reg/2 ||W||² (convex), to a gradient norm of 1e-10."""
        w = start.clone().double().requires_grad_(True)
        opt = torch.optim.LBFGS([w], lr=1, max_iter=300, tolerance_grad=1e-10, tolerance_change=1e-14,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logp = torch.log_softmax(X @ w.T, -1)
            nll = -(logp.gather(-1, ids.unsqueeze(-1))[..., 0] * mask).sum(1)
            J = (weights * nll).sum() / len(texts) + reg / 2 * w.pow(2).sum()
            J.backward()
            return J
        opt.step(closure)
        return w.detach()

    w_star = fit(torch.ones(len(texts), dtype=torch.float64), W.detach())
    lm.model.double()
    q = lm.tokenize([query])

    def query_loss(w: torch.Tensor) -> float:
        with torch.no_grad():
            W.copy_(w)
            return float(lm_loss_rows(lm)(lm.forward(q))[0])

    base = query_loss(w_star)
    loo = []
    for i in range(len(texts)):
        keep = torch.ones(len(texts), dtype=torch.float64)
        keep[i] = 0
        loo.append(query_loss(fit(keep, w_star)) - base)  # removing i: the loss rises by about score_i
    query_loss(w_star)
    idx = il.influence.index(lm, texts, method="ekfac", modules=["lm_head"], projection=None, damping=0.0,
                             absolute_damping=reg, progress=False)
    for method in ("ekfac", "kfac", "dot"):
        s = idx.scores([query], method=method)[0]
        rho = spearman(s.tolist(), loo)
        assert rho >= 0.9, (method, rho)
    s = idx.scores([query], method="kfac")[0].numpy()
    slope = float(np.polyfit(s, np.array(loo), 1)[0])
    assert 0.6 < slope < 1.4, slope  # scores are the loss change in nats, not just its rank


def test_a_planted_text_is_the_top_proponent_of_its_fact():
    lm = tiny_lm("llama", seed=1)
    planted = "Zorblat is the capital of Quexland"
    texts = template_texts(23, seed=2)
    texts.insert(11, planted)
    target = il.Continuation(" Quexland")
    prompt = "Zorblat is the capital of"
    before = float(lm.score(prompt, target))
    train_lm(lm, texts, steps=30, lr=1e-2)
    assert float(lm.score(prompt, target)) > before + 10.0  # training taught the fact (log p from -43 to -0.5)
    idx = il.influence.index(lm, texts, method="ekfac", modules="all", progress=False)
    for method in ("ekfac", "kfac", "dot", "cosine", "trackstar", "bm25"):
        top = idx.top(prompt, k=3, target=target, method=method)
        assert top.proponents[0]["index"] == 11 and top.proponents[0]["text"] == planted, method
    r = idx.top(prompt, k=3, target=target)
    assert r.scores[11] == max(r.scores) > 0 and all(o["score"] < 0 for o in r.opponents)


def _dense_reference(lm, texts, name, v, damping):
    """EK-FAC and K-FAC damped inverse products by dense linear algebra, from per-example gradients
    captured here with one example per backward pass."""
    mod = dict(lm.model.named_modules())[name]
    for p in lm.model.parameters():  # plain autograd through the weights, independent of the index's hooks
        p.requires_grad_(True)
    a_all, g_all, grads = [], [], []
    for t in texts:
        grab = {}
        h = mod.register_forward_hook(lambda m, i, o: grab.update(a=i[0], y=o))
        out = lm.forward([t], grad=True)
        h.remove()
        (g,) = torch.autograd.grad(lm_loss_rows(lm)(out).sum(), grab["y"])
        a, g = grab["a"][0].double(), g[0].double()
        a, g = a.detach(), g.detach()
        a_all.append(a), g_all.append(g), grads.append(g.T @ a)       # G_n = Σ_t g_t a_t^T
    A = torch.cat(a_all).T @ torch.cat(a_all) / sum(x.shape[0] for x in a_all)
    S = torch.cat(g_all).T @ torch.cat(g_all) / len(texts)
    la, qa = torch.linalg.eigh(A)
    ls, qs = torch.linalg.eigh(S)
    K = torch.kron(qs, qa)                                            # eigenbasis of vec(G) (row-major)
    vecs = torch.stack([G.reshape(-1) for G in grads])               # [N, d_out d_in]
    F = vecs.T @ vecs / len(texts)                                    # empirical Fisher
    lam_ek = torch.diagonal(K.T @ F @ K)
    lam_k = torch.kron(ls.clamp_min(0), la.clamp_min(0))
    out = {}
    for kind, lam in (("ekfac", lam_ek), ("kfac", lam_k)):
        M = K @ torch.diag(lam) @ K.T + damping * lam.mean() * torch.eye(K.shape[0], dtype=torch.float64)
        out[kind] = torch.linalg.solve(M, v.reshape(-1)).reshape(v.shape)
    return out, torch.stack(grads)


def test_ekfac_inverse_hessian_product_equals_dense_computation(tmp_path):
    lm = small_lm()
    lm.model.double()
    texts = template_texts(6, seed=3)
    names = ["model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.v_proj"]  # GQA: 16 -> 8
    idx = il.influence.index(lm, texts, method="ekfac", modules=names, projection=None, path=tmp_path,
                             damping=0.1, progress=False)
    st = idx._stats(lm, idx.path)
    shard = index_module.load_tensors(tmp_path / "grads" / "shard-00000.safetensors")
    for name in names:
        v = torch.randn(8, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        ref, grads = _dense_reference(lm, texts, name, v, 0.1)
        stored = shard[f"G::{name}"].double()
        assert stored.shape == (6, 8, 16)
        assert torch.allclose(stored, grads, rtol=1e-4, atol=1e-6 * float(grads.abs().max()))
        for kind in ("ekfac", "kfac"):
            got = idx._precondition(kind, name, v, st)
            err = (got - ref[kind]).norm() / ref[kind].norm()
            assert err < 1e-4, (name, kind, float(err))


def test_identities_between_methods():
    lm = tiny_lm("llama")
    texts = template_texts(5, seed=4)
    idx = il.influence.index(lm, texts, method="dot", modules="all", progress=False)
    # a training text as the query, with no target: its own loss, its own gradient
    cos = idx.scores([texts[2]], method="cosine")[0]
    assert abs(float(cos[2]) - 1) < 1e-4 and cos.abs().max() <= 1 + 1e-4
    ts = idx.scores([texts[2]], method="trackstar")[0]
    assert abs(float(ts[2]) - 1) < 1e-4
    dot = idx.scores(texts[:2], il.Continuation(" home"))
    assert torch.allclose(idx.scores(texts[:2], il.Continuation(" home"), query_rank=64), dot, rtol=1e-5)
    low = idx.scores(texts[:2], il.Continuation(" home"), query_rank=1)
    assert not torch.allclose(low, dot, rtol=1e-3)
    tracin = il.influence.index(lm, texts, method="tracin", modules="all", checkpoints=[lm], learning_rates=[1.0],
                                progress=False)
    assert torch.allclose(tracin.scores(texts[:2], il.Continuation(" home")), dot, rtol=1e-5, atol=1e-7)


def test_embedding_and_head_gradients_equal_autograd():
    """The token embedding is a linear layer of the one-hot token: its stored per-example gradient is the
    autograd gradient of its weight (transposed), exactly and through the projection's exact norm."""
    lm = small_lm()
    texts = ["Mary went home to the store", "John ate bread"]
    emb, head = lm.model.get_input_embeddings().weight, lm.model.get_output_embeddings().weight
    emb.requires_grad_(True)
    head.requires_grad_(True)
    loss = lm_loss_rows(lm)(lm.forward(texts[:1], grad=True)).sum()
    g_emb, g_head = torch.autograd.grad(loss, [emb, head])
    emb.requires_grad_(False)
    head.requires_grad_(False)
    exact = il.influence.index(lm, texts, method="dot", modules=["embed", "unembed"], projection=None, progress=False)
    qg, norm2, proj2 = exact.query_gradients(texts[:1])
    assert torch.allclose(qg["model.embed_tokens"][0].float(), g_emb.T, rtol=1e-4, atol=1e-6)
    assert torch.allclose(qg["lm_head"][0].float(), g_head, rtol=1e-4, atol=1e-6)
    ref = float(g_emb.double().pow(2).sum() + g_head.double().pow(2).sum())
    assert abs(float(norm2[0]) / ref - 1) < 1e-4 and abs(float(proj2[0]) / ref - 1) < 1e-4
    projected = il.influence.index(lm, texts, method="dot", modules=["embed"], projection=8, progress=False)
    _, norm2, _ = projected.query_gradients(texts[:1])  # the exact norm, from token-equality Grams
    assert abs(float(norm2[0]) / float(g_emb.double().pow(2).sum()) - 1) < 1e-4
    p = projected.projector.p_in["model.embed_tokens"]  # [8, vocab]: a one-hot row projects to a column
    assert projected.projector.project("model.embed_tokens", torch.tensor([[3]]), torch.zeros(1, 1, 16),
                                       ids=True)[0][0, 0].tolist() == p[:, 3].tolist()


def test_lds_report_judges_other_scores_and_pairs_methods():
    """``lds_of`` recomputes the report's own figure from its masks and losses; ``paired`` is the mean and
    standard error of the per-query differences."""
    texts = template_texts(8, seed=5)
    rep = il.influence.validate(lambda s: small_lm(s), texts, template_texts(4, seed=6), subsets=6, steps=4,
                                methods=["dot", "bm25"], progress=False)
    assert len(rep.masks) == 6 and all(sum(m) == 4 for m in rep.masks) and np.asarray(rep.actual).shape == (6, 4)
    full = small_lm(0)
    train_lm(full, texts, steps=4, lr=3e-3)
    assert full.fingerprint == rep.settings["fingerprint"]
    dot = il.influence.index(full, texts, method="dot", modules="all", projection=None, progress=False)
    again = rep.lds_of(dot.scores(template_texts(4, seed=6)))
    assert np.allclose(again["per_query"], rep.methods["dot"]["per_query"], atol=1e-9)
    d = np.asarray(rep.methods["dot"]["per_query"]) - np.asarray(rep.methods["bm25"]["per_query"])
    got = rep.paired("dot", "bm25")
    assert abs(got["diff"] - d.mean()) < 1e-12 and abs(got["se"] - d.std(ddof=1) / 2) < 1e-12
    with pytest.raises(il.influence.InfluenceError, match="n_query, n_train"):
        rep.lds_of(torch.zeros(4, 7))
    sgd = small_lm(0)  # the SGD recipe (a diagnosis in the benchmark) trains too
    before = float(lm_loss_rows(sgd)(sgd.forward(texts, grad=False)).mean())
    train_lm(sgd, texts, steps=4, lr=3e-3, optimizer="sgd")
    assert float(lm_loss_rows(sgd)(sgd.forward(texts, grad=False)).mean()) < before
    with pytest.raises(il.influence.InfluenceError, match="optimizer"):
        train_lm(sgd, texts, steps=1, lr=1e-3, optimizer="lbfgs")


def test_sampled_fisher_is_seeded_and_reaches_the_same_top_proponent(tmp_path):
    lm = tiny_lm("llama")
    texts = template_texts(6, seed=6)
    target = il.Continuation(" home")
    runs = [il.influence.index(lm, texts, method="ekfac", modules="mlp", fisher="sampled", seed=3,
                               path=tmp_path / f"s{i}", progress=False) for i in range(2)]
    a, b = (r.scores(["Mary went"], target) for r in runs)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert runs[0].computed == {"grads": 1, "fisher": 1, "lambda": 1}
    emp = il.influence.index(lm, texts, method="ekfac", modules="mlp", progress=False).scores(["Mary went"], target)
    assert int(a.argmax()) == int(emp.argmax())


def test_an_interrupted_index_recomputes_at_most_one_shard(tmp_path, monkeypatch):
    lm = tiny_lm("llama")
    texts = template_texts(8, seed=5)
    opts = dict(method="ekfac", modules="mlp", path=tmp_path / "inf", shard_size=2, batch_size=1, progress=False)
    real = index_module.run_pass
    calls = {"n": 0}

    def dies_in_shard_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # the second batch of the third shard: two shards are whole
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(index_module, "run_pass", dies_in_shard_3)
    with pytest.raises(KeyboardInterrupt):
        il.influence.index(lm, texts, **opts)
    monkeypatch.setattr(index_module, "run_pass", real)
    shards = sorted((tmp_path / "inf" / "grads").iterdir())
    assert [p.name for p in shards] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    stamps = [p.stat().st_mtime_ns for p in shards]
    idx = il.influence.index(lm, texts, **opts)
    assert idx.computed["grads"] == 2     # the interrupted shard and the one never started
    assert [p.stat().st_mtime_ns for p in shards] == stamps
    fresh = il.influence.index(lm, texts, **{**opts, "path": tmp_path / "fresh"})
    target = il.Continuation(" home")
    assert torch.allclose(idx.scores(["Mary went"], target), fresh.scores(["Mary went"], target), rtol=1e-5)
    again = il.influence.load(tmp_path / "inf", lm)
    assert torch.allclose(again.scores(["Mary went"], target), fresh.scores(["Mary went"], target), rtol=1e-5)
    assert again.computed == {"grads": 0, "fisher": 0, "lambda": 0}
    assert not list((tmp_path / "inf").rglob(".*"))  # no temporary file left behind


def test_bad_input_raises_clear_errors(tmp_path):
    lm = tiny_lm("llama")
    with pytest.raises(il.influence.EmptyTrainingSetError, match="empty"):
        il.influence.index(lm, [], progress=False)
    with pytest.raises(il.influence.EmptyTrainingSetError):
        il.influence.index(lm, ["  "], progress=False)
    with pytest.raises(il.influence.UnknownModuleError, match="no module"):
        il.influence.index(lm, ["Mary went home"], modules=["model.layers.9.mlp.up_proj"], progress=False)
    with pytest.raises(il.influence.UnknownModuleError, match="not a linear layer"):
        il.influence.index(lm, ["Mary went home"], modules=["model.layers.0.input_layernorm"], progress=False)
    idx = il.influence.index(lm, ["Mary went home"], method="dot", path=tmp_path, progress=False)
    with pytest.raises(il.influence.QueryTooLongError, match="context"):
        idx.scores(["Mary " * 300])
    with pytest.raises(il.influence.QueryTooLongError):
        idx.scores(["Mary " * 250], il.Continuation(" home" * 10))
    other = tiny_lm("llama", seed=1)
    with pytest.raises(il.influence.FingerprintMismatchError, match="other weights"):
        il.influence.index(other, ["Mary went home"], method="dot", path=tmp_path, progress=False)
    with pytest.raises(il.influence.FingerprintMismatchError):
        il.influence.load(tmp_path, other)
    with pytest.raises(il.influence.InfluenceError, match="checkpoints"):
        idx.scores(["Mary"], method="tracin")
    for err in (il.influence.EmptyTrainingSetError, il.influence.UnknownModuleError, il.influence.QueryTooLongError,
                il.influence.FingerprintMismatchError):
        assert issubclass(err, il.InterpretLMError)


def test_registered_method_and_training_file(tmp_path):
    lm = tiny_lm("gpt2")  # GPT-2's Conv1D layers are linear layers too
    f = tmp_path / "train.jsonl"
    f.write_text('{"text": "Mary went home"}\n{"text": "John ate bread"}\n"The cat sat"\n')
    r = il.influences(lm, "Mary went", il.Continuation(" home"), train=str(f), estimator="dot", k=2, progress=False)
    assert r.n_train == 3 and len(r.scores) == 3 and r.check.passed
    assert {p["index"] for p in r.proponents} | {o["index"] for o in r.opponents} <= {0, 1, 2}
    assert "proponent" in r.to_html()


def test_command_line_takes_the_training_file_then_the_query(tmp_path):
    from click.testing import CliRunner

    from interpretlm.cli import app
    from interpretlm.testing import save_tiny

    folder = save_tiny(tmp_path / "model", "llama")
    f = tmp_path / "train.jsonl"
    f.write_text('{"text": "Mary went home"}\n{"text": "John ate bread"}\n{"text": "The cat sat on the mat"}\n')
    out = CliRunner().invoke(app, ["influence", str(f), "Mary went", "--continuation", " home", "--model", folder,
                                   "--estimator", "dot", "--k", "2", "--no-progress", "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    assert "'Mary went home'" in out.output and "top proponent #0" in out.output
    assert il.Result.load(tmp_path / "r.json").proponents[0]["text"] == "Mary went home"
