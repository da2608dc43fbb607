"""The OpenAI-compatible shim of ``benchmarks/_openai_shim.py`` (what Neuronpedia's ``neuron_explainer`` reads
in ``benchmarks/explanations_neuronpedia.py``), on a tiny model: the echoed logprobs equal a plain forward
pass, the tokens rebuild the prompt at their text offsets, bytes that are not whole characters use OpenAI's
``bytes:`` form, and the two endpoints answer over 127.0.0.1 as their client parses them."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
pytest.importorskip("uvicorn")
import _openai_shim as shim  # noqa: E402

from interpretlm.explanations.engine import chat_text, generate  # noqa: E402
from interpretlm.testing import tiny_lm  # noqa: E402

PROMPT = "When Mary and John went to the store\tunknown\n<start>\nJohn gave a drink to Mary\tunknown"


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


def test_echo_logprobs_equal_a_forward_pass(lm):
    got = shim.echo_logprobs(lm, PROMPT, 5, chunk=7)      # a chunk that splits the prompt unevenly
    ids = got["ids"]
    with torch.no_grad():
        ref = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    lp = got["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    want = ref[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    assert torch.allclose(torch.tensor(lp["token_logprobs"][1:]), want, rtol=1e-4, atol=1e-5)
    for i in (1, len(ids) // 2, len(ids) - 1):     # the top 5 there: the 5 likeliest ids' strings and values
        v, t = ref[i - 1].topk(5)
        top = lp["top_logprobs"][i]
        for key, x in zip(top, t):   # the token's text; a piece of a character in OpenAI's bytes: form
            text = lm.tokenizer.decode([int(x)])
            assert key.startswith("bytes:") if "\ufffd" in text else key == text
        assert torch.allclose(torch.tensor(list(top.values())), v, rtol=1e-4, atol=1e-5)
    # the tokens rebuild the prompt; each offset is where its token starts
    assert got["text"] == PROMPT == "".join(lp["tokens"])
    assert all(PROMPT.startswith(tok, off) for tok, off in zip(lp["tokens"], lp["text_offset"]))


def test_partial_characters_are_bytes(lm):
    text = "Mary went to the café"
    lp = shim.echo_logprobs(lm, text, 0)["logprobs"]
    assert lp["top_logprobs"][1] is None            # logprobs=0: no top list, as OpenAI's
    # "é" is two bytes; the tiny tokenizer never saw it whole, so it comes as two byte tokens
    assert lp["tokens"][-2:] == ["bytes:\\xc3", "bytes:\\xa9"]
    assert lp["text_offset"][-2] == lp["text_offset"][-1] == text.index("é")
    assert shim.token_string("é".encode()) == "é" and shim.token_string(b"a\\\xff") == "bytes:a\\x5c\\xff"


def test_endpoints_over_loopback(lm):
    import httpx

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "When Mary and John"}]
    with shim.Shim({"tiny": lm}, "tiny") as s:
        assert s.url.startswith("http://127.0.0.1:")
        with httpx.Client(timeout=60) as c:
            chat = c.post(f"{s.url}/chat/completions", json={"model": "tiny", "messages": messages,
                                                            "max_completion_tokens": 6, "temperature": 0}).json()
            echo = c.post(f"{s.url}/completions", json={"model": "tiny", "prompt": PROMPT, "echo": True,
                                                        "max_tokens": 0, "logprobs": 15}).json()
            sampled = [c.post(f"{s.url}/chat/completions", json={"messages": messages, "max_tokens": 6, "n": 2,
                                                                 "temperature": 1.0, "seed": 3}).json()
                       for _ in range(2)]
            bad = c.post(f"{s.url}/completions", json={"prompt": ["a", "b"], "echo": True, "max_tokens": 0})
        assert s.meter.requests == {"chat": 3, "completions": 1}
    assert not s.thread.is_alive()                     # shut down on leaving the block
    # greedy chat: the very text interpretlm's explainer writes for the same conversation
    want, _ = generate(lm, lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                       max_new_tokens=6)
    assert chat["choices"][0]["message"]["content"] == want
    assert chat_text(lm, [("user", "When Mary and John")], system="Be brief.") == \
        lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ref = shim.echo_logprobs(lm, PROMPT, 15)
    ch = echo["choices"][0]
    assert ch["text"] == PROMPT and ch["logprobs"]["tokens"] == ref["logprobs"]["tokens"]
    assert ch["logprobs"]["text_offset"] == ref["logprobs"]["text_offset"]
    assert all(len(t) <= 15 for t in ch["logprobs"]["top_logprobs"][1:])
    # seeded sampling repeats itself for the same seed
    assert [x["message"]["content"] for x in sampled[0]["choices"]] == \
        [x["message"]["content"] for x in sampled[1]["choices"]]
    assert bad.status_code == 400 and "prompt" in bad.json()["error"]["message"]
