"""The large-margin loss of Elsayed et al. (NeurIPS 2018), functional form.

For a sample ``(x, y)``, a candidate class ``i != y``, and a layer ``h_l`` that the scores were
computed from, the first-order (linearised) signed distance to the boundary between ``y`` and ``i``
measured in the l_p norm at that layer is (paper eq. 7 and 10)::

    d_{l,i} = (s_y - s_i) / (||grad_{h_l} (s_y - s_i)||_q / w_l + epsilon),    1/p + 1/q = 1

and the loss charges ``max(0, gamma_l - d_{l,i})`` for every sample that does not clear the margin
``gamma_l``. The gradients with respect to all layers come from one backward pass per candidate
class (all layers are inputs of the same ``torch.autograd.grad`` call).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import (
    check_logits_target,
    check_per_layer,
    check_positive,
    check_reduction,
    dual_exponent,
    param_error,
)

__all__ = ["large_margin_loss", "linearized_distances", "GRAD_METHODS"]

OWNER = "large_margin_loss"
GRAD_METHODS = ("auto", "loop", "batched")


def large_margin_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    layers: Sequence[torch.Tensor],
    *,
    gamma: float | Sequence[float],
    alpha: float | None = None,
    top_k: int = 1,
    norm: float = 2,
    aggregation: str = "max",
    layer_weights: Sequence[float] | None = None,
    epsilon: float = 1e-6,
    approximate: bool = True,
    scores: str = "logits",
    reduction: str = "mean",
    grad_method: str = "auto",
    exact_per_sample: bool = False,
) -> torch.Tensor:
    r"""Large-margin loss on any set of layers (Elsayed et al., 2018, eq. 10).

    .. math::

        \ell(x, y) = \frac{1}{L} \sum_{l=1}^{L} \mathcal{A}_{i \in T_k(x)}
            \min\Big(\alpha\gamma_l,\ \max\big(0,\ \gamma_l - d_{l,i}\big)\Big), \qquad
        d_{l,i} = \frac{s_y - s_i}{\lVert \nabla_{h_l}(s_y - s_i) \rVert_q / w_l + \epsilon}

    where ``s`` are the scores (logits, or softmax probabilities), ``T_k(x)`` the ``top_k`` classes
    ``i != y`` with the highest ``s_i``, ``q`` the dual exponent of ``p = norm`` and ``w_l`` the layer
    weight. ``A`` is ``max`` (the class with the smallest ``d``) or ``sum``. Without ``alpha`` there is
    no cap. With ``approximate=True`` the norm in the denominator is a constant for backpropagation
    (the paper's first-order approximation, Sec. 4.1); otherwise the loss is differentiated through
    it (second order).

    Args:
        logits: scores before softmax, ``(N, C)``, computed from every tensor in ``layers``.
        target: int64 class indices ``(N,)``.
        layers: tensors ``h_l`` of any shape ``(N, ...)`` that ``logits`` was computed from. The
            input counts as a layer when it has ``requires_grad=True``.
        gamma: the margin, one float for all layers or one per layer (each > 0).
        alpha: cap the per-class penalty at ``alpha * gamma_l`` (distances below
            ``gamma_l * (1 - alpha)`` stop contributing gradient). ``None`` (default): no cap.
        top_k: number of candidate classes ``i != y`` per sample, in ``[1, C - 1]``. Default 1.
        norm: ``p`` of the l_p distance: 1, 2, ``math.inf`` or any real ``p >= 1``. Default 2.
        aggregation: ``'max'`` (worst class, default) or ``'sum'`` over the ``top_k`` classes.
        layer_weights: per-layer ``w_l``; the gradient norm is divided by it. Default all 1.
        epsilon: added to the denominator, > 0. Default 1e-6.
        approximate: treat the denominator as a constant in backpropagation. Default True.
        scores: ``'logits'`` (the paper's f_i, default) or ``'softmax'`` (the released TF code).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'`` over samples. Default ``'mean'``.
        grad_method: how the k per-class gradients are taken: ``'loop'`` (one
            ``torch.autograd.grad`` per class), ``'batched'`` (one vmapped call,
            ``is_grads_batched``) or ``'auto'`` (``'loop'``; fastest on CPU, see
            ``benchmarks/step_cost.py``).
        exact_per_sample: take each sample's gradient separately (N x k vmapped backward
            passes, in chunks). Only needed when samples are coupled in the forward pass, e.g. by
            batch norm in training mode; otherwise the gradient of the batch sum is already
            per-sample and this gives the same result at a much higher cost.

    Returns:
        The loss: a scalar, or ``(N,)`` with ``reduction='none'``.

    Shape:
        - logits: ``(N, C)``; target: ``(N,)``; each layer: ``(N, *)``.
        - output: scalar, or ``(N,)`` if ``reduction='none'``.

    Example::

        >>> import torch
        >>> from deepmargin import large_margin_loss
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> net1, net2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)
        >>> x = torch.randn(5, 4, requires_grad=True)
        >>> h = torch.relu(net1(x))
        >>> logits = net2(h)
        >>> loss = large_margin_loss(logits, torch.tensor([0, 1, 2, 0, 1]), [x, h], gamma=1.0, top_k=2)
        >>> loss.backward()

    Batch norm in training mode: the statistics couple the samples of a batch, so the gradient
    of ``sum_n (s_y - s_i)[n]`` with respect to ``h_l[n]`` also contains terms from the other
    samples' scores. The default treats the batch sum's gradient as per-sample (as the released
    TensorFlow code does); ``exact_per_sample=True`` removes the coupling terms. In eval mode the
    two agree exactly.

    Reference:
        G. F. Elsayed, D. Krishnan, H. Mobahi, K. Regan, S. Bengio. Large Margin Deep Networks for
        Classification. NeurIPS 2018.
    """
    check_reduction(reduction, OWNER)
    checked = _check_distance_args(logits, target, layers, top_k, norm, layer_weights, epsilon, scores, grad_method)
    gamma_l = check_per_layer(gamma, len(checked["layers"]), OWNER, "gamma")
    if alpha is not None:
        alpha = check_positive(alpha, OWNER, "alpha")
    if aggregation not in ("max", "sum"):
        raise param_error(OWNER, "aggregation", "one of 'max', 'sum'", aggregation)
    d, _ = _distances(**checked, approximate=approximate, scores=scores, grad_method=grad_method,
                      exact_per_sample=exact_per_sample)

    per_layer = []
    for d_l, g in zip(d, gamma_l):
        if aggregation == "max":
            # The worst class is the one with the smallest distance (it need not be the top-1).
            d_l = d_l.min(dim=1, keepdim=True).values
        if alpha is not None:
            # max(d, gamma (1 - alpha)), written as in the reference implementation so that the
            # gradient at the kink is identical.
            d_l = d_l + F.relu(g * (1.0 - alpha) - d_l)
        per_layer.append(F.relu(g - d_l).sum(dim=1))
    loss = torch.stack(per_layer, dim=0).mean(dim=0)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def linearized_distances(
    logits: torch.Tensor,
    target: torch.Tensor,
    layers: Sequence[torch.Tensor],
    *,
    top_k: int = 1,
    norm: float = 2,
    layer_weights: Sequence[float] | None = None,
    epsilon: float = 1e-6,
    approximate: bool = True,
    scores: str = "logits",
    grad_method: str = "auto",
    exact_per_sample: bool = False,
    return_classes: bool = False,
):
    r"""Signed linearised distances ``d_{l,i}`` to the boundaries of the ``top_k`` rival classes.

    .. math:: d_{l,i} = \frac{s_y - s_i}{\lVert \nabla_{h_l}(s_y - s_i)\rVert_q / w_l + \epsilon}

    Positive when the sample is on the correct side. For a linear classifier and ``layers=[x]``
    this is the exact l_p distance to the pairwise boundary (up to ``epsilon``).

    Args: as :func:`large_margin_loss`; ``return_classes=True`` also returns the ``(N, k)``
    indices of the candidate classes.

    Returns:
        A list with one ``(N, top_k)`` tensor per layer, columns ordered by decreasing ``s_i``
        (and the class indices when asked).
    """
    checked = _check_distance_args(logits, target, layers, top_k, norm, layer_weights, epsilon, scores, grad_method)
    distances, classes = _distances(**checked, approximate=approximate, scores=scores, grad_method=grad_method,
                                    exact_per_sample=exact_per_sample)
    return (distances, classes) if return_classes else distances


def _check_distance_args(logits, target, layers, top_k, norm, layer_weights, epsilon, scores, grad_method) -> dict:
    """Validate the arguments shared by the loss and the distances; return the normalised ones."""
    target = check_logits_target(logits, target, OWNER)
    layers = _check_layers(layers, logits.shape[0])
    num_classes = logits.shape[1]
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or not 1 <= top_k <= num_classes - 1:
        raise param_error(OWNER, "top_k", f"an int in [1, num_classes - 1] = [1, {num_classes - 1}]", top_k)
    _, q = dual_exponent(norm, OWNER)
    weights = [1.0] * len(layers) if layer_weights is None else check_per_layer(
        layer_weights, len(layers), OWNER, "layer_weights"
    )
    epsilon = check_positive(epsilon, OWNER, "epsilon")
    if scores not in ("logits", "softmax"):
        raise param_error(OWNER, "scores", "one of 'logits', 'softmax'", scores)
    if grad_method not in GRAD_METHODS:
        raise param_error(OWNER, "grad_method", "one of 'auto', 'loop', 'batched'", grad_method)
    if not logits.requires_grad:
        raise param_error(OWNER, "logits", "a tensor computed from the layers (requires_grad=True)",
                          "a tensor that does not require grad")
    return dict(logits=logits, target=target, layers=layers, top_k=int(top_k), q=q, weights=weights, epsilon=epsilon)


def _distances(
    *, logits, target, layers, top_k, q, weights, epsilon, approximate, scores, grad_method, exact_per_sample
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The distances of validated arguments: (one (N, k) tensor per layer, (N, k) rival classes)."""
    num_classes = logits.shape[1]
    s = logits if scores == "logits" else torch.softmax(logits, dim=1)
    is_true = F.one_hot(target, num_classes).bool()
    # Exclude the true class from the candidates, then take the top_k rivals.
    classes = s.detach().masked_fill(is_true, -math.inf).topk(top_k, dim=1).indices
    diff = s.gather(1, target[:, None]) - s.gather(1, classes)  # (N, k)

    create_graph = not approximate
    if exact_per_sample:
        norms = _per_sample_grad_norms(diff, layers, q, create_graph)
    elif grad_method == "batched":
        norms = _batched_grad_norms(diff, layers, q, create_graph)
    else:  # "loop", and "auto" (the loop was fastest on CPU: benchmarks/step_cost.py)
        norms = _looped_grad_norms(diff, layers, q, create_graph)

    distances = []
    for g_norm, w in zip(norms, weights):
        # g_norm: (N, k) dual norms of the gradients of diff at this layer
        g_norm = g_norm / w
        if approximate:
            g_norm = g_norm.detach()
        distances.append(diff / (g_norm + epsilon))
    return distances, classes


