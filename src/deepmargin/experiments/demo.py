"""The demo: cross-entropy vs large margin on digits (clean and 40% label noise) and a 2-D picture.

It reproduces, at laptop scale, two claims of Elsayed et al. (2018): the margin loss trains as
well as cross-entropy on clean data and holds up better under label noise (Sec. 4.2.1), and its
decision boundary keeps away from the training points (Figure 1).

Output folder::

    results.jsonl / results.csv   one row per run: dataset, model, loss, label_noise, seed,
                                  test_acc (last epoch), test_acc_best (best validation epoch), ...
    config.json                   the demo settings and the resolved TrainConfig of every run
    accuracy_table.txt            the table printed at the end
    boundary.npz / boundary.png   decision regions of the toy set, cross-entropy | margin
    runs/NAME/                    each run's metrics, checkpoints and config (see deepmargin.training)

Running it again with the same folder reuses the finished runs (and resumes unfinished ones).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_text, save_figure
from ..training import TrainConfig, train
from ..training.records import write_json, write_rows

__all__ = ["DemoResult", "DemoSettings", "QUICK_SETTINGS", "demo_configs", "run_demo"]

logger = logging.getLogger(__name__)

#: Columns of ``results.csv``.
RESULT_COLUMNS = (
    "dataset", "model", "loss", "label_noise", "train_fraction", "seed", "test_acc", "test_acc_best",
    "best_val_acc", "best_epoch", "train_acc", "train_margin_min", "test_margin_median", "epochs", "seconds", "run",
)

# Margin options for the digits CNN, chosen on the validation split (see the README): the margin
# on the input and the three hidden ReLU layers with one gamma (about twice the median input
# margin of a cross-entropy model), the three most confusable rival classes, the penalty capped at
# gamma (alpha = 1: samples already beyond the boundary on the wrong side stop pulling, which is
# what makes the loss tolerant to flipped labels), plus cross-entropy with weight 1 as in the paper.
_DIGITS_MARGIN = dict(gamma=1.0, top_k=3, alpha=1.0, norm=2.0, aggregation="max", ce_weight=1.0)
# The toy MLP: gamma 0.5 (standardised inputs; about twice the smallest input margin a
# cross-entropy model reaches on moons) on the input and all hidden layers, penalty capped at gamma.
_TOY_MARGIN = dict(gamma=0.5, top_k=1, alpha=1.0, norm=2.0, ce_weight=1.0)


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs. The defaults finish in about a minute on 2 CPU cores.

    Args:
        epochs: epochs per digits run.
        seeds: seeds per setting (each gives its own validation split, label noise and init).
        noise_levels: label-noise levels of the digits runs.
        train_fraction: fraction of the digits training set used.
        model: architecture for digits.
        batch_size, lr: optimisation (Adam) for digits.
        margin: large-margin options for digits (:class:`TrainConfig` fields).
        toy_dataset: ``"moons"`` or ``"spirals"`` for the decision-boundary picture.
        toy_samples: number of toy training points (before the validation split).
        toy_epochs: epochs for the toy runs.
        toy_hidden: hidden layer widths of the toy MLP.
        toy_margin: large-margin options for the toy MLP (margin on the input and every hidden layer).
        resolution: grid points per axis of the picture.
    """

    epochs: int = 15
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    noise_levels: tuple[float, ...] = (0.0, 0.4)
    train_fraction: float = 1.0
    model: str = "digits_cnn"
    batch_size: int = 64
    lr: float = 1e-3
    margin: Mapping[str, Any] = field(default_factory=lambda: dict(_DIGITS_MARGIN))
    toy_dataset: str = "moons"
    toy_samples: int = 100
    toy_epochs: int = 300
    toy_hidden: tuple[int, ...] = (64, 64, 64)
    toy_margin: Mapping[str, Any] = field(default_factory=lambda: dict(_TOY_MARGIN))
    resolution: int = 200

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


#: A small setting for tests and a first look (a few seconds).
QUICK_SETTINGS = DemoSettings(epochs=2, seeds=(0,), train_fraction=0.3, toy_samples=60, toy_epochs=5, resolution=40)


