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


# ---------------------------------------------------------------------------------- 3. no checkpoint of non-finite weights

def test_weights_gone_non_finite_are_never_saved_and_the_checkpoints_stay(digits, tmp_path, monkeypatch):
    """The last step of epoch 2 sends a weight to NaN while its loss (computed before the update) is finite."""
    steps = []
    build = trainer_module.build_model

    def breaking(*args, **kwargs):
        model = build(*args, **kwargs)

        def count(module, inputs):
            if module.training:
                steps.append(len(inputs[0]))
                if len(steps) == 6:
                    module.fc1.weight.register_hook(lambda g: torch.full_like(g, float("nan")))
        model.register_forward_pre_hook(count)
        return model

    monkeypatch.setattr(trainer_module, "build_model", breaking)
    run = tmp_path / "run"
    train(_tiny(batch_size=43, epochs=1), run, data=digits, verbose=False)  # 3 steps of 43
    before = {name: (run / name).read_bytes() for name in ("best.pt", "last.pt")}
    with pytest.raises(FloatingPointError, match=r"after epoch 2 are not finite: 'fc1\.weight'"):
        train(_tiny(batch_size=43, epochs=2), run, data=digits, verbose=False, resume=True)
    assert steps == [43] * 6
    assert {name: (run / name).read_bytes() for name in before} == before


def test_the_saver_names_the_first_non_finite_tensor_and_keeps_its_files(tmp_path):
    from deepmargin.models import build_model
    from deepmargin.training.checkpoint import CheckpointSaver

    kw = {"num_classes": 3, "input_shape": [4], "hidden_sizes": [5]}
    model = build_model("mlp", **kw)
    saver = CheckpointSaver(tmp_path, model=model, model_name="mlp", model_kwargs=kw, config={},
                            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    saver.update(1, {"val_acc": 0.5}, history=[])
    before = {name: (tmp_path / name).read_bytes() for name in ("best.pt", "last.pt")}
    best = {k: v.clone() for k, v in saver.best_state.items()}
    with torch.no_grad():
        model.fc2.bias[1] = float("inf")
    with pytest.raises(FloatingPointError, match=r"after epoch 2 are not finite: 'fc2\.bias'"):
        saver.update(2, {"val_acc": 0.9}, history=[])
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert saver.best_epoch == 1 and all(torch.equal(best[k], saver.best_state[k]) for k in best)


# ---------------------------------------------------------------------------------- 4. --resume without a run, --out ""

def test_resume_on_a_folder_without_a_run_is_an_error(digits, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match=rf"Nothing to resume in {re.escape(repr(str(run)))}: no last\.pt\. Drop --resume"):
        train(_tiny(), run, data=digits, verbose=False, resume=True)
    assert not run.exists()  # nothing left behind
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(FileNotFoundError, match="Nothing to resume"):
        train(_tiny(), run, data=digits, verbose=False, resume=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_the_cli_says_there_is_nothing_to_resume(tmp_path, capsys):
    code = main(["-q", "train", "--model", "mlp", "--train-fraction", "0.1", "--epochs", "1", "--out",
                 str(tmp_path / "run"), "--resume"])
    assert code == 2
    assert "deepmargin train: error: Nothing to resume in" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["", " ", ".", "./"])
def test_an_empty_out_dir_is_refused_before_anything_is_written(digits, tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"The 'out_dir' parameter of train must be a run folder's path, not empty"):
        train(_tiny(), out, data=digits, verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_an_empty_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "train", "--model", "mlp", "--train-fraction", "0.1", "--epochs", "1", "--out", ""]) == 2
    assert "deepmargin train: error: The 'out_dir' parameter of train must be" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- 5. each module keeps its own mode

def _frozen_batch_norm_model(dtype=torch.float32):
    from deepmargin.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", num_classes=3, input_shape=[4], hidden_sizes=[8], batch_norm=True).to(dtype).train()
    model.bn1.eval()  # statistics frozen while the rest trains
    return model


