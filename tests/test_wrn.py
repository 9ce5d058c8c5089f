"""The wide residual network: shapes, a parameter count by hand, named layers the margin loss can capture, training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from deepmargin.capture import ActivationCapture, list_layers
from deepmargin.losses import LargeMarginLoss, linearized_distances
from deepmargin.models import MODELS, WideResNet, build_model, model_options
from deepmargin.training import TrainConfig, default_margin_layers, train


def _blocks(depth: int) -> list[str]:
    n = (depth - 4) // 6
    return [f"block{g}_{k}" for g in (1, 2, 3) for k in range(1, n + 1)]


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8), (8, 8), (2, 5, 9)])
@pytest.mark.parametrize(("depth", "width"), [(10, 1), (10, 2), (16, 1), (16, 2)])
def test_output_shape_and_layer_lists(shape, depth, width):
    model = build_model("wrn", num_classes=7, input_shape=shape, depth=depth, width=width)
    x = torch.rand(3, *shape)
    h, w = shape[-2:]
    with ActivationCapture(model, ["block1_1", "block2_1", "block3_1", "relu_out", "pool"]) as cap:
        assert model(x).shape == (3, 7)
        shapes = {k: tuple(v.shape) for k, v in cap.activations.items()}
    h2, w2 = (h + 1) // 2, (w + 1) // 2  # 3x3 convolutions with stride 2 and padding 1
    h3, w3 = (h2 + 1) // 2, (w2 + 1) // 2
    assert shapes == {
        "block1_1": (3, 16 * width, h, w), "block2_1": (3, 32 * width, h2, w2), "block3_1": (3, 64 * width, h3, w3),
        "relu_out": (3, 64 * width, h3, w3), "pool": (3, 64 * width, 1, 1),
    }
    blocks = _blocks(depth)
    assert model.hidden_layers == (*blocks, "relu_out")
    n = (depth - 4) // 6
    assert model.margin_layers == ["input", f"block1_{n}", f"block2_{n}", f"block3_{n}", "fc"]


def test_registry_and_defaults():
    assert "wrn" in MODELS
    assert set(model_options("wrn")) == {"depth", "width", "dropout", "batch_norm"}
    model = build_model("wrn", num_classes=10, input_shape=[3, 32, 32])
    assert isinstance(model, WideResNet)
    names = [n for n, _ in model.named_modules()][1:]
    top = [n for n in names if "." not in n]
    assert top == ["conv_in", "block1_1", "block2_1", "block3_1", "bn_out", "relu_out", "pool", "flatten", "fc"]
    assert [n for n in names if n.startswith("block2_1.")] == [
        "block2_1.bn1", "block2_1.relu1", "block2_1.conv1", "block2_1.bn2", "block2_1.relu2", "block2_1.conv2",
        "block2_1.shortcut",
    ]
    assert "block1_1.shortcut" not in names  # 16 -> 16 channels, stride 1: identity shortcut
    assert (model.conv_in.in_channels, model.conv_in.out_channels, model.conv_in.kernel_size) == (3, 16, (3, 3))
    assert model.block2_1.conv1.stride == (2, 2) and model.block2_1.shortcut.kernel_size == (1, 1)
    assert (model.fc.in_features, model.fc.out_features) == (64, 10)
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def _count_by_hand(c: int, depth: int, k: int, classes: int, batch_norm: bool = True) -> int:
    """Parameters of WRN-depth-k, from the architecture: with batch norm the convolutions have no
    bias and every BN has 2 parameters per channel; without, the convolutions have biases."""
    n = (depth - 4) // 6
    bn = (lambda ch: 2 * ch) if batch_norm else (lambda ch: 0)
    bias = (lambda ch: 0) if batch_norm else (lambda ch: ch)
    total = c * 16 * 9 + bias(16)  # input convolution
    cin = 16
    for group in (1, 2, 3):
        cout = 16 * k * 2 ** (group - 1)
        for block in range(n):
            stride = 2 if group > 1 and block == 0 else 1
            total += bn(cin) + cin * cout * 9 + bias(cout)  # bn1, conv1
            total += bn(cout) + cout * cout * 9 + bias(cout)  # bn2, conv2
            if cin != cout or stride != 1:
                total += cin * cout + bias(cout)  # 1x1 shortcut
            cin = cout
    return total + bn(cin) + cin * classes + classes  # bn_out, fc


@pytest.mark.parametrize(("depth", "width", "batch_norm"), [(10, 1, True), (16, 4, True), (16, 2, False), (22, 2, True)])
def test_parameter_count_matches_the_architecture(depth, width, batch_norm):
    model = WideResNet(num_classes=10, input_shape=(3, 32, 32), depth=depth, width=width, batch_norm=batch_norm)
    assert sum(p.numel() for p in model.parameters()) == _count_by_hand(3, depth, width, 10, batch_norm)


def test_parameter_counts_of_the_wrn_paper():
    assert _count_by_hand(3, 10, 1, 10) == 77_850
    assert 2.7e6 < _count_by_hand(3, 16, 4, 10) < 2.8e6  # WRN-16-4: 2.7M in Zagoruyko & Komodakis, Table 4
    assert sum(p.numel() for p in WideResNet(depth=16, width=4).parameters()) == 2_748_890


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_hidden_and_margin_layer_is_captured_once_unmodified(batch_norm, mode):
    model = WideResNet(num_classes=5, input_shape=(3, 12, 12), depth=16, width=1, batch_norm=batch_norm, dropout=0.2)
    model.train(mode == "train")
    modules = dict(model.named_modules())
    names = list(dict.fromkeys([*model.hidden_layers, *[n for n in model.margin_layers if n != "input"]]))
    assert set(names) <= set(list_layers(model)) and all(n in modules for n in names)
    assert model.margin_layers[0] == "input" and len(model.margin_layers) == 5
    calls = {n: 0 for n in names}
    handles = [modules[n].register_forward_hook(lambda *_a, n=n: calls.__setitem__(n, calls[n] + 1)) for n in names]
    try:
        with ActivationCapture(model, names) as cap:  # raises if a layer runs twice in one pass
            model(torch.rand(4, 3, 12, 12))
            cap.check_unmodified()  # raises if an output was changed in place afterwards
            assert set(cap.activations) == set(names)
            # the residual sums are new tensors: no two blocks share their output
            blocks = [cap.activations[n] for n in model.hidden_layers[:-1]]
            assert len({t.data_ptr() for t in blocks}) == len(blocks)
    finally:
        for h in handles:
            h.remove()
    assert set(calls.values()) == {1}


def test_margin_on_the_logits_layer_uses_the_gradient_e_y_minus_e_i():
    torch.manual_seed(0)
    model = WideResNet(num_classes=4, input_shape=(1, 8, 8)).eval()
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    with ActivationCapture(model, ["fc"]) as cap:
        logits = model(x)
        fc = cap.activations["fc"]
    assert fc is logits
    i = (logits.detach() - 1e9 * nn.functional.one_hot(y, 4)).argmax(dim=1)
    diff = logits.gather(1, y[:, None]) - logits.gather(1, i[:, None])
    (grad,) = torch.autograd.grad(diff.sum(), fc, retain_graph=True)
    torch.testing.assert_close(grad, nn.functional.one_hot(y, 4).float() - nn.functional.one_hot(i, 4).float())
    for norm, dual in ((2, math.sqrt(2)), (math.inf, 2.0), (1, 1.0)):
        (d,) = linearized_distances(logits, y, [fc], norm=norm, epsilon=1e-12)
        torch.testing.assert_close(d[:, 0], diff.detach()[:, 0] / dual)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_margin_loss_on_margin_layers_reaches_every_parameter(mode):
    torch.manual_seed(0)
    model = WideResNet(num_classes=5, input_shape=(3, 12, 12), depth=10, width=1, dropout=0.1)
    assert default_margin_layers(model) == model.margin_layers
    x, y = torch.rand(6, 3, 12, 12), torch.randint(0, 5, (6,))
    model.train(mode == "train")
    for norm in (1, 2, math.inf):
        model.zero_grad(set_to_none=True)
        # gamma large enough that every sample and layer is inside the margin (all terms active)
        loss, logits = LargeMarginLoss(model, model.margin_layers, gamma=1e4, norm=norm, top_k=4, ce_weight=0.1)(x, y)
        assert logits.shape == (6, 5) and torch.isfinite(loss)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_exact_per_sample_margins():
    torch.manual_seed(1)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    plain = WideResNet(num_classes=4, input_shape=(1, 8, 8), batch_norm=False)
    for mode in (True, False):
        plain.train(mode)
        batch = LargeMarginLoss(plain, plain.margin_layers, gamma=10.0, top_k=2)(x, y)[0]
        exact = LargeMarginLoss(plain, plain.margin_layers, gamma=10.0, top_k=2, exact_per_sample=True)(x, y)[0]
        torch.testing.assert_close(batch, exact)  # no batch norm: the batch gradient is per-sample already
    exact.backward()
    assert all(torch.isfinite(p.grad).all() for p in plain.parameters())
    bn = WideResNet(num_classes=4, input_shape=(1, 8, 8)).train()  # batch norm couples the samples
    loss = LargeMarginLoss(bn, bn.margin_layers, gamma=10.0, top_k=2, exact_per_sample=True)(x, y)[0]
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in bn.parameters())


def test_dropout_and_batch_norm_options():
    names = lambda m: [n for n, _ in m.named_modules()]  # noqa: E731
    plain = WideResNet(depth=16)
    with_dropout = WideResNet(depth=16, dropout=0.3)
    drops = [n for n, m in with_dropout.named_modules() if isinstance(m, nn.Dropout)]
    assert drops == [f"{b}.dropout" for b in _blocks(16)]  # one per block, before its conv2
    assert all(m.p == 0.3 for m in with_dropout.modules() if isinstance(m, nn.Dropout))
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules()) and "block1_1.dropout" not in names(plain)
    assert set(names(with_dropout)) - set(names(plain)) == set(drops)

    bns = [n for n, m in plain.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns == [f"{b}.{k}" for b in _blocks(16) for k in ("bn1", "bn2")] + ["bn_out"]
    assert all(m.bias is None for m in plain.modules() if isinstance(m, nn.Conv2d))
    no_bn = WideResNet(depth=16, batch_norm=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in no_bn.modules())
    assert names(no_bn) == names(plain)  # the same names, identities in place of the batch norms
    assert all(isinstance(dict(no_bn.named_modules())[n], nn.Identity) for n in bns)
    assert all(m.bias is not None for m in no_bn.modules() if isinstance(m, nn.Conv2d))
    x = torch.rand(2, 3, 32, 32)
    no_bn.train()
    torch.testing.assert_close(no_bn(x), no_bn.eval()(x), rtol=0, atol=0)  # nothing depends on the mode


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"depth": 12}, ValueError, r"'depth' parameter of WideResNet must be an int 6n \+ 4 >= 10.*Got 12"),
        ({"depth": 4}, ValueError, r"'depth' parameter of WideResNet.*Got 4"),
        ({"depth": 16.0}, ValueError, r"'depth' parameter of WideResNet"),
        ({"depth": True}, ValueError, r"'depth' parameter of WideResNet"),
        ({"width": 0}, ValueError, r"'width' parameter of WideResNet must be an int >= 1. Got 0"),
        ({"width": 1.5}, ValueError, r"'width' parameter of WideResNet"),
        ({"input_shape": (3, 3, 32)}, ValueError, r"'input_shape' parameter of WideResNet.*H, W >= 4"),
        ({"input_shape": (3072,)}, ValueError, r"'input_shape' parameter of WideResNet.*\(C, H, W\) or \(H, W\)"),
        ({"input_shape": (1, 3, 32, 32)}, ValueError, r"'input_shape' parameter of WideResNet"),
        ({"dropout": 1.0}, ValueError, r"'dropout' parameter of WideResNet"),
        ({"batch_norm": 1}, TypeError, r"'batch_norm' parameter of WideResNet must be a bool"),
        ({"num_classes": 1}, ValueError, r"'num_classes' parameter of WideResNet"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        WideResNet(**kwargs)


def test_bad_arguments_through_the_registry():
    with pytest.raises(ValueError, match=r"'depth' parameter of WideResNet"):
        build_model("wrn", num_classes=10, input_shape=(3, 32, 32), depth=11)
    with pytest.raises(TypeError, match=r"must be among"):
        build_model("wrn", num_classes=10, input_shape=(3, 32, 32), hidden_sizes=(4,))


def test_training_resolves_the_margin_layers(tmp_path):
    config = TrainConfig(dataset="digits", model="wrn", model_kwargs={"depth": 10, "width": 1}, loss="margin", top_k=2,
                         epochs=1, train_fraction=0.2, batch_size=32, ce_weight=0.1)
    result = train(config, tmp_path / "run", verbose=False, progress=False)
    expected = ["input", "block1_1", "block2_1", "block3_1", "fc"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["layers"] == summary["config"]["layers"] == result.config["layers"] == expected
    assert math.isfinite(result.history[0]["train_loss"]) and 0.0 <= result.test_acc <= 1.0
    assert isinstance(result.model, WideResNet)
