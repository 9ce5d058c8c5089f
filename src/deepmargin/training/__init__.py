"""Training loop, optimisers, schedules and checkpoints.

Example:
    >>> from deepmargin.training import TrainConfig, train
    >>> result = train(TrainConfig(loss="margin", gamma=1.0, epochs=5), "runs/margin")  # doctest: +SKIP
"""

from .checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, load_model, save_checkpoint
from .config import LOSSES, LR_SCHEDULES, OPTIMIZERS, TrainConfig
from .health import detect_collapse, likely_causes
from .objective import Objective, build_objective, default_margin_layers
from .optim import build_optimizer, build_scheduler, derive_seed, seed_everything
from .records import append_row, read_jsonl, write_json, write_rows
from .trainer import METRIC_COLUMNS, RUN_FILES, TrainResult, evaluate_split, init_model, train

__all__ = [
    "FORMAT_VERSION",
    "LOSSES",
    "LR_SCHEDULES",
    "METRIC_COLUMNS",
    "OPTIMIZERS",
    "RUN_FILES",
    "CheckpointError",
    "Objective",
    "TrainConfig",
    "TrainResult",
    "append_row",
    "build_objective",
    "build_optimizer",
    "build_scheduler",
    "default_margin_layers",
    "derive_seed",
    "detect_collapse",
    "evaluate_split",
    "init_model",
    "likely_causes",
    "load_checkpoint",
    "load_model",
    "read_jsonl",
    "save_checkpoint",
    "seed_everything",
    "train",
    "write_json",
    "write_rows",
]