@dataclass
class DemoResult:
    """What :func:`run_demo` returns: the result rows, the printed table and the files written.

    Besides accuracies, each row has l2 linearised input margins
    (:func:`deepmargin.metrics.linearized_margins`): ``test_margin_median``, the median over the
    test points, and for the toy runs ``train_margin_min``, the smallest over the training points
    (the margin of Figure 1(a)); ``None`` for the digits runs.
    """

    rows: list[dict[str, Any]]
    table: str
    out_dir: Path
    files: dict[str, Path]
    seconds: float


def demo_configs(settings: DemoSettings) -> list[tuple[str, TrainConfig]]:
    """``(run name, TrainConfig)`` for every run of the demo: digits then the toy set."""
    runs = []
    for noise in settings.noise_levels:
        for seed in settings.seeds:
            common = dict(
                dataset="digits", model=settings.model, label_noise=noise, train_fraction=settings.train_fraction,
                epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, optimizer="adam", seed=seed,
            )
            tag = f"noise{round(noise * 100):02d}-seed{seed}"
            runs.append((f"digits-ce-{tag}", TrainConfig(loss="ce", **common)))
            runs.append((f"digits-margin-{tag}", TrainConfig(loss="margin", **common, **dict(settings.margin))))
    toy = dict(
        dataset=settings.toy_dataset, n_samples=settings.toy_samples, model="mlp",
        model_kwargs={"hidden_sizes": list(settings.toy_hidden)}, epochs=settings.toy_epochs, batch_size=32,
        lr=3e-3, optimizer="adam", seed=0,
    )
    runs.append((f"{settings.toy_dataset}-ce", TrainConfig(loss="ce", **toy)))
    runs.append((f"{settings.toy_dataset}-margin", TrainConfig(loss="margin", **toy, **dict(settings.toy_margin))))
    return runs


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_demo(
    out_dir: str | os.PathLike[str] = "demo-output",
    *,
    quick: bool = False,
    settings: DemoSettings | None = None,
    overwrite: bool = False,
    progress: bool | None = False,
    num_threads: int | None = 1,
) -> DemoResult:
    """Train cross-entropy and large-margin models on digits and a toy set; write results and a picture.

    Args:
        out_dir: output folder (created).
        quick: use :data:`QUICK_SETTINGS` (seconds; for tests) instead of the defaults.
        settings: explicit settings (overrides ``quick``).
        overwrite: start every run again instead of reusing finished ones in ``out_dir``.
        progress: per-epoch progress bars (``None``: when stderr is a terminal).
        num_threads: torch CPU threads during the demo (restored afterwards). The default 1 is the
            fastest for these small models and avoids the large slowdowns of multi-threaded
            kernels on a busy machine; ``None`` leaves torch's setting alone.

    Returns:
        A :class:`DemoResult`.

    Example:
        >>> result = run_demo("demo-output", quick=True)  # doctest: +SKIP
        >>> print(result.table)  # doctest: +SKIP
    """
    from ..data import load_dataset
    from ..metrics import linearized_margins
    from ..reports import decision_grid, plot_decision_boundaries, save_boundary_data

    if settings is None:
        settings = QUICK_SETTINGS if quick else DemoSettings()
    if not isinstance(settings, DemoSettings):
        raise TypeError(f"The 'settings' parameter of run_demo must be a DemoSettings. Got {type(settings).__name__} instead.")
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"The 'num_threads' parameter of run_demo must be an int >= 1 or None. Got {num_threads!r} instead.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = demo_configs(settings)
    tic = time.perf_counter()
    rows: list[dict[str, Any]] = []
    toy_models: dict[str, Any] = {}
    with _torch_threads(num_threads):
        for i, (name, cfg) in enumerate(runs, start=1):
            bundle = load_dataset(cfg.dataset, val_size=cfg.val_size, train_fraction=cfg.train_fraction,
                                  label_noise=cfg.label_noise, seed=cfg.seed, n_samples=cfg.n_samples)
            try:
                result = train(cfg, out / "runs" / name, resume=False if overwrite else None, overwrite=overwrite,
                               progress=progress, verbose=False, data=bundle)
            except ValueError as exc:
                if "refusing to resume" not in str(exc):
                    raise
                raise ValueError(
                    f"The folder {str(out)!r} holds demo runs made with other settings. Pass overwrite=True "
                    f"(deepmargin demo --overwrite) or choose another output folder. Details: {exc}"
                ) from exc
            if i == 1:  # the folder is ours: describe what it holds
                write_json(out / "config.json",
                           {"settings": settings.to_dict(), "runs": {n: c.to_dict() for n, c in runs}})
            last = result.history[-1]
            is_toy = cfg.dataset == settings.toy_dataset
            train_m = linearized_margins(result.model, bundle.train.x, bundle.train.y, ["input"])["input"] if is_toy else None
            test_m = linearized_margins(result.model, bundle.test.x, bundle.test.y, ["input"])["input"]
            rows.append({
                "dataset": cfg.dataset, "model": cfg.model, "loss": cfg.loss, "label_noise": cfg.label_noise,
                "train_fraction": cfg.train_fraction, "seed": cfg.seed, "test_acc": result.test_acc,
                "test_acc_best": result.test_acc_best, "best_val_acc": result.best_val_acc,
                "best_epoch": result.best_epoch, "train_acc": last["train_acc"],
                "train_margin_min": train_m.min().item() if train_m is not None else None,
                "test_margin_median": test_m.median().item(), "epochs": len(result.history),
                "seconds": sum(r["seconds"] for r in result.history), "run": f"runs/{name}",
            })
            write_rows(out / "results", rows, fieldnames=RESULT_COLUMNS)
            logger.info("[%d/%d] %s: test accuracy %.4f (%.1f s)", i, len(runs), name, result.test_acc, rows[-1]["seconds"])
            if is_toy:
                toy_models[cfg.loss] = (result.model, result.test_acc)
                toy = bundle

        points = torch.cat([toy.train.x, toy.test.x])
        panels, titles = {}, {}
        xs = ys = None
        for loss, label in (("ce", "cross-entropy"), ("margin", "large margin")):
            model, acc = toy_models[loss]
            xs, ys, panels[loss] = decision_grid(model, points, resolution=settings.resolution)
            titles[loss] = f"{label}: test accuracy {100 * acc:.1f}%"
    npz = save_boundary_data(out / "boundary.npz", xs=xs, ys=ys, panels=panels, titles=titles,
                             x_train=toy.train.x, y_train=toy.train.y, x_test=toy.test.x, y_test=toy.test.y)
    fig = plot_decision_boundaries(npz)
    png = out / "boundary.png"
    save_figure(fig, png, dpi=100)

    table = _summary_table(rows, settings)
    atomic_write_text(out / "accuracy_table.txt", table + "\n")
    files = {
        "results": out / "results.jsonl", "results_csv": out / "results.csv", "config": out / "config.json",
        "table": out / "accuracy_table.txt", "boundary": png, "boundary_data": npz,
    }
    return DemoResult(rows=rows, table=table, out_dir=out, files=files, seconds=time.perf_counter() - tic)


