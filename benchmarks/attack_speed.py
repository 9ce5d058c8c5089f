"""Time per batch of IFGSM, PGD and DeepFool: deepmargin vs foolbox 3, same model, same settings.

The paper's MNIST CNN (``build_model("mnist_cnn", ...)``, random weights), a batch of random
``[0, 1]`` 28x28 inputs labelled with the model's own predictions (so every input starts correctly
classified and DeepFool has work to do). Each round times every attack once for each library, in
alternating order, after one warm-up call; the script prints per-round times, the per-round ratio
ours/foolbox and its median (below 1: deepmargin is faster), and the robust accuracies of both as
a sanity check that the two computed the same thing.

Usage::

    python benchmarks/attack_speed.py [--rounds 5] [--batch-size 128] [--steps 10] [--threads N] [--device cpu]

foolbox is a test/benchmark dependency only (``pip install -e .[test]``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="IFGSM and PGD steps")
    parser.add_argument("--deepfool-steps", type=int, default=50)
    parser.add_argument("--eps", type=float, default=0.3, help="l_inf radius of IFGSM and PGD")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import foolbox as fb

    from deepmargin.attacks import IFGSM, PGD, DeepFool
    from deepmargin.models import build_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = build_model("mnist_cnn", num_classes=10, input_shape=(1, 28, 28)).to(device).eval()
    x = torch.rand(args.batch_size, 1, 28, 28, device=device)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    eps, steps, alpha = args.eps, args.steps, args.eps / args.steps

    def accuracy(x_adv: torch.Tensor) -> float:
        with torch.no_grad():
            return (model(x_adv).argmax(dim=1) == y).float().mean().item()

    ifgsm = IFGSM(eps=eps, steps=steps, step_size=alpha)
    fb_ifgsm = fb.attacks.LinfBasicIterativeAttack(abs_stepsize=alpha, steps=steps, random_start=False)
    pgd = PGD(eps=eps, steps=steps, step_size=alpha, random_start=True, seed=args.seed)
    fb_pgd = fb.attacks.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=True)
    cases = {
        "ifgsm": (lambda: ifgsm(model, x, y), lambda: fb_ifgsm(fmodel, x, y, epsilons=eps)[1]),
        "pgd": (lambda: pgd(model, x, y), lambda: fb_pgd(fmodel, x, y, epsilons=eps)[1]),
    }
    deepfool = DeepFool(norm=2, steps=args.deepfool_steps, overshoot=0.02, candidates=10)
    fb_deepfool = fb.attacks.L2DeepFoolAttack(steps=args.deepfool_steps, candidates=10, overshoot=0.02, loss="logits")
    cases["deepfool_l2"] = (lambda: deepfool(model, x, y), lambda: fb_deepfool(fmodel, x, y, epsilons=None)[1])

    print(
        f"mnist_cnn, batch {args.batch_size}, device {device}, threads {torch.get_num_threads()}, "
        f"eps {eps}, steps {steps}, step size {alpha:g}, deepfool steps {args.deepfool_steps}"
    )
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    accs: dict[str, tuple[float, float]] = {}
    for name, (ours, theirs) in cases.items():  # warm-up
        accs[name] = (accuracy(ours()), accuracy(theirs()))
    for r in range(args.rounds):
        for name, (ours, theirs) in cases.items():
            if r % 2 == 0:
                t_ours, _ = _timed(ours, device)
                t_fb, _ = _timed(theirs, device)
            else:
                t_fb, _ = _timed(theirs, device)
                t_ours, _ = _timed(ours, device)
            times[name][0].append(t_ours)
            times[name][1].append(t_fb)
            ratios[name].append(t_ours / t_fb)
            print(f"round {r}  {name:<12} ours {t_ours * 1e3:8.1f} ms  foolbox {t_fb * 1e3:8.1f} ms  ratio {t_ours / t_fb:.3f}")

    print()
    print(f"{'attack':<12} {'ours ms':>9} {'foolbox ms':>11} {'ratio (median)':>15} {'acc ours':>9} {'acc fb':>7}")
    for name in cases:
        print(
            f"{name:<12} {statistics.median(times[name][0]) * 1e3:9.1f} {statistics.median(times[name][1]) * 1e3:11.1f} "
            f"{statistics.median(ratios[name]):15.3f} {accs[name][0]:9.3f} {accs[name][1]:7.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
