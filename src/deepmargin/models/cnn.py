"""Convolutional networks with flat, named layers: the paper's MNIST CNN and a small CNN for 8x8 digits.

Layer naming (the names ``model.named_modules()`` reports, usable in
``LargeMarginLoss(model, layers=[...])``)::

    conv1 -> [bn1] -> relu1 -> [pool1] -> conv2 -> [bn2] -> relu2 -> pool2 -> flatten
          -> fc1 -> [bn3] -> relu3 -> [dropout] -> fc2 (logits)

``convK``/``fc1`` are the pre-activations (module outputs of the conv / linear layer) and
``reluK`` the post-activation hidden representations h_l of Elsayed et al. (2018), eq. (7).
The paper's "margin on the input, both conv layers and the fc layer" is therefore
``["input", "relu1", "relu2", "relu3"]`` (``model.hidden_layers`` lists the ReLU names);
``["input", "conv1", "conv2", "fc1"]`` puts it on the pre-activations instead. The two differ only
in that the ReLU's gradient mask is applied before the dual norm is taken. Every ReLU is its own,
non-inplace module so a forward hook on any of them sees exactly one tensor per forward pass.
"""

from __future__ import annotations

from torch import nn

from ._checks import check_image_model
from ._flat import FlatImageModel


class _FlatCNN(FlatImageModel):
    """Base class: two conv blocks and two linear layers, registered flat and run in order.

    ``conv1 -> [bn1] -> relu1 -> [pool1] -> conv2 -> [bn2] -> relu2 -> pool2 -> flatten -> fc1
    -> [bn3] -> relu3 -> [dropout] -> fc2``, with ``kernel_size`` convolutions padded to keep the
    size (``kernel_size // 2``), and ``pool1`` only when ``pool1`` is True. The subclasses fix the
    architecture and validate their arguments under their own names.
    """

    hidden_layers: tuple[str, ...] = ("relu1", "relu2", "relu3")

    def __init__(
        self,
        owner: str,
        num_classes: int,
        input_shape: tuple[int, ...],
        *,
        dropout: float,
        batch_norm: bool,
        width: int,
        fc_width: int,
        kernel_size: int,
        pool1: bool,
    ) -> None:
        shape, c, h, w, dropout = check_image_model(owner, num_classes, input_shape, min_side=4 if pool1 else 2,
                                                    dropout=dropout, batch_norm=batch_norm)
        for name, value in (("width", width), ("fc_width", fc_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"The '{name}' parameter of {owner} must be a positive int. Got {value!r} instead.")
        super().__init__()
        self._add_channel = len(shape) == 2
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(c, width, kernel_size=kernel_size, padding=padding)
        if batch_norm:
            self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        if pool1:
            self.pool1 = nn.MaxPool2d(2)
            h, w = h // 2, w // 2
        self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=kernel_size, padding=padding)
        if batch_norm:
            self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2 * width * (h // 2) * (w // 2), fc_width)
        if batch_norm:
            self.bn3 = nn.BatchNorm1d(fc_width)
        self.relu3 = nn.ReLU()
        if dropout > 0:
            self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(fc_width, num_classes)



class MnistCNN(_FlatCNN):
    """The MNIST network of Elsayed et al. (2018), Section 4.2.

    conv 5x5, 32 filters (padding 2) -> ReLU -> 2x2 max-pool -> conv 5x5, 64 filters (padding 2)
    -> ReLU -> 2x2 max-pool -> fully connected 512 -> ReLU -> dropout (optional) -> fully connected
    ``num_classes``. Works for any ``H, W >= 4`` (the pools floor odd sizes).

    Args:
        num_classes: number of output logits (>= 2).
        input_shape: one sample's shape, ``(C, H, W)`` or ``(H, W)``; default MNIST ``(1, 28, 28)``.
        dropout: dropout probability before the last layer, in [0, 1); 0 adds no dropout module.
        batch_norm: insert ``bn1``/``bn2``/``bn3`` (batch norm) before each ReLU.
        width: number of filters of ``conv1`` (``conv2`` has twice as many); default 32 as in the paper.
        fc_width: width of ``fc1``; default 512 as in the paper.

    Shape:
        input ``(N, *input_shape)``; output ``(N, num_classes)``.

    Example:
        >>> import torch
        >>> model = MnistCNN(num_classes=10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (1, 28, 28),
        *,
        dropout: float = 0.0,
        batch_norm: bool = False,
        width: int = 32,
        fc_width: int = 512,
    ) -> None:
        super().__init__(
            "MnistCNN", num_classes, input_shape, dropout=dropout, batch_norm=batch_norm, width=width,
            fc_width=fc_width, kernel_size=5, pool1=True,
        )


class DigitsCNN(_FlatCNN):
    """A small CNN for 8x8 images (scikit-learn's digits), quick on a CPU.

    conv 3x3, 16 filters (padding 1) -> ReLU -> conv 3x3, 32 filters (padding 1) -> ReLU
    -> 2x2 max-pool -> fully connected 64 -> ReLU -> dropout (optional) -> fully connected
    ``num_classes``. Same layer names as :class:`MnistCNN` (without ``pool1``).

    Args:
        num_classes: number of output logits (>= 2).
        input_shape: one sample's shape, ``(C, H, W)`` or ``(H, W)``; default ``(1, 8, 8)``.
        dropout: dropout probability before the last layer, in [0, 1).
        batch_norm: insert batch norm before each ReLU.
        width: filters of ``conv1`` (``conv2`` has twice as many); default 16.
        fc_width: width of ``fc1``; default 64.

    Shape:
        input ``(N, *input_shape)``; output ``(N, num_classes)``.

    Example:
        >>> import torch
        >>> DigitsCNN(num_classes=10)(torch.zeros(3, 1, 8, 8)).shape
        torch.Size([3, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (1, 8, 8),
        *,
        dropout: float = 0.0,
        batch_norm: bool = False,
        width: int = 16,
        fc_width: int = 64,
    ) -> None:
        super().__init__(
            "DigitsCNN", num_classes, input_shape, dropout=dropout, batch_norm=batch_norm, width=width,
            fc_width=fc_width, kernel_size=3, pool1=False,
        )
