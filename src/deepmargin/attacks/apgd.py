r"""Auto-PGD (APGD) and the difference-of-logits-ratio (DLR) losses of Croce & Hein (ICML 2020).

APGD is PGD with momentum whose step size needs no tuning: it starts at :math:`\eta = 2\epsilon` and is
halved at checkpoints when the loss has stopped increasing, each time restarting from the best point
found so far (paper, Algorithm 1).

Checkpoints are at the iterations :math:`w_j = \lceil p_j N \rceil` of an ``N``-step run, with

.. math::
    p_0 = 0,\quad p_1 = 0.22,\quad p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03,\ 0.06),

so ``N = 100`` gives ``[0, 22, 41, 57, 70, 80, 87, 93, 99]`` (:func:`apgd_checkpoints`). Once
:math:`x^{(w_j)}` is known the step size is halved, per input, when

1. fewer than :math:`\rho = 75\%` of the steps since :math:`w_{j-1}` increased the loss:
   :math:`\sum_{i=w_{j-1}}^{w_j - 1} 1[f(x^{(i+1)}) > f(x^{(i)})] < \rho\,(w_j - w_{j-1})`, or
2. the step size was not halved at :math:`w_{j-1}` and the best loss has not changed since
   :math:`w_{j-1}`;

and then :math:`x^{(w_j)}` is replaced by the best point :math:`x_{max}` (the momentum term restarts
at zero). The update, with :math:`P` the projection onto the :math:`\epsilon`-ball intersected with the
input box and :math:`s` the steepest-ascent direction (``sign`` for l_inf, the normalised gradient
for l_2), is

.. math::
    z^{(k+1)} = P\big(x^{(k)} + \eta\, s(\nabla f(x^{(k)}))\big), \qquad
    x^{(k+1)} = P\big(x^{(k)} + \alpha (z^{(k+1)} - x^{(k)}) + (1 - \alpha)(x^{(k)} - x^{(k-1)})\big)

with :math:`\alpha = 0.75` (:math:`\alpha = 1` for the first step). Every input keeps its own step
size, best loss and best point; an input is done (and leaves the batch) at its first adversarial
point, which is what the attack returns for it.

DLR losses (paper, Sec. 4), with :math:`\pi` the indices of the logits sorted in decreasing order:

.. math::
    \mathrm{DLR}(z, y) = -\frac{z_y - \max_{i \ne y} z_i}{z_{\pi_1} - z_{\pi_3} + 10^{-12}}, \qquad
    \mathrm{DLR}_t(z, y) = -\frac{z_y - z_t}{z_{\pi_1} - \tfrac12 (z_{\pi_3} + z_{\pi_4}) + 10^{-12}}.

Both are invariant to shifting and rescaling the logits, so they do not saturate as the
cross-entropy does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_int, check_logits_target, check_real, param_error, reduce
from ._base import check_bool, check_bounds, check_epsilons, check_inputs, check_within_bounds, eval_mode
from ._robust_common import (
    check_attack_norm,
    make_generator,
    misclassified,
    project_ball_box,
    random_in_ball,
    rival_classes,
    view_per_sample,
)
from .checks import warn_if_training, warn_if_zero_gradients
from .gradient import norm_name, steepest_direction

logger = logging.getLogger(__name__)

__all__ = ["APGD", "APGDResult", "apgd_checkpoints", "dlr_loss", "targeted_dlr_loss"]

_LOSSES = ("ce", "dlr")


# --------------------------------------------------------------------------- losses


def dlr_loss(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    r"""Difference-of-logits-ratio loss (Croce & Hein, 2020), maximised by untargeted APGD-DLR.

    .. math::
        \mathrm{DLR}(z, y) = -\frac{z_y - \max_{i \ne y} z_i}{z_{\pi_1} - z_{\pi_3} + 10^{-12}}

    with :math:`z_{\pi_1} \ge z_{\pi_2} \ge \dots` the sorted logits. Positive iff the input is
    misclassified; invariant to shifts and positive rescaling of the logits.

    Args:
        logits: model outputs (logits, not probabilities).
        target: true classes.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default ``'mean'``.

    Shape:
        logits: ``(N, C)`` with ``C >= 3``; target: ``(N,)`` int64; output: ``(N,)`` for ``'none'``,
        else a scalar.

    Example:
        >>> dlr_loss(torch.tensor([[4.0, 2.0, 0.0]]), torch.tensor([0])).item()  # -(4 - 2) / (4 - 0)
        -0.5

    Reference:
        F. Croce, M. Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks", ICML 2020, Eq. (6).
    """
    target = check_logits_target(logits, target, "dlr_loss")
    if logits.shape[1] < 3:
        raise param_error("dlr_loss", "logits", "a tensor of shape (N, C) with C >= 3",
                          f"shape {tuple(logits.shape)}")
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, target[:, None]).squeeze(1)
    rival = logits.scatter(1, target[:, None], float("-inf")).amax(dim=1)
    loss = -(true - rival) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    return reduce(loss, reduction)


def targeted_dlr_loss(
    logits: torch.Tensor, target: torch.Tensor, target_class: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    r"""Targeted difference-of-logits-ratio loss (Croce & Hein, 2020), maximised by APGD-T.

    .. math::
        \mathrm{DLR}_t(z, y) = -\frac{z_y - z_t}{z_{\pi_1} - \tfrac12 (z_{\pi_3} + z_{\pi_4}) + 10^{-12}}

    Args:
        logits: model outputs (logits).
        target: true classes ``y``.
        target_class: the classes ``t`` to reach.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default ``'mean'``.

    Shape:
        logits: ``(N, C)`` with ``C >= 4``; target, target_class: ``(N,)`` int64; output: ``(N,)`` for
        ``'none'``, else a scalar.

    Example:
        >>> z = torch.tensor([[4.0, 3.0, 2.0, 0.0]])
        >>> targeted_dlr_loss(z, torch.tensor([0]), torch.tensor([2])).item()  # -(4 - 2) / (4 - (2 + 0) / 2)
        -0.6666666865348816

    Reference:
        F. Croce, M. Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks", ICML 2020, Sec. 4 (APGD-T).
    """
    target = check_logits_target(logits, target, "targeted_dlr_loss")
    target_class = check_logits_target(logits, target_class, "targeted_dlr_loss")
    if logits.shape[1] < 4:
        raise param_error("targeted_dlr_loss", "logits", "a tensor of shape (N, C) with C >= 4",
                          f"shape {tuple(logits.shape)}")
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, target[:, None]).squeeze(1)
    aim = logits.gather(1, target_class[:, None]).squeeze(1)
    loss = -(true - aim) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)
    return reduce(loss, reduction)


def _objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Per-input objective that APGD maximises (no input checks: the hot loop)."""
    return _OBJECTIVES[loss, target is not None](logits, y, target)


