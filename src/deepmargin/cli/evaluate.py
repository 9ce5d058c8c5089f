"""``deepmargin evaluate``: test accuracy and linearised margins of a checkpoint."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ._common import positive_int

HELP = "test accuracy and per-layer linearised margins of a checkpoint"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand."""
    from ._common import dataset_arg

    p = subparsers.add_parser("evaluate", help=HELP, description=HELP + " (Elsayed et al. 2018, eq. 7).")
    p.add_argument("checkpoint", type=Path, help="checkpoint file (a run's best.pt or last.pt)")
    p.add_argument("--data", "--dataset", dest="dataset", type=dataset_arg, metavar="NAME|FILE.npz",
                   help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root", help="folder with the dataset files (default: the checkpoint's)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test",
                   help="which split to evaluate (default: test). 'train' is measured against the training labels "
                        "the model was trained on, i.e. with the run's label noise; add --clean-labels for the "
                        "original labels. Val and test labels are always clean")
    p.add_argument("--clean-labels", action="store_true",
                   help="with --split train: accuracy and margins against the training labels before label noise")
    p.add_argument("--layers", nargs="+", metavar="NAME",
                   help="layers for the margins (default: the checkpoint's margin layers, else input + hidden layers)")
    p.add_argument("--norm", type=_norm_option, default=2.0, help="p of the l_p distance: 1, 2, inf or a real >= 1 (default: 2)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="samples per forward pass (default: 256)")
    p.add_argument("--max-samples", type=positive_int, help="evaluate only the first N samples of the split")
    p.add_argument("--json", type=Path, dest="json_out", help="also write the results to this JSON file")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p


def _norm_option(text: str) -> float:
    """argparse type of --norm: a float p >= 1 (``math.inf`` for 'inf')."""
    from ..training.config import parse_norm

    try:
        return parse_norm(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 1, 2, inf or a real number p >= 1. Got {text!r} instead.") from None


def norm_label(p: float) -> str:
    """``'l2'``, ``'linf'``, ``'l1.5'``: the short name of the l_p norm."""
    if math.isinf(p):
        return "linf"
    return f"l{int(p)}" if float(p).is_integer() else f"l{p:g}"


def evaluate_checkpoint(
    checkpoint: Path,
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

    from ..data import load_dataset
    from ..metrics import linearized_margins, summarize_margins
    from ..training import load_model
    from ..training.config import parse_norm
    from ..training.objective import default_margin_layers

    from ..training.config import resolve_device

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
    bundle = load_dataset(
        name,
        root=data_root if data_root is not None else cfg.get("data_root"),
        val_size=cfg.get("val_size", 0.1) if same else 0.1,
        train_fraction=cfg.get("train_fraction", 1.0) if same else 1.0,
        label_noise=cfg.get("label_noise", 0.0) if same else 0.0,
        seed=cfg.get("seed", 0) if same else 0,
        n_samples=cfg.get("n_samples") if same else None,
        noise=cfg.get("data_noise") if same else None,
    )
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


def run(args: argparse.Namespace) -> int:
    """Print the accuracy and a margin table; optionally write JSON."""
    from ..reports.tables import format_table
    from ..training.records import write_json

    result = evaluate_checkpoint(
        args.checkpoint, dataset=args.dataset, data_root=args.data_root, split=args.split, layers=args.layers,
        norm=args.norm, batch_size=args.batch_size, max_samples=args.max_samples, device=args.device,
        clean_labels=args.clean_labels,
    )
    print(f"checkpoint  {result['checkpoint']} ({result['model_name']}, loss {result['loss']}, epoch {result['epoch']})")
    note = ""
    if result["labels"] == "noisy":
        note = (f" (against the noisy training labels, {result['label_noise']:.0%} label noise; "
                "--clean-labels for the original ones)")
    elif result["split"] == "train" and args.clean_labels:
        note = " (against the clean training labels, before label noise)"
    elif result["split"] == "train":
        note = " (against the training labels; the run had no label noise)"
    print(f"{result['split']} accuracy  {result['accuracy']:.4f} on {result['n']} samples of {result['dataset']}{note}")
    norm = math.inf if result["norm"] == "inf" else float(result["norm"])
    print(f"linearised {norm_label(norm)} margins (negative = misclassified):")
    cols = ["layer", "mean", "median", "q05", "q25", "q75", "q95", "frac_negative"]
    rows = [{"layer": layer, **{c: s.get(c) for c in cols[1:]}} for layer, s in result["layers"].items()]
    print(format_table(rows, cols))
    if args.json_out is not None:
        write_json(args.json_out, result)
        print(f"wrote {args.json_out}")
    return 0
