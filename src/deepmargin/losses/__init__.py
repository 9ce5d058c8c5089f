"""Loss functions: the large-margin loss of Elsayed et al. (2018) and the baselines."""

from .gradient_margin import GradientMarginLoss, gradient_margin_loss
from .hinge import MulticlassHingeLoss, multiclass_hinge_loss
from .input_gradient import InputGradientLoss, input_gradient_loss
from .large_margin import LargeMarginLoss, large_margin_loss, linearized_distances
from .logit_margin import LogitMarginLoss, logit_margin_loss
from .registry import LOSS_REGISTRY, LossOption, LossSpec, register_loss, resolve_loss_options
from .vat import VATLoss, vat_loss

__all__ = [
    "large_margin_loss",
    "linearized_distances",
    "LargeMarginLoss",
    "multiclass_hinge_loss",
    "MulticlassHingeLoss",
    "gradient_margin_loss",
    "GradientMarginLoss",
    "input_gradient_loss",
    "InputGradientLoss",
    "logit_margin_loss",
    "LogitMarginLoss",
    "vat_loss",
    "VATLoss",
    "LOSS_REGISTRY",
    "LossOption",
    "LossSpec",
    "register_loss",
    "resolve_loss_options",
]
