"""Symmetric label noise (the noisy-label protocol of Elsayed et al. 2018, Sec. 4.2.1)."""

from __future__ import annotations

import logging

import torch

from ._validation import check_fraction, is_int

__all__ = ["corrupt_labels"]

logger = logging.getLogger(__name__)


def corrupt_labels(
    y: torch.Tensor, fraction: float, num_classes: int, *, seed: int | torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip exactly ``round(fraction * N)`` labels, each to a different, uniformly drawn class.

    The flipped samples are drawn uniformly without replacement; a flipped label becomes
    ``(y + k) mod C`` with ``k`` uniform on ``{1, ..., C - 1}``, i.e. uniform over the
    ``C - 1`` other classes. ``round`` is Python's (half to even). The input is not modified.

    Args:
        y: integer class labels in ``[0, num_classes - 1]``.
        fraction: share of labels to flip, float in ``[0, 1]``.
        num_classes: number of classes ``C >= 2``.
        seed: non-negative int seed or a CPU ``torch.Generator`` (advanced in place).

    Returns:
        ``(new_labels, flipped)``: labels with ``y``'s dtype and device, and a bool mask of
        the flipped samples (``new_labels != y`` exactly where ``flipped``).

    Shape:
        - y: ``(N,)``
        - new_labels, flipped: ``(N,)``

    Example:
        >>> y = torch.arange(10) % 5
        >>> y_noisy, flipped = corrupt_labels(y, 0.4, 5, seed=0)
        >>> int(flipped.sum()), bool((y_noisy[flipped] != y[flipped]).all())
        (4, True)

    Reference:
        Elsayed et al., "Large Margin Deep Networks for Classification", NeurIPS 2018,
        Sec. 4.2.1 (noisy labels, 0% to 80% flipped, fixed throughout training).
    """
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        got = f"{type(y).__name__} {getattr(y, 'dtype', '')} {tuple(getattr(y, 'shape', ()))}".strip()
        raise TypeError(f"The 'y' parameter of corrupt_labels must be an integer torch.Tensor of shape (N,). Got {got} instead.")
    fraction = check_fraction(fraction, name="fraction", owner="corrupt_labels", low_open=False, high_open=False)
    if not is_int(num_classes) or int(num_classes) < 2:
        raise ValueError(f"The 'num_classes' parameter of corrupt_labels must be an int >= 2. Got {num_classes!r} instead.")
    num_classes = int(num_classes)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"The 'y' parameter of corrupt_labels must hold labels in [0, num_classes - 1] = [0, {num_classes - 1}]. "
            f"Got labels in [{int(y.min())}, {int(y.max())}] instead."
        )
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        message = f"The 'seed' parameter of corrupt_labels must be a non-negative int or a torch.Generator. Got {seed!r} instead."
        if not is_int(seed):
            raise TypeError(message)
        if int(seed) < 0:
            raise ValueError(message)
        generator = torch.Generator().manual_seed(int(seed))

    n = y.shape[0]
    n_flip = round(fraction * n)
    y_cpu = y.detach().to("cpu", torch.int64)
    chosen = torch.randperm(n, generator=generator, device=generator.device)[:n_flip].cpu()
    offsets = torch.randint(1, num_classes, (n_flip,), generator=generator, device=generator.device).cpu()
    new = y_cpu.clone()
    new[chosen] = (y_cpu[chosen] + offsets) % num_classes
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[chosen] = True
    logger.debug("corrupt_labels: flipped %d of %d labels (fraction=%g)", n_flip, n, fraction)
    return new.to(device=y.device, dtype=y.dtype), flipped.to(y.device)
