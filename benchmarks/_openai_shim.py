"""A small OpenAI-compatible server on 127.0.0.1 that answers from local models, so that Neuronpedia's
``automated-interpretability`` (``neuron_explainer``) can run its explainer and its simulator against the
same model interpretlm uses (``benchmarks/explanations_neuronpedia.py``).

Two endpoints, in the shape their client parses (``neuron_explainer/api_client.py`` posts JSON to
``{base_api_url}/chat/completions`` when the request has ``messages``, else to ``/completions``):

* ``POST /v1/chat/completions``: the conversation through the model's chat template, then ``n``
  continuations of at most ``max_completion_tokens`` (or ``max_tokens``) tokens; ``temperature`` 0 is
  greedy (interpretlm's own ``explanations.engine.generate``, so the same explainer writes both sides'
  explanations), otherwise sampling at that temperature and ``top_p`` from a generator seeded ``seed``.
  Read: ``choices[i].message.content``.
* ``POST /v1/completions``: the legacy endpoint. With ``echo=True, max_tokens=0, logprobs=N`` (the
  all-at-once simulator) it returns the prompt's tokens with, at every position, the log-probability of
  the token there and the ``N`` most likely tokens there given the tokens before it (OpenAI's legacy
  ``logprobs`` object: ``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``; the first
  position has ``None``, as OpenAI's). Tokens that are not whole UTF-8 characters are written
  ``bytes:\\xNN...`` as OpenAI did, which their ``handle_byte_encoding`` merges back. ``max_tokens > 0``
  appends a greedy (or sampled) continuation, with no logprobs for it (their simulators never ask).

The model runs one request at a time (a lock): their client sends up to ``max_concurrent`` requests at
once, and two forward passes sharing two cores only slow each other. A request that cannot be served
(a prompt longer than the context, an unknown model) is answered 400, which their client does not retry.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import torch

_LOCK = threading.Lock()


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted (character of a BPE piece -> byte): the printable Latin-1 bytes
    stand for themselves, the other 68 bytes for the characters from U+0100 on, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes(tokenizer: Any, ids: list[int]) -> list[bytes]:
    """The raw bytes of each token: byte-level BPE pieces (GPT-2, Llama-3, Qwen, SmolLM2) mapped back through
    GPT-2's byte alphabet; SentencePiece byte pieces ``<0xNN>``; otherwise the token decoded on its own."""
    dec = _byte_decoder()
    out = []
    for i, piece in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        if piece is not None and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(bytes([int(piece[3:5], 16)]))
        elif piece is not None and piece and all(c in dec for c in piece) and i not in (tokenizer.all_special_ids or []):
            out.append(bytes(dec[c] for c in piece))
        else:
            out.append(tokenizer.decode([i]).encode("utf-8"))
    return out


