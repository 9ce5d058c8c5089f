r"""AutoAttack (Croce & Hein, ICML 2020): robust accuracy as the worst case over an ensemble of attacks.

Each attack of the ensemble runs, in order, only on the inputs that are still classified
correctly, and an input counts as robust only if no attack breaks it (a worst case per input,
never an average). The versions:

- ``'standard'`` (the paper's): APGD-CE (100 steps, no restarts), APGD-T (targeted DLR, the 9
  rival classes with the largest clean logits, 100 steps each), FAB-T (9 targets, 100 steps each)
  and Square (5000 queries, ``p_init = 0.8``).
- ``'fast'`` (ours, about a tenth of the cost): APGD-CE (50 steps), APGD-T (3 targets, 50 steps)
  and Square (1000 queries); the gradient-free Square stays, so masked gradients cannot pass for
  robustness.
- ``'rand'`` (for randomised models, the paper's): APGD-CE and APGD-DLR (untargeted), 100 steps,
  each gradient averaged over 20 forward/backward passes (expectation over transformation).

With fewer than 4 classes APGD-T uses the targeted cross-entropy (the targeted DLR needs 4);
with 2 classes the ``rand`` version drops APGD-DLR (the DLR needs 3).

:meth:`AutoAttack.evaluate` also runs the reliability checks of the paper and of Carlini et al.
(2019) and stores which fired in :attr:`AutoAttackResult.flags`, besides warning through
:mod:`warnings` (all warnings are :class:`~deepmargin.attacks.ReliabilityWarning` subclasses):

- ``training``: the model was left in training mode;
- ``probabilities``: the outputs look like probabilities instead of logits;
- ``randomized``: two forward passes on the same inputs differ (in eval mode, or in the mode the
  model was given in);
- ``zero_gradients``: more than 5% of the correctly classified inputs have a zero or vanishing
  (max-abs below ``1e-12``) cross-entropy input gradient, or the model gives no input gradient at
  all (it detaches its input, computes under ``torch.no_grad()``, its backward pass raises, or it
  is a :class:`~deepmargin.models.ClassifierAdapter` with ``input_gradient = False``): the gradient
  attacks are then skipped (they break no input) and only the gradient-free ones (Square) run;
- ``black_box``: a gradient-free attack (Square) broke inputs that every gradient attack before it
  missed (a sign of gradient masking);
- ``large_eps`` (only with ``evaluate(..., large_eps=True)``, else ``None``): the robust accuracy
  does not fall to 0 at a radius as large as the input box (:meth:`AutoAttack.check_large_eps`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from ..checks import check_choice, check_int, check_real, param_error
from ._base import check_bounds, check_epsilons, check_inputs, check_within_bounds, eval_mode
from ._minnorm_base import check_logits
from ._robust_common import check_attack_norm, misclassified, project_ball_box
from .apgd import APGD
from .checks import (
    ReliabilityWarning,
    cross_entropy_input_gradient,
    warn_if_probabilities,
    warn_if_randomized,
    warn_if_training,
)
from .fab import FAB
from .gradient import norm_name
from .square import Square

logger = logging.getLogger(__name__)

__all__ = [
    "AutoAttack",
    "AutoAttackResult",
    "BlackBoxWarning",
    "LargeEpsilonCheck",
    "LargeEpsilonWarning",
    "RandomizedModelWarning",
    "VanishingGradientWarning",
    "warn_if_vanishing_gradients",
]

VERSIONS = ("standard", "fast", "rand")


class RandomizedModelWarning(ReliabilityWarning):
    """Two forward passes of the model, in the mode it was given in, differ (dropout or noise)."""


class VanishingGradientWarning(ReliabilityWarning):
    """Many inputs have a zero or vanishing input gradient (gradient masking or saturated outputs)."""


class BlackBoxWarning(ReliabilityWarning):
    """A gradient-free attack broke inputs that the gradient attacks missed (gradient masking)."""


class LargeEpsilonWarning(ReliabilityWarning):
    """The robust accuracy does not fall to 0 at a radius as large as the input box."""


def _warn(message: str, category: type[Warning], stacklevel: int) -> None:
    logger.debug("%s: %s", category.__name__, message)
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def warn_if_vanishing_gradients(
    grad: torch.Tensor, *, atol: float = 1e-12, max_share: float = 0.05, stacklevel: int = 2
) -> bool:
    """Warn when more than ``max_share`` of the inputs have an input gradient with max-abs ``<= atol``.

    Extends :func:`~deepmargin.attacks.warn_if_zero_gradients` (``atol = 0``) to gradients that
    underflow to tiny values, as through a saturated softmax.

    Args:
        grad: gradients of a loss with respect to the inputs, ``(N, *)``.
        atol: the largest max-abs entry that counts as vanishing. Default ``1e-12``.
        max_share: the largest share of vanishing gradients that passes silently. Default 0.05.
        stacklevel: passed to :func:`warnings.warn`.

    Returns:
        ``True`` if the warning was emitted.

    Example:
        >>> warn_if_vanishing_gradients(torch.ones(4, 3))
        False
    """
    atol = check_real(atol, "atol", "warn_if_vanishing_gradients", low=0, type_exc=ValueError)
    max_share = check_real(max_share, "max_share", "warn_if_vanishing_gradients", low=0, high=1,
                           high_open=True, type_exc=ValueError)
    if grad.numel() == 0:
        return False
    vanishing = grad.detach().reshape(grad.shape[0], -1).abs().amax(dim=1) <= atol
    share = int(vanishing.sum()) / vanishing.numel()
    if share > max_share:
        _warn(
            f"{share:.1%} of the inputs have a zero or vanishing input gradient (max-abs <= {atol:g}; threshold "
            f"{max_share:.1%}): gradient attacks cannot move them, which suggests gradient masking (a "
            "non-differentiable layer, saturated outputs). Trust the gradient-free attack's numbers.",
            VanishingGradientWarning, stacklevel + 1,
        )
        return True
    return False


def _warn_if_random_as_given(model: nn.Module, x: torch.Tensor, *, atol: float = 1e-5, stacklevel: int = 2) -> bool:
    """Two forward passes in the model's own mode (not eval mode), buffers (batch-norm statistics) restored."""
    if not any(m.training for m in model.modules()):
        return False
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        with torch.no_grad():
            first, second = model(x), model(x)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])
    diff = (first - second).abs().max().item() if first.numel() else 0.0
    if diff > atol:
        _warn(
            f"Two forward passes on the same inputs differ by up to {diff:.3g} in the mode the model was given in "
            "(training mode: dropout or batch statistics). The attacks evaluate it in eval mode; call model.eval(), "
            "or use version='rand' if the randomness is part of the defence.",
            RandomizedModelWarning, stacklevel + 1,
        )
        return True
    return False


