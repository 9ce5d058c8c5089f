"""The large-margin loss of Elsayed et al. (NeurIPS 2018), functional form.

For a sample ``(x, y)``, a candidate class ``i != y``, and a layer ``h_l`` that the scores were
computed from, the first-order (linearised) signed distance to the boundary between ``y`` and ``i``
measured in the l_p norm at that layer is (paper eq. 7 and 10)::

    d_{l,i} = (s_y - s_i) / (||grad_{h_l} (s_y - s_i)||_q / w_l + epsilon),    1/p + 1/q = 1

and the loss charges ``max(0, gamma_l - d_{l,i})`` for every sample that does not clear the margin
``gamma_l``. The gradients with respect to all layers come from one backward pass per candidate
class (all layers are inputs of the same ``torch.autograd.grad`` call).

Under the first-order approximation the denominators are constants, so they can also be computed
ahead of time: :func:`rival_grad_norms` gives them for every class at once (``(N, C, L)``), and
:func:`large_margin_loss_from_norms` charges the same penalty from the logits and such a table
(``deepmargin.training.denominators`` reuses a table for a few epochs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..checks import (
    check_choice,
    check_int,
    check_logits_target,
    check_per_layer,
    check_real,
    check_reduction,
    param_error,
    parse_norm,
    reduce,
)
from ._checks import NONNEGATIVE, POSITIVE
from .registry import LossOption, LossSpec, register_loss

__all__ = ["default_margin_layers", "large_margin_loss", "large_margin_loss_from_norms", "linearized_distances",
           "linearized_margin", "rival_grad_norms", "GRAD_METHODS"]

OWNER = "large_margin_loss"
OWNER_FROM_NORMS = "large_margin_loss_from_norms"
GRAD_METHODS = ("auto", "loop", "batched")
AGGREGATIONS = ("max", "sum")
SCORES = ("logits", "softmax")
ZERO_GRADIENT = ("signed", "inf")


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
    gamma_l = check_per_layer(gamma, "gamma", OWNER, len(checked["layers"]), expected=POSITIVE)
    if alpha is not None:
        alpha = check_real(alpha, "alpha", OWNER, low=0, low_open=True, expected=POSITIVE)
    check_choice(aggregation, "aggregation", OWNER, AGGREGATIONS)
    d, _ = _distances(**checked, approximate=approximate, scores=scores, grad_method=grad_method,
                      exact_per_sample=exact_per_sample)
    return _penalty(d, gamma_l, alpha, aggregation, reduction)


def _penalty(
    d: Sequence[torch.Tensor], gamma_l: Sequence[float], alpha: float | None, aggregation: str, reduction: str
) -> torch.Tensor:
    """The loss of validated per-layer ``(N, k)`` distances: aggregated, capped, averaged, reduced."""
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
    return reduce(torch.stack(per_layer, dim=0).mean(dim=0), reduction)


def rival_grad_norms(
    logits: torch.Tensor,
    target: torch.Tensor,
    layers: Sequence[torch.Tensor],
    *,
    norm: float = 2,
    layer_weights: Sequence[float] | None = None,
    scores: str = "logits",
    grad_method: str = "auto",
    exact_per_sample: bool = False,
) -> torch.Tensor:
    r"""The denominators of the loss for every rival class at once: a ``(N, C, L)`` table.

    .. math:: G[n, i, l] = \lVert \nabla_{h_l}(s_y - s_i)(x_n) \rVert_q / w_l \quad (i \ne y_n), \qquad G[n, y_n, l] = 0

    Under the first-order approximation (``approximate=True``) these are constants for
    backpropagation, so a table computed once can stand in for the ``top_k`` gradient passes of
    :func:`large_margin_loss`: :func:`large_margin_loss_from_norms` with a table computed at the
    same weights, on the same inputs in the same mode, gives the same loss and parameter
    gradients. Costs one backward pass (activations only) per rival class, ``C - 1`` in all, with
    no graph kept.

    Args:
        logits, target, layers: as :func:`large_margin_loss`.
        norm, layer_weights, scores, grad_method, exact_per_sample: as :func:`large_margin_loss`.

    Returns:
        The detached table ``(N, C, L)``, in the dtype of ``logits``; the column of the true class is 0.

    Example::

        >>> import torch
        >>> net1, net2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)
        >>> x = torch.randn(5, 4, requires_grad=True)
        >>> h = torch.relu(net1(x))
        >>> rival_grad_norms(net2(h), torch.tensor([0, 1, 2, 0, 1]), [x, h]).shape
        torch.Size([5, 3, 2])
    """
    check_logits_target(logits, target, OWNER)
    num_classes = logits.shape[1]
    checked = _check_distance_args(logits, target, layers, num_classes - 1, norm, layer_weights, 1.0, scores, grad_method)
    logits, target, layers = checked["logits"], checked["target"], checked["layers"]
    s = logits if scores == "logits" else torch.softmax(logits, dim=1)
    is_true = F.one_hot(target, num_classes).bool()
    # every rival, in class order: (N, C - 1)
    classes = torch.arange(num_classes, device=logits.device).expand_as(is_true)[~is_true].view(-1, num_classes - 1)
    diff = s.gather(1, target[:, None]) - s.gather(1, classes)
    norms = _grad_norms(diff, layers, checked["q"], False, grad_method, exact_per_sample)
    table = logits.new_zeros(logits.shape[0], num_classes, len(layers))
    for l, (g_norm, w) in enumerate(zip(norms, checked["weights"])):
        table[:, :, l].scatter_(1, classes, (g_norm / w).detach())
    return table


def large_margin_loss_from_norms(
    logits: torch.Tensor,
    target: torch.Tensor,
    grad_norms: torch.Tensor,
    *,
    gamma: float | Sequence[float],
    alpha: float | None = None,
    top_k: int = 1,
    aggregation: str = "max",
    epsilon: float = 1e-6,
    scores: str = "logits",
    reduction: str = "mean",
) -> torch.Tensor:
    r"""The first-order large-margin loss with given denominators (one forward, no gradient passes).

    .. math::

        \ell(x, y) = \frac{1}{L} \sum_{l=1}^{L} \mathcal{A}_{i \in T_k(x)}
            \min\Big(\alpha\gamma_l,\ \max\big(0,\ \gamma_l - \frac{s_y - s_i}{G[i, l] + \epsilon}\big)\Big)

    as :func:`large_margin_loss` with ``approximate=True``, except that the denominators
    ``G[i, l] = ||grad_{h_l}(s_y - s_i)||_q / w_l`` are read from ``grad_norms`` (e.g. a table of
    :func:`rival_grad_norms` computed earlier) instead of being computed from the layers: the
    rival classes ``T_k(x)`` are still the ``top_k`` highest current scores, and only the
    numerators carry gradient. With a table computed at the current weights this is exactly the
    first-order loss; a table from earlier weights is the approximation of reusing it.

    Args:
        logits: scores before softmax, ``(N, C)``.
        target: int64 class indices ``(N,)``.
        grad_norms: ``(N, C, L)`` denominators for every class and layer (detached here; the
            column of the true class is not read). ``L`` is the number of margin layers.
        gamma, alpha, top_k, aggregation, epsilon, scores, reduction: as :func:`large_margin_loss`.

    Returns:
        The loss: a scalar, or ``(N,)`` with ``reduction='none'``.

    Shape:
        - logits: ``(N, C)``; target: ``(N,)``; grad_norms: ``(N, C, L)``.
        - output: scalar, or ``(N,)`` if ``reduction='none'``.

    Example::

        >>> import torch
        >>> from deepmargin.losses.large_margin import large_margin_loss_from_norms, rival_grad_norms
        >>> net1, net2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)
        >>> x, y = torch.randn(5, 4, requires_grad=True), torch.tensor([0, 1, 2, 0, 1])
        >>> h = torch.relu(net1(x))
        >>> table = rival_grad_norms(net2(h), y, [x, h])               # e.g. once per few epochs
        >>> loss = large_margin_loss_from_norms(net2(torch.relu(net1(x))), y, table, gamma=1.0, top_k=2)
        >>> loss.backward()

    Reference:
        G. F. Elsayed et al. Large Margin Deep Networks for Classification. NeurIPS 2018 (eq. 10,
        Sec. 4.1: the denominator treated as a constant for backpropagation).
    """
    check_reduction(reduction, OWNER_FROM_NORMS)
    target = check_logits_target(logits, target, OWNER_FROM_NORMS)
    n, num_classes = logits.shape
    if not isinstance(grad_norms, torch.Tensor) or not grad_norms.is_floating_point():
        raise param_error(OWNER_FROM_NORMS, "grad_norms", "a floating-point tensor of shape (N, C, L)",
                          type(grad_norms).__name__, TypeError)
    if grad_norms.dim() != 3 or grad_norms.shape[:2] != (n, num_classes) or grad_norms.shape[2] < 1:
        raise param_error(OWNER_FROM_NORMS, "grad_norms", f"a tensor of shape (N={n}, C={num_classes}, L) matching logits",
                          f"shape {tuple(grad_norms.shape)}")
    num_layers = grad_norms.shape[2]
    _check_top_k(top_k, num_classes, OWNER_FROM_NORMS)
    gamma_l = check_per_layer(gamma, "gamma", OWNER_FROM_NORMS, num_layers, expected=POSITIVE)
    if alpha is not None:
        alpha = check_real(alpha, "alpha", OWNER_FROM_NORMS, low=0, low_open=True, expected=POSITIVE)
    check_choice(aggregation, "aggregation", OWNER_FROM_NORMS, AGGREGATIONS)
    epsilon = check_real(epsilon, "epsilon", OWNER_FROM_NORMS, low=0, low_open=True, expected=POSITIVE)
    check_choice(scores, "scores", OWNER_FROM_NORMS, SCORES)
    s = logits if scores == "logits" else torch.softmax(logits, dim=1)
    is_true = F.one_hot(target, num_classes).bool()
    classes = s.detach().masked_fill(is_true, -math.inf).topk(int(top_k), dim=1).indices  # (N, k), as _distances
    diff = s.gather(1, target[:, None]) - s.gather(1, classes)
    table = grad_norms.detach().to(device=diff.device, dtype=diff.dtype)
    g = table.gather(1, classes[:, :, None].expand(-1, -1, num_layers))  # (N, k, L)
    d = [linearized_margin(diff, g[:, :, l], epsilon=epsilon) for l in range(num_layers)]
    return _penalty(d, gamma_l, alpha, aggregation, reduction)


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
    this is the exact l_p distance to the pairwise boundary (up to ``epsilon``). Each entry is
    :func:`linearized_margin` of the score difference and its gradient norm.

    Args: as :func:`large_margin_loss`, except that ``epsilon`` may be 0 (the measured distance,
    ``+-inf`` where the gradient is zero, see :func:`linearized_margin`); ``return_classes=True``
    also returns the ``(N, k)`` indices of the candidate classes.

    Returns:
        A list with one ``(N, top_k)`` tensor per layer, columns ordered by decreasing ``s_i``
        (and the class indices when asked).
    """
    checked = _check_distance_args(logits, target, layers, top_k, norm, layer_weights, epsilon, scores, grad_method,
                                   allow_zero_epsilon=True)
    distances, classes = _distances(**checked, approximate=approximate, scores=scores, grad_method=grad_method,
                                    exact_per_sample=exact_per_sample)
    return (distances, classes) if return_classes else distances


