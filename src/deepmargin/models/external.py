"""Any classifier as a model deepmargin can measure: a TorchScript file, an exported program, or ``module:callable``.

:func:`load_classifier` reads the classifier from one of three sources and wraps it in a
:class:`ClassifierAdapter`, the ``nn.Module`` every attack, metric and check of the package takes:

* ``model_file='net.pt2'``: a program saved with ``torch.export.save`` (read with
  ``torch.export.load(path).module()``); any other file name: a TorchScript file saved with
  ``torch.jit.save`` (read with ``torch.jit.load(path, map_location='cpu')``);
* ``model='package.module:callable'`` (called with ``model_kwargs``) and ``weights='state_dict.pt'``
  (read with ``torch.load(..., weights_only=True)``, loaded with ``strict=True``);
* ``model=<an nn.Module>``: the Python API takes any module as it is.

The adapter puts the input normalisation inside the model (``(x - mean) / std`` per channel), so
that attacks work in the raw input space where the bounds and radii are defined, and picks the
logits out of a tuple, list or dict output (``output_index`` / ``output_key``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> model = load_classifier(model=net, input_shape=(1, 2, 2), mean=[0.5], std=[0.25])
    >>> tuple(model(torch.rand(5, 1, 2, 2)).shape), model.training
    ((5, 3), False)
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..capture.modes import eval_mode
from ..checks import param_error

logger = logging.getLogger(__name__)

__all__ = ["EXPORTED_SUFFIX", "ClassifierAdapter", "ClassifierError", "check_classifier", "import_callable",
           "input_gradient_problem", "load_classifier"]

#: File suffix of an exported program (``torch.export.save``); other model files are read as TorchScript.
EXPORTED_SUFFIX = ".pt2"

_OWNER = "load_classifier"


def _channel_error(owner: str, name: str, stats: torch.Tensor, shape: Sequence[int]) -> ValueError:
    """'The 'mean' parameter ... (--mean) must hold 1 or C numbers, one per channel ...': the fix included."""
    channels = int(shape[0]) if len(shape) else 0
    what, inputs = ("channel", "inputs") if len(shape) > 1 else ("feature", "flat inputs")
    return param_error(owner, name, f"1 or {channels} numbers (--{name}): one per {what} of the {inputs}, whose shape "
                       f"{tuple(shape)} has {channels} {what}{'s' if channels != 1 else ''}",
                       f"{stats.numel()} numbers {[round(v, 6) for v in stats.tolist()]}")


class ClassifierError(RuntimeError):
    """The wrapped classifier raised while it was called (the original error is the ``__cause__``).

    A user error: the command line prints it in one line (``user_error = True``), naming the model's
    source and the shape of the batch it failed on.
    """

    user_error = True


def _error_text(err: BaseException) -> str:
    """An error's message on one line; of a TorchScript error (a traceback of the scripted code), its last line."""
    text = str(err)
    if "Traceback of TorchScript" in text:  # the last line is "RuntimeError: what went wrong"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = re.sub(r"^[\w.]*(Error|Exception): ", "", lines[-1]) if lines else text
    text = text.split(" This is an internal miniz error.")[0]  # torch's advice on corrupt zip files follows
    return " ".join(text.split()).rstrip(".")  # quoted inside a sentence


def _one_line(err: BaseException, limit: int = 300) -> str:
    """``'RuntimeError: batch too big'``: an error's type and message on one line."""
    text = _error_text(err)
    return f"{type(err).__name__}: {text[:limit]}{' ...' if len(text) > limit else ''}" if text else type(err).__name__


def _describe_output(out: Any) -> str:
    """``'a tuple of 2 outputs (tensor (4, 10), tensor (4, 64))'`` and the like, for error messages."""
    def one(v: Any) -> str:
        return f"tensor {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}" if isinstance(v, torch.Tensor) \
            else type(v).__name__
    if isinstance(out, Mapping):
        return f"a dict with the keys {list(out)} ({', '.join(f'{k!r}: {one(v)}' for k, v in out.items())})"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} outputs ({', '.join(one(v) for v in out)})"
    return f"a {one(out)}"


