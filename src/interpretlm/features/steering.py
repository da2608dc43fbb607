"""Steering: generation under edits, and the sweep of a unit's strength against the text's fluency.

``il.steer(lm, unit, strengths=[0, 4, 8, 16])`` adds ``strength`` times the unit's direction to its
component at every token (a dictionary feature: its activation raised by ``strength``, i.e.
``strength · W_dec[i]`` added, the reconstruction error kept; a neuron or basis index: the unit
vector of that coordinate; a direction unit: the direction scaled to norm 1), generates from each
prompt, and reports per strength the **concept rate** (the share of generated tokens that are
concept tokens: given words, or by default the ten tokens the unit's direction promotes most
through the final norm and unembedding) against **perplexity** of the generated text under the
unedited model (fluency). Strength 0 is the unedited model; its check is that the edit at
strength 0 leaves the logits unchanged (``identity_error``: for a dictionary feature, the
splice with the error added back).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from ..registry import CheckSpec, register
from ..results import Result
from ..units import Unit, Units, bind_units, kind_of
from ..viz.figures import Figure, LineChart, Table
from .errors import FeatureError

DEFAULT_PROMPTS = ("I think that", "The best thing about the city is", "Yesterday my friend told me",
                   "Here is a short story:")


def generate(lm: Any, prompt: str | Sequence[int], max_new_tokens: int = 20, *, temperature: float = 0.0,
             seed: int = 0) -> str:
    """The continuation the model writes after ``prompt`` (greedy, or sampled at ``temperature``).

    Edits active through ``lm.intervene`` (or a dictionary's ``intervene``) apply at every step:
    generation runs the model's own forward passes with its key/value cache. A masked LM (BERT)
    writes by filling a ``[MASK]`` placed after the text, one token at a time.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> isinstance(generate(lm, "a b", max_new_tokens=3), str)
        True
    """
    return _generate_ids(lm, prompt, max_new_tokens, temperature=temperature, seed=seed)[1]


def _generate_ids(lm: Any, prompt: Any, max_new_tokens: int, *, temperature: float = 0.0,
                  seed: int = 0) -> tuple[list[int], str, list[int]]:
    """(prompt ids, continuation text, continuation ids)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise FeatureError(f"max_new_tokens must be a positive int; got {max_new_tokens!r}.")
    batch = lm.tokenize(prompt)
    ids = batch.input_ids[:1, : int(batch.attention_mask[0].sum())].to(lm.device)
    g = torch.Generator().manual_seed(seed)
    if not lm.is_causal:
        return _fill_masks(lm, ids[0].tolist(), max_new_tokens, temperature, g)
    out: list[int] = []
    past = None
    with torch.inference_mode(), lm.running():
        step_ids = ids
        for _ in range(max_new_tokens):
            kwargs: dict[str, Any] = {"input_ids": step_ids, "use_cache": True}
            if past is not None:
                kwargs["cache"] = past          # Transformers 5's name (``past_key_values`` is deprecated)
            o = lm.model(**kwargs)
            past = o.cache if getattr(o, "cache", None) is not None else o.past_key_values
            logits = o.logits[0, -1].float().cpu()
            if temperature > 0:
                nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g))
            else:
                nxt = int(logits.argmax())
            out.append(nxt)
            if nxt == lm.tokenizer.eos_token_id:
                break
            step_ids = torch.tensor([[nxt]], device=lm.device)
    return ids[0].tolist(), lm.tokenizer.decode(out), out


def _encoder_parts(lm: Any, ids: list[int]) -> tuple[list[int], list[int]]:
    """A masked LM's prompt split before its closing special token (``[SEP]``), where new tokens go."""
    sep = lm.tokenizer.sep_token_id
    return (ids[:-1], ids[-1:]) if sep is not None and ids and ids[-1] == sep else (ids, [])


def _mask_logprobs(lm: Any, head: list[int], tail: list[int]) -> torch.Tensor:
    """``[vocab]`` a masked LM's log-probabilities for a [MASK] after ``head``."""
    mask = lm.tokenizer.mask_token_id
    if mask is None:
        raise FeatureError("This encoder has no mask token, so it cannot write text.")
    with torch.inference_mode():
        logits = lm.forward(torch.tensor([head + [mask] + tail])).logits[0, len(head)].float().cpu()
    return torch.log_softmax(logits, -1)


