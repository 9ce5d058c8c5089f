import os

import pytest
import torch

from deepmargin.io import atomic_write, atomic_write_text
from deepmargin.training.checkpoint import save_checkpoint
from deepmargin.training.records import append_row, read_jsonl, write_json


def test_new_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        model = torch.nn.Linear(2, 2)
        paths = [
            save_checkpoint(tmp_path / "m.pt", model=model, model_name="mlp",
                            model_kwargs={"num_classes": 2, "input_shape": [2], "hidden_sizes": []}),
            write_json(tmp_path / "config.json", {"a": 1}),
            atomic_write_text(tmp_path / "t.txt", "x"),
        ]
        append_row(tmp_path / "metrics", {"epoch": 1})
        paths += [tmp_path / "metrics.csv", tmp_path / "metrics.jsonl"]
    finally:
        os.umask(old)
    for path in paths:
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "r.txt", "old")

    def broken(handle):
        handle.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_append_row_keeps_earlier_rows(tmp_path):
    for epoch in range(3):
        append_row(tmp_path / "metrics", {"epoch": epoch, "acc": 0.5})
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,acc" and len(lines) == 4


def test_unavailable_map_location_is_not_reported_as_corruption(tmp_path, monkeypatch):
    from deepmargin.training.checkpoint import load_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", model=torch.nn.Linear(2, 2), model_name="mlp",
                           model_kwargs={"num_classes": 2, "input_shape": [2], "hidden_sizes": []})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"'map_location' parameter of load_checkpoint") as info:
        load_checkpoint(path, map_location="cuda")
    assert "corrupt" not in str(info.value)
    assert load_checkpoint(path, map_location="cpu")["model_name"] == "mlp"