def _check_top_k(top_k: object, num_classes: int, owner: str) -> int:
    return check_int(top_k, "top_k", owner, low=1, high=num_classes - 1, type_exc=ValueError,
                     expected=f"an int in [1, num_classes - 1] = [1, {num_classes - 1}]")


def _check_distance_args(logits, target, layers, top_k, norm, layer_weights, epsilon, scores, grad_method,
                         allow_zero_epsilon=False) -> dict:
    """Validate the arguments shared by the loss and the distances; return the normalised ones."""
    target = check_logits_target(logits, target, OWNER)
    layers = _check_layers(layers, logits.shape[0])
    top_k = _check_top_k(top_k, logits.shape[1], OWNER)
    _, q = parse_norm(norm, "norm", OWNER)
    weights = [1.0] * len(layers) if layer_weights is None else check_per_layer(
        layer_weights, "layer_weights", OWNER, len(layers), expected=POSITIVE
    )
    epsilon = check_real(epsilon, "epsilon", OWNER, low=0, low_open=not allow_zero_epsilon,
                         expected=NONNEGATIVE if allow_zero_epsilon else POSITIVE)
    check_choice(scores, "scores", OWNER, SCORES)
    check_choice(grad_method, "grad_method", OWNER, GRAD_METHODS)
    if not logits.requires_grad:
        raise param_error(OWNER, "logits", "a tensor computed from the layers (requires_grad=True)",
                          "a tensor that does not require grad")
    return dict(logits=logits, target=target, layers=layers, top_k=top_k, q=q, weights=weights, epsilon=epsilon)


