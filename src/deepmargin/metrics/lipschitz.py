r"""Lipschitz bounds of networks and certified class-pure radii (Kesidis, Miller & Xiang, Theorem 2.1; Tsuzuku et al.).

* :func:`lipschitz_upper_bound`: a valid upper bound on the ``l2/l2`` constant ``L_2`` or on the
  ``l_inf/l_2`` constant ``L_inf`` of Kesidis et al.'s eq. (3), ``|f(x) - f(y)|_inf <= L_inf |x - y|_2``,
  from the layers' own constants: compositions multiply, residual sums add.
* :func:`lipschitz_lower_bound`: the largest Jacobian operator norm seen at the given inputs (and
  optionally along a few ascent steps from them), a lower bound on the same constant.
* :func:`purity_radius`: the radius of a class-pure open l2 ball around each input:
  ``mu_f(x) / (2 L_inf)`` on the rectified outputs (Theorem 2.1, which assumes ``f_i >= 0``) or
  ``mu_f(x) / (sqrt(2) L_2)`` on the raw logits (Tsuzuku et al., Prop. 4.1), with ``mu_f`` the
  model's own-decision margin (:func:`deepmargin.metrics.logit_margins`).

How a model is walked. The bound needs the model's computation graph, which a custom
``forward`` hides. It is read from, in this order:

1. a method ``lipschitz_structure()`` of the module (the protocol of
   :mod:`deepmargin.models.structure`), returning a :class:`Chain` (stages applied in order), a
   :class:`BranchSum` (branches applied to the same input, outputs summed; ``None`` is the
   identity, so ``BranchSum(None, branch)`` is ``x + branch(x)``), a module, or a list of stages (a
   chain); ``None`` when the module cannot describe itself (a subclass with its own ``forward``).
   The bundled models implement it: :class:`~deepmargin.models.MLP`, the flat image models
   (``MnistCNN``, ``DigitsCNN``, ``LeNet5``, ``WideResNet``) and the pre-activation residual block
   of :mod:`deepmargin.models.wrn`;
2. ``nn.Sequential`` (its ``forward`` not overridden): its children in order;
3. the supported layers (:data:`SUPPORTED_LAYERS`), each with its own constant.

Anything else is an error naming the layer (qualified name and type). The walk is checked: it
must reproduce the model's output on a random input. Per layer (biases ignored: an affine map has
its linear part's constant):

* ``Linear``: the spectral norm (exact, SVD in float64); ``Conv1d/2d/3d``, ``ConvTranspose*``,
  ``AvgPool*``, ``AdaptiveAvgPool*``: the l2 operator norm on the input shape propagated through
  the network, by power iteration (convolutions run as the operators they are, their adjoint by
  ``conv_transpose`` with the matching ``output_padding``), which converges to it from below;
* ``BatchNorm*`` (eval mode, running statistics) and :class:`~deepmargin.attacks.Normalize`: the
  diagonal map's largest ``|gamma| / sqrt(running_var + eps)`` (``1 / std``);
* ``ReLU``, ``ReLU6``, ``Hardtanh``, ``Tanh``, ``Softplus``: 1; ``Sigmoid``: 1/4; ``LeakyReLU``:
  ``max(1, |slope|)``; ``ELU``: ``max(1, alpha)``; ``Identity``, ``Flatten``, ``Unflatten``,
  dropout (eval: the identity): 1;
* ``MaxPool*``, ``AdaptiveMaxPool*``: ``sqrt(k)`` with ``k`` the largest number of windows an
  input entry falls in (1 for non-overlapping windows; exact for l2).

For ``norm="linf-l2"`` a chain ``g_k o ... o g_1`` is bounded by the best split
``Linf_inf(g_k ... g_{j+1}) * L_{2->inf}(g_j) * L_2(g_{j-1} ... g_1)``: for a last linear layer
``L_{2->inf}`` is the largest row 2-norm ``||W||_{2->inf}`` of its weight, for a convolution the
largest kernel 2-norm of an output channel, for an elementwise map its scalar constant, and for
other layers ``L_2`` (valid since ``|z|_inf <= |z|_2``). So ``L_inf <= L_2`` always and, for a
network ending with a linear layer, ``L_inf <= ||W_last||_{2->inf} * prod(earlier l2 norms)``.

Reference:
    G. Kesidis, D. J. Miller, Z. Xiang, "Notes on Margin Training and Margin p-Values for Deep
    Neural Network Classifiers", Theorem 2.1. Y. Tsuzuku, I. Sato, M. Sugiyama, "Lipschitz-Margin
    Training: Scalable Certification of Perturbation Invariance for Deep Neural Networks", NeurIPS
    2018, Prop. 4.1 and Sec. 4.2 (power iteration on convolutions).
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.normalize import Normalize
from ..capture.modes import eval_mode
from ..checks import check_choice, check_int, check_real, param_error
from ..models.structure import BranchSum, Chain, check_stage
from .logit_margin import logit_margins

__all__ = [
    "Chain",
    "BranchSum",
    "SUPPORTED_LAYERS",
    "lipschitz_upper_bound",
    "lipschitz_lower_bound",
    "operator_norm",
    "purity_radius",
]

logger = logging.getLogger(__name__)

NORMS = ("l2", "linf-l2")
#: Per theorem: whether the margin is taken on the rectified outputs, and ``c`` in ``radius = margin / (c L)``.
_THEOREM_RULES = {"kesidis": (True, 2.0), "tsuzuku": (False, math.sqrt(2.0))}
THEOREMS = tuple(_THEOREM_RULES)
METHODS = ("lanczos", "power")


# --------------------------------------------------------------------------- structure


def _structure(module: nn.Module) -> object | None:
    """The module's decomposition (Chain / BranchSum), or None for a leaf layer."""
    method = getattr(module, "lipschitz_structure", None)
    if callable(method):
        found = method()
        if isinstance(found, (list, tuple)):
            found = Chain(*found)
        if found is module:
            raise ValueError(f"{type(module).__name__}.lipschitz_structure() must describe the module by its parts. "
                             "Got the module itself instead.")
        return check_stage(found, f"{type(module).__name__}.lipschitz_structure()")
    if type(module).forward is nn.Sequential.forward:
        return Chain(*module.children())
    return None