def _summary_table(rows: Sequence[Mapping[str, Any]], settings: DemoSettings) -> str:
    from ..reports import accuracy_table, format_table

    digits = [r for r in rows if r["dataset"] == "digits"]
    toy = [r for r in rows if r["dataset"] == settings.toy_dataset]
    parts = [
        f"digits test accuracy (%), {settings.model}, {settings.epochs} epochs, last epoch, mean ± std over seeds {list(settings.seeds)}:",
        accuracy_table(digits, index="loss", columns="label_noise", value="test_acc"),
        "",
        "digits test accuracy (%) of the best-validation checkpoint:",
        accuracy_table(digits, index="loss", columns="label_noise", value="test_acc_best"),
        "",
        "digits median l2 linearised input margin of the test samples:",
        accuracy_table(digits, index="loss", columns="label_noise", value="test_margin_median", percent=False, decimals=3),
        "",
        f"{settings.toy_dataset}, MLP {list(settings.toy_hidden)}, {settings.toy_epochs} epochs:",
        format_table(
            [{"loss": r["loss"], "test accuracy (%)": 100 * r["test_acc"], "smallest train margin": r["train_margin_min"],
              "median test margin": r["test_margin_median"]} for r in toy],
            floatfmt=".3f",
        ),
    ]
    return "\n".join(parts)