def linearized_margin(
    diff: torch.Tensor, grad_norm: torch.Tensor, *, epsilon: float = 0.0, zero_gradient: str = "signed"
) -> torch.Tensor:
    r"""The first-order signed distance to a boundary: the one place its formula is written.

    .. math:: d = \frac{s_y - s_i}{\lVert \nabla (s_y - s_i) \rVert_q + \epsilon}

    Zero gradients are handled once, here:

    * ``epsilon > 0`` (the loss): the quotient as written, so a zero gradient norm gives
      ``diff / epsilon``, finite and differentiable.
    * ``epsilon == 0`` (measurement): where ``grad_norm`` is exactly 0 the linearised boundary is
      infinitely far. ``zero_gradient='signed'`` (default) gives ``+inf`` / ``-inf`` on the side
      ``diff`` is on, and 0 where ``diff`` is 0 too (on the boundary); ``'inf'`` gives ``+inf``
      whatever ``diff`` (an unsigned step length that a zero gradient can never cover, DeepFool's).

    Args:
        diff: score differences ``s_y - s_i`` (or their absolute values), any shape.
        grad_norm: the dual norms of their gradients, same shape, ``>= 0``.
        epsilon: added to the denominator, ``>= 0``. Default 0.
        zero_gradient: ``'signed'`` or ``'inf'``, used only when ``epsilon == 0``.

    Half-precision inputs (float16, bfloat16) are divided in float32, so that ``diff / epsilon``
    cannot overflow: the result is float32 then, finite wherever the float32 computation is.

    Example:
        >>> linearized_margin(torch.tensor([2.0, -1.0, 0.0, 1.0]), torch.tensor([4.0, 0.0, 0.0, 0.0]))
        tensor([0.5000,   -inf, 0.0000,    inf])
    """
    check_choice(zero_gradient, "zero_gradient", "linearized_margin", ZERO_GRADIENT)
    wide = _wide(diff.dtype)
    if wide != diff.dtype or grad_norm.dtype != diff.dtype:  # (s_y - s_i) / 1e-6 overflows float16
        wide = torch.promote_types(wide, grad_norm.dtype)
        diff, grad_norm = diff.to(wide), grad_norm.to(wide)
    if epsilon:
        return diff / (grad_norm + epsilon)
    moving = grad_norm > 0
    if zero_gradient == "inf":
        flat = torch.full_like(diff, math.inf)
    else:
        flat = torch.where(diff == 0, torch.zeros_like(diff), diff.sign() * math.inf)
    return torch.where(moving, diff / torch.where(moving, grad_norm, torch.ones_like(grad_norm)), flat)


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

    norms = _grad_norms(diff, layers, q, not approximate, grad_method, exact_per_sample)

    distances = []
    for g_norm, w in zip(norms, weights):
        # g_norm: (N, k) dual norms of the gradients of diff at this layer
        g_norm = g_norm / w
        if approximate:
            g_norm = g_norm.detach()
        distances.append(linearized_margin(diff, g_norm, epsilon=epsilon))
    return distances, classes


