"""Activation maximization against planted ground truth, a brute-force reference, and bad input.

The planted model is a tiny Llama whose block-0 MLP neuron 5 is built by hand (weights set,
not learned): through dimension 0 of the embeddings its gate and up projections read
**digits** (``value = silu(g)·u`` large and positive, larger for higher digits, whose other
embedding dimensions are smaller so the RMS norm scales them up), and a second mechanism
reads the punctuation marks ``! ? ; :`` with a *negative* gate and a negative up projection
(``silu(-1.28)·(-7.3) ≈ +2``). The attention writes nothing into dimensions 0 and 1, so the
neuron sees only the current token. The corpus holds the digits 0-5 only; 6-9 are larger.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import interpretlm as il
from interpretlm.maximization import MiningError
from interpretlm.maximization.corpus import CorpusError
from interpretlm.unit_reads import fetch_windows, window_values
from interpretlm.testing import CORPUS, tiny_lm
from interpretlm.units import bind_units

NEURON, DEAD = 5, 7
PUNCT = ["!", "?", ";", ":"]


def _token(lm, s: str) -> int:
    ids = lm.tokenizer(s, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (s, ids)
    return ids[0]


@pytest.fixture(scope="module")
def planted():
    lm = tiny_lm("llama", seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        emb = lm.model.get_input_embeddings().weight
        emb[:, :2] = 0.0
        # every other token reads weakly positive (x_0 = 0.1·|rest|, silu(0.8)·0.8 ≈ 0.44 after the norm), so
        # the gradient is not zero at a random prompt (at x_0 = 0 the neuron sits on a saddle)
        emb[:, 0] = 0.1 * emb[:, 2:].norm(dim=1)

        def other(r: float) -> torch.Tensor:
            v = torch.randn(emb.shape[1] - 2, generator=g)
            return r * v / v.norm()
        for d in range(10):
            t = _token(lm, str(d))
            emb[t, 0] = 1.0
            emb[t, 2:] = other(3.0 - 0.25 * d)      # smaller for higher digits: the norm scales them up
        for p in PUNCT:
            t = _token(lm, p)
            emb[t, 0], emb[t, 1] = -1.0, -4.69      # after the norm: gate ≈ -1.28, up ≈ -7.3
            emb[t, 2:] = other(4.0)
        block = lm.model.model.layers[0]
        block.self_attn.o_proj.weight[:2] = 0.0     # attention writes nothing into dims 0, 1
        block.post_attention_layernorm.weight.fill_(1.0)
        mlp = block.mlp
        for w in (mlp.gate_proj.weight, mlp.up_proj.weight):
            w[NEURON] = 0.0
            w[DEAD] = 0.0                           # gate = up = 0: never fires
        mlp.gate_proj.weight[NEURON, 0] = 1.0
        mlp.up_proj.weight[NEURON, 0] = 1.0
        mlp.up_proj.weight[NEURON, 1] = 1.0
    return lm


def _corpus(seed: int = 0, n: int = 60) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    texts = []
    for i in range(n):
        s = CORPUS[i % len(CORPUS)]
        words = s.split(" ")
        at = int(torch.randint(len(words), (1,), generator=g))
        digit = str(int(torch.randint(6, (1,), generator=g)))          # digits 0-5 only
        mark = PUNCT[int(torch.randint(len(PUNCT), (1,), generator=g))]
        words.insert(at, f"{digit}{mark}" if i % 2 else digit)
        texts.append(" ".join(words))
    return texts


def _shuffled(seed: int, n: int = 40) -> list[str]:
    """Texts of shuffled words (windows rarely repeat, so top-k values are rarely tied)."""
    g = torch.Generator().manual_seed(seed)
    words = " ".join(CORPUS).split()
    return [" ".join(words[i] for i in torch.randperm(len(words), generator=g)[:15].tolist()) for _ in range(n)]


def _mine(lm, units, corpus, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return il.maximize(lm, units, corpus=corpus, progress=False, **kw)


def test_mining_finds_only_the_planted_class(planted):
    lm = planted
    unit = il.Unit("blocks.0.mlp.neurons", NEURON)
    r = _mine(lm, [unit, il.Unit("blocks.0.mlp.neurons", DEAD)], _corpus(), k=10, window=8)
    digits = {_token(lm, str(d)) for d in range(10)}
    top = r.examples[unit.name]["top"]
    assert len(top) == 10
    for e in top:
        assert e["tokens"][e["pos"]].strip() in {str(d) for d in range(6)}, e["tokens"][e["pos"]]
    # the streamed maxima are the recomputed ones, and the best is the largest digit of the corpus (5)
    assert r.check.passed and r.diagnostics["recompute_error"] < 1e-5
    assert top[0]["tokens"][top[0]["pos"]] == "5"
    assert r.dead == ["blocks.0.mlp.neurons[7]"] and float(r.frequency[1]) == 0.0
    # the planted neuron fires on every token (weakly off the digits): it is neither dead nor rare
    assert float(r.frequency[0]) == 1.0 and not r.rare
    assert len(digits) == 10


def test_glu_split_separates_the_gate_negative_mechanism(planted):
    lm = planted
    unit = il.Unit("blocks.0.mlp.neurons", NEURON)
    corpus = _corpus()
    r = _mine(lm, unit, corpus, k=10, window=8)
    glu = r.examples[unit.name]["glu"]
    for e in glu["gate- up-"]:
        assert e["tokens"][e["pos"]] in PUNCT and e["max"] > 1.0    # positive: silu(g<0)·(u<0)
    for e in glu["gate+ up+"]:
        assert e["tokens"][e["pos"]] in {str(d) for d in range(6)}
    # the frequency of the gate-negative combination is the share of punctuation tokens read
    windows = fetch_windows(il.corpus(corpus), lm.tokenizer, 8, set(range(r.n_windows)))
    ids = torch.tensor([windows[i] for i in range(r.n_windows)]).flatten()
    punct = torch.isin(ids, torch.tensor([_token(lm, p) for p in PUNCT]))
    assert float(r.glu_frequency[0, 3]) == pytest.approx(float(punct.float().mean()), rel=1e-6)
    # with the planted weights only punctuation has gate < 0 (the rest: gate > 0 and up > 0)
    assert float(r.glu_frequency[0, 2]) == 0.0 and float(r.glu_frequency[0, 1]) == 0.0


def test_epo_beats_every_corpus_example(planted):
    lm = planted
    unit = il.Unit("blocks.0.mlp.neurons", NEURON)
    mined = _mine(lm, unit, _corpus(), k=5, window=8)
    corpus_max = float(mined.top_values[0, 0])
    opt = il.maximize(lm, unit, method="epo", length=4, population=4, swaps=16, top_k=32, steps=25, seed=0,
                      progress=False)
    best_act, best_ce, best_prompt = opt.best
    assert best_act > corpus_max * 1.2, (best_act, corpus_max, best_prompt)
    assert best_prompt.strip()[-1] in "6789"          # a digit the corpus never showed
    # the front is non-dominated and sorted by cross-entropy
    ce = [c for _, c, _ in opt.pareto]
    act = [a for a, _, _ in opt.pareto]
    assert ce == sorted(ce) and all(a1 < a2 for a1, a2 in zip(act, act[1:]))
    again = il.maximize(lm, unit, method="epo", length=4, population=4, swaps=16, top_k=32, steps=25, seed=0,
                        progress=False)
    assert again.pareto == opt.pareto
    # the dashboard shows the front next to the corpus examples, marking what beats the corpus
    mined.add_optimized(opt)
    table = mined.figures()["optimized"]
    assert any(row[2] == "yes" for row in table.rows) and "Pareto front" in mined.to_html()


def test_gcg_and_continuous_on_the_planted_unit(planted):
    lm = planted
    unit = il.Unit("blocks.0.mlp.neurons", NEURON)
    g = il.maximize(lm, unit, method="gcg", length=3, swaps=32, top_k=32, steps=15, seed=0, progress=False)
    assert g.best[2].strip()[-1] in "6789"
    c = il.maximize(lm, unit, method="continuous", length=3, steps=40, lr=0.1, seed=0, progress=False)
    # the soft prompt is off the token manifold: far above what its projection reaches
    assert c.projected["soft_activation"] > c.projected["projected_activation"]


def test_streaming_topk_equals_a_full_sort():
    lm = tiny_lm("llama", seed=3)
    corpus = _shuffled(seed=1)
    units = il.Unit.all("blocks.1.mlp.neurons")
    r = _mine(lm, units, corpus, k=7, window=6, batch_size=5, detail=0, hist_every=1)
    bound = bind_units(lm, units)
    win = fetch_windows(il.corpus(corpus), lm.tokenizer, 6, set(range(r.n_windows)))
    vals = window_values(lm, bound, [win[i] for i in range(r.n_windows)], 64)    # [n_win, W, n]
    per_window = vals.max(1).values                                              # [n_win, n]
    ref = per_window.sort(0, descending=True).values[:7].T                      # [n, k]
    torch.testing.assert_close(r.top_values, ref, rtol=1e-4, atol=1e-6)
    ref_w = per_window.argsort(0, descending=True)[:7].T
    # windows agree wherever the k+1 best values are not tied (a token repeated in another window ties)
    ref8 = per_window.sort(0, descending=True).values[:8].T
    distinct = (ref8[:, :-1] - ref8[:, 1:]).abs().min(1).values > 1e-5
    assert distinct.sum() > bound.size // 2
    assert torch.equal(r.top_windows[distinct], ref_w[distinct])
    # the histogram counts every token once, in the bin of its value; frequency = share of positive values
    assert int(r.hist_counts.sum(1)[0]) == r.n_tokens == vals.shape[0] * 6
    flat, rng = vals.reshape(-1, vals.shape[-1]), r.hist_range
    bins = r.hist_counts.shape[1]
    idx = ((flat + rng) * (bins / (2 * rng))).floor().clamp(0, bins - 1).long()
    ref_hist = torch.stack([torch.bincount(idx[:, j], minlength=bins) for j in range(idx.shape[1])])
    # only values within float noise of a bin edge may land in the neighbouring bin (a window's first
    # token has no context, so its value repeats wherever the token starts a window)
    moved = (ref_hist - r.hist_counts).abs().sum() / 2
    assert moved <= 1e-3 * r.hist_counts.sum(), int(moved)
    torch.testing.assert_close(r.frequency, (vals > 0).float().mean((0, 1)), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(r.mean, vals.mean((0, 1)), rtol=1e-4, atol=1e-6)


def test_state_streamed_in_batches_equals_one_sort_of_every_window():
    """Only units with a window entering their top-k, a reservoir band or a sign combination are re-sorted;
    the state still equals stable sorts over all windows at once (integer values: many ties, which go to
    the earlier window), on rows given out of order."""
    from interpretlm.maximization.mining_state import MiningState

    g = torch.Generator().manual_seed(0)
    n, W, b, k, bands, samples = 9, 5, 4, 3, 2, 2
    batches = [torch.randint(-4, 6, (b, W, n), generator=g).float() for _ in range(6)]
    gates = [torch.randn(b, W, n, generator=g) for _ in batches]
    ups = [torch.randn(b, W, n, generator=g) for _ in batches]
    rows = torch.tensor([7, 2, 5, 0, 8, 1, 3, 6, 4])          # the units' rows in the state, out of order
    streamed, gen = MiningState(n, n, k, bands, samples, 8), torch.Generator().manual_seed(1)
    for i, (v, gate, up) in enumerate(zip(batches, gates, ups)):
        wmax = streamed.update_glu(rows, v, gate, up, i * b)
        streamed.update(rows, v, i * b, 0.0, gen, wmax)
    allv = torch.cat(batches)
    whole = MiningState(n, n, k, bands, samples, 8)
    whole.update_glu(rows, allv, torch.cat(gates), torch.cat(ups), 0)
    t, ref = streamed.t, whole.t
    for key in ("glu_key", "glu_v", "glu_i", "glu_n"):
        assert torch.equal(t[key], ref[key]), key
    per_window = allv.amax(1).T                                             # [n, windows]
    top_v, top_w = per_window.sort(dim=1, descending=True, stable=True)
    assert torch.equal(t["top_v"][rows], top_v[:, :k])
    assert torch.equal(t["top_i"][rows] // W, top_w[:, :k])
    assert torch.equal(allv[t["top_i"][rows] // W, t["top_i"][rows] % W, torch.arange(n).unsqueeze(1)], top_v[:, :k])
    # the reservoir: the same random priorities, each band's highest over all the windows in it
    gen = torch.Generator().manual_seed(1)
    keys = torch.cat([torch.rand(b, n, generator=gen) for _ in batches]).T          # [n, windows]
    band = (per_window / t["hist_range"][rows].unsqueeze(1) * bands).floor().clamp(0, bands - 1)
    for j in range(bands):
        kj = torch.where((per_window > 0) & (band == j), keys, float("-inf"))
        ref_k, ref_w = kj.sort(dim=1, descending=True, stable=True)
        assert torch.equal(t["q_key"][rows, j], ref_k[:, :samples])
        kept = torch.isfinite(ref_k[:, :samples])
        assert kept.any() and torch.equal((t["q_i"][rows, j] // W)[kept], ref_w[:, :samples][kept])


def test_swapped_candidates_score_on_the_parents_cache_as_in_whole_passes():
    """EPO scores a candidate from its changed token on, on its parent's key/value cache: the activation and
    cross-entropy of a whole pass, for decoders (GPT-2's learned positions, Llama's rotary ones) and a BOS."""
    from interpretlm.maximization.optimize import _shares_prefixes, score, score_swaps

    for family in ("llama", "gpt2"):
        lm = tiny_lm(family, seed=2)
        assert _shares_prefixes(lm)
        bound = bind_units(lm, il.Unit("blocks.1.mlp.neurons", 3))
        g = torch.Generator().manual_seed(0)
        for width in (6, 7):
            parents = torch.randint(5, 60, (3, width), generator=g)
            parents[:, 0] = 1 if width == 7 else parents[:, 0]     # a fixed first token, as a BOS
            parent = torch.randint(3, (30,), generator=g)
            at = torch.randint(width - 6, width, (30,), generator=g)
            token = torch.randint(5, 60, (30,), generator=g)
            act, ce = score_swaps(lm, bound, parents, parent, at, token, batch_size=8)
            cands = parents[parent].clone()
            cands[torch.arange(30), at] = token
            ref_act, ref_ce = score(lm, bound, cands, batch_size=8)
            torch.testing.assert_close(act, ref_act, rtol=1e-4, atol=1e-5 * float(ref_act.abs().max()))
            torch.testing.assert_close(ce, ref_ce, rtol=1e-4, atol=0)


def test_glu_shortcut_keeps_the_exact_window_maxima():
    """The gated path shares the windows' maxima with the GLU split; negative-only windows included."""
    from interpretlm.maximization.mining_state import MiningState

    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 5, 7, generator=g)
    v[:, :, 3] = -v[:, :, 3].abs() - 0.1            # a unit whose every value is negative
    gate, up = torch.randn(6, 5, 7, generator=g), torch.randn(6, 5, 7, generator=g)
    a, b = MiningState(7, 7, 3, 2, 2, 8), MiningState(7, 7, 3, 2, 2, 8)
    wmax = a.update_glu(slice(0, 7), v, gate, up, 0)
    torch.testing.assert_close(wmax, v.amax(1), rtol=0, atol=0)
    a.update(slice(0, 7), v, 0, 0.0, torch.Generator().manual_seed(1), wmax)
    b.update(slice(0, 7), v, 0, 0.0, torch.Generator().manual_seed(1))
    assert all(torch.equal(a.t[k], b.t[k]) for k in ("top_v", "top_i", "q_i", "hist", "n_fire"))


