"""No silent failure in training: a hostile option ends in a clear error or a correct run, never a corrupt one."""

from __future__ import annotations

import pytest
import torch

from deepmargin.data import load_dataset
from deepmargin.training import TrainConfig, train
from deepmargin.training import trainer as trainer_module


@pytest.fixture(scope="module")
def digits():
    """129 training samples: with batch_size=64 the last batch of every epoch holds one sample."""
    data = load_dataset("digits", train_fraction=0.1, seed=0)
    assert len(data.train.y) == 129
    return data


def _tiny(**kw) -> TrainConfig:
    base = dict(dataset="digits", model="mlp", train_fraction=0.1, epochs=1, model_kwargs={"hidden_sizes": [16]})
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def fed(monkeypatch):
    """The sizes of the batches the model is run on in training mode."""
    sizes: list[int] = []
    build = trainer_module.build_model

    def counting(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inputs: sizes.append(len(inputs[0])) if m.training else None)
        return model

    monkeypatch.setattr(trainer_module, "build_model", counting)
    return sizes


# ---------------------------------------------------------------------------------- 1. batches of one sample

def test_batch_size_one_trains_every_sample_of_a_model_without_batch_norm(digits, fed):
    result = train(_tiny(batch_size=1), data=digits, verbose=False)
    assert fed == [1] * 129
    assert result.history[0]["train_loss"] > 0


def test_a_trailing_batch_of_one_sample_trains_without_batch_norm(digits, fed):
    train(_tiny(batch_size=64, epochs=2), data=digits, verbose=False)
    assert fed == [64, 64, 1] * 2


def test_batch_norm_refuses_batch_size_one_with_the_reason(digits):
    config = _tiny(batch_size=1, model_kwargs={"hidden_sizes": [16], "batch_norm": True})
    with pytest.raises(ValueError, match=r"'batch_size' parameter of TrainConfig must be at least 2 .*batch norm.*Got 1"):
        train(config, data=digits, verbose=False)


def test_batch_norm_leaves_out_only_a_trailing_sample_and_says_so(digits, fed, caplog):
    config = _tiny(batch_size=64, epochs=2, model_kwargs={"hidden_sizes": [16], "batch_norm": True})
    with caplog.at_level("INFO", logger="deepmargin.training.trainer"):
        train(config, data=digits, verbose=True)
    assert fed == [64, 64] * 2
    assert "the last 1 sample(s) of each epoch's shuffled order are left out" in caplog.text