def _untargeted_ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _untargeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    rival = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return -(true - rival) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def _targeted_ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return -F.cross_entropy(logits, target, reduction="none")


def _targeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    aim = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - aim) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


#: APGD's objectives by (its own loss option, targeted).
_OBJECTIVES = {("ce", False): _untargeted_ce, ("dlr", False): _untargeted_dlr,
               ("ce", True): _targeted_ce, ("dlr", True): _targeted_dlr}


def _input_grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``d loss / d x``; all zeros for a model without an input gradient (it detaches its input, computes
    under ``torch.no_grad()``, or its backward pass raises), so that the attack breaks nothing there and
    the zero-gradient check flags it instead of an autograd error."""
    if not loss.requires_grad:
        return torch.zeros_like(x)
    try:
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as err:
        logger.debug("APGD: the backward pass raised %s: %s; zero gradient", type(err).__name__, err)
        return torch.zeros_like(x)
    return torch.zeros_like(x) if grad is None else grad


# --------------------------------------------------------------------------- schedule


def apgd_checkpoints(steps: int) -> list[int]:
    r"""The checkpoint iterations :math:`w_j = \lceil p_j N \rceil` of an ``N = steps`` APGD run.

    :math:`p_0 = 0`, :math:`p_1 = 0.22`, :math:`p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03, 0.06)`, for
    all :math:`p_j \le 1`; repeated iterations (tiny ``steps``) are kept once.

    Example:
        >>> apgd_checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
        >>> apgd_checkpoints(10)
        [0, 3, 5, 6, 7, 8, 9, 10]
    """
    steps = check_int(steps, "steps", "apgd_checkpoints", low=1, type_exc=ValueError)
    # exact decimal arithmetic in hundredths: 0.41 * 100 must be 41, not 42
    fractions = [0, 22]
    while True:
        nxt = fractions[-1] + max(fractions[-1] - fractions[-2] - 3, 6)
        if nxt > 100:
            break
        fractions.append(nxt)
    out: list[int] = []
    for f in fractions:
        w = -((-f * steps) // 100)  # ceil(f * steps / 100) in integers
        if not out or w != out[-1]:
            out.append(w)
    return out


# --------------------------------------------------------------------------- attack


class APGDResult(NamedTuple):
    """What :meth:`APGD.run` found for each input.

    Attributes:
        x_adv: ``(N, *)``: the first adversarial point found where ``success``; elsewhere the point
            of highest loss (of the last run the input took part in). Inputs misclassified to begin
            with are returned unchanged.
        success: ``(N,)`` bool, ``argmax model(x_adv) != y``.
        step_sizes: with ``run(..., trace=True)``, ``(steps, N)``: the step size each input took at each
            step of the first run it took part in (NaN where it had left the batch or was not attacked);
            else ``None``.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    step_sizes: torch.Tensor | None = None


