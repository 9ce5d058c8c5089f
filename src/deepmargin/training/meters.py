"""Training metrics of an epoch accumulated on the device: no host transfer per step.

:class:`EpochMeter` adds every step's loss and counts to tensors on the training device. They
reach the host once per epoch (:meth:`EpochMeter.compute`: one all-reduce under DDP, one
transfer), and, for the progress bar only, once per display interval (:meth:`EpochMeter.running_loss`).

The check for a diverged loss follows the same rule: every step adds ``not isfinite(loss)`` to a
device counter and keeps the first non-finite value; :meth:`EpochTotals.check_finite`, after the
epoch's last step, raises the FloatingPointError. A diverged epoch therefore runs to its end
(its steps cost what they cost, and its weights end up non-finite), but it stops before the
validation pass, the hooks and the checkpoints, so nothing of it is saved; in exchange the steps
never wait for the device, and under DDP the ranks agree on the error through the epoch's one
all-reduce instead of one collective per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import distributed
from .steps import StepOutput

__all__ = ["EpochMeter", "EpochTotals"]

# positions in the accumulator
_LOSS, _CORRECT, _LABELLED, _ADV_CORRECT, _ADV_SEEN, _NON_FINITE = range(6)


@dataclass(frozen=True)
class EpochTotals:
    """The epoch's sums (over every rank under DDP).

    Attributes:
        loss_sum: sum over the steps of ``loss * batch size``.
        seen: training samples fed.
        correct, labelled: correct predictions among the labelled samples (label >= 0), and their number.
        adv_correct, adv_seen: the same among the adversarial samples.
        non_finite: steps whose loss was NaN or infinite.
        first_non_finite: the first such loss (``0.0`` when there was none).
    """

    loss_sum: float
    seen: int
    correct: int
    labelled: int
    adv_correct: int
    adv_seen: int
    non_finite: int
    first_non_finite: float

    @property
    def train_loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def train_acc(self) -> float:
        return self.correct / max(self.labelled, 1)

    @property
    def train_adv_acc(self) -> float | None:
        return self.adv_correct / self.adv_seen if self.adv_seen else None

    def check_finite(self, epoch: int) -> None:
        """Raise a FloatingPointError when a step's loss was NaN or infinite."""
        if self.non_finite:
            raise FloatingPointError(
                f"The training loss became {self.first_non_finite} in epoch {epoch}. Lower the learning rate, set "
                "grad_clip (--grad-clip), or cap the margin penalty with alpha (--alpha)."
            )


class EpochMeter:
    """Sums of one epoch's training steps, kept on ``device``.

    Example:
        >>> meter = EpochMeter(torch.device("cpu"))
        >>> meter.update(StepOutput(torch.tensor(0.5), torch.tensor([[2.0, 0.0], [0.0, 1.0]])), torch.tensor([0, 0]))
        >>> totals = meter.compute()
        >>> totals.train_loss, totals.train_acc
        (0.5, 0.5)
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self._sums = torch.zeros(6, dtype=torch.float64, device=self.device)
        self._first_non_finite = torch.zeros((), dtype=torch.float64, device=self.device)
        self._zero = torch.zeros((), dtype=torch.int64, device=self.device)
        self.seen = 0
        self.steps = 0

    def update(self, out: StepOutput, y: Tensor) -> None:
        """Add a step: its output and the labels ``y`` of the batch (``-1`` for unlabelled samples)."""
        n = y.numel()
        loss = out.loss.detach().to(torch.float64)
        hit = out.logits.detach().argmax(dim=1) == y
        labelled = y >= 0
        bad = ~torch.isfinite(loss)
        if out.adv_mask is None:
            adv_correct = adv_seen = self._zero
        else:
            adv_correct, adv_seen = (hit & out.adv_mask).sum(), out.adv_mask.sum()
        first = bad & (self._sums[_NON_FINITE] == 0)
        self._first_non_finite = torch.where(first, loss, self._first_non_finite)
        parts = (loss * n, (hit & labelled).sum(), labelled.sum(), adv_correct, adv_seen, bad)
        self._sums += torch.stack([t.to(torch.float64) for t in parts])
        self.seen += n
        self.steps += 1

    def running_loss(self) -> float:
        """The mean loss so far on this rank (one transfer; for display)."""
        return float(self._sums[_LOSS]) / max(self.seen, 1)

    def compute(self, ctx: distributed.DistContext | None = None) -> EpochTotals:
        """The totals, summed over the ranks under DDP (one all-reduce and one transfer)."""
        found = self._sums[_NON_FINITE] > 0
        first = torch.where(found, self._first_non_finite, torch.zeros_like(self._first_non_finite))
        seen = torch.tensor([float(self.seen)], dtype=torch.float64, device=self.device)
        values = torch.cat([self._sums, seen, first.reshape(1)])
        if ctx is not None and ctx.enabled:  # a non-finite first value on any rank makes the sum non-finite
            values = distributed.all_sum_tensor(values, ctx)
        loss_sum, correct, labelled, adv_correct, adv_seen, non_finite, seen_all, first_value = values.tolist()
        return EpochTotals(loss_sum=loss_sum, seen=int(seen_all), correct=int(correct), labelled=int(labelled),
                           adv_correct=int(adv_correct), adv_seen=int(adv_seen), non_finite=int(non_finite),
                           first_non_finite=first_value)
