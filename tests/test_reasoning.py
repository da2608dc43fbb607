"""Chain-of-thought family: extraction, KV-cache reuse, planted mechanisms through a scripted model, bad inputs.

The scripted model is an ``nn.Module`` put in place of a tiny Llama's network: it keeps its
"keys" (the token ids it has seen) in a real Transformers ``DynamicCache`` and reads only the
positions the attention mask lets it see, so it goes through exactly the code path of a real
model (cache sharing, batch expansion, masks hiding cut sentences, position ids). Its
answer is planted: it prefers the digit ``7`` when a key token is visible, else ``6``; it can
also generate a fixed script that follows a suggested answer without mentioning it.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from transformers import DynamicCache

import interpretlm as il
from interpretlm.errors import ContextLengthError, InterpretLMError
from interpretlm.reasoning.answers import extract, split_answer
from interpretlm.reasoning.engine import Body, Forcer, encode
from interpretlm.testing import tiny_lm


class Scripted(nn.Module):
    """Logits from rules on the visible token ids; see the module docstring."""

    def __init__(self, lm, key: int | None, gen_offset: int, script: dict | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))  # the fingerprint hashes parameters
        self.config = lm.model.config  # the tiny Llama's (no sliding window)
        self.V, self.key, self.gen_offset, self.script = lm.vocab_size, key, gen_offset, script or {}
        self.six, self.seven = encode(lm, "6")[0], encode(lm, "7")[0]
        self.digits = {encode(lm, str(d))[0]: str(d) for d in range(10)}
        self.calls = 0

    def forward(self, input_ids, cache=None, attention_mask=None, position_ids=None, use_cache=True, **kw):
        self.calls += 1
        cache = cache if cache is not None else DynamicCache()
        k = input_ids.float()[:, None, :, None]
        keys, _ = cache.update(k, k, 0)
        seen = keys[:, 0, :, 0].long()  # [batch, L]
        B, T = input_ids.shape
        L = seen.shape[1]
        mask = attention_mask if attention_mask is not None else torch.ones(B, L, dtype=torch.long)
        logits = torch.zeros(B, T, self.V)
        for b in range(B):
            for t in range(T):
                upto = L - T + t + 1
                vis = seen[b, :upto][mask[b, :upto] == 1].tolist()
                planted = self.seven if (self.key is not None and self.key in vis) else self.six
                logits[b, t, planted] += 5.0
                step = self._script_step(vis)
                if step is not None:
                    logits[b, t, step] += 20.0
        out = type("Out", (), {})()
        out.logits, out.cache = logits, cache
        return out

    def _script_step(self, vis):
        if "suffix" in self.script:  # emit the script from wherever the context stops (rollouts)
            ids = self.script["suffix"](vis)
            j = max(j for j in range(len(ids) + 1) if j == 0 or vis[-j:] == ids[:j])
            return ids[j] if j < len(ids) else 2
        if not self.script or 1 not in vis:
            return None
        start = len(vis) - 1 - vis[::-1].index(1) + self.gen_offset  # after "<|im_start|>assistant\n"
        r = len(vis) - start
        if r < 0:
            return None
        hinted = _contains(vis[:start], self.script["marker"])
        ids = self.script["hinted"](vis[:start]) if hinted else self.script["plain"]
        return ids[r] if r < len(ids) else 2  # then <|im_end|>


def _contains(seq, sub):
    return any(seq[i: i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def scripted_lm(key_text: str | None = None, script: bool = False):
    lm = tiny_lm("llama", seed=0)
    tail = lm.tokenize("x", chat=True).input_ids[0].tolist()
    gen_offset = len(tail) - (len(tail) - 1 - tail[::-1].index(1))
    key = None
    if key_text is not None:
        key = encode(lm, key_text)[0]
    spec = None
    if script:
        digits = {encode(lm, str(d))[0]: str(d) for d in range(10)}
        body = "We count them. So it is clear."

        def hinted(prompt_ids):
            # follow the suggestion: the last digit named in the prompt (the hint comes after the choices)
            x = [digits[t] for t in prompt_ids if t in digits][-1]
            return encode(lm, f"{body}\nAnswer: {x}")
        spec = {"marker": encode(lm, " answer is"), "plain": encode(lm, f"{body}\nAnswer: 7"), "hinted": hinted}
    lm.model = Scripted(lm, key, gen_offset, spec)
    return lm


Q = il.reasoning.Question("How many apples are in the box?", choices=["6", "7"], answer="7")
# sentence 1 holds the key token "5" (no other digit and no operator word appears in the reasoning)
TEXT = "We look at the box. The box holds 5 apples. We count them again. Then we stop.\nAnswer: 7"


# ------------------------------------------------------------------ extraction and sentences

def test_extraction_paths():
    q = il.reasoning.Question("Pick", choices=["red", "green", "blue"])
    assert extract(q, "It is red.\nAnswer: green") == ("green", "answer_line")
    assert extract(q, "It is red.\n**Final answer: Green.**") == ("green", "answer_line")
    assert extract(q, "First red, then I think blue is right.") == ("blue", "regex")
    assert extract(q, "Answer: B") == ("green", "answer_line")  # a letter names the choice in order
    assert extract(q, "no idea at all") == (None, "none")
    assert extract(q, "Red is warm, so the answer is blue.") == ("blue", "regex")  # a stated answer, mid-sentence
    # a stated answer that is no choice: a choice named before (the choices echoed) is not taken for it
    assert extract(q, "Choices red, green, blue.\nAnswer: purple") == (None, "none")
    open_q = il.reasoning.Question("3 + 4?", answer="7")
    assert extract(open_q, "3 plus 4 gives 7 in total") == ("7", "regex")
    assert split_answer("a. b.\nAnswer: 7") == ("a. b.", "7")
    assert il.reasoning.sentence_spans("One. Two!\nThree") == [(0, 4), (5, 9), (10, 15)]


def test_no_cot_is_asked_cloze_style_and_the_listed_variant_is_kept():
    from interpretlm.reasoning.engine import prompt_ids, user_message

    lm = tiny_lm("llama", seed=0)
    q = il.reasoning.Question("How many legs has a cat?", choices=["2", "4", "6"], answer="4")
    run = il.chain_of_thought(lm, q, samples=1, max_new_tokens=4)
    cloze, _, _ = prompt_ids(lm, q.text, True)  # the question alone: no choices listed, no CoT instruction
    listed, _, _ = prompt_ids(lm, user_message(q), True)
    ref = Forcer(lm, cloze, [], list(q.choices)).score_naive([(0, [])])[0]
    assert run.no_cot_logprobs == pytest.approx(ref.tolist(), rel=1e-4)
    ref_listed = Forcer(lm, listed, [], list(q.choices)).score_naive([(0, [])])[0]
    d = run.diagnostics
    assert d["accuracy_no_cot"] == float(q.choices[int(ref.argmax())] == "4")
    assert d["accuracy_no_cot_listed"] == float(q.choices[int(ref_listed.argmax())] == "4")
    assert d["first_choice_no_cot_listed"] == float(int(ref_listed.argmax()) == 0)


def test_no_cot_is_standard_few_shot_prompting_with_the_same_worked_examples():
    """Wei et al.'s comparator: the CoT prompt's worked examples with their answers only, then the question alone."""
    from interpretlm.reasoning.engine import EXEMPLARS, prompt_ids

    lm = tiny_lm("llama", seed=0, max_position_embeddings=4096)
    q = il.reasoning.Question("How many legs has a cat?", choices=["2", "4", "6"], answer="4")
    run = il.chain_of_thought(lm, q, samples=1, max_new_tokens=4, shots=2)
    turns = []
    for text, _, worked in EXEMPLARS[:2]:  # no choices, no instruction, no reasoning: "Answer: 8"
        turns += [{"role": "user", "content": text},
                  {"role": "assistant", "content": "Answer: " + worked.rsplit("Answer: ", 1)[1]}]
    opened = lm.tokenizer.apply_chat_template(turns + [{"role": "user", "content": q.text}], tokenize=False,
                                              add_generation_prompt=True)
    ids = encode(lm, opened)
    # the question's answer continues exactly as the worked examples' did: "<assistant opening>Answer: 4"
    ref = [sum(torch.log_softmax(lm.model(torch.tensor([ids + encode(lm, "Answer:") + c])).logits[0].float(), -1)[
               len(ids) + len(encode(lm, "Answer:")) - 1 + t, c[t]].item() for t in range(len(c)))
           for c in (encode(lm, " " + x) for x in q.choices)]
    assert run.no_cot_logprobs == pytest.approx(ref, rel=1e-4)
    d = run.diagnostics
    assert d["no_cot_shots"] == 2 and d["accuracy_no_cot"] == float(q.choices[int(np.argmax(ref))] == "4")
    cloze, _, _ = prompt_ids(lm, q.text, True)  # zero-shot cloze is kept as a diagnostic
    zero = Forcer(lm, cloze, [], list(q.choices)).score_naive([(0, [])])[0]
    assert d["accuracy_no_cot_cloze"] == float(q.choices[int(zero.argmax())] == "4")


def test_unextractable_answers_are_forced_and_flagged():
    lm = tiny_lm("llama", seed=0)
    with pytest.warns(il.reasoning.UnextractedWarning):
        run = il.chain_of_thought(lm, "2 + 2 = ?", choices=["3", "4"], samples=3, max_new_tokens=6)
    # a random tiny model names no choice in 6 tokens: every answer is forced and says so
    assert run.paths == ["scored"] * 3 and run.diagnostics["extracted"] == 0.0
    lp = torch.tensor(run.choice_logprobs)
    assert run.answers == [run.candidates[int(i)] for i in lp.argmax(1)]
    assert run.check.passed is False  # the check flags it


def test_sampling_is_seeded():
    lm = tiny_lm("llama", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = il.chain_of_thought(lm, "2 + 2 = ?", choices=["3", "4"], samples=3, max_new_tokens=12, seed=1)
        b = il.chain_of_thought(lm, "2 + 2 = ?", choices=["3", "4"], samples=3, max_new_tokens=12, seed=1)
        c = il.chain_of_thought(lm, "2 + 2 = ?", choices=["3", "4"], samples=3, max_new_tokens=12, seed=2)
        g = il.chain_of_thought(lm, "2 + 2 = ?", choices=["3", "4"], samples=2, max_new_tokens=12, temperature=0)
    assert a.texts == b.texts and a.texts != c.texts
    assert len(set(a.texts)) > 1 and g.texts[0] == g.texts[1]  # samples differ; greedy ones do not
    assert a.chat and a.prompt.startswith("<|im_start|>user")  # the chat template formatted the prompt


# ------------------------------------------------------------------ KV-cache reuse

# gemma3: contexts longer than its window of 4 take full passes; gemma3-wide (window 128): the whole
# context fits in the window, so the sliding layers' cache holds every position and is reused
@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3", "gemma3-wide"])
@pytest.mark.parametrize("choices", [["6", "7"], ["six apples", "seven apples", "eight"]])
def test_cache_reuse_matches_full_forward_passes(choices, family):
    lm = tiny_lm("gemma3", seed=3, sliding_window=128) if family == "gemma3-wide" else tiny_lm(family, seed=3)
    body = Body.of(lm, "We look at the box. The box holds 5 apples. We count them again. Then we stop.")
    prompt = lm.tokenize("How many apples?", chat=True).input_ids[0].tolist()
    f = Forcer(lm, prompt, body.ids, choices, batch_size=5)
    items = [(c, []) for c in body.cuts]  # early answering
    items += [(body.cuts[k], body.ids[body.cuts[k + 1]:]) for k in range(len(body.sentences))]  # step removal
    items += [(body.cuts[1], encode(lm, " The box holds 9 apples.") + body.ids[body.cuts[2]:])]  # a mistake
    items += [(0, encode(lm, " ...") * 5)]  # filler
    cached = f.score(items)
    calls = f.forward_calls
    naive = f.score_naive(items)
    rel = ((cached - naive).abs() / naive.abs()).max()
    assert float(rel) <= 1e-4
    rows = len(items) * (1 if f.single else len(choices))
    # one prefix pass, then batches of 5 rows on its cache (the narrow window: full passes, no prefix pass)
    assert calls == (-(-rows // 5) if family == "gemma3" else 1 + -(-rows // 5))


def test_early_answering_costs_little_more_than_one_pass():
    """Early answering over S sentences runs at most 1.5x the tokens of one pass over the full CoT."""
    lm = tiny_lm("llama", seed=3)
    text = " ".join(f"Step {i} adds one more apple to the heap." for i in range(6))
    body = Body.of(lm, text)
    prompt = lm.tokenize("How many apples?", chat=True).input_ids[0].tolist()
    f = Forcer(lm, prompt, body.ids, ["6", "7"])
    f.score([(c, []) for c in body.cuts])
    full = len(prompt) + len(body.ids)
    assert len(body.sentences) == 6 and f.forward_calls == 2  # the prefix, then one batch of 7 truncations
    assert f.tokens_run <= 1.5 * full
    naive = Forcer(lm, prompt, body.ids, ["6", "7"])
    naive.score_naive([(c, []) for c in body.cuts])
    assert naive.tokens_run >= 7 * len(prompt)  # S + 1 passes (per choice) done naively


# ------------------------------------------------------------------ planted mechanisms

def test_early_answering_and_mistakes_match_the_construction():
    lm = scripted_lm(key_text="5")
    run = il.reasoning.from_texts(lm, Q, [TEXT])
    assert run.sentences[0][1] == "The box holds 5 apples." and run.forced == ["7"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = il.reasoning.faithfulness(lm, run, tests=["early_answering", "adding_mistakes", "step_necessity",
                                                      "filler", "paraphrase"], generator="rule")
    S, j = 4, 1
    same = [float(k > j) for k in range(S + 1)]  # the answer is 7 once sentence j is in the context
    assert t.details["early_answering"] == [same]
    assert t.aoc["early_answering"] == pytest.approx(np.trapezoid(1 - np.array(same), np.linspace(0, 1, S + 1)))
    assert t.aoc["early_answering"] == pytest.approx(0.375)
    mistakes = [float(k != j) for k in range(S)] + [1.0]  # only the mistake in sentence j removes the key
    assert t.details["adding_mistakes"][0]["same"] == mistakes
    assert t.details["adding_mistakes"][0]["changed"] == [False, True, False, False]
    assert t.aoc["adding_mistakes"] == pytest.approx(np.trapezoid(1 - np.array(mistakes), np.linspace(0, 1, S + 1)))
    assert t.generator == {"adding_mistakes": "rule", "paraphrase": "rule"}
    imp = np.array(t.importance[0])
    p7 = 1 / (1 + math.exp(-5))  # p(7) among the choices with the key; 1 - p7 without it
    assert imp[j] == pytest.approx(p7 - (1 - p7), rel=1e-4) and np.abs(np.delete(imp, j)).max() <= 1e-6
    assert t.metrics["filler.accuracy_change"] == -1.0  # filler hides the key: accuracy 1 -> 0
    assert t.metrics["paraphrase.accuracy_change"] == 0.0  # synonyms keep the key
    assert t.check.passed and t.diagnostics["kv_reuse_error"] <= 1e-6


def test_generator_model_writes_mistakes_and_the_rule_stands_in_where_it_fails():
    lm = scripted_lm(key_text="5")
    key = lm.model.key
    # as a generator, the scripted model rewrites the key sentence with a wrong number (usable) and answers
    # every other request with an empty text (unusable: the rule stands in, and finds nothing to change)
    lm.model.script = {"suffix": lambda vis: encode(lm, "The box holds 8 apples.") if key in vis else []}
    run = il.reasoning.from_texts(lm, Q, [TEXT])
    with pytest.warns(il.reasoning.GeneratorFallbackWarning, match="unusable for 3 of 4"):
        t = il.reasoning.faithfulness(lm, run, tests=["adding_mistakes"])  # generator="model" by default
    assert t.generator == {"adding_mistakes": "model"}  # the only changed sentence is the model's
    assert t.diagnostics["adding_mistakes.by_model"] == 1 and t.diagnostics["adding_mistakes.by_rule"] == 3
    assert t.details["adding_mistakes"][0]["changed"] == [False, True, False, False]
    # the model's mistake replaced "5" by "8": the key is gone, so the answer changes there only
    assert t.details["adding_mistakes"][0]["same"] == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert t.options["generator"] == "model" and t.judge is None


def test_usable_rewrites():
    from interpretlm.reasoning.perturb import _clean, usable

    assert _clean('Rewritten: "The box holds 8 apples."\nmore') == "The box holds 8 apples."
    assert usable("mistake", "The box holds 5 apples.", "The box holds 8 apples.")
    assert not usable("mistake", "The box holds 5 apples.", "The box holds 5 apples.")  # unchanged
    assert not usable("mistake", "The box holds 5 apples.", "666666666")  # not a version of the sentence
    assert not usable("mistake", "He buys 2 more.", "He buys 2 more apples.")  # words added: no number changed
    assert usable("mistake", "He buys 2 more.", "He sells 2 more.")  # an operation changed
    assert usable("mistake", "We look at the box.", "We look at the bag.")  # no number to change: any change
    assert usable("paraphrase", "So 3 plus 4 is 7.", "Thus adding 3 and 4 gives 7.")
    assert not usable("paraphrase", "So 3 plus 4 is 7.", "Thus adding 3 and 4 gives 8.")  # a number changed
    assert not usable("paraphrase", "So 3 plus 4 is 7.", "")


def test_judge_reads_yes_and_no_log_probabilities():
    lm = scripted_lm(script=True)
    q = il.reasoning.Question("How many apples are in the box?", choices=["6", "7", "8", "9"], answer="7")
    run = il.chain_of_thought(lm, q, samples=2, seed=0, max_new_tokens=80)
    yes, no = encode(lm, " Yes"), encode(lm, " No")
    # the judge (the scripted model itself) gives " Yes" +5 over " No" wherever it reads "professor"
    base = lm.model.forward
    prof = encode(lm, " professor")[0]

    def judged(input_ids, cache=None, **kw):
        out = base(input_ids, cache=cache, **kw)
        seen = out.cache.layers[0].keys[:, 0, :, 0].long() if hasattr(out.cache, "layers") else None
        if seen is not None and (seen == prof).any():
            out.logits[..., yes[-1]] += 5.0
        return out
    lm.model.forward = judged
    t = il.reasoning.faithfulness(lm, run, tests=["hint"], judge="model", seed=0)
    assert t.judge == f"model ({lm.name})"
    p = [d["judge_p_yes"] for d in t.details["hint"]]
    # the judge's prompt holds the hint ("A Stanford professor ...") for every sample: p(Yes) = sigmoid(5)
    assert p == pytest.approx([1 / (1 + math.exp(-5))] * 2, rel=1e-4)
    assert t.metrics["hint.verbalization_judge"] == 1.0 and t.metrics["hint.verbalization"] == 0.0
    assert t.metrics["hint.judge_agreement"] == 0.0  # the judge says yes where the words do not match


def test_biased_context_on_a_model_that_follows_the_suggestion():
    lm = scripted_lm(script=True)
    q = il.reasoning.Question("How many apples are in the box?", choices=["6", "7", "8", "9"], answer="7")
    run = il.chain_of_thought(lm, q, samples=3, seed=0, max_new_tokens=80)
    assert run.answers == ["7"] * 3 and run.paths == ["answer_line"] * 3
    t = il.reasoning.faithfulness(lm, run, tests=["biased_context", "hint"], seed=0)
    for test in ("biased_context", "hint"):
        hinted = t.details[test][0]["hint"]
        assert hinted != "7" and all(d["answer"] == hinted for d in t.details[test])
        assert t.metrics[f"{test}.accuracy_drop"] == 1.0  # accuracy 1 without the hint, 0 with it
        assert t.metrics[f"{test}.switch_rate"] == 1.0 and t.metrics[f"{test}.verbalization"] == 0.0


def test_resampling_with_adaptive_stopping_finds_the_planted_sentence():
    lm = scripted_lm(key_text="5")
    key = lm.model.key
    # rollouts end the reasoning and answer 7 when the key sentence is in their context, else 6
    lm.model.script = {"suffix": lambda vis: encode(lm, "\nAnswer: " + ("7" if key in vis else "6"))}
    run = il.reasoning.from_texts(lm, Q, [TEXT])
    t = il.reasoning.faithfulness(lm, run, tests=["resampling"], rollouts=16, rollout_tol=0.1)
    assert t.details["resampling"] == [0.0, 0.0, 1.0, 1.0, 1.0]  # share of rollouts answering 7, per place
    assert t.per_sample["resampling.importance"] == [0.0, 1.0, 0.0, 0.0]
    # every place is unanimous: adaptive stopping ends each after 8 of the 16 rollouts
    assert t.per_sample["resampling.rollouts_used"] == [8] * 5 and t.metrics["resampling.rollouts_saved"] == 0.5
    # added mistakes with the rest regenerated: a mistake at or before the key sentence loses the key
    t = il.reasoning.faithfulness(lm, run, tests=["adding_mistakes"], regenerate=True)
    assert t.details["adding_mistakes"][0]["changed"] == [False, True, False, False]
    assert t.details["adding_mistakes"][0]["same"] == [1.0, 0.0, 1.0, 1.0, 1.0]


# ------------------------------------------------------------------ bad input and flags

def test_bad_questions_raise():
    with pytest.raises(il.reasoning.QuestionError, match="numeric answer"):
        il.reasoning.Question("What is love?")
    with pytest.raises(il.reasoning.QuestionError, match="empty"):
        il.reasoning.Question("  ", choices=["a", "b"])
    with pytest.raises(il.reasoning.QuestionError, match="not one of"):
        il.reasoning.Question("2+2", choices=["3", "5"], answer="4")
    with pytest.raises(il.reasoning.QuestionError, match="Unknown question set"):
        il.reasoning.builtin("trivia")
    lm = tiny_lm("llama", seed=0)
    with pytest.raises(il.InterpretLMError):
        il.chain_of_thought(lm, "What is love?")  # no choices, no numeric answer
    with pytest.raises(il.InterpretLMError, match="chain-of-thought run"):
        il.reasoning.faithfulness(lm, il.attribute(lm, "a b", il.NextToken(5), method="occlusion"))
    run = il.reasoning.from_texts(lm, Q, [TEXT])
    with pytest.raises(il.OptionError, match="Unknown tests"):
        il.reasoning.faithfulness(lm, run, tests=["vibes"])


def test_no_chat_template_falls_back_to_a_plain_prompt(monkeypatch):
    lm = tiny_lm("llama", seed=0)
    monkeypatch.setattr(lm.tokenizer, "chat_template", None)  # the tokenizer is shared by tiny models
    with pytest.warns(il.reasoning.ChatTemplateWarning):
        run = il.chain_of_thought(lm, "2 + 2 = ?", choices=["3", "4"], samples=1, max_new_tokens=4)
    assert run.chat is False and run.prompt.startswith("Question: 2 + 2 = ?")  # 256 positions: no worked example
    wide = tiny_lm("llama", seed=0, max_position_embeddings=4096)
    monkeypatch.setattr(wide.tokenizer, "chat_template", None)
    with pytest.warns(il.reasoning.ChatTemplateWarning):
        run = il.chain_of_thought(wide, "2 + 2 = ?", choices=["3", "4"], samples=1, max_new_tokens=4)
    assert run.prompt.count("\nReasoning: ") == il.reasoning.SHOTS  # the worked examples as earlier blocks
    assert run.prompt.endswith(f"Question: 2 + 2 = ?\nChoices: 3, 4\n{il.reasoning.engine.INSTRUCTION}\nReasoning:")


def test_worked_examples_come_first_as_chat_turns():
    from interpretlm.reasoning.engine import EXEMPLARS, prompt_ids

    lm = tiny_lm("llama", seed=0, max_position_embeddings=4096)
    for text, choices, worked in EXEMPLARS:  # each worked example ends in an answer line the extraction reads
        gold = worked.rsplit("Answer: ", 1)[1]
        assert extract(il.reasoning.Question(text, choices, gold), worked) == (gold, "answer_line")
        assert "5" not in text + worked + "".join(choices)  # the scripted model's key stays in the reasoning
    # the right answers sit at different positions (always the same one would be a biasing feature)
    positions = [c.index(w.rsplit("Answer: ", 1)[1]) for _, c, w in EXEMPLARS]
    assert len(set(positions)) == 4
    zero, _, _ = prompt_ids(lm, "2 + 2 = ?", True, shots=0)
    assert zero == lm.tokenize("2 + 2 = ?", chat=True).input_ids[0].tolist()
    ids, text, used = prompt_ids(lm, "2 + 2 = ?", True, shots=2)
    turns = [{"role": "user", "content": il.reasoning.engine._message(t, c)} if r == "user" else
             {"role": "assistant", "content": w} for t, c, w in EXEMPLARS[:2] for r in ("user", "assistant")]
    want = lm.tokenizer.apply_chat_template(turns + [{"role": "user", "content": "2 + 2 = ?"}], tokenize=False,
                                            add_generation_prompt=True)
    assert used and text == want and ids == encode(lm, want)
    with pytest.raises(InterpretLMError):
        prompt_ids(lm, "2 + 2 = ?", True, shots=il.reasoning.SHOTS + 1)
    # shots=None: as many as keep the prompt within half the context window
    assert prompt_ids(lm, "2 + 2 = ?", True, shots=None)[1].count("<|im_start|>assistant") == il.reasoning.SHOTS + 1
    small = tiny_lm("llama", seed=0)  # 256 positions: one worked example alone is longer than half of them
    assert prompt_ids(small, "2 + 2 = ?", True, shots=None)[0] == prompt_ids(small, "2 + 2 = ?", True, shots=0)[0]
    with pytest.raises(ContextLengthError):
        prompt_ids(small, "2 + 2 = ?", True, shots=il.reasoning.SHOTS)


def test_batched_generation_equals_one_prompt_at_a_time():
    from interpretlm.reasoning.engine import generate, generate_many

    lm = tiny_lm("llama", seed=0)
    prompts = [encode(lm, "Two and two"), encode(lm, "A cat has four legs and a dog"), encode(lm, "Yes")]
    for temperature in (0.0, 0.7):  # padded rows see only their own prompt: the same tokens, greedy or seeded
        rows, made = generate_many(lm, prompts, 2, max_new_tokens=8, temperature=temperature, seeds=[3, 4, 5])
        for p, r, m, seed in zip(prompts, rows, made, [3, 4, 5]):
            assert (r, m) == generate(lm, p, 2, max_new_tokens=8, temperature=temperature, seed=seed)
    qs = il.reasoning.builtin("dates", n=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = il.reasoning.evaluate(lm, qs, tests=[], samples=2, max_new_tokens=6, batch=1, progress=False)
        many = il.reasoning.evaluate(lm, qs, tests=[], samples=2, max_new_tokens=6, batch=3, progress=False)
    assert one.rows == many.rows


def test_one_sentence_and_no_sentence_are_flagged():
    lm = scripted_lm(key_text="5")
    run = il.reasoning.from_texts(lm, Q, ["The box holds 5 apples.\nAnswer: 7", "Answer: 7"])
    with pytest.warns(il.reasoning.ShortReasoningWarning):
        t = il.reasoning.faithfulness(lm, run, tests=["early_answering", "step_necessity"])
    assert t.details["early_answering"] == [[0.0, 1.0]]  # one sentence: two points
    assert t.per_sample["early_answering.aoc"][0] == 0.5 and math.isnan(t.per_sample["early_answering.aoc"][1])
    assert t.importance[1] == [] and t.check.passed


def test_builtin_sets_are_well_formed():
    for name in il.reasoning.SETS:
        qs = il.reasoning.builtin(name)
        assert len(qs) >= (100 if name != "commonsense" else 30) and len({q.text for q in qs}) == len(qs)
        assert all(q.answer in q.choices and len(q.choices) >= 2 for q in qs)
    from collections import Counter

    from interpretlm.reasoning import sets

    for name, make in sets.MAKERS.items():  # the shipped files are the generator's output
        assert [q.to_dict() for q in il.reasoning.builtin(name)] == [
            {"text": r["text"], "choices": r["choices"], "answer": r["answer"], "id": r["id"]} for r in make()]
        qs = il.reasoning.builtin(name)
        for k in {len(q.choices) for q in qs}:  # the right answer's position is balanced per number of choices
            counts = Counter(q.choices.index(q.answer) for q in qs if len(q.choices) == k)
            assert len(counts) == k and max(counts.values()) - min(counts.values()) <= 1, (name, counts)
    days, months = sets.DAYS, sets.MONTHS
    shown = {text for text, _, _ in il.reasoning.EXEMPLARS}
    assert not shown & {q.text for name in il.reasoning.SETS for q in il.reasoning.builtin(name)}  # no leakage
    kinds = Counter(q.id.split("-")[0] for q in il.reasoning.builtin("dates"))
    assert kinds == {"day": 34, "month": 36, "order": 30}
    first_named = []
    for q in il.reasoning.builtin("dates"):
        words = re.findall(r"\w+", q.text)
        if q.id.startswith(("day", "month")):  # the one after the named day or month, choices in calendar order
            cycle = days if q.id.startswith("day") else months
            named = [w for w in words if w in cycle]
            assert len(named) == 1 and q.answer == cycle[(cycle.index(named[0]) + 1) % len(cycle)]
            assert not set(words) & (set(q.choices) - {q.answer})  # no distractor in the question
            assert list(q.choices) == sorted(q.choices, key=cycle.index)
        else:  # "A is taller than B. Who is shorter?"
            a, rel, b, asked = re.fullmatch(r"(\w+) is (\w+) than (\w+)\. Who is (\w+)\?", q.text).groups()
            assert set(q.choices) == {a, b} and q.answer == (a if asked == rel else b)
            first_named.append(q.answer == a)
    assert sum(first_named) * 2 == len(first_named)  # copying the first (or last) named person scores chance
    arith = il.reasoning.builtin("arithmetic")
    for op in range(3):  # each operation's positions are balanced too (additions, subtractions, equal groups)
        counts = Counter(q.choices.index(q.answer) for q in arith[op::3])
        assert len(counts) == 4 and max(counts.values()) - min(counts.values()) <= 1, (op, counts)
    for q in arith:  # the arithmetic answers are right
        assert not set(re.findall(r"\d+", q.text)) & (set(q.choices) - {q.answer})
        assert [int(c) for c in q.choices] == sorted(int(c) for c in q.choices)
        assert int(q.answer) == _computed(q.text)
    # no surface shortcut: the choice nearest a number of the question is right about as often as chance
    nearest = [min(q.choices, key=lambda c: min(abs(int(c) - int(x)) for x in re.findall(r"\d+", q.text)))
               for q in arith]
    assert sum(c == q.answer for c, q in zip(nearest, arith)) / len(arith) < 0.3


def _computed(text: str) -> int:
    """The answer of a built-in arithmetic problem, read from its words (not from how the set made it)."""
    a, b = (int(x) for x in re.findall(r"\d+", text))
    if re.search(r"\b(?:in each|each box holds|on each of)\b", text):
        return a * b  # equal groups
    return a + b if re.search(r"\b(?:buys|gives \w+|puts in) \d+ more\b", text) else a - b


def test_development_split_is_apart_from_the_sets():
    from interpretlm.reasoning import sets

    dev = sets.development()
    held = {q.text for name in il.reasoning.SETS for q in il.reasoning.builtin(name)}
    held |= {text for text, _, _ in il.reasoning.EXEMPLARS}
    rows = dev["arithmetic"] + dev["dates"]
    assert len(dev["arithmetic"]) == 48 and len(dev["dates"]) == 40 and not held & {r["text"] for r in rows}
    for r in dev["arithmetic"]:  # computed answers, no operand among the distractors
        nums = [int(x) for x in re.findall(r"\d+", r["text"])]
        assert int(r["answer"]) == _computed(r["text"])
        assert not set(map(str, nums)) & (set(r["choices"]) - {r["answer"]})
    for r in dev["dates"][:26]:  # the day or month after the one named
        words = re.findall(r"\w+", r["text"])
        cycle = sets.DAYS if set(words) & set(sets.DAYS) else sets.MONTHS
        named = [w for w in words if w in cycle]
        assert len(named) == 1 and not set(words) & (set(r["choices"]) - {r["answer"]})
        assert r["answer"] == cycle[(cycle.index(named[0]) + 1) % len(cycle)]


def test_save_load_and_figures(tmp_path):
    lm = scripted_lm(key_text="5")
    run = il.reasoning.from_texts(lm, Q, [TEXT])
    t = il.reasoning.faithfulness(lm, run, tests=["early_answering", "step_necessity"])
    figs = t.figures()
    assert {"tests", "curves", "importance_0"} <= set(figs)
    assert figs["curves"].series["early_answering"][-1] == 1.0
    back = il.Result.load(t.save(tmp_path / "t.json"))
    assert back.aoc == t.aoc and back.importance == t.importance
    page = t.to_html()
    assert "The box holds 5 apples." in page
    assert t.save_html(tmp_path / "t.html").exists()


def test_command_line(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from interpretlm import cli

    monkeypatch.setattr(cli, "_load", lambda *a: tiny_lm("llama", seed=0))
    out = tmp_path / "cot.json"
    res = CliRunner().invoke(cli.app, ["cot", "2 + 2 = ?", "--choices", "3,4", "--answer", "4", "--samples", "2",
                                       "--max-new-tokens", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 samples" in res.output and "check: extracted" in res.output
    run = il.Result.load(out)
    assert run.question["choices"] == ["3", "4"] and run.question["answer"] == "4" and len(run.answers) == 2
    again = il.rerun(run, tiny_lm("llama", seed=0))  # the question is rebuilt from its recorded dict
    assert again.texts == run.texts and again.answers == run.answers


def test_evaluate_aggregates_over_questions():
    lm = scripted_lm(key_text="5")
    qs = [Q, il.reasoning.Question("How many apples now?", choices=["6", "7"], answer="6")]
    ev = il.reasoning.evaluate(lm, qs, tests=[], samples=1, max_new_tokens=4, temperature=0.0)
    # greedy, the scripted model writes "6666" (no choice as a word: answers are forced) and answers 6
    assert ev.rows["accuracy"] == [0.0, 1.0] and ev.mean["accuracy"] == 0.5
    assert ev.stderr["accuracy"] == pytest.approx(0.5)  # sd 0.707 over 2 questions / sqrt(2)
    assert ev.rows["extracted"] == [0.0, 0.0] and ev.check.passed is False
    names = il.reasoning.evaluate(lm, ["dates"], tests=[], samples=1, max_new_tokens=2, progress=False)
    assert len(names.questions) == len(il.reasoning.builtin("dates"))


def test_worked_examples_are_run_once_and_shared():
    """The worked examples' keys/values are computed once per model and copied into each prompt's cache:
    forced answers equal full passes, and generation equals generation without the shared opening."""
    from interpretlm.reasoning import engine

    lm = tiny_lm("llama", seed=0, max_position_embeddings=4096)
    prompts = [engine.prompt_ids(lm, engine._message(t, c), True, shots=2)[0]
               for t, c in (("2 + 2 = ?", ("3", "4")), ("Which day comes after Monday?", ("Tuesday", "Friday")))]
    L0, start = engine.shared_prefix(lm, prompts[0])
    assert L0 > 100 and prompts[0][:L0] == prompts[1][:L0] and start is not None
    f = Forcer(lm, prompts[1], encode(lm, "Monday is first. Tuesday follows."), ["Tuesday", "Friday"])
    items = [(0, []), (5, encode(lm, " so"))]
    fast = f.score(items)
    assert f.tokens_run < len(prompts[1])  # the opening was not run again
    torch.testing.assert_close(fast, f.score_naive(items), rtol=1e-4, atol=1e-4)
    shared, _ = engine.generate_many(lm, prompts, 2, max_new_tokens=6, temperature=0.0, seeds=[0, 1])
    engine._SHARED.clear()
    alone = [engine.generate(lm, p, 2, max_new_tokens=6, temperature=0.0, seed=0)[0] for p in prompts]
    assert shared == alone


def test_the_shared_opening_follows_weights_changed_in_place():
    """Weights edited in place (a training step, load_state_dict) make the shared cache be computed again."""
    from interpretlm.reasoning import engine

    lm = tiny_lm("llama", seed=0)
    opening = list(range(1, 21))
    engine._share(lm, opening)
    _, before = engine.shared_prefix(lm, opening + [5])
    with torch.no_grad():
        lm.model.model.embed_tokens.weight.mul_(2.0)
    _, after = engine.shared_prefix(lm, opening + [5])
    fresh = engine.cache_of(engine.model_call(lm, torch.tensor([opening])))
    k_before, k_after, k_fresh = (c.layers[0].keys for c in (before, after, fresh))
    assert not torch.allclose(k_before, k_after)
    torch.testing.assert_close(k_after, k_fresh, rtol=1e-4, atol=1e-5)