def token_string(b: bytes) -> str:
    """OpenAI's string for one token: its text, or ``bytes:`` and its bytes (``\\xNN`` for all but printable
    ASCII) when it is not whole UTF-8 characters."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(chr(x) if 32 <= x < 127 and x != 92 else f"\\x{x:02x}" for x in b)


def _offsets(pieces: list[bytes]) -> list[int]:
    """Character offset of each token in the decoded text (a token inside a multi-byte character points at
    that character's start)."""
    out, acc = [], b""
    for b in pieces:
        out.append(len(acc.decode("utf-8", errors="ignore")))
        acc += b
    return out


class RequestError(ValueError):
    """A request the shim cannot serve: answered 400."""


@torch.no_grad()
def echo_logprobs(lm: Any, prompt: str, top_n: int, *, chunk: int = 256) -> dict[str, Any]:
    """OpenAI's legacy ``logprobs`` object for the prompt itself (``echo=True``): per token its string,
    its log-probability given the tokens before it, the ``top_n`` most likely tokens there, its text offset.

    The prompt runs once through the base model; the head runs on ``chunk`` positions at a time, so a
    4,000-token prompt never holds a ``[pos, vocab]`` tensor of logits.
    """
    tok = lm.tokenizer
    ids = list(tok(prompt, add_special_tokens=True)["input_ids"])
    special = set(tok.all_special_ids or [])
    lead = 0
    while lead < len(ids) and ids[lead] in special and lead < 1:   # a BOS the tokenizer adds: run, not echoed
        lead += 1
    if lm.n_ctx and len(ids) > lm.n_ctx:
        raise RequestError(f"This model's maximum context length is {lm.n_ctx} tokens; the prompt has {len(ids)}.")
    x = torch.tensor([ids], device=lm.device)
    with lm.running():
        hidden = lm.model.base_model(input_ids=x, use_cache=False).last_hidden_state[0]   # [pos, d_model]
    head = lm.head_module()
    lp_tok: list[float | None] = [None] * len(ids)
    tops: list[dict[str, float] | None] = [None] * len(ids)
    vocab_bytes: dict[int, str] = {}
    for s in range(0, len(ids) - 1, chunk):
        e = min(len(ids) - 1, s + chunk)
        with lm.running():
            lp = torch.log_softmax(head(hidden[s:e]).float(), dim=-1)      # predicts positions s+1 .. e
        nxt = torch.tensor(ids[s + 1:e + 1], device=lp.device)
        got = lp.gather(1, nxt[:, None])[:, 0].tolist()
        v, i = lp.topk(top_n, dim=-1) if top_n > 0 else (lp[:, :0], lp[:, :0].long())
        need = sorted({int(t) for t in i.flatten().tolist()} - vocab_bytes.keys())
        for t, b in zip(need, token_bytes(tok, need)):
            vocab_bytes[t] = token_string(b)
        for r in range(e - s):
            lp_tok[s + 1 + r] = float(got[r])
            d: dict[str, float] = {}
            for val, t in zip(v[r].tolist(), i[r].tolist()):
                d.setdefault(vocab_bytes[int(t)], float(val))   # two ids with one string: the likelier (first) one
            tops[s + 1 + r] = d if top_n > 0 else None
    pieces = token_bytes(tok, ids)[lead:]
    return {"ids": ids[lead:], "text": b"".join(pieces).decode("utf-8", errors="replace"),
            "logprobs": {"tokens": [token_string(b) for b in pieces], "token_logprobs": lp_tok[lead:],
                         "top_logprobs": tops[lead:], "text_offset": _offsets(pieces)}}


@torch.no_grad()
def continue_ids(lm: Any, ids: list[int], max_new: int, temperature: float, top_p: float, seed: int) -> list[int]:
    """``max_new`` tokens after ``ids`` (stopping at an end of turn): greedy at temperature 0, else sampled
    at ``temperature`` with nucleus ``top_p`` from a generator seeded ``seed``."""
    from interpretlm.reasoning.engine import cache_of, model_call, stop_ids

    if lm.n_ctx and len(ids) + 1 > lm.n_ctx:
        raise RequestError(f"This model's maximum context length is {lm.n_ctx} tokens; the prompt has {len(ids)}.")
    steps = min(max_new, (lm.n_ctx or 10**9) - len(ids) - 1)
    stops = stop_ids(lm)
    g = torch.Generator().manual_seed(int(seed))
    new: list[int] = []
    past = None
    feed = torch.tensor([ids], device=lm.device)
    for _ in range(steps):
        out = model_call(lm, feed, past)
        past = cache_of(out)
        logits = out.logits[0, -1].float()
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            p = torch.softmax(logits / temperature, -1).cpu()
            if top_p < 1:
                sp, si = p.sort(descending=True)
                keep = sp.cumsum(0) - sp < top_p        # the smallest set whose mass reaches top_p
                p = torch.zeros_like(p).scatter(0, si[keep], sp[keep])
            nxt = int(torch.multinomial(p / p.sum(), 1, generator=g))
        if nxt in stops:
            break
        new.append(nxt)
        feed = torch.tensor([[nxt]], device=lm.device)
    return new


def chat_completion(lm: Any, body: dict[str, Any]) -> dict[str, Any]:
    """``/v1/chat/completions``: ``n`` continuations of the conversation through the chat template."""
    from interpretlm.explanations.engine import PromptTooLongError, encode, generate

    messages = body.get("messages") or []
    if not messages or any("role" not in m or "content" not in m for m in messages):
        raise RequestError("messages must be a non-empty list of {role, content}.")
    max_new = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
    temperature = float(body.get("temperature") if body.get("temperature") is not None else 1.0)
    top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
    seed = int(body.get("seed") or 0)
    n = int(body.get("n") or 1)
    if getattr(lm.tokenizer, "chat_template", None):
        text = lm.tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                                tokenize=False, add_generation_prompt=True)
    else:
        text = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\nAssistant:"
    ids = encode(lm, text)
    choices = []
    for k in range(n):
        if temperature <= 0:   # greedy: the very function interpretlm's explainer calls
            try:
                content, _ = generate(lm, text, max_new_tokens=max_new)
            except PromptTooLongError as exc:
                raise RequestError(str(exc)) from exc
        else:
            content = lm.tokenizer.decode(continue_ids(lm, ids, max_new, temperature, top_p, seed + k),
                                          skip_special_tokens=True).strip()
        choices.append({"index": k, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"})
    return {"object": "chat.completion", "model": body.get("model"), "choices": choices,
            "usage": {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}}


def completion(lm: Any, body: dict[str, Any]) -> dict[str, Any]:
    """``/v1/completions`` (legacy): the prompt echoed with its logprobs and/or a continuation."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError("prompt must be one string.")
    max_new = int(body.get("max_tokens") if body.get("max_tokens") is not None else 16)
    top_n = int(body.get("logprobs") or 0)
    if not 0 <= top_n <= 20:
        raise RequestError("logprobs must lie in 0..20.")
    echo = bool(body.get("echo"))
    temperature = float(body.get("temperature") if body.get("temperature") is not None else 1.0)
    from interpretlm.explanations.engine import encode

    if echo:
        got = echo_logprobs(lm, prompt, top_n)
        ids, text, lp = got["ids"], got["text"], got["logprobs"]
    else:
        ids, text, lp = encode(lm, prompt), "", {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                                                 "text_offset": []}
    if max_new > 0:
        new = continue_ids(lm, encode(lm, prompt), max_new, temperature, float(body.get("top_p") or 1.0),
                           int(body.get("seed") or 0))
        text += lm.tokenizer.decode(new, skip_special_tokens=True)
    choice = {"index": 0, "text": text, "finish_reason": "length",
              "logprobs": lp if (echo or top_n) else None}
    return {"object": "text_completion", "model": body.get("model"), "choices": [choice],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": max(0, max_new), "total_tokens": len(ids)}}


class Meter:
    """What the shim did: requests per endpoint, prompt tokens run, seconds inside the model."""

    def __init__(self) -> None:
        self.requests = {"chat": 0, "completions": 0}
        self.tokens = 0
        self.seconds = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "tokens": self.tokens, "seconds": self.seconds}


def make_app(models: dict[str, Any], default: str, meter: Meter | None = None) -> Any:
    """The Starlette app serving ``models`` (name → loaded ``il.LM``); a request naming no known model gets
    ``default``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.concurrency import run_in_threadpool

    meter = meter or Meter()

    def handle(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        lm = models.get(body.get("model") or default, models[default])
        with _LOCK:
            t0 = time.perf_counter()
            out = chat_completion(lm, body) if kind == "chat" else completion(lm, body)
            meter.seconds += time.perf_counter() - t0
            meter.requests[kind] += 1
            meter.tokens += int(out["usage"]["prompt_tokens"])
        return out

    def endpoint(kind: str) -> Any:
        async def route(request: Request) -> JSONResponse:
            try:
                body = await request.json()
                return JSONResponse(await run_in_threadpool(handle, kind, body))
            except Exception as exc:   # noqa: BLE001 -- the model is deterministic: a retry would fail alike,
                # so every failure is a 400, which their client does not retry (it retries 5xx for ~30 min)
                kind_ = "invalid_request_error" if isinstance(exc, RequestError) else "server_error"
                return JSONResponse({"error": {"message": f"{type(exc).__name__}: {exc}", "type": kind_}},
                                    status_code=400)
        return route

    async def list_models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": k, "object": "model"} for k in models]})

    app = Starlette(routes=[Route("/v1/chat/completions", endpoint("chat"), methods=["POST"]),
                            Route("/v1/completions", endpoint("completions"), methods=["POST"]),
                            Route("/v1/models", list_models, methods=["GET"])])
    app.state.meter = meter
    return app


class Shim:
    """The app under uvicorn in a daemon thread on a free port of 127.0.0.1 (loopback only); ``stop()``
    shuts it down. Use as a context manager."""

    def __init__(self, models: dict[str, Any], default: str) -> None:
        import uvicorn

        self.meter = Meter()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.server = uvicorn.Server(uvicorn.Config(make_app(models, default, self.meter), host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "Shim":
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 30:
                raise RuntimeError("the OpenAI shim did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __exit__(self, *exc: Any) -> None:
        self.stop()
