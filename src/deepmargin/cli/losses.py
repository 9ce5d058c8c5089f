"""``deepmargin losses``: every training loss with its options and defaults, from the loss registry."""

from __future__ import annotations

from .main import COMMANDS

import argparse

HELP = COMMANDS["losses"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``losses`` subcommand."""
    return subparsers.add_parser("losses", help=HELP, description=HELP + ". Each option is shown with the "
                                 "`deepmargin train` flag that sets it, or as --loss-option KEY=VALUE.")


def run(args: argparse.Namespace) -> int:
    """Print the table of losses."""
    from ..losses import LOSS_REGISTRY

    for name, spec in LOSS_REGISTRY.items():
        print(f"{name}: {spec.summary} [{spec.reference}]")
        for option in spec.options:
            print(f"    {option.setter:<34} default {option.default!r}, {option.expected}: {option.help}")
    return 0
