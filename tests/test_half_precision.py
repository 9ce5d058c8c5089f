"""Issue 17, item 8: the margin loss in float16 / bfloat16 is finite wherever it is in float32.

(s_y - s_i) / (||grad|| + 1e-6) overflows float16's 65504 where a layer's gradient is zero (dead
ReLUs): the quotient and the norms are computed in float32 for half-precision inputs."""

from __future__ import annotations

import pytest
import torch

from deepmargin.losses import LargeMarginLoss, large_margin_loss
from deepmargin.losses.large_margin import linearized_margin

HALF = (torch.float16, torch.bfloat16)


def _case(seed: int, dtype: torch.dtype, *, alpha, norm):
    g = torch.Generator().manual_seed(seed)
    d, h, c = 6, 8, 4
    w1 = torch.randn(d, h, generator=g)
    b1 = torch.randn(h, generator=g) - (100.0 if seed % 3 == 0 else 0.0)  # every third case: all hidden units dead
    w2, b2 = torch.randn(h, c, generator=g), torch.randn(c, generator=g)
    x, y = torch.randn(5, d, generator=g), torch.randint(0, c, (5,), generator=g)
    xx = x.to(dtype).requires_grad_(True)
    hh = torch.relu(xx @ w1.to(dtype) + b1.to(dtype))
    logits = hh @ w2.to(dtype) + b2.to(dtype)
    return large_margin_loss(logits, y, [xx, hh], gamma=1.0, alpha=alpha, top_k=3, norm=norm)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("alpha", [None, 1.0])
@pytest.mark.parametrize("norm", [2, float("inf"), 1])
def test_half_precision_is_finite_wherever_float32_is(dtype, alpha, norm):
    dead = 0
    for seed in range(60):
        reference = _case(seed, torch.float32, alpha=alpha, norm=norm)
        if not torch.isfinite(reference):
            continue
        loss = _case(seed, dtype, alpha=alpha, norm=norm)
        assert torch.isfinite(loss), f"seed {seed}: float32 {reference.item()} but {dtype} {loss.item()}"
        dead += seed % 3 == 0
        # and close to the float32 value (half precision rounds the scores: a loose tolerance)
        torch.testing.assert_close(loss.float(), reference, rtol=0.1, atol=0.1 * (1 + reference.abs().item()))
    assert dead >= 15  # the dead-ReLU cases, where the old code overflowed, were exercised


def test_the_quotient_of_half_inputs_is_taken_in_float32():
    diff = torch.tensor([0.5, -0.5], dtype=torch.float16)
    out = linearized_margin(diff, torch.zeros(2, dtype=torch.float16), epsilon=1e-6)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([0.5, -0.5]) / 1e-6, rtol=1e-3, atol=0)
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)  # other dtypes are untouched
    assert linearized_margin(x, x, epsilon=1e-6).dtype == torch.float64


@pytest.mark.parametrize("dtype", HALF)
def test_the_module_form_trains_a_half_precision_model_with_dead_units(dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).to(dtype)
    with torch.no_grad():
        model[0].bias.fill_(-50.0)  # dead ReLUs: zero gradients at the input and the hidden layer's input
    criterion = LargeMarginLoss(model, ["input", "1"], gamma=1.0, top_k=2, ce_weight=0.0)
    loss, _ = criterion(torch.randn(8, 4, dtype=dtype), torch.randint(0, 3, (8,)))
    assert torch.isfinite(loss)
    loss.backward()
    grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # bfloat16 has float32's range; in float16 the gradient of a dead-unit sample (about 1/epsilon =
    # 1e6 per score) overflows on its way back into the float16 logits: the loss is finite, its
    # gradient needs torch.amp.GradScaler's inf check (the everyday autocast setup) or a larger epsilon.
    assert grads_finite or dtype == torch.float16


@pytest.mark.parametrize("name", ["ce", "hinge", "margin", "matyasko", "input_gradient", "kesidis", "vat"])
def test_every_registered_loss_is_finite_in_half_precision_wherever_float32_is(name):
    from torch import nn

    from deepmargin.losses import LOSS_REGISTRY, loss_options_of
    from deepmargin.training import TrainConfig

    spec = LOSS_REGISTRY[name]
    options = loss_options_of(TrainConfig(loss=name))
    if "layers" in options:
        options["layers"] = ["input", "1"]
    checked = 0
    for seed in range(12):
        finite = {}
        for dtype in (torch.float32, *HALF):
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).to(dtype)
            if seed % 3 == 0:
                with torch.no_grad():
                    model[0].bias.fill_(-100.0)  # dead units: zero input gradients
            g = torch.Generator().manual_seed(seed)
            x, y = torch.randn(5, 6, generator=g).to(dtype), torch.randint(0, 4, (5,), generator=g)
            with torch.enable_grad():
                loss, _ = spec.build(model, options)(x, y)
            finite[dtype] = bool(torch.isfinite(loss))
        if finite[torch.float32]:
            checked += 1
            assert all(finite[d] for d in HALF), f"{name}, seed {seed}: {finite}"
    assert checked >= 8
