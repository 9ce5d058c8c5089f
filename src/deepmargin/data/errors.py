"""Exceptions raised by the dataset readers."""

from __future__ import annotations

__all__ = ["DatasetFileError", "DownloadError"]


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


class DownloadError(DatasetFileError):
    """Dataset files could not be downloaded: offline, every mirror failed, or a checksum mismatch.

    The message names the files, their expected checksums and the folder to put them in by hand.
    A :class:`DatasetFileError`, so code that handles missing dataset files handles this too.
    """