def test_resumed_pass_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """A mining folder is a store (the core's shard_store, the activation store's machinery): a pass killed in
    its 4th shard leaves shards 0-2 listed with their sha256; run again it recomputes only the cut shard's
    windows and ends with the uninterrupted pass's folder byte for byte and its state tensor for tensor."""
    from interpretlm.results import sha256_of
    from interpretlm.shard_store import read_manifest

    lm = tiny_lm("llama", seed=3)
    corpus = _shuffled(seed=2)
    units = [il.Unit("blocks.1.mlp.neurons", 3), il.Unit("blocks.0.attn.heads", 1)]
    kw = dict(k=4, window=6, batch_size=4, detail=1, checkpoint_every=8)   # a shard: 8 windows, 2 batches
    full = _mine(lm, units, corpus, path=str(tmp_path / "full"), **kw)
    n_shards = -(-full.n_windows // 8)
    assert n_shards >= 5 and full.diagnostics["forward_passes"] == -(-full.n_windows // 4)
    calls = {"n": 0}
    real_run = type(lm).run

    def killed(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 7:            # the first batch of shard 3
            raise KeyboardInterrupt
        return real_run(self, *a, **k)
    monkeypatch.setattr(type(lm), "run", killed)
    with pytest.raises(KeyboardInterrupt):
        _mine(lm, units, corpus, path=str(tmp_path / "cut"), **kw)
    monkeypatch.setattr(type(lm), "run", real_run)
    m = read_manifest(tmp_path / "cut")
    assert sorted(m["shards"]) == ["0", "1", "2"] and m["n_shards"] == n_shards
    for key, e in m["shards"].items():
        assert e["windows"] == [8 * int(key), 8 * int(key) + 8]
        assert e["sha256"] == sha256_of(tmp_path / "cut" / e["file"])
    (tmp_path / "cut" / ".shard-00003.safetensors.x1.tmp").write_bytes(b"half a shard")   # a writer killed mid-file
    resumed = _mine(lm, units, corpus, path=str(tmp_path / "cut"), **kw)
    assert resumed.diagnostics["forward_passes"] == full.diagnostics["forward_passes"] - 6
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())
    for f in (tmp_path / "full").iterdir():
        assert f.read_bytes() == (tmp_path / "cut" / f.name).read_bytes(), f.name
    for f in ("top_values", "top_windows", "top_positions", "hist_counts", "hist_range", "quantile_values",
              "quantile_windows", "frequency", "mean", "std", "glu_values", "glu_windows", "glu_frequency"):
        a, b = getattr(resumed, f), getattr(full, f)
        assert torch.equal(torch.nan_to_num(a, nan=-7), torch.nan_to_num(b, nan=-7)), f
    assert resumed.examples == full.examples
    # a finished folder reopens like any store: no window is read again
    again = _mine(lm, units, corpus, path=str(tmp_path / "full"), **kw)
    assert again.diagnostics["forward_passes"] == 0 and torch.equal(again.top_values, full.top_values)
    # and it is the pass without a folder (the same shards, merged in the same order)
    plain = _mine(lm, units, corpus, **kw)
    assert torch.equal(plain.top_values, full.top_values) and torch.equal(plain.mean, full.mean)


def test_heads_and_directions_read_what_they_say():
    lm = tiny_lm("gpt2", seed=0)
    v = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))
    units = [il.Unit("blocks.1.attn.heads", 2), il.Unit("blocks.0.resid_post", direction=v),
             il.Unit("blocks.0.resid_post", 5)]
    bound = bind_units(lm, units)
    with lm.capture(["blocks.1.attn.heads", "blocks.0.resid_post"]) as cache:
        lm.run("When Mary and John went")
    got = il.units.unit_values(lm, bound, cache)
    heads = lm.head_writes(1, cache["blocks.1.attn.heads"])[2].norm(dim=-1)
    torch.testing.assert_close(got[..., 0], heads, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[..., 1], cache["blocks.0.resid_post"] @ v, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[..., 2], cache["blocks.0.resid_post"][..., 5], rtol=0, atol=0)


