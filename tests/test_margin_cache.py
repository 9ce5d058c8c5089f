"""Cached margin denominators (``denominator_refresh``): the loss from a table, the refresh schedule, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from deepmargin import LargeMarginLoss
from deepmargin.cli.main import main
from deepmargin.data import load_dataset
from deepmargin.losses.large_margin import large_margin_loss_from_norms, linearized_distances, rival_grad_norms
from deepmargin.models import build_model
from deepmargin.training import TrainConfig, train
from deepmargin.training import trainer as trainer_module
from deepmargin.training.config import config_differences
from deepmargin.training.denominators import CHECKPOINT_KEY, DenominatorCache, margin_criterion

LAYERS = ["input", "relu1", "relu2", "relu3"]


def _cnn(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("digits_cnn", num_classes=10, input_shape=[1, 8, 8], width=4, fc_width=16, **kwargs).double()


def _batch(seed: int = 0, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 10, (n,), generator=gen)


def _grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters())))


# ------------------------------------------------------------------------------------ the loss from a table

@pytest.mark.parametrize("norm", [1, 2, math.inf])
@pytest.mark.parametrize("scores", ["logits", "softmax"])
def test_the_table_holds_the_norms_of_every_rival_class(norm, scores):
    model = _cnn()
    x, y = _batch()
    x.requires_grad_(True)
    acts = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in LAYERS[1:]]
    logits = model(x)
    for h in hooks:
        h.remove()
    layers = [x] + [acts[n] for n in LAYERS[1:]]
    weights = [1.0, 2.0, 0.5, 3.0]
    table = rival_grad_norms(logits, y, layers, norm=norm, layer_weights=weights, scores=scores)
    assert table.shape == (12, 10, 4) and not table.requires_grad
    assert torch.all(table.gather(1, y[:, None, None].expand(-1, 1, 4)) == 0)
    d, classes = linearized_distances(logits, y, layers, top_k=9, norm=norm, layer_weights=weights, scores=scores,
                                      return_classes=True)
    s = logits if scores == "logits" else logits.softmax(1)
    diff = s.gather(1, y[:, None]) - s.gather(1, classes)
    for l in range(4):
        # d = diff / (G + eps)  =>  G = diff / d - eps
        expected = (diff / d[l] - 1e-6).detach()
        torch.testing.assert_close(table[:, :, l].gather(1, classes), expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("norm", [2, math.inf])
def test_for_a_linear_model_the_table_is_the_weight_differences(norm):
    torch.manual_seed(1)
    model = nn.Linear(6, 4).double()
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 1])
    table = rival_grad_norms(model(x), y, [x], norm=norm)
    q = 2 if norm == 2 else 1
    w = model.weight.detach()
    expected = (w[y][:, None, :] - w[None, :, :]).norm(p=q, dim=2)  # (N, C): ||W_y - W_i||_q, 0 at i = y
    torch.testing.assert_close(table[:, :, 0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("top_k, aggregation, alpha", [(1, "max", None), (3, "sum", 1.0), (9, "max", 1.0), (9, "sum", None)])
@pytest.mark.parametrize("norm", [2, math.inf])
@pytest.mark.parametrize("scores", ["logits", "softmax"])
def test_a_step_from_a_fresh_table_equals_the_exact_first_order_step(top_k, aggregation, alpha, norm, scores):
    model = _cnn()
    x, y = _batch()
    criterion = LargeMarginLoss(model, LAYERS, gamma=[0.5, 1.0, 2.0, 1.5], top_k=top_k, aggregation=aggregation,
                                alpha=alpha, norm=norm, scores=scores, layer_weights=[1.0, 2.0, 1.0, 0.5], ce_weight=0.7)
    exact, logits_exact = criterion(x, y)
    table = criterion.rival_grad_norms(x, y)  # the refresh, at the same weights, same inputs and mode
    cached, logits_cached = criterion(x, y, grad_norms=table)
    assert exact.item() > 0
    torch.testing.assert_close(cached, exact, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits_cached, logits_exact, rtol=0, atol=0)
    for a, b in zip(_grads(model, cached), _grads(model, exact)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    per_sample = large_margin_loss_from_norms(logits_cached, y, table, gamma=[0.5, 1.0, 2.0, 1.5], top_k=top_k,
                                              aggregation=aggregation, alpha=alpha, scores=scores, reduction="none")
    assert per_sample.shape == (12,)


def test_with_batch_norm_the_table_matches_the_exact_loss_in_eval_mode():
    model = _cnn(batch_norm=True)
    x, y = _batch()
    model.train()
    model(x)  # some running statistics
    model.eval()
    criterion = LargeMarginLoss(model, LAYERS, gamma=1.0, top_k=9, alpha=1.0)
    exact, _ = criterion(x, y)
    cached, _ = criterion(x, y, grad_norms=criterion.rival_grad_norms(x, y))
    torch.testing.assert_close(cached, exact, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(model, cached), _grads(model, exact)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_refresh_freezes_the_parameters_only_for_its_pass_and_works_without_the_input_layer():
    model = _cnn()
    x, y = _batch()
    model.fc1.weight.requires_grad_(False)  # a parameter frozen by the user stays frozen
    criterion = LargeMarginLoss(model, ["relu2", "relu3"], gamma=1.0, top_k=9)
    table = criterion.rival_grad_norms(x, y)
    assert table.shape == (12, 10, 2) and bool((table.sum(1) > 0).all())
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["fc1.weight"]
    exact, _ = criterion(x, y)
    torch.testing.assert_close(criterion(x, y, grad_norms=table)[0], exact, rtol=1e-12, atol=1e-12)


def test_a_stale_table_changes_the_loss_and_the_cached_step_runs_no_gradient_pass(monkeypatch):
    model = _cnn()
    x, y = _batch()
    criterion = LargeMarginLoss(model, LAYERS, gamma=1.0, top_k=9)
    table = criterion.rival_grad_norms(x, y)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.3)
    import deepmargin.losses.large_margin as lm

    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(lm.torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    cached, _ = criterion(x, y, grad_norms=table)
    assert calls == []
    exact, _ = criterion(x, y)
    assert len(calls) == 9
    assert not torch.allclose(cached, exact)


def test_the_loss_from_a_table_refuses_bad_arguments():
    model = _cnn()
    x, y = _batch()
    logits = model(x)
    table = torch.zeros(12, 10, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"'grad_norms' parameter of large_margin_loss_from_norms must be a tensor of shape \(N=12, C=10, L\)"):
        large_margin_loss_from_norms(logits, y, table[:, :5], gamma=1.0)
    with pytest.raises(TypeError, match="'grad_norms'.*floating-point"):
        large_margin_loss_from_norms(logits, y, table.long(), gamma=1.0)
    with pytest.raises(ValueError, match=r"'gamma'.*sequence of 4 floats"):
        large_margin_loss_from_norms(logits, y, table, gamma=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"'top_k'.*\[1, 9\]"):
        large_margin_loss_from_norms(logits, y, table, gamma=1.0, top_k=10)
    criterion = LargeMarginLoss(model, LAYERS, gamma=1.0, approximate=False)
    with pytest.raises(ValueError, match="'grad_norms'.*None when approximate=False"):
        criterion(x, y, grad_norms=table)


# ------------------------------------------------------------------------------------ the cache in training

def test_the_refresh_schedule_is_epochs_1_1_plus_r_1_plus_2r():
    cache = DenominatorCache(None, None, every=3, num_samples=1)
    assert [e for e in range(1, 12) if cache.due(e)] == [1, 4, 7, 10]
    assert [e for e in range(1, 6) if DenominatorCache(None, None, every=1, num_samples=1).due(e)] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="'every'.*int >= 1"):
        DenominatorCache(None, None, every=0, num_samples=1)


def _data():
    return load_dataset("digits", train_fraction=0.2, seed=0)


def _config(**kwargs) -> TrainConfig:
    base = dict(dataset="digits", model="mlp", model_kwargs={"hidden_sizes": [16, 16]}, train_fraction=0.2,
                loss="margin", gamma=1.0, top_k=9, alpha=1.0, batch_size=32, val_loss=False)
    return TrainConfig(**{**base, **kwargs})


def _record_refreshes(monkeypatch) -> list[tuple[int, torch.Tensor]]:
    """Spy on DenominatorCache.prepare: the epochs at which a refresh ran, with the table after it."""
    seen = []
    real = DenominatorCache.prepare

    def spy(self, epoch, *a, **k):
        did = real(self, epoch, *a, **k)
        seen.append((epoch, did, self.table.clone()))
        return did

    monkeypatch.setattr(DenominatorCache, "prepare", spy)
    return seen


def test_a_run_refreshes_exactly_at_the_scheduled_epochs(monkeypatch):
    seen = _record_refreshes(monkeypatch)
    result = train(_config(epochs=5, denominator_refresh=2), data=_data(), verbose=False)
    assert [e for e, did, _ in seen if did] == [1, 3, 5]
    assert [e for e, did, _ in seen] == [1, 2, 3, 4, 5]
    assert torch.equal(seen[0][2], seen[1][2]) and torch.equal(seen[2][2], seen[3][2])  # held between refreshes
    assert not torch.equal(seen[1][2], seen[2][2])  # recomputed at the new weights
    plain = train(_config(epochs=5), data=_data(), verbose=False)
    assert [r["train_loss"] for r in result.history] != [r["train_loss"] for r in plain.history]


def test_with_r_1_the_first_epoch_equals_the_exact_first_order_run_on_its_first_batch(monkeypatch):
    """The first step of a run with R = 1 sees the table of its initial weights: equal to the exact step."""
    data = _data()
    losses: dict[str, list[float]] = {"exact": [], "cached": []}
    real_step = DenominatorCache.step

    def cached_step(self, x, y, idx):
        loss, logits = real_step(self, x, y, idx)
        losses["cached"].append(loss.item())
        return loss, logits

    monkeypatch.setattr(DenominatorCache, "step", cached_step)
    train(_config(epochs=1, denominator_refresh=1), data=data, verbose=False)
    real_backward = torch.Tensor.backward

    def record(self, *a, **k):
        losses["exact"].append(self.item())
        return real_backward(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "backward", record)
    train(_config(epochs=1), data=data, verbose=False)
    assert len(losses["cached"]) == len(losses["exact"]) > 3
    assert losses["cached"][0] == pytest.approx(losses["exact"][0], rel=1e-5)
    assert losses["cached"][3] != pytest.approx(losses["exact"][3], rel=1e-5)  # later steps: the weights moved


def test_a_resumed_run_gives_the_same_weights_as_an_uninterrupted_one(tmp_path, monkeypatch):
    data = _data()
    cfg = _config(epochs=4, denominator_refresh=3)
    full = train(cfg, tmp_path / "full", data=data, verbose=False)
    real_append = trainer_module.append_row

    def stop_after_epoch_2(stem, row, **kw):
        real_append(stem, row, **kw)
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "append_row", stop_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=data, verbose=False)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert saved["extra"][CHECKPOINT_KEY].shape == (len(data.train), 10, 3)
    seen = _record_refreshes(monkeypatch)
    resumed = train(cfg, tmp_path / "cut", data=data, verbose=False)
    assert resumed.resumed_from == 2
    assert [(e, did) for e, did, _ in seen] == [(3, False), (4, True)]  # epoch 3 reads the saved table of epoch 1
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert json.loads((tmp_path / "full" / "config.json").read_text())["denominator_refresh"] == 3

    with pytest.raises(ValueError, match=r"denominator_refresh: 3 \(saved\) != 2 \(now\)"):
        train(_config(epochs=4, denominator_refresh=2), tmp_path / "full", data=data, verbose=False)
    with pytest.raises(ValueError, match=r"denominator_refresh: 3 \(saved\) != 0 \(now\)"):
        train(_config(epochs=4), tmp_path / "full", data=data, verbose=False)

    # a checkpoint without the table cannot continue at an epoch that is not due
    saved.pop("extra")
    torch.save(saved, tmp_path / "cut" / "last.pt")
    (tmp_path / "cut" / "results.json").unlink()
    with pytest.raises(ValueError, match="computed at the start of epoch 1.*holds no 'margin_denominators' table"):
        train(cfg, tmp_path / "cut", data=data, verbose=False)


def test_an_old_config_without_the_key_means_no_cache():
    old = {k: v for k, v in _config().to_dict().items() if k != "denominator_refresh"}
    assert TrainConfig.from_dict(old).denominator_refresh == 0
    assert config_differences(old, _config().to_dict()) == {}
    assert config_differences(old, _config(denominator_refresh=2).to_dict()) == {"denominator_refresh": (0, 2)}


@pytest.mark.parametrize("fields, match", [
    ({"loss": "ce"}, "0 with loss 'ce'.*loss='margin'"),
    ({"approximate": False}, "0 with approximate=False"),
    ({"exact_per_sample": True}, "0 with exact_per_sample=True"),
    ({"augment": "crop"}, "0 with augment='crop'"),
    ({"adv_train": "fgsm"}, "0 with adv_train='fgsm'"),
    ({"denominator_refresh": -1}, "an int >= 0"),
    ({"denominator_refresh": 1.5}, "an int >= 0"),
    ({"denominator_refresh": True}, "an int >= 0"),
])
def test_refused_combinations_say_why(fields, match):
    kwargs = {"loss": "margin", "denominator_refresh": 2, **fields}
    if kwargs["loss"] == "ce":
        kwargs = {"loss": "ce", "denominator_refresh": 2}
    with pytest.raises(ValueError, match=r"The 'denominator_refresh' parameter of TrainConfig must be " + match):
        TrainConfig(**kwargs)


def test_the_cli_option(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["-q", "train", "--preset", "margin-l2", "--model", "mlp", "--train-fraction", "0.1", "--epochs", "2",
                 "--denominator-refresh", "2", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["denominator_refresh"] == 2
    assert main(["-q", "train", "--loss", "ce", "--denominator-refresh", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "'denominator_refresh'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-q", "train", "--preset", "margin-l2", "--denominator-refresh", "-1", "--out", str(tmp_path / "b")])
    assert "--denominator-refresh: must be an int >= 0" in capsys.readouterr().err


def test_the_cache_rows_follow_the_sample_indices():
    """The step reads the rows of the batch's indices: a table of the shuffled samples gives the same loss."""
    model = _cnn()
    x, y = _batch(n=20)
    cfg = TrainConfig(dataset="digits", loss="margin", gamma=1.0, top_k=9, denominator_refresh=1)
    criterion = margin_criterion(cfg, model, LAYERS)
    cache = DenominatorCache(criterion, criterion, every=1, num_samples=20)
    cache.refresh(model, x, y, batch_size=7)
    torch.testing.assert_close(cache.table, criterion.rival_grad_norms(x, y), rtol=1e-12, atol=1e-14)  # float64 kept
    idx = torch.tensor([13, 2, 7, 19, 0])
    loss, _ = cache.step(x[idx], y[idx], idx)
    exact, _ = criterion(x[idx], y[idx])
    torch.testing.assert_close(loss, exact, rtol=1e-10, atol=1e-12)
    wrong, _ = cache.step(x[idx], y[idx], idx.flip(0))
    assert not torch.allclose(wrong, exact)
    assert model.training  # the refresh ran in eval mode and restored the mode


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available in this build")
@pytest.mark.slow  # a subprocess run (torchrun or a whole study); in the full suite, not the fast lane
def test_two_processes_with_the_cache_train_the_same_model_as_one(tmp_path):
    from test_distributed import _close, _rows, _torchrun

    args = ["train", "--model", "mlp", "--train-fraction", "0.5", "--batch-size", "50", "--seed", "3",
            "--preset", "margin-l2", "--denominator-refresh", "2", "--epochs", "3"]
    _torchrun([*args, "--out", str(tmp_path / "ddp")])
    assert main(["-q", *args, "--out", str(tmp_path / "one")]) == 0
    _close(tmp_path / "ddp", tmp_path / "one")
    ddp, one = _rows(tmp_path / "ddp"), _rows(tmp_path / "one")
    assert [r["train_acc"] for r in ddp] == [r["train_acc"] for r in one]
    assert [r["train_loss"] for r in ddp] == pytest.approx([r["train_loss"] for r in one], rel=1e-5)