def _check_layers(layers: Sequence[torch.Tensor], n: int) -> list[torch.Tensor]:
    if isinstance(layers, torch.Tensor) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise param_error(OWNER, "layers", "a non-empty sequence of tensors", type(layers).__name__, TypeError)
    for i, h in enumerate(layers):
        if not isinstance(h, torch.Tensor) or not h.is_floating_point():
            raise param_error(OWNER, f"layers[{i}]", "a floating-point tensor", type(h).__name__, TypeError)
        if h.dim() == 0 or h.shape[0] != n:
            raise param_error(OWNER, f"layers[{i}]", f"a tensor of shape (N={n}, ...) matching logits",
                              f"shape {tuple(h.shape)}")
        if not h.requires_grad:
            raise param_error(
                OWNER, f"layers[{i}]",
                "a tensor that logits was computed from (requires_grad=True; for the input, call "
                "x.requires_grad_() before the forward pass)", "a tensor that does not require grad",
            )
    return list(layers)


def _unused_layer_error(index: int) -> ValueError:
    return param_error(
        OWNER, f"layers[{index}]", "a tensor that logits was computed from",
        "a tensor that logits does not depend on (it is not in the graph of logits)",
    )


def _dual_norm(g: torch.Tensor, q: float, batch_dims: int) -> torch.Tensor:
    """l_q norm over all but the first ``batch_dims`` dimensions."""
    return torch.linalg.vector_norm(g.flatten(batch_dims), ord=q, dim=batch_dims)


