"""Checkpoints, the run configuration, optimisers/schedules and the training loop (incl. resume)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from deepmargin.data import DataBundle, Split
from deepmargin.models import build_model
from deepmargin.training import (
    METRIC_COLUMNS,
    CheckpointError,
    TrainConfig,
    build_optimizer,
    build_scheduler,
    evaluate_split,
    init_model,
    load_checkpoint,
    load_model,
    read_jsonl,
    save_checkpoint,
    train,
)
from deepmargin.training import checkpoint as checkpoint_module
from deepmargin.training import trainer as trainer_module


def blobs(seed: int, n: int = 96, num_classes: int = 3, spread: float = 0.35) -> DataBundle:
    """Well-separated Gaussian blobs around the vertices of a regular polygon."""
    g = torch.Generator().manual_seed(seed)

    def split(m: int) -> Split:
        y = torch.arange(m) % num_classes
        angle = 2 * math.pi * y.double() / num_classes
        centres = torch.stack([angle.cos(), angle.sin()], dim=1) * 2
        x = centres + spread * torch.randn(m, 2, generator=g, dtype=torch.float64)
        return Split(x.float(), y)

    return DataBundle(name="blobs", train=split(n), val=split(n // 4), test=split(n // 2), num_classes=num_classes,
                      input_shape=(2,), bounds=None, info={"seed": seed})


def tiny_config(**kw) -> TrainConfig:
    base = dict(dataset="moons", model="mlp", model_kwargs={"hidden_sizes": [16, 16]}, epochs=6, batch_size=16,
                lr=0.01, seed=0)
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------------------- checkpoints

def _trained_model():
    kw = {"num_classes": 4, "input_shape": [1, 8, 8], "dropout": 0.2, "batch_norm": True}
    model = build_model("digits_cnn", **kw)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 1, 8, 8)), torch.randint(0, 4, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, kw, opt, sched


def test_checkpoint_round_trip(tmp_path):
    model, kw, opt, sched = _trained_model()
    config = {"dataset": "digits", "norm": math.inf, "layers": ("input", "relu1"), "seed": 3}
    path = save_checkpoint(tmp_path / "sub" / "c.pt", model=model, model_name="digits_cnn", model_kwargs=kw,
                           optimizer=opt, scheduler=sched, epoch=2, config=config, metrics={"val_acc": 0.5})
    loaded, meta = load_model(path)
    assert not loaded.training
    model.eval()
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert meta["model_name"] == "digits_cnn" and meta["epoch"] == 2 and meta["format_version"] == 1
    assert meta["model_kwargs"] == {**kw, "input_shape": [1, 8, 8]}
    assert meta["config"] == {"dataset": "digits", "norm": math.inf, "layers": ["input", "relu1"], "seed": 3}
    assert meta["metrics"] == {"val_acc": 0.5}
    assert "model_state" not in meta and "optimizer_state" not in meta
    ckpt = load_checkpoint(path)
    opt2 = torch.optim.Adam(loaded.parameters(), lr=0.01)
    opt2.load_state_dict(ckpt["optimizer_state"])
    for a, b in zip(opt.state.values(), opt2.state.values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=0, atol=0)
    assert ckpt["scheduler_state"]["last_epoch"] == 2
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["c.pt"]  # no temporary files left


def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    model, kw, _, _ = _trained_model()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=model, model_name="digits_cnn", model_kwargs=kw, epoch=1)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, model_name="digits_cnn", model_kwargs=kw, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


class _NotPlain:
    pass


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(corrupt)
    model, kw, _, _ = _trained_model()
    good = save_checkpoint(tmp_path / "good.pt", model=model, model_name="digits_cnn", model_kwargs=kw)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = 2
    torch.save(payload, tmp_path / "v2.pt")
    with pytest.raises(CheckpointError, match=r"'format_version' of checkpoint .* must be 1. Got 2 instead"):
        load_checkpoint(tmp_path / "v2.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a deepmargin checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format_version": 1, "evil": _NotPlain()}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="could not be loaded safely"):
        load_checkpoint(tmp_path / "unsafe.pt")
    payload = torch.load(good, weights_only=True)
    payload["model_kwargs"]["num_classes"] = 7
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit its model"):
        load_model(tmp_path / "mismatch.pt")


def test_save_rejects_bad_metadata(tmp_path):
    model, kw, _, _ = _trained_model()
    with pytest.raises(TypeError, match=r"'config.extra' metadata must contain only plain values"):
        save_checkpoint(tmp_path / "a.pt", model=model, model_name="digits_cnn", model_kwargs=kw, config={"extra": {1, 2}})
    with pytest.raises(ValueError, match="must include 'num_classes'"):
        save_checkpoint(tmp_path / "a.pt", model=model, model_name="digits_cnn", model_kwargs={"input_shape": [1, 8, 8]})
    with pytest.raises(ValueError, match=r"'epoch' parameter of save_checkpoint must be an int >= 0"):
        save_checkpoint(tmp_path / "a.pt", model=model, model_name="digits_cnn", model_kwargs=kw, epoch=-1)
    assert not (tmp_path / "a.pt").exists()


# ------------------------------------------------------------------------------------------ config

def test_config_round_trip_and_resolution():
    cfg = TrainConfig(loss="margin", norm="inf", gamma=[1.0, 2.0], layers=("input", "relu1"), optimizer="sgd",
                      model_kwargs={"hidden_sizes": (4, 4)})
    d = cfg.to_dict()
    assert d["norm"] == "inf" and d["layers"] == ["input", "relu1"] and d["momentum"] is None  # resolved by the optimiser
    assert d["model_kwargs"] == {"hidden_sizes": [4, 4]}
    assert json.loads(json.dumps(d)) == d
    again = TrainConfig.from_dict(d)
    assert again == cfg and again.norm == math.inf
    assert TrainConfig(optimizer="rmsprop").momentum is None
    assert TrainConfig(optimizer="adam").momentum is None
    assert TrainConfig(gamma=[3.0]).gamma == 3.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "svm"}, r"'loss' parameter of TrainConfig must be one of \['ce', 'hinge', 'margin', .*'vat'.*\]. Got 'svm'"),
        ({"optimizer": "lbfgs"}, r"'optimizer' parameter"),
        ({"lr_schedule": "linear"}, r"'lr_schedule' parameter"),
        ({"norm": 0.5}, r"'norm' parameter of TrainConfig must be a real number p >= 1 or 'inf'. Got 0.5"),
        ({"norm": "l3"}, r"'norm' parameter"),
        ({"gamma": -1.0}, r"'gamma' parameter"),
        ({"gamma": [1.0, 2.0, 3.0], "layers": ["input", "relu1"]}, r"a list of 2 floats"),
        ({"top_k": 0}, r"'top_k' parameter of TrainConfig must be an int >= 1. Got 0"),
        ({"label_noise": 1.0}, r"'label_noise' parameter of TrainConfig must be a float in \[0, 1\)"),
        ({"train_fraction": 0.0}, r"'train_fraction'"),
        ({"epochs": 0}, r"'epochs' parameter of TrainConfig must be an int >= 1"),
        ({"batch_size": 2.5}, r"'batch_size'"),
        ({"lr": 0}, r"'lr' parameter of TrainConfig must be a float > 0"),
        ({"grad_clip": -1.0}, r"'grad_clip'"),
        ({"momentum": 1.0}, r"'momentum'"),
        ({"lr_decay": 0.0}, r"'lr_decay'"),
        ({"alpha": 0.0}, r"'alpha'"),
        ({"seed": -1}, r"'seed'"),
        ({"layers": "input"}, r"'layers' parameter"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['gama'\]"):
        TrainConfig.from_dict({"gama": 1.0})


# --------------------------------------------------------------------------- optimisers and schedules

@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_optimizers(name):
    params = [torch.nn.Parameter(torch.ones(3))]
    opt = build_optimizer(name, params, lr=0.1, weight_decay=0.01)
    assert opt.defaults["lr"] == 0.1 and opt.defaults["weight_decay"] == 0.01
    expected = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}[name]
    assert type(opt) is expected
    with pytest.raises(ValueError, match="'name' parameter of build_optimizer"):
        build_optimizer("adagrad", params, lr=0.1)


@pytest.mark.parametrize("schedule", ["none", "step", "exponential", "cosine"])
def test_lr_schedules_follow_their_closed_form(schedule):
    lr, decay, step, epochs = 0.2, 0.5, 3, 10
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(schedule, opt, epochs=epochs, decay=decay, step=step)
    closed = {
        "none": lambda e: lr,
        "step": lambda e: lr * decay ** (e // step),
        "exponential": lambda e: lr * decay**e,
        "cosine": lambda e: lr * (1 + math.cos(math.pi * e / epochs)) / 2,
    }[schedule]
    for epoch in range(epochs + 1):
        assert opt.param_groups[0]["lr"] == pytest.approx(closed(epoch), rel=1e-12, abs=1e-15)
        opt.step()
        if sched is not None:
            sched.step()


# ------------------------------------------------------------------------------------ training loop

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("loss", ["ce", "hinge", "margin"])
def test_training_reduces_the_loss(loss, seed):
    data = blobs(seed)
    cfg = tiny_config(loss=loss, gamma=0.5, top_k=2, epochs=8, seed=seed)
    model, _ = init_model(cfg, data)
    from deepmargin.training import build_objective

    before = evaluate_split(model, data.train.x, data.train.y, objective=build_objective(cfg, model))
    result = train(cfg, data=data, progress=False)
    after = evaluate_split(result.model, data.train.x, data.train.y, objective=build_objective(cfg, result.model))
    assert after["loss"] < 0.5 * before["loss"]
    assert after["acc"] > 0.9 and result.test_acc > 0.9
    assert len(result.history) == 8 and result.history[-1]["test_acc"] == result.test_acc
    assert set(result.history[0]) == set(METRIC_COLUMNS)


def test_run_directory_contents(tmp_path):
    data = blobs(2)
    cfg = tiny_config(loss="margin", gamma=0.5, epochs=3, lr_schedule="step", lr_step=1, lr_decay=0.5)
    result = train(cfg, tmp_path, data=data)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == {**cfg.to_dict(), "layers": ["input", "relu1", "relu2"]}
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.005, 0.0025])
    assert rows[-1]["test_acc"] == result.test_acc and rows[0]["test_acc"] is None
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(METRIC_COLUMNS) and len(csv_lines) == 4
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    val = [r["val_acc"] for r in rows]
    best_epoch = val.index(max(val)) + 1
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == best_epoch == result.best_epoch
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["test_acc"] == result.test_acc and summary["epochs_completed"] == 3
    model, meta = load_model(tmp_path / "last.pt")
    torch.testing.assert_close(model(data.test.x), result.model(data.test.x), rtol=0, atol=0)


def _strip_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    data = blobs(3)
    cfg = tiny_config(loss="margin", gamma=0.5, top_k=2, epochs=4, model_kwargs={"hidden_sizes": [16], "dropout": 0.3},
                      optimizer="sgd", lr_schedule="cosine")
    full = train(cfg, tmp_path / "full", data=data)

    real_append = trainer_module.append_row

    def interrupted_append(stem, row, **kw):
        if row["epoch"] == 2:  # killed after last.pt of epoch 2 was written, before its metrics row
            raise KeyboardInterrupt
        real_append(stem, row, **kw)

    monkeypatch.setattr(trainer_module, "append_row", interrupted_append)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=data)
    monkeypatch.undo()
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 1

    resumed = train(cfg, tmp_path / "cut", data=data)
    assert resumed.resumed_from == 2
    assert _strip_time(resumed.history) == _strip_time(full.history)
    assert resumed.test_acc == full.test_acc
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert _strip_time(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == _strip_time(full.history)

    again = train(cfg, tmp_path / "cut", data=data)  # a finished run is not trained again
    assert again.resumed_from == 4 and again.test_acc == full.test_acc


def test_resume_refuses_a_different_config(tmp_path):
    data = blobs(4)
    cfg = tiny_config(epochs=1)
    train(cfg, tmp_path, data=data)
    with pytest.raises(ValueError, match=r"refusing to resume it: lr: 0.01 \(saved\) != 0.02 \(now\)"):
        train(tiny_config(epochs=1, lr=0.02), tmp_path, data=data)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg, tmp_path, data=data, resume=False)
    fresh = train(tiny_config(epochs=2, lr=0.02), tmp_path, data=data, resume=False, overwrite=True)
    assert fresh.resumed_from == 0 and len(read_jsonl(tmp_path / "metrics.jsonl")) == 2


@pytest.mark.parametrize("seed", [3, 5])
def test_gradient_clipping_bounds_the_step(seed):
    data = blobs(seed, n=32)
    clip, lr = 1e-3, 1.0
    cfg = tiny_config(epochs=1, batch_size=64, optimizer="sgd", momentum=0.0, lr=lr, grad_clip=clip)
    start, _ = init_model(cfg, data)
    result = train(cfg, data=data)
    step = torch.cat([(a - b).flatten() for a, b in zip(result.model.parameters(), start.parameters())])
    assert 0 < step.norm().item() <= lr * clip * (1 + 1e-5)
    unclipped = train(tiny_config(epochs=1, batch_size=64, optimizer="sgd", momentum=0.0, lr=lr), data=data)
    step2 = torch.cat([(a - b).flatten() for a, b in zip(unclipped.model.parameters(), start.parameters())])
    assert step2.norm().item() > 10 * lr * clip


def test_non_finite_loss_is_reported():
    data = blobs(6)
    bad = Split(torch.full_like(data.train.x, float("nan")), data.train.y)
    nan_data = DataBundle(name="nan", train=bad, val=data.val, test=data.test, num_classes=3, input_shape=(2,), bounds=None)
    with pytest.raises(FloatingPointError, match="training loss became nan in epoch 1"):
        train(tiny_config(epochs=1), data=nan_data)


def test_margin_layers_are_checked_against_the_model():
    with pytest.raises(ValueError, match="conv9"):
        train(tiny_config(loss="margin", layers=["input", "conv9"]), data=blobs(0))


def test_evaluate_split_restores_the_mode():
    model = build_model("mlp", num_classes=3, input_shape=(2,), dropout=0.5)
    data = blobs(7)
    model.train()
    res = evaluate_split(model, data.test.x, data.test.y)
    assert model.training and 0.0 <= res["acc"] <= 1.0 and res["loss"] is None
    with torch.no_grad():
        model.eval()
        expected = (model(data.test.x).argmax(1) == data.test.y).double().mean().item()
    assert res["acc"] == pytest.approx(expected)
    assert evaluate_split(model, data.test.x[:0], data.test.y[:0]) == {"loss": None, "acc": None}


def test_train_on_digits_with_the_cnn(tmp_path):
    """The real pipeline once: load_dataset('digits'), the digits CNN, the margin loss on all layers."""
    cfg = TrainConfig(dataset="digits", train_fraction=0.2, loss="margin", gamma=1.0, top_k=2, alpha=1.0, epochs=1)
    result = train(cfg, tmp_path)
    assert result.config["layers"] == ["input", "relu1", "relu2", "relu3"]
    assert result.data_info.get("train_fraction") == 0.2
    assert 0.0 <= result.test_acc <= 1.0
    assert Path(tmp_path / "best.pt").is_file()


def test_exact_per_sample_option_reaches_the_loss():
    """With batch norm in training mode, the per-sample option changes the margin loss."""
    data = blobs(0)
    kw = dict(loss="margin", gamma=2.0, top_k=2, model_kwargs={"hidden_sizes": [8], "batch_norm": True})
    from deepmargin.training import build_objective

    values = []
    for exact in (False, True):
        cfg = tiny_config(exact_per_sample=exact, **kw)
        model, _ = init_model(cfg, data)
        model.train()
        loss, _ = build_objective(cfg, model)(data.train.x[:12], data.train.y[:12])
        values.append(loss.item())
    assert abs(values[0] - values[1]) > 1e-6
    with pytest.raises(TypeError, match="'exact_per_sample' parameter of TrainConfig must be a bool"):
        tiny_config(exact_per_sample="yes", **kw)


# ------------------------------------------------------------------- review fixes: resume/overwrite

def test_overwrite_without_resume_starts_afresh(tmp_path):
    data = blobs(8)
    cfg = tiny_config(epochs=2)
    train(cfg, tmp_path, data=data)
    (tmp_path / "stale.txt").write_text("not a run file")
    fresh = train(cfg, tmp_path, data=data, overwrite=True)  # resume=None: the same config would otherwise resume
    assert fresh.resumed_from == 0 and [r["epoch"] for r in fresh.history] == [1, 2]
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert (tmp_path / "stale.txt").exists()  # only the run's own files are deleted
    changed = train(tiny_config(epochs=1, lr=0.02), tmp_path, data=data, overwrite=True)  # no "refusing to resume"
    assert changed.resumed_from == 0 and json.loads((tmp_path / "config.json").read_text())["lr"] == 0.02
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    with pytest.raises(ValueError, match=r"'overwrite' parameter of train must be False when resume=True"):
        train(cfg, tmp_path, data=data, resume=True, overwrite=True)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # nothing was deleted


# ----------------------------------------------------------------------------------- review: device

@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", ""])
def test_config_rejects_a_bad_device(device):
    with pytest.raises((ValueError, TypeError), match=r"'device' parameter of TrainConfig must be"):
        TrainConfig(device=device)


def test_config_accepts_device_strings_and_objects():
    assert TrainConfig(device="cuda:1").device == "cuda:1"  # parsed, not checked for availability here
    assert TrainConfig(device=torch.device("cpu")).device == "cpu"


@pytest.mark.parametrize(
    ("device", "patch", "match"),
    [
        ("cuda", "cuda", r"'device' parameter of TrainConfig must be a device available on this machine\. Got 'cuda' "
                         r"instead: torch\.cuda\.is_available\(\) is False"),
        ("mps", "mps", r"Got 'mps' instead: torch\.backends\.mps\.is_available\(\) is False"),
    ],
)
def test_train_refuses_an_unavailable_device(device, patch, match, monkeypatch, tmp_path):
    if patch == "cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    else:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=match):
        train(tiny_config(epochs=1, device=device), tmp_path, data=blobs(0))
    assert not (tmp_path / "config.json").exists()  # refused before anything was written


# ------------------------------------------------------------------------------ review: numpy values

def test_config_turns_numpy_values_into_plain_ones(tmp_path):
    np = pytest.importorskip("numpy")
    cfg = tiny_config(
        seed=np.int64(1), lr=np.float32(0.01), epochs=np.int64(2), batch_size=np.int32(16), val_size=np.float64(0.1),
        loss="margin", layers=["input", "relu1"], gamma=np.array([0.5, 1.0]), layer_weights=np.array([1, 2]),
        top_k=np.int64(2), alpha=np.float32(2.0), weight_decay=np.float32(0.0), optimizer="sgd",
        momentum=np.float32(0.5), grad_clip=np.float64(5.0), approximate=np.bool_(True),
        model_kwargs={"hidden_sizes": np.array([16, 16]), "dropout": np.float32(0.25)},
    )
    d = cfg.to_dict()
    for key in ("seed", "epochs", "batch_size", "top_k"):
        assert type(d[key]) is int, key
    for key in ("lr", "val_size", "alpha", "weight_decay", "momentum", "grad_clip"):
        assert type(d[key]) is float, key
    assert d["lr"] == float(np.float32(0.01)) and d["momentum"] == 0.5
    assert d["gamma"] == [0.5, 1.0] and all(type(g) is float for g in d["gamma"])
    assert d["layer_weights"] == [1.0, 2.0] and all(type(w) is float for w in d["layer_weights"])
    assert d["model_kwargs"] == {"hidden_sizes": [16, 16], "dropout": 0.25}
    assert all(type(h) is int for h in d["model_kwargs"]["hidden_sizes"])
    assert type(d["approximate"]) is bool
    assert json.loads(json.dumps(d)) == d
    # a numpy seed trains (it used to fail in random.seed) and gives the same run as the plain int
    data = blobs(1)
    with_numpy = train(tiny_config(seed=np.int64(1), lr=np.float32(0.01), epochs=1), tmp_path, data=data)
    plain = train(tiny_config(seed=1, lr=float(np.float32(0.01)), epochs=1), data=data)
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1
    for a, b in zip(with_numpy.model.state_dict().values(), plain.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------- review: momentum

def test_momentum_is_rejected_with_adam():
    with pytest.raises(ValueError, match=r"'momentum' parameter of TrainConfig must be None with optimizer 'adam'"):
        TrainConfig(optimizer="adam", momentum=0.5)
    with pytest.raises(ValueError, match=r"'momentum' parameter of build_optimizer must be None with 'adam'"):
        build_optimizer("adam", [torch.nn.Parameter(torch.ones(2))], lr=0.1, momentum=0.5)


@pytest.mark.parametrize(("optimizer", "expected"), [("sgd", 0.9), ("rmsprop", 0.0)])
def test_unset_momentum_follows_the_optimizer(optimizer, expected):
    sgd = tiny_config(optimizer="sgd")
    assert sgd.momentum is None and sgd.to_dict()["momentum"] is None
    switched = TrainConfig.from_dict({**sgd.to_dict(), "optimizer": optimizer})
    assert switched.momentum is None
    opt = build_optimizer(switched.optimizer, [torch.nn.Parameter(torch.ones(2))], lr=0.1, momentum=switched.momentum)
    assert opt.defaults["momentum"] == expected


def test_resume_accepts_a_stored_default_momentum(tmp_path):
    """Runs written when the config stored the resolved default (0.9 for SGD) still resume."""
    data = blobs(9)
    train(tiny_config(epochs=2, optimizer="sgd", momentum=0.9), tmp_path, data=data)
    assert json.loads((tmp_path / "config.json").read_text())["momentum"] == 0.9
    again = train(tiny_config(epochs=2, optimizer="sgd"), tmp_path, data=data)
    assert again.resumed_from == 2
    with pytest.raises(ValueError, match=r"momentum: 0.9 \(saved\) != 0.5 \(now\)"):
        train(tiny_config(epochs=2, optimizer="sgd", momentum=0.5), tmp_path, data=data)


# ----------------------------------------------------------------------- review: best.pt without val

def _without_val(data: DataBundle) -> DataBundle:
    empty = Split(data.val.x[:0], data.val.y[:0])
    return DataBundle(name=data.name, train=data.train, val=empty, test=data.test, num_classes=data.num_classes,
                      input_shape=data.input_shape, bounds=None, info=data.info)


@pytest.mark.parametrize("with_val", [True, False])
def test_results_record_how_best_was_selected(with_val, tmp_path, caplog):
    data = blobs(10) if with_val else _without_val(blobs(10))
    cfg = tiny_config(epochs=3, val_size=0.1 if with_val else 0.0)
    with caplog.at_level("INFO", logger="deepmargin.training.trainer"):
        result = train(cfg, tmp_path, data=data)
    summary = json.loads((tmp_path / "results.json").read_text())
    key = "val_acc" if with_val else "train_acc"
    assert summary["best_selected_by"] == result.best_selected_by == key
    scores = [r[key] for r in result.history]
    assert summary["best_epoch"] == scores.index(max(scores)) + 1 == load_checkpoint(tmp_path / "best.pt")["epoch"]
    assert (summary["best_val_acc"] is None) is (not with_val)
    final = caplog.records[-1].getMessage()
    assert ("validation accuracy" in final) is with_val and ("training accuracy" in final) is (not with_val)
    assert "best-validation" not in final


# ------------------------------------------------------------------ review: data_root and epochs

def test_resume_ignores_a_moved_data_root(tmp_path):
    data = blobs(11)
    train(tiny_config(epochs=2, data_root=str(tmp_path / "old")), tmp_path / "run", data=data)
    again = train(tiny_config(epochs=2, data_root=str(tmp_path / "new")), tmp_path / "run", data=data)
    assert again.resumed_from == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_root"] == str(tmp_path / "new")


@pytest.mark.parametrize("interrupted", [False, True])
def test_resume_continues_to_more_epochs(interrupted, tmp_path, monkeypatch):
    data = blobs(12)
    kw = dict(loss="margin", gamma=0.5, optimizer="sgd", lr_schedule="step", lr_step=1, lr_decay=0.7,
              model_kwargs={"hidden_sizes": [16], "dropout": 0.2})
    full = train(tiny_config(epochs=4, **kw), tmp_path / "full", data=data)
    if interrupted:  # a 3-epoch run killed after epoch 2
        real_append = trainer_module.append_row

        def interrupted_append(stem, row, **k):
            real_append(stem, row, **k)
            if row["epoch"] == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(trainer_module, "append_row", interrupted_append)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(epochs=3, **kw), tmp_path / "cut", data=data)
        monkeypatch.undo()
    else:
        train(tiny_config(epochs=2, **kw), tmp_path / "cut", data=data)
    with pytest.raises(ValueError, match=r"epochs: \d \(saved\) != 4 \(now\) \(pass resume=True \(--resume\)"):
        train(tiny_config(epochs=4, **kw), tmp_path / "cut", data=data)  # implicit resume: same epochs only
    longer = train(tiny_config(epochs=4, **kw), tmp_path / "cut", data=data, resume=True)
    assert longer.resumed_from == 2 and len(longer.history) == 4
    skip = {"seconds", "test_acc"}  # epoch 2 of the short run was its last, with a test accuracy
    assert [{k: v for k, v in r.items() if k not in skip} for r in longer.history] == [
        {k: v for k, v in r.items() if k not in skip} for r in full.history
    ]
    assert longer.test_acc == full.test_acc and longer.best_epoch == full.best_epoch
    for a, b in zip(full.model.state_dict().values(), longer.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["epochs"] == 4
    assert [r["epoch"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"epochs: 4 \(saved\) != 3 \(now\) \(the run has already completed 4 epochs\)"):
        train(tiny_config(epochs=3, **kw), tmp_path / "cut", data=data, resume=True)


def test_resume_refuses_other_epochs_with_the_cosine_schedule(tmp_path):
    data = blobs(13)
    train(tiny_config(epochs=2, lr_schedule="cosine"), tmp_path, data=data)
    with pytest.raises(ValueError, match=r"epochs: 2 \(saved\) != 3 \(now\) \(the cosine learning-rate schedule anneals"):
        train(tiny_config(epochs=3, lr_schedule="cosine"), tmp_path, data=data, resume=True)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def test_val_loss_false_records_the_same_accuracies_without_the_loss():
    common = dict(dataset="digits", loss="margin", gamma=0.5, top_k=2, epochs=2, train_fraction=0.3, seed=3)
    with_loss = train(TrainConfig(**common), None, verbose=False)
    without = train(TrainConfig(**common, val_loss=False), None, verbose=False)
    assert [r["val_loss"] for r in without.history] == [None, None]
    assert all(r["val_loss"] is not None for r in with_loss.history)
    assert [r["val_acc"] for r in without.history] == [r["val_acc"] for r in with_loss.history]
    assert without.test_acc == with_loss.test_acc
    with pytest.raises(TypeError, match="'val_loss' parameter of TrainConfig must be a bool"):
        TrainConfig(val_loss="no")
