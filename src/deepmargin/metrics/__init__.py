"""Margin and robustness metrics.

- :mod:`.logit_margin`: the output margin mu_f(x) of Kesidis, Miller & Xiang.
- :mod:`.margins`: linearised margins at any layer (the quantity the large-margin loss acts on).
- :mod:`.robustness`: minimum-norm adversarial distances, median distance and error at epsilon
  (Finlay & Oberman), rho_adv (DeepFool; Matyasko & Chau), per-input margin report.
"""

from .logit_margin import logit_margins
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
    "logit_margins",
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
