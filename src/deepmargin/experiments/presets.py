"""Named model presets of the studies: the paper's eight models and the adversarially trained pair.

A preset is a set of :class:`~deepmargin.training.TrainConfig` fields that says *which loss* a
model is trained with; everything else (the architecture, the optimiser and its learning rate,
epochs, batch size) comes from the dataset's protocol (:mod:`deepmargin.experiments.protocol`)
and the hyperparameter grid. The presets of Elsayed et al. (2018), Sec. 4.2::

    ce                 cross-entropy
    hinge              multiclass hinge plus 0.1 x cross-entropy (the paper's second baseline)
    margin-l1          large margin, l_1 distance, on the input and every hidden layer
    margin-l2          ... l_2 distance
    margin-linf        ... l_inf distance
    margin-l1-input    large margin, l_1 distance, on the input only
    margin-l2-input    ... l_2
    margin-linf-input  ... l_inf
    ce-adv             cross-entropy with FGSM adversarial training (Kurakin et al. 2016)
    margin-linf-adv    margin-linf with FGSM adversarial training
    matyasko-l1/-l2    Matyasko & Chau's hinge + gradient-difference penalty (C = 0.1)
    j1, j2, tulip      Finlay & Oberman's input-gradient penalties (eps = 0.1; tulip lambda = 0.1)
    vat                virtual adversarial training (eps = 1)
    dropout            cross-entropy with dropout 0.5 (the grid of compare-methods searches the rate)
    kesidis-7          Kesidis et al.'s (7): cross-entropy with mu added to the non-target logits
    kesidis-9          their (9), hinged, with the dual reweighting loop (lambda_x *= 2 each epoch
                       for samples whose margin is below mu; stops when every margin is met), with
                       RMSProp: the weights grow as 2^epochs, which with plain SGD scales the step
                       until training collapses (63% clean accuracy on digits), RMSProp is invariant
                       to that scale

Margin presets use all ``C - 1`` rival classes (``top_k`` is capped at ``num_classes - 1`` for
the dataset), the ``max`` aggregation, the first-order approximation, the penalty capped at
``gamma`` (``alpha = 1``) and cross-entropy with weight 1 beside the margin term (the paper's
"weighted sum of margin and cross-entropy"). ``gamma`` itself is searched by the grid.

A user preset is a JSON file of TrainConfig fields (:func:`load_preset_file`); its name is the
file's stem, or its ``"name"`` key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io import read_json_object
from ..training import TrainConfig

__all__ = [
    "ADVERSARIAL_BASELINE_PRESET", "ADVERSARIAL_LOSSES", "BASELINE_PRESET", "PAPER_LOSSES", "PRESETS", "Preset", "load_preset_file",
    "preset_family",
]

_MARGIN = dict(loss="margin", top_k=9, aggregation="max", approximate=True, alpha=1.0, ce_weight=1.0, margin_weight=1.0)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named set of TrainConfig fields.

    Attributes:
        name: the name given to ``--losses``.
        fields: TrainConfig fields (``layers`` ``None`` means the input and every hidden layer of
            the model; ``top_k`` is capped at ``num_classes - 1``).
        description: one line for the report.
        source: ``"built-in"`` or the JSON file it came from.
    """

    name: str
    fields: Mapping[str, Any]
    description: str
    source: str = "built-in"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {"name": self.name, "fields": dict(self.fields), "description": self.description, "source": self.source}


def _margin(norm: str, input_only: bool, adv: bool = False) -> dict[str, Any]:
    fields: dict[str, Any] = dict(_MARGIN, norm=norm, layers=["input"] if input_only else None)
    if adv:
        fields["adv_train"] = "fgsm"
    return fields


_NORM_TEXT = {"1": "l_1", "2": "l_2", "inf": "l_inf"}

#: The built-in presets, by name.
PRESETS: dict[str, Preset] = {
    "ce": Preset("ce", {"loss": "ce"}, "cross-entropy"),
    "hinge": Preset("hinge", {"loss": "hinge", "hinge_margin": 1.0, "hinge_ce_weight": 0.1},
                    "multiclass hinge + 0.1 x cross-entropy"),
}
for _norm, _tag in (("1", "l1"), ("2", "l2"), ("inf", "linf")):
    PRESETS[f"margin-{_tag}"] = Preset(
        f"margin-{_tag}", _margin(_norm, False), f"large margin ({_NORM_TEXT[_norm]}) on the input and every hidden layer + CE"
    )
for _norm, _tag in (("1", "l1"), ("2", "l2"), ("inf", "linf")):
    PRESETS[f"margin-{_tag}-input"] = Preset(
        f"margin-{_tag}-input", _margin(_norm, True), f"large margin ({_NORM_TEXT[_norm]}) on the input only + CE"
    )
