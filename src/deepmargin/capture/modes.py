"""Module modes: run a model in eval mode and give every submodule its own mode back afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` and every submodule in eval mode; on exit restore EACH module's own previous mode.

    ``model.train(was_training)`` would not do: it sets one mode on every submodule, so a submodule
    that was frozen in eval mode inside a training model (a batch norm kept on its running
    statistics, say) would come back in training mode. The modes are restored even when the
    block raises.

    Args:
        model: any ``nn.Module``.

    Yields:
        ``model`` itself, in eval mode.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
        >>> _ = model[1].eval()  # frozen statistics inside a training model
        >>> with eval_mode(model):
        ...     print(model.training, model[0].training)
        False False
        >>> model.training, model[0].training, model[1].training
        (True, True, False)
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training
