"""Detecting adversarial inputs by their margin p-value (Kesidis, Miller & Xiang, Sec. V).

:func:`run_detection` is the one pipeline, used by ``deepmargin detect`` (through
:func:`detect_checkpoint`, which reads the checkpoints) and by the ``compare-methods`` study:

1. **Fit.** :class:`~deepmargin.metrics.MarginPValues` is fitted to the true-class margins of the
   correctly classified training samples (labels as trained), per class or pooled.
2. **Threshold.** The p-value threshold is set on clean held-out data, never on the inputs the
   detection is measured on: the validation split when it has inputs, else the first half of the
   test split (the second half is then the evaluation set). Inputs are scored as unlabelled ones
   are at test time: own-decision margin and class. An input is flagged when ``p < threshold``
   (:func:`~deepmargin.metrics.threshold_at_fpr`).
3. **Attack.** Every evaluation input (the first ``n``), misclassified ones included, is attacked
   with its true label: white-box, and crafted on a source model and transferred when one is
   given. The ROC AUC compares the clean evaluation inputs (negatives) with their attacked
   versions (positives); TPR is at the threshold of step 2. The ``*_fooled`` columns restrict the
   positives to the attacked inputs the model misclassifies.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..capture import eval_mode
from ..data import DataBundle

logger = logging.getLogger(__name__)

__all__ = [
    "DETECT_ATTACKS",
    "DETECT_FIELDS",
    "DetectionResult",
    "DetectRun",
    "detect_checkpoint",
    "margin_settings",
    "run_detection",
]

#: The attacks detection is measured on.
DETECT_ATTACKS = ("fgsm", "ifgsm", "pgd")
#: Column order of the detection rows (``rows.csv`` of ``deepmargin detect``).
DETECT_FIELDS = (
    "model", "box", "source", "attack", "norm", "eps", "seed", "n", "clean_accuracy", "accuracy",
    "auc", "tpr", "fpr_target", "threshold", "fpr_test", "fpr_calibration", "calibration", "n_calibration",
    "n_fooled", "auc_fooled", "tpr_fooled", "per_class", "dataset", "checkpoint",
)


@dataclass
class DetectionResult:
    """What :func:`run_detection` measured.

    Attributes:
        rows: one dict per attack, radius and box (white / transfer), keys :data:`DETECT_FIELDS`.
        estimator: the fitted :class:`~deepmargin.metrics.MarginPValues`.
        per_class: whether it holds one mixture per class.
        threshold: flag ``p < threshold``; set on the ``calibration`` inputs.
        calibration: ``'val'`` or ``'test-first-half'``; ``n_calibration`` inputs,
            ``fpr_calibration`` of them flagged.
        clean_accuracy: accuracy on the clean evaluation inputs (``n`` of them).
        n_train: training samples; ``n_train_fitted``: those the mixtures were fitted to.
        panels: margins of Kesidis et al.'s four histogram panels: ``train`` (fitted true-class
            margins of all training samples), ``heldout`` (true-class, evaluation set), ``test``
            (own-decision, evaluation set), ``attacked`` (own-decision, FGSM at the first
            nonzero radius; ``None`` without a histogram).
        histogram: ``{"attack": "fgsm", "eps": ..., "box": ...}`` of the ``attacked`` panel.
        adversarial: ``{(box, attack, eps): inputs}`` when asked for (``keep_adversarial``).
    """

    rows: list[dict[str, Any]]
    estimator: Any
    per_class: bool
    threshold: float
    calibration: str
    n_calibration: int
    fpr_calibration: float
    clean_accuracy: float
    n: int
    n_train: int
    n_train_fitted: int
    panels: dict[str, np.ndarray | None]
    histogram: dict[str, Any]
    adversarial: dict[tuple[str, str, float], torch.Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------- model outputs


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    with torch.no_grad(), eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            out.append(model(x[start:start + batch_size]).float())
    return torch.cat(out) if out else torch.empty(0)


def _margins(logits: torch.Tensor, y: torch.Tensor | None, rectify: bool) -> np.ndarray:
    from ..metrics import logit_margins

    return logit_margins(logits, y, rectify=rectify).double().cpu().numpy()


def _decisions(logits: torch.Tensor, rectify: bool) -> np.ndarray:
    scores = torch.relu(logits) if rectify else logits
    return scores.argmax(dim=1).cpu().numpy()


def _own_pvalues(estimator: Any, logits: torch.Tensor, rectify: bool) -> np.ndarray:
    """P-values as for unlabelled inputs: the own-decision margin, scored with the own decision's mixture."""
    return estimator.pvalues(_margins(logits, None, rectify), _decisions(logits, rectify))


