"""Time and robust accuracy of APGD, Square and an APGD + Square ensemble: deepmargin vs ART, same settings.

Two models: the digits CNN trained briefly with deepmargin (``train(TrainConfig(dataset="digits",
epochs=3))``, the first ``--n`` test inputs) and the paper's MNIST CNN with random weights (random
``[0, 1]`` 28x28 inputs labelled with its own predictions, so all start correctly classified). For
each model and norm (l_inf and l_2) both libraries attack the same inputs at the same radius with
the same budgets:

- APGD-CE and APGD-DLR: ``--steps`` iterations, one run (no restarts), initial step ``2 eps``;
- Square: ``--queries`` iterations, ``p_init = 0.8``, one run;
- an ensemble APGD-CE -> APGD-DLR -> Square, each on the inputs still robust (``AutoAttack`` with a
  custom attack list in both libraries; ART has no FAB and its targeted mode tries every class, so
  the standard AutoAttack suite itself is not comparable).

It also times deepmargin's APGD-CE against its PGD at the same number of steps (PGD's default step
``2.5 eps / steps``, random start). The script prints one row per comparison: the times, their
ratio ours / ART (below 1: deepmargin is faster) and the robust accuracy each reached (lower is a
stronger attack).

Usage::

    python benchmarks/autoattack_speed.py [--n 100] [--steps 20] [--queries 200] [--threads 1] [--seed 0]

ART is a benchmark-only dependency (``pip install -e .[bench]``); without it only the deepmargin
figures are printed.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(dim=1) == y).double().mean().item()


def _ours(name: str, norm: str, eps: float, args):
    from deepmargin.attacks import APGD, PGD, AutoAttack, Square

    common = dict(norm=norm, eps=eps, seed=args.seed)
    apgd_ce = APGD(loss="ce", steps=args.steps, **common)
    apgd_dlr = APGD(loss="dlr", steps=args.steps, **common)
    square = Square(queries=args.queries, p_init=0.8, **common)
    return {
        "apgd-ce": apgd_ce,
        "apgd-dlr": apgd_dlr,
        "square": square,
        "ensemble": AutoAttack(attacks=[apgd_ce, apgd_dlr, square], **common),
        "pgd": PGD(norm=norm, eps=eps, steps=args.steps, seed=args.seed),
    }[name]


def _art(name: str, classifier, norm: str, eps: float, n: int, args):
    from art.attacks.evasion import AutoAttack as ArtAutoAttack
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    p = np.inf if norm == "linf" else 2

    def apgd(loss_type):
        return AutoProjectedGradientDescent(
            estimator=classifier, norm=p, eps=eps, eps_step=2 * eps, max_iter=args.steps, targeted=False,
            nb_random_init=1, batch_size=n, loss_type=loss_type, verbose=False,
        )

    square = SquareAttack(estimator=classifier, norm=p, eps=eps, max_iter=args.queries, p_init=0.8, nb_restarts=1,
                          batch_size=n, verbose=False)
    if name == "ensemble":
        return ArtAutoAttack(estimator=classifier, norm=p, eps=eps, eps_step=2 * eps, batch_size=n,
                             attacks=[apgd("cross_entropy"), apgd("difference_logits_ratio"), square])
    return {"apgd-ce": lambda: apgd("cross_entropy"), "apgd-dlr": lambda: apgd("difference_logits_ratio"),
            "square": lambda: square}[name]()


def _models(args):
    from deepmargin.data import load_dataset
    from deepmargin.models import build_model
    from deepmargin.training import TrainConfig, train

    torch.manual_seed(args.seed)
    trained = train(TrainConfig(dataset="digits", epochs=3, seed=args.seed), verbose=False).model.eval()
    test = load_dataset("digits", seed=args.seed).test
    x_digits = torch.as_tensor(test.x[: args.n]).float()
    y_digits = torch.as_tensor(test.y[: args.n]).long()
    yield "digits_cnn (trained)", trained, x_digits, y_digits, {"linf": 0.1, "l2": 0.5}

    torch.manual_seed(args.seed)
    mnist = build_model("mnist_cnn", num_classes=10, input_shape=(1, 28, 28)).eval()
    x_mnist = torch.rand(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        y_mnist = mnist(x_mnist).argmax(dim=1)
    yield "mnist_cnn (random)", mnist, x_mnist, y_mnist, {"linf": 0.01, "l2": 0.1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="inputs per model")
    parser.add_argument("--steps", type=int, default=20, help="APGD and PGD iterations (AutoAttack: 100)")
    parser.add_argument("--queries", type=int, default=200, help="Square iterations (AutoAttack: 5000)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # reliability warnings and ART's deprecation notes: not what is timed
    try:
        from art.estimators.classification import PyTorchClassifier
    except ImportError as err:  # pragma: no cover - benchmark-only dependency
        print(f"ART not installed ({err}); printing deepmargin's figures only. pip install -e .[bench]")
        PyTorchClassifier = None

    print(f"n={args.n} steps={args.steps} queries={args.queries} threads={args.threads} seed={args.seed}")
    header = f"{'model':22s} {'norm':4s} {'eps':>5s} {'attack':9s} {'ours s':>8s} {'ART s':>8s} {'ratio':>6s} " \
             f"{'acc ours':>8s} {'acc ART':>8s}"
    print(header)
    print("-" * len(header))
    for label, model, x, y, radii in _models(args):
        classifier = None
        if PyTorchClassifier is not None:
            classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                           nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
        clean = _accuracy(model, x, y)
        print(f"{label:22s} clean accuracy {clean:.3f}")
        for norm, eps in radii.items():
            for name in ("apgd-ce", "apgd-dlr", "square", "ensemble"):
                attack = _ours(name, norm, eps, args)
                t_ours, x_adv = _timed(lambda: attack(model, x, y))
                acc_ours = _accuracy(model, x_adv, y)
                t_art = acc_art = float("nan")
                if classifier is not None:
                    art_attack = _art(name, classifier, norm, eps, x.shape[0], args)
                    t_art, adv = _timed(lambda: art_attack.generate(x=x.numpy(), y=y.numpy()))
                    acc_art = _accuracy(model, torch.as_tensor(adv).float(), y)
                print(f"{label:22s} {norm:4s} {eps:5.2f} {name:9s} {t_ours:8.2f} {t_art:8.2f} "
                      f"{t_ours / t_art:6.2f} {acc_ours:8.3f} {acc_art:8.3f}")
            pgd, apgd = _ours("pgd", norm, eps, args), _ours("apgd-ce", norm, eps, args)
            t_pgd, adv_pgd = _timed(lambda: pgd(model, x, y))
            t_apgd, adv_apgd = _timed(lambda: apgd(model, x, y))
            print(f"{label:22s} {norm:4s} {eps:5.2f} APGD-CE vs our PGD ({args.steps} steps): time {t_apgd:.2f} s vs "
                  f"{t_pgd:.2f} s (ratio {t_apgd / t_pgd:.2f}), accuracy {_accuracy(model, adv_apgd, y):.3f} vs "
                  f"{_accuracy(model, adv_pgd, y):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
