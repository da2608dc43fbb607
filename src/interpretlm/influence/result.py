"""The :class:`Influences` result: a query's proponents and opponents among the training texts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..results import Result
from ..viz.figures import Bar, Figure, Table, Text
from ..viz.html import target_text

MEANING = {
    "ekfac": "(1/N) ∇L_q·(H+λI)⁻¹∇L_z with H the EK-FAC Hessian: the decrease of the query's loss (nats) "
             "when the text is up-weighted by 1/N",
    "kfac": "(1/N) ∇L_q·(H+λI)⁻¹∇L_z with H the K-FAC Hessian: the decrease of the query's loss (nats) "
            "when the text is up-weighted by 1/N",
    "dot": "(1/N) ∇L_q·∇L_z: the decrease of the query's loss after a gradient step of rate 1/N on the text",
    "tracin": "(1/N) Σ_c η_c ∇L_q·∇L_z over checkpoints: the decrease of the query's loss the text's own "
              "training steps caused",
    "cosine": "cosine of the query's and the text's projected gradients, in [-1, 1]",
    "trackstar": "cosine of the second-moment-normalised projected gradients (TrackStar), in [-1, 1]",
    "bm25": "BM25 lexical match of the text to the query and its target (≥ 0; a baseline, no opponents)",
}


@dataclass(kw_only=True)
class Influences(Result):
    """Which training texts made the model say this: signed influence of each on one query.

    Attributes:
        query: the query text; ``target`` (provenance) is what its loss is (``L_q = -target``).
        estimator: the scoring method (``"ekfac"``, ``"dot"``, ...; see ``MEANING``).
        n_train: ``N``, the number of training texts.
        scores: ``[n_train]`` every text's score: positive for a proponent (up-weighting the text
            lowers the query's loss), negative for an opponent.
        proponents / opponents: the strongest of each sign, as ``{"index", "text", "score"}``, strongest first.
        modules: the linear layers whose weights the gradients cover; ``projection`` their projected width.
    """

    query: str = ""
    estimator: str = ""
    n_train: int = 0
    scores: list[float] = field(default_factory=list)
    proponents: list[dict[str, Any]] = field(default_factory=list)
    opponents: list[dict[str, Any]] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    projection: int | None = None

    @property
    def meaning(self) -> str:
        """What a score of this estimator means, in words."""
        return MEANING.get(self.estimator, "")

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` strongest proponents then the ``k`` strongest opponents as ``(text, score)``."""
        return [(p["text"], float(p["score"])) for p in self.proponents[:k]] + \
               [(o["text"], float(o["score"])) for o in self.opponents[:k]]

    def title(self) -> str:
        return "Influence of training texts"

    def summary(self) -> str:
        what = target_text(self.target) or "the query's own loss"
        best = f"top proponent #{self.proponents[0]['index']} ({self.proponents[0]['score']:+.3g})" \
            if self.proponents else "no proponent"
        return f"model {self.model} · {self.estimator} over {self.n_train} texts · {what} · {best}"

    def _table(self, rows: list[dict[str, Any]], scale: float) -> Table:
        return Table(["rank", "training text #", "score", "", "text"],
                     [[k + 1, r["index"], float(r["score"]), Bar(float(r["score"]), scale=scale, signed=True),
                       r["text"]] for k, r in enumerate(rows)])

    def figures(self) -> dict[str, Figure]:
        """``meaning`` (what a score is), ``proponents`` and ``opponents`` (tables with each text)."""
        scale = max((abs(r["score"]) for r in self.proponents + self.opponents), default=0.0) or 1.0
        return {
            "meaning": Text(f"Query: {self.query!r} → {target_text(self.target) or 'its own next-token loss'}. "
                            f"Score = {self.meaning}. Positive: a proponent (more of the text makes the "
                            "target more likely); negative: an opponent.", muted=True),
            "proponents": self._table(self.proponents, scale),
            "opponents": self._table(self.opponents, scale),
        }
