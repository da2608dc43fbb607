"""Feature dictionaries: sparse autoencoders and transcoders over a model's components.

* :func:`load` — a dictionary in SAELens (``cfg.json`` + ``sae_weights.safetensors``) or EleutherAI
  sparsify (``cfg.json`` + ``sae.safetensors``) format;
* :class:`Dictionary` — ``encode`` / ``decode`` at its component; ``steer({i: s})``, ``ablate([...])``
  and ``splice()`` as edits for ``lm.intervene`` (the reconstruction error is added back, so the
  output is the model's own unless features are edited); ``il.Unit(sae, i)`` is a unit,
  ``il.Unit.all(sae)`` every feature;
* :func:`attribution_graph` (``il.attribution_graph``) — a prompt's logit through per-layer transcoders.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> sae = il.features.load("sae/")  # doctest: +SKIP
    >>> with lm.intervene({sae.component: sae.steer({12: 8.0})}):  # doctest: +SKIP
    ...     print(il.features.generate(lm, "I think that", max_new_tokens=20))
"""

from __future__ import annotations

from .baselines import ConceptComparison, compare_to_baselines, concept_words
from .dictionary import Dictionary, canonical_component, component_width
from .formats import load
from .graph import AttributionGraph, attribution_graph
from .linearize import load_transcoders
from .errors import DictionaryFormatError, DictionaryMismatchError, FeatureError, FeatureIndexError
from .metrics import evaluate
from .steering import DEFAULT_PROMPTS, SteeringSweep, concept_baseline, concept_tokens, generate, steer, steering_edit
from .train import Trainer, fit, reconstruction_metrics, train

__all__ = ["AttributionGraph", "ConceptComparison", "attribution_graph", "Dictionary", "DictionaryFormatError", "DictionaryMismatchError", "FeatureError", "FeatureIndexError",
           "SteeringSweep", "Trainer",
           "concept_baseline", "concept_tokens", "generate", "load_transcoders", "steer", "steering_edit",
           "canonical_component", "compare_to_baselines", "component_width", "concept_words", "evaluate", "fit", "load", "reconstruction_metrics", "train"]
