"""Reliability warnings: each fires when it should and stays silent otherwise."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from deepmargin.attacks import (
    FGSM,
    PGD,
    ReliabilityWarning,
    accuracy_vs_epsilon,
    check_model,
    warn_if_probabilities,
    warn_if_randomized,
    warn_if_training,
    warn_if_transfer_beats_whitebox,
    warn_if_zero_gradients,
)


@pytest.fixture
def silent():
    """Turn every ReliabilityWarning into an error inside the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReliabilityWarning)
        yield


def _linear(seed: int = 0, d: int = 6, c: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(d, c).eval()


class _Quantised(nn.Module):
    """A model whose input gradient is exactly zero: logits of round(255 x) / 255 (gradient masking)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 255) / 255)


class _Noisy(nn.Module):
    """A randomised model: adds fresh noise to the logits on every call, even in eval mode."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out + 0.1 * torch.randn_like(out)


def test_training_mode_warning():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    with pytest.warns(ReliabilityWarning, match=r"model is in training mode"):
        assert warn_if_training(model)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReliabilityWarning)
        assert not warn_if_training(model)
    model[1].train()  # one submodule left in training mode is enough
    with pytest.warns(ReliabilityWarning, match=r"modules: 1"):
        warn_if_training(model)


def test_training_mode_warning_from_evaluation():
    model = _linear().train()
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    with pytest.warns(ReliabilityWarning, match="training mode"):
        accuracy_vs_epsilon(model, FGSM(eps=0.1), x, y, [0.0, 0.1])
    assert model.training


def test_probabilities_warning(silent):
    logits = torch.randn(16, 5) * 3
    assert not warn_if_probabilities(logits)
    assert not warn_if_probabilities(logits.log_softmax(dim=1))  # log-probabilities are fine for CE
    assert not warn_if_probabilities(torch.rand(16, 5))  # non-negative, rows not summing to 1
    with pytest.warns(ReliabilityWarning, match="look like probabilities"):
        assert warn_if_probabilities(logits.softmax(dim=1))


def test_attack_on_softmax_model_warns(silent):
    base = _linear()
    x, y = torch.rand(10, 6), torch.randint(0, 3, (10,))
    FGSM(eps=0.1)(base, x, y)  # logits: silent (the fixture turns warnings into errors)
    with pytest.warns(ReliabilityWarning, match="look like probabilities"):
        FGSM(eps=0.1)(nn.Sequential(base, nn.Softmax(dim=1)).eval(), x, y)


def test_zero_gradient_warning(silent):
    grad = torch.randn(20, 3, 4)
    assert not warn_if_zero_gradients(grad)
    grad[:1] = 0  # 5% zero: at the default threshold, still silent
    assert not warn_if_zero_gradients(grad)
    grad[:2] = 0  # 10%
    with pytest.warns(ReliabilityWarning, match=r"10\.0% of the inputs have an all-zero input gradient"):
        assert warn_if_zero_gradients(grad)
    assert not warn_if_zero_gradients(grad, max_share=0.2)
    with pytest.raises(ValueError, match=r"The 'max_share' parameter of warn_if_zero_gradients must be a float in \[0, 1\)"):
        warn_if_zero_gradients(grad, max_share=1.5)


def test_gradient_masking_detected_by_attack(silent):
    masked = _Quantised(_linear()).eval()
    x, y = torch.rand(12, 6), torch.randint(0, 3, (12,))
    with pytest.warns(ReliabilityWarning, match="all-zero input gradient"):
        x_adv = PGD(eps=0.1, steps=3, random_start=False)(masked, x, y)
    assert torch.equal(x_adv, x)  # the attack could not move: exactly what the warning is about


def test_randomized_model_warning(silent):
    base = _linear()
    x = torch.rand(5, 6)
    assert not warn_if_randomized(base, x)
    with pytest.warns(ReliabilityWarning, match="Two forward passes"):
        assert warn_if_randomized(_Noisy(base).eval(), x)
    dropout = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5)).train()
    assert not warn_if_randomized(dropout, x)  # checked in eval mode, where dropout is off
    assert dropout.training


def _rows(white: float, transfer: float) -> list[dict]:
    base = dict(model="margin", attack="ifgsm", norm="linf", eps=0.1, seed=0)
    return [
        {**base, "accuracy": white, "setting": "white-box", "source": None},
        {**base, "accuracy": white + 0.2, "attack": "fgsm", "setting": "white-box", "source": None},
        {**base, "accuracy": transfer, "setting": "transfer", "source": "ce"},
        {**base, "eps": 0.2, "accuracy": 0.0, "setting": "transfer", "source": "ce"},  # no white-box row: ignored
    ]


def test_transfer_beats_whitebox_warning(silent):
    assert warn_if_transfer_beats_whitebox(_rows(white=0.5, transfer=0.6)) == []
    assert warn_if_transfer_beats_whitebox(_rows(white=0.5, transfer=0.5)) == []
    with pytest.warns(ReliabilityWarning, match=r"transfer \(black-box\) attack beats every white-box attack"):
        found = warn_if_transfer_beats_whitebox(_rows(white=0.5, transfer=0.4))
    assert found == [
        dict(model="margin", attack="ifgsm", source="ce", norm="linf", eps=0.1,
             transfer_accuracy=0.4, whitebox_accuracy=0.5)
    ]
    assert warn_if_transfer_beats_whitebox(_rows(white=0.5, transfer=0.45), tol=0.1) == []
    with pytest.raises(ValueError, match="The 'tol' parameter of warn_if_transfer_beats_whitebox must be a float >= 0"):
        warn_if_transfer_beats_whitebox([], tol=-1)


def test_transfer_beats_whitebox_on_gradient_masked_model():
    # The target masks its gradients (quantised input); the source is the same linear model
    # without quantisation, so transferred adversarials fool the target while white-box PGD cannot move.
    torch.manual_seed(0)
    inner = _linear(d=20, c=4)
    target, source = _Quantised(inner).eval(), inner
    x = torch.rand(64, 20)
    with torch.no_grad():
        y = target(x).argmax(dim=1)  # labels the target gets right
    with pytest.warns(ReliabilityWarning, match="all-zero input gradient"):
        white = accuracy_vs_epsilon({"t": target}, PGD(eps=0.2, steps=5, random_start=False), x, y, [0.2])
    transfer = accuracy_vs_epsilon({"t": target}, PGD(eps=0.2, steps=5, random_start=False), x, y, [0.2], source=source)
    assert white[0]["accuracy"] == 1.0 and transfer[0]["accuracy"] < 1.0
    with pytest.warns(ReliabilityWarning, match="beats every white-box attack"):
        assert len(warn_if_transfer_beats_whitebox(white + transfer)) == 1


def test_check_model_runs_every_check(silent):
    model = _linear()
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    assert check_model(model, x, y) == dict(training=False, probabilities=False, randomized=False, zero_gradients=False)
    noisy_softmax = nn.Sequential(_Noisy(model), nn.Softmax(dim=1))
    with pytest.warns(ReliabilityWarning) as record:
        fired = check_model(noisy_softmax, x, y)
    assert fired == dict(training=True, probabilities=True, randomized=True, zero_gradients=False)
    assert len(record) == 3
    assert noisy_softmax.training  # mode restored


def test_clean_evaluation_is_silent(silent):
    model = _linear(d=64, c=10)
    x, y = torch.rand(32, 64), torch.randint(0, 10, (32,))
    rows = accuracy_vs_epsilon(model, PGD(eps=0.1, steps=3, seed=0), x, y, [0.0, 0.1])
    warn_if_transfer_beats_whitebox(rows)
    assert len(rows) == 2
