"""deepmargin: large-margin training of deep classifiers, and their margins and robustness.

The loss functions are imported on first use (``deepmargin.large_margin_loss``, ``from deepmargin
import LargeMarginLoss``), so that ``deepmargin --help`` does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["large_margin_loss", "LargeMarginLoss", "multiclass_hinge_loss", "MulticlassHingeLoss", "__version__"]

_LAZY = {"large_margin_loss": "losses", "LargeMarginLoss": "losses", "multiclass_hinge_loss": "losses",
         "MulticlassHingeLoss": "losses"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