def _fill_masks(lm: Any, ids: list[int], n: int, temperature: float,
                g: torch.Generator) -> tuple[list[int], str, list[int]]:
    """Generation for masked LMs: a [MASK] after the text, filled by the model, then the next one."""
    head, tail = _encoder_parts(lm, ids)
    out: list[int] = []
    for _ in range(n):
        lp = _mask_logprobs(lm, head + out, tail)
        nxt = int(torch.multinomial((lp / temperature).softmax(-1), 1, generator=g)) if temperature > 0 \
            else int(lp.argmax())
        out.append(nxt)
    return ids, lm.tokenizer.decode(out), out


def steering_edit(lm: Any, unit: Unit, strength: float) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """``{component: edit}`` adding ``strength`` along ``unit``'s direction (see the module docstring).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> edit = steering_edit(lm, Unit("blocks.0.resid_post", 3), 2.0)["blocks.0.resid_post"]
        >>> edit(torch.zeros(1, 2, lm.d_model))[0, :, 3].tolist()
        [2.0, 2.0]
    """
    if unit.dictionary is not None and getattr(unit.dictionary, "is_transcoder", False):
        # a transcoder's feature raised by s writes s · W_dec[i] more to the MLP's output (the error term unchanged)
        vec = unit.dictionary.direction(unit.index)

        def add(value: torch.Tensor) -> torch.Tensor:
            return value + (float(strength) * vec).to(value.device, value.dtype)
        return {unit.dictionary.output: add}
    if unit.dictionary is not None:
        return {unit.dictionary.output: unit.dictionary.steer({unit.index: float(strength)})}
    kind = kind_of(lm, unit.component)
    if kind == "attn.heads":
        raise FeatureError(f"{unit.name}: a head's output norm has no direction to steer along; steer a direction "
                           "of the residual stream or a dictionary feature instead.")
    bound = bind_units(lm, unit)      # checks the index / direction against the component
    if unit.direction is not None:
        vec = unit.direction / unit.direction.norm().clamp_min(1e-12)
    else:
        width = lm.d_mlp if kind == "mlp.neurons" else lm.d_model
        vec = torch.zeros(width)
        vec[bound.units[0].index] = 1.0

    def edit(value: torch.Tensor) -> torch.Tensor:
        return value + (float(strength) * vec).to(value.device, value.dtype)
    return {unit.component: edit}


def unit_from_text(text: str, lm: Any = None) -> Unit:
    """A unit from the command line: ``"FOLDER INDEX"`` (a dictionary's folder and a feature) or
    ``"COMPONENT INDEX"`` (a neuron, a basis direction).

    Example:
        >>> unit_from_text("blocks.1.mlp.neurons 3")
        Unit('blocks.1.mlp.neurons', 3)
    """
    from pathlib import Path

    from ..units import parse_unit
    from .formats import load

    words = str(text).split()
    if len(words) == 2 and words[1].isdigit() and (Path(words[0]) / "cfg.json").exists():
        return Unit(load(words[0]), int(words[1]))
    unit = parse_unit(text)
    if not isinstance(unit, Unit):
        raise FeatureError("steer takes one unit (COMPONENT INDEX or DICTIONARY_FOLDER INDEX), not 'all'.")
    return unit


