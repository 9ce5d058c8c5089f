"""``deepmargin train``: train a model with cross-entropy, hinge or the large-margin loss."""

from __future__ import annotations

from .main import COMMANDS

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from ._common import _number_type, dataset_arg, download_option, fetch_dataset, nonneg_float, positive_float, positive_int, print_layer_table, unit_float

_ratio_float = _number_type(float, lambda v: 0.0 < v <= 1.0, "a float in (0, 1]", "ratio_float", "a float in (0, 1]")
_nonneg_int = _number_type(int, lambda v: v >= 0, "an int >= 0", "nonneg_int", "an int >= 0")

HELP = COMMANDS["train"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    from ..data import DATASETS
    from ..models import MODELS
    from ..training.config import ADV_TRAIN, AGGREGATIONS, AUGMENTATIONS, LR_SCHEDULES, OPTIMIZERS, SCORES

    p = subparsers.add_parser(
        "train",
        help=HELP,
        description=HELP + ". Options not given take their values from --config (if given) and then "
        "from the defaults of deepmargin.training.TrainConfig.",
    )
    p.add_argument("--config", type=Path, help="JSON file with TrainConfig fields (e.g. a run's config.json)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/DATASET-MODEL-LOSS-seedSEED)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                   help="continue from OUT/last.pt (default: when it exists and the configuration matches)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing run in OUT and start again (cannot be combined with --resume)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only when stderr is a terminal)")
    p.add_argument("--list-layers", action="store_true", help="print the model's layer names and shapes, then exit")

    g = p.add_argument_group("data")
    g.add_argument("--data", "--dataset", dest="dataset", type=dataset_arg, metavar="NAME|FILE.npz",
                   help=f"dataset: one of {', '.join(DATASETS)}, or a .npz file with x_train, y_train, x_test, y_test "
                   "(optional x_val, y_val, bounds, classes) (default digits)")
    g.add_argument("--data-root", help="folder with the MNIST/Fashion-MNIST/CIFAR-10 files")
    download_option(g)
    g.add_argument("--val-size", type=unit_float, help="validation fraction of the training set")
    g.add_argument("--train-fraction", type=positive_float, help="fraction of the training set used, in (0, 1]")
    g.add_argument("--label-noise", type=unit_float, help="fraction of training labels flipped, in [0, 1)")
    g.add_argument("--unlabelled", action="store_true", default=None,
                   help="semi-supervised (vat): the training samples --train-fraction leaves out are used without labels")
    g.add_argument("--n-samples", type=_toy_samples, help="toy sets (moons, spirals): number of points, >= 2")
    g.add_argument("--data-noise", type=nonneg_float, help="toy sets (moons, spirals): jitter of the points, >= 0")

    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, help="architecture (default digits_cnn)")
    g.add_argument("--dropout", type=unit_float, help="dropout probability (model option)")
    g.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None, help="batch norm (model option)")
    g.add_argument("--hidden-sizes", type=positive_int, nargs="+", metavar="N", help="mlp: hidden layer widths")
    g.add_argument("--model-kwargs", type=json.loads, metavar="JSON", help='other model options, e.g. \'{"width": 8}\'')

    g = p.add_argument_group("loss")
    from ..losses import LOSS_REGISTRY

    g.add_argument("--loss", choices=tuple(LOSS_REGISTRY),
                   help="the training loss: " + ", ".join(f"{n} ({spec.summary})" for n, spec in LOSS_REGISTRY.items())
                   + " (`deepmargin losses` lists their options); default ce")
    g.add_argument("--loss-option", action="append", default=None, metavar="KEY=VALUE", type=_key_value,
                   help="an option of a loss that keeps its options in loss_options, e.g. --loss-option C=0.1 "
                   "--loss-option norm=inf (repeatable); "
                   + "; ".join(f"{n}: " + ", ".join(f"{o.name}={o.default!r}" for o in spec.options)
                               for n, spec in LOSS_REGISTRY.items() if spec.options and not spec.config_fields))
    g.add_argument("--preset", metavar="NAME",
                   help="start from a preset of `deepmargin experiment` (e.g. margin-l2, matyasko-l2, j2, vat, kesidis-9); "
                   "--config and the other options override its fields")
    g.add_argument("--reweight", choices=("none", "multiply", "add", "violation"),
                   help="kesidis: the dual reweighting loop (lambda_x *= delta, += delta, += delta x violation for the "
                   "samples whose margin is below mu, after every round); same as --loss-option reweight=RULE")
    g.add_argument("--hinge-margin", type=positive_float, help="hinge: output margin")
    g.add_argument("--hinge-ce-weight", type=float, help="hinge: weight of the cross-entropy term")
    g.add_argument("--layers", nargs="+", metavar="NAME",
                   help="margin layers ('input' and names from --list-layers); default input + all hidden layers")
    g.add_argument("--gamma", type=positive_float, nargs="+", metavar="G", help="margin (one value, or one per layer)")
    g.add_argument("--alpha", type=positive_float, help="cap the penalty at alpha * gamma (default: no cap)")
    g.add_argument("--top-k", type=positive_int, help="rival classes per sample")
    g.add_argument("--norm", help="p of the l_p distance: 1, 2, inf or a real >= 1")
    g.add_argument("--aggregation", choices=AGGREGATIONS, help="max (worst class) or sum over the top-k classes")
    g.add_argument("--exact", dest="approximate", action="store_false", default=None,
                   help="differentiate through the gradient norm (second order) instead of the first-order approximation")
    g.add_argument("--scores", choices=SCORES, help="margin on logits or on softmax probabilities")
    g.add_argument("--exact-per-sample", action="store_true", default=None,
                   help="each sample's own gradient (slow; only differs with batch norm in training mode)")
    g.add_argument("--layer-weights", type=positive_float, nargs="+", metavar="W", help="per-layer norm weights")
    g.add_argument("--epsilon", type=positive_float, help="added to the gradient norm")
    g.add_argument("--margin-weight", type=float, help="weight of the margin term")
    g.add_argument("--ce-weight", type=float, help="margin: weight of the cross-entropy term")
    g.add_argument("--denominator-refresh", type=_nonneg_int, metavar="R",
                   help="margin: cache the denominators (gradient norms) of every training sample and class, "
                   "recomputed in eval mode every R epochs; a step then costs about a cross-entropy step "
                   "(0: computed in every step)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (momentum), rmsprop or adam; default adam")
    g.add_argument("--lr", type=positive_float, help="learning rate")
    g.add_argument("--momentum", type=unit_float,
                   help="momentum, in [0, 1) (default 0.9 for sgd, 0 for rmsprop; adam takes none)")
    g.add_argument("--weight-decay", type=float, help="L2 weight decay")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="per-epoch learning-rate decay")
    g.add_argument("--lr-decay", type=positive_float, help="decay factor of the step/exponential schedules")
    g.add_argument("--lr-step", type=positive_int, help="epochs between decays of the step schedule")
    g.add_argument("--grad-clip", type=positive_float, help="maximum gradient norm")
    g.add_argument("--epochs", type=positive_int, help="number of epochs")
    g.add_argument("--val-loss", action=argparse.BooleanOptionalAction, default=None,
                   help="compute the training objective on the validation split every epoch (--no-val-loss: accuracy "
                   "only, much cheaper for losses that need input gradients)")
    g.add_argument("--batch-size", type=positive_int, help="training batch size")
    g.add_argument("--eval-batch-size", type=positive_int, help="evaluation batch size")
    g.add_argument("--seed", type=int, help="seed of data split, noise, init and shuffling")
    g.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default cpu)")
    g.add_argument("--dist-backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="under torchrun (several processes): the process-group backend; auto = nccl on CUDA, gloo on "
                   "CPU. --batch-size is then the global batch, split over the processes (default: auto)")
    g.add_argument("--threads", type=positive_int,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest for the small models)")

    g = p.add_argument_group(
        "adversarial training",
        "Kurakin et al. (2016): in each batch a random share --adv-ratio of the samples is replaced by one-step "
        "adversarial examples of the current model (crafted with its predicted labels, eps drawn per sample from "
        "|N(0, (E/2)^2)| truncated to [0, E]), weighted by --adv-weight in the loss; works with every --loss",
    )
    g.add_argument("--adv-train", choices=ADV_TRAIN, help="one-step attack used to craft the examples, or none")
    g.add_argument("--adv-eps", type=positive_float, metavar="E", help="largest epsilon, in input units")
    g.add_argument("--adv-ratio", type=_ratio_float, metavar="R", help="share of each batch replaced, in (0, 1]")
    g.add_argument("--adv-weight", type=positive_float, metavar="W",
                   help="weight lambda of the adversarial examples in the loss, > 0")

    g = p.add_argument_group("augmentation", "random changes of the training images (image datasets only)")
    g.add_argument("--augment", choices=AUGMENTATIONS,
                   help="crop: random shifts with zero fill (zero padding + random crop); flip: random horizontal "
                   "flips; crop-flip: both (the usual CIFAR-10 augmentation)")
    g.add_argument("--crop-padding", type=_nonneg_int, metavar="P", help="largest shift of crop, in pixels")
    _add_default_help(p)
    return p


