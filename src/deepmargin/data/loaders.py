"""Seeded mini-batch loaders over a :class:`Split`."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from ._validation import check_seed, is_int
from .types import Split

__all__ = ["make_loader"]


def make_loader(split: Split, *, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A single-process ``DataLoader`` of ``(x, y)`` batches whose order is fixed by ``seed``.

    With ``shuffle=True`` the loader owns a ``torch.Generator`` seeded with ``seed``: two
    loaders built with the same arguments yield identical batches epoch after epoch, and each
    epoch of one loader uses a new permutation. The tensors stay on the split's device.

    Args:
        split: the data.
        batch_size: positive int.
        shuffle: reshuffle every epoch (training) or keep the split's order (evaluation).
        seed: non-negative int seed for the shuffling.
        drop_last: drop the last incomplete batch.

    Returns:
        ``torch.utils.data.DataLoader`` over a ``TensorDataset(split.x, split.y)``.

    Example:
        >>> s = Split(torch.rand(10, 2), torch.arange(10) % 2)
        >>> [len(yb) for _, yb in make_loader(s, batch_size=4, shuffle=True, seed=0)]
        [4, 4, 2]
    """
    if not isinstance(split, Split):
        raise TypeError(f"The 'split' parameter of make_loader must be a Split. Got {type(split).__name__} instead.")
    if not is_int(batch_size) or int(batch_size) < 1:
        raise ValueError(f"The 'batch_size' parameter of make_loader must be an int >= 1. Got {batch_size!r} instead.")
    seed = check_seed(seed, owner="make_loader")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(split.x, split.y),
        batch_size=int(batch_size),
        shuffle=bool(shuffle),
        drop_last=bool(drop_last),
        generator=generator,
        num_workers=0,
    )