class LargeEpsilonCheck(NamedTuple):
    """Result of :meth:`AutoAttack.check_large_eps`: whether it warned, the radius, the robust accuracy there."""

    fired: bool
    eps: float
    robust_accuracy: float


@dataclass
class AutoAttackResult:
    """What :meth:`AutoAttack.evaluate` measured.

    Attributes:
        robust_accuracy: share of inputs classified correctly after every attack (the worst case per input).
        clean_accuracy: share classified correctly before any attack.
        accuracy_after: robust accuracy after each attack, in the order they ran (``name -> accuracy``;
            non-increasing).
        x_adv: ``(N, *)``: for each broken input the adversarial that broke it (the clean input for
            inputs misclassified to begin with and for robust ones).
        robust: ``(N,)`` bool: still classified correctly.
        broken_by: per input, the attack that broke it, ``'clean'`` if misclassified to begin with, ``''`` if robust.
        flags: which reliability checks fired (see the module docstring); ``large_eps`` is ``None`` when not run.
        norm, eps, version, seed: the evaluation's settings.
    """

    robust_accuracy: float
    clean_accuracy: float
    accuracy_after: dict[str, float]
    x_adv: torch.Tensor
    robust: torch.Tensor
    broken_by: list[str]
    flags: dict[str, bool | None]
    norm: str
    eps: float
    version: str
    seed: int
    attacks: list[str] = field(default_factory=list)

    def rows(self, **extra: Any) -> list[dict[str, Any]]:
        """Tidy rows, one per stage (``'clean'``, each attack, then ``'autoattack'`` for the worst case),
        with ``norm``, ``eps``, ``version``, ``seed``, the flags that fired (``flags``, ``;``-separated)
        and any ``extra`` columns (e.g. ``model='mnist_cnn'``)."""
        fired = ";".join(k for k, v in self.flags.items() if v)
        base = dict(norm=self.norm, eps=self.eps, version=self.version, seed=self.seed, flags=fired, **extra)
        stages = [("clean", self.clean_accuracy), *self.accuracy_after.items(), ("autoattack", self.robust_accuracy)]
        return [dict(base, attack=name, accuracy=acc) for name, acc in stages]