def _modes(model) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def test_evaluate_split_restores_each_module_own_mode():
    from deepmargin.training import build_objective, evaluate_split

    model = _frozen_batch_norm_model()
    before = _modes(model)
    assert before["bn1"] is False and before["fc1"] is True
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    evaluate_split(model, x, y, batch_size=4)
    assert _modes(model) == before
    objective = build_objective(TrainConfig(dataset="toy", loss="margin", gamma=1.0, model="mlp"), model)
    evaluate_split(model, x, y, objective=objective, batch_size=4)
    assert _modes(model) == before


def test_the_denominator_refresh_restores_each_module_own_mode():
    from deepmargin.training.denominators import DenominatorCache, margin_criterion

    model = _frozen_batch_norm_model()
    before = _modes(model)
    criterion = margin_criterion(TrainConfig(dataset="toy", loss="margin", gamma=1.0, model="mlp"), model, ["input", "relu1"])
    cache = DenominatorCache(criterion, criterion, every=1, num_samples=10)
    cache.refresh(model, torch.randn(10, 4), torch.randint(0, 3, (10,)), batch_size=4)
    assert _modes(model) == before


# ---------------------------------------------------------------------------------- 6. the denominator cache keeps float64

def test_the_denominator_cache_of_a_float64_model_keeps_float64():
    from deepmargin.training.denominators import DenominatorCache, margin_criterion

    model = _frozen_batch_norm_model(torch.float64)
    criterion = margin_criterion(TrainConfig(dataset="toy", loss="margin", gamma=1.0, model="mlp"), model, ["input", "relu1"])
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (10,), generator=gen)
    cache = DenominatorCache(criterion, criterion, every=1, num_samples=10)
    table = cache.refresh(model, x, y, batch_size=4)
    model.eval()  # the refresh runs in eval mode
    exact = criterion.rival_grad_norms(x, y)
    assert table.dtype == torch.float64
    torch.testing.assert_close(table, exact, rtol=0, atol=0)
    cache.load(table.clone())  # a resumed run reads the same float64 table
    assert cache.table.dtype == torch.float64
    loss, _ = cache.step(x, y, torch.arange(10))
    assert loss.dtype == torch.float64


# ---------------------------------------------------------------------------------- 7. seeds per rank under torchrun

SEEDS = '''
import importlib, json, os, sys
import torch
seen = []
for name in ("deepmargin.training.steps", "deepmargin.training.trainer"):
    try:
        module = importlib.import_module(name)
    except ImportError:
        continue
    if hasattr(module, "augment_batch"):
        def spy(*a, _f=module.augment_batch, **k):
            seen.append(torch.initial_seed())
            return _f(*a, **k)
        module.augment_batch = spy
from deepmargin.cli.main import main
code = main(sys.argv[1:])
with open(os.path.join(os.environ["SEED_DIR"], "rank%s.json" % os.environ["RANK"]), "w") as f:
    json.dump(list(dict.fromkeys(seen)), f)
sys.exit(code)
'''


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available in this build")
@pytest.mark.slow  # a subprocess run (torchrun or a whole study); in the full suite, not the fast lane
def test_each_rank_draws_its_own_augmentations_and_rank_0_keeps_the_seeds_of_one_process(tmp_path):
    import json

    from deepmargin.training import derive_seed

    script = tmp_path / "seeds.py"
    script.write_text(SEEDS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), "-q",
           "train", "--model", "mlp", "--train-fraction", "0.1", "--batch-size", "32", "--epochs", "2", "--seed", "5",
           "--augment", "crop", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "SEED_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0 == [derive_seed(5, 1), derive_seed(5, 2)]  # as one process
    assert len(rank1) == 2 and not set(rank1) & set(rank0)


# ---------------------------------------------------------------------------------- 8. a collapsed run is named

