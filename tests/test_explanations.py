"""Natural-language explanations against planted ground truth, exact references and bad input.

The planted model is a tiny Llama whose block-0 MLP neuron 5 is built by hand (as in
test_maximization.py): through dimension 0 of the embeddings its gate and up projections read the
digit tokens 0-9 only (``silu(x)·x`` with x = 1 after the norm's scaling on digits, 0 elsewhere), and
the attention writes nothing into that dimension, so the neuron fires on digits and nowhere else.
"""

from __future__ import annotations

import functools
import random
import warnings

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm.explanations import questions as Q
from interpretlm.explanations import scorers as S
from interpretlm.explanations.engine import PrefixScorer, chat_text, encode
from interpretlm.explanations.words import cited_words, delete_words, prompt_words
from interpretlm.testing import CORPUS, tiny_lm

NEURON, DEAD = 5, 7


def _token(lm, s: str) -> int:
    ids = lm.tokenizer(s, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (s, ids)
    return ids[0]


@pytest.fixture(scope="module")
def planted():
    return build_planted()


NAMES = (" Tom", " Anna", " Mary", " John", " Alice", "Alice", " Bob")


def build_planted(tokens: tuple[str, ...] = tuple(str(d) for d in range(10)), n_ctx: int = 256):
    """The tiny Llama with neuron 5 of block 0 firing on ``tokens`` only (the digits; :data:`NAMES`:
    the names of people) and neuron 7 never; ``n_ctx``: its context window."""
    lm = tiny_lm("llama", seed=0, max_position_embeddings=n_ctx)
    with torch.no_grad():
        emb = lm.model.get_input_embeddings().weight
        emb[:, :2] = 0.0
        for t in tokens:
            emb[_token(lm, t), 0] = 1.0
        block = lm.model.model.layers[0]
        block.self_attn.o_proj.weight[:2] = 0.0     # attention writes nothing into dims 0, 1
        block.post_attention_layernorm.weight.fill_(1.0)
        mlp = block.mlp
        for w in (mlp.gate_proj.weight, mlp.up_proj.weight):
            w[NEURON] = 0.0
            w[DEAD] = 0.0                           # gate = up = 0: never fires
        mlp.gate_proj.weight[NEURON, 0] = 1.0
        mlp.up_proj.weight[NEURON, 0] = 1.0
    return lm


def digit_corpus(n: int = 120, seed: int = 0) -> list[str]:
    """The tiny corpus with a digit inserted in every other text."""
    g = torch.Generator().manual_seed(seed)
    texts = []
    for i in range(n):
        words = CORPUS[i % len(CORPUS)].split(" ")
        if i % 2 == 0:
            at = int(torch.randint(len(words), (1,), generator=g))
            words.insert(at, str(int(torch.randint(10, (1,), generator=g))))
        texts.append(" ".join(words))
    return texts


# The balanced ground-truth corpus, in words of the tiny tokenizer's own corpus (each a token but "in"): each
# slot filled on its own coin, so what a wrong rule describes (food, digits, names, verbs) is as common
# where the planted neuron fires as where it does not
PEOPLE = ("Mary", "John", "Tom", "Anna", "Alice", "Bob")        # " Mary" ...: tokens of NAMES
NOT_PEOPLE = ("the cat", "the movie", "the city", "it", "the answer", "the capital")
VERBS = ("gave", "went", "sat", "was", "is", "are")
FOOD = ("the food", "a drink")
THINGS = ("a ball", "a book", "the keys", "the table", "a key", "the cabinet")
PLACES = ("to the store", "to the park", "to the school", "on the mat", "on the table", "in Paris", "in Rome",
          "in London", "in France", "in Italy", "in England")
ADJECTIVES = ("good", "great", "wonderful", "bad", "terrible", "tired")


def balanced_corpus(n: int = 120, seed: int = 0) -> list[str]:
    """Texts of two clauses ``<person> <verb> [adjective] <thing> <place>`` joined by ``because``, where
    each clause's person is a name (of :data:`NAMES`) or not, its thing food or not, an adjective given or
    not and a digit inserted or not, each on its own fair coin, in words of the tiny tokenizer's own corpus
    (one token each but "in"): what a wrong rule describes is independent of what the planted neurons fire
    on (in :func:`digit_corpus` nine sentences repeat, and the names come with ``went`` and ``gave a
    drink``).

    Example:
        >>> balanced_corpus(1)[0].startswith("I think ")
        True
    """
    rng = random.Random(seed)

    def clause() -> list[str]:
        who = rng.choice(PEOPLE if rng.random() < 0.5 else NOT_PEOPLE)
        thing = rng.choice(FOOD if rng.random() < 0.5 else THINGS).split(" ")
        if rng.random() < 0.5:
            thing.insert(1, rng.choice(ADJECTIVES))
        words = [*who.split(" "), rng.choice(VERBS), *thing, *rng.choice(PLACES).split(" ")]
        if rng.random() < 0.5:
            words.insert(rng.randrange(len(words) + 1), str(rng.randrange(10)))
        return words

    return [" ".join(["I", "think", *clause(), "because", *clause()]) + "." for _ in range(n)]


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


def test_balanced_accuracy_and_auroc_against_hand_counts():
    scores = np.array([2.0, 0.5, 1.0, -1.0, 0.7, -3.0])
    labels = np.array([1, 1, 1, 0, 0, 0], bool)
    # the 3 lowest are called negative: positive 0.5 is missed, negative 0.7 called positive
    acc, thr = S.balanced_accuracy(scores, labels)
    assert thr == pytest.approx(0.6) and acc == pytest.approx(2 / 3)
    assert S.balanced_accuracy(scores, labels, "zero")[0] == pytest.approx((1.0 + 2 / 3) / 2)
    # AUROC: 8 of the 9 (positive, negative) pairs are ordered right
    assert S.auroc(scores, labels) == pytest.approx(8 / 9)
    # unbalanced classes: the threshold splits at the negatives' share
    acc, _ = S.balanced_accuracy(np.array([5.0, 1.0, 2.0, 3.0]), np.array([1, 0, 0, 0], bool))
    assert acc == 1.0


def test_prefix_cache_rows_equal_plain_passes(planted):
    lm = planted
    prefix = encode(lm, chat_text(lm, [("user", "the cat sat on the mat")]))
    ps = PrefixScorer(lm, prefix, batch_size=2)
    rows = [encode(lm, t) for t in ["a b", "the dog ran off today", "7", "John gave a drink"]]
    got = ps.next_logprobs(rows)
    for i, r in enumerate(rows):
        torch.testing.assert_close(got[i], ps.full_pass(r), rtol=1e-4, atol=1e-4)
    assert ps.forward_calls == 1 + 2          # the prefix once, then two batches of two rows


def test_list_answers_read_greedily_equal_plain_passes():
    """delphi's list answer read on the cache, item by item, equals plain passes of the same
    teacher-forced list (the model's own greedy answers fed back between items)."""
    lm = tiny_lm("llama", seed=0, max_position_embeddings=2048)     # room for the instruction and a worked example
    yes, no, sep = S._list_tokens(lm)
    prefix, tail = S.split_prompt(lm, S.yes_no_prompt(lm, "digits", "detection", shots=1))
    ps = PrefixScorer(lm, prefix, batch_size=2)
    blocks = [S._examples(t) for t in (["the cat 5 sat", "John gave a drink"], ["7 of them", "a b", "the dog ran"],
                                       ["Paris is a city"])]
    rows = [encode(lm, b + tail) for b in blocks]
    got = ps.read_lists(rows, [2, 3, 1], yes, no, sep)
    assert [len(g) for g in got] == [2, 3, 1]
    for r, odds in zip(rows, got):
        answer: list[int] = []
        for o in odds:
            ref = ps.full_pass(r + answer)
            want = float(torch.logsumexp(ref[yes], -1) - torch.logsumexp(ref[no], -1))
            assert o == pytest.approx(want, rel=1e-4, abs=1e-4)
            answer += [yes[int(ref[yes].argmax())] if want > 0 else no[int(ref[no].argmax())]] + sep
    # the prefix once; per batch of two rows: the rows, then one pass per further item (2 and 3 items: 2 more;
    # 1 item: none)
    assert ps.forward_calls == 1 + (1 + 2) + 1
    # the scorer's texts come back in their own order after the seeded shuffle into prompts
    texts = ["a 1 b", "c d", "e 2", "f g", "h 3 i", "j k l"]
    odds, ps2, err = S.yes_no_scores(lm, "digits", "detection", texts, per_prompt=4, shots=1, seed=3)
    assert odds.shape == (6,) and err < 1e-4 and np.isfinite(odds).all()
    assert ps2.forward_calls == 1 + 1 + 3     # the prefix, both prompts in one batch, 3 more items of the first


def test_single_questions_read_on_the_cache_equal_plain_passes():
    """One window per question: each window's log-odds on the shared prompt's cache equal a plain pass
    of the whole conversation; fuzzing asks about the marked tokens only; the worked examples are
    balanced yes/no and never hold the scored texts."""
    lm = tiny_lm("llama", seed=0, max_position_embeddings=2048)
    texts = ["the cat <<5>> sat", "<<John>> gave a drink to <<Mary>>", "a <<b>>"]
    yes, no = Q.yes_no_ids(lm)
    for kind in ("detection", "fuzzing"):
        odds, cf, ps, err = Q.single_scores(lm, "digits", kind, texts, batch_size=2, shots=6, seed=1)
        assert odds.shape == (3,) and cf.shape == (len(S.CONTENT_FREE),) and err < 1e-4
        # the prompt once, then 6 rows (3 texts, 3 content-free inputs) in batches of two
        assert ps.forward_calls == 1 + 3 and ps.shots == 6
        full = Q.single_prompt(lm, "digits", kind, 6, seed=1)
        items = [Q._flat(t) if kind == "detection" else S.marked_words(t) for t in texts] + list(S.CONTENT_FREE)
        for item, got in zip(items, list(odds) + list(cf)):
            ref = torch.log_softmax(lm.model(torch.tensor([encode(lm, full.replace(S.HOLE, item))])).logits[0, -1], -1)
            want = float(torch.logsumexp(ref[yes], -1) - torch.logsumexp(ref[no], -1))
            assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert S.marked_words(texts[1]) == "John, Mary"
    answers = [y for _, _, y in Q.SINGLE_SHOTS["detection"]]
    assert sum(answers) * 2 == len(answers)
    # the seed reorders the worked examples: no fixed answer pattern precedes the question
    assert Q.single_prompt(lm, "digits", "detection", 6, seed=1) != Q.single_prompt(lm, "digits", "detection", 6, seed=2)


def test_decisions_are_the_stated_rules(planted):
    """Balanced accuracy is computed on the stated decisions, recounted here by hand: with word questions
    (the default) "the score above 0" (the explanation fits better than every reference description, the
    windows' scores recomputed from the words' scores); with whole-window questions
    "log-odds above the mean log-odds of the content-free inputs"."""
    kw = dict(corpus=digit_corpus(), k=12, window=16, n_explain=4, n_windows=6, explanation="digits",
              scorers=("detection", "fuzzing"), embedder=None, progress=False)
    unit = il.Unit("blocks.0.mlp.neurons", NEURON)
    runs = {None: _quiet(il.explain_unit, planted, unit, **kw)}
    for q in S.QUESTIONS:
        runs[q] = _quiet(il.explain_unit, planted, unit, question=q, **kw)
    for question, r in runs.items():
        e = r.explained[0]
        for name in ("detection", "fuzzing"):
            d = e["scores"][name]
            want_q = question or "words"
            assert d["question"] == want_q and d["per_prompt"] == 1
            assert d["calibration"] == ("reference" if want_q == "words" else "content_free")
            odds = np.array(d["log_odds"])
            labels = np.array([w["label"] for w in e["windows"]] if name == "detection" else e["fuzzing_labels"])
            if want_q == "window":
                assert d["threshold"] == pytest.approx(float(np.mean(d["content_free_log_odds"])))
            else:
                assert d["threshold"] == 0.0
                texts = e["fuzzing_texts"] if name == "fuzzing" else ["".join(x["tokens"]) for x in e["windows"]]
                per = [S._marks(t) if name == "fuzzing" else Q.window_words(Q._flat(t)) for t in texts]
                s, cost = Q.word_scores(planted, "digits", [w for ws in per for w in ws])
                i, want_odds = 0, []
                for ws in per:
                    chunk = s[i:i + len(ws)]
                    want_odds.append(chunk.max() if name == "detection" else chunk.mean())
                    i += len(ws)
                np.testing.assert_allclose(odds, want_odds, rtol=1e-6)
            pred = odds > d["threshold"]
            want = (pred[labels].mean() + (~pred[~labels]).mean()) / 2
            assert d["balanced_accuracy"] == pytest.approx(want)


def test_word_scores_equal_plain_passes_against_references(monkeypatch):
    """A word's score is the explanation's log-odds minus their mean over the background words, minus the
    best reference description's, computed the same way: recomputed here from plain passes of whole
    conversations (with shorter lists of background words and references, for time). Answers kept in a
    cache cost nothing the second time."""
    monkeypatch.setattr(Q, "BACKGROUND_WORDS", ("dog", "the", "run", "12", "Paris", ","))
    monkeypatch.setattr(Q, "REFERENCE_DESCRIPTIONS", ("verbs", "words for animals", "punctuation marks", "pronouns"))
    lm = tiny_lm("llama", seed=0, max_position_embeddings=1024)
    yes, no = Q.yes_no_ids(lm)

    @functools.lru_cache(maxsize=None)
    def plain(description, word):
        turns = []
        examples = list(Q.WORD_SHOTS)
        random.Random(0).shuffle(examples)
        for expl, item, y in examples:
            turns += [("user", Q.single_question("fuzzing", expl, item)), ("assistant", "Yes" if y else "No")]
        turns.append(("user", Q.single_question("fuzzing", description, word)))
        ids = encode(lm, chat_text(lm, turns, system=Q.SINGLE_SYSTEM["fuzzing"]))
        lp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0, -1], -1)
        return float(torch.logsumexp(lp[yes], -1) - torch.logsumexp(lp[no], -1))

    words, kept = ["7", "the", "7"], {}
    s, cost = Q.word_scores(lm, "verbs", words, batch_size=8, cache=kept)
    refs = Q.references_for("verbs")
    assert "verbs" not in refs and len(refs) == len(Q.REFERENCE_DESCRIPTIONS) - 1
    n = len({"7", "the"} | set(Q.BACKGROUND_WORDS))     # each word asked once, with the background words
    assert cost["words_asked"] == n and cost["passes"] == 1 + -(-n // 8)
    assert cost["reference_passes"] == len(refs) * (1 + -(-n // 8))

    def centred(description, word):
        return plain(description, word) - np.mean([plain(description, b) for b in Q.BACKGROUND_WORDS])

    for i in (0, 1):   # every word against every reference: a few hundred plain passes of the tiny model
        want = centred("verbs", words[i]) - max(centred(r, words[i]) for r in refs)
        assert s[i] == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert s[2] == s[0]
    again, cost2 = Q.word_scores(lm, "verbs", words, batch_size=8, cache=kept)
    np.testing.assert_allclose(again, s, rtol=1e-6)
    assert cost2["reference_passes"] == 0 and cost2["passes"] == 0


def test_simulation_reads_the_number_distribution():
    lm = build_planted(n_ctx=2048)     # room for Bills et al.'s prompt in a character-level tokenizer
    vals, ids = S.number_ids(lm)
    assert vals and len(vals) == len(ids)
    out = S.simulation(lm, "digits", [["a", " 5"], [" the", " cat"]], [[0.0, 10.0], [0.0, 0.0]], batch_size=4)
    sims = out["simulated"]
    assert [len(s) for s in sims] == [2, 2]
    assert all(min(vals) - 1e-5 <= x <= max(vals) + 1e-5 for s in sims for x in s)
    assert out["forward_passes"] == 2         # the prefix, then both windows in one batch
    assert out["shots"] == len(S.SIMULATION_SHOTS)
    # Bills et al.'s layout: worked records as token<TAB>activation lines, "unknown" before the revealed index
    text = S.simulation_prompt(lm, "digits")
    assert "Explanation of neuron 4 behavior: the main thing this neuron does is find digits" in text
    assert "The\tunknown\n old\tunknown\n dog\tunknown\n chased\tunknown\n a\t0\n cat\t9" in text
    assert text.endswith("Activations:\n<start>\n")


def test_planted_unit_windows_and_evidence(planted):
    r = _quiet(il.explain_unit, planted, il.Unit("blocks.0.mlp.neurons", NEURON), corpus=digit_corpus(), k=12,
               window=16, n_explain=4, n_windows=8, explanation="digits", scorers=("detection",), embedder=None,
               progress=False)
    e = r.explained[0]
    digits = {str(d) for d in range(10)}
    # the explainer's evidence marks exactly the digit tokens
    for w in e["evidence"]:
        fired = {t.strip() for t, v in zip(w["tokens"], w["values"]) if v > e["threshold"]}
        assert fired and fired <= digits
    acts = [w for w in e["windows"] if w["label"]]
    negs = [w for w in e["windows"] if not w["label"]]
    assert acts and negs and len(acts) >= len(negs)
    assert all(any(t.strip() in digits for t in w["tokens"]) for w in acts)
    assert not any(t.strip() in digits for w in negs for t in w["tokens"])
    assert r.models["scorer"] == planted.name and r.check.passed


def test_answers_kept_across_calls_cost_nothing_the_second_time(planted):
    """``answers=``: the word questions' answers outlive the call; a second call on the same windows
    asks the scorer nothing and scores the same."""
    kw = dict(corpus=digit_corpus(40), k=8, window=16, n_explain=4, n_windows=4, explanation="digits",
              scorers=("detection",), embedder=None, progress=False)
    kept: dict = {}
    first = _quiet(il.explain_unit, planted, il.Unit("blocks.0.mlp.neurons", NEURON), answers=kept, **kw)
    n = len(kept)
    second = _quiet(il.explain_unit, planted, il.Unit("blocks.0.mlp.neurons", NEURON), answers=kept, **kw)
    d1, d2 = first.explained[0]["scores"]["detection"], second.explained[0]["scores"]["detection"]
    assert n > len(Q.BACKGROUND_WORDS) and len(kept) == n
    assert d1["reference_passes"] > 0 and d2["reference_passes"] == 0 and d2["forward_passes"] == 0
    assert d2["log_odds"] == d1["log_odds"]


def test_never_firing_unit_is_flagged_not_a_crash(planted):
    r = _quiet(il.explain_unit, planted, il.Unit("blocks.0.mlp.neurons", DEAD), corpus=digit_corpus(40), k=4,
               window=8, embedder=None, progress=False)
    assert r.text == "" and r.flags == ["never_fires"] and r.explained[0]["scores"] == {}
    assert "never fires" in r.summary() or "never_fires" in r.summary()


def test_explainer_without_chat_template_is_told(planted):
    import copy

    plain = copy.copy(planted)
    plain.tokenizer = copy.copy(planted.tokenizer)
    plain.tokenizer.chat_template = None
    with pytest.warns(il.explanations.PlainPromptWarning):
        r = il.explain_unit(planted, il.Unit("blocks.0.mlp.neurons", NEURON), explainer=plain, corpus=digit_corpus(40), k=4,
                            window=8, n_explain=2, n_windows=2, scorers=("detection",), embedder=None,
                            max_new_tokens=6, progress=False)
    assert "plain_prompt" in r.flags and r.models["explainer_chat"] is False


def test_encoder_explainer_is_flagged():
    bert = tiny_lm("bert", seed=0)
    r = _quiet(il.explain_unit, bert, il.Unit("blocks.1.mlp.neurons", 0), corpus=CORPUS * 3, k=3, window=4,
               embedder=None, progress=False)
    assert "cannot_generate" in r.flags and r.text == ""


def test_no_cited_words_is_flagged(planted):
    r = _quiet(il.explain_in_words, planted, "the food was bad", il.Label({"a": " good", "b": " bad"}),
               explanation="Because of the general mood.", self_consistency=False, simulatability=False,
               progress=False)
    assert r.cited == [] and "no_cited_words" in r.flags and np.isnan(r.scores["comprehensiveness"])
    assert r.check.value is None


def test_bad_options_raise():
    lm = tiny_lm("llama")
    u = il.Unit("blocks.0.mlp.neurons", 1)
    for bad in ({"calibration": "mean"}, {"question": "sentence"}, {"calibration": "reference", "question": "window"}, {"scorers": ("detect",)}, {"act_fraction": 1.5}, {"explanation": " "},
                {"n_windows": 0}):
        with pytest.raises(il.InterpretLMError):
            il.explain_unit(lm, u, corpus=CORPUS * 3, k=3, window=4, **bad)
    with pytest.raises(il.InterpretLMError):
        il.explain_in_words(lm, "", il.Label({"a": " good", "b": " bad"}))


def test_word_helpers():
    text = "Review: the food was cold and the waiter rude.\nSentiment:"
    ws = prompt_words(text)
    words = [w for w, _, _ in ws]
    spans = [(s, e) for _, s, e in ws]
    frame = text.rfind("\n") + 1
    removable = [i for i, (s, e) in enumerate(spans) if e <= frame]
    cited, quoted = cited_words('I said negative because of "cold" and "rude".', words, removable)
    assert quoted and [words[i] for i in cited] == ["cold", "rude"]
    assert "Sentiment" not in [words[i] for i in cited_words("Sentiment matters", words, removable)[0]]
    gone = delete_words(text, spans, set(cited), frame_start=frame)
    assert "cold" not in gone and "rude" not in gone and gone.endswith("\nSentiment:")
    only = delete_words(text, spans, set(cited), keep_only=True, frame_start=frame)
    assert only == "cold rude\nSentiment:"


def test_eraser_citing_the_deciding_word_beats_a_random_word(default_lm):
    """On a review whose sentiment one word decides, citing that word beats citing another word."""
    prompt = "Review: the soup was terrible.\nSentiment:"
    label = il.Label({"positive": [" positive"], "negative": [" negative"]})
    right = _quiet(il.explain_in_words, default_lm, prompt, label, explanation='"terrible"', samples=20,
                   self_consistency=False, simulatability=False, progress=False)
    wrong = _quiet(il.explain_in_words, default_lm, prompt, label, explanation='"soup"', samples=20,
                   self_consistency=False, simulatability=False, progress=False)
    assert right.answer == "negative" and right.cited == ["terrible"] and wrong.cited == ["soup"]
    s, w = right.scores, wrong.scores
    # deleting "terrible" lowers p(negative) more than deleting a random word, by more than 2 standard errors
    assert s["comprehensiveness_gain"] > 2 * s["comprehensiveness_gain_se"] > 0
    assert s["comprehensiveness"] > w["comprehensiveness"]
    # keeping only "terrible" keeps p(negative) better than keeping only "soup"
    assert s["sufficiency"] < w["sufficiency"]
    assert right.check.passed
    # the attribution family's best ranker puts "terrible" above the other content words
    assert s["rank_auc"] > 0.5


def test_command_line(planted, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from interpretlm import cli

    monkeypatch.setattr(il, "load", lambda name="smollm2-135m", **kw: planted)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(digit_corpus(40)))
    out, js = tmp_path / "u.html", tmp_path / "u.json"
    res = CliRunner().invoke(cli.app, ["explain", "unit", "blocks.0.mlp.neurons", str(NEURON), "--corpus", str(corpus),
                                       "--k", "4", "--window", "8", "--n-explain", "2", "--n-windows", "2",
                                       "--explanation", "digits", "--embedder", "None", "--scorers", "detection",
                                       "--out", str(out), "--json", str(js)])
    assert res.exit_code == 0, res.output
    r = il.Result.load(js)
    assert r.method == "explain_unit" and r.text == "digits" and 0.0 <= r.scores["detection"] <= 1.0
    page = out.read_text()
    assert "Evidence the explainer read" in page and "detection: balanced accuracy" in page
    res = CliRunner().invoke(cli.app, ["explain", "in-words", "the food was bad", "--label", "a= good",
                                       "--label", "b= bad", "--explanation", '"bad"', "--samples", "3",
                                       "--self-consistency", "False", "--simulatability", "False"])
    assert res.exit_code == 0 and "cites 'bad'" in res.output, res.output


def test_demo_sections(llama):
    from interpretlm.demo import default_sections
    from interpretlm.explanations.demo import section, words_section

    assert section in default_sections() and words_section in default_sections()
    sec = _quiet(section, llama, ["The cat sat on the mat."])
    assert sec.title.startswith("Unit explanation in words") and sec.figures and sec.text
    sec = _quiet(words_section, llama, [])
    assert sec.title == "Self-explanation in words" and sec.text[0].startswith("answer ")


@pytest.mark.slow
def test_planted_unit_embedding_score_separates_the_true_rule(planted):
    """The bundled encoder ranks the digit windows by similarity to the true rule, not to wrong ones."""
    kw = dict(corpus=digit_corpus(), k=25, window=16, n_explain=5, n_windows=20, scorers=("embedding",),
              progress=False)
    unit = il.Unit("blocks.0.mlp.neurons", NEURON)
    true = _quiet(il.explain_unit, planted, unit, explanation="digits (numbers such as 3 or 7)", **kw)
    wrong = [_quiet(il.explain_unit, planted, unit, explanation=e, **kw).scores["embedding"]
             for e in ("names of people", "words about food")]
    assert true.scores["embedding"] >= 0.75 and max(wrong) <= 0.6, (true.scores, wrong)
    assert true.models["embedder"] == "minilm-l6"


def test_balanced_corpus_keeps_wrong_rules_apart_from_the_planted_classes():
    """What a wrong rule describes is as common in the clauses with a name as in those without, and
    every name is one token the planted name neuron reads."""
    lm = build_planted(NAMES)
    clauses = [c for t in balanced_corpus() for c in t.removeprefix("I think ").rstrip(".").split(" because ")]
    named = [any(w in PEOPLE for w in c.split()) for c in clauses]
    for words in (("food", "drink"), tuple("0123456789"), ADJECTIVES):
        has = [any(w in words for w in c.split()) for c in clauses]
        with_name = sum(h for h, n in zip(has, named) if n) / sum(named)
        without = sum(h for h, n in zip(has, named) if not n) / (len(named) - sum(named))
        assert abs(with_name - without) < 0.15, (words, with_name, without)
    for text in balanced_corpus():   # every name is one of the tokens the name neuron reads
        toks = [lm.tokenizer.decode([i]) for i in lm.tokenizer(text, add_special_tokens=False)["input_ids"]]
        assert sorted(t for t in toks if t in NAMES) == sorted(" " + w for w in text.split() if w in PEOPLE)
