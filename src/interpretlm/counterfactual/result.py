"""The :class:`Counterfactuals` result: the edits found for one prompt, their metrics and pictures."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ..results import Result
from ..viz.figures import Figure, Table, Text, TokenShading, TokenStrip
from ..viz.html import target_text
from .words import levenshtein

# The values a word diff is drawn with: red for a new word, blue for a removed one.
NEW, GONE = 1.0, -1.0


@dataclass(kw_only=True)
class Counterfactuals(Result):
    """Edits of a prompt that flip what the model says (the smallest first).

    Attributes:
        prompt: the original text.
        words: ``[w]`` its words (runs of letters/digits or of punctuation).
        editable: ``[w]`` whether the search could change each word (not kept, not special).
        word_scores: ``[w]`` the ranking attribution of each word (toward the current side).
        original_value: the target's value on the prompt.
        original_goal: ``g`` on the prompt (the margin the edits must push below 0).
        original_label / labels: for ``Label`` targets, the predicted label and all labels.
        goal: ``"label"``, ``"sign"`` or ``"threshold"`` (what flipping means).
        threshold / direction: the value crossed and the way (``"down"``: from above).
        original_perplexity: the prompt's perplexity under the model (``None`` for masked models).
        fluency_model / original_perplexity_second: the second model's name and the prompt's
            perplexity under it (``None`` without ``fluency_model=``).
        edits: one dict per edit: ``text``, ``words``, ``diff`` (``[[op, old, new]]`` with op
            ``=``/``-``/``+``/``~``), ``ops`` (operations on original words), ``kind``,
            ``value`` (new target value), ``goal``, ``label`` (new predicted label), ``flipped``,
            ``distance`` (word Levenshtein), ``minimality`` (distance / words), ``minimal``
            (verified: no strict subset flips; ``None``: not verified), ``perplexity``,
            ``delta_perplexity``, ``perplexity_second`` / ``delta_perplexity_second`` (under
            the second model; ``None`` without one), ``queries`` (model evaluations spent
            when it was found).
        tokens / special: the prompt's tokens and special marks.
    """

    prompt: str = ""
    words: list[str] = field(default_factory=list)
    editable: list[bool] = field(default_factory=list)
    word_scores: list[float] = field(default_factory=list)
    original_value: float = 0.0
    original_goal: float = 0.0
    original_label: str | None = None
    labels: list[str] = field(default_factory=list)
    goal: str = ""
    threshold: float | None = None
    direction: str = "down"
    original_perplexity: float | None = None
    fluency_model: str | None = None
    original_perplexity_second: float | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    special: list[bool] = field(default_factory=list)

    @property
    def flip_rate(self) -> float:
        """The share of returned edits that flip the target."""
        return sum(bool(e["flipped"]) for e in self.edits) / len(self.edits) if self.edits else 0.0

    @property
    def minimality(self) -> float | None:
        """Mean word-level Levenshtein distance / word count over flipped edits (MiCE's minimality)."""
        vals = [e["minimality"] for e in self.edits if e["flipped"]]
        return sum(vals) / len(vals) if vals else None

    @property
    def fluency(self) -> float | None:
        """Mean change in perplexity under the model over flipped edits (lower: more fluent)."""
        vals = [e["delta_perplexity"] for e in self.edits if e["flipped"] and e["delta_perplexity"] is not None]
        return sum(vals) / len(vals) if vals else None

    @property
    def fluency_second(self) -> float | None:
        """Mean change in perplexity under the second model (``fluency_model=``) over flipped edits."""
        vals = [e.get("delta_perplexity_second") for e in self.edits if e["flipped"]]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    @property
    def diversity(self) -> float:
        """Mean pairwise word-level edit distance between the returned edits (0 for one edit)."""
        pairs = list(itertools.combinations([e["words"] for e in self.edits], 2))
        return sum(levenshtein(a, b) for a, b in pairs) / len(pairs) if pairs else 0.0

    @property
    def queries(self) -> int:
        """Model evaluations used (rows scored, the prompt included)."""
        return int(self.diagnostics.get("queries", 0))

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The first ``k`` edits as ``(text, new target value)``."""
        return [(e["text"], float(e["value"])) for e in self.edits[:k]]

    def title(self) -> str:
        return "Counterfactuals"

    def summary(self) -> str:
        what = target_text(self.target) or "the target"
        first = self.edits[0] if self.edits else None
        parts = [f"model {self.model}", f"{len(self.edits)} edit(s) of {what}", f"flip rate {self.flip_rate:.2f}"]
        if self.minimality is not None:
            parts.append(f"minimality {self.minimality:.3f}")
        if first is not None:
            parts.append(f"{self.queries} queries")
        return " · ".join(parts)

    def _value_text(self, e: dict[str, Any]) -> str:
        v = f"{float(e['value']):+.3f}" if e["value"] == e["value"] else "not scored"
        return f"{e['label']} ({v})" if e.get("label") is not None else v

    def figures(self) -> dict[str, Figure]:
        """``original`` (word ranking), ``edits`` (a table of word diffs), and a note when nothing flipped."""
        scale = max((abs(s) for s in self.word_scores), default=0.0) or 1.0
        figs: dict[str, Figure] = {
            "original": TokenShading(list(self.words), list(self.word_scores), scale=scale, label="rank score",
                                     unit="attribution toward the prompt's side (edited first: red)",
                                     special=[not ok for ok in self.editable],
                                     title="The prompt's words, as the search ranked them",
                                     caption="Dashed: protected or special words the search never edits."),
        }
        orig = self._value_text({"value": self.original_value, "label": self.original_label})
        rows: list[list[Any]] = [["original", TokenStrip(list(self.words)), orig, "", 0, "", ""]]
        for k, e in enumerate(self.edits, 1):
            toks, vals = [], []
            for op, old, new in e["diff"]:
                if op in ("-", "~"):
                    toks.append(old)
                    vals.append(GONE)
                if op in ("+", "~"):
                    toks.append(new)
                    vals.append(NEW)
                if op == "=":
                    toks.append(old)
                    vals.append(0.0)
            dp = e["delta_perplexity"]
            rows.append([f"edit {k} ({e['kind']})",
                         TokenShading(toks, vals, scale=1.0, label="edit", unit="red: new word · blue: removed word"),
                         self._value_text(e), "yes" if e["flipped"] else "NO", e["distance"],
                         "" if dp is None else f"{dp:+.2f}", e["queries"]])
        figs["edits"] = Table(["", "text (red: new words, blue: removed)", "target", "flipped", "words changed",
                               "Δ perplexity", "queries"], rows, title="Counterfactual edits")
        if self.edits and not any(e["flipped"] for e in self.edits):
            figs["not_flipped"] = Text("No edit flipped the target within the budget; the closest one is shown.")
        return figs
