"""Contracts the attacks keep across their entry points: bounds, label dtypes, seeds, transfer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deepmargin.attacks import FGSM, FMN, PGD, DeepFool, GaussianNoise, TransferAttack, accuracy_vs_epsilon
from deepmargin.attacks.transfer import transfer_accuracy
from deepmargin.metrics import rho_adv


@pytest.mark.parametrize("attack", [DeepFool(steps=5), FMN(steps=5)], ids=["deepfool", "fmn"])
def test_min_norm_attacks_reject_inputs_outside_their_bounds(attack):
    model = nn.Linear(4, 3)
    x = torch.rand(5, 4) * 4 - 2  # normalised data, outside the default (0, 1)
    with pytest.raises(ValueError, match=r"'x' parameter of .* must lie within bounds=\(0.0, 1.0\)"):
        attack(model, x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="must lie within bounds"):
        rho_adv(model, x)


def test_int32_labels_work_for_gradient_attacks(digits_mlp):
    model, x, y = digits_mlp
    a = FGSM(eps=0.1)(model, x[:20], y[:20])
    b = FGSM(eps=0.1)(model, x[:20], y[:20].to(torch.int32))
    assert torch.equal(a, b)
    rows = accuracy_vs_epsilon(model, FGSM(eps=0.1), x[:20], y[:20].to(torch.int32), [0.0, 0.1])
    assert len(rows) == 2


def test_rows_reproduce_single_calls_of_a_seeded_attack(digits_mlp):
    model, x, y = digits_mlp
    x, y = x[:64], y[:64]
    epsilons = [0.05, 0.1, 0.2]
    rows = accuracy_vs_epsilon(model, PGD(eps=0.1, steps=5, seed=3), x, y, epsilons, batch_size=64)
    for row, eps in zip(rows, epsilons):
        x_adv = PGD(eps=eps, steps=5, seed=3)(model, x, y)
        with torch.no_grad():
            expected = (model(x_adv).argmax(1) == y).float().mean().item()
        assert row["accuracy"] == pytest.approx(expected)
        assert row["seed"] == 3


def test_transfer_accuracy_honours_its_seed_and_transfer_attack_stays_black_box(digits_mlp):
    model, x, y = digits_mlp
    torch.manual_seed(0)
    source = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    pgd = PGD(eps=0.2, steps=3)
    first = transfer_accuracy(pgd, source, model, x[:64], y[:64], seed=1)
    second = transfer_accuracy(pgd, source, model, x[:64], y[:64], seed=1)
    assert first == second
    wrapped = TransferAttack(DeepFool(steps=5), source)
    for name in ("run", "restrict"):
        assert not hasattr(wrapped, name)
    assert wrapped.norm == 2.0  # plain settings still come from the wrapped attack


def test_noise_rejects_minus_infinite_snr():
    with pytest.raises(ValueError, match=r"'snr' parameter of GaussianNoise must be a finite float in dB"):
        GaussianNoise(snr=-math.inf)
    assert torch.equal(GaussianNoise(snr=math.inf, seed=0)(None, torch.ones(2, 3), None), torch.ones(2, 3))