class AutoAttack:
    r"""AutoAttack (Croce & Hein, ICML 2020): the worst case per input over APGD-CE, APGD-T, FAB-T and Square.

    See the module docstring for the versions and the reliability flags. ``attack(model, x, y)``
    returns the adversarial batch; :meth:`evaluate` returns an :class:`AutoAttackResult` with the
    robust accuracy, the accuracy after each attack, the adversarial inputs and the flags.

    Args:
        norm: ``'linf'`` (default) or ``'l2'`` (also ``math.inf``, 2).
        eps: radius of the ball, in the units of ``x``.
        version: ``'standard'`` (default), ``'fast'`` or ``'rand'``.
        seed: seed of every attack of the ensemble. Default 0.
        bounds: ``(low, high)`` of valid inputs. Default ``(0, 1)``.
        attacks: a custom ensemble replacing the version's (attack objects called as
            ``attack(model, x, y)``, run in the order given); ``version`` then only labels the result.

    Shape:
        x: ``(N, *)`` within ``bounds`` (Square needs ``(N, C, H, W)``, ``(N, C, L)`` or ``(N, D)``);
        y: ``(N,)`` int64; output: like ``x``.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
        >>> x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1])
        >>> aa = AutoAttack(eps=0.05, attacks=[APGD(eps=0.05, steps=5), Square(eps=0.05, queries=20)])
        >>> result = aa.evaluate(model, x, y)
        >>> list(result.accuracy_after) == ["apgd-ce", "square"], result.robust_accuracy <= result.clean_accuracy
        (True, True)

    Reference:
        F. Croce, M. Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks", ICML 2020.
    """

    name = "autoattack"

    def __init__(
        self,
        *,
        norm: float | str = "linf",
        eps: float,
        version: str = "standard",
        seed: int = 0,
        bounds: Sequence[float] = (0.0, 1.0),
        attacks: Sequence[Any] | None = None,
    ) -> None:
        owner = "AutoAttack"
        self.norm = check_attack_norm(norm, owner)
        self.eps = check_real(eps, "eps", owner, low=0, type_exc=ValueError)
        self.version = check_choice(version, "version", owner, VERSIONS)
        self.seed = check_int(seed, "seed", owner, low=0, type_exc=ValueError)
        self.bounds = check_bounds(bounds, owner)
        if attacks is not None:
            if isinstance(attacks, (str, bytes)) or not isinstance(attacks, Sequence) or not attacks \
                    or not all(callable(a) for a in attacks):
                raise param_error(owner, "attacks", "None or a non-empty sequence of attack objects "
                                  "called as attack(model, x, y)", attacks, TypeError)
            attacks = list(attacks)
        self.custom_attacks = attacks
        #: The flags that fired in :meth:`sweep`, per radius (``{eps: [flag, ...]}``, in the order of
        #: :attr:`AutoAttackResult.flags`), accumulated over calls until :meth:`reset_sweep_flags`.
        self.sweep_flags: dict[float, list[str]] = {}

    @property
    def norm_name(self) -> str:
        """``'linf'`` or ``'l2'``."""
        return norm_name(self.norm)

    def __repr__(self) -> str:
        custom = "" if self.custom_attacks is None else f", attacks={self.custom_attacks!r}"
        return (f"AutoAttack(norm={self.norm_name!r}, eps={self.eps!r}, version={self.version!r}, "
                f"seed={self.seed!r}, bounds={self.bounds!r}{custom})")

    def attacks(self, num_classes: int, eps: float | None = None) -> list[Any]:
        """The ensemble run on a ``num_classes``-class model at radius ``eps`` (default ``self.eps``), in order."""
        if self.custom_attacks is not None:
            return list(self.custom_attacks)
        eps = self.eps if eps is None else eps
        common = dict(norm=self.norm, eps=eps, seed=self.seed, bounds=self.bounds)
        targeted_loss = "dlr" if num_classes >= 4 else "ce"
        if self.version == "standard":
            return [
                APGD(loss="ce", steps=100, restarts=1, **common),
                APGD(loss=targeted_loss, targeted=True, n_target_classes=9, steps=100, **common),
                FAB(targeted=True, n_target_classes=9, steps=100, **common),
                Square(queries=5000, p_init=0.8, **common),
            ]
        if self.version == "fast":
            return [
                APGD(loss="ce", steps=50, **common),
                APGD(loss=targeted_loss, targeted=True, n_target_classes=3, steps=50, **common),
                Square(queries=1000, p_init=0.8, **common),
            ]
        out = [APGD(loss="ce", steps=100, eot_samples=20, **common)]
        if num_classes >= 3:
            out.append(APGD(loss="dlr", steps=100, eot_samples=20, **common))
        return out

    # -- calling -----------------------------------------------------------------------

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch (the clean input where no attack succeeded); see :meth:`evaluate`."""
        return self.evaluate(model, x, y).x_adv

    def sweep(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float]) -> list[torch.Tensor]:
        """One adversarial batch per radius in ``epsilons`` (the version's ensemble at each radius).

        At radius 0 the clean inputs are returned and no attack (nor check) runs. The flags that
        fired at each radius are gathered in :attr:`sweep_flags`, for result rows.
        """
        owner = "AutoAttack.sweep"
        epsilons = check_epsilons(epsilons, owner)
        check_inputs(x, y, owner)
        check_within_bounds(x, self.bounds, owner)
        out = []
        for eps in epsilons:
            if eps == 0:
                out.append(x.detach().clone())
                continue
            result = self._evaluate(model, x, y, eps, large_eps=False, owner=owner)
            fired = self.sweep_flags.setdefault(float(eps), [])
            fired += [k for k, v in result.flags.items() if v and k not in fired]
            out.append(result.x_adv)
        return out

    def reset_sweep_flags(self) -> None:
        """Forget the flags gathered by :meth:`sweep` (:attr:`sweep_flags`)."""
        self.sweep_flags = {}

    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, large_eps: bool = False) -> AutoAttackResult:
        """Run the checks and the ensemble; return an :class:`AutoAttackResult`.

        Args:
            model: returns logits ``(N, C)``; run in eval mode, each submodule's mode restored.
            x: clean inputs within ``bounds``; y: true labels.
            large_eps: also run :meth:`check_large_eps` (flag ``large_eps``).
        """
        return self._evaluate(model, x, y, self.eps, large_eps=large_eps, owner="AutoAttack.evaluate")

    def check_large_eps(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None,
        steps: int = 10, queries: int = 100,
    ) -> LargeEpsilonCheck:
        """Check that the robust accuracy falls to 0 at a very large radius; warn if it does not.

        At a radius as large as the input box (``high - low`` in l_inf, ``(high - low) sqrt(d)`` in l_2)
        every input can be moved anywhere in the box, so any classifier that predicts more than one
        class must lose every input. Runs a cheap APGD-CE (``steps``) and then Square (``queries``) on
        what survives.

        Returns:
            ``LargeEpsilonCheck(fired, eps, robust_accuracy)``.
        """
        owner = "AutoAttack.check_large_eps"
        check_inputs(x, y, owner)
        check_within_bounds(x, self.bounds, owner)
        steps = check_int(steps, "steps", owner, low=1, type_exc=ValueError)
        queries = check_int(queries, "queries", owner, low=1, type_exc=ValueError)
        low, high = self.bounds
        if eps is None:
            width = high - low
            eps = width if math.isinf(self.norm) else width * math.sqrt(max(1, x[0].numel() if len(x) else 1))
            if not math.isfinite(eps):
                raise param_error(owner, "eps", "given when the bounds are infinite", eps)
        eps = check_real(eps, "eps", owner, low=0, type_exc=ValueError)
        x0, y = x.detach(), y.to(device=x.device, dtype=torch.int64)
        with eval_mode(model):
            common = dict(norm=self.norm, eps=eps, seed=self.seed, bounds=self.bounds)
            robust = ~APGD(loss="ce", steps=steps, **common)._run(model, x0, y, eps).success
            todo = robust.nonzero().squeeze(1)
            if todo.numel() and x0.dim() in (2, 3, 4):
                robust[todo] = ~Square(queries=queries, **common)._run(model, x0[todo], y[todo], eps).success
        accuracy = robust.double().mean().item() if robust.numel() else 0.0
        fired = accuracy > 0
        if fired:
            _warn(
                f"At eps={eps:g} ({self.norm_name}, as large as the input box) the robust accuracy is still "
                f"{accuracy:.1%}, not 0: the attacks cannot move the inputs (gradient masking, a constant model, "
                "or bounds that do not match the data).",
                LargeEpsilonWarning, 2,
            )
        return LargeEpsilonCheck(fired, eps, accuracy)

    # -- implementation ----------------------------------------------------------------

    def _evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, large_eps: bool,
                  owner: str) -> AutoAttackResult:
        check_inputs(x, y, owner)
        check_within_bounds(x, self.bounds, owner)
        eps = check_real(eps, "eps", owner, low=0, type_exc=ValueError)
        x0, y = x.detach(), y.to(device=x.device, dtype=torch.int64)
        n = x0.shape[0]
        flags: dict[str, bool | None] = {"training": warn_if_training(model, stacklevel=4)}
        flags["randomized"] = _warn_if_random_as_given(model, x0, stacklevel=4) if n else False
        with eval_mode(model):
            with torch.no_grad():
                logits = model(x0)
            num_classes = check_logits(logits, y, owner) if n else 2
            flags["probabilities"] = warn_if_probabilities(logits, stacklevel=4)
            if n:
                flags["randomized"] = warn_if_randomized(model, x0, stacklevel=4) or flags["randomized"]
            robust = ~misclassified(logits, y)
            flags["zero_gradients"], no_gradient = self._gradient_check(model, x0[robust], y[robust])
            clean_accuracy = robust.double().mean().item() if n else 0.0
            broken_by = ["" if r else "clean" for r in robust.tolist()]
            x_adv = x0.clone()
            accuracy_after: dict[str, float] = {}
            names: list[str] = []
            gradient_ran, black_box_breaks = False, 0
            for attack in self.attacks(num_classes, eps):
                name = str(getattr(attack, "name", type(attack).__name__.lower()))
                label = name if name not in accuracy_after else f"{name}#{len(names) + 1}"
                names.append(label)
                todo = robust.nonzero().squeeze(1)
                skip = no_gradient and not getattr(attack, "gradient_free", False)
                if skip and todo.numel():
                    logger.info("%s skipped: the model gives no input gradient (it breaks none of the %d inputs)",
                                label, todo.numel())
                if todo.numel() and not skip:
                    candidate = self._attack(attack, model, x0[todo], y[todo], eps)
                    candidate = project_ball_box(candidate, x0[todo], eps, self.norm, *self.bounds)
                    with torch.no_grad():
                        broken = misclassified(model(candidate), y[todo])
                    hit = todo[broken]
                    x_adv[hit] = candidate[broken]
                    robust[hit] = False
                    for i in hit.tolist():
                        broken_by[i] = label
                    if getattr(attack, "gradient_free", False) and gradient_ran:
                        black_box_breaks += int(broken.sum())
                    logger.info("%s (%s, eps=%g): %d of %d attacked inputs broken", label, self.norm_name, eps,
                                int(broken.sum()), todo.numel())
                if not getattr(attack, "gradient_free", False):
                    gradient_ran = True
                accuracy_after[label] = robust.double().mean().item() if n else 0.0
        flags["black_box"] = black_box_breaks > 0
        if flags["black_box"]:
            _warn(
                f"A gradient-free attack broke {black_box_breaks} input(s) that every gradient attack before it "
                "missed: the gradients are unreliable on this model (gradient masking). The reported robust "
                "accuracy includes the gradient-free attack, but consider it an upper bound.",
                BlackBoxWarning, 3,
            )
        flags["large_eps"] = self.check_large_eps(model, x0, y).fired if large_eps else None
        robust_accuracy = robust.double().mean().item() if n else 0.0
        logger.info("AutoAttack %s %s eps=%g: clean %.4f, robust %.4f", self.version, self.norm_name, eps,
                    clean_accuracy, robust_accuracy)
        return AutoAttackResult(
            robust_accuracy=robust_accuracy, clean_accuracy=clean_accuracy, accuracy_after=accuracy_after,
            x_adv=x_adv, robust=robust, broken_by=broken_by, flags=flags, norm=self.norm_name, eps=eps,
            version=self.version, seed=self.seed, attacks=names,
        )

    def _attack(self, attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        """Candidates of one attack on the still-robust inputs (the model is in eval mode)."""
        if isinstance(attack, (APGD, Square)) and attack.norm == self.norm:
            return attack._run(model, x, y, attack.eps).x_adv
        if isinstance(attack, FAB) and attack.norm == self.norm:
            result = attack._run(model, x, y, attack.eps)
            within = result.delta_norm <= (math.inf if attack.eps is None else attack.eps) * (1 + 1e-6)
            return torch.where(within.reshape((-1,) + (1,) * (x.dim() - 1)), result.x_adv, x)
        return attack(model, x, y).detach()

    def _gradient_check(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[bool, bool]:
        """``(flag zero_gradients, no input gradient at all)`` on the correctly classified inputs."""
        if x.shape[0] == 0:
            return False, False
        grad, missing = cross_entropy_input_gradient(model, x, y)
        if missing is not None:
            _warn(
                f"The model has no input gradient: {missing}. The gradient attacks are skipped (they break no "
                "input) and the robust accuracy rests on the gradient-free attacks (Square); it is an upper bound.",
                VanishingGradientWarning, 5,
            )
            return True, True
        return warn_if_vanishing_gradients(grad, stacklevel=5), False

