"""Loss functions: the large-margin loss of Elsayed et al. (2018), the baselines and the other seed
methods, each a registry entry (:data:`LOSS_REGISTRY`)."""

# The registration order is the order `deepmargin losses` and `--loss` list them in.
from .cross_entropy import LogitsCriterion
from .hinge import MulticlassHingeLoss, multiclass_hinge_loss
from .large_margin import LargeMarginLoss, default_margin_layers, large_margin_loss, linearized_distances
from .gradient_margin import GradientMarginLoss, gradient_margin_loss  # noqa: I001
from .input_gradient import InputGradientLoss, input_gradient_loss
from .logit_margin import LogitMarginLoss, logit_margin_loss
from .registry import (LOSS_REGISTRY, LossOption, LossSpec, loss_options_of, loss_spec, register_loss,
                       resolve_loss_options, unregister_loss)
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
    "unregister_loss",
    "loss_spec",
    "loss_options_of",
    "LogitsCriterion",
    "default_margin_layers",
]