# --------------------------------------------------------------------------- per-layer constants


@dataclass(frozen=True)
class _Bound:
    """Lipschitz constants of one map: l2 -> l2, l2 -> l_inf, and l_inf -> l_inf (None: not known)."""

    l2: float
    l2_inf: float
    inf_inf: float | None

    def tidy(self) -> _Bound:
        # |g(x) - g(y)|_inf <= |.|_2 and <= inf_inf |x - y|_inf <= inf_inf |x - y|_2
        best = min(self.l2_inf, self.l2, self.inf_inf if self.inf_inf is not None else math.inf)
        return _Bound(self.l2, best, self.inf_inf)


_IDENTITY = _Bound(1.0, 1.0, 1.0)


def _scalar(c: float) -> _Bound:
    """An elementwise map with scalar Lipschitz constant ``c`` has ``c`` in every norm."""
    return _Bound(c, c, c)


_ELEMENTWISE: dict[type, Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0,
    nn.ReLU6: lambda m: 1.0,
    nn.Hardtanh: lambda m: 1.0,
    nn.Tanh: lambda m: 1.0,
    nn.Softplus: lambda m: 1.0,
    nn.Sigmoid: lambda m: 0.25,
    nn.LeakyReLU: lambda m: max(1.0, abs(float(m.negative_slope))),
    nn.ELU: lambda m: max(1.0, float(m.alpha)),
}
_ISOMETRIES = (
    nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)
_CONVS = {nn.Conv1d: (F.conv1d, F.conv_transpose1d), nn.Conv2d: (F.conv2d, F.conv_transpose2d),
          nn.Conv3d: (F.conv3d, F.conv_transpose3d)}
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_ADAPTIVE_MAX_POOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LEAVES: tuple[type, ...] = (
    nn.Linear, *_CONVS, *_TRANSPOSED, *_BATCH_NORMS, Normalize, *_AVG_POOLS, *_MAX_POOLS, *_ADAPTIVE_MAX_POOLS,
    *_ELEMENTWISE, *_ISOMETRIES,
)

#: Names of the layer types :func:`lipschitz_upper_bound` bounds (besides the containers it walks).
SUPPORTED_LAYERS: tuple[str, ...] = tuple(t.__name__ for t in _LEAVES)


@dataclass
class _Options:
    iterations: int
    tol: float
    method: str
    seed: int
    names: dict[int, str]
    owner: str


