"""The training loop: data, model and loss from a :class:`TrainConfig`, metrics, checkpoints, resume.

A run directory holds::

    config.json     the resolved configuration (TrainConfig.to_dict, margin layers filled in)
    metrics.jsonl   one row per epoch (also metrics.csv): epoch, train_loss, train_acc, val_loss,
    metrics.csv     val_acc, test_acc (last epoch only), lr, seconds, plus the grid keys
                    (dataset, model, loss, label_noise, train_fraction, seed), then
                    train_adv_acc (adversarial training: accuracy on the adversarial part of
                    the batches; None without it)
    last.pt         checkpoint after the last completed epoch (model, optimizer, scheduler)
    best.pt         checkpoint of the epoch with the best validation accuracy (the best training
                    accuracy when there is no validation split, ``val_size=0``)
    results.json    summary: test accuracy of the last model and of best.pt, which criterion chose
                    best.pt (``best_selected_by``: ``"val_acc"`` or ``"train_acc"``), whether the
                    run collapsed (``collapsed``: ``{"reason", "likely_causes"}`` or null, and a
                    warning in the log; :mod:`.health`), ...

One process trains into a run directory at a time: :func:`train` holds an exclusive lock on it
(:mod:`.lock`; under ``torchrun`` rank 0 holds it) from its start to its end, exceptions included,
and a second process is refused at once.

Starting :func:`train` again with the same directory continues from ``last.pt`` when the
configuration matches (and refuses when it does not). The keys of
:data:`~deepmargin.training.config.RESUME_FREE_KEYS` (device, eval batch size, data folder, val_loss) may
change. With ``resume=True`` (``--resume``), ``epochs`` may change too: a finished or interrupted
run continues to the new count (not below the epochs already completed), giving the same numbers
as a run started with that count, except with the cosine schedule, whose learning rates depend on
``epochs`` (refused). The default ``resume=None`` only picks up a run with the same ``epochs``
(and starts a new run where there is none); ``resume=True`` on a folder without ``last.pt`` is an error.
Every epoch reseeds torch, numpy and ``random`` from ``(seed, epoch)`` (``(seed + rank, epoch)`` on
process ``rank`` under ``torchrun``: :func:`epoch_seed`) and shuffles with its own generator (common
to all processes), so a resumed run gives the same numbers as an uninterrupted one.

Per batch, the training inputs are first augmented (``augment``, :mod:`.augment`), then, with
``adv_train``, a share ``adv_ratio`` of them is replaced by adversarial examples and the loss
weighs them by ``adv_weight`` (Kurakin et al. 2016, :mod:`.adversarial`); both draw their random
numbers from torch's global generator, reseeded every epoch. ``train_loss`` is then the weighted
loss and ``train_acc`` the accuracy on the batches as fed (clean and adversarial samples).

With ``unlabelled=True`` (semi-supervised, ``vat``), the samples ``train_fraction`` leaves out join
every epoch with the label ``-1``; ``train_acc`` counts the labelled samples only.

A loss with a reweighting loop (``kesidis`` with ``reweight=...``, :mod:`.reweight`) trains every
sample with its weight ``lambda_x``: after each epoch the number of training samples whose margin
is below ``mu`` goes into the ``violated`` column; at the end of each round the weights of those
samples grow, and training stops early when none is violated (or after ``max_rounds`` rounds):
``results.json`` says why (``stopped``). The weights are saved in ``last.pt``, so a resumed run
continues the same loop.

With ``denominator_refresh=R`` (margin loss, first order) the margin denominators of every training
sample are recomputed in eval mode at the start of epochs 1, 1 + R, ... and read from a cache in the
steps in between (:mod:`.denominators`); the cache is saved in ``last.pt`` for resuming.

How the loop is put together: :func:`train` checks its arguments, builds model, objective and
optimiser, opens or resumes the run directory, then chooses once, from the configuration, how a
step is taken (:func:`~deepmargin.training.steps.build_step`: plain, weighted, cached-denominator or
adversarial, optionally behind the augmentation) and what runs between epochs
(:func:`~deepmargin.training.hooks.build_hooks`: the reweighting rounds, the denominator refresh).
Each epoch is one pass of :func:`_train_one_epoch`, the validation pass, the hooks' epoch end and
:class:`~deepmargin.training.checkpoint.CheckpointSaver`, which owns the best/last policy. A new
variant of the step or a new between-epoch job is a new object, not a branch in the loop.

Batches: every epoch shuffles the training set and feeds it in batches of ``batch_size``, the last
one holding the rest. A batch of one sample trains like any other, except for a model with batch
norm, which cannot normalise one sample in training mode: there ``batch_size=1`` is refused, and a
trailing batch of one sample is left out of that epoch (a different sample each epoch, as the order
is reshuffled; the run's log says so at the start). Under ``torchrun`` every process needs its share
of each batch, so the smallest trainable batch is one (two with batch norm) sample per process.

The epoch's loss and counts stay on the device (:mod:`.meters`) and reach the host once per epoch
(under DDP in one all-reduce); the progress bar shows the running mean loss, read every
``_PROGRESS_EVERY`` steps. A NaN or infinite training loss is therefore detected at the end of the
epoch it happened in, not at its step: the FloatingPointError (the same message, with the first
non-finite value) comes before the validation pass, the hooks and the checkpoints of that epoch,
so nothing of the diverged epoch is saved.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..capture import eval_mode
from ..io import names_working_directory
from ..models import build_model
from . import distributed
from .augment import check_augmentable
from .checkpoint import CheckpointSaver, save_checkpoint
from .config import RESUME_FREE_KEYS, TrainConfig, config_differences, resolve_device
from .health import detect_collapse, likely_causes
from .hooks import EpochHook, ReweightingRounds, build_hooks
from .lock import RunFolderBusyError, RunFolderLock
from .meters import EpochMeter, EpochTotals
from .objective import Objective, build_objective
from .optim import build_optimizer, build_scheduler, derive_seed, seed_everything
from .records import append_row, write_json, write_rows
from .steps import TrainStep, build_step

__all__ = ["TrainResult", "evaluate_split", "init_model", "train", "RUN_FILES", "METRIC_COLUMNS"]

logger = logging.getLogger(__name__)

#: Steps between updates of the progress bar's running loss (each is one device-to-host transfer).
_PROGRESS_EVERY = 20

#: Files a run writes into its output directory.
RUN_FILES = ("config.json", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "results.json")

#: Columns of ``metrics.csv`` (and keys of every ``metrics.jsonl`` row), in order.
METRIC_COLUMNS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "lr", "seconds",
    "dataset", "model", "loss", "label_noise", "train_fraction", "seed", "train_adv_acc", "violated",
)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        config: the resolved configuration (plain dict, as in ``config.json``).
        history: one metrics row per completed epoch.
        test_acc: test accuracy of the final model.
        test_acc_best: test accuracy of the ``best.pt`` model (see ``best_selected_by``).
        best_epoch, best_val_acc: the epoch ``best.pt`` comes from and its validation accuracy
            (``None`` without a validation split).
        model: the final model (eval mode).
        out_dir: the run directory (``None`` when nothing was written).
        resumed_from: the epoch the run continued from (0 for a fresh run).
        data_info: the dataset's metadata (sizes, label noise, seed, ...).
        best_selected_by: the metric that chose ``best.pt``: ``"val_acc"``, or ``"train_acc"``
            when the run has no validation split (``val_size=0``).
        stopped: why the reweighting loop ended training before ``epochs`` (``None`` otherwise).
        sample_weights: the final per-sample weights of the reweighting loop (``None`` without it).
        collapsed: why the run counts as collapsed (its training accuracy stayed at chance, or its
            loss and accuracy stayed flat: :func:`deepmargin.training.health.detect_collapse`),
            ``None`` for a run that learnt.
    """

    config: dict[str, Any]
    history: list[dict[str, Any]]
    test_acc: float
    test_acc_best: float
    best_epoch: int
    best_val_acc: float | None
    model: nn.Module
    out_dir: Path | None = None
    resumed_from: int = 0
    data_info: dict[str, Any] = field(default_factory=dict)
    best_selected_by: str = "val_acc"
    stopped: str | None = None
    sample_weights: Tensor | None = None
    collapsed: str | None = None

    def summary(self) -> dict[str, Any]:
        """Plain-data summary (what ``results.json`` holds)."""
        return {
            "config": self.config,
            "data": self.data_info,
            "epochs_completed": len(self.history),
            "resumed_from": self.resumed_from,
            "best_epoch": self.best_epoch,
            "best_selected_by": self.best_selected_by,
            "best_val_acc": self.best_val_acc,
            "test_acc": self.test_acc,
            "test_acc_best": self.test_acc_best,
            "final": self.history[-1] if self.history else None,
            "seconds_total": sum(r["seconds"] for r in self.history),
            "stopped": self.stopped,
            "collapsed": None if self.collapsed is None else {
                "reason": self.collapsed, "likely_causes": likely_causes(self.config)},
        }


