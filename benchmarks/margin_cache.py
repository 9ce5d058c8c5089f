"""Cost of the margin step with cached denominators (``denominator_refresh``), relative to cross-entropy.

Same setting as ``step_cost.py``: the paper's MNIST CNN, batch 128 of 28x28 inputs, margin on four
layers (input, both conv, fc), ``ce_weight=1``. Each round times every configuration once (a few
steps each, interleaved) and takes the ratio to the cross-entropy step of that round; the medians
over rounds are printed, so drifts in machine speed cancel. Timed:

- ``exact``: today's first-order step (forward, ``top_k`` activation-gradient passes, full backward);
- ``cached``: the step between refreshes (one forward, the denominators read from a table, one
  backward);
- ``refresh``: the refresh pass for the samples of one batch (eval mode, every rival class, at
  ``--refresh-batch`` samples a pass, as the trainer: the training batch size), the same for every ``top_k``.

A refresh covers the training set once every ``R`` epochs, i.e. once per ``R`` steps of every sample:
the amortised cost of a step is ``cached + refresh / R``. ``--memory`` measures the peak memory of
each configuration in a fresh process (CPU: growth of the peak resident set, as ``step_cost.py
--memory``; CUDA: ``max_memory_allocated``), the cached step with a table the size of MNIST's training
set (``--table-samples`` 55 000 x 10 classes x 4 layers, float32: 8.8 MB).

``--accuracy OUT`` instead trains ``deepmargin train --preset margin-l2`` (digits_cnn on the bundled
digits) with exact denominators and with ``--denominator-refresh R`` for every ``R`` of
``--refresh-every`` (0 = exact is always added), on clean labels and ``--noise`` label noise, for
``--seeds`` seeds and ``--epochs`` epochs, ``--workers`` runs at a time with one thread each; one row
per run goes to ``OUT/rows.jsonl`` (runs already there are kept), then the mean and std per cell.

    python benchmarks/margin_cache.py [--rounds 7] [--steps 3] [--refresh-every 1 2 5 10] [--memory]
    python benchmarks/margin_cache.py --accuracy runs/margin_cache --refresh-every 2 5 --epochs 30
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from deepmargin import LargeMarginLoss
from deepmargin.models import build_model
from step_cost import LAYERS, make_step, one_peak, timed

GAMMA = [1.0, 2.0, 2.0, 2.0]


def make_cached_step(model, optimizer, top_k: int, table: torch.Tensor):
    """The step between refreshes: the batch's rows of ``table`` as denominators."""
    criterion = LargeMarginLoss(model, LAYERS, gamma=GAMMA, norm=2, ce_weight=1.0, top_k=top_k)
    rows = torch.arange(128)

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        idx = rows[: len(y)] % table.shape[0]
        loss, _ = criterion(x, y, grad_norms=table[idx])
        loss.backward()
        optimizer.step()
    return step


def make_refresh(model, batch: int):
    """The refresh pass for ``len(y)`` samples, ``batch`` at a time (the inputs tiled to that size)."""
    criterion = LargeMarginLoss(model, LAYERS, gamma=GAMMA, norm=2, ce_weight=1.0, top_k=9)

    def refresh(x, y):
        reps = -(-batch // len(y))
        xs, ys = x.repeat(reps, 1, 1, 1)[:batch], y.repeat(reps)[:batch]
        was = model.training
        model.eval()
        try:
            criterion.rival_grad_norms(xs, ys)
        finally:
            model.train(was)
    return refresh, batch


def build(args, table_samples: int):
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("mnist_cnn", num_classes=10, input_shape=(1, 28, 28)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    if table_samples > len(y):  # --memory: a table of that size (its values do not change the cost), made
        # without a refresh pass, whose peak would raise the high-water mark the steps are measured against
        table = torch.rand(table_samples, 10, len(LAYERS), device=device)
    else:
        model.eval()
        table = LargeMarginLoss(model, LAYERS, gamma=GAMMA, top_k=9).rival_grad_norms(x, y).float()
        model.train()
    refresh, refresh_batch = make_refresh(model, args.refresh_batch)
    configs = {
        "ce": make_step(model, optimizer, "ce"),
        "k1 exact": make_step(model, optimizer, "margin", top_k=1),
        "k9 exact": make_step(model, optimizer, "margin", top_k=9),
        "k1 cached": make_cached_step(model, optimizer, 1, table),
        "k9 cached": make_cached_step(model, optimizer, 9, table),
        "refresh": refresh,
    }
    return configs, x, y, device, refresh_batch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per configuration per round")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--refresh-batch", type=int, default=128,
                        help="samples per refresh pass (the trainer uses the training batch size)")
    parser.add_argument("--refresh-every", type=int, nargs="+", default=[1, 2, 5, 10], metavar="R")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 1 step (a smoke run)")
    parser.add_argument("--memory", action="store_true", help="peak memory relative to cross-entropy, fresh processes")
    parser.add_argument("--table-samples", type=int, default=55000, help="rows of the table in --memory")
    parser.add_argument("--accuracy", metavar="OUT", help="train the accuracy grid into OUT instead of timing")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.4])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.accuracy is not None:
        return accuracy_grid(args)
    if args.quick:
        args.rounds, args.steps = 2, 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory and args._one is None:
        return memory_table(args)
    configs, x, y, device, refresh_batch = build(args, args.table_samples if args._one else args.batch)
    if args._one is not None:
        return one_peak(configs[args._one], x, y, device)
    for fn in configs.values():  # warm-up
        fn(x, y)
    per_batch = args.batch / refresh_batch  # the refresh timing covers refresh_batch samples
    ratios: dict[str, list[float]] = {}
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.rounds):
        t = {k: timed(fn, x, y, args.steps, device) for k, fn in configs.items()}
        t["refresh"] *= per_batch
        for k, v in t.items():
            times[k].append(v)
        row = {k: v / t["ce"] for k, v in t.items() if k != "ce"}
        for k in (1, 9):
            for r in args.refresh_every:
                row[f"k{k} cached, R={r} (amortised)"] = (t[f"k{k} cached"] + t["refresh"] / r) / t["ce"]
        for k, v in row.items():
            ratios.setdefault(k, []).append(v)

    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} refresh batch={refresh_batch} "
          f"torch={torch.__version__} rounds={args.rounds} steps/round={args.steps}")
    print(f"{'configuration':<30} {'ms/step (median)':>17} {'/ CE (median of per-round ratios)':>36}")
    print(f"{'ce':<30} {1e3 * statistics.median(times['ce']):>17.1f} {'1.00':>36}")
    for k, r in ratios.items():
        ms = f"{1e3 * statistics.median(times[k]):.1f}" if k in times else ""
        label = "refresh (per batch of samples)" if k == "refresh" else k
        print(f"{label:<30} {ms:>17} {statistics.median(r):>36.2f}")


