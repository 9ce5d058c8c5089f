"""Adversarial training (Kurakin et al. 2016) and data augmentation as training options."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepmargin.attacks import FGSM
from deepmargin.cli.main import main
from deepmargin.data import load_dataset
from deepmargin.training import METRIC_COLUMNS, TrainConfig, load_checkpoint, read_jsonl, train
from deepmargin.training import trainer as trainer_module
from deepmargin.training.adversarial import (
    adversarial_batch,
    adversarial_count,
    combine_losses,
    craft,
    sample_epsilons,
    truncated_normal_mean,
)
from deepmargin.training.augment import augment_batch, check_augmentable, flip, shift
from deepmargin.training.config import config_differences


def _tiny_model(seed: int = 0, d: int = 5, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, classes)).double()


def _ce_objective(model: nn.Module):
    def objective(x, y):
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    return objective


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_fraction=0.25)


# ------------------------------------------------------------------------------------ epsilons

def test_epsilons_follow_the_truncated_normal():
    eps_max, n = 0.3, 200_000
    sigma = eps_max / 2
    eps = sample_epsilons(n, eps_max, generator=torch.Generator().manual_seed(0))
    assert eps.shape == (n,) and eps.dtype == torch.float64
    assert float(eps.min()) >= 0.0 and float(eps.max()) <= eps_max
    assert float(eps.max()) > 0.99 * eps_max and float(eps.min()) < 0.01 * eps_max  # the whole interval is used

    # the mean, independently: numerical integral of t * pdf(t) over [0, eps_max] of the truncated density
    t = torch.linspace(0.0, eps_max, 200_001, dtype=torch.float64)
    density = torch.exp(-0.5 * (t / sigma) ** 2)
    mean_numeric = float(torch.trapezoid(t * density, t) / torch.trapezoid(density, t))
    closed = sigma * math.sqrt(2 / math.pi) * (1 - math.exp(-2.0)) / math.erf(math.sqrt(2.0))
    assert mean_numeric == pytest.approx(closed, rel=1e-8)
    assert truncated_normal_mean(eps_max) == pytest.approx(closed, rel=1e-12)
    std = float(eps.std())
    assert abs(float(eps.mean()) - closed) < 4 * std / math.sqrt(n)
    # not the untruncated half-normal (mean sigma*sqrt(2/pi)) nor a uniform draw (mean eps_max/2)
    assert abs(closed - sigma * math.sqrt(2 / math.pi)) > 20 * std / math.sqrt(n)
    # the CDF at a few points: erf(t / (sigma sqrt 2)) / erf(eps_max / (sigma sqrt 2))
    for q in (0.05, 0.1, 0.2, 0.25):
        expected = math.erf(q / (sigma * math.sqrt(2))) / math.erf(eps_max / (sigma * math.sqrt(2)))
        assert float((eps <= q).double().mean()) == pytest.approx(expected, abs=4 * math.sqrt(0.25 / n))


def test_epsilons_use_the_global_generator_reproducibly():
    torch.manual_seed(3)
    a = sample_epsilons(50, 16.0)
    torch.manual_seed(3)
    b = sample_epsilons(50, 16.0)
    assert torch.equal(a, b) and float(a.max()) <= 16.0
    assert truncated_normal_mean(16.0) == pytest.approx(8 * 0.72278975, rel=1e-6)  # Kurakin: [0, 16], sigma 8


def test_adversarial_count_rounds():
    assert [adversarial_count(m, 0.5) for m in (4, 5, 32, 33, 64)] == [2, 3, 16, 17, 32]
    assert adversarial_count(4, 0.1) == 0 and adversarial_count(7, 1.0) == 7 and adversarial_count(10, 0.3) == 3
    # no part of a single sample (batch norm cannot train on one): the nearest k that avoids it
    assert [adversarial_count(m, 0.5) for m in (1, 2, 3)] == [1, 2, 3]
    assert adversarial_count(64, 0.02) == 2 and adversarial_count(64, 0.01) == 0  # 1.28 -> 2, 0.64 -> 0
    assert adversarial_count(10, 0.9) == 10 and adversarial_count(10, 0.85) == 8  # 9 would leave one clean sample
    for m in range(2, 40):
        for ratio in (0.01, 0.1, 0.3, 0.5, 0.77, 0.9, 1.0):
            k = adversarial_count(m, ratio)
            assert 0 <= k <= m and k != 1 and m - k != 1
            assert abs(k - ratio * m) <= 1.5


# ------------------------------------------------------------------------------------ crafting

def test_adversarial_part_equals_fgsm_at_the_predicted_labels():
    model = _tiny_model(1)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(10, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g)
    torch.manual_seed(0)
    out = adversarial_batch(_ce_objective(model), model, x, y, eps_max=0.3, ratio=0.6, weight=0.3, bounds=(0.0, 1.0))
    idx = out.adv_idx
    assert len(idx) == 6 and out.n_adv == 6 and out.adv_mask.sum() == 6 and out.adv_mask[idx].all()
    assert out.eps.shape == (6,) and len(torch.unique(out.eps)) == 6  # one radius per sample
    # direct computation: x + eps_i * sign(grad of CE at the predicted labels), clipped to [0, 1]
    with torch.no_grad():
        pred = model(x).argmax(1)
    xs = x[idx].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xs), pred[idx], reduction="sum"), xs)
    expected = (x[idx] + out.eps[:, None] * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(out.x[idx], expected, rtol=0, atol=1e-15)
    assert torch.equal(out.y_pred, pred[idx])
    assert torch.equal(out.x[~out.adv_mask], x[~out.adv_mask])  # the clean part is untouched
    assert not torch.equal(out.x[idx], x[idx])
    # and the library's FGSM at one radius, given the predicted labels, agrees with craft
    x_adv, labels = craft(model, x, 0.07, bounds=(0.0, 1.0))
    torch.testing.assert_close(x_adv, FGSM(eps=0.07, bounds=(0.0, 1.0))(model.eval(), x, pred), rtol=0, atol=1e-15)
    assert torch.equal(labels, pred)


def test_inputs_stay_unbounded_without_bounds():
    model = _tiny_model(2)
    x = torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x_adv, _ = craft(model, x, torch.full((6,), 2.0, dtype=torch.float64), bounds=None)
    assert float((x_adv - x).abs().min()) == pytest.approx(2.0)  # every coordinate moved by eps, no clipping
    clipped, _ = craft(model, x, torch.full((6,), 2.0, dtype=torch.float64), bounds=(0.0, 1.0))
    assert float(clipped.min()) == 0.0 and float(clipped.max()) == 1.0


def test_crafted_with_the_prediction_not_the_target():
    # logits (s, -s) with s = x0 + x1: the model predicts class 0 at x = (0.5, 0.5); the target is 1
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
    x = torch.full((4, 2), 0.5, dtype=torch.float64)
    y = torch.ones(4, dtype=torch.int64)
    out = adversarial_batch(_ce_objective(model), model, x, y, eps_max=0.2, ratio=1.0, weight=1.0, bounds=None)
    assert out.n_adv == 4 and torch.equal(out.y_pred, torch.zeros(4, dtype=torch.int64))
    step = out.x - x
    # with the predicted label the example moves away from class 0: s decreases ...
    assert bool((step < 0).all())
    # ... whereas FGSM with the true label (1) would move towards class 0, the opposite direction
    with_target = FGSM(eps=0.2, bounds=(-10.0, 10.0))(model.eval(), x, y) - x
    assert bool((with_target > 0).all())
    torch.testing.assert_close(step.sign(), -with_target.sign())
    torch.testing.assert_close(step.abs(), out.eps[:, None].expand(4, 2)[torch.argsort(out.adv_idx)], rtol=0, atol=1e-15)


def test_crafting_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    model.train()
    model[3].eval()  # a submodule's own mode must come back as it was
    x = torch.rand(12, 5, dtype=torch.float64)
    buffers = copy.deepcopy(dict(model.named_buffers()))
    x_adv, _ = craft(model, x, torch.full((12,), 0.1, dtype=torch.float64), bounds=(0.0, 1.0))
    assert model.training and model[1].training and not model[3].training
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name
    assert all(p.grad is None for p in model.parameters())
    # crafted in eval mode: the same as FGSM on an eval-mode copy (running statistics, no dropout)
    reference = copy.deepcopy(model).eval()
    pred = reference(x).argmax(1)
    torch.testing.assert_close(x_adv, FGSM(eps=0.1, bounds=(0.0, 1.0))(reference, x, pred), rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------ the loss

def test_combine_losses_formula():
    clean, adv = torch.tensor(1.5), torch.tensor(4.0)
    assert float(combine_losses(clean, adv, 3, 2, 0.3)) == pytest.approx((3 * 1.5 + 0.3 * 2 * 4.0) / (3 + 0.3 * 2))
    assert float(combine_losses(clean, None, 5, 0, 0.3)) == 1.5
    assert float(combine_losses(None, adv, 0, 5, 0.3)) == 4.0
    with pytest.raises(ValueError, match="must not both be 0"):
        combine_losses(None, None, 0, 0, 0.3)


@pytest.mark.parametrize(("m", "ratio", "k"), [(7, 0.5, 4), (4, 0.1, 0), (5, 1.0, 5)])
def test_batch_loss_is_the_weighted_mean_of_the_per_sample_losses(m, ratio, k):
    """A toy objective whose per-sample loss is the first input coordinate (known for every fed sample)."""
    model = _tiny_model(3)
    calls = []

    def objective(x, y):
        calls.append(len(y))
        return x[:, 0].mean(), model(x)

    x = torch.rand(m, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(m))
    y = torch.zeros(m, dtype=torch.int64)
    lam = 0.3
    out = adversarial_batch(objective, model, x, y, eps_max=0.5, ratio=ratio, weight=lam, bounds=None)
    assert out.n_adv == k and sorted(calls) == sorted(c for c in (m - k, k) if c)
    per_sample = out.x[:, 0]
    w = out.adv_mask.double() * (lam - 1.0) + 1.0  # lam on the adversarial part, 1 elsewhere
    expected = (w * per_sample).sum() / ((m - k) + lam * k)
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-12)
    torch.testing.assert_close(out.logits, model(out.x).detach(), rtol=0, atol=1e-14)


def test_parameter_gradients_are_those_of_the_weighted_loss():
    model = _tiny_model(4)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(9, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (9,), generator=g)
    lam = 0.3
    out = adversarial_batch(_ce_objective(model), model, x, y, eps_max=0.3, ratio=0.5, weight=lam, bounds=(0.0, 1.0))
    assert all(p.grad is None for p in model.parameters())  # crafting left no gradient behind
    out.loss.backward()
    # from scratch, on a copy: (sum_clean CE + lam * sum_adv CE) / ((m - k) + lam * k) on the fed batch
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.grad = None
    w = out.adv_mask.double() * (lam - 1.0) + 1.0  # lam on the adversarial part, 1 elsewhere
    losses = F.cross_entropy(ref(out.x), y, reduction="none")
    grads = torch.autograd.grad((w * losses).sum() / w.sum(), list(ref.parameters()))
    for p, expected in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------ training

def _strip_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_adversarial_training_runs_and_resumes_bit_identically(digits, tmp_path, monkeypatch):
    cfg = TrainConfig(dataset="digits", train_fraction=0.25, adv_train="fgsm", adv_eps=0.2, augment="crop-flip",
                      crop_padding=1, model_kwargs={"batch_norm": True, "dropout": 0.2}, epochs=2, batch_size=32)
    full = train(cfg, tmp_path / "full", data=digits)
    rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and set(rows[0]) == set(METRIC_COLUMNS)
    assert METRIC_COLUMNS[-2:] == ("train_adv_acc", "violated")
    assert all(0.0 <= r["train_adv_acc"] <= 1.0 for r in rows)
    assert (tmp_path / "full" / "metrics.csv").read_text().splitlines()[0].endswith(",seed,train_adv_acc,violated")
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["adv_train"] == "fgsm" and config["adv_eps"] == 0.2 and config["augment"] == "crop-flip"

    real_append = trainer_module.append_row

    def stop_after_epoch_1(stem, row, **kw):
        real_append(stem, row, **kw)
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "append_row", stop_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=digits)
    monkeypatch.undo()
    resumed = train(cfg, tmp_path / "cut", data=digits)
    assert resumed.resumed_from == 1
    assert _strip_time(resumed.history) == _strip_time(full.history)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    plain = train(TrainConfig(dataset="digits", train_fraction=0.25, model_kwargs={"batch_norm": True, "dropout": 0.2},
                              epochs=1, batch_size=32), data=digits)
    assert plain.history[0]["train_adv_acc"] is None
    assert plain.history[0]["train_loss"] != full.history[0]["train_loss"]


def test_adversarial_training_with_the_margin_loss(digits):
    cfg = TrainConfig(dataset="digits", train_fraction=0.25, loss="margin", gamma=1.0, top_k=1, alpha=1.0,
                      adv_train="fgsm", adv_ratio=0.5, epochs=1, batch_size=64)
    result = train(cfg, data=digits)
    row = result.history[0]
    assert math.isfinite(row["train_loss"]) and 0.0 <= row["train_adv_acc"] <= 1.0


def test_old_runs_without_the_new_keys_still_resume(tmp_path):
    data = load_dataset("moons", n_samples=60)
    cfg = TrainConfig(dataset="moons", model="mlp", model_kwargs={"hidden_sizes": [8]}, n_samples=60, epochs=1)
    train(cfg, tmp_path, data=data)
    path = tmp_path / "last.pt"
    payload = torch.load(path, weights_only=True)
    new_keys = ("adv_train", "adv_eps", "adv_ratio", "adv_weight", "augment", "crop_padding")
    payload["config"] = {k: v for k, v in payload["config"].items() if k not in new_keys}
    torch.save(payload, path)
    assert "adv_train" not in load_checkpoint(path)["config"]
    assert train(cfg, tmp_path, data=data).resumed_from == 1
    with pytest.raises(ValueError, match=r"adv_train: 'none' \(saved\) != 'fgsm' \(now\)"):
        train(TrainConfig(**{**cfg.to_dict(), "adv_train": "fgsm"}), tmp_path, data=data)
    old = {k: v for k, v in cfg.to_dict().items() if k not in new_keys}
    assert config_differences(old, cfg.to_dict()) == {}
    assert config_differences(old, {**cfg.to_dict(), "crop_padding": 2}) == {"crop_padding": (4, 2)}


# ------------------------------------------------------------------------------------ augmentation

def _shift_by_loops(x, sy, sx):
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            if 0 <= i + sy < h and 0 <= j + sx < w:
                out[..., i, j] = x[..., i + sy, j + sx]
    return out


def test_shift_is_a_zero_padded_crop():
    x = torch.rand(3, 2, 5, 6, generator=torch.Generator().manual_seed(0)) + 1.0  # no zeros of its own
    shifts = torch.tensor([[2, -1], [-2, 2], [0, 0]])
    out = shift(x, 2, shifts=shifts)
    assert out.shape == x.shape
    for n, (sy, sx) in enumerate(shifts.tolist()):
        torch.testing.assert_close(out[n], _shift_by_loops(x[n], sy, sx), rtol=0, atol=0)
    assert bool((out[0, :, -2:, :] == 0).all()) and bool((out[0, :, :, :1] == 0).all())  # zero fill
    assert bool((out[0, :, :-2, 1:] > 0).all())
    assert torch.equal(out[2], x[2])
    # padded-then-cropped, the textbook way
    padded = F.pad(x, (2, 2, 2, 2))
    torch.testing.assert_close(out[1], padded[1, :, 0:5, 4:10], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"'shifts' parameter of shift must be an int tensor of shape \(3, 2\)"):
        shift(x, 1, shifts=shifts)


def test_random_shifts_are_per_sample_and_within_the_padding():
    x = torch.rand(40, 1, 6, 6, generator=torch.Generator().manual_seed(1)) + 1.0
    torch.manual_seed(0)
    out = shift(x, 2)
    assert out.shape == x.shape
    found = []
    for n in range(len(x)):
        match = [(sy, sx) for sy in range(-2, 3) for sx in range(-2, 3) if torch.equal(out[n], _shift_by_loops(x[n], sy, sx))]
        assert len(match) == 1
        found.append(match[0])
    assert len(set(found)) > 10  # each sample its own shift


def test_flip_is_an_exact_mirror():
    x = torch.rand(4, 3, 5, 7, generator=torch.Generator().manual_seed(2))
    out = flip(x, flips=torch.tensor([True, False, True, False]))
    for j in range(7):
        assert torch.equal(out[0, :, :, j], x[0, :, :, 6 - j])
    assert torch.equal(out[1], x[1]) and torch.equal(out[2], x[2].flip(-1))
    torch.manual_seed(0)
    x = torch.rand(64, 1, 3, 3)
    rand = flip(x)
    flipped = torch.tensor([torch.equal(rand[n], x[n].flip(-1)) for n in range(64)])
    kept = torch.tensor([torch.equal(rand[n], x[n]) for n in range(64)])
    assert bool((flipped | kept).all()) and 16 < int(flipped.sum()) < 48


def test_no_padding_and_no_flip_leave_the_batch_unchanged():
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(augment_batch(x, "crop", 0), x)
    assert torch.equal(shift(x, 0, shifts=torch.zeros(5, 2, dtype=torch.int64)), x)
    assert torch.equal(flip(x, flips=torch.zeros(5, dtype=torch.bool)), x)
    assert augment_batch(x, "none") is x
    torch.manual_seed(0)
    out = augment_batch(x, "crop-flip", 1)
    assert out.shape == x.shape and not torch.equal(out, x)


def test_augment_refuses_non_image_data(tmp_path):
    cfg = TrainConfig(dataset="moons", model="mlp", augment="flip", epochs=1)
    with pytest.raises(ValueError, match=r"'augment' parameter of TrainConfig must be 'none' for dataset 'moons', whose "
                                         r"inputs have shape \(2,\): augmentation needs images"):
        train(cfg, tmp_path)
    assert not (tmp_path / "config.json").exists()
    check_augmentable((1, 8, 8), "crop")
    with pytest.raises(ValueError, match=r"batch of images \(N, C, H, W\)"):
        augment_batch(torch.rand(4, 2), "crop", 1)


# ------------------------------------------------------------------------------------ config + CLI

@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"adv_eps": -1}, r"^The 'adv_eps' parameter of TrainConfig must be a float > 0\. Got -1 instead\.$"),
        ({"adv_eps": 0.0}, r"'adv_eps' parameter of TrainConfig must be a float > 0\. Got 0.0"),
        ({"adv_eps": math.inf}, r"'adv_eps' parameter"),
        ({"adv_ratio": 0.0}, r"'adv_ratio' parameter of TrainConfig must be a float in \(0, 1\]\. Got 0.0"),
        ({"adv_ratio": 1.5}, r"'adv_ratio' parameter"),
        ({"adv_weight": 0}, r"'adv_weight' parameter of TrainConfig must be a float > 0\. Got 0 instead"),
        ({"adv_train": "pgd"}, r"'adv_train' parameter of TrainConfig must be one of \['none', 'fgsm', 'l2'\]\. Got 'pgd'"),
        ({"augment": "rotate"}, r"'augment' parameter of TrainConfig must be one of \['none', 'crop', 'flip', 'crop-flip'\]"),
        ({"crop_padding": -1}, r"'crop_padding' parameter of TrainConfig must be an int >= 0\. Got -1"),
        ({"crop_padding": 1.5}, r"'crop_padding' parameter"),
    ],
)
def test_config_rejects_bad_adversarial_and_augment_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_config_defaults_and_round_trip():
    cfg = TrainConfig()
    assert (cfg.adv_train, cfg.adv_eps, cfg.adv_ratio, cfg.adv_weight, cfg.augment, cfg.crop_padding) == (
        "none", 0.3, 0.5, 0.3, "none", 4)
    cfg = TrainConfig(adv_train="fgsm", adv_eps=1, adv_ratio=1, adv_weight=2, augment="crop", crop_padding=0)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert type(cfg.adv_eps) is float and type(cfg.adv_ratio) is float


def test_cli_trains_adversarially(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["-q", "train", "--data", "digits", "--train-fraction", "0.2", "--adv-train", "fgsm", "--adv-eps", "0.1",
            "--adv-ratio", "0.25", "--adv-weight", "0.5", "--augment", "crop", "--crop-padding", "1", "--epochs", "1",
            "--out", str(out)]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["adv_train"], config["adv_eps"], config["adv_ratio"], config["adv_weight"]) == ("fgsm", 0.1, 0.25, 0.5)
    assert (config["augment"], config["crop_padding"]) == ("crop", 1)
    assert read_jsonl(out / "metrics.jsonl")[0]["train_adv_acc"] is not None
    assert "test accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["-q", "train", "--adv-ratio", "0", "--epochs", "1", "--out", str(tmp_path / "bad")])
    assert info.value.code == 2
    assert "must be a float in (0, 1]" in capsys.readouterr().err
