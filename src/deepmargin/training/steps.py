"""Ways of taking a training step: one object per way, behind one interface, chosen once from the config.

Every step is called as ``step(x, y, idx) -> StepOutput``: the batch ``x`` with its labels ``y``
and its training-sample indices ``idx`` (rows of the training set, for the steps that keep
per-sample state) gives the loss to backpropagate and the logits of the batch as it was fed. The
training loop does the rest (backward, clipping, optimiser step, metrics) the same way for all:

- :class:`ObjectiveStep`: the objective on the batch (cross-entropy, hinge, large margin, a
  registry loss; with ``unlabelled=True`` the batch holds samples labelled ``-1``, which the
  objective takes and the metrics leave out of the accuracy);
- :class:`WeightedStep`: the objective with the per-sample weights of the reweighting loop
  (:class:`~deepmargin.training.hooks.ReweightingRounds`);
- :class:`CachedDenominatorStep`: the margin loss with the denominators read from the cache of
  ``denominator_refresh`` (:class:`~deepmargin.training.denominators.DenominatorCache`);
- :class:`AdversarialStep`: Kurakin et al.'s adversarial training (:mod:`.adversarial`), which
  also reports which samples of the batch were adversarial;
- :class:`AugmentedStep`: any of these on the batch after a transform (:class:`Augmentation`).

:func:`build_step` is the only place that maps a :class:`~deepmargin.training.config.TrainConfig`
to a step; a new variant is a new class and a line there, the loop does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .adversarial import adversarial_batch
from .augment import augment_batch
from .config import TrainConfig

__all__ = [
    "AdversarialStep",
    "Augmentation",
    "AugmentedStep",
    "CachedDenominatorStep",
    "ObjectiveStep",
    "StepOutput",
    "TrainStep",
    "WeightedStep",
    "build_step",
]


@dataclass
class StepOutput:
    """What a training step returns.

    Attributes:
        loss: the scalar loss to backpropagate (a mean over the batch as fed).
        logits: ``(m, C)`` logits of the batch as fed (clean or adversarial samples), in its order.
        adv_mask: ``(m,)`` bool, True for the samples that were replaced by adversarial examples;
            ``None`` for a step without an adversarial part.
    """

    loss: Tensor
    logits: Tensor
    adv_mask: Tensor | None = None


class TrainStep:
    """The interface: ``step(x, y, idx) -> StepOutput``, and :meth:`describe` for the run's log."""

    def __call__(self, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        raise NotImplementedError

    def describe(self) -> list[str]:
        """Lines for the log of the run's start (what this step adds to plain training)."""
        return []


class ObjectiveStep(TrainStep):
    """``objective(x, y)``: the plain training step."""

    def __init__(self, objective: Callable[..., tuple[Tensor, Tensor]]) -> None:
        self.objective = objective

    def __call__(self, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        loss, logits = self.objective(x, y)
        return StepOutput(loss, logits)


class WeightedStep(TrainStep):
    """``objective(x, y, weights=w[idx])`` with the current per-sample weights ``source.weights``.

    Args:
        objective: an objective that takes ``weights`` (one with a reweighting loop).
        source: holds the weights of every training sample as ``.weights`` ``(N,)``, e.g. the
            :class:`~deepmargin.training.hooks.ReweightingRounds` that updates them between epochs.
    """

    def __init__(self, objective: Callable[..., tuple[Tensor, Tensor]], source: Any) -> None:
        self.objective = objective
        self.source = source

    def __call__(self, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        loss, logits = self.objective(x, y, weights=self.source.weights[idx])
        return StepOutput(loss, logits)


class CachedDenominatorStep(TrainStep):
    """The margin loss from one forward pass, its denominators read from ``cache`` at rows ``idx``."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def __call__(self, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        loss, logits = self.cache.step(x, y, idx)
        return StepOutput(loss, logits)


class AdversarialStep(TrainStep):
    """Kurakin et al.'s weighted loss on a batch whose share ``ratio`` is replaced by one-step
    adversarial examples (:func:`~deepmargin.training.adversarial.adversarial_batch`; its random
    numbers come from torch's global generator).

    Args:
        objective: the training objective (the DDP-wrapped one under several processes).
        model: the plain model the examples are crafted on.
        method, eps_max, ratio, weight, bounds: as :func:`~deepmargin.training.adversarial.adversarial_batch`.
    """

    def __init__(
        self, objective: Callable[..., tuple[Tensor, Tensor]], model: nn.Module, *, method: str, eps_max: float,
        ratio: float, weight: float, bounds: Sequence[float] | None,
    ) -> None:
        self.objective = objective
        self.model = model
        self.method = method
        self.eps_max = eps_max
        self.ratio = ratio
        self.weight = weight
        self.bounds = bounds

    def __call__(self, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        adv = adversarial_batch(self.objective, self.model, x, y, method=self.method, eps_max=self.eps_max,
                                ratio=self.ratio, weight=self.weight, bounds=self.bounds)
        return StepOutput(adv.loss, adv.logits, adv.adv_mask)

    def describe(self) -> list[str]:
        return [f"adversarial training ({self.method}): {100 * self.ratio:.0f}% of each batch, "
                f"eps ~ |N(0, {self.eps_max / 2:g}^2)| on [0, {self.eps_max:g}], weight {self.weight:g}"]


class Augmentation:
    """The batch transform of ``TrainConfig.augment`` (:func:`~deepmargin.training.augment.augment_batch`;
    random numbers from torch's global generator)."""

    def __init__(self, kind: str, padding: int) -> None:
        self.kind = kind
        self.padding = padding

    def __call__(self, x: Tensor) -> Tensor:
        return augment_batch(x, self.kind, self.padding)

    def describe(self) -> list[str]:
        return [f"augmentation {self.kind} (crop padding {self.padding})"]


class AugmentedStep(TrainStep):
    """``inner(transform(x), y, idx)``: a step on the transformed batch."""

    def __init__(self, inner: TrainStep, transform: Augmentation) -> None:
        self.inner = inner
        self.transform = transform

    def __call__(self, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        return self.inner(self.transform(x), y, idx)

    def describe(self) -> list[str]:
        return self.inner.describe() + self.transform.describe()


def build_step(
    config: TrainConfig,
    objective: Callable[..., tuple[Tensor, Tensor]],
    model: nn.Module,
    *,
    bounds: Sequence[float] | None = None,
    hooks: Sequence[Any] = (),
) -> TrainStep:
    """The training step of ``config``.

    Args:
        config: the run configuration (validated: the variants below exclude each other).
        objective: the training objective (on the DDP wrapper under several processes).
        model: the plain model (adversarial examples are crafted on it).
        bounds: ``(low, high)`` of valid inputs, ``None`` for unbounded inputs.
        hooks: the run's between-epoch hooks (:func:`~deepmargin.training.hooks.build_hooks`);
            the weighted and the cached step read the state a hook keeps.

    Returns:
        :class:`AdversarialStep` when ``adv_train`` is set, else :class:`CachedDenominatorStep`
        with ``denominator_refresh``, else :class:`WeightedStep` with a reweighting loop, else
        :class:`ObjectiveStep`; inside :class:`AugmentedStep` when ``augment`` is not ``"none"``.
    """
    from .hooks import DenominatorRefresh, ReweightingRounds

    denominators = next((h for h in hooks if isinstance(h, DenominatorRefresh)), None)
    rounds = next((h for h in hooks if isinstance(h, ReweightingRounds)), None)
    step: TrainStep
    if config.adv_train != "none":
        step = AdversarialStep(objective, model, method=config.adv_train, eps_max=config.adv_eps,
                               ratio=config.adv_ratio, weight=config.adv_weight, bounds=bounds)
    elif denominators is not None:
        step = CachedDenominatorStep(denominators.cache)
    elif rounds is not None:
        step = WeightedStep(objective, rounds)
    else:
        step = ObjectiveStep(objective)
    if config.augment != "none":
        step = AugmentedStep(step, Augmentation(config.augment, config.crop_padding))
    return step
