"""Helpers shared by the subcommands: argument types and printing."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import torch
from torch import nn


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1. Got {text!r} instead.") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1. Got {text!r} instead.")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a float > 0. Got {text!r} instead.") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a float > 0. Got {text!r} instead.")
    return value


def unit_float(text: str) -> float:
    """argparse type: a float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a float in [0, 1). Got {text!r} instead.") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a float in [0, 1). Got {text!r} instead.")
    return value


def print_layer_table(model: nn.Module, input_shape: Sequence[int]) -> None:
    """Print the names usable as margin layers, with module type and output shape."""
    from ..capture import layer_table
    from ..reports.tables import format_table

    was_training = model.training
    model.eval()
    try:
        rows = layer_table(model, torch.zeros(2, *input_shape))
    finally:
        model.train(was_training)
    hidden = set(getattr(model, "hidden_layers", ()))
    table = [
        {"name": r["name"], "type": r["type"], "output shape": "x".join(map(str, r["shape"])) if isinstance(r["shape"], tuple) else r["shape"],
         "hidden": "yes" if r["name"] in hidden else ""}
        for r in rows
    ]
    print(format_table(table, ["name", "type", "output shape", "hidden"]))
