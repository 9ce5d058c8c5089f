"""``deepmargin experiment STUDY``: the paper's studies as one command (resumable, shardable, parallel)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import nonneg_float, positive_float, positive_int, seed_int, unit_float

HELP = ("run a study of Elsayed et al. (noisy-labels, limited-data, adversarial, or all), or compare-methods (every margin "
        "method side by side), and write rows, plots and a report")

_STUDY_CHOICES = ("noisy-labels", "limited-data", "adversarial", "all", "compare-methods")


def _fraction(text: str) -> float:
    """argparse type: a float in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a float in (0, 1]. Got {text!r} instead.")
    return value


def _snr(text: str) -> float:
    """argparse type: an SNR in dB, a finite float >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite float >= 0 (dB). Got {text!r} instead.")
    return value


def _jobs(text: str) -> int | str:
    """argparse type: an int >= 1 or 'auto'."""
    if text == "auto":
        return text
    return positive_int(text)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``experiment`` subcommand."""
    from ..experiments.presets import PRESETS
    from ..experiments.protocol import GRIDS
    from ..experiments.studies import DEFAULT_LOSSES
    from ._common import dataset_arg, download_option

    p = subparsers.add_parser(
        "experiment", help=HELP,
        description=HELP + ". Settings not given come from the dataset's protocol (deepmargin.experiments.protocol). "
        "Running the same command again continues an interrupted study; finished cells are never recomputed.",
    )
    p.add_argument("study", choices=_STUDY_CHOICES,
                   help="the study; 'all' runs the paper's three, then the report; compare-methods trains every method "
                   "clean and under label noise and measures robustness, certified radii, detection and cost")
    p.add_argument("--out", type=Path, required=True, help="study directory")
    g = p.add_argument_group("what to train")
    g.add_argument("--data", "--dataset", dest="dataset", type=dataset_arg, default="digits",
                   help="a built-in dataset or a .npz file with x_train, y_train, x_test, y_test (default digits)")
    g.add_argument("--data-root", help="folder with the MNIST/Fashion-MNIST/CIFAR-10 files")
    download_option(g)
    g.add_argument("--losses", nargs="+", metavar="PRESET",
                   help=f"presets to train: {', '.join(PRESETS)} or a --preset-file's name (default: noisy-labels and "
                   f"limited-data {' '.join(DEFAULT_LOSSES['noisy-labels'])}; adversarial all of them)")
    g.add_argument("--preset-file", nargs="+", default=[], metavar="FILE",
                   help="JSON files of TrainConfig fields, each a preset named after the file")
    g.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1, 2], metavar="SEED", help="seeds (default 0 1 2)")
    g.add_argument("--grid", default="reduced", metavar="GRID",
                   help=f"hyperparameter search: {', '.join(GRIDS)} or a JSON grid file (default reduced)")
    g.add_argument("--epochs", type=positive_int, help="epochs of every full-data cell (limited-data cells scale it up)")
    g.add_argument("--model", help="architecture of every model (default: the dataset's protocol)")
    g.add_argument("--model-kwargs", type=json.loads, metavar="JSON", help='model options, e.g. \'{"depth": 10, "width": 1}\'')
    g = p.add_argument_group("study settings")
    g.add_argument("--noise", type=unit_float, nargs="+", metavar="P", help="label-noise levels (paper 0 0.2 0.4 0.6 0.8)")
    g.add_argument("--fractions", type=_fraction, nargs="+", metavar="F", help="training fractions (paper 1 ... 0.00125)")
    g.add_argument("--eps", type=nonneg_float, nargs="+", metavar="E", help="l_inf radii of FGSM / IFGSM (include 0)")
    g.add_argument("--noise-std", type=nonneg_float, nargs="+", metavar="S", help="Gaussian noise standard deviations")
    g.add_argument("--snr", type=_snr, nargs="+", metavar="DB", help="Gaussian noise SNRs in dB, 20 log10(||x|| / ||delta||)")
    g.add_argument("--adv-eps", type=positive_float, help="largest FGSM epsilon of adversarial training")
    g.add_argument("--attack-n", type=positive_int, help="attack only the first N test inputs (default: the protocol's, "
                   "mnist-5k 300, else all)")
    g.add_argument("--autoattack", choices=("standard", "fast", "rand", "none"),
                   help="AutoAttack version run beside IFGSM in the adversarial study and compare-methods (default: the "
                   "protocol's, fast)")
    g.add_argument("--autoattack-eps", type=positive_float, metavar="EPS",
                   help="l_inf radius of the AutoAttack rows in the adversarial study (default: the protocol's (0.1; "
                   "cifar10 8/255); compare-methods uses --eps-linf)")
    g = p.add_argument_group("compare-methods settings (default: the dataset's, see deepmargin.experiments.compare)")
    g.add_argument("--compare-noise", type=unit_float, help="label noise of the noisy runs (default 0.4)")
    g.add_argument("--eps-l2", type=positive_float, help="l_2 budget of the error-at-eps column (digits 0.5)")
    g.add_argument("--eps-linf", type=positive_float, help="l_inf budget: error at eps, IFGSM and FGSM (digits 0.1)")
    g.add_argument("--fpr", type=unit_float, help="false-positive rate of the p-value detection threshold (default 0.05)")
    g = p.add_argument_group("running")
    g.add_argument("--shard", help="I/N: run the I-th of N disjoint parts (default: Slurm array variables if set)")
    g.add_argument("--jobs", type=_jobs, default="auto",
                   help="worker processes (default auto: the usable CPU cores on cpu, 1 on a GPU)")
    g.add_argument("--device", default="cpu", help="torch device of every cell (default cpu)")
    g.add_argument("--overwrite", action="store_true", help="delete the study in --out and start again")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="live progress line (default: only on a terminal)")
    g.add_argument("--no-report", dest="report", action="store_false", help="do not write the report at the end")
    return p