def _rows(accs, losses):
    return [{"epoch": e, "train_acc": a, "train_loss": l} for e, (a, l) in enumerate(zip(accs, losses), start=1)]


@pytest.mark.parametrize("accs, losses, expected", [
    ([0.10, 0.11, 0.10], [2.30, 2.20, 2.10], "stayed at chance: 0.100 in epoch 3 and at most 0.110 since epoch 1"),
    ([0.09], [3.0], None),  # one epoch: its running accuracy averages over the learning, not a verdict
    ([0.09, 0.10], [3.0, 2.9], "stayed at chance"),
    ([0.35, 0.36, 0.35], [1.9, 1.9, 1.95], "loss did not fall (1.9 in epoch 1, 1.95 in epoch 3)"),
    ([0.10, 0.45, 0.80], [2.3, 1.5, 0.9], None),
    ([0.28, 0.66, 0.75], [5.05, 9.92, 17.5], None),  # a reweighting loop raises its loss while it learns
    ([0.10, 0.14, 0.40, 0.11], [2.3, 2.0, 1.6, 2.2], None),  # learnt, then diverged: not "never above chance"
])
def test_detect_collapse_reads_the_history(accs, losses, expected):
    from deepmargin.training.health import detect_collapse

    found = detect_collapse(_rows(accs, losses), 10)
    if expected is None:
        assert found is None
    else:
        assert expected in found


def test_chance_is_the_majority_class_share_when_it_is_higher():
    from deepmargin.training.health import detect_collapse

    rows = _rows([0.70, 0.71], [0.6, 0.5])
    assert detect_collapse(rows, 2) is None
    assert "against 0.700 (the majority class's share)" in detect_collapse(rows, 2, majority_rate=0.7)


def test_a_run_that_learns_nothing_is_marked_collapsed_with_its_likely_causes(digits, tmp_path, caplog):
    import json

    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="deepmargin.training.trainer"):
        result = train(_tiny(lr=1e-9, epochs=2), run, data=digits, verbose=False)
    assert "stayed at chance" in result.collapsed
    summary = json.loads((run / "results.json").read_text())
    assert summary["collapsed"]["reason"] == result.collapsed
    assert any("learning rate lr=1e-09" in cause for cause in summary["collapsed"]["likely_causes"])
    assert f"the run in {run} collapsed: the training accuracy stayed at chance" in caplog.text
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(tuple(row) == trainer_module.METRIC_COLUMNS for row in rows)  # the columns did not change


def test_a_run_that_learns_is_not_marked(digits, tmp_path, caplog):
    import json

    with caplog.at_level("WARNING", logger="deepmargin.training.trainer"):
        result = train(_tiny(lr=0.01, epochs=3), tmp_path / "run", data=digits, verbose=False)
    assert result.collapsed is None
    assert json.loads((tmp_path / "run" / "results.json").read_text())["collapsed"] is None
    assert "collapsed" not in caplog.text


def test_likely_causes_name_the_margin_the_learning_rate_and_the_label_noise():
    from deepmargin.training.health import likely_causes

    config = TrainConfig(dataset="digits", loss="margin", gamma=50.0, norm=1, lr=0.1, label_noise=0.4).to_dict()
    causes = likely_causes(config)
    assert causes[0].startswith("the loss's margin gamma=50.0 may be far above the data's margins")
    assert any("lr=0.1" in c for c in causes) and any("40% of the training labels" in c for c in causes)


def test_a_run_whose_validation_accuracy_is_above_chance_is_not_collapsed():
    from deepmargin.training.health import detect_collapse

    rows = [{"epoch": e, "train_acc": 0.1, "train_loss": 2.3, "val_acc": v} for e, v in ((1, 0.1), (2, 0.6))]
    assert detect_collapse(rows, 10) is None
    rows[-1]["val_acc"] = 0.1
    assert "stayed at chance" in detect_collapse(rows, 10)