def _grad_norms(diff, layers, q, create_graph, grad_method, exact_per_sample) -> list[torch.Tensor]:
    """Per layer ``(N, k)`` dual norms of the gradients of the columns of ``diff``."""
    if exact_per_sample:
        return _per_sample_grad_norms(diff, layers, q, create_graph)
    if grad_method == "batched":
        return _batched_grad_norms(diff, layers, q, create_graph)
    # "loop", and "auto" (the loop was fastest on CPU: benchmarks/step_cost.py)
    return _looped_grad_norms(diff, layers, q, create_graph)


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


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32 for the half-precision dtypes (float16 overflows at 65504), else ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _dual_norm(g: torch.Tensor, q: float, batch_dims: int) -> torch.Tensor:
    """l_q norm over all but the first ``batch_dims`` dimensions (accumulated in float32 for half inputs)."""
    wide = _wide(g.dtype)
    return torch.linalg.vector_norm(g.flatten(batch_dims), ord=q, dim=batch_dims,
                                    dtype=wide if wide != g.dtype else None)


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

    Call ``loss, logits = criterion(x, target)``. With ``approximate=True`` the denominators can
    also come from a table computed earlier: ``table = criterion.rival_grad_norms(x, target)``
    (``(N, C, L)``, every class, no graph kept), then ``criterion(x, target, grad_norms=table)``
    runs one plain forward pass, no hooks and no gradient passes (see
    :func:`large_margin_loss_from_norms`; ``deepmargin.training.denominators`` refreshes such a
    table every few epochs).

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
            gamma=check_per_layer(gamma, "gamma", owner, len(self.layers), expected=POSITIVE), alpha=alpha, top_k=top_k,
            norm=norm, aggregation=aggregation, layer_weights=layer_weights, epsilon=epsilon,
            approximate=approximate, scores=scores, reduction=check_reduction(reduction, owner),
            grad_method=grad_method, exact_per_sample=exact_per_sample,
        )
        self.margin_weight = check_real(margin_weight, "margin_weight", owner, low=0, expected=NONNEGATIVE)
        self.ce_weight = check_real(ce_weight, "ce_weight", owner, low=0, expected=NONNEGATIVE)

    def forward(
        self, x: torch.Tensor, target: torch.Tensor, *, grad_norms: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)``; with ``grad_norms`` (``(N, C, L)``, first-order only) the denominators
        are read from it instead of being computed (one plain forward pass)."""
        if grad_norms is not None:
            if not self.options["approximate"]:
                raise ValueError(
                    "The 'grad_norms' parameter of LargeMarginLoss.forward must be None when approximate=False "
                    "(given denominators are constants; the second-order loss differentiates through them). "
                    "Got a tensor instead."
                )
            logits = self.model(x)
            o = self.options
            margin = large_margin_loss_from_norms(
                logits, target, grad_norms, gamma=o["gamma"], alpha=o["alpha"], top_k=o["top_k"],
                aggregation=o["aggregation"], epsilon=o["epsilon"], scores=o["scores"], reduction=o["reduction"],
            )
        else:
            logits, tensors = self._capture(x)
            margin = large_margin_loss(logits, target, tensors, **self.options)
        loss = self.margin_weight * margin
        if self.ce_weight:
            ce = F.cross_entropy(logits, target, reduction=self.options["reduction"])
            loss = loss + self.ce_weight * ce
        return loss, logits

    def rival_grad_norms(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The ``(N, C, L)`` denominators of every rival class at this criterion's layers
        (:func:`rival_grad_norms`), detached; the model runs in whatever mode it is in.

        The parameters are set to ``requires_grad=False`` for the pass (and restored): no graph is
        built for them, which made the pass about 20% faster on the MNIST CNN on CPU. Not
        thread-safe with other uses of the same parameters."""
        frozen = [p for p in self.model.parameters() if p.requires_grad]
        try:
            for p in frozen:
                p.requires_grad_(False)
            with torch.enable_grad():
                # the input requires grad even when it is not a margin layer: with the parameters
                # frozen, it is what makes the hidden layers part of a graph
                logits, tensors = self._capture(x.detach().requires_grad_(True))
                o = self.options
                return rival_grad_norms(logits, target, tensors, norm=o["norm"], layer_weights=o["layer_weights"],
                                        scores=o["scores"], grad_method=o["grad_method"],
                                        exact_per_sample=o["exact_per_sample"])
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _capture(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the model on ``x``; return the logits and the margin layers' tensors."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = f"a tensor of dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise param_error("LargeMarginLoss", "x", "a floating-point tensor (the model's input; convert integer "
                              "images with x.float() / 255)", got, TypeError)
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
        return logits, tensors

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"layers={self.layers}, {opts}, margin_weight={self.margin_weight}, ce_weight={self.ce_weight}"


