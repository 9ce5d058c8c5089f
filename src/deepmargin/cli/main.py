"""The ``deepmargin`` command: one subcommand per module of :mod:`deepmargin.cli`.

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType


#: Each subcommand's one-line help, in the order ``--help`` lists them: the one place these lines are
#: written (each module's ``HELP`` reads it), so ``deepmargin --help`` imports no subcommand module.
COMMANDS: dict[str, str] = {
    "train": "train a model (cross-entropy, hinge or large margin); writes metrics and checkpoints to --out",
    "evaluate": "test accuracy and per-layer linearised margins of a checkpoint",
    "attack": "accuracy vs epsilon under attacks (FGSM to AutoAttack) and noise, white-box and transfer, of checkpoints "
              "or any classifier",
    "robustness": "distance to the decision boundary (minimum-norm attacks, linearised margins, rho_adv) and AutoAttack "
                  "robust accuracy, of checkpoints or any classifier",
    "detect": "detect adversarial inputs by their margin p-value (Kesidis et al.): AUC, TPR at a false-positive rate",
    "experiment": "run a study of Elsayed et al. (noisy-labels, limited-data, adversarial, or all), or compare-methods "
                  "(every margin method side by side), and write rows, plots and a report",
    "report": "merge a study's shards into DIR/rows.csv and rows.jsonl, redraw its plots and write DIR/report.md and "
              "report.html",
    "demo": "train cross-entropy and large-margin models on digits and a toy set; print a table, write results and a "
            "picture",
    "layers": "print a model's layer names, module types and output shapes",
    "losses": "list the training losses with their options and defaults",
}

#: Subcommand modules, in the order ``--help`` lists them. Missing optional ones are skipped.
SUBCOMMANDS = tuple(COMMANDS)

#: Errors that come from bad user input; they are reported in one line instead of a traceback.
USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError)

#: Parts of the messages torch raises (RuntimeError, AssertionError) for a device this machine or
#: torch build cannot use; such errors are user errors too (a bad ``--device``), others are bugs.
_DEVICE_ERROR_TEXTS = (
    "not compiled with cuda",
    "not linked with support for",
    "device type at start of device string",
    "invalid device string",
    "no cuda gpus are available",
    "invalid device ordinal",
    "found no nvidia driver",
)


def _is_device_error(exc: BaseException) -> bool:
    if not isinstance(exc, (RuntimeError, AssertionError)):
        return False
    text = str(exc).lower()
    return any(part in text for part in _DEVICE_ERROR_TEXTS)


def _check_device_option(args: argparse.Namespace) -> None:
    """Check ``--device`` (of any subcommand that has it) before the subcommand starts."""
    device = getattr(args, "device", None)
    if isinstance(device, str):
        from ..training.config import resolve_device

        resolve_device(device, owner=f"deepmargin {args.command}", name="--device")

_package = "deepmargin"


def _load(name: str) -> ModuleType | None:
    module_name = f"{__package__}.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # the subcommand module itself is not there (yet)
            return None
        raise


def build_parser(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The argument parser and a map from subcommand name to its module.

    With ``argv``, only the subcommand it names gets its full parser (the others are listed with
    their one-line help): building a parser can import what its options list (datasets, models,
    losses), which ``deepmargin --help`` or a mistyped command need not wait for. Without it,
    every subcommand's full parser is built.
    """
    parser = argparse.ArgumentParser(
        prog="deepmargin",
        description="Large-margin training of deep classifiers (Elsayed et al. 2018) and margin/robustness measurement.",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: tracebacks on errors)")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen_command(argv) if argv is not None else None
    modules: dict[str, ModuleType] = {}
    for name in SUBCOMMANDS:
        if argv is not None and name != chosen:  # listed only: its module is not imported
            subparsers.add_parser(name, help=COMMANDS[name])
            continue
        module = _load(name)
        if module is None:
            continue
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for added in set(subparsers.choices) - before:
            modules[added] = module
    return parser, modules


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option of the main parser."""
    for word in argv:
        if word.startswith("-"):
            continue
        return word if word in SUBCOMMANDS else None
    return None


def _configure_logging(verbose: int, quiet: bool) -> tuple[logging.Handler, int]:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if level > logging.DEBUG else "%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    logger = logging.getLogger(_package)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler, previous


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``deepmargin`` command line; returns the exit status (0 on success).

    Errors caused by the input (bad options, missing files, a configuration that does not
    match the run being resumed, a ``--device`` this machine cannot use) print one line
    ``deepmargin COMMAND: error: ...`` and return 2.

    Example:
        >>> main(["layers", "--model", "mlp", "--input-shape", "2"])  # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, modules = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handler, previous_level = _configure_logging(args.verbose, args.quiet)
    try:
        _check_device_option(args)
        return int(modules[args.command].run(args) or 0)
    except (*USER_ERRORS, RuntimeError, AssertionError) as exc:
        user = isinstance(exc, USER_ERRORS) or _is_device_error(exc) or getattr(exc, "user_error", False)
        if args.verbose >= 2 or not user:
            raise
        print(f"deepmargin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepmargin {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        logger = logging.getLogger(_package)
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        handler.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