def _looped_grad_norms(
    diff: torch.Tensor, layers: list[torch.Tensor], q: float, create_graph: bool
) -> list[torch.Tensor]:
    """One backward pass per candidate class, all layers at once -> per layer (N, k) norms.

    Each class's gradients are reduced to their norms at once, so only one class's gradients are
    alive at a time.
    """
    k = diff.shape[1]
    per_class: list[list[torch.Tensor]] = [[] for _ in layers]
    for j in range(k):
        grads = torch.autograd.grad(
            diff[:, j].sum(), layers, retain_graph=True, create_graph=create_graph, allow_unused=True
        )
        for l, g in enumerate(grads):
            if g is None:
                raise _unused_layer_error(l)
            per_class[l].append(_dual_norm(g, q, 1))
    return [torch.stack(cols, dim=1) for cols in per_class]


def _batched_grad_norms(
    diff: torch.Tensor, layers: list[torch.Tensor], q: float, create_graph: bool
) -> list[torch.Tensor]:
    """All candidate classes in one vmapped backward (``is_grads_batched``) -> per layer (N, k) norms."""
    n, k = diff.shape
    eye = torch.eye(k, dtype=diff.dtype, device=diff.device)
    grad_outputs = eye[:, None, :].expand(k, n, k)
    grads = torch.autograd.grad(
        diff, layers, grad_outputs=grad_outputs, retain_graph=True, create_graph=create_graph,
        allow_unused=True, is_grads_batched=True,
    )
    out = []
    for l, g in enumerate(grads):
        if g is None:
            raise _unused_layer_error(l)
        out.append(_dual_norm(g, q, 2).t())
    return out


