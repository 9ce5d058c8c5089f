"""Checkpoints: a dict of ``state_dict``s plus plain metadata, written atomically, loaded safely.

Layout of a checkpoint file (``format_version`` 1)::

    {
        "format_version": 1,
        "model_name": "digits_cnn",                    # a name of deepmargin.models.MODELS
        "model_kwargs": {"num_classes": 10, "input_shape": [1, 8, 8], ...},
        "model_state": {...},                          # model.state_dict()
        "optimizer_state": {...} or None,
        "scheduler_state": {...} or None,
        "epoch": 3,                                    # number of completed epochs
        "config": {...},                               # resolved run config (plain types)
        "metrics": {...},                              # e.g. the last epoch's metrics
        "torch_version": "2.13.0",
    }

Everything except the state dicts is plain Python (dict, list, str, int, float, bool, None), so
the file loads with ``torch.load(weights_only=True)``; we never fall back to unsafe unpickling.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import atomic_write
from ..models import build_model

logger = logging.getLogger(__name__)

#: Version of the checkpoint layout written by :func:`save_checkpoint`.
FORMAT_VERSION = 1

_REQUIRED_KEYS = ("format_version", "model_name", "model_kwargs", "model_state", "epoch", "config", "metrics")


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (corrupt, unsafe, or of another format)."""


