"""Accuracy under attack as tidy rows: one per (model, attack, norm, eps, seed), white-box or transfer.

Any attack object works: fixed-budget attacks (FGSM, IFGSM, PGD, GaussianNoise) through their
``sweep`` method, and minimum-norm attacks (DeepFool, FMN) -- which return the smallest
adversarial perturbation they find -- by thresholding: at radius ``eps`` an input counts as
broken when the attack's perturbation has ``||delta||_p <= eps`` and the model misclassifies
``x + delta``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture.modes import eval_mode
from ..checks import check_inputs, check_int
from ._base import check_epsilons
from ._sweep import TransferAttack, device_of, predict, run_sweep  # predict, run_sweep: re-exported
from .checks import warn_if_training
from .gradient import norm_name

logger = logging.getLogger(__name__)

__all__ = ["accuracy_vs_epsilon", "run_sweep", "predict", "attack_label"]


def attack_label(attack: Any) -> str:
    """Short name of an attack for result rows: its ``name`` attribute or its lower-cased class name."""
    if isinstance(attack, TransferAttack):
        return attack_label(attack.attack)
    return str(getattr(attack, "name", type(attack).__name__.lower()))


def _norm_label(attack: Any) -> str:
    if isinstance(attack, TransferAttack):
        return _norm_label(attack.attack)
    label = getattr(attack, "norm_name", None)
    if label is not None:
        return str(label)
    norm = getattr(attack, "norm", None)
    return norm_name(norm) if isinstance(norm, (int, float)) else str(norm)


def accuracy_vs_epsilon(
    models: nn.Module | Mapping[str, nn.Module],
    attack: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: Sequence[float],
    *,
    source: nn.Module | None = None,
    source_name: str = "source",
    model_name: str = "model",
    attack_name: str | None = None,
    batch_size: int = 256,
    seed: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    r"""Accuracy of each model under ``attack`` at every radius: tidy rows for tables and plots.

    .. math:: \mathrm{acc}(\epsilon) = \frac{1}{n} \sum_{k=1}^{n} \mathbb{1}\big[\arg\max_j f_j(x_k^{adv}(\epsilon)) = y_k\big]

    White-box: the attack differentiates each model. Transfer (black-box): with ``source``
    (or a :class:`~deepmargin.attacks.TransferAttack`), adversarials are crafted once on the
    source model and every model is evaluated on them. Models are evaluated in eval mode
    (a :class:`~deepmargin.attacks.ReliabilityWarning` says when one was left in training mode)
    and their modes restored.

    Args:
        models: one model, or a mapping ``name -> model``.
        attack: an attack object (``FGSM``, ``IFGSM``, ``PGD``, ``DeepFool``, ``FMN``, ``GaussianNoise``...).
        x: clean inputs; y: labels (int64).
        epsilons: radii (noise levels for ``GaussianNoise``); include 0 for the clean accuracy.
        source: craft on this model instead (transfer attack).
        source_name: the ``source`` column of transfer rows. Default ``'source'``.
        model_name: row name when ``models`` is a single module. Default ``'model'``.
        attack_name: the ``attack`` column; default the attack's ``name``.
        batch_size: inputs per attack call. Default 256.
        seed: seeds the randomness (random starts, noise) of every attack call: each batch and
            crafting model gets a fresh generator seeded with it, as the attack's own ``seed`` does.
            Default: the attack's own ``seed`` applies. Recorded in every row.
        progress: show a tqdm progress bar.

    Shape:
        x: ``(N, *)``; y: ``(N,)``.

    Returns:
        One dict per ``(model, eps)``, in model then radius order, with keys ``model``,
        ``attack``, ``norm`` (``'linf'``, ``'l2'``, ``'std'``, ``'snr_db'``), ``eps``,
        ``accuracy``, ``correct``, ``n``, ``seed``, ``setting`` (``'white-box'``,
        ``'transfer'`` or ``'noise'``) and ``source`` (``None`` unless transfer).

    Example:
        >>> from deepmargin.attacks import FGSM
        >>> torch.manual_seed(0) and None
        >>> rows = accuracy_vs_epsilon(nn.Linear(4, 3).eval(), FGSM(eps=0.1), torch.rand(8, 4),
        ...                            torch.randint(0, 3, (8,)), [0.0, 0.1])
        >>> [(r["eps"], r["n"]) for r in rows]
        [(0.0, 8), (0.1, 8)]
    """
    owner = "accuracy_vs_epsilon"
    check_inputs(x, y, owner)
    epsilons = check_epsilons(epsilons, owner)
    batch_size = check_int(batch_size, "batch_size", owner, low=1, type_exc=ValueError)
    if isinstance(models, nn.Module):
        named = {model_name: models}
    elif isinstance(models, Mapping) and models and all(isinstance(m, nn.Module) for m in models.values()):
        named = dict(models)
    else:
        raise TypeError(
            f"The 'models' parameter of {owner} must be an nn.Module or a non-empty mapping of names to "
            f"nn.Module. Got {type(models).__name__} instead."
        )
    if isinstance(attack, TransferAttack):
        if source is not None:
            raise ValueError(f"The 'source' parameter of {owner} must be None for a TransferAttack. Got a model instead.")
        source, source_name, attack = attack.source, attack.source_name, attack.attack
    if source is not None and not isinstance(source, nn.Module):
        raise TypeError(f"The 'source' parameter of {owner} must be an nn.Module or None. Got {type(source).__name__} instead.")
    explicit_seed = seed
    if seed is None:
        seed = getattr(attack, "seed", None)

    def generator() -> torch.Generator | None:
        # None lets the attack apply its own seed to each call
        return torch.Generator().manual_seed(int(explicit_seed)) if explicit_seed is not None else None
    label = attack_name or attack_label(attack)
    norm = _norm_label(attack)
    is_noise = norm in ("std", "snr_db")
    setting = "noise" if is_noise else ("transfer" if source is not None else "white-box")

    correct = {name: [0] * len(epsilons) for name in named}
    n = x.shape[0]
    chunks = list(range(0, n, batch_size))
    crafting = {"_source": source} if source is not None or is_noise else dict(named)
    for m in [*named.values(), *([source] if source is not None else [])]:
        warn_if_training(m, stacklevel=2)
    with contextlib.ExitStack() as stack:
        for m in [*named.values(), *([source] if source is not None else [])]:
            stack.enter_context(eval_mode(m))
        bar = tqdm(total=len(chunks) * len(crafting), desc=f"{label} {norm}", disable=not progress, leave=False)
        for start in chunks:
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            for crafter_name, crafter in crafting.items():
                if crafter is None:  # noise: no model needed
                    advs = run_sweep(attack, None, xb, yb, epsilons, generator=generator())
                else:
                    device = device_of(crafter, xb.device)
                    advs = run_sweep(attack, crafter, xb.to(device), yb.to(device), epsilons, generator=generator())
                targets = named.items() if crafter_name == "_source" else [(crafter_name, crafter)]
                with torch.no_grad():
                    for name, model in targets:
                        device = device_of(model, xb.device)
                        yd = yb.to(device)
                        for i, adv in enumerate(advs):
                            correct[name][i] += int((model(adv.to(device)).argmax(dim=1) == yd).sum().item())
                bar.update(1)
        bar.close()

    rows = []
    for name in named:
        for i, eps in enumerate(epsilons):
            rows.append(
                dict(
                    model=name,
                    attack=label,
                    norm=norm,
                    eps=eps,
                    accuracy=correct[name][i] / n if n else math.nan,
                    correct=correct[name][i],
                    n=n,
                    seed=seed,
                    setting=setting,
                    source=source_name if setting == "transfer" else None,
                )
            )
        logger.info(
            "%s %s %s (%s): %s", name, label, norm, setting,
            ", ".join(f"{r['eps']:g}->{r['accuracy']:.3f}" for r in rows[-len(epsilons):]),
        )
    return rows
