"""The package's one set of validators (``deepmargin.checks``), its reduction helper, and the one
linearised margin (``losses.large_margin.linearized_margin``)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from deepmargin import checks
from deepmargin.checks import (
    check_bool,
    check_choice,
    check_int,
    check_per_layer,
    check_real,
    check_reduction,
    param_error,
    parse_norm,
    reduce,
)
from deepmargin.losses import (
    gradient_margin_loss,
    input_gradient_loss,
    large_margin_loss,
    logit_margin_loss,
    multiclass_hinge_loss,
    vat_loss,
)
from deepmargin.losses.large_margin import linearized_distances, linearized_margin


def _raises(exc, text):
    return pytest.raises(exc, match=re.escape(text))


# --------------------------------------------------------------------------- check_int


@pytest.mark.parametrize("value", [1, 5, np.int64(3), torch.tensor(2).item()])
def test_check_int_accepts_ints_in_range(value):
    out = check_int(value, "steps", "PGD", low=1)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize(
    ("value", "exc"), [(0, ValueError), (-3, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError), (None, TypeError)]
)
def test_check_int_rejects(value, exc):
    with _raises(exc, f"The 'steps' parameter of PGD must be an int >= 1. Got {value!r} instead."):
        check_int(value, "steps", "PGD", low=1)


def test_check_int_interval_type_exc_and_expected():
    assert check_int(4, "k", "f", low=1, high=4) == 4
    with _raises(ValueError, "The 'k' parameter of f must be an int in [1, 4]. Got 5 instead."):
        check_int(5, "k", "f", low=1, high=4)
    with _raises(ValueError, "The 'k' parameter of f must be an int >= 0. Got 0.5 instead."):
        check_int(0.5, "k", "f", low=0, type_exc=ValueError)
    with _raises(TypeError, "The 'seed' parameter of f must be a non-negative int. Got 'a' instead."):
        check_int("a", "seed", "f", low=0, expected="a non-negative int")
    assert check_int(-7, "offset", "f") == -7  # no bounds: any int


# --------------------------------------------------------------------------- check_real


@pytest.mark.parametrize(
    ("kwargs", "value"),
    [({"low": 0}, 0), ({"low": 0, "low_open": True}, 1e-12), ({"low": 0, "high": 1, "high_open": True}, 0.0),
     ({"low": 0, "high": 1}, 1), ({"finite": False, "low": 0}, math.inf), ({}, np.float32(-2.5))],
)
def test_check_real_accepts(kwargs, value):
    out = check_real(value, "x", "f", **kwargs)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize(
    ("kwargs", "value", "exc", "expected"),
    [
        ({"low": 0}, -0.1, ValueError, "a finite float >= 0"),
        ({"low": 0.0, "low_open": True}, 0.0, ValueError, "a finite float > 0.0"),  # low quoted as given
        ({"low": 0, "high": 1, "high_open": True}, 1.0, ValueError, "a float in [0, 1)"),
        ({"low": 0, "high": 1, "low_open": True, "high_open": True}, 0, ValueError, "a float in (0, 1)"),
        ({"low": 0}, math.inf, TypeError, "a finite float >= 0"),
        ({"low": 0}, math.nan, TypeError, "a finite float >= 0"),
        ({"low": 0}, True, TypeError, "a finite float >= 0"),
        ({"low": 0}, "1", TypeError, "a finite float >= 0"),
        ({"low": 0, "finite": False}, -math.inf, ValueError, "a float >= 0"),
        ({"high": 2}, 3, ValueError, "a finite float <= 2"),
    ],
)
def test_check_real_rejects(kwargs, value, exc, expected):
    with _raises(exc, f"The 'x' parameter of f must be {expected}. Got {value!r} instead."):
        check_real(value, "x", "f", **kwargs)


def test_check_real_expected_and_type_exc():
    with _raises(ValueError, "The 'margin' parameter of hinge must be a number > 0. Got nan instead."):
        check_real(math.nan, "margin", "hinge", low=0, low_open=True, expected="a number > 0", type_exc=ValueError)
    with _raises(ValueError, "The 'margin' parameter of hinge must be a number > 0. Got -1 instead."):
        check_real(-1, "margin", "hinge", low=0, low_open=True, expected="a number > 0")


# --------------------------------------------------------------------------- check_bool, check_choice


def test_check_bool():
    assert check_bool(False, "clip", "f") is False
    for bad in (0, 1, "yes", None, np.bool_(True)):
        with _raises(TypeError, f"The 'clip' parameter of f must be a bool. Got {bad!r} instead."):
            check_bool(bad, "clip", "f")


def test_check_choice():
    assert check_choice("sum", "aggregation", "f", ("max", "sum")) == "sum"
    for bad in ("mean", None, 1, ["max"]):
        with _raises(ValueError, f"The 'aggregation' parameter of f must be one of ['max', 'sum']. Got {bad!r} instead."):
            check_choice(bad, "aggregation", "f", ("max", "sum"))
    with _raises(ValueError, "The 'p' parameter of f must be one of 1, 2. Got True instead."):
        check_choice(True, "p", "f", (1, 2), expected="one of 1, 2")  # a bool is not the int 1
    assert check_choice("l2", "norm", "f", {"l2": 1, "linf": 2}) == "l2"  # any collection


# --------------------------------------------------------------------------- check_per_layer


def test_check_per_layer():
    assert check_per_layer(2, "gamma", "f", 3) == [2.0, 2.0, 2.0]
    assert check_per_layer([1, 2.5], "gamma", "f", 2) == [1.0, 2.5]
    assert check_per_layer(torch.tensor([0.5, 1.0]), "gamma", "f", 2) == [0.5, 1.0]
    assert check_per_layer(0, "w", "f", 1, allow_zero=True) == [0.0]
    with _raises(ValueError, "The 'gamma' parameter of f must be a float or a sequence of 2 floats (one per layer). "
                             "Got 'a sequence of length 3' instead."):
        check_per_layer([1, 2, 3], "gamma", "f", 2)
    with _raises(ValueError, "The 'gamma' parameter of f must be a finite float > 0. Got 0.0 instead."):
        check_per_layer([1.0, 0.0], "gamma", "f", 2)
    with _raises(ValueError, "The 'gamma' parameter of f must be a number > 0. Got -1 instead."):
        check_per_layer(-1, "gamma", "f", 2, expected="a number > 0")


# --------------------------------------------------------------------------- parse_norm


@pytest.mark.parametrize(
    ("norm", "pq"),
    [(1, (1.0, math.inf)), (2, (2.0, 2.0)), (math.inf, (math.inf, 1.0)), (3, (3.0, 1.5)), (4.0, (4.0, 4 / 3)),
     ("inf", (math.inf, 1.0)), ("Linf", (math.inf, 1.0)), ("l_inf", (math.inf, 1.0)), ("l2", (2.0, 2.0)),
     ("l1", (1.0, math.inf)), (np.float64(2.0), (2.0, 2.0))],
)
def test_parse_norm_pairs(norm, pq):
    p, q = parse_norm(norm, "norm", "f")
    assert (p, q) == pq
    assert 1 / p + 1 / q == pytest.approx(1.0)


@pytest.mark.parametrize(("norm", "exc"), [(0.5, ValueError), (-math.inf, ValueError), ("two", TypeError),
                                           (True, TypeError), (math.nan, TypeError), (None, TypeError)])
def test_parse_norm_rejects(norm, exc):
    with _raises(exc, f"The 'norm' parameter of f must be a real number p >= 1 or math.inf. Got {norm!r} instead."):
        parse_norm(norm, "norm", "f")


def test_parse_norm_allowed():
    assert parse_norm("linf", "norm", "PGD", allowed=(2.0, math.inf)) == (math.inf, 1.0)
    with _raises(ValueError, "The 'norm' parameter of PGD must be one of [2.0, inf]. Got 'l1' instead."):
        parse_norm("l1", "norm", "PGD", allowed=(2.0, math.inf))
    with _raises(ValueError, "The 'norm' parameter of PGD must be one of [2.0, inf]. Got 'l3' instead."):
        parse_norm("l3", "norm", "PGD", allowed=(2.0, math.inf), type_exc=ValueError)
    with _raises(ValueError, "The 'norm' parameter of g must be one of 1, 2, math.inf. Got 3 instead."):
        parse_norm(3, "norm", "g", allowed=(1.0, 2.0, math.inf), expected="one of 1, 2, math.inf")


# --------------------------------------------------------------------------- reductions


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 4)])
def test_reduce_matches_torch(shape):
    loss = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(reduce(loss, "none"), loss)
    assert torch.equal(reduce(loss, "sum"), loss.sum())
    torch.testing.assert_close(reduce(loss, "mean"), loss.mean(), equal_nan=True)


def test_check_reduction_and_reduce_reject_unknown():
    assert check_reduction("sum", "f") == "sum"
    with _raises(ValueError, "The 'reduction' parameter of f must be one of ['none', 'mean', 'sum']. Got 'avg' instead."):
        check_reduction("avg", "f")
    with _raises(ValueError, "The 'reduction' parameter of reduce must be one of ['none', 'mean', 'sum']."):
        reduce(torch.ones(2), "avg")


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _loss_cases():
    """One call per loss: ``fn(reduction) -> loss`` on the same fixed batch."""
    model = _mlp(0)
    x = torch.rand(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0, 1])

    def with_inputs(fn, **kw):
        def call(reduction):
            xr = x.clone().requires_grad_(True)
            return fn(model(xr), y, xr, reduction=reduction, **kw)
        return call

    def large_margin(reduction):
        xr = x.clone().requires_grad_(True)
        return large_margin_loss(model(xr), y, [xr], gamma=10.0, top_k=2, reduction=reduction)

    def vat(reduction):
        return vat_loss(model, x, eps=0.5, reduction=reduction, generator=torch.Generator().manual_seed(3))

    return {
        "hinge": lambda r: multiclass_hinge_loss(model(x), y, margin=2.0, ce_weight=0.1, reduction=r),
        "large_margin": large_margin,
        "gradient_margin": with_inputs(gradient_margin_loss, C=0.5),
        "logit_margin": lambda r: logit_margin_loss(model(x), y, mu=3.0, reduction=r),
        "input_gradient": with_inputs(input_gradient_loss, eps=0.1, lipschitz=0.2),
        "vat": vat,
    }


@pytest.mark.parametrize("name", sorted(_loss_cases()))
def test_every_loss_reduces_its_none_output_with_reduce(name):
    fn = _loss_cases()[name]
    per_sample = fn("none")
    assert per_sample.shape == (5,)
    for reduction in ("mean", "sum"):
        torch.testing.assert_close(fn(reduction), reduce(per_sample, reduction), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- compatibility names


def test_old_validator_names_delegate_with_their_old_orders():
    from deepmargin.attacks import _base
    from deepmargin.data import _validation
    from deepmargin.losses import _checks
    from deepmargin.models import _checks as model_checks

    assert _checks.check_positive(2, "f", "gamma") == 2.0
    assert _checks.check_per_layer(1.0, 2, "f", "gamma") == [1.0, 1.0]
    assert _checks.dual_exponent("inf", "f") == (math.inf, 1.0)
    assert _checks.param_error is param_error and _checks.check_reduction is check_reduction
    assert _base.check_int(3, "steps", "PGD", 1) == 3
    assert _base.check_float(0.5, "eps", "PGD", low=0, strict=True) == 0.5
    assert _base.check_norm("l2", "PGD") == 2.0
    assert _base.check_bool is check_bool and model_checks.check_bool is check_bool
    assert _base.check_inputs is checks.check_inputs and _base.check_x is checks.check_x
    assert _validation.check_fraction(0.5, name="fraction", owner="f", low_open=True, high_open=True) == 0.5
    assert _validation.check_seed(4, owner="f") == 4
    with _raises(ValueError, "The 'gamma' parameter of f must be a number > 0. Got 0 instead."):
        _checks.check_positive(0, "f", "gamma")
    with _raises(ValueError, "The 'steps' parameter of PGD must be an int >= 1. Got 1.5 instead."):
        _base.check_int(1.5, "steps", "PGD", 1)
    with _raises(ValueError, "The 'eps' parameter of PGD must be a finite float >= 0.0. Got inf instead."):
        _base.check_float(math.inf, "eps", "PGD")
    with _raises(ValueError, "The 'norm' parameter of PGD must be one of [2.0, inf]. Got 1 instead."):
        _base.check_norm(1, "PGD")
    with _raises(TypeError, "The 'seed' parameter of f must be a non-negative int. Got 1.0 instead."):
        _validation.check_seed(1.0, owner="f")
    with _raises(ValueError, "The 'fraction' parameter of f must be a float in [0, 1). Got 1 instead."):
        _validation.check_fraction(1, name="fraction", owner="f", low_open=False, high_open=True)


# --------------------------------------------------------------------------- the linearised margin


def test_linearized_margin_zero_gradient_rules():
    diff = torch.tensor([2.0, -1.0, 0.0, 1.0, -3.0])
    norm = torch.tensor([4.0, 0.0, 0.0, 0.0, 2.0])
    assert linearized_margin(diff, norm).tolist() == [0.5, -math.inf, 0.0, math.inf, -1.5]
    assert linearized_margin(diff.abs(), norm, zero_gradient="inf").tolist() == [0.5, math.inf, math.inf, math.inf, 1.5]
    eps = 1e-3
    assert torch.equal(linearized_margin(diff, norm, epsilon=eps), diff / (norm + eps))  # the loss: finite
    with _raises(ValueError, "The 'zero_gradient' parameter of linearized_margin must be one of ['signed', 'inf']."):
        linearized_margin(diff, norm, zero_gradient="zero")


def test_linearized_distances_epsilon_zero_is_the_measured_distance():
    lin = nn.Linear(3, 3).double()
    with torch.no_grad():
        lin.weight[2].copy_(lin.weight[0])  # classes 0 and 2: the same gradient, a parallel boundary
    x = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(4, dtype=torch.int64)
    logits = lin(x)
    d, classes = linearized_distances(logits, y, [x], top_k=2, epsilon=0.0, return_classes=True)
    diff = (logits.gather(1, y[:, None]) - logits.gather(1, classes)).detach()
    w = lin.weight.detach()
    norms = (w[y][:, None, :] - w[classes]).norm(dim=2)
    expected = torch.where(norms > 0, diff / norms.clamp_min(1e-300), diff.sign() * math.inf)
    assert torch.equal(d[0].detach(), expected)
    assert torch.isinf(d[0][classes == 2]).all()
    # the loss keeps rejecting epsilon = 0
    with pytest.raises(ValueError, match=r"'epsilon'.*> 0"):
        large_margin_loss(lin(x), y, [x], gamma=1.0, epsilon=0.0)
