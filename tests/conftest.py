"""Fixtures shared by the test modules (plain helper functions live in ``_helpers.py``)."""

from __future__ import annotations

import pytest
import torch

from _helpers import train_digits_mlp


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run fastest on one intra-op thread (and do not fight other processes for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_mlp() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """``(model, x_test, y_test)`` of :func:`_helpers.train_digits_mlp` with seed 0 (read-only: shared)."""
    return train_digits_mlp(seed=0)
