"""Margin and robustness metrics."""
