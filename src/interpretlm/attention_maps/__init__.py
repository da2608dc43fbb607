"""Attention visualization: patterns, head summaries, rollout and flow, and their HTML views.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> att = il.attention(lm, "The cat sat on the mat because it was tired", layers=[0, 5, 29])  # doctest: +SKIP
    >>> att.pattern(layer=5, head=3)       # [query, key]  # doctest: +SKIP
    >>> att.heads_summary().top("previous_token")  # doctest: +SKIP
    >>> il.attention_rollout(lm, "The cat sat on the mat").scores()  # doctest: +SKIP
"""

from __future__ import annotations

from .patterns import AttentionResult, attention
from .rollout import AttentionFlow, attention_flow, attention_rollout, rollout_matrix
from .summary import METRICS, HeadsSummary, head_scores

__all__ = ["METRICS", "AttentionFlow", "AttentionResult", "HeadsSummary", "attention", "attention_flow",
           "attention_rollout", "head_scores", "rollout_matrix"]