def _leaf_class(module: nn.Module) -> type | None:
    """The supported class ``module`` is an instance of, if its forward is that class's own."""
    for cls in type(module).__mro__:
        if cls in _LEAVES:
            return cls if type(module).forward is cls.forward else None
    return None


def _leaf_bound(module: nn.Module, x: torch.Tensor, y: torch.Tensor, opts: _Options) -> _Bound:
    """The constants of one supported layer on inputs shaped like ``x`` (outputs ``y``)."""
    cls = _leaf_class(module)
    if cls is None:
        raise _unsupported(module, opts)
    if cls in _ISOMETRIES:
        return _IDENTITY
    if cls in _ELEMENTWISE:
        return _scalar(_ELEMENTWISE[cls](module))
    if cls is nn.Linear:
        w = module.weight.detach().double()
        return _Bound(float(torch.linalg.matrix_norm(w, ord=2)), float(w.norm(dim=1).max()),
                      float(w.abs().sum(dim=1).max()))
    if cls in _BATCH_NORMS:
        if module.running_var is None:
            raise ValueError(
                f"{opts.owner} cannot bound layer {_name(module, opts)!r} ({type(module).__name__}): without "
                "running statistics (track_running_stats=False) batch norm normalises by the statistics of each "
                "batch, which is not a fixed map of one input."
            )
        scale = (module.running_var.detach().double() + module.eps).rsqrt()
        if module.weight is not None:
            scale = scale * module.weight.detach().double().abs()
        return _scalar(float(scale.max()))
    if cls is Normalize:
        return _scalar(float(module.std.detach().double().reciprocal().max()))
    if cls in _MAX_POOLS or cls in _ADAPTIVE_MAX_POOLS:
        if getattr(module, "return_indices", False):
            raise _unsupported(module, opts, "return_indices=True returns a tuple")
        return _Bound(math.sqrt(_max_pool_overlap(module, x.shape[2:], y.shape[2:])), 1.0, 1.0)
    # linear operators: the power iteration on the propagated shape
    l2 = operator_norm(module, tuple(x.shape[1:]), iterations=opts.iterations, tol=opts.tol, method=opts.method,
                       seed=opts.seed)
    if cls in _CONVS:
        w = module.weight.detach().double().flatten(1)  # a row of the operator holds (a subset of) w[o]
        inf_inf = float(w.abs().sum(dim=1).max())
        l2_inf = float(w.norm(dim=1).max()) if module.padding_mode == "zeros" else inf_inf
        return _Bound(l2, l2_inf, inf_inf)
    if cls in _AVG_POOLS:
        # nonnegative weights summing to at most 1 per output, unless a divisor is imposed
        return _Bound(l2, l2, None if getattr(module, "divisor_override", None) else 1.0)
    return _Bound(l2, l2, None)