def _per_sample_grad_norms(
    diff: torch.Tensor, layers: list[torch.Tensor], q: float, create_graph: bool, chunk: int = 64
) -> list[torch.Tensor]:
    """Norm of the gradient of each ``diff[n, j]`` alone with respect to ``h_l[n]``.

    (N x k) vmapped backward passes in chunks; no cross-sample terms even when the forward pass
    couples samples (batch norm in training mode).
    """
    n, k = diff.shape
    device = diff.device
    pairs = torch.arange(n * k, device=device)
    blocks: list[list[torch.Tensor]] = [[] for _ in layers]
    for start in range(0, n * k, chunk):
        idx = pairs[start:start + chunk]
        m = idx.numel()
        rows = torch.arange(m, device=device)
        grad_outputs = torch.zeros(m, n * k, dtype=diff.dtype, device=device)
        grad_outputs[rows, idx] = 1
        grads = torch.autograd.grad(
            diff, layers, grad_outputs=grad_outputs.view(m, n, k), retain_graph=True,
            create_graph=create_graph, allow_unused=True, is_grads_batched=True,
        )
        sample = torch.div(idx, k, rounding_mode="floor")
        for l, g in enumerate(grads):
            if g is None:
                raise _unused_layer_error(l)
            # row r of this chunk belongs to sample idx[r] // k: keep only that sample's slice
            blocks[l].append(_dual_norm(g[rows, sample], q, 1))
    return [torch.cat(b).view(n, k) for b in blocks]