def _channel_stats(value: Any, name: str) -> torch.Tensor | None:
    """``mean``/``std`` as a float tensor ``(C,)``; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        t = torch.as_tensor(value, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise param_error("ClassifierAdapter", name, "a number or a sequence of numbers, one per input channel",
                          value, TypeError) from None
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise param_error("ClassifierAdapter", name, "one or more finite numbers, one per input channel",
                          value.tolist() if isinstance(value, torch.Tensor) else value)
    if name == "std" and not bool((t > 0).all()):
        raise param_error("ClassifierAdapter", name, "numbers > 0, one per input channel",
                          value.tolist() if isinstance(value, torch.Tensor) else value)
    return t.float()


class ClassifierAdapter(nn.Module):
    r"""Wrap any classifier as a module returning logits ``(N, C)`` of raw (unnormalised) inputs.

    .. math:: \mathrm{logits}(x) = \mathrm{pick}\big(f((x - \mu) / \sigma)\big)

    where :math:`\mu, \sigma` are per channel (dimension 1 of the input) and ``pick`` takes
    ``output[output_index]`` of a tuple or list output, ``output[output_key]`` of a dict output,
    or the output itself when it is a tensor. Gradients flow through to the input, so
    gradient attacks work in the raw input space where their bounds and radii are defined.

    ``train(mode)`` sets the mode of the wrapped model; a model that refuses ``train()`` (the
    module of an exported program, whose graph fixed its mode when it was exported) gets the
    ``training`` flag of each submodule set instead, as :func:`~deepmargin.capture.eval_mode`
    does, so the package's mode bookkeeping works on every source.

    Args:
        model: the classifier (any ``nn.Module``, a ``torch.jit.ScriptModule``, an exported
            program's ``.module()``).
        mean: per-channel mean subtracted from the input (one number, or one per channel).
            Default: none.
        std: per-channel standard deviation dividing the input (numbers > 0). Default: none.
        output_index: the position of the logits in a tuple or list output.
        output_key: the key of the logits in a dict output.
        source: how the model was given, for error messages (e.g. ``'--model-file net.pt'``).
            Default: the model's class name.

    Attributes:
        input_gradient: ``False`` when the model gives no input gradient (it detaches its input,
            runs under ``torch.no_grad()``, or its backward pass fails; see
            :func:`input_gradient_problem`, which :func:`load_classifier` runs). The adapter then
            calls the model on a detached input and adds ``0 * x`` to the logits, so gradient
            attacks see an all-zero gradient (flagged as gradient masking by the reliability checks,
            and breaking no input) instead of an autograd error, and AutoAttack skips its gradient
            attacks. ``None`` (default): not checked; the model is called as it is.
        input_gradient_problem: why there is none (``None`` when there is one or it was not checked).

    Shape:
        Input ``(N, C, ...)`` or ``(N, D)``; ``mean``/``std`` hold 1 or ``C`` (``D``) numbers.
        Output ``(N, num_classes)``.

    Raises:
        ValueError: (when called) the model returned a tuple, list or dict and no
            ``output_index``/``output_key`` says which element is the logits, the index or key
            is not in the output, or the logits are not a 2-d floating-point tensor ``(N, C)``
            with one row per input; ``mean``/``std`` do not have 1 or ``C`` numbers; the model
            raised a ``ValueError`` (re-raised naming ``source`` and the batch shape).
        ClassifierError: (when called) the model raised any other error (the original is the
            ``__cause__``; a ``TypeError`` stays a ``TypeError``).

    Example:
        >>> import torch
        >>> class Net(nn.Module):
        ...     def forward(self, x):
        ...         return {"logits": x.flatten(1)[:, :3], "features": x}
        >>> model = ClassifierAdapter(Net(), mean=[0.5], std=[0.5], output_key="logits")
        >>> model(torch.ones(2, 1, 2, 2))
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float] | float | torch.Tensor | None = None,
        std: Sequence[float] | float | torch.Tensor | None = None,
        output_index: int | None = None,
        output_key: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise param_error("ClassifierAdapter", "model", "an nn.Module", type(model).__name__, TypeError)
        if output_index is not None and (isinstance(output_index, bool) or not isinstance(output_index, int)):
            raise param_error("ClassifierAdapter", "output_index", "None or an int", output_index, TypeError)
        if output_key is not None and not isinstance(output_key, str):
            raise param_error("ClassifierAdapter", "output_key", "None or a str", output_key, TypeError)
        if output_index is not None and output_key is not None:
            raise param_error("ClassifierAdapter", "output_key", "None when output_index is given (a tuple output "
                              "takes an index, a dict output a key)", output_key)
        if source is not None and not isinstance(source, str):
            raise param_error("ClassifierAdapter", "source", "None or a str", source, TypeError)
        self.model = model
        self.output_index = output_index
        self.output_key = output_key
        self.source = source
        self.input_gradient: bool | None = None
        self.input_gradient_problem: str | None = None
        mean_t, std_t = _channel_stats(mean, "mean"), _channel_stats(std, "std")
        self.normalise = mean_t is not None or std_t is not None
        self.register_buffer("mean", mean_t if mean_t is not None else torch.zeros(1))
        self.register_buffer("std", std_t if std_t is not None else torch.ones(1))

    def extra_repr(self) -> str:
        parts = []
        if self.normalise:
            parts += [f"mean={[round(v, 6) for v in self.mean.tolist()]}", f"std={[round(v, 6) for v in self.std.tolist()]}"]
        if self.output_index is not None:
            parts.append(f"output_index={self.output_index}")
        if self.output_key is not None:
            parts.append(f"output_key={self.output_key!r}")
        return ", ".join(parts)

    def train(self, mode: bool = True) -> ClassifierAdapter:
        """Set training mode on the adapter and the wrapped model (flags set directly where ``train()`` is refused)."""
        self.training = mode
        try:
            self.model.train(mode)
        except NotImplementedError:  # torch.export's module: "Calling train() is not supported yet"
            for m in self.model.modules():
                m.training = mode
        return self

    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        if not self.normalise:
            return x
        channels = x.shape[1] if x.dim() >= 2 else 0
        for name, t in (("mean", self.mean), ("std", self.std)):
            if t.numel() not in (1, channels):
                raise _channel_error("ClassifierAdapter", name, t, tuple(x.shape[1:]))
        view = (1, -1, *([1] * (x.dim() - 2)))
        return (x - self.mean.to(x.dtype).view(view)) / self.std.to(x.dtype).view(view)

    def _logits(self, out: Any, n: int) -> torch.Tensor:
        if isinstance(out, Mapping):
            if self.output_index is not None:
                raise param_error("ClassifierAdapter", "output_index", f"None, since the model returned "
                                  f"{_describe_output(out)}: an index picks from a tuple or list; pick the logits "
                                  "of a dict by key with output_key (--output-key)", self.output_index)
            if self.output_key is None:
                raise param_error("ClassifierAdapter", "output_key", f"the key of the logits (--output-key), since the "
                                  f"model returned {_describe_output(out)}", None)
            if self.output_key not in out:
                raise param_error("ClassifierAdapter", "output_key", f"one of the keys {list(out)} of the model's "
                                  "dict output", self.output_key)
            out = out[self.output_key]
        elif isinstance(out, (tuple, list)):
            if self.output_key is not None:
                raise param_error("ClassifierAdapter", "output_key", f"None, since the model returned "
                                  f"{_describe_output(out)}, not a dict: a key picks from a dict; pick the logits "
                                  f"of a {type(out).__name__} by position with output_index (--output-index)",
                                  self.output_key)
            if self.output_index is None:
                raise param_error("ClassifierAdapter", "output_index", f"the position of the logits (--output-index), "
                                  f"since the model returned {_describe_output(out)}", None)
            if not -len(out) <= self.output_index < len(out):
                raise param_error("ClassifierAdapter", "output_index", f"an int in [{-len(out)}, {len(out) - 1}] (the "
                                  f"model returned {_describe_output(out)})", self.output_index)
            out = out[self.output_index]
        elif self.output_index is not None or self.output_key is not None:
            which = "output_index" if self.output_index is not None else "output_key"
            raise param_error("ClassifierAdapter", which, f"None, since the model returned {_describe_output(out)} "
                              "(an index picks from a tuple or list, a key from a dict)",
                              self.output_index if which == "output_index" else self.output_key)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or not out.is_floating_point() or out.shape[0] != n:
            raise ValueError(
                f"The classifier must return logits as a 2-d floating-point tensor (N, C) with N = {n}, one row "
                f"per input (pick them from a tuple/list with output_index, --output-index, or from a dict with "
                f"output_key, --output-key). Got {_describe_output(out)} instead."
            )
        return out

    def _call_error(self, err: Exception, x: torch.Tensor) -> Exception:
        """The error ``err`` of the wrapped model, re-raised naming the source and the batch shape."""
        text = _error_text(err)
        message = (f"The model ({self.source or type(self.model).__name__}) raised {type(err).__name__} on a batch "
                   f"of inputs of shape {tuple(x.shape)}{': ' + text[:300] if text else ''}")
        if isinstance(err, (ValueError, TypeError)):
            return type(err)(message) if type(err) in (ValueError, TypeError) else ValueError(message)
        return ClassifierError(message)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = self._normalised(x)
        detach = self.input_gradient is False and x.requires_grad and torch.is_grad_enabled()
        try:
            out = self.model(inputs.detach() if detach else inputs)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:
            raise self._call_error(err, x) from err
        logits = self._logits(out, x.shape[0])
        if detach:  # no input gradient: an explicit zero one (see ``input_gradient``)
            flat = x.flatten(1) if x.dim() > 1 else x.unsqueeze(1)
            logits = logits + 0 * flat[:, :1].to(logits.dtype)
        return logits