def _craft(attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float], batch_size: int,
           seed: int) -> list[torch.Tensor]:
    """``attack`` crafted on ``model`` for every radius, in chunks (each chunk's random start seeded with ``seed``)."""
    from ..attacks import run_sweep

    parts: list[list[torch.Tensor]] = []
    for start in range(0, x.shape[0], batch_size):
        generator = torch.Generator(device=x.device).manual_seed(seed) if getattr(attack, "random_start", False) else None
        parts.append(run_sweep(attack, model, x[start:start + batch_size], y[start:start + batch_size], eps,
                               generator=generator))
    return [torch.cat([part[i] for part in parts]) for i in range(len(eps))]


# --------------------------------------------------------------------------- steps


def _split_calibration(bundle: DataBundle, device: torch.device, n: int | None):
    """``(calibration name, x_cal, x_eval, y_eval)``: the validation split, else the test split's first half."""
    x_test, y_test = bundle.test.x.to(device), bundle.test.y.to(device)
    if len(bundle.val) > 0:
        calibration, x_cal = "val", bundle.val.x.to(device)
    else:
        if x_test.shape[0] < 2:
            raise ValueError(f"The test split of {bundle.name!r} is too small to hold out a calibration half.")
        calibration = "test-first-half"
        half = x_test.shape[0] // 2
        x_cal, x_test, y_test = x_test[:half], x_test[half:], y_test[half:]
    if n is not None:
        x_test, y_test = x_test[:n], y_test[:n]
    if x_test.shape[0] == 0:
        raise ValueError(f"The test split of {bundle.name!r} is empty; nothing to evaluate.")
    return calibration, x_cal, x_test, y_test


def _check_per_class_counts(y: np.ndarray, num_classes: int) -> None:
    counts = np.bincount(y, minlength=num_classes)
    few = [k for k in range(num_classes) if counts[k] < 2]
    if few:
        raise ValueError(
            f"The per-class fit of deepmargin detect needs at least 2 correctly classified training samples of "
            f"every class. Got {', '.join(f'{counts[k]} for class {k}' for k in few)} instead; "
            "train the model further or use --pooled."
        )


def _auto_per_class(y_fitted: np.ndarray, decided: Sequence[np.ndarray]) -> tuple[bool, list[int]]:
    """Per class when every decided class has at least 2 samples to fit; else pooled. Also the fitted classes."""
    counts = {int(c): int((y_fitted == c).sum()) for c in set(y_fitted.tolist())}
    fitted = sorted(c for c, k in counts.items() if k >= 2)
    seen: set[int] = set()
    for d in decided:
        seen |= set(d.tolist())
    return seen <= set(fitted), fitted


def _jobs(attacks: Mapping[str, Any], boxes: list, hist_box: str, histogram: bool, norm: str, bounds) -> list:
    """``(attack name, attack, box)`` for every attack and box; an FGSM for the histogram alone when missing."""
    jobs = [(name, attack, box) for name, attack in attacks.items() for box in boxes]
    if histogram and "fgsm" not in attacks:
        from ..attacks.factory import build_attack

        jobs.append(("fgsm-histogram", build_attack("fgsm", norm=norm, bounds=bounds),
                     next(b for b in boxes if b[0] == hist_box)))
    return jobs