def default_margin_layers(model: torch.nn.Module) -> list[str]:
    """The model's ``margin_layers`` when it has them (the wide ResNet: the paper's 5 evenly spaced
    layers), else ``["input", *model.hidden_layers]``: the input and every hidden representation (the
    paper's "all layers" setting); just ``["input"]`` for a model without either attribute."""
    from ..capture import unwrap_model

    model = unwrap_model(model)
    chosen = getattr(model, "margin_layers", None)
    if chosen:
        return list(chosen)
    return ["input", *getattr(model, "hidden_layers", ())]


def _build_margin(model: torch.nn.Module, o) -> LargeMarginLoss:
    layers = list(o["layers"]) if o["layers"] is not None else default_margin_layers(model)
    return LargeMarginLoss(
        model, layers, gamma=o["gamma"], alpha=o["alpha"], top_k=o["top_k"], norm=o["norm"],
        aggregation=o["aggregation"], layer_weights=o["layer_weights"], epsilon=o["epsilon"],
        approximate=o["approximate"], scores=o["scores"], exact_per_sample=o["exact_per_sample"],
        margin_weight=o["margin_weight"], ce_weight=o["ce_weight"],
    )


def _option(name, default, flag, expected, help):
    return LossOption(name, default, None, help, flag=flag, expected_text=expected)


