"""Margin and robustness metrics."""

from .margins import linearized_margins, summarize_margins

__all__ = ["linearized_margins", "summarize_margins"]
