"""``compare-methods``: every margin method side by side on one dataset, under one protocol.

Each method (a preset) is trained clean and under label noise (``compare_noise``, default 0.4) with
the studies' protocol: validation-chosen hyperparameters from a small grid per method (the
method's own weight; :func:`compare_grid`), several seeds. The clean model of every method and
seed is then measured (an evaluation cell, :func:`evaluate_compare`):

- ``deepfool`` / ``rho_adv``: Matyasko & Chau's average robustness, mean ||r||_2 / ||x||_2;
- ``fmn-l2`` / ``fmn-linf``: ``median_distance`` and ``error_at_eps`` under FMN (Finlay & Oberman);
- ``ifgsm`` / ``accuracy``: white-box and black-box (transferred from the ``ce`` model of the seed);
- ``autoattack`` / ``accuracy``: the worst case per input over AutoAttack's ensemble at the same
  l_inf radius (the protocol's version, ``"fast"`` by default; :mod:`.worst_case`), with its
  reliability ``flags``; the winners and verdicts under attack use it;
- ``fgsm`` / ``accuracy``, box ``black``: FGSM transferred from ``ce`` (Kesidis et al.'s Table I);
- ``purity-tsuzuku`` / ``purity-kesidis``: ``median_radius``, the median certified class-pure l_2
  radius (Tsuzuku's Prop. 4.1 with the l_2 Lipschitz upper bound; Kesidis' Thm. 2.1 with the
  l_inf/l_2 one, on rectified outputs) and ``lipschitz``, the bound;
- ``detect``: ``auc`` and ``tpr_at_fpr`` of margin p-values (a Gaussian mixture fitted to the
  log-margins of the correctly classified training samples) flagging the transferred FGSM inputs;
  the threshold is set on the clean validation split for the false-positive rate ``fpr``.

One cost cell times a training step of every method against cross-entropy, interleaved in one
process (``step_time_ratio``), and the peak memory a few steps allocate (``peak_memory_ratio``;
CUDA: ``max_memory_allocated``, CPU: the allocation timeline ``torch.profiler`` records).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .protocol import Protocol

__all__ = ["COMPARE", "COMPARE_METHODS", "compare_defaults", "compare_grid", "evaluate_compare", "measure_cost"]

#: The study's name.
COMPARE = "compare-methods"

#: The methods ``compare-methods`` trains by default.
COMPARE_METHODS: tuple[str, ...] = (
    "ce", "hinge", "dropout", "ce-adv", "vat", "margin-l1", "margin-l2", "margin-linf", "matyasko-l1", "matyasko-l2",
    "j1", "j2", "tulip", "kesidis-9",
)

#: Attack budgets per dataset: l_2 and l_inf (Finlay & Oberman's error-at-eps columns; the IFGSM and
#: FGSM radius is the l_inf one).
_EPS = {"digits": (0.5, 0.1), "mnist": (1.5, 0.1), "fashion-mnist": (1.0, 0.1), "cifar10": (0.1, 1 / 16)}


def compare_defaults(dataset: str, input_shape: Sequence[int]) -> dict[str, float]:
    """Default settings of the study for ``dataset``: label noise, eps l_2, eps l_inf, detection FPR."""
    dim = math.prod(input_shape) if input_shape else 64
    l2, linf = _EPS.get(dataset, (round(0.5 * math.sqrt(dim / 64), 4), 0.1))
    return {"noise": 0.4, "eps_l2": l2, "eps_linf": linf, "fpr": 0.05}


def compare_grid(name: str | Mapping[str, Any], protocol: Protocol) -> dict[str, dict[str, Any]]:
    """The grid of ``compare-methods``: each method's own weight, no shared dimension.

    ``reduced`` (default) gives two values per method (the margin's gamma in multiples 1 and 3 of
    the protocol's base, Matyasko's C, the input-gradient eps, VAT's eps, Kesidis' mu, the dropout
    rate of the ``dropout`` preset); ``paper`` four; ``none`` one; a grid given as a file or mapping
    is used as it is.
    """
    from .protocol import _builtin_grid

    if not isinstance(name, str) or name not in ("reduced", "paper", "none"):
        return dict(name)  # a user's grid: already resolved
    base = _builtin_grid(name, protocol)
    if name == "none":
        return {**base, "dropout": {"dropout": [protocol.dropout]}}
    out = {family: {k: v for k, v in dims.items() if k not in ("dropout", "weight_decay", "optimizer")}
           for family, dims in base.items()}
    out["dropout"] = {"dropout": [round(protocol.dropout / 2, 4), protocol.dropout] if name == "reduced"
                      else [0.1, 0.25, protocol.dropout, 0.75]}
    return out


# -- evaluation ----------------------------------------------------------------------------------


def _median(values) -> float:
    import torch

    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    return float(t.median()) if t.numel() % 2 else float(t.sort().values[t.numel() // 2 - 1: t.numel() // 2 + 1].mean())


def evaluate_compare(model, source, bundle, spec: Mapping[str, Any], base: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The measurement rows of one chosen clean model (see the module docstring).

    Args:
        model: the method's chosen model (eval mode). source: the ``ce`` model of the same seed.
        bundle: the run's data (training split with its labels, clean validation split, test split).
        spec: the cell's settings (``eps_l2``, ``eps_linf``, ``fpr``, ``attack_n``, ``device``).
        base: the row fields every row shares (study, dataset, loss, seed, hp, run, ...).
    """
    import torch

    from ..attacks.factory import build_attack
    from ..metrics import distance_summary, lipschitz_upper_bound, purity_radius, rho_adv
    from .detection import run_detection
    from .worst_case import run_autoattack

    device = torch.device(spec["device"])
    x, y = bundle.test.x, bundle.test.y
    if spec.get("attack_n") is not None:
        x, y = x[: spec["attack_n"]], y[: spec["attack_n"]]
    x, y = x.to(device), y.to(device)
    bounds = tuple(bundle.bounds) if bundle.bounds is not None else (-math.inf, math.inf)
    finite = math.isfinite(bounds[1] - bounds[0])
    eps_l2, eps_linf, fpr = float(spec["eps_l2"]), float(spec["eps_linf"]), float(spec["fpr"])
    rows: list[dict[str, Any]] = []

    def add(attack: str, metric: str, value: float | None, *, eps: float | None = None, box: str = "white",
            source_name: str | None = None) -> None:
        value = None if value is None or math.isnan(float(value)) else float(value)  # NaN: nothing measured
        rows.append({**base, "attack": attack, "metric": metric, "value": value,
                     "eps": eps, "box": box, "source": source_name, "n_test": int(len(y)),
                     "test_acc": float(value) if metric == "accuracy" and value is not None else None})

    def accuracy(m, inputs) -> float:
        with torch.no_grad():
            return float((m(inputs).argmax(dim=1) == y).float().mean())

    attack_bounds = bounds if finite else (-1e6, 1e6)
    rho = rho_adv(model, x, y, attack=build_attack("deepfool", norm="l2", bounds=attack_bounds))
    add("deepfool", "rho_adv", rho["rho_adv"])
    for norm, eps, name in (("l2", eps_l2, "fmn-l2"), ("linf", eps_linf, "fmn-linf")):
        attack = build_attack("fmn", norm=norm, bounds=attack_bounds)
        summary = distance_summary(model, x, y, norm=attack.norm, eps=[eps], attack=attack)
        add(name, "median_distance", summary["median_distance"])
        add(name, "error_at_eps", summary["error"][0], eps=eps)
    ifgsm = build_attack("ifgsm", norm="linf", eps=eps_linf, bounds=attack_bounds, steps=None if finite else 10)
    add("ifgsm", "accuracy", accuracy(model, ifgsm(model, x, y)), eps=eps_linf)
    add("ifgsm", "accuracy", accuracy(model, ifgsm(source, x, y)), eps=eps_linf, box="black", source_name="ce")
    found = run_autoattack(model, x, y, version=spec.get("autoattack"), eps=eps_linf, bounds=bounds, seed=int(base["seed"]),
                           label=str(base.get("loss")))
    if found is not None:  # the worst case per input over AutoAttack's ensemble, beside IFGSM
        add("autoattack", "accuracy", found[0].robust_accuracy, eps=eps_linf)
        rows[-1]["flags"] = found[1]
    # margin p-values flagging FGSM transferred from ce, crafted on every test sample at once, as their Table I
    detection = run_detection(
        model, bundle, attacks={"fgsm": build_attack("fgsm", norm="linf", eps=eps_linf, bounds=attack_bounds)},
        eps=[eps_linf], source=source, source_name="ce", white_box=False, fpr=fpr, per_class="auto",
        n=spec.get("attack_n"), batch_size=512, attack_batch_size=max(1, len(bundle.test)), seed=0, check=False,
        histogram=False, keep_adversarial=True, device=device,
    )
    x_fgsm = detection.adversarial[("transfer", "fgsm", eps_linf)]
    add("fgsm", "accuracy", accuracy(model, x_fgsm), eps=eps_linf, box="black", source_name="ce")

    shape = tuple(x.shape[1:])
    for theorem, norm in (("tsuzuku", "l2"), ("kesidis", "linf-l2")):
        bound = lipschitz_upper_bound(model, shape, norm=norm)
        add(f"purity-{theorem}", "lipschitz", bound)
        add(f"purity-{theorem}", "median_radius", _median(purity_radius(model, x, lipschitz=bound, theorem=theorem).cpu()))

    row = detection.rows[0]
    add("detect", "per_class", float(detection.per_class), eps=eps_linf, box=f"fpr{fpr:g}", source_name="ce")
    add("detect", "auc", row["auc"], eps=eps_linf, box=f"fpr{fpr:g}", source_name="ce")
    add("detect", "tpr_at_fpr", row["tpr"], eps=eps_linf, box=f"fpr{fpr:g}", source_name="ce")
    return rows


