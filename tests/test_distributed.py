"""Training on 2 processes with torchrun (gloo, CPU): the same weights as one process, resume, one writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deepmargin.cli.main import main
from deepmargin.training.trainer import RUN_FILES

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                       reason="torch.distributed with gloo is not available in this build"),
    pytest.mark.slow,  # torchrun subprocesses: in the full suite (CI), not in the fast lane
]

SMALL = ["--model", "mlp", "--train-fraction", "0.5", "--batch-size", "50", "--seed", "3"]


def _torchrun(args: list[str], *, script: list[str] | None = None, env: dict | None = None, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *(script or ["-m", "deepmargin"]), "-q", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    done = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model_state"]


def _close(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=1e-4)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss", [["--loss", "ce"], ["--preset", "margin-l2"]])
def test_two_processes_train_the_same_model_as_one(loss, tmp_path):
    args = ["train", *SMALL, *loss, "--epochs", "2"]
    _torchrun([*args, "--out", str(tmp_path / "ddp")])
    assert main(["-q", *args, "--out", str(tmp_path / "one")]) == 0
    _close(tmp_path / "ddp", tmp_path / "one")
    ddp, one = _rows(tmp_path / "ddp"), _rows(tmp_path / "one")
    assert [r["val_acc"] for r in ddp] == [r["val_acc"] for r in one]
    assert [r["train_acc"] for r in ddp] == [r["train_acc"] for r in one]  # counts summed over the ranks
    assert [r["train_loss"] for r in ddp] == pytest.approx([r["train_loss"] for r in one], rel=1e-5)


def test_a_killed_distributed_run_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["train", "--model", "mlp", "--batch-size", "32", "--seed", "1", "--epochs", "12"]
    run = tmp_path / "ddp"
    proc = _torchrun([*args, "--out", str(run)], wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    completed = torch.load(run / "last.pt", weights_only=True)["epoch"]
    assert 2 <= completed < 12
    _torchrun([*args, "--out", str(run)])
    assert main(["-q", *args, "--out", str(tmp_path / "one")]) == 0
    _close(run, tmp_path / "one")
    assert [r["epoch"] for r in _rows(run)] == list(range(1, 13))


SPY = '''
import json, os, sys
import deepmargin.training.trainer as trainer
calls = []
for name in ("write_json", "write_rows", "append_row", "save_checkpoint", "_clear_run_files"):
    def spy(*a, _f=getattr(trainer, name), _n=name, **k):
        calls.append(_n)
        return _f(*a, **k)
    setattr(trainer, name, spy)
from deepmargin.cli.main import main
code = main(sys.argv[1:])
with open(os.path.join(os.environ["SPY_DIR"], "rank%s.json" % os.environ["RANK"]), "w") as f:
    json.dump(calls, f)
sys.exit(code)
'''


def test_rank_0_is_the_only_writer(tmp_path):
    script = tmp_path / "spy.py"
    script.write_text(SPY)
    _torchrun(["train", *SMALL, "--epochs", "1", "--out", str(tmp_path / "run")], script=[str(script)],
              env={"SPY_DIR": str(tmp_path)})
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert {"write_json", "save_checkpoint", "append_row"} <= set(rank0)
    assert rank1 == []
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(RUN_FILES)
