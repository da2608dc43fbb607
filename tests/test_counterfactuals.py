"""Counterfactual explanations (il.counterfactuals): a planted trigger is what the first edit changes,
protected words never change, returned deletion sets are minimal (brute force), metrics equal hand
computations, the prefix-cached scorer equals plain passes, and bad inputs fail clearly."""

from __future__ import annotations

import itertools
import json
import math
import random
import warnings

import pytest
import torch
from click.testing import CliRunner

import interpretlm as il
from interpretlm import cli
from interpretlm.counterfactual import AlreadyFlippedError, NotFlippedWarning, NothingToEditError
from interpretlm.counterfactual.words import apply, diff, levenshtein, split
from interpretlm.testing import tiny_lm

FILL = [" Mary", " John", " Tom", " Anna", " Alice", " Bob", " store", " drink", " Paris", " Rome"]
TRIGGER = " France"
LABEL = il.Label({"good": [" good"], "bad": [" bad"]})
PROMPTS = ["Mary and John, John gave to", "The movie was good and the food was bad", "The cat sat on the mat"]


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def trigger_lm():
    """A 2-layer model trained (a few seconds) to say ' bad' after six names when ' France' is
    among them, ' good' otherwise: its label depends on one planted token."""
    lm = tiny_lm("llama", seed=0)
    tok = lm.tokenizer
    one = {w: tok(w, add_special_tokens=False)["input_ids"] for w in FILL + [TRIGGER, " good", " bad", " is"]}
    assert all(len(v) == 1 for v in one.values())
    rng = random.Random(0)
    torch.manual_seed(0)
    lm.model.requires_grad_(True).train()
    opt = torch.optim.Adam(lm.model.parameters(), lr=1e-2)
    for _ in range(50):
        xs, ys = [], []
        for _ in range(32):
            words = [rng.choice(FILL) for _ in range(6)]
            bad = rng.random() < 0.5
            if bad:
                words[rng.randrange(6)] = TRIGGER
            xs.append([one[w][0] for w in words + [" is"]])
            ys.append(one[" bad" if bad else " good"][0])
        logits = lm.model(input_ids=torch.tensor(xs), use_cache=False).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.model.eval().requires_grad_(False)
    return lm


def test_the_first_counterfactual_edits_the_planted_trigger(trigger_lm):
    prompt = "Mary Tom France Anna Bob Rome is"
    assert trigger_lm.score([prompt, prompt.replace("France", "Alice")], il.Contrast(" bad", " good")).tolist()[0] > 2
    cf = il.counterfactuals(trigger_lm, prompt, LABEL, keep=["is"], seed=0)
    assert cf.original_label == "bad" and cf.check.passed
    first = cf.edits[0]
    assert first["flipped"] and first["label"] == "good" and first["distance"] == 1
    trigger = cf.words.index("France")
    assert [op[:2] for op in first["ops"]] in ([["del", trigger]], [["sub", trigger]])
    # every returned edit touches the trigger: no other word decides the label
    assert all(any(op[1] == trigger and op[0] != "ins" for op in e["ops"]) for e in cf.edits)


