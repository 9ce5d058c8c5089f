"""The adversarial study's evaluation cell (kind ``eval``): the chosen model of one preset and seed under
FGSM and IFGSM, white-box and black-box (crafted on the baseline's chosen model of the seed), under
AutoAttack (the worst case per input over its ensemble, white-box, at one l_inf radius), and under
Gaussian noise (standard deviations and SNRs).

Its configuration (:func:`~deepmargin.experiments.studies.build_plan`): ``loss`` (the preset),
``seed``, ``eps``, ``noise_std``, ``snr_db``, ``attack_n`` (the first N test inputs; None: all),
``autoattack`` (a version, or ``"none"``; absent in studies of older versions) and ``autoattack_eps``,
``device``, ``candidates`` / ``source`` / ``source_candidates`` and ``data_root``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..studies import Cell, hp_label
from .chosen import load_chosen
from .registry import CellKind, register_cell_kind, rows_cell

__all__ = ["EVAL", "adversarial_rows"]

logger = logging.getLogger(__name__)

#: The kind's name.
EVAL = "eval"
#: The study the rows belong to.
_STUDY = "adversarial"


def adversarial_rows(root: Path, cell: Cell, dataset_label: str) -> list[dict[str, Any]]:
    """The adversarial-study rows of one chosen model: FGSM/IFGSM white- and black-box, Gaussian noise."""
    import torch

    from ...attacks import FGSM, IFGSM, GaussianNoise, accuracy_vs_epsilon
    from ...data import dataset_from_config

    spec = cell.config
    found = load_chosen(root, cell)
    if found is None:
        logger.warning("%s: every grid point of %s or of its source diverged; nothing to attack", cell.id, spec["loss"])
        return []
    model, source, chosen, results = found.model, found.source, found.run, found.results
    device = torch.device(spec["device"])
    config = found.meta["config"]
    data_root = spec.get("data_root") or config.get("data_root")
    bundle = dataset_from_config(config, root=data_root, val_size=0.0, seed=0)  # the test split
    x, y = bundle.test.x, bundle.test.y
    if spec["attack_n"] is not None:
        x, y = x[: spec["attack_n"]], y[: spec["attack_n"]]
    x, y = x.to(device), y.to(device)
    bounds = tuple(bundle.bounds) if bundle.bounds is not None else (-math.inf, math.inf)
    finite = math.isfinite(bounds[1] - bounds[0])
    steps = None if finite else 10  # IFGSM's grey-level schedule needs finite bounds
    seed = int(spec["seed"])
    name = spec["loss"]
    base = {
        "study": _STUDY, "dataset": dataset_label, "loss": name, "label_noise": 0.0, "train_fraction": 1.0,
        "seed": seed, "val_acc": results[chosen].get("best_val_acc"), "test_acc_last": None,
        "n_train": (results[chosen].get("data") or {}).get("sizes", {}).get("train"),
        "hp": hp_label(chosen), "run": chosen,
    }
    rows: list[dict[str, Any]] = []

    def add(attack_rows: Sequence[Mapping[str, Any]], attack: str, box: str, source_name: str | None) -> None:
        for r in attack_rows:
            rows.append({**base, "attack": attack, "eps": float(r["eps"]), "box": box, "test_acc": r["accuracy"],
                         "n_test": r["n"], "source": source_name})

    eps = [float(e) for e in spec["eps"]]
    for attack_name, attack in (("fgsm", FGSM(eps=max(eps) or 1.0, bounds=bounds)),
                                ("ifgsm", IFGSM(eps=max(eps) or 1.0, bounds=bounds, steps=steps))):
        add(accuracy_vs_epsilon({name: model}, attack, x, y, eps), attack_name, "white", None)
        add(accuracy_vs_epsilon({name: model}, attack, x, y, eps, source=source, source_name=spec["source"]),
            attack_name, "black", spec["source"])
    rows += autoattack_rows(model, x, y, spec, bounds, base, ifgsm=IFGSM(eps=1.0, bounds=bounds, steps=steps))
    clip_bounds = bounds if finite else (-math.inf, math.inf)
    if spec["noise_std"]:
        noise = GaussianNoise(std=1.0, bounds=clip_bounds, clip=finite)
        add(accuracy_vs_epsilon({name: model}, noise, x, y, [float(s) for s in spec["noise_std"]], seed=seed), "noise-std", "none", None)
    if spec["snr_db"]:
        noise = GaussianNoise(snr=20.0, bounds=clip_bounds, clip=finite)
        add(accuracy_vs_epsilon({name: model}, noise, x, y, [float(s) for s in spec["snr_db"]], seed=seed), "noise-snr", "none", None)
    return rows


def autoattack_rows(model: Any, x: Any, y: Any, spec: Mapping[str, Any], bounds: Sequence[float],
                    base: Mapping[str, Any], *, ifgsm: Any = None) -> list[dict[str, Any]]:
    """The AutoAttack rows of one model (``spec["autoattack"]`` version at ``spec["autoattack_eps"]``,
    l_inf, white-box): the worst case (``attack="autoattack"``) and the accuracy after each attack of
    the ensemble in order (``"autoattack:<name>"``), with the reliability flags that fired
    (``flags``, ``;``-separated). Adds the IFGSM row at that radius when ``ifgsm`` is given and the
    IFGSM sweep did not reach it. None without ``autoattack`` (or ``"none"``)."""
    from ..worst_case import run_autoattack

    eps = float(spec.get("autoattack_eps") or 0.0)
    found = run_autoattack(model, x, y, version=spec.get("autoattack"), eps=eps, bounds=bounds, seed=int(spec["seed"]),
                           label=str(base.get("loss")))
    if found is None:
        return []
    result, flags = found
    common = {**base, "eps": eps, "box": "white", "n_test": int(len(y)), "source": None, "flags": flags}
    rows = [{**common, "attack": f"autoattack:{name}", "test_acc": acc} for name, acc in result.accuracy_after.items()]
    rows.append({**common, "attack": "autoattack", "test_acc": result.robust_accuracy})
    swept = [float(e) for e in spec.get("eps", [])]
    if ifgsm is not None and not any(math.isclose(e, eps) for e in swept):
        from ...attacks import accuracy_vs_epsilon

        name = str(base.get("loss"))
        (r,) = accuracy_vs_epsilon({name: model}, ifgsm, x, y, [eps])
        rows.append({**common, "attack": "ifgsm", "test_acc": r["accuracy"], "flags": ""})
    return rows


register_cell_kind(CellKind(EVAL, rows_cell(adversarial_rows)))
