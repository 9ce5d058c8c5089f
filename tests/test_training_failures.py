"""No silent failure in training: a hostile option ends in a clear error or a correct run, never a corrupt one."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys

import pytest
import torch

from deepmargin.cli.main import main
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


# ---------------------------------------------------------------------------------- 2. one process per run folder

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_by_another_process(tmp_path):
    """A second process holding the lock of the run folder ``tmp_path / "run"`` until the test ends."""
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run / ".lock")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield run, proc.pid
    proc.stdin.close()
    proc.wait(timeout=30)


def test_a_second_process_is_refused_at_once_with_the_folder_named(digits, held_by_another_process):
    run, pid = held_by_another_process
    with pytest.raises(OSError, match=rf"Run folder {re.escape(repr(str(run)))} is in use by another training process \(pid {pid}\).*--out"):
        train(_tiny(), run, data=digits, verbose=False)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written


def test_the_cli_refuses_a_folder_in_use_in_one_line(held_by_another_process, capsys):
    run, _ = held_by_another_process
    code = main(["-q", "train", "--model", "mlp", "--train-fraction", "0.1", "--epochs", "1", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("deepmargin train: error: Run folder") and "in use by another training process" in err
    assert not (run / "metrics.jsonl").exists()


def test_the_folder_is_held_while_training_and_released_after_success_and_errors(digits, tmp_path, monkeypatch):
    run = tmp_path / "run"
    attempts: list[bool] = []
    build = trainer_module.build_model

    def probing(*args, **kwargs):  # the run's model tries the lock on its first training step
        model = build(*args, **kwargs)

        def probe(module, inputs):
            if module.training and not attempts:
                fd = os.open(run / ".lock", os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    attempts.append(True)
                except BlockingIOError:
                    attempts.append(False)
                finally:
                    os.close(fd)
        model.register_forward_pre_hook(probe)
        return model

    monkeypatch.setattr(trainer_module, "build_model", probing)
    train(_tiny(), run, data=digits, verbose=False)
    assert attempts == [False]  # another open file could not take it during the run
    assert sorted(p.name for p in run.iterdir()) == sorted(trainer_module.RUN_FILES)  # released, lock file gone
    with pytest.raises(ValueError, match="configuration differs"):  # an error after the lock was taken
        train(_tiny(lr=0.5), run, data=digits, verbose=False)
    assert not (run / ".lock").exists()
    train(_tiny(), run, data=digits, verbose=False, overwrite=True)  # free again

