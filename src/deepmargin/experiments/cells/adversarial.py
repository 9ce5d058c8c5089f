"""The adversarial study's evaluation cell (kind ``eval``): the chosen model of one preset and seed under
FGSM and IFGSM, white-box and black-box (crafted on the baseline's chosen model of the seed), and
under Gaussian noise (standard deviations and SNRs).

Its configuration (:func:`~deepmargin.experiments.studies.build_plan`): ``loss`` (the preset),
``seed``, ``eps``, ``noise_std``, ``snr_db``, ``attack_n`` (the first N test inputs; None: all),
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
    clip_bounds = bounds if finite else (-math.inf, math.inf)
    if spec["noise_std"]:
        noise = GaussianNoise(std=1.0, bounds=clip_bounds, clip=finite)
        add(accuracy_vs_epsilon({name: model}, noise, x, y, [float(s) for s in spec["noise_std"]], seed=seed), "noise-std", "none", None)
    if spec["snr_db"]:
        noise = GaussianNoise(snr=20.0, bounds=clip_bounds, clip=finite)
        add(accuracy_vs_epsilon({name: model}, noise, x, y, [float(s) for s in spec["snr_db"]], seed=seed), "noise-snr", "none", None)
    return rows


register_cell_kind(CellKind(EVAL, rows_cell(adversarial_rows)))