def run_detection(
    model: nn.Module,
    bundle: DataBundle,
    *,
    attacks: Mapping[str, Any],
    eps: Sequence[float],
    norm: str = "linf",
    source: nn.Module | None = None,
    source_name: str | None = None,
    white_box: bool = True,
    fpr: float = 0.05,
    per_class: bool | str = True,
    max_components: int = 10,
    reg_covar: float = 1e-6,
    n: int | None = None,
    batch_size: int = 256,
    attack_batch_size: int | None = None,
    seed: int = 0,
    rectify: bool = False,
    name: str = "model",
    checkpoint: str | None = None,
    check: bool = True,
    histogram: bool = True,
    keep_adversarial: bool = False,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> DetectionResult:
    """Fit margin p-values, set a threshold on clean held-out data and score attacks (module docstring).

    Args:
        model: the model whose margins are scored (logits ``(N, C)``).
        bundle: its data: the training split with the labels it was trained with, the validation
            split (calibration when not empty) and the test split.
        attacks: ``{name: attack}`` (e.g. :func:`~deepmargin.attacks.build_attack`), each crafted at
            every radius of ``eps`` with :func:`~deepmargin.attacks.run_sweep`.
        eps: radii.
        norm: the attacks' norm (the ``norm`` column; the histogram-only FGSM's norm).
        source: also craft the attacks on this model and transfer them (rows with box ``transfer``).
        source_name: the ``source`` column of the transfer rows.
        white_box: craft the attacks on ``model`` too (rows with box ``white``).
        fpr: false-positive rate the threshold is set at on the calibration inputs.
        per_class: one mixture per class (``True``; every class needs 2 correctly classified
            training samples), pooled (``False``), or ``'auto'``: per class when every class that
            the model decides on the calibration, evaluation and attacked inputs has 2 samples to
            fit, else pooled.
        max_components, reg_covar: of :class:`~deepmargin.metrics.MarginPValues`.
        n: evaluate the first ``n`` evaluation inputs (default: all).
        batch_size: inputs per forward pass (and per attack call unless ``attack_batch_size``).
        attack_batch_size: inputs per attack call (default ``batch_size``).
        seed: of the mixture fits and of each chunk's random start.
        rectify: margins of the rectified outputs ``relu(f)`` (Kesidis et al.'s assumption (1)).
        name, checkpoint: the ``model`` and ``checkpoint`` columns.
        check: run the reliability checks on ``model`` and ``source`` first.
        histogram: record the ``attacked`` panel (FGSM at the first nonzero radius, transferred
            when there is a source, else white-box; crafted for it when ``attacks`` has no FGSM).
        keep_adversarial: keep every attacked batch in ``result.adversarial``.
        progress: show a progress bar over the attacks.
        device: where the inputs go.

    Returns:
        A :class:`DetectionResult`.
    """
    from tqdm.auto import tqdm

    from ..metrics import MarginPValues, detection_scores, threshold_at_fpr
    from .checkpoints import check_models, input_bounds

    if per_class not in (True, False, "auto"):
        raise ValueError(f"The 'per_class' parameter of run_detection must be True, False or 'auto'. Got {per_class!r} instead.")
    boxes = [*([("white", model, None)] if white_box else []),
             *([("transfer", source, source_name)] if source is not None else [])]
    if not boxes:
        raise ValueError("The 'source' parameter of run_detection must be a model when white_box=False. Got None instead.")
    device = torch.device(device)
    eps = list(eps)

    # 1. training margins (true-class, labels as trained) of the correctly classified samples
    x_train, y_train = bundle.train.x.to(device), bundle.train.y.to(device)
    if x_train.shape[0] == 0:
        raise ValueError(f"The training split of {bundle.name!r} is empty; nothing to fit.")
    train_logits = _logits(model, x_train, batch_size)
    train_margins = _margins(train_logits, y_train, rectify)
    y_train_np = y_train.cpu().numpy()
    correct = (_decisions(train_logits, rectify) == y_train_np) & (train_margins > 0)
    if per_class is True:
        _check_per_class_counts(y_train_np[correct], bundle.num_classes)

    # 2. calibration and evaluation inputs
    calibration, x_cal, x_test, y_test = _split_calibration(bundle, device, n)
    cal_logits = _logits(model, x_cal, batch_size)
    test_logits = _logits(model, x_test, batch_size)
    y_test_np = y_test.cpu().numpy()
    clean_accuracy = float((_decisions(test_logits, rectify) == y_test_np).mean())
    if check:
        check_models({name: model, **({source_name: source} if source is not None else {})},
                     x_test[:batch_size], y_test[:batch_size])

    # 3. attacked inputs: white-box on the model, transferred from the source
    nonzero = [e for e in eps if e > 0]
    hist_eps = nonzero[0] if nonzero else eps[0]
    hist_box = "transfer" if source is not None else "white"
    jobs = _jobs(attacks, boxes, hist_box, histogram, norm, input_bounds(bundle))
    attacked: list[tuple[str, str, str | None, float, torch.Tensor]] = []
    adversarial: dict[tuple[str, str, float], torch.Tensor] = {}
    for attack_name, attack, (box, crafter, src_name) in tqdm(jobs, desc="detect", disable=not progress, leave=False,
                                                              file=sys.stderr):
        radii = [hist_eps] if attack_name == "fgsm-histogram" else eps
        advs = _craft(attack, crafter, x_test, y_test, radii, attack_batch_size or batch_size, seed)
        for e, x_adv in zip(radii, advs):
            attacked.append((attack_name, box, src_name, e, _logits(model, x_adv, batch_size)))
            if keep_adversarial:
                adversarial[(box, attack_name, e)] = x_adv

    # 4. fit, threshold, scores
    keep = correct
    if per_class == "auto":
        decided = [_decisions(cal_logits, rectify), _decisions(test_logits, rectify),
                   *(_decisions(logits, rectify) for *_, logits in attacked)]
        per_class, fitted = _auto_per_class(y_train_np[correct], decided)
        if per_class:
            keep = correct & np.isin(y_train_np, fitted)
    estimator = MarginPValues(per_class=per_class, max_components=max_components, random_state=seed,
                              reg_covar=reg_covar)
    estimator.fit(train_margins[keep], y_train_np[keep] if per_class else None)
    p_cal = _own_pvalues(estimator, cal_logits, rectify)
    threshold = threshold_at_fpr(p_cal, fpr)
    fpr_cal = float((p_cal < threshold).mean())
    logger.info("threshold %.4g set on %d %s inputs (FPR %.4f)", threshold, len(p_cal), calibration, fpr_cal)
    p_clean = _own_pvalues(estimator, test_logits, rectify)

    common = {"fpr_target": fpr, "threshold": threshold, "fpr_calibration": fpr_cal, "calibration": calibration,
              "n_calibration": int(len(p_cal)), "per_class": bool(per_class), "dataset": bundle.name,
              "checkpoint": checkpoint}
    rows: list[dict[str, Any]] = []
    attacked_margins = None
    for attack_name, box, src_name, e, adv_logits in attacked:
        if attack_name in ("fgsm", "fgsm-histogram") and box == hist_box and e == hist_eps and histogram:
            attacked_margins = _margins(adv_logits, None, rectify)
        if attack_name == "fgsm-histogram":
            continue
        p_adv = _own_pvalues(estimator, adv_logits, rectify)
        fooled = _decisions(adv_logits, rectify) != y_test_np
        scores = detection_scores(p_clean, p_adv, threshold)
        fooled_scores = detection_scores(p_clean, p_adv[fooled], threshold) if fooled.any() else None
        rows.append({
            "model": name, "box": box, "source": src_name, "attack": attack_name, "norm": norm, "eps": e,
            "seed": seed, "n": int(len(y_test_np)), "clean_accuracy": clean_accuracy,
            "accuracy": float((~fooled).mean()), "auc": scores["auc"], "tpr": scores["tpr"],
            "fpr_test": scores["fpr"], "n_fooled": int(fooled.sum()),
            "auc_fooled": fooled_scores["auc"] if fooled_scores else None,
            "tpr_fooled": fooled_scores["tpr"] if fooled_scores else None,
            **common,
        })
    panels = {
        "train": train_margins,
        "heldout": _margins(test_logits, y_test, rectify),
        "test": _margins(test_logits, None, rectify),
        "attacked": attacked_margins,
    }
    return DetectionResult(
        rows=rows, estimator=estimator, per_class=bool(per_class), threshold=threshold, calibration=calibration,
        n_calibration=int(len(p_cal)), fpr_calibration=fpr_cal, clean_accuracy=clean_accuracy,
        n=int(len(y_test_np)), n_train=int(len(y_train_np)), n_train_fitted=int(keep.sum()), panels=panels,
        histogram={"attack": "fgsm", "eps": hist_eps, "box": hist_box}, adversarial=adversarial,
    )


# --------------------------------------------------------------------------- from checkpoints


def margin_settings(meta: Mapping[str, Any]) -> tuple[bool, float | None]:
    """``(rectify, mu)`` of a checkpoint: rectified outputs and target margin of its training loss.

    Asked of the loss registry (:attr:`~deepmargin.losses.LossSpec.output_margin`): ``kesidis``
    with ``rectify=True`` scores ``relu(f)``; ``kesidis`` (``mu``) and ``hinge`` (``hinge_margin``)
    have a target margin. Other losses: ``(False, None)``.
    """
    from ..losses import LOSS_REGISTRY, loss_options_of

    config = dict(meta.get("config") or {})
    spec = LOSS_REGISTRY.get(config.setdefault("loss", "ce"))
    if spec is None or spec.output_margin is None:
        return False, None
    options = {o.name: o.default for o in spec.options}
    options.update(loss_options_of(config))
    return spec.output_margin(options)


@dataclass
class DetectRun:
    """``deepmargin detect``'s result: the detection, and what its files record.

    Attributes:
        name: the checkpoint's row name; ``source_name`` that of ``--source`` (or ``None``).
        dataset: the dataset's name. result: the :class:`DetectionResult`.
        rectify, mu: :func:`margin_settings` of the checkpoint.
        mixture: the content of ``mixture.json``; config: that of ``config.json``.
    """

    name: str
    source_name: str | None
    dataset: str
    result: DetectionResult
    rectify: bool
    mu: float | None
    mixture: dict[str, Any]
    config: dict[str, Any]


def detect_checkpoint(
    checkpoint: str,
    *,
    source: str | None = None,
    attacks: Sequence[str] = DETECT_ATTACKS,
    eps: Sequence[float] = (0.1,),
    norm: str = "linf",
    steps: int | None = None,
    step_size: float | None = None,
    fpr: float = 0.05,
    per_class: bool = True,
    max_components: int = 10,
    reg_covar: float = 1e-6,
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    dataset: str | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> DetectRun:
    """Margin p-value detection of a checkpoint (``deepmargin detect``): :func:`run_detection` on its data.

    The training data is rebuilt from the checkpoint's config
    (:func:`~deepmargin.experiments.checkpoints.load_training_bundle`); ``dataset`` replaces the
    recorded one. The attacks (:func:`~deepmargin.attacks.build_attack`: ``ifgsm`` with Kurakin's
    rule, PGD with a random start seeded with ``seed``) are crafted on the checkpoint and, with
    ``source``, on that checkpoint and transferred. Margins are rectified when the checkpoint's loss
    says so (:func:`margin_settings`).
    """
    from ..attacks.factory import build_attack
    from .checkpoints import check_fits, input_bounds, load_checkpoints, load_training_bundle

    eps = list(dict.fromkeys(eps))
    attack_names = list(dict.fromkeys(attacks))
    paths = [checkpoint, *([source] if source is not None else [])]
    loaded, metas = load_checkpoints(paths, device)
    name = list(loaded)[0]
    model, meta = loaded[name], metas[name]
    source_name = list(loaded)[1] if source is not None else None
    if source is not None and dataset is None:
        datasets = {n_: (m.get("config") or {}).get("dataset") for n_, m in metas.items()}
        if len(set(datasets.values())) != 1:
            raise ValueError(
                f"The checkpoints of deepmargin detect (CKPT and --source) must record the same dataset in "
                f"config['dataset']. Got {datasets} instead."
            )
    bundle = load_training_bundle(meta, dataset=dataset, data_root=data_root)
    for n_, m_ in metas.items():
        check_fits(n_, m_, bundle)
    bounds = input_bounds(bundle)
    rectify, mu = margin_settings(meta)

    def attack(attack_name: str) -> Any:
        return build_attack(attack_name, norm=norm, bounds=bounds, steps=steps, step_size=step_size, seed=seed)

    result = run_detection(
        model, bundle, attacks={a: attack(a) for a in attack_names}, eps=eps, norm=norm,
        source=loaded[source_name] if source_name is not None else None, source_name=source_name, fpr=fpr,
        per_class=per_class, max_components=max_components, reg_covar=reg_covar, n=n, batch_size=batch_size,
        seed=seed, rectify=rectify, name=name, checkpoint=str(checkpoint), progress=progress,
        device=torch.device(device),
    )
    mixture = {
        "checkpoint": str(checkpoint), "dataset": bundle.name, "rectify": rectify, "mu": mu,
        "n_train": result.n_train, "n_train_fitted": result.n_train_fitted,
        "threshold": result.threshold, "fpr": fpr, "calibration": result.calibration,
        "n_calibration": result.n_calibration, "fpr_calibration": result.fpr_calibration,
        "fit": result.estimator.to_dict(),
    }
    config = {
        "command": "detect",
        "checkpoint": str(checkpoint),
        "source": source,
        "dataset": bundle.name,
        "data_root": data_root if data_root is not None else (meta.get("config") or {}).get("data_root"),
        "n": result.n,
        "bounds": list(bounds),
        "attacks": attack_names,
        "eps": eps,
        "norm": norm,
        "steps": steps,
        "step_size": step_size,
        "fpr": fpr,
        "per_class": bool(per_class),
        "max_components": max_components,
        "reg_covar": reg_covar,
        "calibration": result.calibration,
        "histogram": result.histogram,
        "rectify": rectify,
        "mu": mu,
        "batch_size": batch_size,
        "seed": seed,
        "device": str(device),
        "attack_objects": {a: repr(attack(a)) for a in attack_names},
        "torch_version": torch.__version__,
    }
    return DetectRun(name=name, source_name=source_name, dataset=bundle.name, result=result, rectify=rectify, mu=mu,
                     mixture=mixture, config=config)
