"""Any classifier: a TorchScript file, an exported program and module:callable + state dict of one network measure alike.

The network (a small CNN with its normalisation built in and a ``(logits, features)`` output) is
written as a module file into a temporary folder put on ``sys.path``, trained briefly on the
bundled digits, and saved three ways. Every source must give the same clean logits and the same
AutoAttack result; the adapter's modes must survive the package's ``eval_mode`` bookkeeping.
"""

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
import torch.nn.functional as F
from torch import nn

from deepmargin.attacks import AutoAttack, accuracy_vs_epsilon, build_attack, check_model
from deepmargin.capture import eval_mode
from deepmargin.cli.main import main
from deepmargin.data import DatasetFileError, load_dataset
from deepmargin.experiments.external import ModelSource, load_external, read_test_npz
from deepmargin.models import ClassifierAdapter, load_classifier
from deepmargin.models.external import check_classifier, import_callable
from deepmargin.reports.robustness import load_rows

MODULE = "dm_external_tinynet"  # the module:callable source, written into a temporary folder
SHAPE = (1, 8, 8)
MEAN, STD = 0.3, 0.4

NET_SOURCE = textwrap.dedent(f"""
    import torch
    import torch.nn.functional as F
    from torch import nn

    NOT_CALLABLE = 3


    class TinyNet(nn.Module):
        def __init__(self, normalise: bool = True):
            super().__init__()
            self.normalise = normalise
            self.register_buffer("mean", torch.tensor({MEAN}).view(1, 1, 1, 1))
            self.register_buffer("std", torch.tensor({STD}).view(1, 1, 1, 1))
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            if self.normalise:
                x = (x - self.mean) / self.std
            h = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
            features = h.flatten(1)
            return self.fc(features), features


    def build(normalise: bool = True):
        return TinyNet(normalise)


    def not_a_module():
        return {{"weights": 1}}
""")


