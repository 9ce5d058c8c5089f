"""Capture named intermediate activations of any ``nn.Module`` with forward hooks.

Layer names are the names of ``model.named_modules()`` (``"features.0"``, ``"conv1"``, ...), plus
the special name ``"input"`` for the model's input. The model's code is not changed: a forward hook
on each named module records its output during the forward pass. A model wrapped in
``DistributedDataParallel`` (or ``DataParallel``) answers to its inner names (``"conv1"``) and to
the wrapper's (``"module.conv1"``); the hooks sit on the inner modules, which the wrapper's forward
runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .modes import eval_mode

__all__ = ["INPUT", "list_layers", "layer_table", "ActivationCapture", "capture_activations", "unwrap_model"]

INPUT = "input"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper (else ``model``)."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def list_layers(model: nn.Module, *, leaves_only: bool = False) -> list[str]:
    """Names that can be used as margin layers: ``"input"`` then every named submodule.

    Args:
        model: any module.
        leaves_only: only modules without children (Conv2d, ReLU, Linear, ...).

    Example::

        >>> from torch import nn
        >>> list_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
        ['input', '0', '1', '2']
    """
    names = [INPUT]
    for name, module in model.named_modules():
        if not name:
            continue
        if leaves_only and next(module.children(), None) is not None:
            continue
        names.append(name)
    return names


def layer_table(model: nn.Module, example_input: torch.Tensor) -> list[dict]:
    """One row per named submodule: name, type, and output shape on ``example_input``.

    Modules that return something other than a tensor show the type of what they return. The
    forward pass runs in eval mode without gradients, and the model is left exactly as it was found
    (each module's mode restored, batch-norm running statistics untouched).
    """
    rows = [{"name": INPUT, "type": "input", "shape": tuple(example_input.shape[1:])}]
    names = list_layers(model)[1:]
    shapes: dict[str, object] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        def hook(_module, _inputs, output, name=name):
            shapes.setdefault(name, tuple(output.shape[1:]) if isinstance(output, torch.Tensor)
                              else type(output).__name__)
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    for name in names:
        rows.append({"name": name, "type": type(modules[name]).__name__, "shape": shapes.get(name, "not called")})
    return rows


class ActivationCapture:
    """Record the outputs of named modules during forward passes (a context manager).

    Args:
        model: the module to observe.
        names: layer names from :func:`list_layers`; ``"input"`` is accepted and ignored here (the
            caller owns the input tensor).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with ActivationCapture(net, ["1"]) as cap:
        ...     out = net(torch.randn(5, 4))
        >>> cap.activations["1"].shape
        torch.Size([5, 3])
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        if isinstance(names, str):
            raise TypeError(
                f"The 'layers' parameter must be a sequence of layer names. Got the string {names!r} "
                f"instead; write [{names!r}]."
            )
        modules = dict(model.named_modules())
        inner = unwrap_model(model)
        if inner is not model:  # DistributedDataParallel / DataParallel: the inner names work too
            modules.update((n, m) for n, m in inner.named_modules() if n)
        unknown = [n for n in names if n != INPUT and (n not in modules or n == "")]
        if unknown:
            known = ", ".join(list_layers(model))
            raise ValueError(
                f"The 'layers' parameter names layers that the model does not have: {unknown}. "
                f"Expected names from list_layers(model): {known}."
            )
        self.model = model
        self.names = [n for n in names if n != INPUT]
        self._modules = modules
        self._handles: list = []
        self.activations: dict[str, torch.Tensor] = {}
        self._versions: dict[str, int] = {}

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"Layer {name!r} returned {type(output).__name__}; a margin layer must return a "
                    f"tensor. Pick one of its submodules instead."
                )
            if name in self.activations:
                raise ValueError(
                    f"Layer {name!r} was called more than once in one forward pass (a shared module); "
                    f"its margin is ambiguous. Pick a layer that runs once."
                )
            self.activations[name] = output
            self._versions[name] = output._version
        return hook

    def clear(self) -> None:
        self.activations = {}
        self._versions = {}

    def check_unmodified(self) -> None:
        """Raise if a captured output was changed in place after its module returned it."""
        for name, h in self.activations.items():
            if h._version != self._versions[name]:
                raise ValueError(
                    f"The output of layer {name!r} was modified in place later in the forward pass "
                    f"(e.g. by nn.ReLU(inplace=True)), so its gradient is not that of the layer's "
                    f"output. Use inplace=False after this layer, or capture the in-place module itself."
                )

    def __enter__(self) -> "ActivationCapture":
        self.clear()
        for name in self.names:
            self._handles.append(self._modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@contextlib.contextmanager
def capture_activations(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Context manager yielding the dict that fills with the named layers' outputs."""
    with ActivationCapture(model, names) as cap:
        yield cap.activations
