"""Capture of intermediate activations of any nn.Module by layer name (forward hooks)."""

from .hooks import INPUT, ActivationCapture, capture_activations, layer_table, list_layers, unwrap_model

__all__ = ["INPUT", "ActivationCapture", "capture_activations", "layer_table", "list_layers", "unwrap_model"]
