"""Explicit input normalisation: attack in raw input space, feed the model normalised inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize", "normalized"]


class Normalize(nn.Module):
    r"""Per-channel affine normalisation ``(x - mean) / std`` as a module.

    Attacks bound their perturbations in the space of the tensors they are given (with
    ``bounds``, default ``(0, 1)``). A model trained on normalised inputs is attacked in
    raw pixel space by putting this module in front of it::

        model = nn.Sequential(Normalize(mean, std), net)    # or normalized(net, mean, std)
        x_adv = PGD(eps=8 / 255)(model, x_raw, y)           # eps and bounds in raw units

    .. math:: \mathrm{Normalize}(x)_{c} = (x_{c} - \mu_c) / \sigma_c

    Args:
        mean: one value per channel (or a single value).
        std: one positive value per channel (or a single value).

    Shape:
        input: ``(N, C, *)`` (channels on dim 1) or ``(N, C)``; output: same.

    Example:
        >>> norm = Normalize([0.5], [0.25])
        >>> norm(torch.ones(1, 1, 2, 2)).flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or std_t.numel() == 0:
            raise ValueError(
                f"The 'mean' and 'std' parameters of Normalize must be non-empty. Got {mean!r} and {std!r} instead."
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"The 'std' parameter of Normalize must be positive. Got {std!r} instead.")
        if mean_t.numel() != std_t.numel() and min(mean_t.numel(), std_t.numel()) != 1:
            raise ValueError(
                "The 'mean' and 'std' parameters of Normalize must have the same length (one per channel). "
                f"Got {mean_t.numel()} and {std_t.numel()} instead."
            )
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = self.mean.to(dtype=x.dtype).view(shape)
        std = self.std.to(dtype=x.dtype).view(shape)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def normalized(model: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]) -> nn.Sequential:
    """Return ``nn.Sequential(Normalize(mean, std), model)``: a model that takes raw inputs.

    Example:
        >>> net = normalized(nn.Flatten(), [0.5], [0.5])
        >>> net(torch.ones(1, 1, 1, 1)).tolist()
        [[1.0]]
    """
    return nn.Sequential(Normalize(mean, std), model)
