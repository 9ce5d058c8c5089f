"""Model zoo: shapes, layer names, options and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepmargin.capture import ActivationCapture, list_layers
from deepmargin.models import MLP, MODELS, DigitsCNN, MnistCNN, build_model, model_options

DEFAULT_SHAPES = {"mnist_cnn": (1, 28, 28), "digits_cnn": (1, 8, 8), "mlp": (1, 8, 8), "wrn": (3, 16, 16),
                  "lenet5": (1, 28, 28), "mlp3x1000": (1, 28, 28)}
#: The models whose hidden layers are ReLU modules (the wide ResNet's are its residual blocks: tests/test_wrn.py).
RELU_MODELS = [m for m in MODELS if m != "wrn"]


@pytest.mark.parametrize("name", RELU_MODELS)
@pytest.mark.parametrize("num_classes", [2, 7])
def test_output_shape_and_hidden_layers(name, num_classes):
    shape = DEFAULT_SHAPES[name]
    model = build_model(name, num_classes=num_classes, input_shape=shape)
    x = torch.rand(5, *shape)
    assert model(x).shape == (5, num_classes)
    modules = dict(model.named_modules())
    assert model.hidden_layers, "every zoo model lists its hidden layers"
    for layer in model.hidden_layers:
        assert isinstance(modules[layer], nn.ReLU)
        assert not modules[layer].inplace
    # every activation module is its own instance, so a hook sees one tensor per forward pass
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len({id(m) for m in relus}) == len(relus) == len(model.hidden_layers)
    assert set(model.hidden_layers) <= set(list_layers(model))


def test_mnist_cnn_matches_the_paper_architecture():
    model = build_model("mnist_cnn", num_classes=10, input_shape=(1, 28, 28))
    names = [n for n, _ in model.named_modules()][1:]
    assert names == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2"]
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size, model.conv1.padding) == (1, 32, (5, 5), (2, 2))
    assert (model.conv2.out_channels, model.conv2.kernel_size, model.conv2.padding) == (64, (5, 5), (2, 2))
    assert (model.fc1.in_features, model.fc1.out_features, model.fc2.out_features) == (64 * 7 * 7, 512, 10)
    expected = (25 * 32 + 32) + (32 * 25 * 64 + 64) + (3136 * 512 + 512) + (512 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("hw", [(28, 28), (29, 31), (4, 9)])
def test_mnist_cnn_any_image_size(hw):
    h, w = hw
    model = build_model("mnist_cnn", num_classes=3, input_shape=(2, h, w), width=4, fc_width=8)
    assert model.fc1.in_features == 8 * (h // 4) * (w // 4)
    with ActivationCapture(model, ["relu1", "relu2", "relu3"]) as cap:
        out = model(torch.rand(2, 2, h, w))
        shapes = {k: tuple(v.shape) for k, v in cap.activations.items()}
    assert out.shape == (2, 3)
    assert shapes == {"relu1": (2, 4, h, w), "relu2": (2, 8, h // 2, w // 2), "relu3": (2, 8)}


def test_digits_cnn_layers_and_shapes():
    model = build_model("digits_cnn", num_classes=10, input_shape=(1, 8, 8))
    with ActivationCapture(model, ["conv1", "relu2", "pool2", "fc1"]) as cap:
        model(torch.rand(3, 1, 8, 8))
        shapes = {k: tuple(v.shape) for k, v in cap.activations.items()}
    assert shapes == {"conv1": (3, 16, 8, 8), "relu2": (3, 32, 8, 8), "pool2": (3, 32, 4, 4), "fc1": (3, 64)}


def test_two_dimensional_input_shape_adds_the_channel_axis():
    a = build_model("digits_cnn", num_classes=4, input_shape=(8, 8))
    b = build_model("digits_cnn", num_classes=4, input_shape=(1, 8, 8))
    b.load_state_dict(a.state_dict())
    x = torch.rand(6, 8, 8)
    torch.testing.assert_close(a(x), b(x.unsqueeze(1)), rtol=0, atol=0)


def test_mlp_names_and_widths():
    model = build_model("mlp", num_classes=3, input_shape=(2,), hidden_sizes=[5, 7], dropout=0.25, batch_norm=True)
    names = [n for n, _ in model.named_modules()][1:]
    assert names == ["flatten", "fc1", "bn1", "relu1", "drop1", "fc2", "bn2", "relu2", "drop2", "fc3"]
    assert [(m.in_features, m.out_features) for m in (model.fc1, model.fc2, model.fc3)] == [(2, 5), (5, 7), (7, 3)]
    assert model.hidden_layers == ("relu1", "relu2")


def test_mlp_without_hidden_layers_is_linear():
    model = build_model("mlp", num_classes=3, input_shape=(1, 2, 2), hidden_sizes=())
    x = torch.randn(4, 1, 2, 2)
    expected = x.flatten(1) @ model.fc1.weight.T + model.fc1.bias
    torch.testing.assert_close(model(x), expected)
    assert model.hidden_layers == ()


@pytest.mark.parametrize("name", MODELS)
def test_dropout_is_active_in_training_mode_only(name):
    shape = DEFAULT_SHAPES[name]
    model = build_model(name, num_classes=5, input_shape=shape, dropout=0.5)
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    x = torch.rand(8, *shape)
    torch.manual_seed(0)
    train_a = model(x)
    train_b = model(x)
    assert not torch.equal(train_a, train_b)
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    plain = build_model(name, num_classes=5, input_shape=shape)
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())


@pytest.mark.parametrize("name", MODELS)
def test_batch_norm_option(name):
    shape = DEFAULT_SHAPES[name]
    model = build_model(name, num_classes=3, input_shape=shape, batch_norm=True)
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(n.split(".")[-1].startswith("bn") for n in bns)
    assert model(torch.rand(4, *shape)).shape == (4, 3)


def test_classes_are_exported_and_options_listed():
    assert isinstance(build_model("mnist_cnn", num_classes=10, input_shape=(1, 28, 28)), MnistCNN)
    assert isinstance(build_model("digits_cnn", num_classes=10, input_shape=(1, 8, 8)), DigitsCNN)
    assert isinstance(build_model("mlp", num_classes=10, input_shape=(64,)), MLP)
    assert set(model_options("mlp")) == {"hidden_sizes", "dropout", "batch_norm"}
    assert {"dropout", "batch_norm", "width", "fc_width"} <= set(model_options("mnist_cnn"))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(name="resnet", num_classes=10, input_shape=(1, 8, 8)), ValueError, r"'name' parameter of build_model must be one of"),
        (dict(name="mlp", num_classes=1, input_shape=(2,)), ValueError, r"'num_classes' parameter of MLP must be an int >= 2. Got 1"),
        (dict(name="mlp", num_classes=2.0, input_shape=(2,)), TypeError, r"'num_classes' parameter of MLP"),
        (dict(name="mlp", num_classes=2, input_shape=(0,)), ValueError, r"'input_shape' parameter of MLP"),
        (dict(name="mlp", num_classes=2, input_shape="28x28"), ValueError, r"'input_shape' parameter of MLP"),
        (dict(name="mnist_cnn", num_classes=2, input_shape=(1, 3, 28)), ValueError, r"H, W >= 4"),
        (dict(name="digits_cnn", num_classes=2, input_shape=(64,)), ValueError, r"\(C, H, W\) or \(H, W\)"),
        (dict(name="mlp", num_classes=2, input_shape=(2,), dropout=1.0), ValueError, r"'dropout' parameter of MLP must be a float in \[0, 1\)"),
        (dict(name="mlp", num_classes=2, input_shape=(2,), hidden_sizes=[4, 0]), ValueError, r"'hidden_sizes'"),
        (dict(name="mlp", num_classes=2, input_shape=(2,), batch_norm="yes"), TypeError, r"'batch_norm' parameter of MLP must be a bool"),
        (dict(name="mnist_cnn", num_classes=2, input_shape=(1, 28, 28), hidden_sizes=[3]), TypeError, r"must be among"),
        (dict(name="mnist_cnn", num_classes=2, input_shape=(1, 28, 28), width=0), ValueError, r"'width' parameter of MnistCNN"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        build_model(**kwargs)


def test_models_work_in_float64():
    model = build_model("digits_cnn", num_classes=3, input_shape=(1, 8, 8)).double()
    out = model(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64 and math.isfinite(out.sum().item())