# -- cost ----------------------------------------------------------------------------------------


def _objective_step(config: Mapping[str, Any], bundle, device):
    import torch

    from ..training import TrainConfig, build_objective, init_model

    cfg = TrainConfig.from_dict({**config, "device": str(device)})
    model, _ = init_model(cfg, bundle)
    model.to(device).train()
    objective = build_objective(cfg, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step(x, y):
        from ..training.adversarial import adversarial_batch

        optimizer.zero_grad(set_to_none=True)
        if cfg.adv_train != "none":
            loss = adversarial_batch(objective, model, x, y, method=cfg.adv_train, eps_max=cfg.adv_eps, ratio=cfg.adv_ratio,
                                     weight=cfg.adv_weight, bounds=bundle.bounds).loss
        elif objective.reweighting is not None:
            loss = objective(x, y, weights=torch.ones(len(y), device=device))[0]
        else:
            loss = objective(x, y)[0]
        loss.backward()
        optimizer.step()

    return step


def _batch(bundle, size: int, device):
    n = min(size, len(bundle.train))
    return bundle.train.x[:n].to(device), bundle.train.y[:n].to(device)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_step_memory(step, x, y, device, *, steps: int = 3) -> int:
    """Peak memory that ``steps`` calls of ``step(x, y)`` allocate beyond what is live before them, in bytes.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running sum of the allocations and frees that
    ``torch.profiler`` records (``profile_memory=True``), in time order; its maximum.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    step(x, y)  # allocator and autograd warm-up
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(steps):
            step(x, y)
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            step(x, y)
    changes = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage)
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return int(peak)


def measure_cost(configs: Mapping[str, Mapping[str, Any]], spec: Mapping[str, Any], base: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``step_time_ratio`` and ``peak_memory_ratio`` of every method against ``ce`` (rows).

    Args:
        configs: a training configuration per method (``"ce"`` among them).
        spec: ``dataset``, ``data_root``, ``batch``, ``device``, ``rounds``, ``steps``.
        base: the fields every row shares.
    """
    import torch

    from ..data import load_dataset

    device = torch.device(spec["device"])
    bundle = load_dataset(spec["dataset"], root=spec.get("data_root"), val_size=0.0, seed=0)
    x, y = _batch(bundle, int(spec["batch"]), device)
    steps = {name: _objective_step(config, bundle, device) for name, config in configs.items()}
    for step in steps.values():
        step(x, y)  # warm up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(int(spec["rounds"])):
        for name, step in steps.items():
            _sync(device)
            tic = time.perf_counter()
            for _ in range(int(spec["steps"])):
                step(x, y)
            _sync(device)
            times[name].append((time.perf_counter() - tic) / int(spec["steps"]))
    rows = []
    peaks = {name: peak_step_memory(step, x, y, device) for name, step in steps.items()}
    for name in configs:
        ratio = statistics.median(a / b for a, b in zip(times[name], times["ce"]))
        memory = peaks[name] / peaks["ce"] if peaks["ce"] > 0 else None
        for metric, value in (("step_time_ratio", ratio), ("step_seconds", statistics.median(times[name])),
                              ("peak_memory_ratio", memory)):
            rows.append({**base, "loss": name, "attack": "cost", "metric": metric, "value": value, "box": "none"})
    return rows
