r"""The dual reweighting loop of Kesidis, Miller & Xiang (Sec. III) as the options of a loss.

Every training sample ``x`` has a weight :math:`\lambda_x`, 1 at the start. Training runs in rounds
of ``round_epochs`` epochs; after each round the margin :math:`\mu_f(x) = f_c(x) - \max_{i \ne c}
f_i(x)` of every training sample is measured (eval mode, its training label ``c``) and every sample
whose constraint :math:`\mu_f(x) \ge \mu` is violated gets a larger weight:

- ``"multiply"``: :math:`\lambda_x \leftarrow \delta \lambda_x` (their step 3, ``delta > 1``);
- ``"add"``: :math:`\lambda_x \leftarrow \lambda_x + \delta` (the additive variant);
- ``"violation"``: :math:`\lambda_x \leftarrow \lambda_x + \delta (\mu - \mu_f(x))` (by the size of
  the violation).

With ``decrease``, a sample whose constraint holds undoes one step (``lambda / delta`` or
``lambda - delta``), never below 1. Training stops when every constraint holds after a round (their
step 2) or after ``max_rounds`` rounds (0: as many as ``epochs`` allows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Reweighting", "RULES"]

#: Update rules of :class:`Reweighting`.
RULES = ("multiply", "add", "violation")


@dataclass(frozen=True)
class Reweighting:
    """The options of the loop; :meth:`update` is one round's step.

    Example:
        >>> rw = Reweighting(rule="multiply", delta=2.0, mu=1.0)
        >>> rw.update(torch.ones(3), torch.tensor([0.5, 1.0, 2.0]))
        tensor([2., 1., 1.])
    """

    rule: str = "multiply"
    delta: float = 2.0
    round_epochs: int = 1
    max_rounds: int = 0
    decrease: bool = False
    mu: float = 1.0
    rectify: bool = False

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"The 'rule' parameter of Reweighting must be one of {list(RULES)}. Got {self.rule!r} instead.")
        if self.rule == "multiply" and not self.delta > 1:
            raise ValueError(f"The 'delta' parameter of Reweighting must be > 1 with rule='multiply'. Got {self.delta!r} instead.")
        if not self.delta > 0 or self.round_epochs < 1 or self.max_rounds < 0 or not self.mu > 0:
            raise ValueError(
                "The parameters of Reweighting must be delta > 0, round_epochs >= 1, max_rounds >= 0, mu > 0. "
                f"Got delta={self.delta!r}, round_epochs={self.round_epochs!r}, max_rounds={self.max_rounds!r}, mu={self.mu!r} instead."
            )

    def violated(self, margins: Tensor) -> Tensor:
        """Bool mask of the samples whose constraint ``mu_f(x) >= mu`` does not hold."""
        return margins < self.mu

    def update(self, weights: Tensor, margins: Tensor) -> Tensor:
        """The weights after one round, given the margins measured at its end."""
        bad = self.violated(margins)
        if self.rule == "multiply":
            up, down = weights * self.delta, weights / self.delta
        elif self.rule == "add":
            up, down = weights + self.delta, weights - self.delta
        else:
            up, down = weights + self.delta * (self.mu - margins), weights - self.delta
        new = torch.where(bad, up, weights)
        if self.decrease:
            new = torch.where(bad, new, down.clamp_min(1.0).minimum(weights))
        return new

    def round_end(self, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) ends a round."""
        return epoch % self.round_epochs == 0

    def last_round(self, epoch: int) -> bool:
        """Whether ``epoch`` ends the last of ``max_rounds`` rounds."""
        return self.max_rounds > 0 and epoch >= self.max_rounds * self.round_epochs
