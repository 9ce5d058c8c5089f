"""The helpers every subpackage shares: ``capture.eval_mode``, ``checks.param_error``, and the models' ``lipschitz_structure()``."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch
from torch import nn

import deepmargin.metrics.lipschitz as lipschitz
from deepmargin.capture import eval_mode
from deepmargin.checks import param_error
from deepmargin.metrics import lipschitz_upper_bound
from deepmargin.models import MLP, MODELS, build_model
from deepmargin.models._flat import FlatImageModel
from deepmargin.models.structure import BranchSum, Chain
from deepmargin.models.wrn import PreActBlock

# --------------------------------------------------------------------------- eval_mode


def test_eval_mode_restores_each_submodule_own_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Sequential(nn.Dropout(), nn.Linear(2, 2))).train()
    model[1].eval()  # statistics frozen inside a training model
    model[2][0].eval()
    before = [m.training for m in model.modules()]
    with eval_mode(model) as inside:
        assert inside is model
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before


def test_eval_mode_restores_the_modes_when_the_block_raises():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert all(m.training for m in model.modules())


def test_eval_mode_of_the_attacks_is_the_shared_one():
    from deepmargin.attacks import _base

    assert _base.eval_mode is eval_mode


# --------------------------------------------------------------------------- param_error


@pytest.mark.parametrize(
    ("args", "exc", "text"),
    [
        (("large_margin_loss", "top_k", "an int in [1, num_classes - 1]", 12), ValueError,
         "The 'top_k' parameter of large_margin_loss must be an int in [1, num_classes - 1]. Got 12 instead."),
        (("f", "x", "a tensor", "list"), ValueError, "The 'x' parameter of f must be a tensor. Got 'list' instead."),
        (("MLP", "dropout", "a float", None, TypeError), TypeError,
         "The 'dropout' parameter of MLP must be a float. Got None instead."),
    ],
)
def test_param_error_text(args, exc, text):
    error = param_error(*args)
    assert type(error) is exc and str(error) == text


def test_the_losses_and_lipschitz_use_the_one_template():
    from deepmargin.losses import _checks

    assert _checks.param_error is param_error
    assert lipschitz.param_error is param_error


def test_checks_imports_nothing_from_the_package():
    tree = ast.parse(inspect.getsource(__import__("deepmargin.checks", fromlist=["_"])))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not node.level and not (node.module or "").startswith("deepmargin"), ast.dump(node)


# --------------------------------------------------------------------------- lipschitz_structure()


def test_lipschitz_names_no_model_class():
    tree = ast.parse(inspect.getsource(lipschitz))
    imported = {(node.level, node.module) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    from_models = {module for level, module in imported if level == 2 and (module or "").startswith("models")}
    assert from_models == {"models.structure"}
    private = {module for level, module in imported if level and any(p.startswith("_") for p in (module or "").split("."))}
    assert not private


@pytest.mark.parametrize("name", MODELS)
def test_every_bundled_model_describes_itself(name):
    shape = {"mnist_cnn": (28, 28), "lenet5": (1, 28, 28), "mlp3x1000": (1, 28, 28)}.get(name, (3, 8, 8))
    kwargs = {"depth": 10, "width": 1} if name == "wrn" else {}
    model = build_model(name, num_classes=10, input_shape=shape, **kwargs)
    structure = model.lipschitz_structure()
    assert isinstance(structure, Chain)
    assert lipschitz_upper_bound(model, shape, iterations=5) > 0


def test_a_flat_model_on_2d_inputs_adds_the_channel_axis_first():
    model = build_model("mnist_cnn", num_classes=10, input_shape=(28, 28))
    first = model.lipschitz_structure().stages[0]
    x = torch.randn(2, 28, 28)
    assert isinstance(first, nn.Unflatten) and torch.equal(first(x), x.unsqueeze(1))
    assert not any(isinstance(s, nn.Unflatten) for s in build_model(
        "mnist_cnn", num_classes=10, input_shape=(1, 28, 28)).lipschitz_structure().stages)


@pytest.mark.parametrize(("c_in", "c_out", "stride", "top"), [(4, 4, 1, BranchSum), (4, 8, 2, Chain)])
def test_the_residual_block_describes_its_shortcut(c_in, c_out, stride, top):
    block = PreActBlock(c_in, c_out, stride, dropout=0.0, batch_norm=True)
    assert isinstance(block.lipschitz_structure(), top)


@pytest.mark.parametrize("base", [MLP, FlatImageModel, PreActBlock])
def test_a_subclass_with_its_own_forward_does_not_inherit_the_description(base):
    class Custom(base):
        def forward(self, x):
            return super().forward(x)

    model = (
        Custom(num_classes=3, input_shape=(2,)) if base is MLP
        else Custom(4, 4, 1, 0.0, False) if base is PreActBlock
        else Custom()
    )
    assert model.lipschitz_structure() is None
