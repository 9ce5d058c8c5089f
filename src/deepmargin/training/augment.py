r"""Data augmentation of training batches: random shifts with zero fill and random horizontal flips.

The usual CIFAR-10 augmentation (``TrainConfig.augment="crop-flip"``): pad each image with
``padding`` zeros on every side and crop a random window of the original size, then flip the
result horizontally with probability 1/2. A random crop of the padded image is the same as a
shift of the image by :math:`(s_y, s_x)`, each uniform in :math:`\{-p, \dots, p\}`, with the
uncovered pixels set to 0:

.. math::
    \mathrm{out}[c, i, j] = x[c, i + s_y, j + s_x] \text{ where the index is inside the image, else } 0.

All of it is batched tensor work (one ``gather`` per axis, one ``where``); the random numbers come
from torch's global generator (on the CPU, the same on every device), which the trainer reseeds
every epoch, so runs stay reproducible and resumable. Only images ``(N, C, H, W)`` can be augmented.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import AUGMENTATIONS

__all__ = ["augment_batch", "check_augmentable", "flip", "shift"]

logger = logging.getLogger(__name__)


def check_augmentable(input_shape: Sequence[int], augment: str, *, dataset: str = "the dataset") -> None:
    """Raise a ValueError unless inputs of ``input_shape`` (without the batch axis) can take ``augment``.

    Args:
        input_shape: the shape of one input, e.g. ``(1, 8, 8)`` or ``(2,)``.
        augment: a value of :data:`deepmargin.training.config.AUGMENTATIONS`.
        dataset: the dataset's name, for the message.

    Example:
        >>> check_augmentable((3, 32, 32), "crop-flip")
        >>> check_augmentable((2,), "none")
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"The 'augment' parameter of TrainConfig must be one of {list(AUGMENTATIONS)}. Got {augment!r} instead.")
    if augment != "none" and len(tuple(input_shape)) != 3:
        raise ValueError(
            f"The 'augment' parameter of TrainConfig must be 'none' for {dataset}, whose inputs have shape "
            f"{tuple(input_shape)}: augmentation needs images (C, H, W). Got {augment!r} instead."
        )


def _check_images(x: Tensor, owner: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"The 'x' parameter of {owner} must be a batch of images (N, C, H, W). Got shape {shape} instead.")


def shift(x: Tensor, padding: int, *, shifts: Tensor | None = None) -> Tensor:
    """Shift every image by its own random offset in ``[-padding, padding]`` on both axes, zero fill.

    The same as zero padding by ``padding`` followed by a random crop of the original size.

    Args:
        x: images ``(N, C, H, W)``.
        padding: the largest shift, an int >= 0 (0 returns ``x`` unchanged, drawing nothing).
        shifts: ``(N, 2)`` integer offsets ``(s_y, s_x)`` in ``[-padding, padding]``; ``None`` to
            draw them uniformly from torch's global generator (CPU).

    Returns:
        A tensor like ``x``: ``out[n, c, i, j] = x[n, c, i + s_y, j + s_x]`` inside the image, else 0.

    Example:
        >>> x = torch.arange(9.0).reshape(1, 1, 3, 3)
        >>> shift(x, 1, shifts=torch.tensor([[1, 0]]))[0, 0]  # rows move up by one
        tensor([[3., 4., 5.],
                [6., 7., 8.],
                [0., 0., 0.]])
    """
    _check_images(x, "shift")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"The 'padding' parameter of shift must be an int >= 0. Got {padding!r} instead.")
    n, c, h, w = x.shape
    if shifts is None:
        if padding == 0:
            return x
        shifts = torch.randint(-padding, padding + 1, (n, 2))
    shifts = shifts.to(device=x.device, dtype=torch.int64)
    if shifts.shape != (n, 2) or bool((shifts.abs() > padding).any()):
        raise ValueError(
            f"The 'shifts' parameter of shift must be an int tensor of shape ({n}, 2) with values in "
            f"[-{padding}, {padding}]. Got shape {tuple(shifts.shape)} instead."
        )
    if padding == 0:
        return x
    padded = F.pad(x, (padding, padding, padding, padding))
    # row i of the output is row i + s_y of x, i.e. row i + s_y + padding of the padded image
    rows = torch.arange(h, device=x.device) + (shifts[:, 0:1] + padding)  # (N, H)
    cols = torch.arange(w, device=x.device) + (shifts[:, 1:2] + padding)  # (N, W)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def flip(x: Tensor, *, flips: Tensor | None = None) -> Tensor:
    """Mirror each image horizontally (last axis) with probability 1/2.

    Args:
        x: images ``(N, C, H, W)``.
        flips: ``(N,)`` bool, which images to flip; ``None`` to draw them from torch's global
            generator (CPU).

    Returns:
        A tensor like ``x``.

    Example:
        >>> x = torch.arange(3.0).reshape(1, 1, 1, 3)
        >>> flip(x, flips=torch.tensor([True]))
        tensor([[[[2., 1., 0.]]]])
    """
    _check_images(x, "flip")
    if flips is None:
        flips = torch.rand(len(x)) < 0.5
    flips = flips.to(device=x.device, dtype=torch.bool)
    if flips.shape != (len(x),):
        raise ValueError(f"The 'flips' parameter of flip must be a bool tensor of shape ({len(x)},). "
                         f"Got shape {tuple(flips.shape)} instead.")
    return torch.where(flips[:, None, None, None], x.flip(-1), x)


def augment_batch(x: Tensor, augment: str, padding: int = 4) -> Tensor:
    """Augment a training batch as ``TrainConfig.augment`` says (random numbers from torch's generator).

    Args:
        x: images ``(N, C, H, W)`` (any input for ``"none"``).
        augment: ``"none"`` (``x`` itself), ``"crop"`` (:func:`shift` by up to ``padding``),
            ``"flip"`` (:func:`flip`) or ``"crop-flip"`` (shift, then flip).
        padding: the largest shift of ``"crop"``/``"crop-flip"``.

    Returns:
        The augmented batch, like ``x``.

    Example:
        >>> torch.manual_seed(0) and None
        >>> augment_batch(torch.rand(4, 3, 8, 8), "crop-flip", 2).shape
        torch.Size([4, 3, 8, 8])
    """
    if augment == "none":
        return x
    if augment not in AUGMENTATIONS:
        raise ValueError(f"The 'augment' parameter of augment_batch must be one of {list(AUGMENTATIONS)}. "
                         f"Got {augment!r} instead.")
    _check_images(x, "augment_batch")
    if augment in ("crop", "crop-flip"):
        x = shift(x, padding)
    if augment in ("flip", "crop-flip"):
        x = flip(x)
    return x