class LargeMarginLoss(torch.nn.Module):
    r"""Large-margin loss on named layers of any model, plus an optional cross-entropy term.

    .. math:: \mathcal{L} = \mathrm{margin\_weight}\cdot\ell_{\mathrm{margin}} + \mathrm{ce\_weight}\cdot\mathrm{CE}

    The criterion runs the model itself: forward hooks capture the outputs of the named modules
    (no change to the model's code), ``"input"`` makes the input a layer, and the margin is taken
    at each. List a model's names with :func:`deepmargin.capture.list_layers` (or
    :func:`deepmargin.capture.layer_table` for their output shapes, or ``deepmargin layers``).

    Args:
        model: any ``nn.Module`` mapping a batch to logits ``(N, C)``.
        layers: layer names, e.g. ``["input", "conv1", "fc1"]``.
        margin_weight: weight of the margin term. Default 1.
        ce_weight: weight of the cross-entropy term (the paper trains with a weighted sum of
            margin and cross-entropy). Default 0.
        **options: keyword arguments of :func:`large_margin_loss` (``gamma`` is required).

    Call ``loss, logits = criterion(x, target)``.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from deepmargin import LargeMarginLoss
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
        >>> criterion = LargeMarginLoss(net, ["input", "2"], gamma=[0.5, 2.0], top_k=2, ce_weight=1.0)
        >>> loss, logits = criterion(torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,)))
        >>> loss.backward()
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: Sequence[str],
        *,
        gamma: float | Sequence[float],
        alpha: float | None = None,
        top_k: int = 1,
        norm: float = 2,
        aggregation: str = "max",
        layer_weights: Sequence[float] | None = None,
        epsilon: float = 1e-6,
        approximate: bool = True,
        scores: str = "logits",
        reduction: str = "mean",
        grad_method: str = "auto",
        exact_per_sample: bool = False,
        margin_weight: float = 1.0,
        ce_weight: float = 0.0,
    ) -> None:
        super().__init__()
        from ..capture import INPUT, ActivationCapture

        owner = "LargeMarginLoss"
        self.capture = ActivationCapture(model, layers)  # validates the names
        if len(layers) == 0:
            raise param_error(owner, "layers", "a non-empty sequence of layer names", list(layers))
        self.model = model
        self.layers = list(layers)
        self._input = INPUT
        self.options = dict(
            gamma=check_per_layer(gamma, len(self.layers), owner, "gamma"), alpha=alpha, top_k=top_k,
            norm=norm, aggregation=aggregation, layer_weights=layer_weights, epsilon=epsilon,
            approximate=approximate, scores=scores, reduction=check_reduction(reduction, owner),
            grad_method=grad_method, exact_per_sample=exact_per_sample,
        )
        self.margin_weight = check_positive(margin_weight, owner, "margin_weight", allow_zero=True)
        self.ce_weight = check_positive(ce_weight, owner, "ce_weight", allow_zero=True)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._input in self.layers and not x.requires_grad:
            x = x.detach().requires_grad_(True)
        with self.capture as cap:
            logits = self.model(x)
        cap.check_unmodified()
        acts = cap.activations
        missing = [n for n in self.layers if n != self._input and n not in acts]
        if missing:
            raise ValueError(
                f"The 'layers' parameter of LargeMarginLoss names layers that did not run in the "
                f"forward pass: {missing}."
            )
        tensors = [x if n == self._input else acts[n] for n in self.layers]
        cap.clear()
        loss = self.margin_weight * large_margin_loss(logits, target, tensors, **self.options)
        if self.ce_weight:
            ce = F.cross_entropy(logits, target, reduction=self.options["reduction"])
            loss = loss + self.ce_weight * ce
        return loss, logits

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"layers={self.layers}, {opts}, margin_weight={self.margin_weight}, ce_weight={self.ce_weight}"
