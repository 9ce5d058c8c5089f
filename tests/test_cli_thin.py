"""The measuring commands are thin: argparse, one library call, printing. Their pipelines live in the library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deepmargin

CLI = Path(deepmargin.__file__).parent / "cli"
THIN = ("attack", "detect", "robustness", "evaluate", "layers", "demo", "_common")


@pytest.mark.parametrize("module", THIN)
def test_no_long_function_and_no_torch_in_thin_commands(module):
    tree = ast.parse((CLI / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name != "add_parser":
            length = node.end_lineno - node.lineno + 1
            assert length <= 40, f"cli/{module}.py: {node.name} has {length} lines; move the pipeline to the library"
    for node in tree.body:  # no tensor work at the command level
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n == "torch" or n.startswith("torch.") or n == "numpy" for n in names), (module, names)


def test_old_names_stay_importable():
    from deepmargin.cli import _common, attack, detect, evaluate, robustness
    from deepmargin.experiments import checkpoints, checkpoint_eval, detection, robustness_eval

    assert _common.load_checkpoints is checkpoints.load_checkpoints
    assert _common.load_test_split is checkpoints.load_test_split is robustness.load_test_split
    assert detect.load_training_bundle is checkpoints.load_training_bundle
    assert detect.DETECT_FIELDS is detection.DETECT_FIELDS and detect.ATTACKS == ("fgsm", "ifgsm", "pgd")
    assert evaluate.evaluate_checkpoint is checkpoint_eval.evaluate_checkpoint
    assert robustness.measure is robustness_eval.measure and robustness.certify is robustness_eval.certify
    assert attack.ATTACKS[:6] == ("fgsm", "ifgsm", "pgd", "deepfool", "fmn", "noise")


def test_model_names_and_attack_jobs():
    from deepmargin.experiments.attack_eval import attack_jobs
    from deepmargin.experiments.checkpoints import model_names

    assert model_names(["a/best.pt", "b/best.pt", "c/last.pt", "c/last.pt"]) == ["a/best", "b/best", "c/last", "c/last#2"]
    jobs = attack_jobs(["pgd", "fgsm", "noise", "pgd"], ["linf", "l2"], [0, 1])
    assert jobs == [("pgd", "linf", 0), ("pgd", "linf", 1), ("pgd", "l2", 0), ("pgd", "l2", 1),
                    ("fgsm", "linf", 0), ("fgsm", "l2", 0), ("noise", None, 0), ("noise", None, 1)]
    assert attack_jobs(["pgd"], ["linf"], [0, 1], random_start=False) == [("pgd", "linf", 0)]


def test_default_input_shape():
    from deepmargin.models import MODELS, build_model
    from deepmargin.models.registry import default_input_shape

    assert default_input_shape("digits_cnn") == (1, 8, 8)
    for name in MODELS:
        assert isinstance(default_input_shape(name), tuple)
    with pytest.raises(ValueError, match="The 'name' parameter of build_model must be one of"):
        default_input_shape("resnet")
    assert build_model("mlp", num_classes=3, input_shape=default_input_shape("mlp"), hidden_sizes=(4,)) is not None


def test_test_split_errors():
    from deepmargin.experiments.checkpoints import load_test_split

    metas = {"a": {"config": {"dataset": "digits"}}, "b": {"config": {"dataset": "moons"}}}
    with pytest.raises(ValueError, match=r"checkpoints of deepmargin attack must all record the same dataset"):
        load_test_split(metas, command="attack")
    meta = {"a": {"config": {"dataset": "digits"}, "model_kwargs": {"input_shape": [2], "num_classes": 2}}}
    with pytest.raises(ValueError, match=r"checkpoint 'a' \(input shape \[2\], 2 classes\) does not fit the dataset 'digits'"):
        load_test_split(meta, command="attack")
    meta["a"]["model_kwargs"] = {"input_shape": [1, 8, 8], "num_classes": 10}
    x, y, bounds, dataset, root = load_test_split(meta, command="attack", n=5)
    assert tuple(x.shape) == (5, 1, 8, 8) and bounds == (0.0, 1.0) and dataset == "digits" and root is None