def _max_pool_overlap(module: nn.Module, in_size: Sequence[int], out_size: Sequence[int]) -> int:
    """Largest number of pooling windows one input entry falls in (windows are separable per axis)."""
    dims = len(in_size)
    adaptive = isinstance(module, _ADAPTIVE_MAX_POOLS)

    def per_axis(value: object) -> list[int]:
        return list(value) if isinstance(value, (tuple, list)) else [value] * dims

    if not adaptive:
        kernel, stride = per_axis(module.kernel_size), per_axis(module.stride or module.kernel_size)
        padding, dilation = per_axis(module.padding), per_axis(module.dilation)
    total = 1
    for axis, (n, m) in enumerate(zip(in_size, out_size)):
        counts = [0] * n
        for o in range(m):
            if adaptive:
                positions = range((o * n) // m, -((-(o + 1) * n) // m))  # floor(o n / m) .. ceil((o + 1) n / m)
            else:
                start = o * stride[axis] - padding[axis]
                positions = (start + t * dilation[axis] for t in range(kernel[axis]))
            for i in positions:
                if 0 <= i < n:
                    counts[i] += 1
        total *= max(counts) if counts else 1
    return total


def _name(module: nn.Module, opts: _Options) -> str:
    return opts.names.get(id(module), "") or "<model>"


def _unsupported(module: nn.Module, opts: _Options, why: str | None = None) -> Exception:
    detail = f" ({why})" if why else ""
    return TypeError(
        f"{opts.owner} cannot bound layer {_name(module, opts)!r} ({type(module).__name__}){detail}. Supported "
        f"layers: {', '.join(SUPPORTED_LAYERS)}; containers: nn.Sequential and the deepmargin models (their "
        "forward not overridden), or any module with a lipschitz_structure() method returning a Chain or "
        "BranchSum of its layers."
    )


# --------------------------------------------------------------------------- power iteration


def _linear_operator(module: nn.Module, input_shape: tuple[int, ...], device: torch.device):
    """``(A, A^T)`` of the linear part of ``module`` on float64 batches ``(1, *input_shape)``."""
    cls = next((c for c in _CONVS if isinstance(module, c)), None)
    if cls is not None and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        conv, conv_t = _CONVS[cls]
        w = module.weight.detach().to(device=device, dtype=torch.float64)
        args = dict(stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups)

        def forward(v: torch.Tensor) -> torch.Tensor:
            return conv(v, w, None, **args)

        out_shape = forward(torch.zeros((1, *input_shape), dtype=torch.float64, device=device)).shape[2:]
        # conv_transpose's output size is (o - 1) s - 2 p + d (k - 1) + 1 + output_padding: match the input
        output_padding = tuple(
            n - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
            for n, o, s, p, d, k in zip(input_shape[1:], out_shape, module.stride, module.padding, module.dilation,
                                        w.shape[2:])
        )

        def adjoint(u: torch.Tensor) -> torch.Tensor:
            return conv_t(u, w, None, stride=module.stride, padding=module.padding, output_padding=output_padding,
                          groups=module.groups, dilation=module.dilation)

        return forward, adjoint
    # any other linear (affine) module: A v = m(v) - m(0), its adjoint by autograd
    double = copy.deepcopy(module).to(device=device, dtype=torch.float64)
    zero = torch.zeros((1, *input_shape), dtype=torch.float64, device=device)
    with torch.no_grad():
        offset = double(zero)

    def forward_generic(v: torch.Tensor) -> torch.Tensor:
        return double(v) - offset

    with torch.enable_grad():
        _, vjp = torch.func.vjp(forward_generic, zero)
    return forward_generic, lambda u: vjp(u)[0]


def operator_norm(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    iterations: int = 100,
    tol: float = 1e-9,
    method: str = "lanczos",
    seed: int = 0,
) -> float:
    r"""The l2 operator norm (largest singular value) of a linear layer on one input shape, by power iteration.

    .. math:: \|A\|_2 = \max_{v \ne 0} \|A v\|_2 / \|v\|_2 = \sqrt{\lambda_{\max}(A^\top A)}

    ``method="power"`` is the plain power iteration :math:`v_{t+1} = A^\top A v_t / \|A^\top A v_t\|_2`
    (estimate :math:`\sqrt{\|A^\top A v_t\|_2}`); ``method="lanczos"`` (default) runs the same
    products :math:`A^\top A v` but keeps every iterate (Lanczos with full reorthogonalisation) and
    takes the largest Ritz value of the Krylov space they span, which converges much faster where
    the top singular values are close (convolutions often: power iteration can be 1e-3 low after
    100 steps where Lanczos is exact to 1e-9). Both approach the norm from below; both stop when
    the residual :math:`\|A^\top A v - \theta v\|_2` of the estimate falls below ``tol * theta``.
    Lanczos stores ``iterations`` vectors of the input's size.

    The bias of an affine layer is ignored (``A v = m(v) - m(0)``). Convolutions with zero padding
    run as ``conv`` and ``conv_transpose`` (same stride, padding, dilation, groups, and the
    ``output_padding`` that restores the input size); other layers (``Linear``, pools,
    transposed or reflect-padded convolutions, any linear module) get their adjoint by autograd.
    Runs in float64.

    Args:
        module: a linear or affine ``nn.Module`` (Linear, Conv*, ConvTranspose*, AvgPool*, ...).
        input_shape: one sample's shape (no batch axis), e.g. ``(1, 28, 28)``.
        iterations: most products with :math:`A^\top A`. Default 100.
        tol: relative residual at which to stop. Default 1e-9.
        method: ``'lanczos'`` (default) or ``'power'``.
        seed: seeds the random start vector. Default 0.

    Returns:
        The estimate, a float.

    Example:
        >>> conv = nn.Conv2d(1, 1, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = conv.weight.fill_(3.0)
        >>> round(operator_norm(conv, (1, 5, 5)), 6)
        3.0
    """
    owner = "operator_norm"
    if not isinstance(module, nn.Module):
        raise param_error(owner, "module", "an nn.Module", type(module).__name__, TypeError)
    shape = _check_shape(input_shape, owner)
    iterations = check_int(iterations, "iterations", owner, low=1, type_exc=ValueError)
    tol = check_real(tol, "tol", owner, low=0, type_exc=ValueError)
    method = check_choice(method, "method", owner, METHODS)
    seed = check_int(seed, "seed", owner, low=0, type_exc=ValueError)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    forward, adjoint = _linear_operator(module, shape, device)

    def gram(v: torch.Tensor) -> torch.Tensor:
        return adjoint(forward(v.reshape(1, *shape))).flatten()

    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(math.prod(shape), generator=gen, dtype=torch.float64).to(device)
    with torch.no_grad():
        theta = (_lanczos if method == "lanczos" else _power)(gram, v / v.norm(), iterations, tol)
    return math.sqrt(max(theta, 0.0))


def _power(gram: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, iterations: int, tol: float) -> float:
    """Largest eigenvalue of the PSD map ``gram`` by power iteration from the unit vector ``v``."""
    estimate = 0.0
    for _ in range(iterations):
        w = gram(v)
        norm = float(w.norm())
        if norm == 0.0:
            return 0.0  # A v = 0 for a random v: A = 0 (almost surely)
        estimate = norm  # ||A^T A v|| <= lambda_max for a unit v
        rayleigh = float(w @ v)
        if float((w - rayleigh * v).norm()) <= tol * rayleigh:
            return estimate
        v = w / norm
    return estimate


def _lanczos(gram: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, iterations: int, tol: float) -> float:
    """Largest eigenvalue of the PSD map ``gram``: top Ritz value of the Krylov space from ``v`` (full reorthogonalisation)."""
    basis = torch.empty((min(iterations, v.numel()), v.numel()), dtype=v.dtype, device=v.device)
    alphas: list[float] = []
    betas: list[float] = []
    theta = 0.0
    for j in range(basis.shape[0]):
        basis[j] = v
        w = gram(v)
        alphas.append(float(w @ v))
        done = basis[: j + 1]
        for _ in range(2):  # twice is enough (Kahan)
            w = w - done.T @ (done @ w)
        beta = float(w.norm())
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        values, vectors = torch.linalg.eigh(t)
        theta = float(values[-1])
        # residual of the top Ritz pair: beta * |last entry of its eigenvector|
        if beta * abs(float(vectors[-1, -1])) <= tol * max(theta, 0.0) or beta <= 1e-14 * max(theta, 1e-300):
            return theta
        betas.append(beta)
        v = w / beta
    return theta


# --------------------------------------------------------------------------- the walk


def _walk(node: object, x: torch.Tensor, opts: _Options) -> tuple[torch.Tensor, _Bound]:
    """Apply ``node`` to ``x``; return its output and its Lipschitz constants."""
    if node is None:
        return x, _IDENTITY
    if isinstance(node, Chain):
        bounds = []
        for stage in node.stages:
            x, bound = _walk(stage, x, opts)
            bounds.append(bound)
        return x, _compose(bounds)
    if isinstance(node, BranchSum):
        outs = [_walk(b, x, opts) for b in node.branches]
        shapes = {tuple(o.shape) for o, _ in outs}
        if len(shapes) != 1:
            raise ValueError(f"The branches of {node!r} in {opts.owner} give outputs of different shapes {sorted(shapes)}.")
        inf = [b.inf_inf for _, b in outs]
        total = _Bound(sum(b.l2 for _, b in outs), sum(b.l2_inf for _, b in outs),
                       None if None in inf else sum(inf))
        return sum(o for o, _ in outs[1:]) + outs[0][0], total.tidy()
    structure = _structure(node)
    if structure is not None:
        return _walk(structure, x, opts)
    if len(list(node.children())) and _leaf_class(node) is None:
        raise _unsupported(node, opts, "a container with its own forward")
    y = node(x)
    if not isinstance(y, torch.Tensor):
        raise _unsupported(node, opts, f"its output is a {type(y).__name__}, not a tensor")
    bound = _leaf_bound(node, x, y, opts).tidy()
    logger.debug("%s %s (%s): l2 %.6g, l2->inf %.6g", opts.owner, _name(node, opts), type(node).__name__,
                 bound.l2, bound.l2_inf)
    return y, bound


def _compose(bounds: Sequence[_Bound]) -> _Bound:
    """Constants of ``g_k o ... o g_1`` from those of the stages ``g_1 .. g_k`` (in order)."""
    l2 = math.prod(b.l2 for b in bounds)
    inf = None if any(b.inf_inf is None for b in bounds) else math.prod(b.inf_inf for b in bounds)
    best = l2
    suffix = 1.0  # linf -> linf constant of the stages after j
    prefix = [math.prod(b.l2 for b in bounds[:j]) for j in range(len(bounds))]
    for j in range(len(bounds) - 1, -1, -1):
        best = min(best, suffix * bounds[j].l2_inf * prefix[j])
        if bounds[j].inf_inf is None:
            break
        suffix *= bounds[j].inf_inf
    return _Bound(l2, best, inf).tidy()


def lipschitz_upper_bound(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    norm: str = "l2",
    iterations: int = 100,
    tol: float = 1e-9,
    method: str = "lanczos",
    seed: int = 0,
) -> float:
    r"""An upper bound on the Lipschitz constant of ``model`` (logits as a function of one input).

    ``norm="l2"``: :math:`\|f(x) - f(y)\|_2 \le L_2 \|x - y\|_2`, the product (over a chain) and sum
    (over residual branches) of the layers' l2 operator norms. ``norm="linf-l2"``:
    :math:`\|f(x) - f(y)\|_\infty \le L_\infty \|x - y\|_2` (Kesidis et al., eq. (3)), the same with
    the last linear layer's largest row 2-norm instead of its spectral norm (see the module
    docstring), never above ``L_2``. The model runs in eval mode (batch norm with its running
    statistics, dropout off); its mode is restored. Convolution and pooling norms come from
    :func:`operator_norm` (Lanczos-accelerated power iteration, converged to ``tol`` within
    ``iterations`` steps on the usual layers; it approaches each norm from below).

    Args:
        model: an ``nn.Module`` made of the supported layers (:data:`SUPPORTED_LAYERS`), walked
            as described in the module docstring; an unsupported layer is a ``TypeError`` naming it.
        input_shape: one sample's shape without the batch axis, e.g. ``(1, 28, 28)``.
        norm: ``'l2'`` (default) or ``'linf-l2'``.
        iterations: most power-iteration steps per convolution / pooling layer. Default 100.
        tol: relative residual at which a power iteration stops. Default 1e-9.
        method: ``'lanczos'`` (default) or ``'power'``, see :func:`operator_norm`.
        seed: seeds the power iterations' start vectors and the random input that checks the walk.

    Returns:
        The bound, a float.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU())
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
        >>> lipschitz_upper_bound(model, (2,)), lipschitz_upper_bound(model, (2,), norm="linf-l2")
        (4.0, 4.0)
    """
    owner = "lipschitz_upper_bound"
    if not isinstance(model, nn.Module):
        raise param_error(owner, "model", "an nn.Module", type(model).__name__, TypeError)
    shape = _check_shape(input_shape, owner)
    norm = check_choice(norm, "norm", owner, NORMS)
    opts = _Options(
        iterations=check_int(iterations, "iterations", owner, low=1, type_exc=ValueError),
        tol=check_real(tol, "tol", owner, low=0, type_exc=ValueError),
        method=check_choice(method, "method", owner, METHODS),
        seed=check_int(seed, "seed", owner, low=0, type_exc=ValueError),
        names={id(m): name for name, m in reversed(list(model.named_modules(remove_duplicate=False)))},
        owner=owner,
    )
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(opts.seed), dtype=dtype).to(device)
    with eval_mode(model), torch.no_grad():
        out, bound = _walk(model, x, opts)
        expected = model(x)
    if not isinstance(expected, torch.Tensor) or expected.shape != out.shape or not torch.allclose(
        out, expected, rtol=1e-4, atol=1e-5 * (1.0 + float(expected.abs().max()))
    ):
        raise ValueError(
            f"{owner} walked {type(model).__name__} as {_describe_walk(model)} but that does not reproduce its "
            "forward pass; give the module (or the submodule with a custom forward) a lipschitz_structure() "
            "method returning a Chain or BranchSum of its layers."
        )
    value = bound.l2 if norm == "l2" else bound.l2_inf
    logger.info("%s of %s: L_2 <= %.6g, L_inf <= %.6g", owner, type(model).__name__, bound.l2, bound.l2_inf)
    return float(value)


