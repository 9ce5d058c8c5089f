"""LeNet-5 and the MLP 784-1000-1000-1000-10 (Matyasko & Chau 2017): shapes, parameter counts by hand, capture, training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepmargin.capture import ActivationCapture, list_layers
from deepmargin.losses import LargeMarginLoss
from deepmargin.models import MLP, MLP3x1000, MODELS, LeNet5, build_model, model_options
from deepmargin.training import TrainConfig, load_model, train

LENET_NAMES = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2", "relu4", "fc3"]


def _lenet_count_by_hand(c: int, h: int, w: int, classes: int) -> int:
    """Parameters of LeNet-5 from the architecture: padding 2 below 32 pixels, none from 32 on."""
    p = 2 if min(h, w) < 32 else 0
    side = lambda s: ((s + 2 * p - 4) // 2 - 4) // 2  # noqa: E731  conv5 -> pool2 -> conv5 -> pool2
    return (
        (c * 25 * 6 + 6) + (6 * 25 * 16 + 16)
        + (16 * side(h) * side(w) * 120 + 120) + (120 * 84 + 84) + (84 * classes + classes)
    )


@pytest.mark.parametrize(
    ("shape", "padding", "side"), [((1, 28, 28), 2, 5), ((3, 32, 32), 0, 5), ((1, 16, 16), 2, 2), ((28, 28), 2, 5)]
)
def test_lenet_output_shapes_and_geometry(shape, padding, side):
    model = build_model("lenet5", num_classes=10, input_shape=shape)
    assert isinstance(model, LeNet5)
    assert [n for n, _ in model.named_modules()][1:] == LENET_NAMES
    assert model.conv1.padding == (padding, padding) and model.conv2.padding == (0, 0)
    assert (model.conv1.out_channels, model.conv2.out_channels) == (6, 16)
    assert (model.fc1.in_features, model.fc1.out_features, model.fc2.out_features, model.fc3.out_features) == (
        16 * side * side, 120, 84, 10,
    )
    with ActivationCapture(model, ["pool2"]) as cap:
        assert model(torch.rand(3, *shape)).shape == (3, 10)
        assert tuple(cap.activations["pool2"].shape) == (3, 16, side, side)


def test_lenet_parameter_count_by_hand():
    # classic LeNet-5 on 1x32x32: 156 + 2416 + 48120 + 10164 + 850
    assert _lenet_count_by_hand(1, 32, 32, 10) == 61_706
    assert sum(p.numel() for p in LeNet5(num_classes=10, input_shape=(1, 32, 32)).parameters()) == 61_706
    # 28x28 with padding 2 keeps the classic geometry, hence the same count
    assert sum(p.numel() for p in LeNet5(num_classes=10, input_shape=(1, 28, 28)).parameters()) == 61_706
    for shape in ((3, 32, 32), (1, 16, 16), (2, 17, 40)):
        model = LeNet5(num_classes=7, input_shape=shape)
        assert sum(p.numel() for p in model.parameters()) == _lenet_count_by_hand(*shape, 7)
        assert model(torch.rand(2, *shape)).shape == (2, 7)


def test_lenet_options():
    assert set(model_options("lenet5")) == {"dropout", "batch_norm"}
    model = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28), dropout=0.5, batch_norm=True)
    names = [n for n, _ in model.named_modules()][1:]
    assert names == [
        "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2", "flatten",
        "fc1", "bn3", "relu3", "fc2", "bn4", "relu4", "dropout", "fc3",
    ]
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.bn4, nn.BatchNorm1d) and model.dropout.p == 0.5
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_mlp3x1000_registry_and_parameter_count():
    assert {"lenet5", "mlp3x1000"} <= set(MODELS)
    assert set(model_options("mlp3x1000")) == {"dropout", "batch_norm"}
    model = build_model("mlp3x1000", num_classes=10, input_shape=(1, 28, 28))
    assert isinstance(model, MLP3x1000) and isinstance(model, MLP)
    assert [n for n, _ in model.named_modules()][1:] == [
        "flatten", "fc1", "relu1", "fc2", "relu2", "fc3", "relu3", "fc4",
    ]
    assert model.hidden_layers == ("relu1", "relu2", "relu3")
    expected = 784 * 1000 + 1000 + 2 * (1000 * 1000 + 1000) + 1000 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == expected == 2_797_010
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(TypeError, match=r"must be among"):
        build_model("mlp3x1000", num_classes=10, input_shape=(1, 28, 28), hidden_sizes=(5,))


@pytest.mark.parametrize(("name", "shape"), [("lenet5", (1, 28, 28)), ("mlp3x1000", (1, 28, 28))])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_hidden_layers_captured_once_and_margin_loss_backprops(name, shape, batch_norm):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, input_shape=shape, batch_norm=batch_norm, dropout=0.1)
    modules = dict(model.named_modules())
    assert set(model.hidden_layers) <= set(list_layers(model))
    assert all(isinstance(modules[n], nn.ReLU) and not modules[n].inplace for n in model.hidden_layers)
    calls = {n: 0 for n in model.hidden_layers}
    handles = [modules[n].register_forward_hook(lambda *_a, n=n: calls.__setitem__(n, calls[n] + 1))
               for n in model.hidden_layers]
    x, y = torch.rand(6, *shape), torch.randint(0, 10, (6,))
    try:
        with ActivationCapture(model, list(model.hidden_layers)) as cap:  # raises if a layer runs twice
            model(x)
            cap.check_unmodified()
            assert set(cap.activations) == set(model.hidden_layers)
    finally:
        for h in handles:
            h.remove()
    assert set(calls.values()) == {1}

    layers = ["input", *model.hidden_layers]
    for norm in (1, 2, math.inf):
        model.zero_grad(set_to_none=True)
        loss, logits = LargeMarginLoss(model, layers, gamma=1e4, norm=norm, top_k=3, ce_weight=0.1)(x, y)
        assert logits.shape == (6, 10) and torch.isfinite(loss)
        loss.backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize(
    ("name", "kwargs", "exc", "match"),
    [
        ("lenet5", dict(input_shape=(1, 8, 8)), ValueError, r"'input_shape' parameter of LeNet5 must be \(C, H, W\) or \(H, W\) with H, W >= 16. Got \(1, 8, 8\)"),
        ("lenet5", dict(input_shape=(1, 15, 28)), ValueError, r"'input_shape' parameter of LeNet5.*H, W >= 16"),
        ("lenet5", dict(input_shape=(784,)), ValueError, r"'input_shape' parameter of LeNet5"),
        ("lenet5", dict(input_shape=(1, 1, 28, 28)), ValueError, r"'input_shape' parameter of LeNet5"),
        ("lenet5", dict(input_shape=(1, 0, 28)), ValueError, r"'input_shape' parameter of LeNet5"),
        ("lenet5", dict(num_classes=1), ValueError, r"'num_classes' parameter of LeNet5 must be an int >= 2"),
        ("lenet5", dict(dropout=1.0), ValueError, r"'dropout' parameter of LeNet5"),
        ("lenet5", dict(batch_norm=1), TypeError, r"'batch_norm' parameter of LeNet5 must be a bool"),
        ("mlp3x1000", dict(input_shape=(0,)), ValueError, r"'input_shape' parameter of MLP3x1000"),
        ("mlp3x1000", dict(num_classes=1), ValueError, r"'num_classes' parameter of MLP3x1000"),
        ("mlp3x1000", dict(dropout=-0.1), ValueError, r"'dropout' parameter of MLP3x1000"),
    ],
)
def test_bad_arguments(name, kwargs, exc, match):
    full = {"num_classes": 10, "input_shape": (1, 28, 28), **kwargs}
    with pytest.raises(exc, match=match):
        build_model(name, **full)


def test_train_mlp3x1000_on_digits_and_reload(tmp_path):
    result = train(TrainConfig(dataset="digits", model="mlp3x1000", epochs=1, train_fraction=0.2), tmp_path,
                   verbose=False, progress=False)
    assert math.isfinite(result.history[0]["train_loss"]) and 0.0 <= result.test_acc <= 1.0
    model, meta = load_model(tmp_path / "best.pt")
    assert isinstance(model, MLP3x1000) and meta["model_name"] == "mlp3x1000"
    assert meta["model_kwargs"] == {"num_classes": 10, "input_shape": [1, 8, 8]}
    assert [(m.in_features, m.out_features) for m in (model.fc1, model.fc2, model.fc3, model.fc4)] == [
        (64, 1000), (1000, 1000), (1000, 1000), (1000, 10),
    ]
    assert [n for n, _ in model.named_modules()] == [n for n, _ in result.model.named_modules()]
    x = torch.rand(3, 1, 8, 8)
    result.model.eval()
    torch.testing.assert_close(model(x), result.model.cpu()(x))  # one epoch: best.pt is the returned model


def test_lenet_on_digits_errors_clearly(tmp_path):
    config = TrainConfig(dataset="digits", model="lenet5", epochs=1, train_fraction=0.2)
    with pytest.raises(ValueError, match=r"'input_shape' parameter of LeNet5 .*H, W >= 16. Got \(1, 8, 8\)"):
        train(config, tmp_path, verbose=False, progress=False)