register_loss(LossSpec(
    name="margin",
    summary="the large-margin loss of Elsayed et al. (2018) + ce_weight x cross-entropy",
    reference="Elsayed et al., NeurIPS 2018, eqs. (7)-(10)",
    options=(
        _option("layers", None, "--layers", "layer names or None",
                "margin layers (None: the model's default margin layers; `deepmargin layers` lists the names)"),
        _option("gamma", 1.0, "--gamma", "a float > 0 or one per layer", "the margin gamma_l"),
        _option("alpha", None, "--alpha", "a float > 0 or None", "clipping: each penalty at most alpha x gamma_l"),
        _option("top_k", 1, "--top-k", "an int >= 1", "rival classes with the highest scores"),
        _option("norm", 2.0, "--norm", "a real p >= 1 or 'inf'", "the l_p norm of the margin (its dual q in the denominator)"),
        _option("aggregation", "max", "--aggregation", "'max' or 'sum'", "over the rival classes"),
        _option("layer_weights", None, "--layer-weights", "floats > 0, one per layer, or None",
                "divide each layer's denominator by its weight"),
        _option("epsilon", 1e-6, "--epsilon", "a float > 0", "added to the denominators"),
        _option("approximate", True, "--exact", "a bool",
                "first order: the denominators as constants (the paper's Sec. 4.1); --exact makes it False"),
        _option("scores", "logits", "--scores", "'logits' or 'softmax'", "the scores s_i of the margins"),
        _option("exact_per_sample", False, "--exact-per-sample", "a bool",
                "per-sample gradients (batch norm in training mode)"),
        _option("margin_weight", 1.0, "--margin-weight", "a float >= 0", "weight of the margin term"),
        _option("ce_weight", 1.0, "--ce-weight", "a float >= 0", "weight of the cross-entropy term"),
    ),
    build=_build_margin,
    config_fields=True,
    uses_layers=True,
    caches_denominators=True,
    cost=lambda o: 1.0 + 0.35 * o.get("top_k", 1),
    adapt=lambda o, num_classes: {"top_k": min(int(o.get("top_k", 1)), num_classes - 1)},
))
