"""The two MNIST networks of Matyasko & Chau (2017)'s table: LeNet-5 and the MLP 784-1000-1000-1000-10.

Layer naming of :class:`LeNet5` (``model.named_modules()``)::

    conv1 -> [bn1] -> relu1 -> pool1 -> conv2 -> [bn2] -> relu2 -> pool2 -> flatten
          -> fc1 -> [bn3] -> relu3 -> fc2 -> [bn4] -> relu4 -> [dropout] -> fc3 (logits)

As in :mod:`deepmargin.models.cnn`, ``convK``/``fcK`` are pre-activations and ``reluK`` the
post-activation hidden representations (``model.hidden_layers == ("relu1", "relu2", "relu3",
"relu4")``), each ReLU its own non-inplace module; a margin on the input and every hidden layer is
``["input", *model.hidden_layers]``.

:class:`MLP3x1000` is :class:`deepmargin.models.MLP` with ``hidden_sizes=(1000, 1000, 1000)``
fixed (registered as ``"mlp3x1000"``), so checkpoints rebuild it from its name alone.
"""

from __future__ import annotations

from torch import nn

from ._checks import check_bool, check_dropout, check_image_model, check_input_shape, check_num_classes
from ._flat import FlatImageModel
from .mlp import MLP

__all__ = ["MLP3x1000", "LeNet5"]


class LeNet5(FlatImageModel):
    """LeNet-5 (LeCun et al., 1998) with ReLUs and max-pooling, as in Matyasko & Chau (2017)'s MNIST table.

    conv 5x5, 6 filters -> ReLU -> 2x2 max-pool -> conv 5x5, 16 filters (no padding) -> ReLU
    -> 2x2 max-pool -> fully connected 120 -> ReLU -> fully connected 84 -> ReLU -> dropout
    (optional) -> fully connected ``num_classes``.

    Padding of ``conv1``: the classic network reads 32x32 images. Inputs with ``min(H, W) < 32``
    (MNIST's 28x28) get ``padding=2``, so that a 28x28 image passes through the classic geometry
    (28 -> conv1 28 -> pool 14 -> conv2 10 -> pool 5, i.e. ``fc1`` reads 16 x 5 x 5 = 400 features);
    inputs with ``min(H, W) >= 32`` get no padding (32 -> 28 -> 14 -> 10 -> 5, the original). Any
    ``H, W >= 16`` work (the pools floor odd sizes); ``fc1`` reads ``16 * h * w`` features with
    ``h = ((H + 2 p - 4) // 2 - 4) // 2`` (likewise ``w``) for the chosen padding ``p``. The
    original's sparse C3 connections, scaled-tanh units, trainable subsampling and RBF output
    layer are replaced by full connections, ReLU, max-pooling and a linear layer, as is usual.

    Args:
        num_classes: number of output logits (>= 2).
        input_shape: one sample's shape, ``(C, H, W)`` or ``(H, W)`` with ``H, W >= 16``;
            default MNIST ``(1, 28, 28)``.
        dropout: dropout probability before the last layer, in [0, 1); 0 adds no dropout module.
        batch_norm: insert ``bn1``/``bn2`` (2-D) and ``bn3``/``bn4`` (1-D) batch norm before each ReLU.

    Shape:
        input ``(N, *input_shape)``; output ``(N, num_classes)``.

    Example:
        >>> import torch
        >>> model = LeNet5(num_classes=10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> model.conv1.padding, model.fc1.in_features, model.hidden_layers
        ((2, 2), 400, ('relu1', 'relu2', 'relu3', 'relu4'))

    Reference:
        Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document
        recognition", Proc. IEEE 86(11), 1998. A. Matyasko, L.-P. Chau, "Margin maximization for
        robust classification using deep learning", IJCNN 2017.
    """

    hidden_layers: tuple[str, ...] = ("relu1", "relu2", "relu3", "relu4")

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (1, 28, 28),
        *,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        owner = "LeNet5"
        shape, c, h, w, dropout = check_image_model(owner, num_classes, input_shape, min_side=16, dropout=dropout,
                                                    batch_norm=batch_norm)
        super().__init__()
        self._add_channel = len(shape) == 2
        padding = 2 if min(h, w) < 32 else 0
        self.conv1 = nn.Conv2d(c, 6, kernel_size=5, padding=padding)
        if batch_norm:
            self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        if batch_norm:
            self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        side = lambda s: ((s + 2 * padding - 4) // 2 - 4) // 2  # noqa: E731
        self.fc1 = nn.Linear(16 * side(h) * side(w), 120)
        if batch_norm:
            self.bn3 = nn.BatchNorm1d(120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        if batch_norm:
            self.bn4 = nn.BatchNorm1d(84)
        self.relu4 = nn.ReLU()
        if dropout > 0:
            self.dropout = nn.Dropout(dropout)
        self.fc3 = nn.Linear(84, num_classes)



class MLP3x1000(MLP):
    """The MLP 784-1000-1000-1000-10 of Matyasko & Chau (2017)'s MNIST table: :class:`MLP` with 3 x 1000 hidden units.

    Layer names ``flatten, fc1, [bn1], relu1, [drop1], fc2, ..., relu3, [drop3], fc4``;
    ``model.hidden_layers == ("relu1", "relu2", "relu3")``. The widths are fixed (no
    ``hidden_sizes`` option), so ``build_model("mlp3x1000", ...)`` and checkpoints need only the
    name.

    Args:
        num_classes: number of output logits (>= 2).
        input_shape: one sample's shape (any rank; flattened); default MNIST ``(1, 28, 28)`` (784 inputs).
        dropout: dropout probability after every hidden ReLU, in [0, 1); 0 adds no dropout modules.
        batch_norm: insert batch norm ``bnK`` before every hidden ReLU.

    Shape:
        input ``(N, *input_shape)``; output ``(N, num_classes)``.

    Example:
        >>> import torch
        >>> model = MLP3x1000(num_classes=10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> [(m.in_features, m.out_features) for m in (model.fc1, model.fc4)]
        [(784, 1000), (1000, 10)]

    Reference:
        A. Matyasko, L.-P. Chau, "Margin maximization for robust classification using deep
        learning", IJCNN 2017.
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (1, 28, 28),
        *,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        owner = "MLP3x1000"
        check_num_classes(num_classes, owner)
        check_input_shape(input_shape, owner)
        check_dropout(dropout, owner)
        check_bool(batch_norm, "batch_norm", owner)
        super().__init__(
            num_classes, input_shape, hidden_sizes=(1000, 1000, 1000), dropout=dropout, batch_norm=batch_norm
        )