class Saved:
    """The trained network, its three saved forms and test data."""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("external")
    (root / f"{MODULE}.py").write_text(NET_SOURCE)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        module = importlib.import_module(MODULE)
        bundle = load_dataset("digits", seed=0)
        torch.manual_seed(0)
        net = module.build()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(60):
            opt.zero_grad()
            F.cross_entropy(net(bundle.train.x)[0], bundle.train.y).backward()
            opt.step()
        net.eval()
        s = Saved()
        s.root, s.net, s.module = root, net, module
        s.x, s.y = bundle.test.x[:40], bundle.test.y[:40]
        s.script, s.exported, s.weights = root / "net.ts", root / "net.pt2", root / "net_state.pt"
        torch.jit.save(torch.jit.script(net), str(s.script))
        program = torch.export.export(net, (s.x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(s.exported))
        torch.save(net.state_dict(), s.weights)
        s.data = root / "test.npz"  # test split only, flat inputs: reshaped by --input-shape
        np.savez(s.data, x_test=s.x.reshape(len(s.y), -1).numpy(), y_test=s.y.numpy())
        yield s


def _sources(s: Saved) -> dict[str, ClassifierAdapter]:
    common = dict(output_index=0, input_shape=SHAPE)
    return {
        "torchscript": load_classifier(model_file=s.script, **common),
        "exported": load_classifier(model_file=str(s.exported), **common),
        "callable": load_classifier(model=f"{MODULE}:build", weights=s.weights, **common),
    }


# --------------------------------------------------------------------------- the three sources agree


def test_three_sources_give_identical_logits_and_autoattack_results(saved):
    models = _sources(saved)
    reference = saved.net(saved.x)[0]
    results = {}
    for name, model in models.items():
        assert not model.training and not any(m.training for m in model.modules()), name
        torch.testing.assert_close(model(saved.x), reference, rtol=0, atol=0, msg=name)
        results[name] = AutoAttack(norm="linf", eps=0.1, version="fast", seed=0).evaluate(model, saved.x, saved.y)
    first = results["callable"]
    assert first.clean_accuracy > 0.9 and 0.0 < first.robust_accuracy < first.clean_accuracy  # a real measurement
    for name, result in results.items():
        assert result.robust_accuracy == first.robust_accuracy, name
        assert result.accuracy_after == first.accuracy_after, name
        assert torch.equal(result.x_adv, first.x_adv), name


def test_input_gradients_flow_through_every_source(saved):
    grads = {}
    for name, model in _sources(saved).items():
        x = saved.x[:8].clone().requires_grad_(True)
        F.cross_entropy(model(x), saved.y[:8]).backward()
        grads[name] = x.grad
        assert x.grad.abs().sum() > 0, name
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads["callable"], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("name", ["torchscript", "exported", "callable"])
def test_modes_survive_train_eval_and_eval_mode(saved, name):
    model = _sources(saved)[name]
    clean = model(saved.x).detach()
    model.train()  # an exported program refuses train(): the adapter sets the flags instead
    assert all(m.training for m in model.modules())
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
        torch.testing.assert_close(model(saved.x), clean, rtol=0, atol=0)
    assert all(m.training for m in model.modules())
    if name != "exported":  # the flag reaches the batch norm inside (an exported graph fixed its mode)
        assert not torch.allclose(model(saved.x), clean)
    model.eval()
    assert not any(m.training for m in model.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no reliability warning: eval mode, logits, deterministic, gradients
        fired = check_model(model, saved.x, saved.y)
    assert not any(fired.values())


def test_mean_std_wrapping_equals_the_normalisation_built_in(saved):
    built_in = load_classifier(model=f"{MODULE}:build", weights=saved.weights, output_index=0, input_shape=SHAPE)
    wrapped = load_classifier(model=f"{MODULE}:build", weights=saved.weights, model_kwargs={"normalise": False},
                              mean=[MEAN], std=[STD], output_index=0, input_shape=SHAPE)
    bare = load_classifier(model=f"{MODULE}:build", weights=saved.weights, model_kwargs={"normalise": False},
                           output_index=0, input_shape=SHAPE)
    torch.testing.assert_close(wrapped(saved.x), built_in(saved.x), rtol=0, atol=0)
    assert not torch.allclose(bare(saved.x), built_in(saved.x))  # the normalisation matters
    attack = build_attack("apgd-ce", norm="linf", eps=0.1, steps=20, seed=0)
    torch.testing.assert_close(attack(wrapped, saved.x, saved.y), attack(built_in, saved.x, saved.y), rtol=0, atol=0)


def test_normalisation_is_per_channel_and_in_the_input_units():
    mean, std = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.3, 0.4])
    model = ClassifierAdapter(nn.Flatten(), mean=mean.tolist(), std=std.tolist())
    x = torch.rand(4, 3, 2, 2)
    expected = ((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).flatten(1)
    torch.testing.assert_close(model(x), expected)
    flat = ClassifierAdapter(nn.Identity(), mean=mean.tolist(), std=[2.0])
    torch.testing.assert_close(flat(x[:, :, 0, 0]), (x[:, :, 0, 0] - mean) / 2.0)
    with pytest.raises(ValueError, match=r"The 'mean' parameter of ClassifierAdapter must be 1 or 2 numbers"):
        model(torch.rand(4, 2, 2, 2))
    with pytest.raises(ValueError, match=r"The 'std' parameter of ClassifierAdapter must be numbers > 0"):
        ClassifierAdapter(nn.Identity(), std=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"'mean' parameter of ClassifierAdapter must be one or more finite"):
        ClassifierAdapter(nn.Identity(), mean=[float("nan")])


# --------------------------------------------------------------------------- picking the logits


class _Outputs(nn.Module):
    """Returns the flattened input as logits inside a structure of the given kind."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        logits = x.flatten(1)
        if self.kind == "tuple":
            return logits, logits.sum(1)
        if self.kind == "list":
            return [logits.sum(1), logits]
        if self.kind == "dict":
            return {"features": logits.sum(1), "logits": logits}
        if self.kind == "1d":
            return logits.sum(1)
        if self.kind == "int":
            return logits.long()
        return logits


@pytest.mark.parametrize("kind, options", [("tuple", {"output_index": 0}), ("list", {"output_index": -1}),
                                           ("dict", {"output_key": "logits"}), ("tensor", {})])
def test_logits_are_picked_from_tuples_lists_and_dicts(kind, options):
    x = torch.rand(3, 4)
    model = load_classifier(model=_Outputs(kind), input_shape=(4,), **options)
    torch.testing.assert_close(model(x), x)


@pytest.mark.parametrize("kind, options, match", [
    ("tuple", {}, r"'output_index' parameter of ClassifierAdapter must be the position of the logits \(--output-index\), "
                  r"since the model returned a tuple of 2 outputs \(tensor \(1, 4\) float32, tensor \(1,\) float32\)"),
    ("dict", {}, r"'output_key' .* since the model returned a dict with the keys \['features', 'logits'\]"),
    ("dict", {"output_key": "probs"}, r"must be one of the keys \['features', 'logits'\] .* Got 'probs' instead"),
    ("tuple", {"output_index": 2}, r"must be an int in \[-2, 1\] .* Got 2 instead"),
    ("tensor", {"output_index": 0}, r"'output_index' .* must be None, since the model returned a tensor"),
    ("1d", {}, r"must return logits as a 2-d floating-point tensor \(N, C\) .* Got a tensor \(1,\) float32 instead"),
    ("int", {}, r"2-d floating-point tensor .* Got a tensor \(1, 4\) int64 instead"),
])
def test_outputs_without_usable_logits_are_refused_at_load(kind, options, match):
    with pytest.raises(ValueError, match=match):
        load_classifier(model=_Outputs(kind), input_shape=(4,), **options)


def test_output_index_and_key_together_are_refused():
    with pytest.raises(ValueError, match=r"'output_key' parameter of ClassifierAdapter must be None when output_index"):
        ClassifierAdapter(nn.Identity(), output_index=0, output_key="logits")


# --------------------------------------------------------------------------- bad sources


@pytest.mark.parametrize("options, exc, match", [
    ({}, ValueError, r"Exactly one of the 'model_file' and 'model' parameters of load_classifier .* Got neither"),
    ({"model_file": "x.pt2", "model": f"{MODULE}:build"}, ValueError, r"Exactly one .* Got both"),
    ({"model": f"{MODULE}.build"}, ValueError, r"'model' parameter of load_classifier must be a string "
                                              r"'package.module:callable'"),
    ({"model": "dm_no_such_module_xyz:build"}, ValueError,
     r"importing 'dm_no_such_module_xyz' failed with ModuleNotFoundError"),
    ({"model": f"{MODULE}:nope"}, ValueError, rf"the module '{MODULE}' has no attribute 'nope' \(it has \["),
    ({"model": f"{MODULE}:NOT_CALLABLE"}, TypeError, r"'NOT_CALLABLE' must be callable, but it is a int"),
    ({"model": f"{MODULE}:not_a_module"}, TypeError, r"returning an nn.Module; .*not_a_module\(\) returned a dict"),
    ({"model": f"{MODULE}:build", "model_kwargs": {"width": 2}}, ValueError,
     r"'model_kwargs' .* keyword arguments that .*:build accepts; calling it raised TypeError"),
    ({"model": 3}, TypeError, r"'model' parameter of load_classifier must be 'package.module:callable' or an nn.Module"),
    ({"model": nn.Linear(2, 2), "model_kwargs": {"a": 1}}, ValueError, r"'model_kwargs' .* None when model is an nn.Module"),
])
def test_bad_model_specs(saved, options, exc, match):
    with pytest.raises(exc, match=match):
        load_classifier(**options)


def test_the_callable_is_found_in_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "dm_cwd_net.py").write_text("from torch import nn\n\ndef build():\n    return nn.Linear(3, 2)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert isinstance(import_callable("dm_cwd_net:build")(), nn.Linear)
    assert str(tmp_path) not in sys.path  # only while importing


def test_bad_weights(saved, tmp_path):
    spec = f"{MODULE}:build"
    state = dict(saved.net.state_dict())
    del state["fc.bias"]
    state["extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "keys.pt")
    with pytest.raises(ValueError, match=r"strict=True\): missing keys \['fc.bias'\], unexpected keys \['extra'\]"):
        load_classifier(model=spec, weights=tmp_path / "keys.pt")
    state = dict(saved.net.state_dict(), **{"fc.bias": torch.zeros(3)})
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"whose tensors fit .*size mismatch for fc.bias"):
        load_classifier(model=spec, weights=tmp_path / "shape.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"must be a state dict \(a dict of tensors.* holding a list"):
        load_classifier(model=spec, weights=tmp_path / "list.pt")
    torch.save(saved.net, tmp_path / "pickled.pt")  # a whole pickled module: refused by weights_only
    with pytest.raises(ValueError, match=r"readable with torch.load\(path, weights_only=True\); reading it failed with"):
        load_classifier(model=spec, weights=tmp_path / "pickled.pt")
    with pytest.raises(FileNotFoundError, match=r"'weights' parameter of load_classifier must name an existing"):
        load_classifier(model=spec, weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"'weights' parameter of load_classifier must be None with model_file"):
        load_classifier(model_file=saved.script, weights=saved.weights)
    # a dict holding the state dict under 'state_dict' (Lightning, timm) is read too
    torch.save({"state_dict": saved.net.state_dict(), "epoch": torch.tensor(3)}, tmp_path / "wrapped.pt")
    wrapped = load_classifier(model=spec, weights=tmp_path / "wrapped.pt", output_index=0)
    torch.testing.assert_close(wrapped(saved.x), saved.net(saved.x)[0], rtol=0, atol=0)


def test_bad_model_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'model_file' parameter of load_classifier must name an existing file"):
        load_classifier(model_file=tmp_path / "missing.ts")
    (tmp_path / "garbage.ts").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"must be a TorchScript file saved with torch.jit.save.*torch.jit.load failed"):
        load_classifier(model_file=tmp_path / "garbage.ts")
    with pytest.raises(ValueError, match=r"it reads as a plain torch.save file \(a state dict\?\): pass "
                                         r"model='module:callable' \(--model\) with weights=this file"):
        load_classifier(model_file=saved.weights)
    (tmp_path / "garbage.pt2").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"must be an exported program saved with torch.export.save.*torch.export.load "
                                         r"failed"):
        load_classifier(model_file=tmp_path / "garbage.pt2")


def test_an_exported_program_with_a_fixed_batch_size_is_refused_with_the_fix(saved, tmp_path):
    torch.export.save(torch.export.export(saved.net, (saved.x[:2],)), str(tmp_path / "static.pt2"))
    with pytest.raises(ValueError, match=r"needs a dynamic batch dimension: .*Dim\('batch'\).*batch of shape \(1, 1, 8, 8\)"):
        load_classifier(model_file=tmp_path / "static.pt2", output_index=0, input_shape=SHAPE)


def test_batch_statistics_frozen_into_a_traced_model_are_warned_about(saved, tmp_path):
    net = saved.module.build()
    net.load_state_dict(saved.net.state_dict())
    traced = torch.jit.trace(net.train(), saved.x[:4])  # traced in training mode: batch statistics in the graph
    with pytest.warns(UserWarning, match=r"changes with the other inputs of its batch"):
        check_classifier(ClassifierAdapter(traced, output_index=0), SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_classifier(ClassifierAdapter(saved.net, output_index=0), SHAPE)


# --------------------------------------------------------------------------- data and the model source


def test_read_test_npz_bounds_and_shapes(saved, tmp_path):
    data = read_test_npz(saved.data)
    assert data.bounds == (0.0, 1.0) and tuple(data.x.shape) == (40, 64) and data.y.dtype == torch.int64
    np.savez(tmp_path / "bytes.npz", x_test=(saved.x * 255).numpy(), y_test=saved.y.numpy())
    with pytest.raises(DatasetFileError, match=r"within the default bounds \(pass --bounds LOW HIGH.*\) \[0, 1\].*"
                                               r"Got 'x_test' values in \[0, 255\]"):
        read_test_npz(tmp_path / "bytes.npz")
    assert read_test_npz(tmp_path / "bytes.npz", bounds=(0, 255)).bounds == (0.0, 255.0)
    np.savez(tmp_path / "file_bounds.npz", x_test=saved.x.numpy(), y_test=saved.y.numpy(), bounds=np.array([0.0, 2.0]))
    assert read_test_npz(tmp_path / "file_bounds.npz").bounds == (0.0, 2.0)
    np.savez(tmp_path / "no_labels.npz", x_test=saved.x.numpy())
    with pytest.raises(DatasetFileError, match=r"must hold the keys 'x_test' and 'y_test'.*Got keys \['x_test'\]"):
        read_test_npz(tmp_path / "no_labels.npz")
    np.savez(tmp_path / "ints.npz", x_test=(saved.x * 255).numpy().astype(np.uint8), y_test=saved.y.numpy())
    with pytest.raises(DatasetFileError, match=r"floating-point inputs .* in 'x_test'"):
        read_test_npz(tmp_path / "ints.npz")
    full = tmp_path / "full.npz"  # a whole dataset file: read as one
    np.savez(full, x_train=saved.x.numpy(), y_train=saved.y.numpy(), x_test=saved.x[:5].numpy(), y_test=saved.y[:5].numpy())
    assert tuple(read_test_npz(full).x.shape) == (5, *SHAPE)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        read_test_npz(tmp_path / "missing.npz")


def test_load_external_reshapes_flat_data_and_checks_classes(saved, tmp_path):
    source = ModelSource(model_file=str(saved.exported), output_index=0, input_shape=SHAPE)
    models, x, y, bounds, dataset = load_external(source, saved.data, n=10)
    assert list(models) == ["net"] and tuple(x.shape) == (10, *SHAPE) and bounds == (0.0, 1.0)
    torch.testing.assert_close(models["net"](x), saved.net(saved.x[:10])[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"'input_shape' parameter of load_external must be a shape of 64 values"):
        load_external(ModelSource(model_file=str(saved.exported), output_index=0, input_shape=(1, 7, 7)), saved.data)
    with pytest.raises(ValueError, match=r"'data' parameter of load_external must be a .npz file .*Got None"):
        load_external(source, None)
    np.savez(tmp_path / "many.npz", x_test=saved.x.reshape(40, -1).numpy(), y_test=np.full(40, 11))
    with pytest.raises(ValueError, match=r"must return a logit for every class .* \(labels up to 11\). Got 10 logits"):
        load_external(source, tmp_path / "many.npz")


def test_model_source_options():
    assert ModelSource.from_options(model_file=None, model=None, weights=None) is None
    with pytest.raises(ValueError, match=r"The options --weights --mean describe an external model and need "
                                         r"--model-file FILE or --model MODULE:CALLABLE"):
        ModelSource.from_options(model_file=None, weights="w.pt", mean=(0.5,))
    with pytest.raises(ValueError, match=r"Exactly one of .* Got both"):
        ModelSource(model_file="a.pt2", model="m:f")
    with pytest.raises(ValueError, match=r"'bounds' parameter of ModelSource must be two numbers \(low, high\)"):
        ModelSource(model_file="a.pt2", bounds=(1.0, 0.0))
    source = ModelSource(model="pkg.mod:build", weights="w.pt", bounds=(0, 255), mean=[0.5])
    assert source.name == "pkg.mod:build" and source.bounds == (0.0, 255.0)
    assert json.loads(json.dumps(source.record()))["mean"] == [0.5]


# --------------------------------------------------------------------------- the command


def test_attack_command_measures_an_exported_program(saved, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["attack", "--model-file", str(saved.exported), "--data", str(saved.data), "--input-shape", "1", "8",
                 "8", "--output-index", "0", "--attacks", "apgd-ce", "--eps", "0", "0.1", "--n", "20",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = load_rows(out / "rows.jsonl")
    assert [(r["model"], r["attack"], r["eps"]) for r in rows] == [("net", "apgd-ce", 0.0), ("net", "apgd-ce", 0.1)]
    assert (out / "accuracy_vs_eps.png").stat().st_size > 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_source"]["model_file"] == str(saved.exported) and config["checkpoints"] == {}
    # the rows are the library's numbers on the eager network
    model = load_classifier(model=saved.net, output_index=0)
    expected = accuracy_vs_epsilon({"net": model}, build_attack("apgd-ce", norm="linf", bounds=(0, 1), seed=0),
                                   saved.x[:20], saved.y[:20], [0.0, 0.1], seed=0)
    assert [r["accuracy"] for r in rows] == [r["accuracy"] for r in expected]
    assert rows[1]["accuracy"] < rows[0]["accuracy"]


def test_attack_command_measures_a_callable_with_weights(saved, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["attack", "--model", f"{MODULE}:build", "--weights", str(saved.weights), "--model-kwargs",
                 '{"normalise": false}', "--mean", str(MEAN), "--std", str(STD), "--data", str(saved.data),
                 "--input-shape", "1", "8", "8", "--output-index", "0", "--attacks", "fgsm", "--eps", "0", "0.1",
                 "--n", "20", "--no-plot", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = load_rows(out / "rows.jsonl")
    assert {r["model"] for r in rows} == {f"{MODULE}:build"}
    clean = (saved.net(saved.x[:20])[0].argmax(1) == saved.y[:20]).float().mean().item()
    assert rows[0]["accuracy"] == pytest.approx(clean)


@pytest.mark.parametrize("argv, match", [
    (["--model-file", "net.pt2"], r"'data' parameter of load_external must be a .npz file"),
    (["ckpt.pt", "--model-file", "net.pt2", "--data", "d.npz"], r"'checkpoints' and 'source' parameters .* must be empty"),
    ([], r"'checkpoints' parameter of attack_checkpoints must name at least one checkpoint, or give a model"),
    (["--weights", "w.pt"], r"The options --weights describe an external model and need --model-file"),
    (["--model-file", "net.pt2", "--data", "digits"], r"'data' parameter of load_external must be a .npz file"),
])
def test_attack_command_errors(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["attack", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepmargin attack: error: ")
    assert re.search(match, err), err


def test_a_model_that_fails_on_the_input_shape_is_refused_at_load(saved):
    with pytest.raises(ValueError, match=r"must run on a batch of inputs of shape \(N, 3, 8, 8\) for any N\. Calling it "
                                         r"on a batch of shape \(1, 3, 8, 8\) raised RuntimeError"):
        load_classifier(model_file=saved.script, output_index=0, input_shape=(3, 8, 8))
