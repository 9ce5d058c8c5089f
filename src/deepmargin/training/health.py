"""Whether a finished run trained at all: a collapsed run is named, not left to look like a result.

A run can end without an error and still have learnt nothing: a margin loss whose ``gamma`` is far
above the margins the data allows pushes every sample equally and the classifier stays at chance; a
learning rate far too high or too low does the same. :func:`detect_collapse` reads the metrics
rows of a run (``metrics.jsonl``, :attr:`~deepmargin.training.TrainResult.history`) and says why
the run counts as collapsed, or returns ``None``:

- **at chance**: the training accuracy of the last epoch is within ``tolerance`` of the chance
  level and never rose more than twice that above it in any epoch. The chance level is the larger
  of ``1 / num_classes`` and, when given, the share of the most frequent training label (a
  classifier that always answers the majority class reaches it);
- **flat**: over two epochs or more, the training loss did not fall (the last is above 99% of the
  first) while the training accuracy did not rise by more than ``tolerance``. The accuracy clause
  keeps runs that learn while their loss rises by design (the reweighting loop of ``kesidis``
  raises the weights of the samples it has not yet separated) from counting as collapsed.

The default ``tolerance`` is ``max(0.02, 0.1 * chance)``. :func:`likely_causes` lists what in a
configuration may explain a collapse. Both are pure functions of plain data, so studies and reports
can apply them to runs written before this module existed. :func:`~deepmargin.training.train`
stores the verdict in ``results.json`` (``"collapsed": {"reason": ..., "likely_causes": [...]}`` or
``null``) and in :attr:`~deepmargin.training.TrainResult.collapsed`, and logs a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LOSS_FALL", "MARGIN_OPTIONS", "chance_level", "detect_collapse", "likely_causes"]

#: The flat-loss rule: the loss counts as fallen when the last epoch's is below this share of the first's.
LOSS_FALL = 0.99

#: Loss options that set a margin to reach; one far above the data's margins stalls training.
MARGIN_OPTIONS = ("gamma", "hinge_margin", "margin", "mu")


def chance_level(num_classes: int, majority_rate: float | None = None) -> float:
    """The accuracy of a classifier that learnt nothing: ``1 / num_classes``, or the majority rate when higher.

    Example:
        >>> chance_level(10), chance_level(2, majority_rate=0.7)
        (0.1, 0.7)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"The 'num_classes' parameter of chance_level must be an int >= 2. Got {num_classes!r} instead.")
    if majority_rate is not None and not 0.0 <= majority_rate <= 1.0:
        raise ValueError(
            f"The 'majority_rate' parameter of chance_level must be a float in [0, 1] or None. Got {majority_rate!r} instead."
        )
    return max(1.0 / num_classes, majority_rate or 0.0)


#: Epochs a run needs before it can be called collapsed.
MIN_EPOCHS = 2


def detect_collapse(
    history: Sequence[Mapping[str, Any]],
    num_classes: int,
    *,
    majority_rate: float | None = None,
    tolerance: float | None = None,
) -> str | None:
    """Why the run of ``history`` counts as collapsed (see the module docstring), or ``None``.

    Args:
        history: the run's metrics rows in epoch order (keys ``epoch``, ``train_loss``, ``train_acc``).
        num_classes: the number of classes.
        majority_rate: the share of the most frequent training label (``None``: not known).
        tolerance: how close to chance counts as chance (default ``max(0.02, 0.1 * chance)``).

    Returns:
        A sentence saying what stayed at chance or flat, from which epoch to which; ``None`` for a
        run that learnt (or has no rows).

    Example:
        >>> rows = [{"epoch": e, "train_loss": 2.30, "train_acc": 0.1} for e in (1, 2, 3)]
        >>> detect_collapse(rows, 10)
        'the training accuracy stayed at chance: 0.100 in epoch 3 and at most 0.100 since epoch 1, against 0.100 (1/10 classes)'
        >>> detect_collapse([{"epoch": 1, "train_loss": 2.3, "train_acc": 0.1}, {"epoch": 2, "train_loss": 1.2, "train_acc": 0.6}], 10) is None
        True
        >>> detect_collapse(rows[:1], 10) is None  # one epoch is not enough to tell
        True
    """
    chance = chance_level(num_classes, majority_rate)
    tol = max(0.02, 0.1 * chance) if tolerance is None else float(tolerance)
    rows = [r for r in history if r.get("train_acc") is not None]
    if len(rows) < MIN_EPOCHS:  # one epoch's running accuracy averages over the learning itself
        return None
    first, last = rows[0], rows[-1]
    if last.get("val_acc") is not None and last["val_acc"] > chance + 2 * tol:
        return None  # the model classifies held-out data above chance: it learnt
    best = max(r["train_acc"] for r in rows)
    if last["train_acc"] <= chance + tol and best <= chance + 2 * tol:
        against = f"1/{num_classes} classes" if chance == 1.0 / num_classes else "the majority class's share"
        return (f"the training accuracy stayed at chance: {last['train_acc']:.3f} in epoch {last['epoch']} and at most "
                f"{best:.3f} since epoch {first['epoch']}, against {chance:.3f} ({against})")
    losses = [r for r in rows if r.get("train_loss") is not None]
    if len(losses) >= 2:
        start, end = losses[0]["train_loss"], losses[-1]["train_loss"]
        fallen = end < start - (1 - LOSS_FALL) * abs(start)
        if not fallen and start != 0 and last["train_acc"] <= first["train_acc"] + tol:
            return (f"the training loss did not fall ({start:.4g} in epoch {losses[0]['epoch']}, {end:.4g} in epoch "
                    f"{losses[-1]['epoch']}) and the training accuracy did not rise ({first['train_acc']:.3f} to "
                    f"{last['train_acc']:.3f})")
    return None


def likely_causes(config: Mapping[str, Any]) -> list[str]:
    """What in a run's configuration (``config.json``, :meth:`TrainConfig.to_dict`) may explain a collapse.

    Example:
        >>> likely_causes({"loss": "ce", "lr": 0.5, "optimizer": "sgd", "label_noise": 0.0})[0]
        'the learning rate lr=0.5 (sgd) may be too high (the weights overshoot) or too low (they barely move)'
    """
    causes = []
    for name, value in _loss_options(config).items():
        if name in MARGIN_OPTIONS and value is not None:
            causes.append(f"the loss's margin {name}={value} may be far above the data's margins (try a smaller one)")
    if config.get("lr") is not None:
        causes.append(f"the learning rate lr={config['lr']:g} ({config.get('optimizer', '?')}) may be too high "
                      "(the weights overshoot) or too low (they barely move)")
    noise = config.get("label_noise") or 0.0
    if noise > 0:
        causes.append(f"label noise: {100 * noise:g}% of the training labels are flipped to another class")
    return causes


def _loss_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The options of the run's loss (nothing when its loss is not registered here)."""
    from ..losses.registry import loss_options_of

    try:
        return loss_options_of(config)
    except (KeyError, ValueError, TypeError):
        return {}
