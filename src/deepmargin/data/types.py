"""Containers for a dataset split and a loaded dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["DataBundle", "Split"]


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: inputs and integer class labels.

    Equality is identity (``eq=False``): comparing tensors element-wise is never what ``==``
    on two splits should mean.

    Args:
        x: inputs, float32 for the built-in datasets. Images are scaled to ``[0, 1]``;
            the 2-D toy sets are standardised and unbounded.
        y: class indices, int64.

    Shape:
        - x: ``(N, *input_shape)``
        - y: ``(N,)``

    Example:
        >>> s = Split(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
        >>> len(s), s[1][1].item()
        (4, 1)
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not self.x.is_floating_point() or self.x.dim() < 1:
            got = f"{type(self.x).__name__} {getattr(self.x, 'dtype', '')}".strip()
            raise TypeError(f"The 'x' parameter of Split must be a floating-point torch.Tensor of shape (N, ...). Got {got} instead.")
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64 or self.y.dim() != 1:
            got = f"{type(self.y).__name__} {getattr(self.y, 'dtype', '')} {tuple(getattr(self.y, 'shape', ()))}".strip()
            raise TypeError(f"The 'y' parameter of Split must be an int64 torch.Tensor of shape (N,). Got {got} instead.")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"The 'x' and 'y' parameters of Split must have the same length. Got {self.x.shape[0]} and {self.y.shape[0]} instead."
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x[index], y[index])``, so a split can be used as a ``torch.utils.data.Dataset``."""
        return self.x[index], self.y[index]

    def take(self, indices: torch.Tensor) -> Split:
        """The sub-split at ``indices`` (an int64 tensor or anything ``torch.as_tensor`` accepts)."""
        idx = torch.as_tensor(indices, dtype=torch.int64, device=self.y.device)
        return Split(self.x[idx.to(self.x.device)], self.y[idx])

    def to(self, device: torch.device | str) -> Split:
        """A copy of the split on ``device``."""
        return Split(self.x.to(device), self.y.to(device))

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, x={tuple(self.x.shape)} {self.x.dtype}, y={self.y.dtype})"


@dataclass(frozen=True, eq=False)
class DataBundle:
    """A loaded dataset: train/val/test splits plus the metadata needed to use them.

    Args:
        name: canonical dataset name (one of ``DATASETS``), or the file stem of a user's .npz file.
        train: training split, after the validation split, ``train_fraction`` subsampling and
            label noise.
        val: validation split (clean labels).
        test: test split (clean labels; fixed for a dataset, independent of the seed).
        num_classes: number of classes ``C``.
        input_shape: shape of one input, e.g. ``(1, 28, 28)``, ``(3, 32, 32)`` or ``(2,)``.
        bounds: ``(0.0, 1.0)`` for images (pass to attacks), ``None`` for the unbounded toy sets.
        info: plain JSON-able metadata (seed, label_noise, n_flipped, train_fraction, sizes,
            root, files, ...).
        classes: human-readable class names, ``C`` of them.
        train_clean_y: the training labels before label noise (equal to ``train.y`` when
            ``label_noise == 0``).
        unlabelled: the training samples ``train_fraction`` left out, when loaded with
            ``keep_unlabelled=True`` (semi-supervised training); else ``None``.

    Example:
        >>> b = load_dataset("digits", seed=0)  # doctest: +SKIP
        >>> b.input_shape, b.num_classes, b.bounds  # doctest: +SKIP
        ((1, 8, 8), 10, (0.0, 1.0))
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    bounds: tuple[float, float] | None
    info: dict[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    train_clean_y: torch.Tensor | None = None
    unlabelled: Split | None = None

    @property
    def flipped_mask(self) -> torch.Tensor:
        """Bool ``(len(train),)``: which training labels were changed by label noise."""
        if self.train_clean_y is None:
            return torch.zeros(len(self.train), dtype=torch.bool, device=self.train.y.device)
        return self.train_clean_y != self.train.y

    def __repr__(self) -> str:
        return (
            f"DataBundle(name={self.name!r}, train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape}, bounds={self.bounds})"
        )
