"""The base of the image models whose layers run in the order they are registered."""

from __future__ import annotations

from torch import Tensor, nn

from .structure import Chain


class FlatImageModel(nn.Module):
    """Runs its child modules in registration order; a 2-D input shape ``(H, W)`` gets a channel axis.

    Subclasses register their layers flat (so ``named_modules()`` gives the margin layers their
    names) and set ``self._add_channel = len(input_shape) == 2``.
    """

    _add_channel: bool = False

    def forward(self, x: Tensor) -> Tensor:
        """Map a batch ``(N, C, H, W)`` (or ``(N, H, W)`` for a 2-D input shape) to logits ``(N, num_classes)``."""
        if self._add_channel:
            x = x.unsqueeze(1)
        for module in self.children():
            x = module(x)
        return x

    def lipschitz_structure(self) -> Chain | None:
        """What ``forward`` computes (:mod:`deepmargin.models.structure`): the channel axis it adds
        (``nn.Unflatten(1, (1, -1))``, as ``x.unsqueeze(1)``) then the children in order; ``None``
        for a subclass with its own ``forward``."""
        if type(self).forward is not FlatImageModel.forward:
            return None
        stages = list(self.children())
        return Chain(nn.Unflatten(1, (1, -1)), *stages) if self._add_channel else Chain(*stages)
