"""Running any attack on a batch: one adversarial batch per radius (:func:`run_sweep`), predictions
(:func:`predict`), and :class:`TransferAttack`, which crafts on a fixed source model.

Both ``evaluate.py`` (accuracy under attack) and ``transfer.py`` (transfer accuracy) build on these,
so neither has to import the other's module to get them; both re-export them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..capture.modes import eval_mode
from ._base import check_epsilons, lp_norms, per_sample

__all__ = ["TransferAttack", "accepts_generator", "device_of", "predict", "run_sweep"]


def device_of(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the first parameter (else buffer) of ``model``; ``fallback`` for a stateless module."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


def accepts_generator(fn: Any) -> bool:
    """Whether ``fn`` takes a ``generator`` keyword (or any keyword)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
    """Predicted classes ``argmax_k f_k(x)`` of ``model`` (in eval mode, mode restored), batched.

    Shape:
        x: ``(N, *)``; output: ``(N,)`` int64 on ``x``'s device.

    Example:
        >>> predict(nn.Linear(2, 3), torch.zeros(4, 2)).shape
        torch.Size([4])
    """
    step = batch_size or max(1, x.shape[0])
    device = device_of(model, x.device)
    out = []
    with torch.no_grad(), eval_mode(model):
        for i in range(0, x.shape[0], step):
            out.append(model(x[i : i + step].to(device)).argmax(dim=1).to(x.device))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64, device=x.device)


def run_sweep(
    attack: Any,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: Sequence[float],
    *,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Adversarial batches of any attack for every radius in ``epsilons``.

    Attacks with a ``sweep`` method are called through it. A minimum-norm attack (no ``sweep``;
    a ``norm`` attribute, default 2) runs once -- through its ``run`` method when it has one
    returning ``(x_adv, delta_norm, success)`` like :class:`~deepmargin.attacks.minnorm.MinNormResult`
    (``delta_norm`` is ``inf`` where it failed), else through ``__call__``. When it also has a
    ``restrict(x, x_adv, epsilons)`` method (DeepFool, FMN), its perturbation is projected onto
    each ball, as foolbox does; otherwise the batch for radius ``eps`` keeps its adversarial where
    ``||x_adv - x||_p <= eps`` (relative tolerance 1e-6) and the clean input elsewhere.

    Args:
        attack: the attack object, called as ``attack(model, x, y)``.
        model: the model that the attack differentiates.
        x: clean inputs; y: labels.
        epsilons: radii.
        generator: passed to attacks whose ``sweep``/``__call__`` take one.

    Returns:
        A list of ``len(epsilons)`` tensors shaped like ``x``.
    """
    epsilons = check_epsilons(epsilons, "run_sweep")
    sweep = getattr(attack, "sweep", None)
    if callable(sweep):
        kwargs = {"generator": generator} if generator is not None and accepts_generator(sweep) else {}
        return list(sweep(model, x, y, epsilons, **kwargs))
    p = float(getattr(attack, "norm", 2.0))
    run = getattr(attack, "run", None)
    restrict = getattr(attack, "restrict", None)
    if callable(run) and callable(restrict):
        # Minimum-norm attack that can cut its perturbation down to each ball (as foolbox does):
        # at least as strong as keeping only the adversarials already inside the ball.
        return list(restrict(x, run(model, x, y).x_adv, list(epsilons)))
    if callable(run):  # minimum-norm attack with a MinNormResult(x_adv, delta_norm, success)
        result = run(model, x, y)
        x_adv, dist = result.x_adv, result.delta_norm.to(x.device)
    else:
        kwargs = {"generator": generator} if generator is not None and accepts_generator(attack.__call__) else {}
        x_adv = attack(model, x, y, **kwargs)
        dist = lp_norms(x_adv - x, p)
    out = []
    for eps in epsilons:
        inside = per_sample(dist <= eps * (1 + 1e-6), x)
        out.append(torch.where(inside, x_adv, x))
    return out


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
        return run_sweep(self.attack, self.source, x, y, epsilons, **kwargs)