def to_plain(value: Any, *, name: str = "value") -> Any:
    """Convert ``value`` to JSON-like plain types (tuples become lists; Paths become strings).

    Floats stay floats (``inf`` included). Raises ``TypeError`` for anything else, naming ``name``.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"The '{name}' metadata must have str keys. Got key {k!r} instead.")
            out[k] = to_plain(v, name=f"{name}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_plain(v, name=f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return to_plain(value.item(), name=name)
    raise TypeError(
        f"The '{name}' metadata must contain only plain values (dict, list, str, int, float, bool, None). "
        f"Got {type(value).__name__} instead."
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    model_name: str,
    model_kwargs: Mapping[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    epoch: int = 0,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically: to a temporary file in the same folder, then ``os.replace``.

    An interruption (or an error) while writing leaves any existing file at ``path`` untouched.

    Args:
        path: destination file (parent folders are created).
        model: the model whose ``state_dict`` is saved.
        model_name: its name in :data:`deepmargin.models.MODELS` (used by :func:`load_model`).
        model_kwargs: the keyword arguments of :func:`deepmargin.models.build_model`, including
            ``num_classes`` and ``input_shape``; must be plain values.
        optimizer: optional optimizer whose state is saved.
        scheduler: optional learning-rate scheduler whose state is saved.
        epoch: number of completed epochs.
        config: the resolved run configuration (plain values).
        metrics: metrics to store with the checkpoint (plain values).
        extra: tensors of the training state beyond the model and optimiser (e.g. the per-sample
            weights of the reweighting loop), stored under ``"extra"`` (``{}`` when absent).

    Returns:
        The path written.

    Example:
        >>> import tempfile, os
        >>> from deepmargin.models import build_model
        >>> kw = {"num_classes": 2, "input_shape": [2]}
        >>> m = build_model("mlp", **kw)
        >>> p = save_checkpoint(os.path.join(tempfile.mkdtemp(), "m.pt"), model=m, model_name="mlp", model_kwargs=kw)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of save_checkpoint must be an nn.Module. Got {type(model).__name__} instead.")
    kwargs = to_plain(dict(model_kwargs), name="model_kwargs")
    for key in ("num_classes", "input_shape"):
        if key not in kwargs:
            raise ValueError(
                f"The 'model_kwargs' parameter of save_checkpoint must include {key!r}. Got keys {sorted(kwargs)} instead."
            )
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"The 'epoch' parameter of save_checkpoint must be an int >= 0. Got {epoch!r} instead.")
    payload = {
        "format_version": FORMAT_VERSION,
        "model_name": str(model_name),
        "model_kwargs": kwargs,
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "config": to_plain(dict(config or {}), name="config"),
        "metrics": to_plain(dict(metrics or {}), name="metrics"),
        "extra": {str(k): v.detach().cpu() for k, v in (extra or {}).items()},
        "torch_version": torch.__version__.split("+")[0],
    }
    path = atomic_write(path, lambda handle: torch.save(payload, handle), binary=True)
    logger.debug("saved checkpoint %s (epoch %d)", path, epoch)
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load``; default ``"cpu"``.

    Returns:
        The checkpoint dict (see the module docstring for its keys).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is corrupt or truncated, holds objects that safe loading
            refuses, is not a deepmargin checkpoint, or has another ``format_version``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file {str(path)!r} does not exist (or is not a file).")
    if isinstance(map_location, (str, torch.device)):
        from .config import resolve_device  # a missing GPU is not a corrupt file

        resolve_device(map_location, owner="load_checkpoint", name="map_location")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is corrupt or truncated (not a torch zip archive as torch.save writes)."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln or "Unsupported operand" in ln]
        cause = lines[0] if lines else (str(exc).splitlines() or [repr(exc)])[0]
        raise CheckpointError(
            f"Checkpoint {str(path)!r} could not be loaded safely (torch.load with weights_only=True refused it; "
            f"deepmargin never falls back to unsafe unpickling). Cause: {cause}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is corrupt or truncated and could not be read: {exc}"
        ) from exc
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(
            f"File {str(path)!r} is not a deepmargin checkpoint (expected a dict with a 'format_version' key). "
            f"Got {type(payload).__name__} instead."
        )
    version = payload["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"The 'format_version' of checkpoint {str(path)!r} must be {FORMAT_VERSION}. Got {version!r} instead. "
            "It was written by another version of deepmargin."
        )
    missing = [k for k in _REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"Checkpoint {str(path)!r} lacks the keys {missing}; it is incomplete.")
    return payload


def load_model(
    path: str | os.PathLike[str], map_location: Any = "cpu", *, allow_non_finite: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint and load its weights.

    Args:
        path: a checkpoint written by :func:`save_checkpoint` (e.g. a run's ``best.pt``).
        map_location: device to load the tensors onto; default ``"cpu"``.
        allow_non_finite: load weights holding NaN or infinite values (default ``False``: such a
            checkpoint is refused, naming the first non-finite tensor: every number measured on it
            would be meaningless).

    Returns:
        ``(model, metadata)``: the model in eval mode, and the checkpoint dict without the
        optimizer/scheduler/model states (keys ``model_name``, ``model_kwargs``, ``epoch``,
        ``config``, ``metrics``, ``format_version``).

    Example:
        >>> model, meta = load_model("runs/digits/best.pt")  # doctest: +SKIP
        >>> meta["config"]["dataset"]  # doctest: +SKIP
        'digits'
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    bad = None if allow_non_finite else first_non_finite(ckpt["model_state"])
    if bad is not None:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds non-finite weights: {bad!r} has NaN or infinite values, so nothing "
            "measured on it would mean anything. Use another checkpoint (e.g. the run's best.pt) or retrain with a "
            "lower learning rate, --grad-clip or --alpha."
        )
    kwargs = dict(ckpt["model_kwargs"])
    try:
        num_classes = kwargs.pop("num_classes")
        input_shape = tuple(kwargs.pop("input_shape"))
        model = build_model(ckpt["model_name"], num_classes=num_classes, input_shape=input_shape, **kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"Checkpoint {str(path)!r} describes a model that cannot be built: {exc}") from exc
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        raise CheckpointError(f"Checkpoint {str(path)!r} holds weights that do not fit its model: {exc}") from exc
    device = _first_tensor_device(ckpt["model_state"])
    if device is not None:
        model.to(device)
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model_state", "optimizer_state", "scheduler_state")}
    return model, meta


class CheckpointSaver:
    """The best/last checkpoint policy of a run directory, as timm's ``CheckpointSaver``.

    After every epoch, :meth:`update` decides whether the epoch improved on the best score so far
    (the row's ``selected_by`` value, strictly greater than the best before), keeps a copy of the
    weights of the best epoch in memory (:attr:`best_state`), and writes ``best.pt`` (when the
    epoch improved) and ``last.pt`` (always, with the optimiser, the scheduler and ``extra``),
    each atomically (:func:`save_checkpoint`). Both files carry the same metadata::

        {"last": row, "history": [rows], "best_epoch": int, "best_val_acc": float | None,
         "best_score": float, "best_selected_by": str, "stopped": str | None}

    Weights that are no longer finite (NaN or infinite in any floating tensor of the state dict,
    buffers included) are never kept or written: :meth:`update` raises a FloatingPointError naming
    the first such tensor and leaves the files (and :attr:`best_state`) as they were.

    To resume, :meth:`read_last` loads ``last.pt`` and :meth:`restore` puts its states back into
    the model, optimiser and scheduler and takes the best epoch's score from its metadata and its
    weights from ``best.pt``.

    Args:
        out_dir: the run directory; ``None`` keeps the best weights in memory and writes nothing.
        model: the model whose weights are saved (the plain model, not a DDP wrapper).
        model_name, model_kwargs: how to rebuild it (see :func:`save_checkpoint`).
        config: the resolved run configuration (plain values).
        optimizer, scheduler: saved in ``last.pt`` and restored from it (``scheduler`` may be ``None``).
        selected_by: the row key that chooses ``best.pt``: ``"val_acc"`` or ``"train_acc"``.
        write: whether this process writes files (under DDP only rank 0 does; the others still
            track the best epoch).
        save: the function that writes one checkpoint file, with the keyword arguments of
            :func:`save_checkpoint` (the default).

    Attributes:
        best_score: the best ``selected_by`` value so far (``-inf`` before the first epoch).
        best_epoch: the epoch it comes from (0 before the first epoch).
        best_val_acc: that epoch's validation accuracy (``None`` without a validation split).
        best_state: a copy of that epoch's ``state_dict`` (``None`` until known).

    Example:
        >>> from deepmargin.models import build_model
        >>> kw = {"num_classes": 2, "input_shape": [2]}
        >>> model = build_model("mlp", **kw)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> saver = CheckpointSaver(None, model=model, model_name="mlp", model_kwargs=kw, config={}, optimizer=opt)
        >>> saver.update(1, {"val_acc": 0.5}, history=[]), saver.update(2, {"val_acc": 0.5}, history=[])
        (True, False)
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str] | None,
        *,
        model: nn.Module,
        model_name: str,
        model_kwargs: Mapping[str, Any],
        config: Mapping[str, Any],
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None = None,
        selected_by: str = "val_acc",
        write: bool = True,
        save: Callable[..., Path] = save_checkpoint,
    ) -> None:
        if selected_by not in ("val_acc", "train_acc"):
            raise ValueError(
                f"The 'selected_by' parameter of CheckpointSaver must be 'val_acc' or 'train_acc'. Got {selected_by!r} instead."
            )
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.model = model
        self.model_name = model_name
        self.model_kwargs = model_kwargs
        self.config = config
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.selected_by = selected_by
        self.write = bool(write) and self.out_dir is not None
        self._save = save
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_val_acc: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def last_path(self) -> Path | None:
        """``out_dir/last.pt`` (``None`` without a run directory)."""
        return None if self.out_dir is None else self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path | None:
        """``out_dir/best.pt`` (``None`` without a run directory)."""
        return None if self.out_dir is None else self.out_dir / "best.pt"

    def has_last(self) -> bool:
        """Whether the run directory holds a ``last.pt`` to resume from."""
        return self.last_path is not None and self.last_path.exists()

    def read_last(self, map_location: Any = "cpu") -> dict[str, Any]:
        """The checkpoint dict of ``last.pt`` (:func:`load_checkpoint`)."""
        if self.last_path is None:
            raise FileNotFoundError("CheckpointSaver.read_last needs a run directory (out_dir is None).")
        try:
            return load_checkpoint(self.last_path, map_location=map_location)
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc} The run in {str(self.last_path.parent)!r} cannot be resumed from it: start it afresh with "
                "--overwrite (overwrite=True), which deletes the run's files, or train into another folder."
            ) from exc

    def restore(self, ckpt: Mapping[str, Any], map_location: Any = "cpu") -> int:
        """Continue from ``ckpt`` (read by :meth:`read_last`): load the model, optimiser and
        scheduler states, the best epoch's score from the metadata and its weights from
        ``best.pt``. Returns the number of completed epochs."""
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.scheduler is not None and ckpt["scheduler_state"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler_state"])
        meta = ckpt["metrics"]
        self.best_epoch = int(meta.get("best_epoch", 0))
        self.best_val_acc = meta.get("best_val_acc")
        self.best_score = float(meta.get("best_score", -math.inf))
        if self.best_path is not None and self.best_path.exists():
            self.best_state = load_checkpoint(self.best_path, map_location=map_location)["model_state"]
        return int(ckpt["epoch"])

    def update(
        self,
        epoch: int,
        row: Mapping[str, Any],
        *,
        history: list[Mapping[str, Any]],
        stopped: str | None = None,
        extra: Mapping[str, torch.Tensor] | None = None,
    ) -> bool:
        """Record the finished ``epoch`` (its metrics ``row``; ``history`` includes it) and write
        ``best.pt`` when it improved and ``last.pt``. Returns whether it improved.

        Args:
            epoch: the epoch just completed (1-based).
            row: its metrics; ``row[selected_by]`` is its score, ``row["val_acc"]`` is recorded.
            history: every completed epoch's row, stored in the metadata.
            stopped: why training ends early (``None``: it does not), stored in the metadata.
            extra: training-state tensors for ``last.pt`` (``extra`` of :func:`save_checkpoint`).

        Raises:
            FloatingPointError: a floating tensor of the model's state is NaN or infinite (nothing saved).
        """
        state = self.model.state_dict()
        bad = first_non_finite(state)
        if bad is not None:
            kept = f"; the checkpoints in {str(self.out_dir)!r} are left as they were" if self.write else ""
            raise FloatingPointError(
                f"The weights after epoch {epoch} are not finite: {bad!r} holds NaN or infinite values. They are not "
                f"saved (neither as best.pt nor as last.pt){kept}. Lower the learning rate, set grad_clip "
                "(--grad-clip), or cap the margin penalty with alpha (--alpha)."
            )
        score = row[self.selected_by]
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.best_val_acc = score, epoch, row.get("val_acc")
            self.best_state = copy.deepcopy(state)
        if self.write:
            meta = {
                "last": row, "history": history, "best_epoch": self.best_epoch, "best_val_acc": self.best_val_acc,
                "best_score": self.best_score, "best_selected_by": self.selected_by, "stopped": stopped,
            }
            common = dict(model=self.model, model_name=self.model_name, model_kwargs=self.model_kwargs,
                          config=self.config, epoch=epoch, metrics=meta)
            if improved:
                self._save(self.best_path, **common)
            self._save(self.last_path, optimizer=self.optimizer, scheduler=self.scheduler, extra=extra or {}, **common)
        return improved


def first_non_finite(state: Mapping[str, Any]) -> str | None:
    """The name of the first floating tensor of ``state`` holding a NaN or an infinity (``None``: all finite).

    One device-to-host transfer when every tensor is finite.

    Example:
        >>> first_non_finite({"w": torch.ones(2), "b": torch.tensor([0.0, float("nan")]), "n": torch.tensor(3)})
        'b'
    """
    names = [k for k, v in state.items() if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())]
    if not names:
        return None
    flags = [torch.isfinite(state[k]).all() for k in names]
    device = flags[0].device
    finite = torch.stack([f.to(device) for f in flags])
    if bool(finite.all()):
        return None
    return names[int((~finite).nonzero()[0, 0])]


def _first_tensor_device(state: Mapping[str, Any]) -> torch.device | None:
    for value in state.values():
        if isinstance(value, torch.Tensor):
            return value.device
    return None