def _batches(n: int, batch_size: int, generator: torch.Generator | None, *, min_size: int = 1) -> Iterator[Tensor]:
    """Index batches over ``range(n)``; shuffled with ``generator`` when given.

    Every batch holds ``batch_size`` indices except the last, which holds the rest; that trailing
    batch alone is left out when it is smaller than ``min_size`` (``batch_size >= min_size``, so no
    other batch can be: see :func:`_smallest_trainable_batch`)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if idx.numel() < min_size:
            return
        yield idx


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` holds a batch norm layer (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, lazy ones)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _smallest_trainable_batch(model: nn.Module, ctx: distributed.DistContext) -> int:
    """The fewest samples a global training batch needs: one per process, two with batch norm (in
    training mode it normalises by the batch's own statistics, which one sample does not have)."""
    return (2 if has_batch_norm(model) else 1) * ctx.world_size


def _check_trainable_batches(
    config: TrainConfig, model: nn.Module, n_train: int, ctx: distributed.DistContext
) -> tuple[int, str]:
    """Refuse a batch size (or a training set) too small for ``model``; return the smallest trainable
    batch and why it is that size."""
    smallest = _smallest_trainable_batch(model, ctx)
    why = (f"model {config.model!r} has batch norm, which cannot train on a batch of one sample"
           if has_batch_norm(model) else "every process needs a sample")
    if smallest == 1:
        return smallest, ""
    per_process = f", {smallest} for {ctx.world_size} processes" if ctx.enabled else ""
    if config.batch_size < smallest:
        raise ValueError(
            f"The 'batch_size' parameter of TrainConfig must be at least {smallest // ctx.world_size} per process"
            f"{per_process} ({why}). Got {config.batch_size} instead."
        )
    if n_train < smallest:
        raise ValueError(
            f"The training set must hold at least {smallest} samples ({why}). Got {n_train} instead."
        )
    return smallest, why


@torch.no_grad()
def _accuracy_only(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    correct = 0
    for idx in _batches(len(y), batch_size, None):
        correct += (model(x[idx]).argmax(dim=1) == y[idx]).sum().item()
    return correct / max(len(y), 1)


def evaluate_split(
    model: nn.Module, x: Tensor, y: Tensor, *, objective: Objective | None = None, batch_size: int = 512
) -> dict[str, float | None]:
    """Accuracy (and the mean objective when given) of ``model`` on ``(x, y)``, in eval mode.

    Each module's previous mode is restored afterwards (:func:`deepmargin.capture.eval_mode`). Returns ``{"loss": ..., "acc": ...}``
    (``None`` values for an empty split).

    Shape:
        x ``(N, *input_shape)`` on the model's device; y ``(N,)`` int64.
    """
    if len(y) == 0:
        return {"loss": None, "acc": None}
    with eval_mode(model):
        if objective is None:
            return {"loss": None, "acc": _accuracy_only(model, x, y, batch_size)}
        total, correct = 0.0, 0
        for idx in _batches(len(y), batch_size, None):
            if objective.needs_input_grad:
                loss, logits = objective(x[idx], y[idx])
            else:
                with torch.no_grad():
                    loss, logits = objective(x[idx], y[idx])
            total += loss.detach().item() * idx.numel()
            correct += (logits.detach().argmax(dim=1) == y[idx]).sum().item()
        return {"loss": total / len(y), "acc": correct / len(y)}


def _show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _load_data(config: TrainConfig) -> Any:
    from ..data import load_dataset

    return load_dataset(
        config.dataset,
        root=config.data_root,
        val_size=config.val_size,
        train_fraction=config.train_fraction,
        label_noise=config.label_noise,
        seed=config.seed,
        n_samples=config.n_samples,
        noise=config.data_noise,
        keep_unlabelled=config.unlabelled,
    )


def init_model(config: TrainConfig, bundle: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The freshly initialised model a (non-resumed) run of :func:`train` starts from.

    Seeds torch, numpy and ``random`` with ``config.seed`` and builds ``config.model`` for the
    bundle's ``num_classes`` and ``input_shape``. Returns ``(model, model_kwargs)`` where
    ``model_kwargs`` are the (plain) arguments of :func:`deepmargin.models.build_model`.
    """
    seed_everything(config.seed)
    model_kwargs = {"num_classes": int(bundle.num_classes), "input_shape": list(bundle.input_shape), **config.model_kwargs}
    return build_model(config.model, **model_kwargs), model_kwargs


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of torch's, numpy's and ``random``'s global generators for ``epoch`` on process ``rank``.

    ``derive_seed(seed + rank, epoch)``: the house rule ``seed + rank``, so that under ``torchrun``
    every process draws its own augmentations, adversarial epsilons and dropout masks for its own
    samples, while rank 0 (and a single process) keeps ``derive_seed(seed, epoch)``. The epoch's
    shuffling has its own generator, common to all processes, so the global batches are the same.

    Example:
        >>> epoch_seed(0, 1) == derive_seed(0, 1) != epoch_seed(0, 1, rank=1)
        True
    """
    return derive_seed(seed + rank, epoch)


def _clear_run_files(out_dir: Path) -> None:
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    data: Any | None = None,
    verbose: bool = True,
) -> TrainResult:
    """Train the model of ``config`` and return the metrics and the final model.

    Args:
        config: the run configuration.
        out_dir: run directory for config, metrics and checkpoints (``None``: write nothing; an
            empty path, or one naming the working directory itself, ``"."``, is refused).
        resume: ``None`` (default) continues from ``out_dir/last.pt`` if it exists and its
            configuration matches; ``True`` the same, but refuses a folder with nothing to resume;
            ``False`` refuses an ``out_dir`` that already holds a run unless ``overwrite``.
            A resumed run may change the keys of ``RESUME_FREE_KEYS``; with ``resume=True`` also
            ``epochs``, to continue the run to a new epoch count (not with the cosine schedule;
            see the module docstring).
        overwrite: delete an existing run in ``out_dir`` and start again (with ``resume=None`` or
            ``resume=False``; ``resume=True`` together with ``overwrite=True`` is an error).
        progress: show a tqdm progress bar; ``None``: only when stderr is a terminal.
        data: an already loaded :class:`deepmargin.data.DataBundle` to use instead of loading
            ``config.dataset`` (it must be the dataset the configuration describes).
        verbose: log the run's start, each epoch and the result at INFO level (otherwise DEBUG).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: the configuration differs from the one of the run being resumed, the
            loss options do not fit the model/data (e.g. unknown layer names), ``config.augment``
            is not ``"none"`` for a dataset of non-image inputs, ``config.device`` is not
            available here, ``resume=True`` with ``overwrite=True``, or ``batch_size=1`` for a
            model with batch norm.
        FileExistsError: ``resume=False`` and ``out_dir`` holds a run, without ``overwrite``.
        FileNotFoundError: ``resume=True`` and ``out_dir`` holds no run (no ``last.pt``).
        RunFolderBusyError: another process is training into ``out_dir`` (an ``OSError``; the folder
            is held, by rank 0 under ``torchrun``, for the whole run: :mod:`.lock`).
        FloatingPointError: the training loss became NaN or infinite.

    Example:
        >>> result = train(TrainConfig(dataset="digits", loss="margin", gamma=1.0, epochs=2), "runs/x")  # doctest: +SKIP
        >>> result.test_acc  # doctest: +SKIP
        0.93
    """
    _check_train_arguments(config, resume, overwrite, out_dir)
    ctx = distributed.context()
    device = distributed.local_device(resolve_device(config.device), ctx)
    if ctx.enabled and config.batch_size < ctx.world_size:
        raise ValueError(f"The 'batch_size' parameter of TrainConfig must be at least the {ctx.world_size} processes "
                         f"(it is the global batch, split over them). Got {config.batch_size} instead.")
    out = Path(out_dir) if out_dir is not None else None
    lock = _lock_run_folder(out, ctx, device)
    try:
        return _train(config, out, ctx, device, resume=resume, overwrite=overwrite, progress=progress, data=data,
                      verbose=verbose)
    finally:
        if lock is not None:
            lock.release()


def _lock_run_folder(out: Path | None, ctx: distributed.DistContext, device: torch.device) -> RunFolderLock | None:
    """Hold the run folder for this run (rank 0 locks it; every rank fails when it cannot)."""
    if out is None:
        return None
    lock, busy = None, None
    if ctx.is_main:
        try:
            lock = RunFolderLock(out).acquire()
        except RunFolderBusyError as exc:
            busy = exc
    if distributed.any_rank(busy is not None, device, ctx):
        raise busy if busy is not None else RunFolderBusyError(
            f"Run folder {str(out)!r} is in use by another training process (rank 0 could not lock it). Wait for "
            "that run to finish (or stop it), or train into another folder (--out)."
        )
    return lock


def _train(
    config: TrainConfig, out: Path | None, ctx: distributed.DistContext, device: torch.device, *,
    resume: bool | None, overwrite: bool, progress: bool | None, data: Any | None, verbose: bool,
) -> TrainResult:
    """The body of :func:`train`, with its arguments checked and the run folder held."""
    bundle = data if data is not None else _load_data(config)
    check_augmentable(bundle.input_shape, config.augment, dataset=f"dataset {bundle.name!r}")

    # model, objective, optimiser; then the run directory (resume)
    model, model_kwargs = init_model(config, bundle)
    model.to(device)
    objective = build_objective(config, model)
    resolved = _resolved_config(config, objective)
    optimizer = build_optimizer(
        config.optimizer, model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = build_scheduler(config.lr_schedule, optimizer, epochs=config.epochs, decay=config.lr_decay, step=config.lr_step)
    main = ctx.is_main  # only rank 0 writes
    saver = CheckpointSaver(
        out, model=model, model_name=config.model, model_kwargs=model_kwargs, config=resolved, optimizer=optimizer,
        scheduler=scheduler, selected_by="val_acc" if len(bundle.val.y) else "train_acc", write=main,
        save=save_checkpoint,
    )
    x_train, y_train = _training_set(bundle, config, device)
    min_batch, min_batch_why = _check_trainable_batches(config, model, len(y_train), ctx)
    start_epoch, history, stopped, saved_extra = _open_run_dir(
        saver, resolved, resume=resume, overwrite=overwrite, ctx=ctx, device=device)

    # how a step is taken and what happens between epochs, chosen once
    net, train_objective = _wrap_for_processes(model, objective, resolved, ctx, device)
    hooks = build_hooks(config, objective, model, net, x_train, y_train, ctx=ctx)
    for hook in hooks:
        hook.load_state(saved_extra)
    step = build_step(config, train_objective, model, bounds=bundle.bounds, hooks=hooks)
    x_val, y_val = bundle.val.x.to(device), bundle.val.y.to(device)
    x_test, y_test = bundle.test.x.to(device), bundle.test.y.to(device)
    level = logging.INFO if verbose and main else logging.DEBUG
    _log_start(level, config, bundle, objective, step, hooks, y_train, n_val=len(y_val), n_test=len(y_test),
               min_batch=min_batch, min_batch_why=min_batch_why)
    if stopped is not None:
        logger.log(level, "the run in %s already stopped: %s", out, stopped)

    for epoch in range(start_epoch + 1, config.epochs + 1):
        if stopped is not None:
            break
        seed_everything(epoch_seed(config.seed, epoch, ctx.rank))
        lr = optimizer.param_groups[0]["lr"]
        net.train()
        tic = time.perf_counter()
        for hook in hooks:
            hook.on_epoch_start(epoch)
        totals = _train_one_epoch(epoch, step, model, optimizer, x_train, y_train, config=config, ctx=ctx,
                                  show=_show_progress(progress) and main, min_batch=min_batch)
        if scheduler is not None:
            scheduler.step()
        val = evaluate_split(model, x_val, y_val, objective=objective if config.val_loss else None,
                             batch_size=config.eval_batch_size)
        row = _metrics_row(epoch, totals, val, lr, config, bundle.name)
        for hook in hooks:
            end = hook.on_epoch_end(epoch)
            row.update(end.fields)
            stopped = stopped if stopped is not None else end.stop
        row["seconds"] = time.perf_counter() - tic
        if epoch == config.epochs or stopped is not None:
            row["test_acc"] = evaluate_split(model, x_test, y_test, batch_size=config.eval_batch_size)["acc"]
        history.append(row)
        saver.update(epoch, row, history=history, stopped=stopped, extra=_hook_states(hooks))
        _log_epoch(level, row, config.epochs)
        if out is not None and main:
            append_row(out / "metrics", row, fieldnames=METRIC_COLUMNS)

    model.eval()
    result = _result(model, saver, history, bundle, x_test, y_test, hooks, config=config, resolved=resolved,
                     model_kwargs=model_kwargs, out=out, start_epoch=start_epoch, stopped=stopped)
    result.collapsed = detect_collapse(history, int(bundle.num_classes), majority_rate=_majority_rate(y_train))
    if result.collapsed is not None and main:
        logger.warning("the run%s collapsed: %s. Likely causes: %s", f" in {out}" if out is not None else "",
                       result.collapsed, "; ".join(likely_causes(resolved)) or "unknown")
    if out is not None and main:
        write_json(out / "results.json", result.summary())
    distributed.barrier(ctx)
    logger.log(
        level, "test accuracy %.4f (last epoch), %.4f (best.pt: epoch %d, best %s)",
        result.test_acc, result.test_acc_best, saver.best_epoch, "validation accuracy"
        if saver.selected_by == "val_acc" else "training accuracy, no validation split",
    )
    return result


def _check_train_arguments(config: Any, resume: Any, overwrite: Any, out_dir: Any = None) -> None:
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"The 'out_dir' parameter of train must be a path or None. Got {type(out_dir).__name__} instead.")
    if out_dir is not None and names_working_directory(out_dir):
        given = os.fspath(out_dir)
        shown = repr(given) if given.strip() else f"{given!r} (an empty path)"
        if given.strip():  # '.', './': what an empty path becomes as a Path, e.g. from --out ""
            shown += " (the working directory, also what an empty --out becomes)"
        raise ValueError(
            "The 'out_dir' parameter of train must be a run folder's path, not empty nor the working directory "
            f"itself (a run writes and deletes its files there), e.g. 'runs/x'; None writes nothing. Got {shown} instead."
        )
    if not isinstance(config, TrainConfig):
        raise TypeError(f"The 'config' parameter of train must be a TrainConfig. Got {type(config).__name__} instead.")
    if resume not in (None, True, False):
        raise TypeError(f"The 'resume' parameter of train must be None or a bool. Got {resume!r} instead.")
    if not isinstance(overwrite, bool):
        raise TypeError(f"The 'overwrite' parameter of train must be a bool. Got {overwrite!r} instead.")
    if resume is True and overwrite:
        raise ValueError(
            "The 'overwrite' parameter of train must be False when resume=True (resuming keeps the run, "
            "overwriting deletes it). Got overwrite=True instead."
        )


def _resolved_config(config: TrainConfig, objective: Objective) -> dict[str, Any]:
    """``config`` as plain values, with the margin layers the objective resolved, re-validated."""
    resolved = config.to_dict()
    if objective.layers is not None:
        resolved["layers"] = list(objective.layers)
    TrainConfig.from_dict(resolved)  # re-validate (e.g. gamma list length against the layers)
    return resolved


def _wrap_for_processes(
    model: nn.Module, objective: Objective, resolved: dict[str, Any], ctx: distributed.DistContext, device: torch.device
) -> tuple[nn.Module, Objective]:
    """``(net, objective)`` the steps run: the model and its objective, or under several processes the
    DistributedDataParallel wrapper (made after the checkpoint is loaded) and an objective on it."""
    if not ctx.enabled:
        return model, objective
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return net, build_objective(TrainConfig.from_dict(resolved), net)


def _training_set(bundle: Any, config: TrainConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    """The training inputs and labels on ``device``; with ``unlabelled`` the left-out pool follows, labelled -1."""
    x, y = bundle.train.x.to(device), bundle.train.y.to(device)
    if not config.unlabelled:
        return x, y
    pool = bundle.unlabelled
    if pool is None:
        raise ValueError("The 'data' parameter of train must be loaded with keep_unlabelled=True for unlabelled=True.")
    x = torch.cat([x, pool.x.to(device)])
    y = torch.cat([y, torch.full((len(pool),), -1, dtype=y.dtype, device=device)])
    return x, y


def _train_one_epoch(
    epoch: int, step: TrainStep, model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *,
    config: TrainConfig, ctx: distributed.DistContext, show: bool, min_batch: int = 1,
) -> EpochTotals:
    """One pass over the training set in the epoch's seeded order; the metrics stay on the device
    until the end (:mod:`.meters`), where a non-finite loss raises the FloatingPointError. A trailing
    batch smaller than ``min_batch`` (:func:`_smallest_trainable_batch`) is left out."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, 1))
    meter = EpochMeter(x.device)
    bar = _progress_bar(math.ceil(len(y) / config.batch_size), f"epoch {epoch}/{config.epochs}", show)
    for global_idx in _batches(len(y), config.batch_size, generator, min_size=min_batch):
        idx = distributed.shard(global_idx, ctx).to(x.device)
        xb, yb = x[idx], y[idx]
        out = step(xb, yb, idx)
        meter.update(out, yb)
        loss = out.loss
        if ctx.enabled:  # DDP averages the ranks' gradients: weigh each by its share of the global batch
            loss = loss * (idx.numel() * ctx.world_size / global_idx.numel())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if bar is not None:
            bar.update(1)
            if meter.steps % _PROGRESS_EVERY == 0 or meter.steps == bar.total:
                bar.set_postfix(loss=f"{meter.running_loss():.4f}")
    if bar is not None:
        bar.close()
    totals = meter.compute(ctx)
    totals.check_finite(epoch)
    return totals


def _metrics_row(
    epoch: int, totals: EpochTotals, val: dict[str, float | None], lr: float, config: TrainConfig, dataset: str
) -> dict[str, Any]:
    """The epoch's row in the order of ``METRIC_COLUMNS`` (``test_acc``, ``seconds`` and the hooks' fields
    filled in later)."""
    return {
        "epoch": epoch,
        "train_loss": totals.train_loss,
        "train_acc": totals.train_acc,
        "val_loss": val["loss"],
        "val_acc": val["acc"],
        "test_acc": None,
        "lr": lr,
        "seconds": None,
        "dataset": dataset,
        "model": config.model,
        "loss": config.loss,
        "label_noise": config.label_noise,
        "train_fraction": config.train_fraction,
        "seed": config.seed,
        "train_adv_acc": totals.train_adv_acc,
        "violated": None,
    }


def _hook_states(hooks: list[EpochHook]) -> dict[str, Tensor]:
    extra: dict[str, Tensor] = {}
    for hook in hooks:
        extra.update(hook.state())
    return extra


def _majority_rate(y: Tensor) -> float | None:
    """The share of the most frequent label among the labelled samples of ``y`` (``None`` without any)."""
    labelled = y[y >= 0]
    if labelled.numel() == 0:
        return None
    return float(torch.bincount(labelled).max()) / labelled.numel()


def _result(
    model: nn.Module, saver: CheckpointSaver, history: list[dict[str, Any]], bundle: Any, x_test: Tensor,
    y_test: Tensor, hooks: list[EpochHook], *, config: TrainConfig, resolved: dict[str, Any],
    model_kwargs: dict[str, Any], out: Path | None, start_epoch: int, stopped: str | None,
) -> TrainResult:
    """The :class:`TrainResult`: test accuracy of the final model (the last row's, when it has one)
    and of the best epoch's weights, with the run's record."""
    last = history[-1]["test_acc"] if history else None
    test_acc = last if last is not None else evaluate_split(model, x_test, y_test, batch_size=config.eval_batch_size)["acc"]
    test_acc_best = test_acc
    if saver.best_state is not None and saver.best_epoch != len(history):
        best_model = build_model(config.model, **model_kwargs).to(x_test.device)
        best_model.load_state_dict(saver.best_state)
        test_acc_best = evaluate_split(best_model, x_test, y_test, batch_size=config.eval_batch_size)["acc"]
    rounds = next((h for h in hooks if isinstance(h, ReweightingRounds)), None)
    return TrainResult(
        config=resolved,
        history=history,
        test_acc=test_acc,
        test_acc_best=test_acc_best,
        best_epoch=saver.best_epoch,
        best_val_acc=saver.best_val_acc,
        model=model,
        out_dir=out,
        resumed_from=start_epoch,
        data_info=dict(getattr(bundle, "info", {}) or {}),
        best_selected_by=saver.selected_by,
        stopped=stopped,
        sample_weights=None if rounds is None else rounds.weights,
    )


def _log_start(
    level: int, config: TrainConfig, bundle: Any, objective: Objective, step: TrainStep, hooks: list[EpochHook],
    y_train: Tensor, *, n_val: int, n_test: int, min_batch: int = 1, min_batch_why: str = "",
) -> None:
    n_train = len(y_train)
    logger.log(
        level,
        "training %s on %s (%d train / %d val / %d test) with loss %s for %d epochs",
        config.model, bundle.name, n_train, n_val, n_test, objective, config.epochs,
    )
    lines = step.describe()
    if config.unlabelled:
        n_labelled = len(bundle.train.y)
        lines.append(f"semi-supervised: {n_labelled} labelled and {n_train - n_labelled} unlabelled training samples")
    for hook in hooks:
        lines.extend(hook.describe())
    rest = n_train % config.batch_size
    if 0 < rest < min_batch:
        lines.append(
            f"the last {rest} sample(s) of each epoch's shuffled order are left out: a trailing batch needs at least "
            f"{min_batch} samples here ({min_batch_why})"
        )
    for line in lines:
        logger.log(level, "%s", line)


def _log_epoch(level: int, row: dict[str, Any], epochs: int) -> None:
    logger.log(
        level,
        "epoch %d/%d: train loss %.4f acc %.4f%s%s, val acc %s, %.1fs",
        row["epoch"], epochs, row["train_loss"], row["train_acc"],
        "" if row["train_adv_acc"] is None else f" (adversarial {row['train_adv_acc']:.4f})",
        "" if row["violated"] is None else f", {row['violated']} margins < mu",
        "n/a" if row["val_acc"] is None else f"{row['val_acc']:.4f}", row["seconds"],
    )


def _open_run_dir(
    saver: CheckpointSaver, resolved: dict[str, Any], *, resume: bool | None, overwrite: bool,
    ctx: distributed.DistContext, device: torch.device,
) -> tuple[int, list[dict[str, Any]], str | None, dict[str, Tensor]]:
    """Start or continue the run in ``saver.out_dir`` (nothing to do without one); see :func:`train`.

    Returns ``(completed epochs, history, stopped, extra)`` of the run resumed (``0, [], None, {}``
    for a new run), after writing ``config.json`` (rank 0)."""
    out = saver.out_dir
    if out is None:
        return 0, [], None, {}
    main = ctx.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    distributed.barrier(ctx)
    found = saver.has_last()
    distributed.barrier(ctx)  # every rank has looked before rank 0 changes anything
    start_epoch, history, stopped, extra = 0, [], None, {}
    if found and overwrite:
        logger.info("overwriting the run in %s", out)
        if main:
            _clear_run_files(out)
    elif found and resume is False:
        raise FileExistsError(
            f"Output directory {str(out)!r} already holds a run (last.pt). Resume it (resume=True, "
            "--resume), start it again (overwrite=True, --overwrite) or choose another directory."
        )
    elif found:
        ckpt = saver.read_last(map_location=device)
        _check_resumable(ckpt["config"], resolved, int(ckpt["epoch"]), out, other_epochs=resume is True)
        start_epoch = saver.restore(ckpt, map_location=device)
        meta = ckpt["metrics"]
        history = [dict(r) for r in meta.get("history", [])][:start_epoch]
        for r in history:  # rows of runs written before the columns existed
            r.setdefault("train_adv_acc", None)
            r.setdefault("violated", None)
        stopped = meta.get("stopped")
        extra = dict(ckpt.get("extra", {}))
        if main:
            write_rows(out / "metrics", history, fieldnames=METRIC_COLUMNS)
        saved_epochs = ckpt["config"].get("epochs")
        if saved_epochs != resolved["epochs"]:
            logger.info("resuming %s from epoch %d, now to %d epochs (was %s)", out, start_epoch, resolved["epochs"], saved_epochs)
        else:
            logger.info("resuming %s from epoch %d of %d", out, start_epoch, resolved["epochs"])
    else:
        if resume:
            raise FileNotFoundError(
                f"Nothing to resume in {str(out)!r}: no last.pt. Drop --resume (resume=True) to start a new run there."
            )
        if main:
            _clear_run_files(out)
    if main:
        write_json(out / "config.json", resolved)
    distributed.barrier(ctx)
    return start_epoch, history, stopped, extra


def _check_resumable(
    saved: dict[str, Any], resolved: dict[str, Any], completed: int, out: Path, *, other_epochs: bool
) -> None:
    """Raise a ValueError when the run in ``out`` (``saved`` config, ``completed`` epochs) cannot be
    continued with the configuration ``resolved``; a different ``epochs`` only with ``other_epochs``."""
    diff = config_differences(saved, resolved, ignore=RESUME_FREE_KEYS)
    reason = None
    if "epochs" in diff and len(diff) == 1:
        new_epochs = resolved["epochs"]
        if resolved.get("lr_schedule") == "cosine":
            reason = (
                "the cosine learning-rate schedule anneals over 'epochs', so the learning rates of the completed "
                "epochs depend on it and the run cannot be continued to another epoch count"
            )
        elif new_epochs < completed:
            reason = f"the run has already completed {completed} epochs"
        elif not other_epochs:
            reason = f"pass resume=True (--resume) to continue it to {new_epochs} epochs"
        else:
            return
    elif not diff:
        return
    lines = "; ".join(f"{k}: {a!r} (saved) != {b!r} (now)" for k, (a, b) in diff.items())
    raise ValueError(
        f"The configuration differs from the run in {str(out)!r}, refusing to resume it: {lines}"
        + (f" ({reason})" if reason else "")
        + ". Use the same options, another output directory, or --overwrite (overwrite=True) to start again."
    )


def _progress_bar(total: int, desc: str, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr)
