"""Test accuracy and linearised margins of a checkpoint (``deepmargin evaluate``).

:func:`evaluate_checkpoint` loads a checkpoint, rebuilds the dataset it was trained on from its
saved config (:func:`~deepmargin.data.dataset_from_config`) and measures the accuracy and the
per-layer linearised margins (Elsayed et al. 2018, eq. 7) of one split.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "test",
    layers: list[str] | None = None,
    norm: str | float = 2,
    batch_size: int = 256,
    max_samples: int | None = None,
    device: str = "cpu",
    clean_labels: bool = False,
) -> dict[str, Any]:
    """Accuracy and margin summaries of a checkpoint on a dataset split (what the command prints).

    ``split="train"`` uses the training labels as trained on, label noise included, unless
    ``clean_labels`` (then the labels before the noise); val and test labels are always clean.
    The result's ``"labels"`` says which: ``"clean"`` or ``"noisy"`` (training labels of a run with
    label noise).
    """
    import torch

    from ..data import dataset_from_config
    from ..metrics import linearized_margins, summarize_margins
    from ..training import load_model
    from ..training.config import parse_norm, resolve_device
    from ..training.objective import default_margin_layers

    owner = "evaluate_checkpoint (deepmargin evaluate)"
    try:
        p = parse_norm(norm)
    except ValueError:
        raise ValueError(
            f"The 'norm' parameter of {owner} (--norm) must be 1, 2, inf or a real number p >= 1. Got {norm!r} instead."
        ) from None
    if split not in ("test", "val", "train"):
        raise ValueError(f"The 'split' parameter of {owner} must be one of ['test', 'val', 'train']. Got {split!r} instead.")
    resolve_device(device, owner=owner, name="device")
    model, meta = load_model(checkpoint, map_location=device)
    cfg = meta.get("config") or {}
    name = dataset or cfg.get("dataset")
    if name is None:
        raise ValueError(f"Checkpoint {str(checkpoint)!r} does not record its dataset; pass --data.")
    same = name == cfg.get("dataset")
    # another dataset than the checkpoint's is loaded with the default settings
    bundle = dataset_from_config(cfg if same else {"dataset": name, "data_root": cfg.get("data_root")}, root=data_root)
    expected = list(meta["model_kwargs"]["input_shape"])
    if list(bundle.input_shape) != expected or bundle.num_classes != meta["model_kwargs"]["num_classes"]:
        raise ValueError(
            f"The dataset {name!r} (input shape {list(bundle.input_shape)}, {bundle.num_classes} classes) does not fit "
            f"the checkpoint's model (input shape {expected}, {meta['model_kwargs']['num_classes']} classes)."
        )
    part = getattr(bundle, split)
    x, y = part.x, part.y
    labels = "clean"
    if split == "train" and bundle.train_clean_y is not None and not torch.equal(bundle.train_clean_y, y):
        if clean_labels:
            y = bundle.train_clean_y
        else:
            labels = "noisy"
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    x, y = x.to(device), y.to(device)
    if layers is None:
        from ..losses import LOSS_REGISTRY

        spec = LOSS_REGISTRY.get(cfg.get("loss", "ce"))
        saved = cfg.get("layers") if spec is not None and spec.uses_layers else None
        layers = list(saved) if saved else default_margin_layers(model)
    with torch.no_grad():
        correct = sum(
            (model(x[i : i + batch_size]).argmax(dim=1) == y[i : i + batch_size]).sum().item()
            for i in range(0, len(y), batch_size)
        )
    margins = linearized_margins(model, x, y, layers, norm=p, batch_size=batch_size)
    return {
        "checkpoint": str(checkpoint),
        "dataset": name,
        "split": split,
        "labels": labels,
        "label_noise": cfg.get("label_noise", 0.0) if same else 0.0,
        "n": int(len(y)),
        "accuracy": correct / max(len(y), 1),
        "norm": "inf" if p == float("inf") else p,
        "layers": {layer: summarize_margins(m) for layer, m in margins.items()},
        "model_name": meta["model_name"],
        "epoch": meta["epoch"],
        "loss": cfg.get("loss"),
    }
