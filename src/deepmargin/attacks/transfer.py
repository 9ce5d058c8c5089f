"""Black-box transfer attacks: craft adversarial inputs on a source model, evaluate a target model.

Elsayed et al. (2018, Sec. 4.2.3) measure "black-box" robustness this way: the attacker is a
cross-entropy model, its IFGSM adversarials are fed to the defended (e.g. large-margin) model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._sweep import TransferAttack, accepts_generator, predict  # TransferAttack: re-exported
from .evaluate import accuracy_vs_epsilon

logger = logging.getLogger(__name__)

__all__ = ["TransferAttack", "transfer_accuracy"]


def transfer_accuracy(
    attack: Any,
    source: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilons: Sequence[float] | None = None,
    batch_size: int = 256,
    seed: int | None = None,
) -> float | list[float]:
    """Accuracy of ``target`` on adversarials that ``attack`` crafts on ``source``.

    Args:
        attack: any attack object.
        source: the model the attack differentiates.
        target: the evaluated model (never queried by the attack).
        x: clean inputs; y: labels (int64).
        epsilons: radii; ``None`` for one evaluation at the attack's own setting.
        batch_size: inputs per attack call. Default 256.
        seed: seeds the random start of the attack (default: the attack's own seed).

    Shape:
        x: ``(N, *)``; y: ``(N,)``.

    Returns:
        The target's accuracy (a float), or one accuracy per radius in ``epsilons``.

    Example:
        >>> from deepmargin.attacks import FGSM
        >>> src, tgt = nn.Linear(4, 3).eval(), nn.Linear(4, 3).eval()
        >>> accs = transfer_accuracy(FGSM(eps=0.1), src, tgt, torch.rand(6, 4), torch.zeros(6, dtype=torch.long),
        ...                          epsilons=[0.0, 0.1])
        >>> len(accs)
        2
    """
    if epsilons is None:
        if not isinstance(source, nn.Module) or not isinstance(target, nn.Module):
            raise TypeError("The 'source' and 'target' parameters of transfer_accuracy must be nn.Module instances.")
        correct = 0
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            kwargs = {}
            if seed is not None and accepts_generator(attack.__call__):
                kwargs["generator"] = torch.Generator().manual_seed(int(seed))
            x_adv = attack(source, xb, yb, **kwargs)
            correct += int((predict(target, x_adv).to(yb.device) == yb).sum().item())
        return correct / max(1, x.shape[0])
    rows = accuracy_vs_epsilon(
        target, attack, x, y, epsilons, source=source, batch_size=batch_size, seed=seed
    )
    return [row["accuracy"] for row in rows]
