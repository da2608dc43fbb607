"""The language model's own predictions on a task's texts, read through verbalizer tokens.

A probing :class:`~interpretlm.probing.tasks.Task` gives texts and gold classes; the LM's
prediction for a text is the class whose verbalizer tokens are most likely after a prompt
template (the core's :class:`~interpretlm.targets.Label` target, one bound copy per class,
all read from the same batched forward pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..progress import track
from ..targets import Label
from .errors import DistillationError

# Verbalizers of common class names; a class not listed is verbalized by its own name.
KNOWN_VERBALIZERS: dict[str, list[str]] = {
    "positive": [" positive", " good", " great"],
    "negative": [" negative", " bad", " terrible"],
    "singular": [" is", " was", " has"],
    "plural": [" are", " were", " have"],
}
DECODER_TEMPLATE = "Review: {text}\nSentiment:"
ENCODER_TEMPLATE = "Review: {text} Sentiment: {mask}."


def single_tokens(lm: Any, words: Sequence[str]) -> list[str]:
    """The words of ``words`` that are exactly one token for ``lm``'s tokenizer."""
    return [w for w in words if len(lm.tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]


def verbalizers_for(lm: Any, classes: Sequence[Any],
                    given: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """``{class: [single-token verbalizers]}``: ``given`` as it is, else built from the class names.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> verbalizers_for(tiny_lm("llama"), ["negative", "positive"])
        {'negative': [' bad', ' terrible'], 'positive': [' good', ' great']}
    """
    if given:
        missing = [str(c) for c in classes if str(c) not in given]
        if missing:
            raise DistillationError(f"verbalizers name no tokens for the class(es) {missing}; give one entry per class "
                                    f"of the task ({[str(c) for c in classes]}).")
        return {str(c): list([given[str(c)]] if isinstance(given[str(c)], (str, int)) else given[str(c)])
                for c in classes}
    out = {}
    for c in classes:
        name = str(c)
        cands = KNOWN_VERBALIZERS.get(name.lower(), []) + [f" {name}", f" {name.lower()}"]
        ok = single_tokens(lm, list(dict.fromkeys(cands)))
        if not ok:
            raise DistillationError(
                f"No single-token verbalizer for class {name!r} in this model's vocabulary (tried {cands}); "
                "pass verbalizers={class: [' token', ...]} with single tokens.")
        out[name] = ok
    used = [t for ts in out.values() for t in ts]
    dup = {t for t in used if used.count(t) > 1}
    if dup:
        raise DistillationError(f"Classes share verbalizer tokens {sorted(dup)}; pass verbalizers= explicitly.")
    return out


def template_for(lm: Any, template: str | None) -> str:
    """The prompt template (``{text}`` and, for encoders, ``{mask}`` where the prediction is read)."""
    tmpl = template or (DECODER_TEMPLATE if lm.is_causal else ENCODER_TEMPLATE)
    if "{text}" not in tmpl:
        raise DistillationError(f"template {tmpl!r} has no '{{text}}' placeholder.")
    if not lm.is_causal and "{mask}" not in tmpl:
        raise DistillationError("This is an encoder: its template needs a '{mask}' where the label is read, "
                                "e.g. 'Review: {text} Sentiment: {mask}.'")
    return tmpl


def fill(lm: Any, template: str, text: str) -> str:
    """``template`` with ``text`` (and the tokenizer's mask token) filled in."""
    mask = getattr(lm.tokenizer, "mask_token", None) or ""
    return template.replace("{mask}", mask).replace("{text}", text)


def label_logprobs(lm: Any, texts: Sequence[str], verbalizers: Mapping[str, Sequence[str]], template: str, *,
                   batch_size: int = 32, desc: str = "teacher") -> torch.Tensor:
    """``[n_texts, n_classes]`` log p(class | template(text)), normalised over the classes.

    One forward pass per ``batch_size`` texts; every class is read from the same pass.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> lp = label_logprobs(lm, ["good food", "bad food"], {"neg": [" bad"], "pos": [" good"]}, "{text}:")
        >>> lp.shape, bool(torch.allclose(lp.exp().sum(-1), torch.ones(2)))
        (torch.Size([2, 2]), True)
    """
    bound = [Label(dict(verbalizers), label=c).bind(lm) for c in verbalizers]
    prompts = [fill(lm, template, t) for t in texts]
    rows = []
    with torch.no_grad():
        for start in track(range(0, len(prompts), batch_size), desc):
            out = lm.forward(prompts[start:start + batch_size], grad=False)
            rows.append(torch.stack([t(out) for t in bound], dim=-1).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, len(bound))