def test_round_trip_and_dashboard(planted, tmp_path):
    lm = planted
    r = _mine(lm, il.Unit("blocks.0.mlp.neurons", NEURON), _corpus(), k=5, window=8)
    back = il.Result.load(r.save(tmp_path / "m.json"))
    assert torch.equal(back.top_values, r.top_values) and back.examples == r.examples
    figs = r.figures()
    assert {"top examples", "quantile examples", "histogram", "logit effects", "GLU split"} <= set(figs)
    # the neuron writes down_proj[:, 5]; its logit effect is the unembedding of that direction
    assert r.logit_effects[r.unit_names[0]]["promoted"][0][1] > 0
    page = r.save_html(tmp_path / "m.html").read_text()
    assert "Top-activating windows" in page and "<script>alert" not in page


@pytest.mark.parametrize("bad, err", [
    (dict(units=il.Unit("blocks.0.nope", 1)), il.ComponentError),
    (dict(units=il.Unit("blocks.0.mlp.neurons", 10_000)), il.ComponentError),
    (dict(units=il.Unit("blocks.9.mlp.neurons", 1)), il.ComponentError),
    (dict(corpus=[]), CorpusError),
    (dict(corpus=["   "]), CorpusError),
    (dict(corpus=["a b"]), CorpusError),                 # shorter than one window
    (dict(k=10_000), MiningError),                      # more examples than windows
    (dict(corpus="/no/such/file.txt"), CorpusError),
    (dict(k=0), MiningError),
])
def test_bad_input_is_a_clear_error(bad, err):
    lm = tiny_lm("llama")
    args = dict(units=il.Unit("blocks.0.mlp.neurons", 1), corpus=_corpus(n=10), k=3, window=8)
    args.update(bad)
    units = args.pop("units")
    with pytest.raises(err) as info:
        il.maximize(lm, units, progress=False, **args)
    assert isinstance(info.value, il.InterpretLMError) and len(str(info.value)) > 20