def memory_table(args) -> None:
    names = ["ce", "k1 exact", "k9 exact", "k1 cached", "k9 cached", "refresh"]
    peaks = {}
    for name in names:
        cmd = [sys.executable, __file__, "--device", args.device, "--batch", str(args.batch), "--refresh-batch",
               str(args.refresh_batch), "--table-samples", str(args.table_samples), "--_one", name]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        peaks[name] = int(next(line for line in out.splitlines() if line.startswith("PEAK")).split()[1])
    table = args.table_samples * 10 * len(LAYERS) * 4
    print(f"peak memory of 3 steps (batch {args.batch}, refresh {args.refresh_batch} samples a pass, {args.device}), "
          f"relative to cross-entropy; the cached runs also hold the table: {args.table_samples} samples x 10 classes x "
          f"{len(LAYERS)} layers = {table / 2**20:.1f} MiB")
    print(f"{'configuration':<12} {'step peak':>12} {'/ CE':>7} {'+ table':>12} {'/ CE':>7}")
    for name, peak in peaks.items():
        held = peak + (table if name != "ce" and "exact" not in name else 0)
        print(f"{name:<12} {peak / 2**20:>8.1f} MiB {peak / peaks['ce']:>6.2f}x {held / 2**20:>8.1f} MiB "
              f"{held / peaks['ce']:>6.2f}x")


def _train_one(cell: tuple[float, int, int, str, int]) -> dict:
    import json
    from pathlib import Path

    noise, refresh, seed, out, epochs = cell
    run = Path(out) / f"noise{noise:g}-R{refresh}-seed{seed}"
    cmd = [sys.executable, "-m", "deepmargin", "-q", "train", "--preset", "margin-l2", "--epochs", str(epochs),
           "--seed", str(seed), "--label-noise", str(noise), "--denominator-refresh", str(refresh), "--threads", "1",
           "--no-val-loss", "--out", str(run), "--overwrite"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    res = json.loads((run / "results.json").read_text())
    return {"preset": "margin-l2", "model": res["config"]["model"], "label_noise": noise, "denominator_refresh": refresh,
            "seed": seed, "epochs": epochs, "test_acc": res["test_acc"], "test_acc_best": res["test_acc_best"],
            "seconds": res["seconds_total"]}


def accuracy_grid(args) -> None:
    import json
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    out = Path(args.accuracy)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["label_noise"], r["denominator_refresh"], r["seed"], r["epochs"]) for r in rows}
    refreshes = sorted({0, *args.refresh_every})
    cells = [(n, r, s, str(out), args.epochs) for n in args.noise for r in refreshes for s in args.seeds
             if (n, r, s, args.epochs) not in done]
    with ThreadPoolExecutor(max_workers=args.workers) as pool:  # each worker waits on one training process
        for row in pool.map(_train_one, cells):
            rows.append(row)
            with rows_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(f"test accuracy of margin-l2 on digits, {args.epochs} epochs, mean +- std over seeds {args.seeds} "
          "(last epoch; best.pt by validation accuracy in brackets); seconds = training time per run")
    print(f"{'label noise':>11} {'denominators':>16} {'test acc':>16} {'(best.pt)':>16} {'seconds':>8}")
    for n in args.noise:
        for r in refreshes:
            cell = [x for x in rows if x["label_noise"] == n and x["denominator_refresh"] == r and x["epochs"] == args.epochs]
            if not cell:
                continue
            acc = torch.tensor([x["test_acc"] for x in cell], dtype=torch.float64)
            best = torch.tensor([x["test_acc_best"] for x in cell], dtype=torch.float64)
            std = lambda t: t.std().item() if len(t) > 1 else 0.0  # noqa: E731
            label = "exact" if r == 0 else f"cached, R={r}"
            print(f"{n:>11g} {label:>16} {acc.mean().item():>9.4f} +- {std(acc):.4f} {best.mean().item():>9.4f} +- "
                  f"{std(best):.4f} {statistics.median(x['seconds'] for x in cell):>8.1f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
