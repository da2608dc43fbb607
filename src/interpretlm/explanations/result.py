"""Results of natural-language explanations: of units (``il.explain_unit``) and of predictions
(``il.explain_in_words``), each beside its evidence and the scores that say how far it can be trusted."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..results import Result
from ..viz.figures import Bars, Figure, Table, Text, TokenShading

_SCORE_ROWS = [("detection", "balanced_accuracy", "detection: balanced accuracy"),
               ("detection", "auroc", "detection: AUROC"),
               ("fuzzing", "balanced_accuracy", "fuzzing: balanced accuracy"),
               ("fuzzing", "auroc", "fuzzing: AUROC"),
               ("simulation", "pearson", "simulation: Pearson r"),
               ("embedding", "auroc", "embedding: AUROC")]


def _f(x: Any) -> float:
    return math.nan if x is None else float(x)


@dataclass(kw_only=True)
class UnitExplanation(Result):
    """Explanations of units in words, with their evidence and scores (``il.explain_unit``).

    Attributes:
        explained: one record per unit: ``unit`` (name), ``text`` (the explanation; ``""`` when there
            is none), ``source`` (``"explainer"`` or ``"given"``), ``flags`` (why a part is missing:
            ``"never_fires"``, ``"plain_prompt"``, ``"cannot_generate"``...), ``prompt`` (what the explainer
            read), ``evidence`` (the windows shown to the explainer: ``tokens``, ``values``, ``kind``
            top / quantile), ``windows`` (the scored windows: ``tokens``, ``values``, ``label`` activating or
            not, ``kind`` top / quantile / random / hard), ``scores`` (per scorer a dict; NaN: does not apply).
        models: which models played which part: ``subject``, ``explainer``, ``scorer``, ``simulator``,
            ``embedder`` (names), and whether each prompt went through a chat template.
        activation_threshold: per unit, the value above which a token counts as firing.
    """

    explained: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)

    nan_marks: ClassVar[tuple[str, ...]] = ("explained",)

    @property
    def text(self) -> str:
        """The first unit's explanation."""
        return self.explained[0]["text"] if self.explained else ""

    @property
    def scores(self) -> dict[str, float]:
        """The first unit's headline scores: ``detection``, ``fuzzing`` (balanced accuracy),
        ``simulation`` (Pearson r), ``embedding`` (AUROC); NaN where a scorer did not run."""
        return headline(self.explained[0]) if self.explained else {}

    @property
    def flags(self) -> list[str]:
        return self.explained[0]["flags"] if self.explained else []

    @property
    def prompt(self) -> str:
        names = [e["unit"] for e in self.explained]
        return "units " + ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    def title(self) -> str:
        return "Unit explanation — " + (self.explained[0]["unit"] if len(self.explained) == 1
                                         else f"{len(self.explained)} units")

    def summary(self) -> str:
        if not self.explained:
            return "no units"
        e = self.explained[0]
        if not e["text"]:
            return f"{e['unit']}: no explanation ({', '.join(e['flags'])})"
        s = headline(e)
        return (f"{e['unit']}: {e['text']!r} — detection {s['detection']:.2f}, fuzzing {s['fuzzing']:.2f}, "
                f"simulation r {s['simulation']:.2f}, embedding AUROC {s['embedding']:.2f}")

    def figures(self) -> dict[str, Figure]:
        figs: dict[str, Figure] = {}
        many = len(self.explained) > 1
        for e in self.explained[:4]:
            pre = f"{e['unit']}: " if many else ""
            figs[pre + "explanation"] = Text(e["text"] or f"No explanation: {', '.join(e['flags'])}.",
                                             title=pre + "Explanation",
                                             caption=f"source: {e['source']}; explainer {self.models.get('explainer')}")
            if e["flags"]:
                figs[pre + "flags"] = Text("; ".join(e["flags"]), muted=True, title=pre + "Flags")
            rows = []
            for scorer, key, label in _SCORE_ROWS:
                d = e["scores"].get(scorer) or {}
                rows.append([label, _f(d.get(key)), d.get("forward_passes"), _f(d.get("seconds"))])
            figs[pre + "scores"] = Table(["score", "value", "forward passes", "seconds"], rows, title=pre + "Scores",
                                         caption=f"scorer {self.models.get('scorer')}, simulator "
                                                 f"{self.models.get('simulator')}, embedder {self.models.get('embedder')}",
                                         nan="the scorer did not run or the score is undefined")
            scale = max([max(w["values"]) for w in e["evidence"]] + [1e-6]) if e["evidence"] else None
            if e["evidence"]:
                figs[pre + "evidence"] = Table(
                    ["kind", "max", "window"],
                    [[w["kind"], max(w["values"]), TokenShading(w["tokens"], w["values"], scale=scale, label=e["unit"])]
                     for w in e["evidence"]],
                    title=pre + "Evidence the explainer read",
                    caption="top and quantile windows; shading: the unit's value per token")
            det = (e["scores"].get("detection") or {}).get("log_odds")
            if e["windows"] and det:
                figs[pre + "detection windows"] = Table(
                    ["kind", "activating", "log-odds yes/no", "window"],
                    [[w["kind"], "yes" if w["label"] else "no", float(o),
                      TokenShading(w["tokens"], w["values"], scale=scale, label=e["unit"])]
                     for w, o in zip(e["windows"], det)][:40],
                    title=pre + "Detection: the scorer's answer per window",
                    caption="log P(yes) − log P(no) of the scorer after reading the explanation and the window")
        if many:
            names = [e["unit"] for e in self.explained]
            figs["all scores"] = Bars(names, {k: [headline(e)[k] for e in self.explained]
                                              for k in ("detection", "fuzzing", "simulation", "embedding")},
                                      title="Scores per unit", label_header="unit")
        return figs


