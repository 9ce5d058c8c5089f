"""Accuracy of trained checkpoints under attack, for a list of epsilons (``deepmargin attack``).

:func:`attack_checkpoints` reads the checkpoints and their test split
(:mod:`~deepmargin.experiments.checkpoints`), builds each attack by name
(:func:`~deepmargin.attacks.build_attack`) and returns tidy rows (one per model, attack, norm, eps
and seed; white-box rows, plus transfer rows crafted on a source checkpoint) with the resolved
configuration. :func:`deepmargin.reports.robustness.write_attack_run` writes them. Any other
classifier (a TorchScript file, an exported program, ``module:callable`` with a state dict) is
measured the same way from a :class:`~deepmargin.experiments.external.ModelSource`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .progress import StepProgress

if TYPE_CHECKING:
    from .external import ExternalModel, ModelSource

logger = logging.getLogger(__name__)

__all__ = ["AttackRun", "DEFAULT_EPS", "DEFAULT_SNR", "attack_checkpoints", "attack_jobs", "ignored_options",
           "load_model_source"]

#: Radii when none are given.
DEFAULT_EPS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
#: Noise levels in dB for ``noise_mode='snr'`` when none are given.
DEFAULT_SNR = (40.0, 33.0, 25.0, 20.0, 15.0, 10.0)


@dataclass
class AttackRun:
    """Result of :func:`attack_checkpoints`: ``rows`` (:func:`~deepmargin.attacks.accuracy_vs_epsilon`'s),
    ``config`` (what ``config.json`` records), the ``dataset`` name and ``n`` test inputs."""

    rows: list[dict[str, Any]]
    config: dict[str, Any]
    dataset: str
    n: int


def attack_jobs(attacks: Sequence[str], norms: Sequence[str], seeds: Sequence[int], *, random_start: bool = True
                ) -> list[tuple[str, str | None, int]]:
    """``(attack, norm, seed)`` runs: every norm per attack (none for ``noise``); randomised attacks once per seed."""
    from ..attacks.factory import RANDOMISED_ATTACKS

    jobs = []
    for attack_name in dict.fromkeys(attacks):
        run_norms = [None] if attack_name == "noise" else list(dict.fromkeys(norms))
        randomised = attack_name in RANDOMISED_ATTACKS and (attack_name != "pgd" or random_start)
        for norm in run_norms:
            for seed in (seeds if randomised else seeds[:1]):
                jobs.append((attack_name, norm, seed))
    return jobs


def attack_checkpoints(
    checkpoints: Sequence[str],
    *,
    source: str | None = None,
    attacks: Sequence[str] = ("ifgsm",),
    norms: Sequence[str] = ("linf",),
    eps: Sequence[float] = DEFAULT_EPS,
    eps_l2: Sequence[float] | None = None,
    noise_mode: str = "std",
    noise_levels: Sequence[float] | None = None,
    steps: int | None = None,
    min_norm_steps: int | None = None,
    step_size: float | None = None,
    random_start: bool = True,
    loss: str = "ce",
    overshoot: float = 0.02,
    n: int | None = None,
    batch_size: int = 256,
    seeds: Sequence[int] = (0,),
    dataset: str | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    model_source: ModelSource | None = None,
    autoattack_version: str = "standard",
) -> AttackRun:
    """Accuracy of every checkpoint under every attack, norm, radius and seed (``deepmargin attack``).

    All checkpoints are read before any attack runs; the reliability checks run on each model
    (and the source) first. ``steps`` and ``step_size`` configure ``ifgsm``/``pgd``,
    ``min_norm_steps`` ``deepfool``/``fmn``; ``eps`` are the l_inf radii (and the l_2 ones unless
    ``eps_l2``), ``noise_levels`` the noise's (default: ``eps`` for std, :data:`DEFAULT_SNR` for
    snr). Randomised attacks (PGD with a random start, noise) run once per seed; torch, numpy and
    ``random`` are seeded with each run's seed. With ``source``, every attack but noise is also
    crafted on it and transferred (rows with setting ``transfer``).

    ``autoattack`` runs the ensemble of ``autoattack_version`` (``standard``, ``fast`` or ``rand``),
    with its own budgets: ``steps``, ``step_size`` and ``loss`` do not apply to it, nor to
    ``apgd-*``/``fab``/``square`` (``steps`` does apply to ``apgd-*`` and ``fab``). A setting given
    that an attack of the run ignores is named in one warning (and in ``config['ignored']``). The rows
    of ``autoattack`` carry the reliability flags that fired at their radius (``flags``,
    ``;``-separated: on the model for white-box rows, on the source for transfer rows); the rows of
    the other attacks an empty ``flags`` (``None``).

    With ``model_source`` (any classifier: ``--model-file`` or ``--model``, see
    :class:`~deepmargin.experiments.external.ModelSource`) that model is measured instead of
    checkpoints, on the ``x_test``/``y_test`` of the ``.npz`` file ``dataset`` (required then);
    its rows are named after the file or the ``module:callable``.
    """
    from ..attacks import accuracy_vs_epsilon, warn_if_transfer_beats_whitebox
    from ..attacks.factory import MIN_NORM_ATTACKS, build_attack
    from ..training.optim import seed_everything
    from .checkpoints import check_models

    seeds = list(dict.fromkeys(seeds))
    models, source_name, source_model, x, y, bounds, dataset, root = _load_models(
        checkpoints, source=source, model_source=model_source, dataset=dataset, data_root=data_root, n=n,
        device=device)
    names = list(models)
    logger.info("dataset %s: %d test inputs, bounds %s", dataset, len(y), bounds)
    check_models({**models, **({source_name: source_model} if source_model is not None else {})},
                 x[:batch_size], y[:batch_size])

    eps_by_norm = {"linf": list(dict.fromkeys(eps)),  # a radius given twice is measured once
                   "l2": list(dict.fromkeys(eps_l2 if eps_l2 is not None else eps))}
    if noise_levels is not None:
        levels = list(noise_levels)
    else:
        levels = list(eps) if noise_mode == "std" else list(DEFAULT_SNR)

    def attack(name: str, norm: str | None, seed: int) -> Any:
        return build_attack(name, norm=norm or "linf", bounds=bounds,
                            steps=min_norm_steps if name in MIN_NORM_ATTACKS else steps, step_size=step_size,
                            random_start=random_start, loss=loss, overshoot=overshoot, noise_mode=noise_mode, seed=seed,
                            version=autoattack_version)

    given = {"steps": steps is not None, "step_size": step_size is not None, "loss": loss != "ce",
             "random_start": not random_start, "overshoot": overshoot != 0.02, "min_norm_steps": min_norm_steps is not None,
             "noise_mode": noise_mode != "std", "noise_levels": noise_levels is not None,
             "autoattack_version": autoattack_version != "standard"}
    ignored = ignored_options(attacks, [name for name, set_ in given.items() if set_])

    rows: list[dict[str, Any]] = []
    jobs = attack_jobs(attacks, norms, seeds, random_start=random_start)
    job_log = StepProgress(len(jobs), "attack", show=False, every=0.0)  # a log line per job (the bars are per job)
    for attack_name, norm, seed in jobs:
        job_log.set_postfix_str(f"{attack_name}{'' if norm is None else ' ' + norm} seed {seed}")
        current = attack(attack_name, norm, seed)
        epsilons = levels if attack_name == "noise" else eps_by_norm[norm]
        seed_everything(seed)
        rows += _with_flags(current, accuracy_vs_epsilon(models, current, x, y, epsilons, attack_name=attack_name,
                                                         batch_size=batch_size, seed=seed, progress=progress))
        if source_model is not None and attack_name != "noise":
            rows += _with_flags(current, accuracy_vs_epsilon(
                models, current, x, y, epsilons, source=source_model, source_name=source_name,
                attack_name=attack_name, batch_size=batch_size, seed=seed, progress=progress))
        job_log.update()
    warn_if_transfer_beats_whitebox(rows)

    config = {
        "command": "attack",
        "checkpoints": dict(zip(names, [str(p) for p in checkpoints])) if model_source is None else {},
        "model_source": model_source.record() if model_source is not None else None,
        "source": source,
        "dataset": dataset,
        "data_root": root,
        "n": len(y),
        "bounds": list(bounds),
        "attacks": list(dict.fromkeys(attacks)),
        "norms": list(dict.fromkeys(norms)),
        "eps": eps_by_norm,
        "noise_mode": noise_mode,
        "noise_levels": levels,
        "steps": steps,
        "min_norm_steps": min_norm_steps,
        "step_size": step_size,
        "random_start": random_start,
        "loss": loss,
        "overshoot": overshoot,
        "batch_size": batch_size,
        "seeds": seeds,
        "device": device,
        "autoattack_version": autoattack_version,
        "ignored": ignored,
        "attack_objects": sorted({repr(attack(a, norm_, s)) for a, norm_, s in jobs}),
        "torch_version": torch.__version__,
    }
    return AttackRun(rows=rows, config=config, dataset=dataset, n=len(y))


#: The options of :func:`attack_checkpoints` (with their flags) and the attacks that use each one.
_OPTION_USERS = {
    "steps": ("--steps", ("ifgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab")),
    "step_size": ("--step-size", ("ifgsm", "pgd")),
    "loss": ("--loss", ("fgsm", "ifgsm", "pgd")),
    "random_start": ("--no-random-start", ("pgd",)),
    "overshoot": ("--overshoot", ("deepfool",)),
    "min_norm_steps": ("--min-norm-steps", ("deepfool", "fmn")),
    "noise_mode": ("--noise-mode", ("noise",)),
    "noise_levels": ("--noise-levels", ("noise",)),
    "autoattack_version": ("--autoattack-version", ("autoattack",)),
}
#: The options several attack families read (the others belong to one attack each).
_SHARED_OPTIONS = ("steps", "step_size", "loss")


def ignored_options(attacks: Sequence[str], given: Sequence[str]) -> dict[str, list[str]]:
    """``{option: [attacks that ignore it]}`` for the options ``given`` that attacks of the run do not use; one
    logged warning names them.

    ``steps``, ``step_size`` and ``loss`` are named with every chosen attack that ignores them but
    ``noise`` (``steps`` configures ifgsm/pgd/apgd-*/fab, not square or autoattack, whose budgets are
    fixed; ``loss`` and ``step_size`` only fgsm/ifgsm/pgd); the options of one attack (``overshoot``,
    ``noise_levels``, ``autoattack_version``...) only when no chosen attack uses them.

    Example:
        >>> ignored_options(["pgd", "autoattack"], ["loss", "steps"])
        {'loss': ['autoattack'], 'steps': ['autoattack']}
    """
    chosen = list(dict.fromkeys(attacks))
    out = {}
    for option in given:
        users = _OPTION_USERS[option][1]
        idle = [name for name in chosen if name not in users and name != "noise"]
        if option in _SHARED_OPTIONS and idle or not any(name in users for name in chosen):
            out[option] = idle or chosen
    if out:
        logger.warning("options that do not apply to the chosen attack(s) are ignored: %s", "; ".join(
            f"{_OPTION_USERS[o][0]} by {', '.join(idle)} (it applies to {', '.join(_OPTION_USERS[o][1])})"
            for o, idle in out.items()))
    return out


def _with_flags(attack: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with a ``flags`` column: the AutoAttack flags that fired at each row's radius (``;``-separated),
    ``None`` (an empty cell) when none did and for other attacks; the attack's record is then cleared."""
    fired = getattr(attack, "sweep_flags", None)
    for row in rows:
        row["flags"] = (";".join(fired.get(float(row["eps"]), [])) if isinstance(fired, dict) else "") or None
    if isinstance(fired, dict):
        attack.reset_sweep_flags()
    return rows