PRESETS["ce-adv"] = Preset("ce-adv", {"loss": "ce", "adv_train": "fgsm"}, "cross-entropy, FGSM adversarial training")
PRESETS["margin-linf-adv"] = Preset(
    "margin-linf-adv", _margin("inf", False, adv=True), "margin-linf, FGSM adversarial training"
)

# The other seed methods (registered losses, :mod:`deepmargin.losses.registry`), at their option defaults.
for _name, _fields, _text in (
    ("matyasko-l1", {"loss": "matyasko", "loss_options": {"C": 0.1, "norm": 1}}, "Matyasko & Chau, l_1 gradient-difference penalty"),
    ("matyasko-l2", {"loss": "matyasko", "loss_options": {"C": 0.1, "norm": 2}}, "Matyasko & Chau, l_2 gradient-difference penalty"),
    ("j1", {"loss": "input_gradient", "loss_options": {"eps": 0.1, "norm": 1}}, "Finlay & Oberman J^1 = CE + eps ||grad_x CE||_1"),
    ("j2", {"loss": "input_gradient", "loss_options": {"eps": 0.1, "norm": 2}}, "Finlay & Oberman J^2 = CE + eps ||grad_x CE||_2"),
    ("tulip", {"loss": "input_gradient", "loss_options": {"eps": 0.1, "norm": 2, "lipschitz": 0.1}},
     "Finlay & Oberman J^{2-Lip} (tulip): J^2 + lambda max_batch ||grad_x CE||_2"),
    ("vat", {"loss": "vat", "loss_options": {"eps": 1.0}}, "virtual adversarial training (Miyato et al.) + CE"),
    ("dropout", {"loss": "ce", "model_kwargs": {"dropout": 0.5}}, "cross-entropy with dropout (Matyasko & Chau's baseline)"),
    ("kesidis-7", {"loss": "kesidis", "loss_options": {"mu": 5.0, "objective": "shifted-ce"}},
     "Kesidis et al. (7): cross-entropy with mu added to the non-target logits"),
    ("kesidis-9", {"loss": "kesidis", "optimizer": "rmsprop",
                   "loss_options": {"mu": 5.0, "objective": "hinged-violation", "reweight": "multiply", "delta": 2.0,
                                    "round_epochs": 1}},
     "Kesidis et al. (9) hinged, lambda_x *= 2 after each epoch for margins below mu"),
):
    PRESETS[_name] = Preset(_name, _fields, _text)

#: The baseline every study compares with: cross-entropy. The adversarial and compare-methods
#: studies craft their black-box attacks on it, and the report's verdicts are differences from it.
BASELINE_PRESET = "ce"
#: The baseline of the adversarially trained presets (``*-adv``) in the report's verdicts.
ADVERSARIAL_BASELINE_PRESET = "ce-adv"

#: The paper's eight models (Sec. 4.2), in its order.
PAPER_LOSSES: tuple[str, ...] = (
    "ce", "hinge", "margin-l1", "margin-l2", "margin-linf", "margin-l1-input", "margin-l2-input", "margin-linf-input",
)
#: The adversarially trained pair of the paper's Fig. 3 (right).
ADVERSARIAL_LOSSES: tuple[str, ...] = ("ce-adv", "margin-linf-adv")

_META_KEYS = ("name", "description")


def preset_family(fields: Mapping[str, Any]) -> str:
    """The grid family of a preset: ``"margin"`` for the large-margin loss, the loss name for a
    registered loss (``"matyasko"``, ``"input_gradient"``, ``"vat"``), ``"default"`` for the others."""
    from ..losses import LOSS_REGISTRY

    spec = LOSS_REGISTRY.get(fields.get("loss", "ce"))
    return spec.family if spec is not None else "default"


def load_preset_file(path: str | os.PathLike[str]) -> Preset:
    """Read a user preset: a JSON object of :class:`TrainConfig` fields (plus optional ``name``, ``description``).

    The fields are checked by building a TrainConfig from them (unknown keys and bad values raise
    a ValueError naming the file).

    Example:
        >>> import json, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "margin-l2-top3.json")
        >>> _ = open(p, "w").write(json.dumps({"loss": "margin", "norm": 2, "top_k": 3}))
        >>> load_preset_file(p).name
        'margin-l2-top3'
    """
    path = Path(path)
    data = read_json_object(path, "preset file (a JSON object of TrainConfig fields)")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"The 'name' of the preset file {str(path)!r} must be a non-empty str without '/'. Got {name!r} instead.")
    fields = {k: v for k, v in data.items() if k not in _META_KEYS}
    try:
        TrainConfig.from_dict(fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The preset file {str(path)!r} does not hold valid TrainConfig fields: {exc}") from exc
    return Preset(name, fields, str(data.get("description", f"user preset from {path.name}")), source=str(path))