def test_two_triggers_need_a_two_word_deletion_that_is_minimal(trigger_lm):
    prompt = "Mary France Tom Anna France Rome is"
    # fluency=0 ranks equally small flips by how far past the goal they go: the two triggers
    cf = il.counterfactuals(trigger_lm, prompt, LABEL, keep=["is"], kinds=["delete"], n=1, seed=0, fluency=0.0)
    e = cf.edits[0]
    assert e["flipped"] and e["minimal"] is True
    assert sorted(op[1] for op in e["ops"]) == [1, 4] and e["kind"] == "deletion"
    # ranked by fluency, the returned set may be another 2-word set, but it is still verified minimal
    f = il.counterfactuals(trigger_lm, prompt, LABEL, keep=["is"], kinds=["delete"], n=1, seed=0).edits[0]
    assert f["flipped"] and f["minimal"] is True and len(f["ops"]) == 2
    w = split(prompt)
    ops = [tuple(op) for op in f["ops"]]
    c = il.Contrast(" bad", " good")
    assert (trigger_lm.score([apply(w, [op])[0] for op in ops], c) > 0).all()  # neither deletion alone flips


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_deletion_sets_returned_minimal_are_minimal_by_brute_force(family):
    """Every strict subset of every returned deletion set, scored by lm.score (no cache): none flips."""
    lm = tiny_lm(family, seed=0)
    target = il.Contrast(" Mary", " John")
    multi = 0
    for prompt in PROMPTS:
        cf = quiet(il.counterfactuals, lm, prompt, target, kinds=["delete"], n=3, max_edits=3, beam=4, positions=6)
        w = split(prompt)
        sign = 1.0 if cf.original_value > 0 else -1.0
        for e in cf.edits:
            if not e["flipped"]:
                continue
            assert e["minimal"] is True
            ops = [tuple(op) for op in e["ops"]]
            assert sign * float(lm.score(e["text"], target)) < 0  # it does flip
            subsets = [c for k in range(1, len(ops)) for c in itertools.combinations(ops, k)]
            if subsets:
                multi += 1
                values = lm.score([apply(w, s)[0] for s in subsets], target)
                assert (sign * values >= 0).all(), (prompt, e["ops"])
    assert multi >= 1  # the check saw at least one set of several deletions


def test_protected_words_are_never_edited(llama):
    prompt = "Mary and John, John gave to"
    cf = quiet(il.counterfactuals, llama, prompt, il.Contrast(" Mary", " John"), keep=["John", "gave to"],
               n=5, max_edits=3, max_queries=400)
    w = split(prompt)
    protected = {i for i, x in enumerate(w.words) if x in ("John", "gave", "to")}
    assert protected == {2, 4, 5, 6} and [cf.editable[i] for i in sorted(protected)] == [False] * 4
    for e in cf.edits:
        assert not any(op[1] in protected and op[0] != "ins" for op in e["ops"]), e["ops"]
        assert e["text"].count("John") >= 2 and "gave to" in e["text"]


def test_seeded_runs_are_identical(llama):
    a = quiet(il.counterfactuals, llama, PROMPTS[0], il.Contrast(" Mary", " John"), seed=3)
    b = quiet(il.counterfactuals, llama, PROMPTS[0], il.Contrast(" Mary", " John"), seed=3)
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d["diagnostics"].pop("seconds")
    assert json.dumps(da, sort_keys=True, default=str) == json.dumps(db, sort_keys=True, default=str)


def _perplexity(lm, text):
    batch = lm.tokenize(text)
    logits = lm.forward(batch).logits[0].float()
    ids = batch.input_ids[0]
    logp = torch.log_softmax(logits[:-1], -1)[torch.arange(len(ids) - 1), ids[1:]]
    return float(torch.exp(-logp.mean()))