def _key_value(text: str) -> tuple[str, object]:
    """argparse type: ``KEY=VALUE`` with VALUE read as JSON when it parses (numbers, true/false), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, e.g. C=0.1. Got {text!r} instead.")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _toy_samples(text: str) -> int:
    """argparse type: an int >= 2 (a toy set needs two points at least)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an int >= 2. Got {text!r} instead.")
    return value


def _add_default_help(parser: argparse.ArgumentParser) -> None:
    """Append TrainConfig's default to the help of every option that sets a config field."""
    from ..training import TrainConfig

    defaults = TrainConfig().to_dict()
    for action in parser._actions:
        value = defaults.get(action.dest)
        if value is not None and action.dest != "approximate" and action.help and "default" not in action.help:
            action.help += f" (default: {value})"


_MODEL_OPTION_KEYS = ("dropout", "batch_norm", "hidden_sizes")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`TrainConfig` given by ``--config`` and the explicit command-line options."""
    from ..training import TrainConfig

    values: dict[str, Any] = {}
    if getattr(args, "preset", None) is not None:
        from ..experiments.presets import PRESETS

        if args.preset not in PRESETS:
            raise ValueError(f"The --preset option of deepmargin train must be one of {sorted(PRESETS)}. Got {args.preset!r} instead.")
        values.update(json.loads(json.dumps(dict(PRESETS[args.preset].fields))))
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"The --config file {str(args.config)!r} does not exist.")
        try:
            loaded = json.loads(args.config.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"The --config option of deepmargin train must be a JSON file of TrainConfig fields "
                             f"(e.g. a run's config.json). Got {str(args.config)!r}, which is not UTF-8 text, instead.") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"The --config file {str(args.config)!r} is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(
                f"The --config file {str(args.config)!r} must hold a JSON object of TrainConfig fields. "
                f"Got a {type(loaded).__name__} instead."
            )
        if loaded.get("loss", "ce") != values.get("loss", loaded.get("loss", "ce")):
            values.pop("loss_options", None)  # the preset's options belong to its own loss
        values.update(loaded)
        _drop_default_momentum(values, args)
    model_kwargs = dict(values.get("model_kwargs") or {})
    if args.model_kwargs is not None:
        if not isinstance(args.model_kwargs, dict):
            raise ValueError(f"The --model-kwargs option must be a JSON object. Got {args.model_kwargs!r} instead.")
        model_kwargs.update(args.model_kwargs)
    for key in _MODEL_OPTION_KEYS:
        value = getattr(args, key)
        if value is not None:
            model_kwargs[key] = value
    values["model_kwargs"] = model_kwargs
    if args.loss is not None and args.loss != values.get("loss", "ce"):
        values.pop("loss_options", None)  # the --config file's options belong to its own loss
    if args.loss_option:
        values["loss_options"] = {**dict(values.get("loss_options") or {}), **dict(args.loss_option)}
    if getattr(args, "reweight", None) is not None:
        from ..losses import LOSS_REGISTRY

        loss = values.get("loss", "ce") if args.loss is None else args.loss
        spec = LOSS_REGISTRY.get(loss)
        if spec is None or "reweight" not in {o.name for o in spec.options}:
            with_loop = sorted(n for n, sp in LOSS_REGISTRY.items() if "reweight" in {o.name for o in sp.options})
            raise ValueError(f"The --reweight option of deepmargin train needs a loss with a reweighting loop ({with_loop}). "
                             f"Got --loss {loss!r} instead.")
        values["loss_options"] = {**dict(values.get("loss_options") or {}), "reweight": args.reweight}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model_kwargs" or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if value is not None:
            values[f.name] = value
    gamma = values.get("gamma")
    if isinstance(gamma, list) and len(gamma) == 1:
        values["gamma"] = gamma[0]
    with warnings.catch_warnings():  # an option of another loss is refused below, in the CLI's words
        warnings.simplefilter("ignore", UserWarning)
        config = TrainConfig.from_dict(values)  # bad values first, each in TrainConfig's message
    _check_loss_flags(args, config.loss)
    return config


def _check_loss_flags(args: argparse.Namespace, loss: str) -> None:
    """Refuse a command-line option of one loss given with another (``--loss ce --layers x``):
    it would be ignored."""
    from ..losses.registry import foreign_options

    for name, option in foreign_options(loss):
        if option.flag is None or getattr(args, option.name, None) is None:
            continue
        raise ValueError(
            f"The {option.flag} option of deepmargin train is an option of loss {name!r}, which --loss {loss!r} does "
            f"not use. Got {_shown(option.flag, getattr(args, option.name))} instead; leave it out or use --loss {name} "
            "(`deepmargin losses` lists each loss's options)."
        )


def _shown(flag: str, value: Any) -> str:
    if isinstance(value, bool):
        return flag
    return f"{flag} " + (" ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))


def _drop_default_momentum(values: dict[str, Any], args: argparse.Namespace) -> None:
    """When ``--optimizer`` switches away from the --config file's optimiser and ``--momentum`` is
    not given, forget the file's momentum if it is just that optimiser's default (config files
    written by older versions store the resolved default), so the new optimiser gets its own."""
    from ..training.config import DEFAULT_MOMENTUM

    if args.config is None or args.optimizer is None or args.momentum is not None:
        return
    saved_optimizer = values.get("optimizer", "adam")
    if saved_optimizer == args.optimizer or values.get("momentum") is None:
        return
    if values["momentum"] == DEFAULT_MOMENTUM.get(saved_optimizer) or args.optimizer not in DEFAULT_MOMENTUM:
        values["momentum"] = None


def _check_toy_options(config: Any) -> None:
    """The toy-set options name their command-line flags when the dataset is not a toy set."""
    from ..data import TOY_DEFAULTS

    if config.dataset in TOY_DEFAULTS:
        return
    for option, value in (("--data-noise", config.data_noise), ("--n-samples", config.n_samples)):
        if value is not None:
            raise ValueError(
                f"The {option} option of deepmargin train only applies to the toy sets {list(TOY_DEFAULTS)}, "
                f"not to dataset {config.dataset!r}. Got {value!r} instead; leave it out (or set it to null in --config)."
            )


def run(args: argparse.Namespace) -> int:
    """Train according to ``args``; print a short summary."""
    from ..training import train

    if args.resume is True and args.overwrite:
        raise ValueError("The --overwrite option of deepmargin train cannot be combined with --resume "
                         "(--resume keeps the run in --out, --overwrite deletes it). Got both instead.")
    config = config_from_args(args)
    _check_toy_options(config)
    if getattr(args, "download", False):
        fetch_dataset(config.dataset, config.data_root)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.list_layers:
        from ..data import load_dataset
        from ..models import build_model

        bundle = load_dataset(config.dataset, root=config.data_root, seed=config.seed, n_samples=config.n_samples,
                              noise=config.data_noise)
        model = build_model(config.model, num_classes=bundle.num_classes, input_shape=bundle.input_shape,
                            **config.model_kwargs)
        print_layer_table(model, bundle.input_shape)
        return 0
    from ..data import is_npz_path

    data_name = Path(config.dataset).stem if is_npz_path(config.dataset) else config.dataset
    out = args.out or Path("runs") / f"{data_name}-{config.model}-{config.loss}-seed{config.seed}"
    from ..training.distributed import init_distributed

    ctx = init_distributed(args.dist_backend, device=config.device)
    if not ctx.is_main:  # rank 0 speaks for the run
        import logging

        logging.getLogger("deepmargin").setLevel(logging.WARNING)
    try:
        result = train(config, out, resume=args.resume, overwrite=args.overwrite, progress=args.progress)
    except BaseException as exc:
        if ctx.enabled:
            print(f"deepmargin train: rank {ctx.rank} of {ctx.world_size} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise
    finally:
        if ctx.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()
    if not ctx.is_main:
        return 0
    last = result.history[-1] if result.history else {}
    print(f"run directory     {out}")
    if result.resumed_from:
        print(f"resumed from      epoch {result.resumed_from}")
    print(f"epochs            {len(result.history)}")
    if last.get("violated") is not None:
        print(f"margins below mu  {last['violated']} training samples")
    if result.stopped:
        print(f"stopped early     {result.stopped}")
    print(f"train accuracy    {last.get('train_acc', float('nan')):.4f}")
    if result.best_val_acc is not None:
        print(f"best val accuracy {result.best_val_acc:.4f} (epoch {result.best_epoch})")
    if result.best_selected_by == "train_acc":
        print(f"best.pt           epoch {result.best_epoch}, chosen by training accuracy (no validation split)")
    print(f"test accuracy     {result.test_acc:.4f} (last epoch), {result.test_acc_best:.4f} (best.pt)")
    return 0
