"""How a module describes its ``forward`` to code that walks it layer by layer: :class:`Chain` and :class:`BranchSum`.

A module whose ``forward`` is more than its children run in order (a residual block, a model that
adds a channel axis) tells a walker such as :func:`deepmargin.metrics.lipschitz_upper_bound` what
it computes through a method ``lipschitz_structure()`` that returns

* a :class:`Chain` (stages applied in order) or a list of stages (a chain),
* a :class:`BranchSum` (branches applied to the same input, outputs summed; ``None`` is the
  identity, so ``BranchSum(None, branch)`` is ``x + branch(x)``),
* a single module, or
* ``None`` when it cannot describe itself, e.g. a subclass that overrides ``forward``: the walker
  then treats it as a layer of its own.

The bundled models (:mod:`deepmargin.models`) implement it. The stages are the module's own
submodules, or stateless torch layers standing in for tensor operations of ``forward``
(``nn.Unflatten(1, (1, -1))`` for ``x.unsqueeze(1)``).
"""

from __future__ import annotations

from torch import nn

__all__ = ["BranchSum", "Chain", "check_stage"]


class Chain:
    """Stages applied in order: ``Chain(a, b, c)(x) = c(b(a(x)))``.

    A stage is an ``nn.Module``, a :class:`Chain`, a :class:`BranchSum` or ``None`` (the identity).
    Returned by a module's ``lipschitz_structure()`` method to describe its ``forward``.

    Example:
        >>> block = Chain(nn.Linear(4, 4), nn.ReLU(), BranchSum(None, nn.Linear(4, 4)))
        >>> len(block.stages)
        3
    """

    def __init__(self, *stages: object) -> None:
        self.stages = tuple(check_stage(s, "Chain") for s in stages)

    def __repr__(self) -> str:
        return f"Chain({', '.join(_short(s) for s in self.stages)})"


class BranchSum:
    """Branches applied to the same input, their outputs summed: ``BranchSum(a, b)(x) = a(x) + b(x)``.

    ``None`` is the identity, so a residual block ``x + branch(x)`` is ``BranchSum(None, branch)``;
    its Lipschitz bound is the sum of the branches' bounds.

    Example:
        >>> BranchSum(None, nn.Linear(3, 3))
        BranchSum(identity, Linear)
    """

    def __init__(self, *branches: object) -> None:
        if not branches:
            raise ValueError("The 'branches' parameter of BranchSum must hold at least one branch. Got none instead.")
        self.branches = tuple(check_stage(b, "BranchSum") for b in branches)

    def __repr__(self) -> str:
        return f"BranchSum({', '.join(_short(b) for b in self.branches)})"


def _short(stage: object) -> str:
    if stage is None:
        return "identity"
    return repr(stage) if isinstance(stage, (Chain, BranchSum)) else type(stage).__name__


def check_stage(stage: object, owner: str) -> object:
    """``stage`` itself if it is an ``nn.Module``, a :class:`Chain`, a :class:`BranchSum` or ``None``, else a TypeError."""
    if stage is None or isinstance(stage, (nn.Module, Chain, BranchSum)):
        return stage
    raise TypeError(
        f"The stages of {owner} must be nn.Module, Chain, BranchSum or None (the identity). "
        f"Got {type(stage).__name__} instead."
    )