def test_metrics_equal_hand_computations(llama):
    target = il.Contrast(" Mary", " John")
    cf = quiet(il.counterfactuals, llama, PROMPTS[1], target, n=4)
    orig = list(split(PROMPTS[1]).words)
    assert len(cf.edits) >= 2
    for e in cf.edits:
        words = split(e["text"]).words
        assert list(words) == e["words"]
        assert e["distance"] == levenshtein(orig, words)
        assert e["minimality"] == pytest.approx(e["distance"] / len(orig))
        assert e["value"] == pytest.approx(float(llama.score(e["text"], target)), rel=1e-4, abs=1e-5)
        assert e["perplexity"] == pytest.approx(_perplexity(llama, e["text"]), rel=1e-4)
        assert e["delta_perplexity"] == pytest.approx(_perplexity(llama, e["text"]) - _perplexity(llama, PROMPTS[1]),
                                                      rel=1e-4, abs=1e-4)
        assert [x for op, a, b in e["diff"] for x in ([a] if op != "+" else [])] == orig  # the diff covers the original
    flipped = [e for e in cf.edits if e["flipped"]]
    assert cf.flip_rate == len(flipped) / len(cf.edits) == cf.diagnostics["flip_rate"]
    assert cf.minimality == pytest.approx(sum(e["distance"] for e in flipped) / len(orig) / len(flipped))
    pairs = list(itertools.combinations([e["words"] for e in cf.edits], 2))
    assert cf.diversity == pytest.approx(sum(levenshtein(a, b) for a, b in pairs) / len(pairs))
    assert cf.queries == cf.diagnostics["queries"] >= max(e["queries"] for e in cf.edits)
    # edits come smallest first, after those that read well (perplexity at most e^FLUENT_RISE times the prompt's)
    from interpretlm.counterfactual.edit_sets import FLUENT_RISE

    key = [(math.log(e["perplexity"] / cf.original_perplexity) > FLUENT_RISE + 1e-6, e["distance"]) for e in cf.edits]
    assert key == sorted(key)


def test_word_helpers_by_hand():
    assert levenshtein("a b c".split(), "a c d".split()) == 2
    assert diff(["x", "y"], ["y"]) == [["-", "x", ""], ["=", "y", "y"]]
    w = split("Review: great, really.")
    assert w.words == ("Review", ":", "great", ",", "really", ".") and w.text == "Review: great, really."
    assert apply(w, [("del", 2), ("del", 3)])[0] == "Review: really."
    assert apply(w, [("sub", 3, "and")])[0] == "Review: great and really."


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "phi3", "gemma3"])
def test_the_prefix_cache_gives_the_plain_passes_scores(family):
    lm = tiny_lm(family, seed=0)
    for target in (il.Contrast(" Mary", " John"), il.Label({"m": [" Mary"], "j": [" John", " Tom"]})):
        # the first word kept, so that every chunk of candidates shares a prefix to cache
        a = quiet(il.counterfactuals, lm, PROMPTS[0], target, reuse_cache=True, n=3, keep=["Mary"])
        b = quiet(il.counterfactuals, lm, PROMPTS[0], target, reuse_cache=False, n=3, keep=["Mary"])
        assert [e["text"] for e in a.edits] == [e["text"] for e in b.edits]
        for x, y in zip(a.edits, b.edits):
            assert x["value"] == pytest.approx(y["value"], rel=1e-4, abs=1e-5)
        assert a.diagnostics["queries"] == b.diagnostics["queries"]
        assert a.diagnostics["tokens_run"] < b.diagnostics["tokens_run"] == b.diagnostics["tokens_full"]


def test_threshold_targets_and_already_flipped(llama):
    t = il.NextToken(" Mary")
    value = float(llama.score(PROMPTS[0], t))
    with pytest.raises(il.TargetError, match="threshold="):
        il.counterfactuals(llama, PROMPTS[0], t)
    with pytest.raises(AlreadyFlippedError, match="already below"):
        il.counterfactuals(llama, PROMPTS[0], t, threshold=value + 1.0, direction="down")
    cf = quiet(il.counterfactuals, llama, PROMPTS[0], t, threshold=value - 0.5, direction="down")
    assert cf.goal == "threshold" and cf.direction == "down"
    for e in cf.edits:
        assert e["flipped"] == (e["value"] < value - 0.5)


def test_bad_inputs_fail_clearly_or_are_flagged(llama):
    target = il.Contrast(" Mary", " John")
    with pytest.raises(NothingToEditError, match="No word"):
        il.counterfactuals(llama, "Mary and John", target, keep=["Mary and John"])
    with pytest.raises(il.OptionError, match="max_queries"):
        il.counterfactuals(llama, PROMPTS[0], target, max_queries=1)
    with pytest.raises(il.TargetError, match="tokens"):
        il.counterfactuals(llama, PROMPTS[0], il.Label({"a": [" Mary went"], "b": [" John"]}))
    with pytest.raises(il.TargetError, match="two labels"):
        il.counterfactuals(llama, PROMPTS[0], il.Label({"a": [" Mary"]}))
    with pytest.raises(il.InterpretLMError):
        il.counterfactuals(llama, "   ", target)
    one = quiet(il.counterfactuals, llama, "Mary", target)  # one word: flipped or flagged, never a crash
    assert len(one.edits) >= 1 and all(e["text"].strip() for e in one.edits)
    assert all(e["flipped"] for e in one.edits) or one.warnings


