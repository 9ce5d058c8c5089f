"""Capture of intermediate activations of any nn.Module by layer name (forward hooks), and module modes."""

from .hooks import INPUT, ActivationCapture, capture_activations, layer_table, list_layers, unwrap_model
from .modes import eval_mode

__all__ = [
    "INPUT", "ActivationCapture", "capture_activations", "eval_mode", "layer_table", "list_layers", "unwrap_model",
]
