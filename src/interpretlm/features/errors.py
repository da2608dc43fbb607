"""Errors of the feature-dictionary family."""

from __future__ import annotations

from ..errors import InterpretLMError


class FeatureError(InterpretLMError, ValueError):
    """A feature-dictionary request that cannot run (bad options, an edit of the wrong kind...)."""


class DictionaryFormatError(FeatureError):
    """A folder or file that holds no dictionary in a recognised format (SAELens, EleutherAI sparsify)."""


class DictionaryMismatchError(FeatureError):
    """A dictionary whose component or width does not fit the model it is used with."""


class FeatureIndexError(FeatureError, IndexError):
    """A feature index outside the dictionary (``0..n_features - 1``)."""