def test_a_budget_too_small_returns_the_best_edit_flagged(trigger_lm):
    # two triggers: no single deletion flips, and 3 queries leave room for two single deletions only
    with pytest.warns(NotFlippedWarning, match="budget"):
        cf = il.counterfactuals(trigger_lm, "Mary France Tom Anna France Rome is", LABEL, keep=["is"],
                                kinds=["delete"], max_queries=3)
    assert cf.edits[0]["flipped"] is False and cf.diagnostics["budget_exhausted"] and cf.check.passed is False
    assert cf.queries == 3 and len(cf.edits[0]["ops"]) == 1 and "No edit flipped" in cf.to_html()
    assert any(w["category"] == "NotFlippedWarning" for w in cf.warnings)


def test_html_shows_the_diffs_escaped(llama):
    cf = quiet(il.counterfactuals, llama, "<b>Mary</b> and John, John gave to", il.Contrast(" Mary", " John"))
    page = cf.to_html()
    assert "<b>Mary" not in page and "&lt;" in page and "Counterfactual edits" in page
    figs = cf.figures()
    shading = figs["edits"].rows[1][1]
    ops = {op for op, *_ in cf.edits[0]["diff"]}
    assert (1.0 in shading.values) == bool(ops & {"+", "~"}) and (-1.0 in shading.values) == bool(ops & {"-", "~"})


