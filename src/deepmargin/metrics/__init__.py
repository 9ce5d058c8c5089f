"""Margin and robustness metrics.

- :mod:`.margins`: linearised margins at any layer (the quantity the large-margin loss acts on).
- :mod:`.robustness`: minimum-norm adversarial distances, median distance and error at epsilon
  (Finlay & Oberman), rho_adv (DeepFool; Matyasko & Chau), per-input margin report.
"""

from .margins import linearized_margins, summarize_margins
from .robustness import (
    adversarial_distances,
    distance_summary,
    error_at_eps,
    linearized_input_margins,
    margin_report,
    median_adversarial_distance,
    rho_adv,
)

__all__ = [
    "linearized_margins",
    "summarize_margins",
    "adversarial_distances",
    "distance_summary",
    "error_at_eps",
    "linearized_input_margins",
    "margin_report",
    "median_adversarial_distance",
    "rho_adv",
]