def load_model_source(
    checkpoints: Sequence[str],
    model_source: ModelSource | None,
    data: str | None,
    *,
    n: int | None,
    device: str,
    owner: str,
    also: Mapping[str, Any] | None = None,
) -> ExternalModel | None:
    """The external model of ``model_source`` and its test data, or ``None`` to measure ``checkpoints``.

    The one place that chooses between deepmargin checkpoints and any classifier (``--model-file``
    / ``--model``, :func:`~deepmargin.experiments.external.load_external` on the ``.npz`` file
    ``data``), for :func:`attack_checkpoints` and
    :func:`~deepmargin.experiments.robustness_eval.measure_checkpoints` (``owner``, named in the errors).

    Raises:
        ValueError: a ``model_source`` with checkpoints (or any of ``also``, other parameters that
            name checkpoints, e.g. ``{"source": ...}``, set); neither a ``model_source`` nor a checkpoint.
    """
    from .external import load_external

    also = dict(also or {})
    if model_source is not None:
        given = [*map(str, checkpoints), *(f"{key}={value}" for key, value in also.items() if value is not None)]
        if given:
            names = ["'checkpoints'", *(f"'{key}'" for key in also)]
            what = f"{' and '.join(names)} parameter{'s' if len(names) > 1 else ''}"
            raise ValueError(
                f"The {what} of {owner} must be empty with a model_source (--model-file/--model measures that one "
                f"model on --data). Got {', '.join(given)} instead."
            )
        return load_external(model_source, data, n=n, device=device)
    if not checkpoints:
        raise ValueError(
            f"The 'checkpoints' parameter of {owner} must name at least one checkpoint, or give a model with "
            "--model-file FILE or --model MODULE:CALLABLE (and --data FILE.npz). Got none instead."
        )
    return None