def options_from_args(args: argparse.Namespace):
    """The :class:`~deepmargin.experiments.StudyOptions` of the command line."""
    from ..experiments.studies import STUDIES, StudyOptions

    studies = STUDIES if args.study == "all" else (args.study,)

    def tup(value):
        return None if value is None else tuple(value)

    if args.model_kwargs is not None and not isinstance(args.model_kwargs, dict):
        raise ValueError(f"The --model-kwargs option must be a JSON object. Got {args.model_kwargs!r} instead.")
    return StudyOptions(
        studies=studies, dataset=args.dataset, data_root=args.data_root, losses=tup(args.losses), seeds=tuple(args.seeds),
        grid=str(args.grid), epochs=args.epochs, noise_levels=tup(args.noise), fractions=tup(args.fractions),
        eps=tup(args.eps), noise_std=tup(args.noise_std), snr_db=tup(args.snr), adv_eps=args.adv_eps, model=args.model,
        model_kwargs=args.model_kwargs, attack_n=args.attack_n, autoattack=args.autoattack,
        autoattack_eps=args.autoattack_eps, device=args.device,
        preset_files=tuple(str(f) for f in args.preset_file), compare_noise=args.compare_noise, eps_l2=args.eps_l2,
        eps_linf=args.eps_linf, fpr=args.fpr,
    )


def run(args: argparse.Namespace) -> int:
    """Run the study; print where the rows and the report are."""
    from ..experiments.engine import parse_shard, run_study, usable_cpus
    from ..reports.study import write_report

    options = options_from_args(args)
    if args.download:
        from ._common import fetch_dataset

        fetch_dataset(options.dataset, options.data_root)
    shard = parse_shard(args.shard)
    jobs = args.jobs
    if jobs == "auto":
        jobs = usable_cpus() if options.device == "cpu" else 1
    result = run_study(options, args.out, shard=shard, jobs=jobs, overwrite=args.overwrite, progress=args.progress,
                       report=write_report if args.report else None)
    print(f"study directory   {result.out_dir}")
    print(f"cells             {len(result.ran)} computed, {len(result.reused)} reused")
    for role, path in result.files.items():
        if role in ("rows", "report", "html"):
            print(f"{role:<17} {path}")
    print(f"finished in {result.seconds:.0f} s")
    return 0