def headline(e: dict[str, Any]) -> dict[str, float]:
    s = e["scores"]
    return {"detection": _f((s.get("detection") or {}).get("balanced_accuracy")),
            "fuzzing": _f((s.get("fuzzing") or {}).get("balanced_accuracy")),
            "simulation": _f((s.get("simulation") or {}).get("pearson")),
            "embedding": _f((s.get("embedding") or {}).get("auroc"))}


@dataclass(kw_only=True)
class SelfExplanation(Result):
    """A model's explanation in words of its own prediction, and how faithful it is (``il.explain_in_words``).

    Attributes:
        prompt: the explained text; answer: what the model predicts (a label or a token); value: the
            explained target's value on the prompt (a label's log-probability).
        text: the model's explanation (``""`` when it could not write one); asked: the question it read.
        cited: the words of the prompt it says mattered (in prompt order); cited_index: their word indices.
        cited_tokens: the token positions of the cited words (into ``tokens``).
        words, tokens: the prompt's words and tokens.
        scores: ``comprehensiveness`` / ``sufficiency`` (cited words; ERASER: the target's drop when they are
            deleted / when only they are kept), ``*_random`` (the same count of random words, mean over
            samples), ``*_gain`` (cited minus random, paired) with ``*_gain_se`` (standard error over the
            samples), ``rank_auc`` / ``top_overlap`` (agreement with the attribution reference),
            ``redaction_drop`` / ``redaction_flipped`` and ``counterfactual_consistent`` (Madsen et al.),
            ``simulatability`` / ``simulatability_prior`` (Chen et al.: the simulator's precision on the edits
            with and without the explanation). NaN: does not apply.
        details: the redacted and counterfactual texts, the edits simulated and the attribution per word.
        flags: why a part is missing (``"no_cited_words"``, ``"plain_prompt"``, ``"cannot_generate"``...).
        models: ``subject`` and ``simulator`` names, ``reference`` attribution method.
    """

    prompt: str = ""
    answer: str = ""
    value: float = 0.0
    text: str = ""
    asked: str = ""
    cited: list[str] = field(default_factory=list)
    cited_index: list[int] = field(default_factory=list)
    cited_tokens: list[int] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)

    nan_marks: ClassVar[tuple[str, ...]] = ("scores", "details")

    def title(self) -> str:
        return "Self-explanation"

    def summary(self) -> str:
        s = self.scores
        if not self.cited:
            return f"answer {self.answer!r}; explanation {self.text[:80]!r}; no cited words ({', '.join(self.flags)})"
        return (f"answer {self.answer!r}; cites {', '.join(map(repr, self.cited))}; comprehensiveness gain over random "
                f"{_f(s.get('comprehensiveness_gain')):+.3f} ± {_f(s.get('comprehensiveness_gain_se')):.3f}, sufficiency "
                f"gain {_f(s.get('sufficiency_gain')):+.3f}")

    def figures(self) -> dict[str, Figure]:
        figs: dict[str, Figure] = {}
        figs["explanation"] = Text(self.text or "(no explanation)", title=f"The model's explanation of {self.answer!r}",
                                   caption=f"asked through {'the chat template' if 'plain_prompt' not in self.flags else 'a plain prompt'}")
        if self.flags:
            figs["flags"] = Text("; ".join(self.flags), muted=True, title="Flags")
        if self.tokens:
            vals = [1.0 if i in set(self.cited_tokens) else 0.0 for i in range(len(self.tokens))]
            figs["cited"] = TokenShading(self.tokens, vals, scale=1.0, label="cited", title="Cited words",
                                         caption="tokens of the words the explanation cites")
        attr = self.details.get("attribution")
        if attr:
            figs["attribution"] = Bars(self.words, {"attribution": attr}, signed=True, label_header="word",
                                       title=f"Attribution per word ({self.models.get('reference')})",
                                       caption="the reference the cited words are ranked against")
        rows = [[k, _f(v)] for k, v in self.scores.items()]
        figs["scores"] = Table(["score", "value"], rows, title="Faithfulness scores",
                               caption="ERASER comprehensiveness / sufficiency against random words of the same count "
                                       "(paired), rank agreement, self-consistency, simulatability",
                               nan="does not apply (see the flags)")
        edits = self.details.get("simulated_edits")
        if edits:
            figs["simulatability"] = Table(["edited text", "model's answer", "simulator's guess", "without explanation"],
                                           [[e["text"], e["label"], e["guess"], e["prior_guess"]] for e in edits],
                                           title="Counterfactual simulatability")
        return figs


__all__ = ["SelfExplanation", "UnitExplanation", "headline"]
