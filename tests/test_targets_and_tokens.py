"""Targets on every family, tokenization offsets / special marks / chat formatting."""

import pytest
import torch

import interpretlm as il
from interpretlm.testing import tiny_lm

PROMPTS = ["When Mary and John went to the store, John gave a drink to", "When Tom and Anna went to the park,"]


@pytest.fixture(scope="module", params=["llama", "gpt2", "gpt_neox"])
def decoder(request):
    return tiny_lm(request.param, seed=1)


def _last_logits(lm, prompt):
    return lm.forward(prompt).logits[0, -1]


def test_next_token_batched_equals_single(decoder):
    lm = decoder
    tok = lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]
    batched = lm.score(PROMPTS, il.NextToken(" Mary"))
    single = torch.stack([torch.log_softmax(_last_logits(lm, p), -1)[tok] for p in PROMPTS])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    # chunking does not change anything
    torch.testing.assert_close(lm.score(PROMPTS, " Mary", batch_size=1), batched, atol=1e-5, rtol=0)
    probs = lm.score(PROMPTS, il.NextToken(" Mary", kind="prob"))
    torch.testing.assert_close(probs, batched.exp(), atol=1e-6, rtol=1e-5)


def test_contrast_is_logit_difference(decoder):
    lm = decoder
    a, b = (lm.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (" Mary", " John"))
    got = lm.score(PROMPTS, il.Contrast(" Mary", " John"))
    want = torch.stack([_last_logits(lm, p)[a] - _last_logits(lm, p)[b] for p in PROMPTS])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_continuation_is_sum_of_teacher_forced_logprobs(decoder):
    lm = decoder
    cont = " Mary, because"
    ids = lm.tokenizer(cont, add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    got = lm.score(PROMPTS, il.Continuation(cont))
    for i, p in enumerate(PROMPTS):
        prompt_ids = lm.tokenizer(p)["input_ids"]
        full = torch.tensor([prompt_ids + ids])
        logp = torch.log_softmax(lm.model(input_ids=full).logits[0], -1)
        want = sum(logp[len(prompt_ids) - 1 + k, t] for k, t in enumerate(ids))
        assert abs(got[i].item() - want.item()) < 1e-4


def test_label_is_normalised_over_labels(decoder):
    lm = decoder
    verb = {"pos": [" good"], "neg": [" bad", " Mary"]}
    lp_pos = lm.score(PROMPTS, il.Label(verb, label="pos"))
    lp_neg = lm.score(PROMPTS, il.Label(verb, label="neg"))
    torch.testing.assert_close(lp_pos.exp() + lp_neg.exp(), torch.ones(2), atol=1e-5, rtol=0)


def test_callable_target(decoder):
    lm = decoder
    got = lm.score(PROMPTS, lambda logits, batch: logits[torch.arange(batch.size), batch.last_index, 5])
    want = torch.stack([_last_logits(lm, p)[5] for p in PROMPTS])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_encoder_masked_and_pooled_targets():
    mlm = tiny_lm("bert", seed=0)
    prompt = "When Mary and [MASK] went to the store"
    out = mlm.forward(prompt)
    pos = (out.batch.input_ids[0] == mlm.tokenizer.mask_token_id).nonzero()[0, 0]
    tok = mlm.tokenizer("John", add_special_tokens=False)["input_ids"][0]
    want = torch.log_softmax(out.logits[0, pos], -1)[tok]
    torch.testing.assert_close(mlm.score(prompt, il.MaskedToken("John"))[0], want, atol=1e-5, rtol=0)
    with pytest.raises(il.TargetError, match="MASK"):
        mlm.score("no mask here", il.NextToken("John"))
    bare = tiny_lm("bert", seed=0, head=False)
    assert not bare.has_head
    sims = bare.score(["When Mary went to the store", "The cat sat on the mat"],
                      il.PooledEmbedding(reference="When Mary went to the store"))
    assert abs(sims[0].item() - 1.0) < 1e-5 and sims[1].item() < 0.999
    with pytest.raises(il.TargetError, match="head"):
        bare.score("Mary", il.NextToken("Mary"))


def test_offsets_special_and_policy(any_lm):
    lm = any_lm
    text = "When Mary and John went <b>"
    b = lm.tokenize(text)
    for tok, (s, e), sp in zip(b.tokens[0], b.offsets[0], b.special[0].tolist()):
        if not sp:
            assert text[s:e] == tok
    if lm.family.name == "bert":
        assert b.special[0, 0] and b.special[0, -1] and b.policy["bos_added"] and b.policy["eos_added"]
    else:
        assert not b.special[0].any() and not b.policy["bos_added"]
    assert b.in_prompt[0].tolist() == (~b.special[0]).tolist()


def test_chat_template_marks_the_user_prompt(llama):
    lm = llama
    b = lm.tokenize("When Mary and John", chat=True)
    assert b.policy["chat"] and b.texts[0].startswith("<|im_start|>user")
    inside = [t for t, f in zip(b.tokens[0], b.in_prompt[0].tolist()) if f]
    assert "".join(inside).strip() == "When Mary and John"
    assert b.special[0].sum() >= 3  # <|im_start|> ×2, <|im_end|>
    assert lm.score("When Mary and John", " Mary", chat=True).shape == (1,)


def test_token_ids_are_accepted(llama):
    lm = llama
    ids = lm.tokenizer("When Mary and John")["input_ids"]
    torch.testing.assert_close(lm.score(ids, " Mary"), lm.score("When Mary and John", " Mary"))
    torch.testing.assert_close(lm.score(torch.tensor([ids, ids]), " Mary"),
                               lm.score(["When Mary and John"] * 2, " Mary"))
    b = lm.tokenize(ids)
    assert b.tokens[0] == [lm.tokenizer.decode([i]) for i in ids]


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_other_llama_like_families(family):
    import transformers as tf
    from interpretlm.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg_cls, model_cls = {"mistral": (tf.MistralConfig, tf.MistralForCausalLM),
                          "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM)}[family]
    torch.manual_seed(0)
    model = model_cls(cfg_cls(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=128))
    lm = il.LM(model, tok)
    assert lm.family.name == "llama"
    b = lm.tokenize("When Mary and John went")
    with lm.capture(["blocks.0.resid_post", "blocks.1.attn.heads", "blocks.1.attn.pattern"]) as c:
        hs = lm.model(input_ids=b.input_ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(c["blocks.0.resid_post"], hs[1], atol=1e-5, rtol=0)
    assert c["blocks.1.attn.heads"].shape[2] == 4 and c["blocks.1.attn.pattern"].shape[1] == 4
