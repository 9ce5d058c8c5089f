"""The wide residual network: shapes, a parameter count by hand, named layers the margin loss can capture, training."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepmargin.capture import ActivationCapture
from deepmargin.losses import LargeMarginLoss
from deepmargin.models import WideResNet, build_model
from deepmargin.training import TrainConfig, default_margin_layers, train


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8), (8, 8)])
@pytest.mark.parametrize(("depth", "width"), [(10, 1), (16, 2)])
def test_output_shape(shape, depth, width):
    model = build_model("wrn", num_classes=7, input_shape=shape, depth=depth, width=width)
    assert model(torch.rand(3, *shape)).shape == (3, 7)
    n = (depth - 4) // 6
    assert model.hidden_layers == (*[f"block{g}_{k}" for g in (1, 2, 3) for k in range(1, n + 1)], "relu_out")
    assert model.margin_layers == ["input", f"block1_{n}", f"block2_{n}", f"block3_{n}", "fc"]


def _count_by_hand(c: int, depth: int, k: int, classes: int) -> int:
    """Parameters of WRN-depth-k with batch norm (no conv biases), from the architecture."""
    n = (depth - 4) // 6
    total = c * 16 * 9  # input convolution
    cin = 16
    for group in (1, 2, 3):
        cout = 16 * k * 2 ** (group - 1)
        for block in range(n):
            stride = 2 if group > 1 and block == 0 else 1
            total += 2 * cin + cin * cout * 9 + 2 * cout + cout * cout * 9
            if cin != cout or stride != 1:
                total += cin * cout
            cin = cout
    return total + 2 * cin + cin * classes + classes


@pytest.mark.parametrize(("depth", "width"), [(10, 1), (16, 4), (22, 2)])
def test_parameter_count_matches_the_architecture(depth, width):
    model = WideResNet(num_classes=10, input_shape=(3, 32, 32), depth=depth, width=width)
    assert sum(p.numel() for p in model.parameters()) == _count_by_hand(3, depth, width, 10)
    if (depth, width) == (16, 4):
        assert 2.7e6 < _count_by_hand(3, 16, 4, 10) < 2.8e6  # WRN-16-4: 2.7M in Zagoruyko & Komodakis


def test_margin_layers_are_captured_once_and_take_the_margin_loss():
    torch.manual_seed(0)
    model = WideResNet(num_classes=5, input_shape=(3, 12, 12), depth=10, width=1)
    names = [n for n in model.margin_layers if n != "input"]
    with ActivationCapture(model, names) as capture:
        model(torch.rand(4, 3, 12, 12))
        assert set(capture.activations) == set(names)
    assert default_margin_layers(model) == model.margin_layers
    x, y = torch.rand(6, 3, 12, 12), torch.randint(0, 5, (6,))
    for norm in (1, 2, float("inf")):
        for mode in ("train", "eval"):
            model.zero_grad()
            model.train(mode == "train")
            loss, logits = LargeMarginLoss(model, model.margin_layers, gamma=1.0, norm=norm, top_k=4)(x, y)
            loss.backward()
            assert torch.isfinite(loss)
            grads = [p.grad for p in model.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert any(g.abs().sum() > 0 for g in grads)


def test_exact_per_sample_margins_without_batch_norm():
    torch.manual_seed(1)
    model = WideResNet(num_classes=4, input_shape=(1, 8, 8), batch_norm=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    batch = LargeMarginLoss(model, model.margin_layers, gamma=1.0, top_k=2)(x, y)[0]
    exact = LargeMarginLoss(model, model.margin_layers, gamma=1.0, top_k=2, exact_per_sample=True)(x, y)[0]
    torch.testing.assert_close(batch, exact)  # no batch norm: each sample's own gradient is the batch one


def test_dropout_and_batch_norm_options():
    with_dropout = WideResNet(dropout=0.3)
    assert sum(isinstance(m, nn.Dropout) for m in with_dropout.modules()) == 3  # one per block of WRN-10
    assert not any(isinstance(m, nn.Dropout) for m in WideResNet().modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in WideResNet().modules()) == 2 * 3 + 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"depth": 12}, "'depth'.*6n \\+ 4"), ({"depth": 4}, "'depth'"), ({"width": 0}, "'width'"),
     ({"input_shape": (3, 2, 2)}, "'input_shape'"), ({"dropout": 1.0}, "'dropout'")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WideResNet(**kwargs)


def test_training_resolves_the_margin_layers(tmp_path):
    config = TrainConfig(dataset="digits", model="wrn", model_kwargs={"depth": 10, "width": 1}, loss="margin", top_k=2,
                         epochs=1, train_fraction=0.2, batch_size=32)
    result = train(config, tmp_path / "run", verbose=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["layers"] == ["input", "block1_1", "block2_1", "block3_1", "fc"]
    assert 0.0 <= result.test_acc <= 1.0 and len(result.history) == 1
