"""Exceptions raised by the dataset readers."""

from __future__ import annotations

__all__ = ["DatasetFileError"]


class DatasetFileError(ValueError):
    """A dataset file is missing, unreadable or does not have the expected format.

    Raised instead of returning a partially read array. The message names the dataset or
    file, what was expected and what was found, and (for missing files) where to get them.
    Subclasses ``ValueError`` so callers that already handle bad input keep working.

    Example:
        >>> try:
        ...     load_dataset("mnist", root="/nonexistent")  # doctest: +SKIP
        ... except DatasetFileError as err:
        ...     print(err)  # doctest: +SKIP
    """