def _describe_walk(model: nn.Module) -> str:
    structure = _structure(model)
    return repr(structure) if structure is not None else "a single layer"


# --------------------------------------------------------------------------- lower bound


def _jacobian_norms(model: nn.Module, x: torch.Tensor, norm: str, create_graph: bool) -> torch.Tensor:
    """Per-sample ``||J(x)||_2`` (``'l2'``) or ``max_i ||grad f_i(x)||_2`` (``'linf-l2'``), ``(N,)``."""
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(
            "The 'model' parameter of lipschitz_lower_bound must return logits of shape (N, C). "
            f"Got {getattr(logits, 'shape', type(logits).__name__)} instead."
        )
    rows = []
    for i in range(logits.shape[1]):
        (g,) = torch.autograd.grad(logits[:, i].sum(), x, retain_graph=True, create_graph=create_graph)
        rows.append(g.flatten(1))
    jac = torch.stack(rows, dim=1)  # (N, C, n): the samples of a batch are independent in eval mode
    if norm == "l2":
        return torch.linalg.matrix_norm(jac, ord=2)
    return jac.norm(dim=2).amax(dim=1)


def lipschitz_lower_bound(
    model: nn.Module,
    x: torch.Tensor,
    *,
    norm: str = "l2",
    ascent_steps: int = 0,
    step_size: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    r"""A lower bound on the Lipschitz constant: the largest Jacobian operator norm at the given inputs.

    .. math:: L_2 \ge \max_x \|J_f(x)\|_2 = \max_x \sigma_{\max}(\partial f / \partial x), \qquad
              L_\infty \ge \max_x \max_i \|\nabla_x f_i(x)\|_2

    (``J`` is ``C x n`` per sample: one backward pass per output for the whole batch). With
    ``ascent_steps > 0`` every input then takes that many normalised gradient-ascent steps of
    length ``step_size`` on its Jacobian norm (double backpropagation), and the largest norm seen
    anywhere counts. A piecewise-linear network (ReLU) has a piecewise-constant Jacobian with zero
    gradient: its inputs step in a random direction instead, a random search. Any point of the input
    space gives a valid lower bound (the constant is global). Eval mode; the model's mode is restored.

    Args:
        model: ``nn.Module`` returning logits ``(N, C)``.
        x: inputs ``(N, *)``, at least one.
        norm: ``'l2'`` (default) or ``'linf-l2'``.
        ascent_steps: ascent steps from each input (default 0: the inputs only).
        step_size: l2 length of a step; default ``0.02`` times the mean input norm (0.02 if that is 0).
        seed: seeds the random directions of the ascent.
        batch_size: inputs per pass. Default 256.

    Returns:
        The bound, a float.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> lower = lipschitz_lower_bound(model, torch.randn(4, 3))
        >>> abs(lower - float(torch.linalg.matrix_norm(model.weight.detach(), ord=2))) < 1e-5
        True
    """
    owner = "lipschitz_lower_bound"
    if not isinstance(model, nn.Module):
        raise param_error(owner, "model", "an nn.Module", type(model).__name__, TypeError)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise param_error(owner, "x", "a floating-point tensor (N, *) with N >= 1", got, TypeError)
    norm = check_choice(norm, "norm", owner, NORMS)
    ascent_steps = check_int(ascent_steps, "ascent_steps", owner, low=0, type_exc=ValueError)
    seed = check_int(seed, "seed", owner, low=0, type_exc=ValueError)
    batch_size = check_int(batch_size, "batch_size", owner, low=1, type_exc=ValueError)
    if step_size is None:
        mean = float(x.detach().flatten(1).norm(dim=1).mean())
        step = 0.02 * mean if mean > 0 else 0.02
    else:
        step = check_real(step_size, "step_size", owner, low=0, low_open=True, type_exc=ValueError)
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    with eval_mode(model), torch.enable_grad():
        for chunk in x.detach().split(batch_size):
            point = chunk.clone().requires_grad_(True)
            for t in range(ascent_steps + 1):
                last = t == ascent_steps
                values = _jacobian_norms(model, point, norm, create_graph=not last)
                best = max(best, float(values.detach().max()))
                if last:
                    break
                (grad,) = torch.autograd.grad(values.sum(), point, allow_unused=True)
                grad = torch.zeros_like(point) if grad is None else grad.detach()
                flat = grad.flatten(1)
                lengths = flat.norm(dim=1, keepdim=True)
                noise = torch.randn(flat.shape, generator=gen, dtype=flat.dtype).to(flat.device)
                direction = torch.where(lengths > 0, flat, noise)
                direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-30)
                point = (point.detach() + step * direction.reshape(point.shape)).requires_grad_(True)
    return best


