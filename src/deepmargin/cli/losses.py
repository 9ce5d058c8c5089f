"""``deepmargin losses``: every training loss with its options and defaults."""

from __future__ import annotations

import argparse

HELP = "list the training losses (built-in and registered) with their options and defaults"

_BUILT_IN = {
    "ce": ("cross-entropy", "", ()),
    "hinge": ("multiclass hinge + hinge_ce_weight x cross-entropy (Elsayed et al.'s second baseline)", "",
              ("hinge_margin", "hinge_ce_weight")),
    "margin": ("the large-margin loss of Elsayed et al. (2018) + ce_weight x cross-entropy", "",
               ("layers", "gamma", "alpha", "top_k", "norm", "aggregation", "layer_weights", "epsilon", "approximate",
                "scores", "exact_per_sample", "margin_weight", "ce_weight")),
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``losses`` subcommand."""
    return subparsers.add_parser("losses", help=HELP, description=HELP + ". Registered losses take "
                                 "`deepmargin train --loss NAME --loss-option KEY=VALUE`.")


def run(args: argparse.Namespace) -> int:
    """Print the table of losses."""
    from ..losses import LOSS_REGISTRY
    from ..training import TrainConfig

    defaults = TrainConfig().to_dict()
    for name, (summary, _, fields) in _BUILT_IN.items():
        print(f"{name}: {summary}")
        for f in fields:
            print(f"    --{f.replace('_', '-'):<22} default {defaults[f]!r}  (TrainConfig.{f})")
    for name, spec in LOSS_REGISTRY.items():
        print(f"{name}: {spec.summary} [{spec.reference}]")
        for option in spec.options:
            print(f"    {option.name:<24} default {option.default!r}, {option.expected}: {option.help}")
    return 0