def test_optimization_bad_input():
    lm = tiny_lm("llama")
    with pytest.raises(il.InterpretLMError, match="one unit"):
        il.maximize(lm, il.Unit.all("blocks.0.mlp.neurons"), method="epo", steps=1)
    with pytest.raises(il.InterpretLMError, match="length"):
        il.maximize(lm, il.Unit("blocks.0.mlp.neurons", 1), method="gcg", length=0)
    with pytest.raises(il.OptionError, match="Its options"):
        il.maximize(lm, il.Unit("blocks.0.mlp.neurons", 1), method="epo", corpus="builtin")


def test_corpus_files_stream(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("first paragraph\nstill first\n\nsecond one\n\n\nthird\n")
    assert list(il.corpus(txt).documents()) == ["first paragraph\nstill first", "second one", "third"]
    jl = tmp_path / "c.jsonl"
    jl.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"body": "b"}) + "\n")
    with pytest.raises(CorpusError, match="text_field"):
        list(il.corpus(jl).documents())
    with pytest.raises(CorpusError, match=":1 has no string field 'body'"):
        list(il.corpus(jl, text_field="body").documents())
    good = tmp_path / "g.jsonl"
    good.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(3)))
    assert list(il.corpus(good).documents()) == ["doc 0", "doc 1", "doc 2"]
    c = il.corpus(good)
    assert il.maximization.Corpus.from_dict(c.to_dict()) == c