class APGD:
    r"""Auto-PGD (Croce & Hein, ICML 2020) in l_inf or l_2, with the cross-entropy or DLR loss.

    See the module docstring for the step-size schedule, momentum and losses. Untargeted runs start
    ``restarts`` times from a uniform random point of the ball, each time only on the inputs not yet
    broken. Targeted runs (APGD-T) aim in turn at the ``n_target_classes`` rival classes with the
    largest clean logits (best first), one run (``restarts`` runs) per target class, again only on the
    inputs not yet broken; success is any misclassification, as in AutoAttack.

    With ``eot_samples > 1`` (for randomised models) each gradient, loss and prediction is the average
    over that many forward/backward passes (expectation over transformation, as AutoAttack's ``rand``
    version does with 20).

    Args:
        norm: ``'linf'`` (default) or ``'l2'`` (also ``math.inf``, 2).
        eps: radius of the ball, in the units of ``x``.
        loss: ``'ce'`` (cross-entropy, default) or ``'dlr'``; targeted: the targeted CE or DLR.
        targeted: aim at rival classes (APGD-T). Default ``False``.
        n_target_classes: how many rival classes a targeted attack tries (at most ``C - 1`` are used).
            Default 9.
        steps: iterations per run. Default 100.
        restarts: runs per input (per target class when targeted). Default 1.
        seed: seeds the random starts; every call draws the same ones. Default 0.
        bounds: ``(low, high)`` of valid inputs. Default ``(0, 1)``.
        eot_samples: forward/backward passes averaged per step. Default 1.
        rho: share of loss-increasing steps below which the step size is halved. Default 0.75.

    Shape:
        x: ``(N, *)`` within ``bounds``; y: ``(N,)`` int64; output: like ``x``.

    Example:
        >>> model = nn.Linear(4, 3).eval()
        >>> x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
        >>> x_adv = APGD(eps=0.1, steps=10)(model, x, y)
        >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
        True

    Reference:
        F. Croce, M. Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks", ICML 2020, Algorithm 1.
    """

    #: APGD needs input gradients (AutoAttack's black-box check tells gradient attacks from the rest).
    gradient_free = False

    def __init__(
        self,
        *,
        norm: float | str = "linf",
        eps: float,
        loss: str = "ce",
        targeted: bool = False,
        n_target_classes: int = 9,
        steps: int = 100,
        restarts: int = 1,
        seed: int = 0,
        bounds: Sequence[float] = (0.0, 1.0),
        eot_samples: int = 1,
        rho: float = 0.75,
    ) -> None:
        owner = "APGD"
        self.norm = check_attack_norm(norm, owner)
        self.eps = check_real(eps, "eps", owner, low=0, type_exc=ValueError)
        self.loss = check_choice(loss, "loss", owner, _LOSSES)
        self.targeted = check_bool(targeted, "targeted", owner)
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", owner, low=1, type_exc=ValueError)
        self.steps = check_int(steps, "steps", owner, low=1, type_exc=ValueError)
        self.restarts = check_int(restarts, "restarts", owner, low=1, type_exc=ValueError)
        self.seed = check_int(seed, "seed", owner, low=0, type_exc=ValueError)
        self.bounds = check_bounds(bounds, owner)
        self.eot_samples = check_int(eot_samples, "eot_samples", owner, low=1, type_exc=ValueError)
        self.rho = check_real(rho, "rho", owner, low=0, high=1, type_exc=ValueError)

    # -- configuration -----------------------------------------------------------------

    @property
    def name(self) -> str:
        """``'apgd-ce'``, ``'apgd-dlr'``, ``'apgd-t'`` (targeted DLR) or ``'apgd-t-ce'``."""
        if self.targeted:
            return "apgd-t" if self.loss == "dlr" else "apgd-t-ce"
        return f"apgd-{self.loss}"

    @property
    def norm_name(self) -> str:
        """``'linf'`` or ``'l2'``."""
        return norm_name(self.norm)

    def __repr__(self) -> str:
        fields = ["norm_name", "eps", "loss", "targeted", "n_target_classes", "steps", "restarts", "seed",
                  "bounds", "eot_samples", "rho"]
        return "APGD(" + ", ".join(f"{f.replace('_name', '')}={getattr(self, f)!r}" for f in fields) + ")"

    # -- calling -----------------------------------------------------------------------

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial batch at radius ``eps`` (see :class:`APGDResult` for what failed inputs hold)."""
        return self.run(model, x, y).x_adv

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, trace: bool = False) -> APGDResult:
        """Attack ``x`` and return the adversarial batch and which inputs were broken.

        The model runs in eval mode (each submodule's mode restored afterwards); a
        :class:`~deepmargin.attacks.ReliabilityWarning` says when it was left in training mode or
        when many inputs have a zero input gradient.

        Args:
            model: returns logits ``(N, C)``.
            x: clean inputs within ``bounds``; y: true labels.
            trace: also return the step sizes of the first run (``APGDResult.step_sizes``).
        """
        x0, y = self._prepare(model, x, y, "APGD.run")
        with eval_mode(model):
            return self._run(model, x0, y, self.eps, check=True, trace=trace)

    def sweep(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float]) -> list[torch.Tensor]:
        """One adversarial batch per radius in ``epsilons`` (each run seeded with ``seed``)."""
        epsilons = check_epsilons(epsilons, "APGD.sweep")
        x0, y = self._prepare(model, x, y, "APGD.sweep")
        with eval_mode(model):
            return [self._run(model, x0, y, eps, check=i == 0).x_adv for i, eps in enumerate(epsilons)]

    # -- implementation ----------------------------------------------------------------

    def _prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
        check_inputs(x, y, owner)
        check_within_bounds(x, self.bounds, owner)
        warn_if_training(model, stacklevel=4)
        return x.detach(), y.to(device=x.device, dtype=torch.int64)

    def _check_classes(self, num_classes: int) -> None:
        need = 4 if (self.targeted and self.loss == "dlr") else 3 if self.loss == "dlr" else 2
        if num_classes < need:
            raise ValueError(
                f"The 'loss' parameter of APGD must be 'ce' for a model with {num_classes} classes "
                f"({'targeted ' if self.targeted else ''}DLR needs at least {need}). Got {self.loss!r} instead."
            )

    def _run(
        self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: float, check: bool = False, trace: bool = False
    ) -> APGDResult:
        """The attack on ``x0`` (detached, inside the bounds), the model already in eval mode."""
        n = x0.shape[0]
        x_adv = x0.clone()
        with torch.no_grad():
            logits = model(x0) if n else None
        if n == 0:
            return APGDResult(x_adv, torch.zeros(0, dtype=torch.bool, device=x0.device))
        self._check_classes(logits.shape[1])
        success = misclassified(logits, y)
        steps_taken = torch.full((self.steps, n), math.nan, dtype=x0.dtype, device=x0.device) if trace else None
        if eps == 0:
            return APGDResult(x_adv, success, steps_taken)
        generator = make_generator(self.seed)
        if self.targeted:
            rivals = rival_classes(logits, y, min(self.n_target_classes, logits.shape[1] - 1))
            targets = [rivals[:, k] for k in range(rivals.shape[1])]
        else:
            targets = [None]
        first = True
        for target in targets:
            for restart in range(self.restarts):
                todo = (~success).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                logger.debug("%s: eps=%g target rank %s restart %d on %d inputs", self.name, eps,
                             None if target is None else len(targets), restart, todo.numel())
                record = torch.full((self.steps, todo.numel()), math.nan, dtype=x0.dtype, device=x0.device) \
                    if trace and first else None
                found, adv = self._single_run(
                    model, x0[todo], y[todo], None if target is None else target[todo], eps, generator,
                    check=check and first, record=record,
                )
                if record is not None:
                    steps_taken[:, todo] = record
                first = False
                x_adv[todo] = adv
                success[todo] = found
        return APGDResult(x_adv, success, steps_taken)

    def _loss_grad(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(loss, grad, logits)`` at ``x``, averaged over ``eot_samples`` passes."""
        loss_sum, grad_sum, logits_sum = None, None, None
        for _ in range(self.eot_samples):
            if need_grad:
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    logits = model(xg)
                    loss = _objective(logits, y, target, self.loss)
                    grad = _input_grad(loss.sum(), xg)
            else:
                with torch.no_grad():
                    logits = model(x)
                    loss = _objective(logits, y, target, self.loss)
                grad = None
            loss, logits = loss.detach(), logits.detach()
            loss_sum = loss if loss_sum is None else loss_sum + loss
            logits_sum = logits if logits_sum is None else logits_sum + logits
            if grad is not None:
                grad_sum = grad if grad_sum is None else grad_sum + grad
        k = self.eot_samples
        return loss_sum / k, (None if grad_sum is None else grad_sum / k), logits_sum / k

    def _single_run(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        eps: float,
        generator: torch.Generator,
        check: bool,
        record: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run from a random start: ``(success (n,), x_adv (n, *))``; ``record`` ``(steps, n)``
        receives the step size of every step."""
        low, high = self.bounds
        p, n, alpha = self.norm, x0.shape[0], 0.75
        checkpoints = apgd_checkpoints(self.steps)
        previous_checkpoint = {w: checkpoints[j - 1] for j, w in enumerate(checkpoints) if j > 0}

        out = x0.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x0.device)
        idx = torch.arange(n, device=x0.device)  # global positions of the inputs still running

        x = project_ball_box(random_in_ball(x0, eps, p, generator), x0, eps, p, low, high)
        loss, grad, logits = self._loss_grad(model, x, y, target, need_grad=True)
        if check:
            warn_if_zero_gradients(grad, stacklevel=6)
        state = {
            "x0": x0, "y": y, "x": x, "x_prev": x, "grad": grad, "loss": loss,
            "eta": torch.full((n,), 2.0 * eps, dtype=x0.dtype, device=x0.device),
            "best_loss": loss.clone(), "x_best": x.clone(), "grad_best": grad.clone(),
            "increases": torch.zeros(n, dtype=torch.int64, device=x0.device),
            "best_at_checkpoint": loss.clone(),
            "halved_at_checkpoint": torch.zeros(n, dtype=torch.bool, device=x0.device),
        }
        if target is not None:
            state["target"] = target

        def retire(done: torch.Tensor) -> None:
            """Record the adversarial point of the inputs in ``done`` and drop them from the batch."""
            nonlocal idx
            if not bool(done.any()):
                return
            out[idx[done]] = state["x"][done]
            found[idx[done]] = True
            keep = ~done
            idx = idx[keep]
            for key, value in state.items():
                state[key] = value[keep]

        retire(misclassified(logits, y))
        for k in range(self.steps):
            if idx.numel() == 0:
                break
            x, x_prev, eta = state["x"], state["x_prev"], state["eta"]
            if record is not None:
                record[k, idx] = eta
            step = view_per_sample(eta, x) * steepest_direction(state["grad"], p)
            z = project_ball_box(x + step, state["x0"], eps, p, low, high)
            x_new = z if k == 0 else project_ball_box(
                x + alpha * (z - x) + (1 - alpha) * (x - x_prev), state["x0"], eps, p, low, high
            )
            last = k == self.steps - 1
            loss, grad, logits = self._loss_grad(model, x_new, state["y"], state.get("target"), need_grad=not last)
            state["increases"] += (loss > state["loss"]).long()
            state["x_prev"], state["x"], state["loss"] = x, x_new, loss
            if grad is not None:
                state["grad"] = grad
            better = loss > state["best_loss"]
            state["best_loss"] = torch.where(better, loss, state["best_loss"])
            state["x_best"] = torch.where(view_per_sample(better, x_new), x_new, state["x_best"])
            if grad is not None:
                state["grad_best"] = torch.where(view_per_sample(better, grad), grad, state["grad_best"])
            retire(misclassified(logits, state["y"]))
            if idx.numel() == 0 or last or (k + 1) not in previous_checkpoint:
                continue
            # checkpoint w_j = k + 1: x^(w_j) is known
            span = k + 1 - previous_checkpoint[k + 1]
            stalled = state["increases"].double() < self.rho * span
            no_progress = ~state["halved_at_checkpoint"] & (state["best_loss"] <= state["best_at_checkpoint"])
            halve = stalled | no_progress
            state["eta"] = torch.where(halve, state["eta"] / 2, state["eta"])
            h = view_per_sample(halve, state["x"])
            state["x"] = torch.where(h, state["x_best"], state["x"])
            state["x_prev"] = torch.where(h, state["x_best"], state["x_prev"])
            state["grad"] = torch.where(h, state["grad_best"], state["grad"])
            state["loss"] = torch.where(halve, state["best_loss"], state["loss"])
            state["halved_at_checkpoint"] = halve
            state["best_at_checkpoint"] = state["best_loss"].clone()
            state["increases"] = torch.zeros_like(state["increases"])
        if idx.numel():
            out[idx] = state["x_best"]
        return found, out
