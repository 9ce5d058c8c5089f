"""deepmargin: large-margin training of deep classifiers, and their margins and robustness."""

from .losses import LargeMarginLoss, MulticlassHingeLoss, large_margin_loss, multiclass_hinge_loss

__version__ = "0.1.0"

__all__ = ["large_margin_loss", "LargeMarginLoss", "multiclass_hinge_loss", "MulticlassHingeLoss", "__version__"]
