"""Tiny models and tokenizers for fast tests (yours and ours).

``tiny_lm("llama")`` builds a randomly initialised 2-layer model of any supported family
with a small byte-level BPE tokenizer trained in well under a second, so tests run on
the real Hugging Face module tree without downloading anything.

Example:
    >>> from interpretlm.testing import tiny_lm
    >>> lm = tiny_lm("gpt2", seed=0)
    >>> lm.forward("When Mary and John went to the store").logits.shape[-1] == lm.vocab_size
    True
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from .model import LM

CORPUS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "When Tom and Anna went to the park, Anna gave a ball to Tom.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "The cat sat on the mat because it was tired.",
    "The movie was good, great and wonderful; the food was bad and terrible.",
    "Alice and Bob went to the school, and Bob gave a book to Alice.",
    "The keys to the cabinet are on the table. The key to the cabinets is on the table.",
    "I think the answer is yes. I think the answer is no.",
    "Paris, France is a city. Rome, Italy is a city. London, England is a city.",
]
NAMES = ["Mary", "John", "Tom", "Anna", "Alice", "Bob", "Paris", "Rome", "France", "store", "drink", "good", "bad"]


@functools.lru_cache(maxsize=4)
def tiny_tokenizer(kind: str = "bpe", vocab_size: int = 512) -> Any:
    """A small fast tokenizer trained on a built-in corpus.

    ``kind="bpe"``: byte-level BPE like GPT-2 / Llama (no BOS added; ``<|endoftext|>`` is
    EOS and pad; a chat template is set). ``kind="wordpiece"``: BERT-style with
    ``[CLS] ... [SEP]``, ``[MASK]`` and ``[PAD]``. Names such as " Mary" are single tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = CORPUS * 20 + [f" {n}" for n in NAMES] * 50
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(corpus, trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                       bos_token="<|im_start|>", unk_token="<|endoftext|>",
                                       additional_special_tokens=["<|im_end|>"])
        fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        return fast
    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        # The vocabulary is written out, not trained: the WordPiece trainer breaks ties in a
        # per-process random order, so a trained vocabulary (and with it every tiny BERT)
        # differed from one run to the next. Here: every character, every character as a
        # continuation piece, then the corpus's words by frequency (ties alphabetical).
        pre = pre_tokenizers.BertPreTokenizer()
        counts: dict[str, int] = {}
        for line in corpus:
            for word, _ in pre.pre_tokenize_str(line):
                counts[word] = counts.get(word, 0) + 1
        chars = sorted({c for word in counts for c in word})
        pieces = specials + chars + [f"##{c}" for c in chars]
        words = sorted((w for w in counts if w not in pieces), key=lambda w: (-counts[w], w))
        pieces += words[:max(0, vocab_size - len(pieces))]
        tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre
        tok.decoder = decoders.WordPiece()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")
    raise ValueError(f"kind must be 'bpe' or 'wordpiece'; got {kind!r}")


def tiny_config(family: str, vocab_size: int, **overrides: Any) -> Any:
    """A small config of ``family`` (``llama``, ``gpt2``, ``gpt_neox``, ``bert``, ``phi3``, ``gemma3``)."""
    import transformers as tf

    base: dict[str, Any]
    if family == "llama":
        base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, vocab_size=vocab_size, rope_theta=10000.0)
        cfg = tf.LlamaConfig(**{**base, **overrides})
    elif family == "gpt2":
        base = dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, vocab_size=vocab_size,
                    bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        cfg = tf.GPT2Config(**{**base, **overrides})
    elif family == "gpt_neox":
        base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=256, vocab_size=vocab_size)
        cfg = tf.GPTNeoXConfig(**{**base, **overrides})
    elif family == "bert":
        base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=256, vocab_size=vocab_size, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
        cfg = tf.BertConfig(**{**base, **overrides})
    elif family == "phi3":
        # fused qkv_proj (4 query + 2 key/value heads) and gate_up_proj; the partial rotary
        # factor leaves half of each head unrotated, as Phi-3.5/4-mini's configs do
        base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, original_max_position_embeddings=256,
                    vocab_size=vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
                    partial_rotary_factor=0.5, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        cfg = tf.Phi3Config(**{**base, **overrides})
    elif family == "gemma3":
        # a sliding-window layer (window 4, shorter than the test prompts, so the local mask
        # matters) then a global one, each with its own rotary base, as in Gemma 3; d_head 32
        # with 4 query heads is not d_model / heads (64 / 4), as in the real models
        base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=32, max_position_embeddings=256, vocab_size=vocab_size,
                    sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                    query_pre_attn_scalar=32, attn_logit_softcapping=None, final_logit_softcapping=None,
                    bos_token_id=0, eos_token_id=0, pad_token_id=0)
        cfg = tf.Gemma3TextConfig(**{**base, **overrides})
    else:
        raise ValueError(f"family must be llama, gpt2, gpt_neox, bert, phi3 or gemma3; got {family!r}")
    cfg.bos_token_id = cfg.eos_token_id = cfg.pad_token_id = None if family == "bert" else 0
    return cfg


def tiny_lm(family: str = "llama", *, seed: int = 0, head: bool = True, dtype: torch.dtype = torch.float32,
            **overrides: Any) -> LM:
    """A randomly initialised 2-layer model of ``family`` with a tiny tokenizer, as an :class:`LM`.

    Args:
        family: ``"llama"`` (grouped-query attention: 4 query, 2 key/value heads),
            ``"gpt2"``, ``"gpt_neox"``, ``"bert"`` (masked LM), ``"phi3"`` (fused
            projections) or ``"gemma3"`` (a sliding-window layer of window 4 then a global
            one; norms on queries, keys and the attention and MLP outputs).
        seed: weight initialisation seed.
        head: with a language-model head (``*ForCausalLM`` / ``*ForMaskedLM``) or the bare model.
        overrides: config fields (``num_hidden_layers=3``...).
    """
    import transformers as tf

    tok = tiny_tokenizer("wordpiece" if family == "bert" else "bpe")
    cfg = tiny_config(family, len(tok), **overrides)
    torch.manual_seed(seed)
    if family == "bert":
        klass = tf.BertForMaskedLM if head else tf.BertModel
    else:
        klass = tf.AutoModelForCausalLM if head else tf.AutoModel
    model = klass.from_config(cfg) if hasattr(klass, "from_config") else klass(cfg)
    model = model.to(dtype).eval()
    model.requires_grad_(False)
    return LM(model, tok, name=f"tiny-{family}")


def save_tiny(folder: str | Any, family: str = "llama", *, seed: int = 0, **overrides: Any) -> str:
    """Write :func:`tiny_lm` (weights as safetensors, config, tokenizer) to ``folder``; return its path.

    ``il.load(folder)`` gives the same model (same fingerprint, same logits), so a tiny model
    can be loaded by path in other processes (an engine's workers).

    Example:
        >>> import tempfile, interpretlm as il
        >>> folder = save_tiny(tempfile.mkdtemp(), "gpt2", seed=1)
        >>> il.load(folder).fingerprint == tiny_lm("gpt2", seed=1).fingerprint
        True
    """
    import os

    from transformers.utils import logging as hf_logging

    lm = tiny_lm(family, seed=seed, **overrides)
    folder = os.fspath(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # no "Writing model shards" bar for a 100 kB model
    try:
        lm.model.save_pretrained(folder, safe_serialization=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    lm.tokenizer.save_pretrained(folder)
    return folder
