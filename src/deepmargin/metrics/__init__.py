"""Margin and robustness metrics.

- :mod:`.logit_margin`: the output margin mu_f(x) of Kesidis, Miller & Xiang.
- :mod:`.pvalues`: margin p-values (Kesidis, Miller & Xiang, Sec. V): per-class GMMs of training
  log-margins (BIC model order), thresholds at a false-positive rate, attack-detection scores.
- :mod:`.lipschitz`: Lipschitz upper / lower bounds of a network and certified class-pure l2 radii
  (Kesidis et al., Theorem 2.1; Tsuzuku et al., Prop. 4.1).
- :mod:`.margins`: linearised margins at any layer (the quantity the large-margin loss acts on).
- :mod:`.robustness`: minimum-norm adversarial distances, median distance and error at epsilon
  (Finlay & Oberman), rho_adv (DeepFool; Matyasko & Chau), per-input margin report.
"""

from .lipschitz import lipschitz_lower_bound, lipschitz_upper_bound, purity_radius
from .logit_margin import logit_margins
from .margins import linearized_margins, summarize_margins
from .pvalues import MarginPValues, detection_scores, threshold_at_fpr
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
    "lipschitz_upper_bound",
    "lipschitz_lower_bound",
    "purity_radius",
    "linearized_margins",
    "summarize_margins",
    "MarginPValues",
    "detection_scores",
    "threshold_at_fpr",
    "adversarial_distances",
    "distance_summary",
    "error_at_eps",
    "linearized_input_margins",
    "margin_report",
    "median_adversarial_distance",
    "rho_adv",
]
