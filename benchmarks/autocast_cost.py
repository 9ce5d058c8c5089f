"""Step cost of cross-entropy and the margin loss in float32 and under bf16 autocast (a GPU check).

The paper's MNIST CNN, batch 128, margin on four layers (as ``step_cost.py``), per-class gradients
taken in a loop or in one vmapped pass (``grad_method``). Each round times every configuration once,
interleaved; ratios to the float32 cross-entropy step are medians over rounds.

    python benchmarks/autocast_cost.py --device cuda [--rounds 7] [--steps 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_cost import LAYERS, sync  # noqa: E402

from deepmargin import LargeMarginLoss  # noqa: E402
from deepmargin.models import build_model  # noqa: E402


def make_step(model, optimizer, device, *, margin: dict | None, bf16: bool):
    criterion = None if margin is None else LargeMarginLoss(model, LAYERS, gamma=[1.0, 2.0, 2.0, 2.0], norm=2, ce_weight=1.0, **margin)

    def step(x, y):
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        optimizer.zero_grad(set_to_none=True)
        with cast:
            loss = F.cross_entropy(model(x), y) if criterion is None else criterion(x, y)[0]
        loss.float().backward()
        optimizer.step()
        return loss

    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("mnist_cnn", num_classes=10, input_shape=(1, 28, 28)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    configs = {}
    for bf16 in (False, True):
        tag = "bf16" if bf16 else "fp32"
        configs[f"ce {tag}"] = make_step(model, optimizer, device, margin=None, bf16=bf16)
        for k in (1, 9):
            for method in ("loop", "batched"):
                configs[f"margin k{k} {method} {tag}"] = make_step(
                    model, optimizer, device, margin={"top_k": k, "grad_method": method}, bf16=bf16)
    for fn in configs.values():  # warm up (cuDNN autotune, allocator)
        fn(x, y)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, fn in configs.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn(x, y)
            sync(device)
            times[name].append((time.perf_counter() - t0) / args.steps)
    base = times["ce fp32"]
    print(f"device {device}, batch {args.batch}, {args.rounds} rounds x {args.steps} steps; ratio = step / ce fp32 step")
    print(f"{'configuration':28s} {'ms/step':>9s} {'ratio':>7s}")
    for name, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(t, base))
        print(f"{name:28s} {1000 * statistics.median(t):9.2f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