def _load_models(
    checkpoints: Sequence[str],
    *,
    source: str | None,
    model_source: ModelSource | None,
    dataset: str | None,
    data_root: str | None,
    n: int | None,
    device: str,
) -> tuple[dict[str, Any], str | None, Any, torch.Tensor, torch.Tensor, tuple[float, float], str, str | None]:
    """``(models, source name, source model, x, y, bounds, dataset, data root)`` of checkpoints or of one external model."""
    from .checkpoints import load_checkpoints, load_test_split

    external = load_model_source(checkpoints, model_source, dataset, n=n, device=device, owner="attack_checkpoints",
                                 also={"source": source})
    if external is not None:
        return external.models, None, None, external.x, external.y, external.bounds, external.dataset, None
    # the source is named with the models (parent/stem where stems repeat, e.g. ce/best vs margin/best)
    loaded, all_metas = load_checkpoints([*checkpoints, *([source] if source else [])], device)
    models = {name: loaded[name] for name in list(loaded)[: len(checkpoints)]}
    source_name = list(loaded)[-1] if source is not None else None
    source_model = loaded[source_name] if source_name is not None else None
    x, y, bounds, dataset, root = load_test_split(all_metas, command="attack", data_root=data_root, n=n, device=device,
                                                  dataset=dataset)
    return models, source_name, source_model, x, y, bounds, dataset, root
