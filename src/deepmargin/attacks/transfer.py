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

logger = logging.getLogger(__name__)

__all__ = ["TransferAttack", "transfer_accuracy"]


class TransferAttack:
    """Wrap an attack so that it is always crafted on ``source``, whatever model it is called with.

    ``TransferAttack(attack, source)(target, x, y)`` returns ``attack(source, x, y)``: the
    ``target`` is never queried, so accuracy of ``target`` on the result is its black-box
    (transfer) accuracy. ``sweep`` works the same way. Passed to
    :func:`~deepmargin.attacks.accuracy_vs_epsilon`, it yields ``'transfer'`` rows whose
    ``source`` column is ``source_name``.

    Args:
        attack: any attack object (``FGSM``, ``IFGSM``, ``PGD``, ``DeepFool``, ...).
        source: the model the attack differentiates.
        source_name: name of the source model in result rows. Default ``'source'``.

    Example:
        >>> from deepmargin.attacks import FGSM
        >>> src, tgt = nn.Linear(4, 3).eval(), nn.Linear(4, 3).eval()
        >>> x, y = torch.rand(2, 4), torch.tensor([0, 1])
        >>> torch.equal(TransferAttack(FGSM(eps=0.1), src)(tgt, x, y), FGSM(eps=0.1)(src, x, y))
        True

    Reference:
        Papernot et al., "Practical black-box attacks against machine learning", 2017;
        Elsayed et al., NeurIPS 2018, Sec. 4.2.3 (black-box IFGSM from a cross-entropy model).
    """

    def __init__(self, attack: Any, source: nn.Module, *, source_name: str = "source") -> None:
        if not callable(attack):
            raise TypeError(
                f"The 'attack' parameter of TransferAttack must be an attack object called as attack(model, x, y). "
                f"Got {type(attack).__name__} instead."
            )
        if not isinstance(source, nn.Module):
            raise TypeError(f"The 'source' parameter of TransferAttack must be an nn.Module. Got {type(source).__name__} instead.")
        if not isinstance(source_name, str) or not source_name:
            raise ValueError(f"The 'source_name' parameter of TransferAttack must be a non-empty str. Got {source_name!r} instead.")
        self.attack = attack
        self.source = source
        self.source_name = source_name

    def __getattr__(self, item: str) -> Any:
        # eps, norm, norm_name, seed, name... come from the wrapped attack. Not run/restrict:
        # those would attack whatever model they are given (white-box), not the source.
        if item in ("attack", "source", "source_name", "run", "restrict"):
            raise AttributeError(item)
        return getattr(self.attack, item)

    def __repr__(self) -> str:
        return f"TransferAttack({self.attack!r}, source={self.source_name!r})"

    def __call__(self, model: nn.Module | None, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Adversarial batch crafted on the source model (``model`` is not used)."""
        return self.attack(self.source, x, y, **kwargs)

    def sweep(
        self,
        model: nn.Module | None,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: Sequence[float],
        **kwargs: Any,
    ) -> list[torch.Tensor]:
        """One batch per radius, crafted on the source model (``model`` is not used)."""
        from .evaluate import run_sweep

        return run_sweep(self.attack, self.source, x, y, epsilons, **kwargs)


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
    from .evaluate import accuracy_vs_epsilon, predict

    if epsilons is None:
        if not isinstance(source, nn.Module) or not isinstance(target, nn.Module):
            raise TypeError("The 'source' and 'target' parameters of transfer_accuracy must be nn.Module instances.")
        correct = 0
        from .evaluate import _accepts_generator

        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            kwargs = {}
            if seed is not None and _accepts_generator(attack.__call__):
                kwargs["generator"] = torch.Generator().manual_seed(int(seed))
            x_adv = attack(source, xb, yb, **kwargs)
            correct += int((predict(target, x_adv).to(yb.device) == yb).sum().item())
        return correct / max(1, x.shape[0])
    rows = accuracy_vs_epsilon(
        target, attack, x, y, epsilons, source=source, batch_size=batch_size, seed=seed
    )
    return [row["accuracy"] for row in rows]
