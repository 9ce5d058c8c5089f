"""Any classifier, hostile cases: modules that fail to import, factories and forwards that raise, models
without an input gradient, bad files and options. Every one gets a one-line error naming the option,
or a flagged measurement, never a traceback."""

from __future__ import annotations

import importlib
import json
import re
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepmargin.attacks import APGD, AutoAttack, ReliabilityWarning, Square, check_model
from deepmargin.cli.main import main
from deepmargin.models import ClassifierAdapter, load_classifier
from deepmargin.models.external import ClassifierError, import_callable, input_gradient_problem
from deepmargin.reports.robustness import load_rows

NETS = textwrap.dedent("""
    import torch
    from torch import nn


    class Net(nn.Module):
        # class k when input k (of the first 10) stands out: a margin of about 2 on the test data
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.f = nn.Linear(64, 10)
            with torch.no_grad():
                self.f.weight.mul_(0.1)
                self.f.weight[:, :10] += 4 * torch.eye(10)

        def forward(self, x):
            return self.f(x)


    class Detach(Net):
        def forward(self, x):
            return self.f(x.detach())


    class NoGrad(Net):
        def forward(self, x):
            with torch.no_grad():
                return self.f(x)


    class _NoBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("no backward for you")


    class BackRaises(Net):
        def forward(self, x):
            return self.f(_NoBackward.apply(x))


    class FailBig(Net):
        def forward(self, x):
            if x.shape[0] > 5:
                raise RuntimeError("batch too big")
            return self.f(x)


    class FwdValue(Net):
        def forward(self, x):
            raise ValueError("inner value error")


    class Pair(Net):
        def forward(self, x):
            return self.f(x), x


    def factory_runtime():
        raise RuntimeError("factory failed")


    def factory_value():
        raise ValueError("factory value")


    def factory_type(width=1):
        return None + width
""")