@pytest.mark.slow
def test_builtin_corpus_is_a_million_tokens_of_prose():
    c = il.corpus("builtin")
    docs = list(c.documents())
    assert len(docs) == 1189 and docs[0].startswith("In the beginning God created the heaven and the earth.")
    try:
        default = il.load()
    except il.InterpretLMError:
        pytest.skip("the default model is not installed")
    n = sum(len(x) for x in default.tokenizer(docs, add_special_tokens=False)["input_ids"])
    assert n >= 1_000_000


def test_command_line(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from interpretlm import cli

    lm = tiny_lm("llama")
    monkeypatch.setattr(il, "load", lambda name="smollm2-135m", **kw: lm)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(_corpus(n=20)))
    out, js = tmp_path / "u.html", tmp_path / "u.json"
    res = CliRunner().invoke(cli.app, ["maximize", "blocks.1.mlp.neurons", "3", "--corpus", str(corpus), "--k", "3",
                                       "--window", "8", "--out", str(out), "--json", str(js)])
    assert res.exit_code == 0, res.output
    r = il.Result.load(js)
    assert r.method == "mine" and r.unit_names == ["blocks.1.mlp.neurons[3]"] and r.top_values.shape == (1, 3)
    assert "Top-activating windows" in out.read_text()
    res = CliRunner().invoke(cli.app, ["maximize", "blocks.1.mlp.neurons", "3", "--method", "epo", "--steps", "2",
                                       "--length", "4", "--population", "3", "--swaps", "4"])
    assert res.exit_code == 0 and "best activation" in res.output, res.output
    res = CliRunner().invoke(cli.app, ["maximize", "blocks.1.mlp.neurons"])
    assert res.exit_code == 2 and "COMPONENT INDEX" in res.output
