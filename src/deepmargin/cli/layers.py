"""``deepmargin layers``: list a model's layer names (usable as margin layers)."""

from __future__ import annotations

from .main import COMMANDS

import argparse

from ._common import positive_int, print_layer_table

HELP = COMMANDS["layers"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``layers`` subcommand."""
    from ..models import MODELS

    p = subparsers.add_parser(
        "layers", help=HELP,
        description=HELP + ". 'input' is the model input; 'hidden' marks the post-activation layers that "
        "the default margin uses (with the input).",
    )
    p.add_argument("--model", choices=MODELS, required=True, help="architecture")
    p.add_argument("--input-shape", type=positive_int, nargs="+", metavar="N",
                   help="one sample's shape, e.g. 1 28 28 (default: the model's own default)")
    p.add_argument("--num-classes", type=positive_int, default=10, help="number of classes")
    p.add_argument("--hidden-sizes", type=positive_int, nargs="+", metavar="N", help="mlp: hidden layer widths")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="with (or --no-batch-norm: without) batch norm (default: the model's own default)")
    p.add_argument("--dropout", type=float, default=0.0, help="with dropout")
    return p


def run(args: argparse.Namespace) -> int:
    """Build the model and print its layer table."""
    from ..models import build_model
    from ..models.registry import default_input_shape

    shape = tuple(args.input_shape) if args.input_shape else default_input_shape(args.model)
    kwargs = {"dropout": args.dropout}
    if args.batch_norm is not None:  # else the model's default (batch norm on for wrn, off for the others)
        kwargs["batch_norm"] = args.batch_norm
    if args.hidden_sizes:
        kwargs["hidden_sizes"] = tuple(args.hidden_sizes)
    model = build_model(args.model, num_classes=args.num_classes, input_shape=shape, **kwargs)
    print_layer_table(model, shape)
    return 0