NO_GRADIENT = ["Detach", "NoGrad", "BackRaises"]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """The module ``dm_hostile_nets`` (importable), its folder, and test data of all 10 classes the plain Net gets
    all right."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "dm_hostile_nets.py").write_text(NETS)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        module = importlib.import_module("dm_hostile_nets")
        x = 0.5 * torch.rand(40, 64, generator=torch.Generator().manual_seed(1))
        y = torch.arange(40) % 10
        x[torch.arange(40), y] = 1.0
        with torch.no_grad():
            assert torch.equal(module.Net()(x).argmax(1), y)
        np.savez(root / "test.npz", x_test=x.numpy(), y_test=y.numpy())
        yield root, module, x, y


def _cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code, err, command="attack"):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith(f"deepmargin {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- 1: imports and factories


@pytest.mark.parametrize("body, match", [
    ("raise RuntimeError('boom at import')\n", r"importing 'dm_hostile_imp\d' failed with RuntimeError: boom at import"),
    ("x = 1 / 0\n", r"importing 'dm_hostile_imp\d' failed with ZeroDivisionError: division by zero"),
    ("def f(:\n", r"importing 'dm_hostile_imp\d' failed with SyntaxError: .*line 1"),
])
def test_a_module_that_fails_to_import_is_a_one_line_error(body, match, tmp_path, monkeypatch, capsys):
    name = f"dm_hostile_imp{len(body) % 10}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"The 'model' parameter of load_classifier must be .*" + match):
        import_callable(f"{name}:build")
    np.savez(tmp_path / "d.npz", x_test=np.zeros((2, 64), np.float32), y_test=np.zeros(2, np.int64))
    code, _, err = _cli(["attack", "--model", f"{name}:build", "--data", "d.npz", "--out", str(tmp_path / "o")], capsys)
    line = _one_line_error(code, err)
    assert re.search(match, line) and f"Got '{name}:build'" in line


@pytest.mark.parametrize("factory, quoted", [
    ("factory_runtime", "RuntimeError: factory failed"),
    ("factory_value", "ValueError: factory value"),
    ("factory_type", "TypeError: unsupported operand"),  # a TypeError of its own code, not of the arguments
])
def test_a_factory_that_raises_is_a_one_line_error_naming_model(nets, factory, quoted, capsys, tmp_path):
    root = nets[0]
    with pytest.raises(ValueError, match=rf"The 'model' parameter of load_classifier must be a 'module:callable' "
                                         rf"\(--model\) that builds the model; calling dm_hostile_nets:{factory}\(\) "
                                         rf"raised {re.escape(quoted)}"):
        load_classifier(model=f"dm_hostile_nets:{factory}")
    code, _, err = _cli(["attack", "--model", f"dm_hostile_nets:{factory}", "--data", str(root / "test.npz"),
                         "--out", str(tmp_path / "o")], capsys)
    assert quoted in _one_line_error(code, err)


def test_unknown_keyword_arguments_are_still_blamed_on_model_kwargs(nets):
    with pytest.raises(ValueError, match=r"'model_kwargs' parameter .* keyword arguments that dm_hostile_nets:Net "
                                         r"accepts; calling it raised TypeError: .*width.* \(fix --model-kwargs\)"):
        load_classifier(model="dm_hostile_nets:Net", model_kwargs={"width": 2})


# --------------------------------------------------------------------------- 11: the current directory first


def test_the_current_directory_comes_first_and_sys_path_is_restored(tmp_path, monkeypatch):
    # 'test' is also the standard library's regression-test package: the user's test.py must win
    (tmp_path / "test.py").write_text("from torch import nn\n\ndef build():\n    return nn.Linear(3, 2)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "test", raising=False)
    before = list(sys.path)
    try:
        assert isinstance(import_callable("test:build")(), nn.Linear)
    finally:
        sys.modules.pop("test", None)
    assert sys.path == before


# --------------------------------------------------------------------------- 2: no input gradient


@pytest.mark.parametrize("name", NO_GRADIENT)
def test_a_model_without_input_gradient_is_found_at_load_and_gives_a_zero_one(nets, name):
    _, module, x, y = nets
    assert input_gradient_problem(getattr(module, name)(), (64,)) is not None
    model = load_classifier(model=f"dm_hostile_nets:{name}", input_shape=(64,))
    assert model.input_gradient is False and model.input_gradient_problem
    xg = x[:4].clone().requires_grad_(True)
    nn.functional.cross_entropy(model(xg), y[:4]).backward()  # no autograd error: an explicit zero gradient
    assert torch.equal(xg.grad, torch.zeros_like(xg))
    with torch.no_grad():
        torch.testing.assert_close(model(x), module.Net()(x), rtol=0, atol=0)  # the same logits
    plain = load_classifier(model="dm_hostile_nets:Net", input_shape=(64,))
    assert plain.input_gradient is True and plain.input_gradient_problem is None


@pytest.mark.parametrize("name", NO_GRADIENT)
@pytest.mark.parametrize("wrapped", [False, True])
def test_check_model_flags_a_model_without_input_gradient(nets, name, wrapped):
    _, module, x, y = nets
    model = load_classifier(model=f"dm_hostile_nets:{name}", input_shape=(64,)) if wrapped else getattr(module, name)()
    with pytest.warns(ReliabilityWarning, match=r"The model has no input gradient: "):
        fired = check_model(model.eval(), x, y)
    assert fired["zero_gradients"]


def test_a_normal_adapter_is_called_as_it_is(nets):
    """A model with an input gradient goes through the adapter untouched (the same graph, the same numbers)."""
    _, module, x, y = nets
    model = load_classifier(model="dm_hostile_nets:Net", input_shape=(64,))
    net = module.Net().eval()
    a, b = x[:6].clone().requires_grad_(True), x[:6].clone().requires_grad_(True)
    out_a, out_b = model(a), net(b)
    assert torch.equal(out_a, out_b) and type(out_a.grad_fn) is type(out_b.grad_fn)
    nn.functional.cross_entropy(out_a, y[:6]).backward()
    nn.functional.cross_entropy(out_b, y[:6]).backward()
    assert torch.equal(a.grad, b.grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not any(check_model(model, x, y).values())


@pytest.mark.parametrize("argv", [
    ["--attacks", "square", "fgsm", "apgd-ce", "--eps", "0", "0.3"],
    ["--attacks", "autoattack", "--autoattack-version", "fast", "--eps", "0.3"],
])
@pytest.mark.parametrize("name", ["Detach", "BackRaises"])
def test_attack_command_on_a_model_without_input_gradient(nets, name, argv, tmp_path, capsys):
    root = nets[0]
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReliabilityWarning)
        code, _, err = _cli(["attack", "--model", f"dm_hostile_nets:{name}", "--data", str(root / "test.npz"),
                             "--n", "12", "--no-plot", "--out", str(out), *argv], capsys)
    assert code == 0, err
    assert "gives no input gradient" in err
    rows = load_rows(out / "rows.jsonl")
    accuracy = {(r["attack"], r["eps"]): r["accuracy"] for r in rows}
    if "square" in argv:
        assert accuracy["fgsm", 0.3] == accuracy["apgd-ce", 0.3] == accuracy["fgsm", 0.0] == 1.0  # broke nothing
        assert accuracy["square", 0.3] < 1.0  # forward passes only: Square breaks inputs
    else:
        (row,) = rows
        assert row["accuracy"] < 1.0 and "zero_gradients" in row["flags"].split(";")


def test_robustness_suite_on_a_model_without_input_gradient(nets, tmp_path, capsys):
    root = nets[0]
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReliabilityWarning)
        code, _, err = _cli(["robustness", "--model", "dm_hostile_nets:Detach", "--data", str(root / "test.npz"),
                             "--n", "10", "--norms", "linf", "--eps-linf", "0.3", "--suite", "fast", "--no-plot",
                             "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "autoattack_summary.json").read_text())["results"][0]
    assert "zero_gradients" in summary["flags"]
    assert summary["robust_accuracy"] < summary["clean_accuracy"]


# --------------------------------------------------------------------------- 8, 9: errors of the model's forward


def test_a_runtime_error_in_the_forward_is_a_user_error_naming_the_source_and_the_batch(nets, tmp_path, capsys):
    root, _, x, y = nets
    model = load_classifier(model="dm_hostile_nets:FailBig", input_shape=(64,))  # the dummy batches are small
    with pytest.raises(ClassifierError, match=r"The model \(--model dm_hostile_nets:FailBig\) raised RuntimeError on "
                                              r"a batch of inputs of shape \(8, 64\): batch too big") as info:
        model(x[:8])
    assert info.value.user_error and isinstance(info.value.__cause__, RuntimeError)
    code, _, err = _cli(["attack", "--model", "dm_hostile_nets:FailBig", "--data", str(root / "test.npz"),
                         "--out", str(tmp_path / "o")], capsys)
    assert "raised RuntimeError on a batch of inputs of shape (40, 64): batch too big" in _one_line_error(code, err)


def test_a_value_error_in_the_forward_is_re_raised_with_context(nets, tmp_path, capsys):
    root = nets[0]
    with pytest.raises(ValueError, match=r"The model \(--model dm_hostile_nets:FwdValue\) raised ValueError on a "
                                         r"batch of inputs of shape \(1, 64\): inner value error"):
        load_classifier(model="dm_hostile_nets:FwdValue", input_shape=(64,))
    code, _, err = _cli(["attack", "--model", "dm_hostile_nets:FwdValue", "--data", str(root / "test.npz"),
                         "--out", str(tmp_path / "o")], capsys)
    assert "(--model dm_hostile_nets:FwdValue) raised ValueError on a batch" in _one_line_error(code, err)


def test_mean_with_the_wrong_number_of_channels_names_the_flag_and_the_channels(nets, tmp_path, capsys):
    root, module = nets[0], nets[1]
    with pytest.raises(ValueError, match=r"The 'mean' parameter of load_classifier must be 1 or 1 numbers \(--mean\): "
                                         r"one per channel of the inputs, whose shape \(1, 8, 8\) has 1 channel\. Got "
                                         r"'3 numbers \[0.1, 0.2, 0.3\]' instead"):
        load_classifier(model=nn.Sequential(nn.Flatten(), module.Net()), input_shape=(1, 8, 8), mean=[0.1, 0.2, 0.3])
    code, _, err = _cli(["attack", "--model", "dm_hostile_nets:Net", "--data", str(root / "test.npz"), "--std", "1",
                         "2", "--out", str(tmp_path / "o")], capsys)
    assert "'std' parameter of load_classifier must be 1 or 64 numbers (--std)" in _one_line_error(code, err)


def test_output_key_on_a_tuple_output_says_to_use_output_index(nets):
    with pytest.raises(ValueError, match=r"'output_key' parameter of ClassifierAdapter must be None, since the model "
                                         r"returned a tuple of 2 outputs .*not a dict: .*--output-index\)\. Got "
                                         r"'logits' instead"):
        load_classifier(model="dm_hostile_nets:Pair", input_shape=(64,), output_key="logits")


# --------------------------------------------------------------------------- 6: .pt2 files


def test_a_bad_pt2_file_gives_the_reason_without_torch_log_lines(nets, tmp_path, capfd):
    _, module, x, _ = nets
    (tmp_path / "garbage.pt2").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match=r"must be an exported program saved with torch.export.save .*torch.export.load "
                                         r"failed with"):
        load_classifier(model_file=tmp_path / "garbage.pt2")
    torch.jit.save(torch.jit.script(module.Net().eval()), str(tmp_path / "scripted.pt2"))
    with pytest.raises(ValueError, match=r"torch.export.load failed with RuntimeError: .*archive_format.*; it looks "
                                         r"like a TorchScript file \(torch.jit.save\): rename it to scripted.pt"):
        load_classifier(model_file=tmp_path / "scripted.pt2")
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Ran into the following error" not in captured.err, captured.err
    assert isinstance(load_classifier(model=ClassifierAdapter(module.Net()), input_shape=(64,)), ClassifierAdapter)


def test_output_index_on_a_dict_output_says_to_use_output_key():
    class Dict(nn.Module):
        def forward(self, x):
            return {"logits": x[:, :3], "features": x}

    with pytest.raises(ValueError, match=r"'output_index' parameter of ClassifierAdapter must be None, since the model "
                                         r"returned a dict .*pick the logits of a dict by key with output_key "
                                         r"\(--output-key\)\. Got 0 instead"):
        load_classifier(model=Dict(), input_shape=(4,), output_index=0)


# --------------------------------------------------------------------------- 3: the wrong output picked


def test_features_picked_as_logits_and_chance_accuracy_are_warned_about(nets, tmp_path, caplog):
    from deepmargin.experiments.external import ModelSource, load_external

    root, _, x, y = nets
    np.savez(tmp_path / "shuffled.npz", x_test=x.numpy(), y_test=((y + 1) % 10).numpy())  # every label wrong
    with caplog.at_level("WARNING", logger="deepmargin"):
        load_external(ModelSource(model="dm_hostile_nets:Pair", output_index=1), root / "test.npz")
    assert re.search(r"returns 64 outputs per input, but the labels of .*test.npz have 10 classes .*pick the logits "
                     r"with --output-index", caplog.text), caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="deepmargin"):
        load_external(ModelSource(model="dm_hostile_nets:Pair", output_index=0), tmp_path / "shuffled.npz")
    assert re.search(r"clean accuracy 0.0000 .* is near chance for its 10 classes", caplog.text), caplog.text
    assert "outputs per input" not in caplog.text  # 10 logits for the 10 classes
    caplog.clear()
    with caplog.at_level("WARNING", logger="deepmargin"):
        load_external(ModelSource(model="dm_hostile_nets:Pair", output_index=0), root / "test.npz")
    assert "outputs per input" not in caplog.text and "near chance" not in caplog.text  # the right output


# --------------------------------------------------------------------------- 10: --data-root, certification


def test_data_root_with_a_model_source_is_warned_about(nets, tmp_path, capsys):
    root = nets[0]
    code, _, err = _cli(["attack", "--model", "dm_hostile_nets:Net", "--data", str(root / "test.npz"), "--data-root",
                         str(tmp_path), "--attacks", "fgsm", "--eps", "0", "--no-plot", "--out", str(tmp_path / "o")],
                        capsys)
    assert code == 0, err
    assert f"--data-root {tmp_path} is ignored with --model: the test data comes from --data FILE.npz" in err


@pytest.mark.parametrize("options, says", [
    ({"model_file": "net.pt"}, "a TorchScript file (--model-file net.pt) holds a compiled graph"),
    ({"model_file": "net.pt2"}, "an exported program (--model-file net.pt2) is a flattened graph"),
    ({"model": "pkg.mod:build"}, "the forward of --model pkg.mod:build may combine its layers in any other way"),
])
def test_why_certification_is_skipped_is_said_for_each_source(options, says):
    from deepmargin.experiments.external import ModelSource

    assert says in ModelSource(**options).why_not_certified


# --------------------------------------------------------------------------- more error messages


def test_torchscript_errors_are_quoted_by_their_last_line_and_weights_that_are_torchscript(nets, tmp_path, capfd):
    _, module, _, _ = nets
    scripted = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(module.Net().eval()), str(scripted))
    with pytest.raises(ValueError, match=r"Calling it on a batch of shape \(1, 50\) raised RuntimeError: mat1 and mat2 "
                                         r"shapes cannot be multiplied \(1x50 and 64x10\)$"):
        load_classifier(model_file=scripted, input_shape=(50,))
    with pytest.raises(ValueError, match=r"'weights' parameter .* it is a TorchScript file \(torch.jit.save\), which "
                                         r"holds the model itself: pass it with --model-file"):
        load_classifier(model="dm_hostile_nets:Net", weights=scripted)
    (tmp_path / "garbage.pt").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match=r"torch.jit.load failed with RuntimeError: PytorchStreamReader failed reading "
                                         r"zip archive: not a ZIP archive\. Got"):
        load_classifier(model_file=tmp_path / "garbage.pt")
    assert "UserWarning" not in capfd.readouterr().err


def test_a_callable_that_needs_arguments_is_blamed_on_model_without_model_kwargs(nets):
    with pytest.raises(ValueError, match=r"'model' parameter .* calling dm_hostile_nets:Net.__init__\(\) raised "
                                         r"TypeError: .*missing 1 required positional argument: 'self'\. Got"):
        load_classifier(model="dm_hostile_nets:Net.__init__")
