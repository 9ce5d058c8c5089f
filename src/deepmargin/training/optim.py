"""Optimisers, per-epoch learning-rate schedules and seeding."""

from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np
import torch

from .config import DEFAULT_MOMENTUM, LR_SCHEDULES, OPTIMIZERS

__all__ = ["build_optimizer", "build_scheduler", "derive_seed", "seed_everything"]


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    momentum: float | None = None,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Create ``"sgd"`` (momentum, default 0.9), ``"rmsprop"`` (momentum default 0, as the paper's
    MNIST margin models) or ``"adam"``; ``weight_decay`` is the L2 coefficient of the optimiser.

    ``momentum=None`` means the optimiser's default (:data:`deepmargin.training.config.DEFAULT_MOMENTUM`);
    this is the only place the default is resolved, so a configuration that leaves it unset follows
    whichever optimiser it names. Adam takes no momentum: a value other than ``None`` is an error.

    Example:
        >>> opt = build_optimizer("sgd", torch.nn.Linear(2, 2).parameters(), lr=0.1)
        >>> opt.defaults["momentum"]
        0.9
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"The 'name' parameter of build_optimizer must be one of {list(OPTIMIZERS)}. Got {name!r} instead.")
    if name == "adam":
        if momentum is not None:
            raise ValueError(
                f"The 'momentum' parameter of build_optimizer must be None with 'adam' (Adam takes no momentum). "
                f"Got {momentum!r} instead."
            )
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    value = DEFAULT_MOMENTUM[name] if momentum is None else float(momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=value, weight_decay=weight_decay)
    return torch.optim.RMSprop(params, lr=lr, momentum=value, weight_decay=weight_decay)


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, *, epochs: int, decay: float = 0.1, step: int = 10
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-epoch learning-rate schedule (call ``scheduler.step()`` once per epoch).

    ``"none"`` returns ``None``; ``"step"``: lr * decay ** (epoch // step); ``"exponential"``:
    lr * decay ** epoch; ``"cosine"``: lr * (1 + cos(pi * epoch / epochs)) / 2.
    """
    if name == "none":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=decay)
    if name == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=decay)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    raise ValueError(
        f"The 'name' parameter of build_scheduler must be one of {list(LR_SCHEDULES)}. Got {name!r} instead."
    )


def derive_seed(seed: int, *stages: int) -> int:
    """A 31-bit seed derived from ``seed`` and ``stages`` (e.g. the epoch), independent across stages."""
    return int(np.random.SeedSequence([seed, *stages]).generate_state(1)[0] & 0x7FFFFFFF)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