@dataclass(kw_only=True)
class SteeringSweep(Result):
    """A unit steered at several strengths: the concept's rate against perplexity (``il.steer``).

    Attributes:
        unit: the unit's name; component: where the edit acts.
        strengths: ``[s]``; prompts: the prompts generated from.
        concept: the concept tokens counted (given, or the unit's most promoted tokens).
        concept_rate: ``[s]`` share of generated tokens that are concept tokens.
        perplexity: ``[s]`` perplexity of the generated tokens under the unedited model.
        samples: ``[s][p]`` the generated continuations.
        dictionary: for a dictionary's feature, the dictionary's facts and metrics (FVU, L0, dead
            fraction, cross-entropy loss recovered) and the feature's promoted tokens.
        baselines: with a concept set (``positive=``, ``negative=``), ``{"diff_in_means": {"concept_rate": [s],
            "perplexity": [s]}}``: the concept's difference-in-means direction steered the same way.
    """

    nan_marks: ClassVar[tuple[str, ...]] = ("perplexity", "baselines")   # NaN: nothing generated (an end token at once)

    unit: str = ""
    component: str = ""
    strengths: list[float] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    concept: list[str] = field(default_factory=list)
    concept_rate: list[float] = field(default_factory=list)
    perplexity: list[float] = field(default_factory=list)
    samples: list[list[str]] = field(default_factory=list)
    dictionary: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return f"unit {self.unit}"

    def title(self) -> str:
        return f"Steering sweep — {self.unit}"

    def summary(self) -> str:
        i = max(range(len(self.strengths)), key=lambda j: self.concept_rate[j]) if self.strengths else 0
        return (f"concept rate {self.concept_rate[0]:.2f} unsteered -> {self.concept_rate[i]:.2f} at strength "
                f"{self.strengths[i]:g} (perplexity {self.perplexity[0]:.3g} -> {self.perplexity[i]:.3g})"
                + "".join(f"; {k}: {max(v['concept_rate']):.2f} at best" for k, v in self.baselines.items())
                if self.strengths else "no strengths")

    def figures(self) -> dict[str, Figure]:
        xs = [f"{s:g}" for s in self.strengths]
        extra: dict[str, Figure] = {}
        if self.dictionary:
            extra["dictionary"] = Table(["dictionary", "value"], [[k, v if isinstance(v, (int, float)) else str(v)]
                                                                  for k, v in self.dictionary.items()])
        return {**extra,
            "sweep": LineChart(x=xs, series={"concept rate": list(self.concept_rate),
                                             **{f"{k} (baseline)": v["concept_rate"] for k, v in self.baselines.items()}},
                               x_label="strength", y_label="concept rate", y_min=0.0,
                               title=f"Concept rate ({', '.join(self.concept[:6])}…)"),
            "fluency": LineChart(x=xs, series={"perplexity": list(self.perplexity),
                                               **{f"{k} (baseline)": v["perplexity"] for k, v in self.baselines.items()}},
                                 x_label="strength", y_label="perplexity (unedited model)", title="Fluency"),
            "samples": Table(["strength", "concept rate", "perplexity", f"{self.prompts[0]!r} →" if self.prompts else ""],
                             [[s, r, p, smp[0] if smp else ""] for s, r, p, smp in
                              zip(self.strengths, self.concept_rate, self.perplexity, self.samples)]),
        }


def _perplexity(lm: Any, prompt_ids: list[int], new_ids: list[int]) -> float:
    if not new_ids:
        return float("nan")
    if not lm.is_causal:     # each token scored as it was written: a [MASK] after the text before it
        head, tail = _encoder_parts(lm, prompt_ids)
        nll = [-float(_mask_logprobs(lm, head + new_ids[:j], tail)[t]) for j, t in enumerate(new_ids)]
        return float(torch.tensor(nll).mean().exp())
    ids = torch.tensor([prompt_ids + new_ids])
    with torch.inference_mode():
        logits = lm.forward(ids).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt_ids) - 1:-1], -1)
    nll = -lp.gather(-1, torch.tensor(new_ids).unsqueeze(-1).to(lp.device)).mean()
    return float(nll.exp())


def concept_tokens(lm: Any, unit: Unit, n: int = 10) -> list[str]:
    """The ``n`` tokens the unit's direction promotes most (through the final norm and unembedding).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> len(concept_tokens(tiny_lm("llama"), Unit("blocks.1.resid_post", 0), 5))
        5
    """
    from ..unit_reads import logit_effects, output_direction

    direction = output_direction(lm, unit)
    eff = logit_effects(lm, direction) if direction is not None else None
    if eff is None:
        raise FeatureError(f"{unit.name} has no output direction to read concept tokens from; pass concept=[...].")
    return [lm.tokenizer.decode([int(i)]) for i in eff.topk(n).indices]


_CHECK = CheckSpec("identity_error", 1e-4,
                   advice="the edit at strength 0 changed the logits: the dictionary's splice does not add its error "
                          "back exactly (a dtype too coarse?)")


@register("steer", verb="steer", family="features", takes="unit", result=SteeringSweep, target="none",
          summary="steer a dictionary feature, neuron or direction: concept rate against perplexity over strengths",
          check=_CHECK, demo="interpretlm.features.demo:section", demo_order=75,
          cli_input="interpretlm.features.steering:unit_from_text")
