"""Seeded, stratified splits and nested subsets of a :class:`Split`."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from ._validation import check_fraction, check_seed, is_int
from .types import Split

__all__ = ["stratified_order", "stratified_split", "subsample"]

logger = logging.getLogger(__name__)


def stratified_order(y: np.ndarray, *, seed: int, one_per_class_first: bool = False) -> np.ndarray:
    """A seeded permutation of ``range(len(y))`` whose every prefix is class-stratified.

    Within each class ``c`` (``n_c`` members) the members are shuffled and the ``r``-th one gets
    the key ``(r + 1/2) / n_c``; all samples are then sorted by key (ties between classes broken
    by a random class priority). The first ``m`` entries therefore contain, for each class, the
    Sainte-Laguë (Webster) apportionment of ``m`` seats to class sizes ``n_c``: within one of
    ``m * n_c / N``. Because divisor methods are house-monotone, taking longer prefixes never
    removes a sample, so subsets of one ordering are nested.

    Args:
        y: integer labels ``(N,)``.
        seed: non-negative int seed.
        one_per_class_first: put one (random) member of every class at the front, so every
            prefix of length ``>= num_classes_present`` contains every class.

    Returns:
        int64 array ``(N,)``, a permutation of ``range(N)``.

    Example:
        >>> order = stratified_order(np.array([0, 0, 0, 1]), seed=0)
        >>> sorted(order.tolist())
        [0, 1, 2, 3]
    """
    y = np.asarray(y)
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(y, return_inverse=True)
    perm = rng.permutation(n)
    inv_perm = inverse[perm]
    key = np.empty(n, dtype=np.float64)
    for c in range(classes.shape[0]):
        members = perm[inv_perm == c]  # class members in random order
        ranks = np.arange(members.shape[0], dtype=np.float64)
        k = (ranks + 0.5) / members.shape[0]
        if one_per_class_first:
            k[0] = -1.0
        key[members] = k
    priority = rng.permutation(classes.shape[0])[inverse]
    return np.lexsort((priority, key)).astype(np.int64)


def _labels_numpy(split: Split) -> np.ndarray:
    return split.y.detach().cpu().numpy()


def stratified_split(split: Split, size: float | int, *, seed: int) -> tuple[Split, Split]:
    """Hold out a seeded, class-stratified part of ``split``.

    The held-out part has ``round(size * N)`` samples when ``size`` is a float in ``[0, 1)``
    and ``size`` samples when it is an int; each class contributes (to within one sample) its
    share ``n_c / N`` of them (see :func:`stratified_order`). Both parts keep the original
    sample order.

    Args:
        split: the split to divide.
        size: fraction (float in ``[0, 1)``) or number (int in ``[0, len(split) - 1]``) of
            samples to hold out.
        seed: non-negative int seed; the same seed gives the same division.

    Returns:
        ``(rest, held_out)``.

    Example:
        >>> s = Split(torch.rand(10, 2), torch.tensor([0] * 5 + [1] * 5))
        >>> rest, held = stratified_split(s, 0.4, seed=0)
        >>> len(rest), len(held), held.y.tolist()
        (6, 4, [0, 0, 1, 1])
    """
    seed = check_seed(seed, owner="stratified_split")
    n = len(split)
    if is_int(size):
        n_held = int(size)  # type: ignore[call-overload]
        if not 0 <= n_held <= max(n - 1, 0):
            raise ValueError(
                f"The 'size' parameter of stratified_split must be a float in [0, 1) or an int in "
                f"[0, len(split) - 1] = [0, {n - 1}]. Got {size!r} instead."
            )
    else:
        try:
            fraction = check_fraction(size, name="size", owner="stratified_split", low_open=False, high_open=True)
        except ValueError:
            raise ValueError(
                f"The 'size' parameter of stratified_split must be a float in [0, 1) or an int in "
                f"[0, len(split) - 1] = [0, {n - 1}]. Got {size!r} instead."
            ) from None
        n_held = min(round(fraction * n), max(n - 1, 0))
    order = stratified_order(_labels_numpy(split), seed=seed)
    held = np.sort(order[:n_held])
    rest = np.sort(order[n_held:])
    return split.take(torch.from_numpy(rest)), split.take(torch.from_numpy(held))


def subsample(split: Split, fraction: float, *, seed: int, stratified: bool = True) -> Split:
    """A seeded subset with ``fraction`` of the samples, nested across fractions.

    Keeps ``max(K, floor(fraction * N))`` samples (``K`` = number of classes present) when
    ``stratified`` and ``max(1, floor(fraction * N))`` otherwise; ``floor`` matches the paper's
    count (0.125% of 55,000 is 68 samples). The subset is a prefix of one seeded ordering
    (:func:`stratified_order` with one member of each class first, or a plain permutation),
    so for the same ``seed`` a smaller fraction's subset is contained in a larger one's, and it
    depends only on ``(split, seed, fraction)``: every model trained with that seed sees the
    same samples. The original sample order is kept.

    Args:
        split: the split to subsample.
        fraction: float in ``(0, 1]``.
        seed: non-negative int seed.
        stratified: keep class proportions (to within one sample per class) and at least one
            sample of every class.

    Returns:
        The subset as a new :class:`Split`.

    Example:
        >>> s = Split(torch.rand(100, 2), torch.arange(100) % 4)
        >>> small, big = subsample(s, 0.1, seed=3), subsample(s, 0.5, seed=3)
        >>> len(small), len(big), sorted(torch.bincount(small.y).tolist())
        (10, 50, [2, 2, 3, 3])

    Reference:
        Elsayed et al., "Large Margin Deep Networks for Classification", NeurIPS 2018,
        Sec. 4.2.2 (training on 100% down to 0.125% of MNIST).
    """
    if len(split) == 0:
        check_fraction(fraction, name="fraction", owner="subsample", low_open=True, high_open=False)
        check_seed(seed, owner="subsample")
        return split
    return split.take(subsample_indices(split, fraction, seed=seed, stratified=stratified))


def subsample_indices(split: Split, fraction: float, *, seed: int, stratified: bool = True) -> torch.Tensor:
    """The sorted int64 indices of the samples :func:`subsample` keeps (the others are the
    left-out samples that semi-supervised training uses unlabelled)."""
    fraction = check_fraction(fraction, name="fraction", owner="subsample", low_open=True, high_open=False)
    seed = check_seed(seed, owner="subsample")
    n = len(split)
    if n == 0:
        return torch.empty(0, dtype=torch.int64)
    y = _labels_numpy(split)
    n_keep = max(1, math.floor(fraction * n + 1e-9))
    if stratified:
        n_keep = max(n_keep, np.unique(y).shape[0])
        order = stratified_order(y, seed=seed, one_per_class_first=True)
    else:
        order = np.random.default_rng(seed).permutation(n)
    n_keep = min(n_keep, n)
    keep = np.sort(order[:n_keep])
    logger.debug("subsample: kept %d of %d samples (fraction=%g, seed=%d)", n_keep, n, fraction, seed)
    return torch.from_numpy(keep).to(torch.int64)
