"""The package's one error template for invalid arguments (scikit-learn's wording).

Every validator builds its message here, so that all of them read the same way::

    The 'top_k' parameter of large_margin_loss must be an int in [1, num_classes - 1]. Got 12 instead.

This module imports nothing from the package, so any subpackage can use it.
"""

from __future__ import annotations

__all__ = ["param_error"]


def param_error(owner: str, name: str, expected: str, got: object, exc: type[Exception] = ValueError) -> Exception:
    """Build (not raise) the error "The '<name>' parameter of <owner> must be <expected>. Got <got!r> instead."

    Args:
        owner: the function or class that received the argument, e.g. ``'large_margin_loss'``.
        name: the parameter's name.
        expected: what it must be, phrased to follow "must be", e.g. ``'an int >= 1'``.
        got: what came; quoted with ``repr`` (pass a description string such as
            ``'shape (3, 4)'`` to quote that instead).
        exc: the exception class, ``ValueError`` (default) or ``TypeError``.

    Returns:
        The exception, for ``raise param_error(...)``.

    Example:
        >>> param_error("MLP", "dropout", "a float in [0, 1)", 1.5)
        ValueError("The 'dropout' parameter of MLP must be a float in [0, 1). Got 1.5 instead.")
    """
    return exc(f"The '{name}' parameter of {owner} must be {expected}. Got {got!r} instead.")