def steer(lm: Any, units: Any, *, strengths: list[float] = (0.0, 4.0, 8.0, 16.0), prompts: list[str] = DEFAULT_PROMPTS,
          concept: list[str] | None = None, max_new_tokens: int = 16, temperature: float = 0.0,
          seed: int = 0, positive: list[str] | None = None, negative: list[str] | None = None) -> SteeringSweep:
    """Steer one unit at several strengths and measure the concept's rate against fluency.

    Args:
        lm: the model handle (a causal LM).
        units: one unit: ``il.Unit(sae, i)`` (a dictionary feature), a neuron, a basis index or a
            direction of a vector component.
        strengths: norms added along the unit's direction (0 is the unedited model).
        prompts: what to generate from; concept: concept words (default: the 10 tokens the unit's
            direction promotes most, or with a concept set the 10 most over-represented in its positive
            texts); max_new_tokens, temperature, seed: generation.
        positive, negative: a concept set (texts with and without the concept). Given, the concept's
            difference-in-means direction at the same component, with the norm of the unit's own
            vector, is steered at the same strengths beside the unit (AxBench's baseline): its curves
            are ``result.baselines["diff_in_means"]``.

    Returns:
        :class:`SteeringSweep` with ``concept_rate [s]``, ``perplexity [s]`` and the samples.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> r = il.steer(lm, il.Unit("blocks.1.resid_post", 3), strengths=[0.0, 50.0], prompts=["a b"],
        ...              max_new_tokens=4)
        >>> len(r.concept_rate), r.check.passed
        (2, True)
    """
    unit = _one_unit(lm, units)
    strengths = [float(s) for s in strengths]
    if not strengths or not all(torch.isfinite(torch.tensor(strengths))):
        raise FeatureError("strengths must be a non-empty list of finite numbers.")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        from ..errors import EmptyInputError
        raise EmptyInputError("steer needs non-empty prompts to generate from.")
    baseline = None
    if (positive is None) != (negative is None):
        raise FeatureError("A concept set is both positive= and negative= texts.")
    if positive is not None:
        baseline = concept_baseline(lm, unit, positive, negative)
    if concept:
        words = list(concept)
    elif positive is not None:
        from .baselines import concept_words
        words = concept_words(lm, list(positive), list(negative))
    else:
        words = concept_tokens(lm, unit)
    targets = {w.strip().lower() for w in words if w.strip()}
    if not targets:
        raise FeatureError("The concept has no non-blank words to count.")
    # the check: the edit at strength 0 leaves the logits as they are
    ref = lm.forward(prompts[0]).logits.float()
    with lm.intervene(steering_edit(lm, unit, 0.0)):
        same = lm.forward(prompts[0]).logits.float()
    identity = float((same - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    rates, ppls, samples = _sweep(lm, lambda s: steering_edit(lm, unit, s), strengths, prompts, targets,
                                  max_new_tokens, temperature, seed, "steering")
    comp = unit.dictionary.output if unit.dictionary is not None else unit.component
    result = SteeringSweep(unit=unit.name, component=comp, strengths=strengths, prompts=prompts, concept=words,
                           concept_rate=rates, perplexity=ppls, samples=samples)
    if unit.dictionary is not None:
        d = unit.dictionary
        keep = ("fvu", "l0", "dead_fraction", "ce_loss_recovered", "tokens")
        result.dictionary = {"name": d.name, "features": d.n_features, "component": comp,
                             **{k: d.metrics[k] for k in keep if isinstance(d.metrics.get(k), (int, float))},
                             "concept": ", ".join(w.strip() for w in words[:10])}
    if baseline is not None:
        rates_b, ppls_b, _ = _sweep(lm, lambda s: baseline.edit(s), strengths, prompts, targets, max_new_tokens,
                                    temperature, seed, "steering: difference-in-means")
        result.baselines = {"diff_in_means": {"concept_rate": rates_b, "perplexity": ppls_b}}
        result.diagnostics["baseline_cosine"] = baseline.cosine
    result.diagnostics.update({"identity_error": identity, "max_new_tokens": max_new_tokens})
    return result


def _sweep(lm: Any, edits: Callable[[float], dict[str, Any]], strengths: list[float], prompts: list[str],
           targets: set[str], max_new_tokens: int, temperature: float, seed: int,
           label: str) -> tuple[list[float], list[float], list[list[str]]]:
    """Per strength: the concept rate and perplexity of the generations under ``edits(strength)``, and the texts."""
    from ..progress import track

    rates, ppls, samples = [], [], []
    for s in track(strengths, label):
        hits = total = 0
        nll: list[float] = []
        row: list[str] = []
        for j, p in enumerate(prompts):
            with ExitStack() as stack:
                if s != 0.0:
                    stack.enter_context(lm.intervene(edits(s)))
                pids, text, new = _generate_ids(lm, p, max_new_tokens, temperature=temperature, seed=seed + j)
            toks = [lm.tokenizer.decode([t]).strip().lower() for t in new]
            hits += sum(t in targets for t in toks)
            total += len(toks)
            nll.append(_perplexity(lm, pids, new))
            row.append(text)
        rates.append(hits / max(total, 1))
        finite = [x for x in nll if x == x]
        ppls.append(float(torch.tensor(finite).log().mean().exp()) if finite else float("nan"))
        samples.append(row)
    return rates, ppls, samples


@dataclass
class _Baseline:
    """The difference-in-means direction of a concept at the component a unit writes, scaled to what one unit of
    strength of the unit writes there (AxBench's baseline, steered beside the unit)."""

    component: str
    vector: torch.Tensor           # [d] (attn.heads: head * d_head)
    cosine: float                  # with the unit's own steering vector

    def edit(self, strength: float) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        def add(value: torch.Tensor) -> torch.Tensor:
            shift = (float(strength) * self.vector).to(value.device, value.dtype)
            return value + (shift.view(value.shape[-2:]) if value.ndim == 4 else shift)
        return {self.component: add}


def _unit_vector(lm: Any, unit: Unit) -> tuple[str, torch.Tensor]:
    """Where ``unit`` is steered and the vector one unit of strength adds there."""
    if unit.dictionary is not None:
        return unit.dictionary.output, unit.dictionary.direction(unit.index).float()
    kind = kind_of(lm, unit.component)
    if unit.direction is not None:
        return unit.component, unit.direction / unit.direction.norm().clamp_min(1e-12)
    vec = torch.zeros(lm.d_mlp if kind == "mlp.neurons" else lm.d_model)
    vec[unit.index] = 1.0
    return unit.component, vec


def concept_baseline(lm: Any, unit: Unit, positive: Sequence[str], negative: Sequence[str]) -> _Baseline:
    """The difference-in-means direction of the concept (mean over each text's tokens, the first, an attention sink,
    left out; positive minus negative class means) at the component ``unit`` writes, with the norm of the unit's
    own steering vector.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> b = concept_baseline(lm, Unit("blocks.1.resid_post", 3), ["the cat sat", "a cat ran"], ["the dog sat", "a dog ran"])
        >>> b.component, round(float(b.vector.norm()), 4)
        ('blocks.1.resid_post', 1.0)
    """
    positive, negative = list(positive), list(negative)
    if min(len(positive), len(negative)) < 2 or not all(isinstance(t, str) and t.strip() for t in positive + negative):
        raise FeatureError("The concept set needs at least 2 positive and 2 negative non-empty texts.")
    comp, own = _unit_vector(lm, unit)

    def mean_of(texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            with torch.inference_mode(), lm.capture([comp]) as cache:
                lm.forward(t)
            x = cache[comp][0]
            x = x.reshape(x.shape[0], -1).float().cpu()
            rows.append((x[1:] if x.shape[0] > 1 else x).mean(0))
        return torch.stack(rows).mean(0)
    diff = mean_of(positive) - mean_of(negative)
    if float(diff.norm()) == 0.0:
        raise FeatureError("The positive and negative texts give the same mean activation: no direction to steer.")
    vec = diff / diff.norm() * own.norm()
    return _Baseline(comp, vec, float(torch.nn.functional.cosine_similarity(vec, own.flatten(), dim=0)))


def _one_unit(lm: Any, units: Any) -> Unit:
    if isinstance(units, (list, tuple)) and len(units) == 1:
        units = units[0]
    if isinstance(units, Units) or not isinstance(units, Unit):
        raise FeatureError("steer takes one unit: il.Unit(sae, i), il.Unit('blocks.3.mlp.neurons', 7) or a direction.")
    return units


__all__ = ["DEFAULT_PROMPTS", "SteeringSweep", "concept_baseline", "concept_tokens", "generate", "steer", "steering_edit"]
