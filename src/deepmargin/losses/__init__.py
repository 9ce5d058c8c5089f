"""Loss functions: the large-margin loss of Elsayed et al. (2018) and the baselines."""

from .hinge import MulticlassHingeLoss, multiclass_hinge_loss
from .large_margin import LargeMarginLoss, large_margin_loss, linearized_distances

__all__ = [
    "large_margin_loss",
    "linearized_distances",
    "LargeMarginLoss",
    "multiclass_hinge_loss",
    "MulticlassHingeLoss",
]
