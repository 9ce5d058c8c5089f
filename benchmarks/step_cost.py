"""Cost of one training step with the large-margin loss (and the other gradient-based losses), relative to cross-entropy.

The paper's MNIST CNN (two 5x5 convs with 32 and 64 filters, 2x2 max pools, fc 512, 10 outputs),
batch 128 of 28x28 inputs, margin on four layers (input, both conv, fc). Each round times every
configuration once (a few steps each, interleaved), and the ratio to cross-entropy is taken per
round; the median over rounds is printed, so drifts in machine speed cancel.

Also times the floor's pieces: forward, an activation-only gradient pass, a full backward, and
(``--others``) the double-backpropagation losses: Matyasko & Chau's gradient-difference penalty
(``gradient_margin_loss``; default ``grad_method='argmax'``: K - 1 graph-free rival passes and one
create_graph pass, so its floor is the top_k=9 one below; also ``'argmax_batched'``, the rival
passes vmapped, and ``'loop'``, K create_graph passes), Finlay & Oberman's J1 / J2 / tulip
(``input_gradient_loss``, one) and VAT (one power iteration).

    python benchmarks/step_cost.py [--rounds 7] [--steps 3] [--device cpu] [--batch 128] [--others]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from deepmargin import LargeMarginLoss
from deepmargin.losses import GradientMarginLoss, InputGradientLoss, VATLoss
from deepmargin.models import build_model

LAYERS = ["input", "relu1", "relu2", "relu3"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_OTHERS = {
    "matyasko": lambda model, **o: GradientMarginLoss(model, C=0.1, **o),
    "input_gradient": lambda model, **o: InputGradientLoss(model, eps=0.1, **o),
    "vat": lambda model, **o: VATLoss(model, eps=1.0, **o),
}


def make_step(model, optimizer, kind: str, **options):
    if kind == "ce":
        def step(x, y):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        return step
    if kind in _OTHERS:
        criterion = _OTHERS[kind](model, **options)
    else:
        criterion = LargeMarginLoss(model, LAYERS, gamma=[1.0, 2.0, 2.0, 2.0], norm=2, ce_weight=1.0, **options)

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss, _ = criterion(x, y)
        loss.backward()
        optimizer.step()
    return step


def timed(fn, x, y, steps: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn(x, y)
    sync(device)
    return (time.perf_counter() - t0) / steps


def floor_pieces(model, x, y, steps: int, device: torch.device) -> dict[str, float]:
    """Forward; activation-only gradient (all four layers); full backward (parameters too)."""
    acts = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o))
             for n in LAYERS[1:]]
    out: dict[str, list[float]] = {"forward": [], "activation_grad": [], "full_backward": []}
    try:
        for _ in range(steps):
            xg = x.detach().requires_grad_(True)
            sync(device)
            t0 = time.perf_counter()
            logits = model(xg)
            sync(device)
            t1 = time.perf_counter()
            score = logits.gather(1, y[:, None]).sum() - logits[:, 0].sum()
            torch.autograd.grad(score, [xg] + [acts[n] for n in LAYERS[1:]], retain_graph=True)
            sync(device)
            t2 = time.perf_counter()
            F.cross_entropy(logits, y).backward()
            sync(device)
            t3 = time.perf_counter()
            out["forward"].append(t1 - t0)
            out["activation_grad"].append(t2 - t1)
            out["full_backward"].append(t3 - t2)
    finally:
        for h in hooks:
            h.remove()
    return {k: statistics.median(v) for k, v in out.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per configuration per round")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 1 step (a smoke run)")
    parser.add_argument("--others", action="store_true",
                        help="also the double-backpropagation losses (Matyasko, J1, J2, tulip, VAT)")
    parser.add_argument("--memory", action="store_true",
                        help="peak memory of 3 steps of each configuration relative to cross-entropy, each in a fresh "
                        "process (CUDA: torch.cuda.max_memory_allocated; CPU: growth of the peak resident set)")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 1
    device = torch.device(args.device)
    if args.memory and args._one is None:
        return memory_table(args)
    torch.manual_seed(0)
    model = build_model("mnist_cnn", num_classes=10, input_shape=(1, 28, 28)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    configs = {
        "ce": make_step(model, optimizer, "ce"),
        "k1 loop": make_step(model, optimizer, "margin", top_k=1, grad_method="loop"),
        "k1 batched": make_step(model, optimizer, "margin", top_k=1, grad_method="batched"),
        "k9 loop": make_step(model, optimizer, "margin", top_k=9, grad_method="loop"),
        "k9 batched": make_step(model, optimizer, "margin", top_k=9, grad_method="batched"),
        "k1 exact(2nd order)": make_step(model, optimizer, "margin", top_k=1, approximate=False),
        "k9 exact(2nd order)": make_step(model, optimizer, "margin", top_k=9, approximate=False),
    }
    if args.others:
        configs.update({
            "matyasko l2 (C=0.1)": make_step(model, optimizer, "matyasko", norm=2),
            "matyasko l2 a.batched": make_step(model, optimizer, "matyasko", norm=2, grad_method="argmax_batched"),
            "matyasko l2 loop": make_step(model, optimizer, "matyasko", norm=2, grad_method="loop"),
            "J1 (eps=0.1)": make_step(model, optimizer, "input_gradient", norm=1),
            "J2 (eps=0.1)": make_step(model, optimizer, "input_gradient", norm=2),
            "tulip (lambda=0.1)": make_step(model, optimizer, "input_gradient", norm=2, lipschitz=0.1),
            "vat (1 iteration)": make_step(model, optimizer, "vat"),
        })
    if args._one is not None:  # a child of --memory: run one configuration and report its peak
        return one_peak(configs[args._one], x, y, device)
    for fn in configs.values():  # warm-up
        fn(x, y)
    times: dict[str, list[float]] = {k: [] for k in configs}
    ratios: dict[str, list[float]] = {k: [] for k in configs if k != "ce"}
    for _ in range(args.rounds):
        round_t = {k: timed(fn, x, y, args.steps, device) for k, fn in configs.items()}
        for k, t in round_t.items():
            times[k].append(t)
            if k != "ce":
                ratios[k].append(t / round_t["ce"])
    pieces = floor_pieces(model, x, y, max(3, args.steps), device)

    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} torch={torch.__version__} "
          f"rounds={args.rounds} steps/round={args.steps}")
    print(f"{'configuration':<22} {'ms/step (median)':>17} {'loss/CE (median of per-round ratios)':>40}")
    print(f"{'ce':<22} {1e3 * statistics.median(times['ce']):>17.1f} {'1.00':>40}")
    for k, r in ratios.items():
        print(f"{k:<22} {1e3 * statistics.median(times[k]):>17.1f} {statistics.median(r):>40.2f}")
    f, a, b = pieces["forward"], pieces["activation_grad"], pieces["full_backward"]
    print(f"floor pieces: forward {1e3 * f:.1f} ms, activation-only grad {a / f:.2f}x forward, "
          f"full backward {b / f:.2f}x forward")
    for k in (1, 9):
        print(f"floor for top_k={k}: (fwd + {k} act-grad + full bwd) / (fwd + full bwd) = "
              f"{(f + k * a + b) / (f + b):.2f}x")


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def one_peak(step, x, y, device: torch.device) -> None:
    """Three steps of one configuration; print the peak memory they added (bytes)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _peak_rss_bytes()
    for _ in range(3):
        step(x, y)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else _peak_rss_bytes() - base
    print(f"PEAK {max(peak, 1)}")


def memory_table(args) -> None:
    import subprocess
    import sys

    names = ["ce", "k1 loop", "k9 loop", "k9 exact(2nd order)"]
    if args.others:
        names += ["matyasko l2 (C=0.1)", "matyasko l2 a.batched", "matyasko l2 loop", "J1 (eps=0.1)", "J2 (eps=0.1)",
                  "tulip (lambda=0.1)", "vat (1 iteration)"]
    peaks = {}
    for name in names:
        cmd = [sys.executable, __file__, "--device", args.device, "--batch", str(args.batch), "--_one", name]
        if args.others:
            cmd.append("--others")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        peaks[name] = int(next(line for line in out.splitlines() if line.startswith("PEAK")).split()[1])
    print(f"peak memory of 3 steps (batch {args.batch}, {args.device}), relative to cross-entropy:")
    for name, peak in peaks.items():
        print(f"{name:<22} {peak / 2**20:>9.1f} MiB {peak / peaks['ce']:>8.2f}x")


if __name__ == "__main__":
    main()
