"""A wide residual network (Zagoruyko & Komodakis, 2016) with named layers, for CIFAR-10 as in Elsayed et al. (2018), Sec. 4.3.

Layer naming (``model.named_modules()``)::

    conv_in -> block1_1 .. block1_n -> block2_1 .. block2_n -> block3_1 .. block3_n
            -> bn_out -> relu_out -> pool -> flatten -> fc (logits)

``blockG_K`` is the K-th pre-activation residual block of group G (K = 1..n); its output (the sum
of the residual branch and the shortcut, a new tensor) is the module's output, so a margin can sit
on it. Inside a block::

    blockG_K.bn1 -> .relu1 -> .conv1 -> .bn2 -> .relu2 -> [.dropout] -> .conv2   (+ [.shortcut])

``.shortcut`` (a 1x1 convolution of the pre-activated input) exists only where the channels or
the resolution change, ``.dropout`` only when ``dropout > 0``; with ``batch_norm=False`` every
``bn*`` is an ``nn.Identity`` (same names) and the convolutions get biases (with batch norm they
have none: the following batch norm's shift makes them redundant). Group G has
``16 * width * 2 ** (G - 1)`` channels; groups 2 and 3 halve the resolution (stride 2). Every ReLU
is its own non-inplace module, so each named module's output is one tensor per forward pass that
nothing modifies in place.

``model.hidden_layers`` lists every block output and ``relu_out`` (the final representation);
``model.margin_layers`` is the paper's CIFAR choice of "5 evenly spaced layers (input layer, output
layer and 3 other convolutional layers in the middle)": ``["input", block1_n, block2_n, block3_n,
"fc"]``: the output of each group (its last block, at the end of each resolution stage; for the
default depth 10 these are all three blocks) and the logits, whose gradient of ``s_y - s_i`` is
``e_y - e_i``. :func:`deepmargin.training.objective.default_margin_layers` uses it; pass
``layers=[...]`` to choose others.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._checks import check_image_model
from ._flat import FlatImageModel
from .structure import BranchSum, Chain

__all__ = ["WideResNet"]


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN -> ReLU -> conv3x3 -> BN -> ReLU -> [dropout] -> conv3x3, plus a shortcut.

    The shortcut is the identity, or a 1x1 convolution of the pre-activated input where the
    number of channels or the resolution changes (as in the WRN paper's code).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float, batch_norm: bool) -> None:
        super().__init__()
        bias = not batch_norm
        self.bn1 = nn.BatchNorm2d(in_channels) if batch_norm else nn.Identity()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.relu2 = nn.ReLU()
        if dropout > 0:
            self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=bias)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)
            if in_channels != out_channels or stride != 1 else None
        )

    def forward(self, x: Tensor) -> Tensor:
        """Residual branch plus shortcut (a new tensor)."""
        pre = self.relu1(self.bn1(x))
        branch = self.relu2(self.bn2(self.conv1(pre)))
        if hasattr(self, "dropout"):
            branch = self.dropout(branch)
        branch = self.conv2(branch)
        return branch + (self.shortcut(pre) if self.shortcut is not None else x)

    def lipschitz_structure(self) -> Chain | BranchSum | None:
        """What ``forward`` computes (:mod:`deepmargin.models.structure`):
        ``conv2(...(relu1(bn1(x)))) + shortcut(relu1(bn1(x)))``, or ``+ x`` without a shortcut;
        ``None`` for a subclass with its own ``forward``."""
        if type(self).forward is not PreActBlock.forward:
            return None
        rest = [self.conv1, self.bn2, self.relu2]
        if hasattr(self, "dropout"):
            rest.append(self.dropout)
        rest.append(self.conv2)
        if self.shortcut is not None:
            return Chain(self.bn1, self.relu1, BranchSum(self.shortcut, Chain(*rest)))
        return BranchSum(None, Chain(self.bn1, self.relu1, *rest))


class WideResNet(FlatImageModel):
    """WRN-``depth``-``width``: an input convolution, 3 groups of ``(depth - 4) / 6`` residual blocks, a linear layer.

    Args:
        num_classes: number of output logits (>= 2).
        input_shape: one sample's shape ``(C, H, W)`` or ``(H, W)``, H, W >= 4; default CIFAR ``(3, 32, 32)``.
        depth: ``6 n + 4`` with ``n >= 1`` blocks per group (10, 16, 22, 28, ...); default 10, small
            enough for a CPU (Elsayed et al. train a much deeper network on CIFAR-10).
        width: widen factor k >= 1 (channels 16k, 32k, 64k); default 1.
        dropout: dropout probability inside each block (between its two convolutions), in [0, 1);
            0 adds no dropout modules.
        batch_norm: batch norm before each ReLU (default True); ``False`` puts ``nn.Identity``
            modules under the same names (and biases in the convolutions), so that the samples
            of a batch stay independent: exact per-sample margins in training mode.

    Shape:
        input ``(N, *input_shape)``; output ``(N, num_classes)``.

    Example:
        >>> import torch
        >>> model = WideResNet(num_classes=10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> model.margin_layers
        ['input', 'block1_1', 'block2_1', 'block3_1', 'fc']

    Reference:
        S. Zagoruyko, N. Komodakis, "Wide Residual Networks", BMVC 2016.
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (3, 32, 32),
        *,
        depth: int = 10,
        width: int = 1,
        dropout: float = 0.0,
        batch_norm: bool = True,
    ) -> None:
        owner = "WideResNet"
        shape, c, _, _, dropout = check_image_model(owner, num_classes, input_shape, min_side=4, dropout=dropout,
                                                    batch_norm=batch_norm)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"The 'depth' parameter of {owner} must be an int 6n + 4 >= 10 (10, 16, 22, ...). Got {depth!r} instead.")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"The 'width' parameter of {owner} must be an int >= 1. Got {width!r} instead.")
        super().__init__()
        self._add_channel = len(shape) == 2
        n = (depth - 4) // 6
        self.conv_in = nn.Conv2d(c, 16, 3, padding=1, bias=not batch_norm)
        channels = 16
        blocks: list[str] = []
        for group in (1, 2, 3):
            out = 16 * width * 2 ** (group - 1)
            for k in range(1, n + 1):
                stride = 2 if group > 1 and k == 1 else 1
                name = f"block{group}_{k}"
                self.add_module(name, PreActBlock(channels, out, stride, dropout, batch_norm))
                blocks.append(name)
                channels = out
        self.bn_out = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.relu_out = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        self.hidden_layers: tuple[str, ...] = (*blocks, "relu_out")
        self.margin_layers: list[str] = ["input", f"block1_{n}", f"block2_{n}", f"block3_{n}", "fc"]

