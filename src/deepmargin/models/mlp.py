"""A multilayer perceptron with named layers ``fc1, relu1, ..., fcL``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from ._checks import check_bool, check_dropout, check_input_shape, check_num_classes
from .structure import Chain


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs.

    Layer names: ``flatten, fc1, [bn1], relu1, [drop1], fc2, [bn2], relu2, [drop2], ..., fcL``
    where ``L = len(hidden_sizes) + 1`` and ``fcL`` gives the logits. ``fcK`` are pre-activations,
    ``reluK`` the hidden representations h_l of Elsayed et al. (2018) (listed in
    ``model.hidden_layers``), so a margin on the input and all hidden layers is
    ``["input", *model.hidden_layers]``.

    Args:
        num_classes: number of output logits (>= 2).
        input_shape: one sample's shape (any rank; flattened), e.g. ``(2,)`` or ``(1, 8, 8)``.
        hidden_sizes: widths of the hidden layers, default ``(128, 128)``; may be empty (a linear model).
        dropout: dropout probability after every hidden ReLU, in [0, 1); 0 adds no dropout modules.
        batch_norm: insert batch norm ``bnK`` before every hidden ReLU.

    Shape:
        input ``(N, *input_shape)``; output ``(N, num_classes)``.

    Example:
        >>> import torch
        >>> model = MLP(num_classes=3, input_shape=(2,), hidden_sizes=(16, 16))
        >>> model(torch.zeros(5, 2)).shape
        torch.Size([5, 3])
        >>> model.hidden_layers
        ('relu1', 'relu2')
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (784,),
        *,
        hidden_sizes: Sequence[int] = (128, 128),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        owner = "MLP"
        check_num_classes(num_classes, owner)
        shape = check_input_shape(input_shape, owner)
        dropout = check_dropout(dropout, owner)
        check_bool(batch_norm, "batch_norm", owner)
        if isinstance(hidden_sizes, (str, bytes)) or not isinstance(hidden_sizes, Sequence) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden_sizes
        ):
            raise ValueError(
                f"The 'hidden_sizes' parameter of {owner} must be a sequence of positive ints. "
                f"Got {hidden_sizes!r} instead."
            )
        super().__init__()
        self.flatten = nn.Flatten()
        width = math.prod(shape)
        hidden: list[str] = []
        for k, size in enumerate(hidden_sizes, start=1):
            self.add_module(f"fc{k}", nn.Linear(width, size))
            if batch_norm:
                self.add_module(f"bn{k}", nn.BatchNorm1d(size))
            self.add_module(f"relu{k}", nn.ReLU())
            hidden.append(f"relu{k}")
            if dropout > 0:
                self.add_module(f"drop{k}", nn.Dropout(dropout))
            width = size
        self.add_module(f"fc{len(hidden_sizes) + 1}", nn.Linear(width, num_classes))
        self.hidden_layers: tuple[str, ...] = tuple(hidden)

    def forward(self, x: Tensor) -> Tensor:
        """Map a batch ``(N, *input_shape)`` to logits ``(N, num_classes)``."""
        for module in self.children():
            x = module(x)
        return x

    def lipschitz_structure(self) -> Chain | None:
        """What ``forward`` computes (:mod:`deepmargin.models.structure`): the children in order;
        ``None`` for a subclass with its own ``forward``."""
        if type(self).forward is not MLP.forward:
            return None
        return Chain(*self.children())