def test_the_command_line_takes_label_targets(llama, monkeypatch, tmp_path):
    monkeypatch.setattr(il, "load", lambda name="smollm2-135m", **kw: llama)
    out = tmp_path / "cf.json"
    res = CliRunner().invoke(cli.app, ["counterfactual", "Mary and John, John gave to", "--label", "m= Mary",
                                       "--label", "j= John", "--n", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = il.Result.load(out)
    assert r.target == {"kind": "Label", "verbalizers": {"m": [" Mary"], "j": [" John"]}, "label": None}
    assert r.options["n"] == 2 and "check: flip_rate" in res.output
    bad = CliRunner().invoke(cli.app, ["counterfactuals", "Mary and John", "--label", "nothing"])
    assert bad.exit_code != 0 and "NAME=TOKEN" in bad.output


def test_demo_section_and_evaluation_set(llama):
    from interpretlm.counterfactual.demo_section import counterfactuals_section
    from interpretlm.counterfactual.evaluation import evaluation_set
    from interpretlm.demo import default_sections

    assert counterfactuals_section in default_sections()
    sec = quiet(counterfactuals_section, llama, [])
    assert sec.figures[0].title == "Counterfactual edits" and "predicted" in sec.text[0]
    examples = evaluation_set()
    assert len(examples) == 220 and len({e.text for e in examples}) == 220
    counts = {}
    for e in examples:
        counts[e.task, e.label] = counts.get((e.task, e.label), 0) + 1
        assert e.prompt.endswith(("\nSentiment:", "\nTopic:")) and e.target.label == e.label
    assert counts == {("sentiment", "positive"): 60, ("sentiment", "negative"): 60, ("topic", "sports"): 25,
                      ("topic", "business"): 25, ("topic", "science"): 25, ("topic", "food"): 25}


def test_the_scorer_perplexity_equals_a_plain_pass_cached_or_not(llama):
    from interpretlm.counterfactual.scoring import Scorer, as_rows, make_goal, orient

    texts = ["Mary and John, John gave to", "Mary and Tom, John gave a", "Mary and John, Anna"]
    rows = as_rows(llama.tokenize(texts))
    for cached in (True, False):
        goal = make_goal(il.Contrast(" Mary", " John").bind(llama), None, "auto")
        goal = orient(goal, 1.0, None, "auto")
        got = Scorer(llama, goal, reuse_cache=cached, fluency=True).rows(rows)
        for t, lp in zip(texts, got.log_ppl.tolist()):
            assert math.exp(lp) == pytest.approx(_perplexity(llama, t), rel=1e-4)
    off = Scorer(llama, goal, fluency=False).rows(rows)
    assert off.log_ppl is None and torch.allclose(off.goal, got.goal, rtol=1e-4, atol=1e-5)


def test_fluency_keeps_words_of_their_kind_and_ranks_by_perplexity(llama):
    from interpretlm.counterfactual import edit_sets

    prompt = "The movie was good , and the food was bad ."
    target = il.Contrast(" good", " bad")
    w = split(prompt)
    for fluency in (0.0, 1.0):
        cf = quiet(il.counterfactuals, llama, prompt, target, n=6, max_edits=2, fluency=fluency)
        for e in cf.edits:
            for op in e["ops"]:
                if op[0] == "sub" and fluency > 0:  # letters for letters, punctuation for punctuation
                    assert op[2][:1].isalnum() == w.words[op[1]][:1].isalnum(), op
        if fluency > 0:
            # equally small flips come most fluent first
            for a, b in zip(cf.edits, cf.edits[1:]):
                if a["distance"] == b["distance"] and a["flipped"] and b["flipped"]:
                    assert a["perplexity"] <= b["perplexity"] + 1e-9
    with pytest.raises(il.OptionError, match="fluency"):
        il.counterfactuals(llama, prompt, target, fluency=-1.0)
    assert edit_sets._beam_key((0.5, 0, None, 1, 3.0), 2.0, 2.0) == pytest.approx(0.5 + edit_sets.BEAM_FLUENCY * 2.0)
    assert edit_sets._beam_key((0.5, 0, None, 1, 1.0), 2.0, 2.0) == pytest.approx(0.5)  # reading better earns nothing


def test_a_masked_lm_proposes_its_fill_ins(llama):
    from interpretlm.counterfactual.candidates import mlm_candidates, word_like

    bert = tiny_lm("bert", seed=0)
    prompt = "the cat sat on the mat"
    w = split(prompt)
    got = mlm_candidates(bert, w, [1, 2], 3, True)
    words, good = word_like(bert.tokenizer, bert.vocab_size, False)
    for i in (1, 2):  # by hand: mask the word, read the logits at the mask, keep whole words
        masked = " ".join("[MASK]" if j == i else x for j, x in enumerate(w.words))
        o = bert.forward(masked)
        at = int((o.batch.input_ids[0] == bert.tokenizer.mask_token_id).nonzero()[0, 0])
        order = o.logits[0, at].float().argsort(descending=True).tolist()
        want = []
        for v in order:
            if good[v] and words[v][:1].isalnum() and words[v].lower() != w.words[i] and words[v] not in want:
                want.append(words[v])
            if len(want) == 3:
                break
        assert got[i] == want
    cf = quiet(il.counterfactuals, llama, prompt, il.Contrast(" Mary", " John"), mlm=bert, kinds=["substitute"])
    assert cf.diagnostics["mlm_forward_passes"] == 1 and cf.options["mlm"]
    with pytest.raises(il.OptionError, match="masked language model"):
        il.counterfactuals(llama, prompt, il.Contrast(" Mary", " John"), mlm=llama)


def test_fluency_under_a_second_model_equals_its_perplexity(llama):
    second = tiny_lm("gpt2", seed=1)
    prompt = PROMPTS[1]
    cf = quiet(il.counterfactuals, llama, prompt, il.Contrast(" Mary", " John"), n=3, fluency_model=second)
    assert cf.fluency_model == second.name
    assert cf.original_perplexity_second == pytest.approx(_perplexity(second, prompt), rel=1e-4)
    for e in cf.edits:
        assert e["perplexity_second"] == pytest.approx(_perplexity(second, e["text"]), rel=1e-4)
        assert e["delta_perplexity_second"] == pytest.approx(e["perplexity_second"] - cf.original_perplexity_second,
                                                             rel=1e-4, abs=1e-4)
    flipped = [e["delta_perplexity_second"] for e in cf.edits if e["flipped"]]
    assert flipped and cf.fluency_second == pytest.approx(sum(flipped) / len(flipped))
    assert cf.diagnostics["fluency_second"] == pytest.approx(cf.fluency_second)
    with pytest.raises(il.OptionError, match="causal"):
        il.counterfactuals(llama, prompt, il.Contrast(" Mary", " John"), fluency_model=tiny_lm("bert"))


def _trigger_edit(trigger_lm, search):
    """The beam's and ``search``'s counterfactuals of the planted trigger prompt, and ``search``'s first
    edit, checked to change the trigger word ``France`` alone (deleted or substituted)."""
    prompt = "Mary Tom France Anna Bob Rome is"
    beam = il.counterfactuals(trigger_lm, prompt, LABEL, keep=["is"], n=1, seed=0)
    cf = il.counterfactuals(trigger_lm, prompt, LABEL, keep=["is"], n=1, seed=0, search=search)
    e = cf.edits[0]
    assert e["flipped"] and e["distance"] == 1 and e["ops"][0][1] == cf.words.index("France")
    assert e["ops"][0][0] != "ins"
    return beam, cf, e


def test_the_guided_search_finds_the_trigger_with_few_queries(trigger_lm):
    """search="guided" scores the candidates of lowest first-order predicted g first: the planted
    trigger's edit comes in the first round, at a fraction of the beam's queries."""
    beam, guided, e = _trigger_edit(trigger_lm, "guided")
    assert guided.queries < beam.queries / 2
    # one gradient pass on the prompt (ranking, HotFlip and the estimates), no other backward pass
    assert guided.diagnostics["backward_passes"] == 1 == beam.diagnostics["backward_passes"]
    assert guided.diagnostics["forward_passes"] < beam.diagnostics["forward_passes"]


@pytest.mark.parametrize("search", ["guided", "frugal"])
def test_deletion_sets_are_minimal_by_brute_force_and_seeded(trigger_lm, search):
    prompt = "Mary France Tom Anna France Rome is"
    cf = il.counterfactuals(trigger_lm, prompt, LABEL, keep=["is"], kinds=["delete"], n=1, seed=0, search=search)
    e = cf.edits[0]
    assert e["flipped"] and e["minimal"] is True and len(e["ops"]) == 2
    w = split(prompt)
    c = il.Contrast(" bad", " good")
    assert (trigger_lm.score([apply(w, [tuple(op)])[0] for op in e["ops"]], c) > 0).all()  # neither alone flips
    again = il.counterfactuals(trigger_lm, prompt, LABEL, keep=["is"], kinds=["delete"], n=1, seed=0,
                               search=search)
    assert again.edits == cf.edits and again.queries == cf.queries


def test_the_fused_prompt_pass_ranks_as_input_x_gradient(llama):
    """The search's own gradient × input of g equals il.attribute's input_x_gradient of the same goal,
    and the beam's ranking is the same through either route."""
    from interpretlm.targets import FunctionTarget

    target = il.Contrast(" Mary", " John")
    cf = il.counterfactuals(llama, PROMPTS[1], target, n=1, seed=0)
    slow = il.counterfactuals(llama, PROMPTS[1], target, n=1, seed=0, ranking="saliency")
    assert cf.original_value == pytest.approx(slow.original_value, rel=1e-4)
    sign = 1.0 if cf.original_value > 0 else -1.0
    a, b = (llama.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in (" Mary", " John"))

    def g(logits, batch):
        last = logits[torch.arange(logits.shape[0]), batch.last_index].float()
        return sign * (last[:, a] - last[:, b])

    att = il.attribute(llama, PROMPTS[1], FunctionTarget(g, name="g"), method="input_x_gradient")
    w = split(PROMPTS[1])
    by_token = dict(zip([p for pos in att.feature_tokens for p in pos], att.scores.tolist()))
    batch = llama.tokenize(PROMPTS[1])
    words = [sum(by_token.get(j, 0.0) for j, (a, b) in enumerate(batch.offsets[0]) if b > a and a < e and b > s)
             for s, e in w.spans]
    assert cf.word_scores == pytest.approx(words, rel=1e-3, abs=1e-5)


def test_the_frugal_search_finds_the_trigger_with_few_queries(trigger_lm):
    """search="frugal" ranks every edit by the label evidence of the model's own label-conditioned
    distributions and scores a handful: the trigger's edit, at a fraction of the beam's queries, counted
    as the prompt (1) + one row per label cue (2) + the rows it scored, one a round by default: the
    search stops at the first flip, so the flipping edit's count is the whole search's."""
    beam, frugal, e = _trigger_edit(trigger_lm, "frugal")
    assert frugal.queries <= beam.queries / 4
    assert e["queries"] == frugal.queries >= 4
    assert frugal.diagnostics["backward_passes"] == 1


def test_conditioned_logprobs_equal_plain_passes_of_cue_and_prompt(llama):
    """Row c of the label-conditioned pass is the next-token log-distribution of cue_c + prompt read at
    the prompt's positions (checked against one plain pass per text), one query per cue."""
    from interpretlm.counterfactual.frugal import conditioned_logprobs, label_cues
    from interpretlm.counterfactual.scoring import Scorer, make_goal

    prompt = "Review: The movie was good.\nSentiment:"
    target = LABEL.bind(llama)
    goal = make_goal(target, None, "auto")
    cues = label_cues(llama, goal, prompt)
    assert [c for _, c in cues] == ["Sentiment: good\n", "Sentiment: bad\n"]
    scorer = Scorer(llama, goal)
    ids = llama.tokenize(prompt).input_ids[0]
    cond = conditioned_logprobs(llama, scorer, ids, [c for _, c in cues])
    assert scorer.queries == 2 and cond.shape == (2, len(ids), llama.vocab_size)
    for row, (_, cue) in enumerate(cues):
        pre = llama.tokenizer(cue, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = llama.model(input_ids=torch.tensor([pre + ids.tolist()])).logits[0, len(pre):].float()
        torch.testing.assert_close(cond[row], torch.log_softmax(logits, -1), rtol=1e-4, atol=1e-4)
    # a contrast's two tokens are its labels; a threshold target has none (first-order ranking instead)
    assert [c for _, c in label_cues(llama, make_goal(il.Contrast(" Mary", " John").bind(llama), None, "auto"),
                                     "Mary and John went")] == ["Mary\n", "John\n"]
    nt = il.NextToken(" Mary").bind(llama)
    assert label_cues(llama, make_goal(nt, -3.0, "auto"), prompt) == []


def test_frugal_operation_scores_equal_the_label_evidence_by_hand(llama):
    """score(sub x -> v) = max over other labels o of e_o(v) - e_o(x) + 0.1 fluency log p_o(v), score(del x) =
    max_o -e_o(x), with e_o(u) = log p(u | cue_o, prefix) - log p(u | cue_current, prefix)."""
    from interpretlm.counterfactual.candidates import prompt_pass
    from interpretlm.counterfactual.frugal import conditioned_logprobs, label_cues, label_words, rank_operations
    from interpretlm.counterfactual.scoring import Scorer, make_goal, orient
    from interpretlm.counterfactual.search import _editable

    prompt = "Review: The movie was good and fun.\nSentiment:"
    target = LABEL.bind(llama)
    goal = make_goal(target, None, "auto")
    w = split(prompt)
    editable, word_tokens, batch = _editable(llama, prompt, w, ["Review:", "Sentiment:"])
    pp = prompt_pass(llama, goal, target, batch, lambda v, p: orient(goal, v, p, "auto"))
    cues = label_cues(llama, goal, prompt)
    cond = conditioned_logprobs(llama, Scorer(llama, goal), pp.ids, [c for _, c in cues])
    current = goal.label_index
    ranked = [i for i in range(len(w)) if editable[i]]
    tokens: dict = {}
    words = label_words(llama, goal, current)
    assert words == [list(LABEL.verbalizers)[1 - current]]
    ops = rank_operations(llama, pp, w, word_tokens, ranked, ("delete", "substitute", "insert"), cond, current, 1.0,
                          tokens, labels=words)
    assert [s for s, _ in ops] == sorted((s for s, _ in ops), reverse=True)
    # the other label's word is a substitute for every editable word (scored like the rest below)
    with_label = {op[1] for _, op in ops if op[0] == "sub" and op[2] == words[0]}
    assert with_label == {i for i in ranked if w.words[i][0].isalnum()}
    assert {op[0] for _, op in ops} == {"del", "sub", "ins"}
    other = 1 - current
    checked = 0
    for score, op in ops:
        p = word_tokens[op[1]][0]
        x = int(pp.ids[p])
        ev = cond[other, p - 1] - cond[current, p - 1]
        if op[0] == "del":
            assert score == pytest.approx(float(-ev[x]), rel=1e-4, abs=1e-5)
        else:
            v = tokens[(op[1], op[2])]
            assert llama.tokenizer.decode([v]).strip() == op[2]
            hand = float(ev[v] - (ev[x] if op[0] == "sub" else 0.0)) + 0.1 * float(cond[other, p - 1, v])
            assert score == pytest.approx(hand, rel=1e-4, abs=1e-5)
        checked += 1
    assert checked == len(ops) > 10


def test_frugal_label_substitutes_switch(llama, monkeypatch):
    """``label_substitutes=False`` leaves the other label's word out of the frugal ranking's candidates,
    so no edit uses it; a non-bool is an error."""
    import interpretlm.counterfactual.search as search_mod

    seen = []
    real = search_mod.rank_operations

    def spy(*a, **kw):
        seen.append(list(kw["labels"]))
        out = real(*a, **kw)
        seen.append({op[2] for _, op in out if op[0] != "del"})
        return out

    monkeypatch.setattr(search_mod, "rank_operations", spy)
    prompt = "Review: The movie was good and fun.\nSentiment:"
    edits = {}
    for on in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edits[on] = il.counterfactuals(llama, prompt, LABEL, n=1, seed=0, search="frugal", max_queries=12,
                                           label_substitutes=on, keep=["Review:", "Sentiment:"]).edits
    word = seen[0]
    assert len(word) == 1 and word[0] in ("good", "bad") and word[0] in seen[1]
    assert seen[2] == [] and word[0] not in seen[3]
    assert not any(op[0] != "del" and op[2] == word[0] for e in edits[False] for op in e["ops"])
    with pytest.raises(il.OptionError, match="label_substitutes"):
        il.counterfactuals(llama, prompt, LABEL, search="frugal", label_substitutes="no")


def test_frugal_keeps_a_small_budget_and_protected_words(trigger_lm):
    prompt = "Mary France Tom Anna France Rome is"
    # protected words stay, and a budget of 4 queries is kept (the prompt, then no room for two cues and a row:
    # the search falls back to first-order ranking) with the closest edit flagged
    with pytest.warns(NotFlippedWarning):
        small = il.counterfactuals(trigger_lm, prompt, LABEL, keep=["is", "France"], n=1, seed=0, search="frugal",
                                   max_queries=4)
    assert small.queries <= 4 and not small.edits[0]["flipped"]
    assert all(op[1] not in (1, 4) for op in small.edits[0]["ops"])