# --------------------------------------------------------------------------- certified radii


def purity_radius(
    model: nn.Module,
    x: torch.Tensor,
    *,
    lipschitz: float,
    theorem: str = "kesidis",
    batch_size: int = 256,
) -> torch.Tensor:
    r"""Radius of a class-pure open l2 ball around each input: no point closer than it changes the decision.

    .. math::
        r_{\mathrm{kesidis}}(x) = \frac{\mu_{\mathrm{relu}(f)}(x)}{2 L_\infty}, \qquad
        r_{\mathrm{tsuzuku}}(x) = \frac{\mu_f(x)}{\sqrt{2}\, L_2}

    with :math:`\mu` the margin of the model's own decision (eq. (2), no labels needed).
    ``'kesidis'`` is Theorem 2.1 of Kesidis, Miller & Xiang, stated for rectified outputs
    :math:`f_i \ge 0`: the margin is taken on ``relu(logits)``, and ``lipschitz`` must bound the
    :math:`\ell_\infty/\ell_2` constant (``lipschitz_upper_bound(model, shape, norm="linf-l2")``,
    which bounds ``relu(f)`` too since relu is 1-Lipschitz). A decision that is pure for
    ``relu(f)`` with a positive margin is also the decision of ``f``. Inputs whose logits are all
    ``<= 0`` get radius 0. ``'tsuzuku'`` is Prop. 4.1 of Tsuzuku et al. on the raw logits, with
    ``lipschitz`` the :math:`\ell_2` constant (``norm="l2"``). Either may be the larger.

    Args:
        model: ``nn.Module`` returning logits ``(N, C)``; evaluated in eval mode, its mode restored.
        x: inputs ``(N, *)``.
        lipschitz: an upper bound of the matching Lipschitz constant, a finite float > 0.
        theorem: ``'kesidis'`` (default) or ``'tsuzuku'``.
        batch_size: inputs per forward pass. Default 256.

    Returns:
        ``(N,)`` radii ``>= 0``, dtype and device of ``x``.

    Example:
        >>> model = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.eye(2))
        >>> purity_radius(model, torch.tensor([[3.0, 1.0]]), lipschitz=1.0)
        tensor([1.])

    Reference:
        G. Kesidis, D. J. Miller, Z. Xiang, Theorem 2.1; Y. Tsuzuku, I. Sato, M. Sugiyama,
        "Lipschitz-Margin Training", NeurIPS 2018, Prop. 4.1.
    """
    owner = "purity_radius"
    if not isinstance(model, nn.Module):
        raise param_error(owner, "model", "an nn.Module", type(model).__name__, TypeError)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise param_error(owner, "x", "a floating-point tensor (N, *)", got, TypeError)
    theorem = check_choice(theorem, "theorem", owner, THEOREMS)
    if isinstance(lipschitz, torch.Tensor) and lipschitz.numel() == 1:
        lipschitz = float(lipschitz)
    lipschitz = check_real(lipschitz, "lipschitz", owner, low=0, low_open=True, type_exc=ValueError)
    batch_size = check_int(batch_size, "batch_size", owner, low=1, type_exc=ValueError)
    if x.shape[0] == 0:
        return x.new_empty(0)
    with eval_mode(model), torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in x.split(batch_size)])
    rectify, scale = _THEOREM_RULES[theorem]
    margins = logit_margins(logits, rectify=rectify)
    return (margins.clamp_min(0) / (scale * lipschitz)).to(dtype=x.dtype)


# --------------------------------------------------------------------------- checks


def _check_shape(shape: object, owner: str) -> tuple[int, ...]:
    ok = isinstance(shape, (Sequence, torch.Size)) and not isinstance(shape, str) and len(shape) > 0 and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in shape
    )
    if not ok:
        raise param_error(owner, "input_shape", "a non-empty sequence of positive ints (one sample, without the "
                          "batch axis), e.g. (1, 28, 28)", shape)
    return tuple(int(s) for s in shape)