# --------------------------------------------------------------------------- sources


@contextlib.contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The current directory first on ``sys.path`` while importing (a console script does not put it there).

    First, so that the user's ``test.py`` beats the standard library's ``test`` package; only the
    entry added here is removed afterwards (whatever the imported module adds to ``sys.path`` stays).
    """
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a module written since the last import is found
    try:
        yield
    finally:
        if sys.path and sys.path[0] == cwd:
            del sys.path[0]
        elif cwd in sys.path:
            sys.path.remove(cwd)


def import_callable(spec: str, *, owner: str = _OWNER, name: str = "model") -> Any:
    """The object named by ``'package.module:attribute'`` (the attribute may be dotted, ``'mod:Class.build'``).

    The module is imported from the current directory, then from ``sys.path``.

    Raises:
        ValueError: ``spec`` has no single colon, the module cannot be imported (the error its
            import raised is quoted, whatever it is: ``ImportError``, ``SyntaxError``, an error of
            the module's own code), or it has no such attribute.
        TypeError: the object is not callable.

    Example:
        >>> import_callable("collections:OrderedDict").__name__
        'OrderedDict'
    """
    expected = "a string 'package.module:callable' (a module importable from the current directory or sys.path)"
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise param_error(owner, name, expected, spec, TypeError if not isinstance(spec, str) else ValueError)
    module_name, attr = (part.strip() for part in spec.split(":"))
    try:
        with _cwd_on_path():
            module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, SyntaxError, or whatever the module's own code raised
        raise param_error(owner, name, f"{expected}; importing {module_name!r} failed with {_one_line(err)}",
                          spec) from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))
            raise param_error(owner, name, f"{expected}; the module {module_name!r} has no attribute {attr!r} "
                              f"(it has {public[:20]}{' ...' if len(public) > 20 else ''})", spec)
        obj = getattr(obj, part)
    if not callable(obj):
        raise param_error(owner, name, f"{expected}; {attr!r} must be callable, but it is a {type(obj).__name__}",
                          spec, TypeError)
    return obj


def _kwargs_refused(factory: Any, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``factory``'s signature refuses ``kwargs`` (unknown when it has no signature: ``True``)."""
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError:
        return True
    except ValueError:  # no signature (a builtin): a TypeError is then blamed on the arguments
        return True
    return False


def _build_from_callable(spec: str, kwargs: Mapping[str, Any]) -> nn.Module:
    factory = import_callable(spec)
    try:
        net = factory(**kwargs)
    except TypeError as err:
        if kwargs and _kwargs_refused(factory, kwargs):
            raise param_error(_OWNER, "model_kwargs", f"keyword arguments that {spec} accepts; calling it raised "
                              f"{_one_line(err)} (fix --model-kwargs)", dict(kwargs)) from err
        raise param_error(_OWNER, "model", f"a 'module:callable' (--model) that builds the model; calling "
                          f"{spec}({_show_kwargs(kwargs)}) raised {_one_line(err)}", spec) from err
    except Exception as err:  # the factory's own error (a missing file, a bad setting...)
        raise param_error(_OWNER, "model", f"a 'module:callable' (--model) that builds the model; calling "
                          f"{spec}({_show_kwargs(kwargs)}) raised {_one_line(err)}", spec) from err
    if not isinstance(net, nn.Module):
        raise param_error(_OWNER, "model", f"a 'module:callable' returning an nn.Module; {spec}() returned a "
                          f"{type(net).__name__}", spec, TypeError)
    return net


def _show_kwargs(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _state_dict(weights: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    """``torch.load(weights, weights_only=True)``: a state dict, or a dict holding one under ``'state_dict'``."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"The 'weights' parameter of {_OWNER} must name an existing state-dict file. "
                                f"Got '{path}', which {'is not a file' if path.exists() else 'does not exist'}.")
    try:
        with _torch_logs_captured():  # torch warns before refusing a TorchScript archive
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # refused unpickling, a TorchScript or exported file, garbage
        if "TorchScript" in str(err):
            reason = ("it is a TorchScript file (torch.jit.save), which holds the model itself: pass it with "
                      "--model-file (model_file) instead of --model and --weights")
        else:
            reason = f"reading it failed with {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise param_error(_OWNER, "weights", "a state dict saved with torch.save(model.state_dict(), path) and "
                          f"readable with torch.load(path, weights_only=True); {reason}", str(path)) from err
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        got = f"a dict with the keys {list(obj)[:10]}" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise param_error(_OWNER, "weights", "a state dict (a dict of tensors, as model.state_dict() returns, or a "
                          "dict holding one under 'state_dict')", f"{path} holding {got}")
    return obj


def _load_weights(net: nn.Module, weights: str | os.PathLike[str], spec: str) -> None:
    state = _state_dict(weights)
    expected, given = set(net.state_dict()), set(state)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return f"{keys[:8]}{f' and {len(keys) - 8} more' if len(keys) > 8 else ''}"
        raise param_error(_OWNER, "weights", f"a state dict with exactly the keys of {spec}() (loaded with "
                          f"strict=True): missing keys {show(missing)}, unexpected keys {show(unexpected)}",
                          str(weights))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:  # the keys agree but a shape does not
        raise param_error(_OWNER, "weights", f"a state dict whose tensors fit {spec}(); load_state_dict failed: "
                          f"{' '.join(str(err).split())}", str(weights)) from err


@contextlib.contextmanager
def _torch_logs_captured() -> Iterator[list[logging.LogRecord]]:
    """Keep torch's log lines and warnings (a deserialising failure logs its traceback) off the terminal.

    The records torch's loggers emit meanwhile are collected in the list yielded; their handlers
    are restored afterwards.
    """
    records: list[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    collect = _Collect()
    known = logging.Logger.manager.loggerDict
    loggers = [logging.getLogger(name) for name in list(known)
               if (name == "torch" or name.startswith("torch.")) and isinstance(known[name], logging.Logger)]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers if lg.handlers or lg.name == "torch"]
    for lg, _, _ in saved:
        lg.handlers = [collect]
        lg.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield records
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers = handlers
            lg.propagate = propagate


def _load_file(model_file: str | os.PathLike[str]) -> nn.Module:
    path = Path(model_file)
    if not path.is_file():
        raise FileNotFoundError(f"The 'model_file' parameter of {_OWNER} must name an existing file. Got '{path}', "
                                f"which {'is not a file' if path.exists() else 'does not exist'}.")
    if path.suffix.lower() == EXPORTED_SUFFIX:
        with _torch_logs_captured() as records:
            try:
                return torch.export.load(str(path)).module()
            except Exception as err:
                failure = err
        # torch logs the real reason (with a traceback) and raises "check the warnings above": quote the reason
        logged = [r.exc_info[1] for r in records if r.exc_info and r.exc_info[1] is not None]
        reason = _one_line(logged[0], 200) if logged else _one_line(failure)
        hint = ""
        with _torch_logs_captured(), contextlib.suppress(Exception):
            torch.jit.load(str(path), map_location="cpu")
            hint = (f"; it looks like a TorchScript file (torch.jit.save): rename it to {path.stem}.pt, since "
                    f"only a {EXPORTED_SUFFIX} file is read as an exported program")
        raise param_error(_OWNER, "model_file", f"an exported program saved with torch.export.save (a "
                          f"{EXPORTED_SUFFIX} file); torch.export.load failed with {reason}{hint}",
                          str(path)) from failure
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        hint = ""
        with contextlib.suppress(Exception):
            torch.load(path, map_location="cpu", weights_only=True)
            hint = ("; it reads as a plain torch.save file (a state dict?): pass model='module:callable' "
                    "(--model) with weights=this file (--weights) instead")
        raise param_error(_OWNER, "model_file", f"a TorchScript file saved with torch.jit.save, or an exported "
                          f"program ending in {EXPORTED_SUFFIX}; torch.jit.load failed with {_one_line(err, 200)}{hint}",
                          str(path)) from err


def check_classifier(model: nn.Module, input_shape: Sequence[int], *, seed: int = 0) -> int:
    """Run ``model`` in eval mode on dummy batches of 1 and 3 inputs of ``input_shape``; return its number of classes.

    The dummy inputs are uniform in [0, 1). A model whose outputs for one input change with the
    rest of the batch (batch statistics frozen into a traced or exported graph) gets a warning.

    Raises:
        ValueError: the model fails on such a batch (an exported program saved with a fixed
            batch size, say), or does not return logits ``(N, C)`` with ``C >= 2``.
    """
    shape = tuple(int(d) for d in input_shape)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(seed))
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
    x = x.to(device)
    outs = []
    with torch.no_grad(), eval_mode(model):
        for batch in (x[:1], x):
            try:
                outs.append(model(batch))
            except ValueError:
                raise
            except Exception as err:
                cause = err.__cause__ if isinstance(err, ClassifierError) and err.__cause__ is not None else err
                exported = any(isinstance(m, torch.fx.GraphModule) for m in model.modules())
                hint = (" (an exported program needs a dynamic batch dimension: torch.export.export(model, (x,), "
                        "dynamic_shapes=({0: torch.export.Dim('batch')},)))") if exported else ""
                raise ValueError(
                    f"The classifier must run on a batch of inputs of shape (N, {', '.join(map(str, shape))}) for any "
                    f"N{hint}. Calling it on a batch of shape {tuple(batch.shape)} raised {_one_line(cause)}"
                ) from err
    num_classes = outs[1].shape[1]
    if num_classes < 2:
        raise ValueError(f"The classifier must return logits of at least 2 classes. Got {tuple(outs[1].shape)} instead.")
    single, batched = outs[0][0].double(), outs[1][0].double()
    if not torch.allclose(single, batched, rtol=1e-3, atol=1e-4 * (1.0 + float(batched.abs().max()))):
        warnings.warn(
            "The classifier's output for an input changes with the other inputs of its batch (max difference "
            f"{float((single - batched).abs().max()):.3g}): batch statistics were frozen into it (a model traced or "
            "exported in training mode?). Save it after model.eval(); robustness measured on it is unreliable.",
            UserWarning, stacklevel=3,
        )
    return int(num_classes)


def input_gradient_problem(model: nn.Module, input_shape: Sequence[int], *, seed: int = 0) -> str | None:
    """Why ``model`` gives no input gradient on a dummy batch of ``input_shape``, or ``None`` when it gives one.

    A model that detaches its input, computes under ``torch.no_grad()``, or whose backward pass
    raises gives none; gradient attacks cannot move its inputs. (A gradient that is merely zero,
    as through a quantising layer, is a gradient: the reliability checks flag that one.)
    Runs in eval mode on 2 inputs uniform in [0, 1).

    Example:
        >>> input_gradient_problem(nn.Linear(3, 2), (3,)) is None
        True
    """
    x = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(seed))
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
    xg = x.to(device).requires_grad_(True)
    with torch.enable_grad(), eval_mode(model):
        out = model(xg)
        if not out.requires_grad:
            return "its output does not require a gradient (computed under torch.no_grad()?)"
        try:
            (grad,) = torch.autograd.grad(out.float().sum(), xg, allow_unused=True)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:
            return f"its backward pass raised {_one_line(err, 200)}"
    if grad is None:
        return "its output does not depend on its input through autograd (the input is detached?)"
    return None


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape \
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in input_shape):
        raise param_error(_OWNER, "input_shape", "a non-empty sequence of ints >= 1, e.g. (3, 32, 32) or (784,)",
                          input_shape)
    return tuple(input_shape)


def load_classifier(
    *,
    model_file: str | os.PathLike[str] | None = None,
    model: str | nn.Module | None = None,
    weights: str | os.PathLike[str] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    output_index: int | None = None,
    output_key: str | None = None,
    device: str | torch.device = "cpu",
) -> ClassifierAdapter:
    """Any classifier as a :class:`ClassifierAdapter` in eval mode on ``device``, checked on a dummy batch.

    Give exactly one of ``model_file`` and ``model``.

    Args:
        model_file: a file ending in ``.pt2`` (``torch.export.save``; export it in eval mode with a
            dynamic batch dimension) or a TorchScript file (``torch.jit.save``).
        model: ``'package.module:callable'`` returning the ``nn.Module`` (imported from
            ``sys.path``, then the current directory), or an ``nn.Module``.
        weights: a state dict file for ``model`` (``torch.save(net.state_dict(), path)``), read with
            ``weights_only=True`` and loaded with ``strict=True``. Default: the weights the
            callable gives the model.
        model_kwargs: keyword arguments of the callable. Default: none.
        input_shape: one input's shape, ``(C, H, W)`` or ``(D,)``; when given the model is run on
            dummy batches of it (:func:`check_classifier`). Default: no check.
        mean, std: per-channel normalisation put inside the model (see :class:`ClassifierAdapter`).
        output_index, output_key: where the logits are in a tuple/list or dict output.
        device: where the model goes. Default ``'cpu'``.

    Returns:
        The adapter, in eval mode.

    Raises:
        ValueError: neither or both sources, ``weights``/``model_kwargs`` without a callable, a
            bad ``'module:callable'`` (no colon, not importable, no such attribute), a callable
            that does not return an ``nn.Module``, a state dict whose keys or shapes do not fit
            (the missing and unexpected keys are named), an unreadable model file, a model that
            fails on the dummy batch or does not return logits ``(N, C)``.
        TypeError: an object that is not callable, or not an ``nn.Module``.
        FileNotFoundError: ``model_file`` or ``weights`` does not exist.

    Example:
        >>> from torch import nn
        >>> model = load_classifier(model=nn.Linear(4, 3), input_shape=(4,))
        >>> type(model).__name__, model.training
        ('ClassifierAdapter', False)
    """
    if (model_file is None) == (model is None):
        raise ValueError(
            f"Exactly one of the 'model_file' and 'model' parameters of {_OWNER} must be given (a TorchScript or "
            f".pt2 file, or 'module:callable' with weights). Got "
            f"{'both' if model_file is not None else 'neither'} instead."
        )
    if model_file is not None and (weights is not None or model_kwargs):
        which = "weights" if weights is not None else "model_kwargs"
        raise param_error(_OWNER, which, "None with model_file (a saved file holds its weights and structure; "
                          "weights and keyword arguments go with model='module:callable')",
                          str(weights) if which == "weights" else dict(model_kwargs))
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise param_error(_OWNER, "model_kwargs", "None or a dict of keyword arguments", model_kwargs, TypeError)
    shape = _check_shape(input_shape) if input_shape is not None else None
    if isinstance(model, nn.Module):
        if weights is not None or model_kwargs:
            raise param_error(_OWNER, "weights" if weights is not None else "model_kwargs",
                              "None when model is an nn.Module (load its weights yourself)",
                              str(weights) if weights is not None else dict(model_kwargs))
        net = model
    elif model is not None:
        if not isinstance(model, str):
            raise param_error(_OWNER, "model", "'package.module:callable' or an nn.Module", type(model).__name__,
                              TypeError)
        net = _build_from_callable(model, model_kwargs or {})
        if weights is not None:
            _load_weights(net, weights, model)
        else:
            logger.warning("%s: no weights given; the model keeps the weights %s() gives it", _OWNER, model)
    else:
        net = _load_file(model_file)
    if model_file is not None:
        source = f"--model-file {model_file}"
    else:
        source = f"--model {model}" if isinstance(model, str) else type(model).__name__
    adapter = ClassifierAdapter(net, mean=mean, std=std, output_index=output_index, output_key=output_key,
                                source=source)
    adapter = adapter.to(device).eval()
    if shape is not None:
        channels = shape[0]
        for name, stats in (("mean", adapter.mean), ("std", adapter.std)):
            if adapter.normalise and stats.numel() not in (1, channels):
                raise _channel_error(_OWNER, name, stats, shape)
        classes = check_classifier(adapter, shape)
        problem = input_gradient_problem(adapter, shape)
        adapter.input_gradient, adapter.input_gradient_problem = problem is None, problem
        if problem is not None:
            logger.warning("%s: the model (%s) gives no input gradient: %s. Gradient attacks see a zero gradient and "
                           "break no input (AutoAttack skips them); only gradient-free attacks (square, AutoAttack's "
                           "Square) can break its inputs", _OWNER, source, problem)
        logger.info("%s: %s, input shape %s, %d classes", _OWNER, model_file or model, shape, classes)
    return adapter

