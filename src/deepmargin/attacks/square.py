r"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based random search.

Square needs only the model's scores: it never computes a gradient (it runs under
``torch.no_grad``), so gradient masking does not stop it, which is why AutoAttack includes it.
It minimises the margin :math:`L(x) = z_y(x) - \max_{j \ne y} z_j(x)` by random search:
at each iteration a random square window of each input's current perturbation is resampled, and
the new point is kept if it lowers the margin. An input is done at its first misclassification.

The window covers a share :math:`p` of the image area (side :math:`\approx\sqrt{p H W}`), with
:math:`p` halved at the iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10 000-query
run, the iterations rescaled to the query budget (:func:`square_fraction`).

- l_inf: start from vertical stripes :math:`\pm\epsilon` (one random sign per column and channel);
  an update sets the window to :math:`\pm\epsilon` (one random sign per channel).
- l_2: start from a grid of :math:`\approx 5 \times 5` pseudo-Gaussian blobs with random signs,
  scaled to norm :math:`\epsilon`; an update picks two windows :math:`W_1, W_2`, moves the
  perturbation mass of :math:`W_1 \cup W_2` (plus any unused budget) into :math:`W_1` as a fresh
  pseudo-Gaussian blob added to the old content of :math:`W_1`, and sets :math:`W_2` to zero, so the
  perturbation keeps the norm :math:`\epsilon`.

Every candidate is clipped to the input bounds and never leaves the :math:`\epsilon`-ball. Inputs
of shape ``(N, C, H, W)`` are images; ``(N, C, L)`` and ``(N, D)`` are treated as images of
height 1 (windows become segments).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..checks import check_int, check_real, param_error
from ._base import check_bounds, check_epsilons, check_inputs, check_within_bounds, eval_mode
from ._robust_common import check_attack_norm, flat_lp, make_generator, misclassified, view_per_sample
from .checks import warn_if_training
from .gradient import norm_name

logger = logging.getLogger(__name__)

__all__ = ["Square", "SquareResult", "square_fraction"]

#: The iterations (of a 10 000-query run) after which the window share is halved.
_HALVING_ITERATIONS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, iteration: int, queries: int) -> float:
    r"""Share of the image that Square's window covers at ``iteration`` (0-based) of a ``queries`` run.

    :math:`p = p_{init} / 2^k` with :math:`k` the number of thresholds 10, 50, 200, 500, 1000,
    2000, 4000, 6000, 8000 below ``int(iteration / queries * 10000)``.

    Example:
        >>> [square_fraction(0.8, i, 10000) for i in (0, 10, 11, 51, 9000)]
        [0.8, 0.8, 0.4, 0.2, 0.0015625]
        >>> square_fraction(0.8, 100, 1000)  # 100 / 1000 * 10000 = 1000: the 5th halving not yet
        0.05
    """
    it = int(iteration / queries * 10000)
    return p_init / 2 ** sum(it > t for t in _HALVING_ITERATIONS)


def _window_sides(p: float, h: int, w: int, minimum: int) -> tuple[int, int]:
    """Height and width of a window covering about ``p * h * w`` of an ``h x w`` image."""
    area = p * h * w
    s = max(minimum, int(round(math.sqrt(area))))
    if s <= min(h, w):
        return s, s
    sh = min(h, s)
    return sh, min(w, max(minimum, int(round(area / sh))))


def _bump(h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """A centred pseudo-Gaussian bump on an ``h x w`` rectangle: at Chebyshev ring ``k`` from the centre
    the value is ``sum_{j >= k} 1 / (j + 1)^2`` (rings up to the largest one)."""
    if h == 0 or w == 0:
        return torch.zeros(h, w, dtype=dtype)
    rows = (torch.arange(h, dtype=dtype) - (h - 1) / 2).abs()
    cols = (torch.arange(w, dtype=dtype) - (w - 1) / 2).abs()
    ring = torch.maximum(rows[:, None], cols[None, :]).floor().long()
    weights = 1.0 / (torch.arange(int(ring.max()) + 1, dtype=dtype) + 1) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{j >= k} weights[j]
    return tail[ring]


def _blob(h: int, w: int, dtype: torch.dtype, transpose: bool) -> torch.Tensor:
    """Square's l2 update pattern: a positive bump on one half of the window and a negative one on the
    other, unit norm. The halves split the rows, or the columns for a one-row window or, when
    ``transpose``, a square one."""
    along_rows = h > 1 and not (transpose and h == w)
    return _split(h, w, dtype, along_rows=along_rows)


def _split(h: int, w: int, dtype: torch.dtype, along_rows: bool) -> torch.Tensor:
    out = torch.zeros(h, w, dtype=dtype)
    if along_rows:
        half = h // 2
        out[:half] = _bump(half, w, dtype)
        out[half:] = -_bump(h - half, w, dtype)
    else:
        half = w // 2
        out[:, :half] = _bump(h, half, dtype)
        out[:, half:] = -_bump(h, w - half, dtype)
    return out / out.norm().clamp_min(1e-12)


class SquareResult(NamedTuple):
    """What :meth:`Square.run` found for each input.

    Attributes:
        x_adv: ``(N, *)``: the first adversarial point found where ``success``, the point of lowest
            margin elsewhere; inputs misclassified to begin with come back unchanged.
        success: ``(N,)`` bool, ``argmax model(x_adv) != y``.
        queries: ``(N,)`` int64, forward passes spent on each input (the starting point counts as the
            first; 0 for inputs misclassified to begin with). The clean pass that decides which inputs
            to attack is not counted.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor


class Square:
    r"""Square Attack (Andriushchenko et al., ECCV 2020) in l_inf or l_2: gradient-free random search.

    See the module docstring. Each input gets at most ``queries`` forward passes (the starting point
    included) and stops at its first misclassification; the model is only run under
    ``torch.no_grad``, so it works on models whose backward pass fails or is masked.

    Args:
        norm: ``'linf'`` (default) or ``'l2'`` (also ``math.inf``, 2).
        eps: radius of the ball, in the units of ``x``.
        queries: forward passes per input. Default 5000 (AutoAttack's).
        p_init: initial share of the image a window covers, in ``(0, 1]``. Default 0.8.
        seed: seeds the random search; every call draws the same. Default 0.
        bounds: ``(low, high)`` of valid inputs. Default ``(0, 1)``.

    Shape:
        x: ``(N, C, H, W)``, ``(N, C, L)`` or ``(N, D)`` within ``bounds``; y: ``(N,)`` int64;
        output: like ``x``.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> res = Square(eps=0.1, queries=20).run(model, x, y)
        >>> bool(((res.x_adv - x).abs() <= 0.1 + 1e-6).all()), int(res.queries.max()) <= 20
        (True, True)

    Reference:
        M. Andriushchenko, F. Croce, N. Flammarion, M. Hein. "Square Attack: a query-efficient
        black-box adversarial attack via random search", ECCV 2020, Algorithms 1-3.
    """

    name = "square"
    #: Square never computes a gradient (AutoAttack's black-box check tells it from gradient attacks).
    gradient_free = True

    def __init__(
        self,
        *,
        norm: float | str = "linf",
        eps: float,
        queries: int = 5000,
        p_init: float = 0.8,
        seed: int = 0,
        bounds: Sequence[float] = (0.0, 1.0),
    ) -> None:
        owner = "Square"
        self.norm = check_attack_norm(norm, owner)
        self.eps = check_real(eps, "eps", owner, low=0, type_exc=ValueError)
        self.queries = check_int(queries, "queries", owner, low=1, type_exc=ValueError)
        self.p_init = check_real(p_init, "p_init", owner, low=0, high=1, low_open=True, type_exc=ValueError)
        self.seed = check_int(seed, "seed", owner, low=0, type_exc=ValueError)
        self.bounds = check_bounds(bounds, owner)

    @property
    def norm_name(self) -> str:
        """``'linf'`` or ``'l2'``."""
        return norm_name(self.norm)

    def __repr__(self) -> str:
        return (f"Square(norm={self.norm_name!r}, eps={self.eps!r}, queries={self.queries!r}, "
                f"p_init={self.p_init!r}, seed={self.seed!r}, bounds={self.bounds!r})")

    # -- calling -----------------------------------------------------------------------

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial batch at radius ``eps`` (see :class:`SquareResult`)."""
        return self.run(model, x, y).x_adv

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> SquareResult:
        """Attack ``x`` and return the batch, which inputs were broken, and the queries spent on each.

        The model runs in eval mode (each submodule's mode restored afterwards) without gradients.
        """
        x0, y = self._prepare(model, x, y, "Square.run")
        with eval_mode(model):
            return self._run(model, x0, y, self.eps)

    def sweep(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float]) -> list[torch.Tensor]:
        """One adversarial batch per radius in ``epsilons`` (each run seeded with ``seed``)."""
        epsilons = check_epsilons(epsilons, "Square.sweep")
        x0, y = self._prepare(model, x, y, "Square.sweep")
        with eval_mode(model):
            return [self._run(model, x0, y, eps).x_adv for eps in epsilons]

    # -- implementation ----------------------------------------------------------------

    def _prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
        check_inputs(x, y, owner)
        if x.dim() not in (2, 3, 4):
            raise param_error(owner, "x", "a tensor of shape (N, D), (N, C, L) or (N, C, H, W)",
                              f"shape {tuple(x.shape)}")
        check_within_bounds(x, self.bounds, owner)
        warn_if_training(model, stacklevel=4)
        return x.detach(), y.to(device=x.device, dtype=torch.int64)

    @staticmethod
    def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        true = logits.gather(1, y[:, None]).squeeze(1)
        return true - logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> SquareResult:
        """The attack on ``x`` (detached, inside the bounds), the model already in eval mode."""
        n = x.shape[0]
        queries = torch.zeros(n, dtype=torch.int64, device=x.device)
        if n == 0:
            return SquareResult(x.clone(), torch.zeros(0, dtype=torch.bool, device=x.device), queries)
        with torch.no_grad():
            success = misclassified(model(x), y)
            x_adv = x.clone()
            todo = (~success).nonzero().squeeze(1)
            if eps == 0 or todo.numel() == 0:
                return SquareResult(x_adv, success, queries)
            found, adv, spent = self._search(model, x[todo], y[todo], eps)
        x_adv[todo] = adv
        success[todo] = found
        queries[todo] = spent
        return SquareResult(x_adv, success, queries)

    def _search(
        self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random search on correctly classified inputs: ``(success, x_adv, queries)``."""
        shape = x0.shape
        img = x0.reshape(shape[0], 1, 1, -1) if x0.dim() == 2 else x0.reshape(shape[0], shape[1], 1, -1) \
            if x0.dim() == 3 else x0
        n, c, h, w = img.shape
        low, high = self.bounds
        gen = make_generator(self.seed)
        dev, dtype = x0.device, x0.dtype

        def rand_sign(*size: int) -> torch.Tensor:
            return (torch.randint(0, 2, size, generator=gen) * 2 - 1).to(device=dev, dtype=dtype)

        def model_margin(batch: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = model(batch.reshape((batch.shape[0],) + shape[1:]))
            return self._margin(logits, labels), misclassified(logits, labels)

        linf = math.isinf(self.norm)
        if linf:
            start = (img + eps * rand_sign(n, c, 1, w)).clamp(low, high)
        else:
            start = (img + self._l2_init(n, c, h, w, eps, gen, dev, dtype)).clamp(low, high)

        out = start.clone()
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        spent = torch.ones(n, dtype=torch.int64, device=dev)
        idx = torch.arange(n, device=dev)
        x_best, margin_best = start, None
        x_ref, labels = img, y
        margin_best, adv = model_margin(x_best, labels)

        def retire(done: torch.Tensor) -> None:
            nonlocal idx, x_best, margin_best, x_ref, labels
            if not bool(done.any()):
                return
            out[idx[done]] = x_best[done]
            found[idx[done]] = True
            keep = ~done
            idx, x_best, margin_best, x_ref, labels = idx[keep], x_best[keep], margin_best[keep], x_ref[keep], labels[keep]

        retire(adv)
        rows_h, cols_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
        for it in range(1, self.queries):
            m = idx.numel()
            if m == 0:
                break
            p = square_fraction(self.p_init, it - 1, self.queries)
            sh, sw = _window_sides(p, h, w, 1 if linf else min(3, h, w) if h > 1 else min(3, w))

            def window(vh: torch.Tensor, vw: torch.Tensor) -> torch.Tensor:
                rmask = (rows_h[None, :] >= vh[:, None]) & (rows_h[None, :] < vh[:, None] + sh)
                cmask = (cols_w[None, :] >= vw[:, None]) & (cols_w[None, :] < vw[:, None] + sw)
                return rmask[:, None, :, None] & cmask[:, None, None, :]

            vh = torch.randint(0, h - sh + 1, (m,), generator=gen).to(dev)
            vw = torch.randint(0, w - sw + 1, (m,), generator=gen).to(dev)
            mask1 = window(vh, vw)
            delta = x_best - x_ref
            if linf:
                new = torch.where(mask1, eps * rand_sign(m, c, 1, 1), delta)
                for _ in range(10):  # resample the signs of windows that would not change
                    same = ((x_ref + new).clamp(low, high) == x_best).flatten(1).all(dim=1)
                    if not bool(same.any()):
                        break
                    new = torch.where(view_per_sample(same, new) & mask1, eps * rand_sign(m, c, 1, 1), new)
                candidate = (x_ref + new).clamp(low, high)
            else:
                vh2 = torch.randint(0, h - sh + 1, (m,), generator=gen).to(dev)
                vw2 = torch.randint(0, w - sw + 1, (m,), generator=gen).to(dev)
                mask2 = window(vh2, vw2)
                transpose = bool(torch.randint(0, 2, (1,), generator=gen).item())
                candidate = self._l2_update(x_ref, delta, mask1, mask2, vh, vw, sh, sw, eps, transpose,
                                            rand_sign(m, c, 1, 1), low, high)
            margin, adv = model_margin(candidate, labels)
            spent[idx] += 1
            better = (margin < margin_best) | adv
            margin_best = torch.where(better, margin, margin_best)
            x_best = torch.where(view_per_sample(better, candidate), candidate, x_best)
            retire(adv)
        if idx.numel():
            out[idx] = x_best
        logger.debug("Square: %d of %d inputs broken", int(found.sum()), n)
        return found, out.reshape(shape), spent

    @staticmethod
    def _l2_init(n: int, c: int, h: int, w: int, eps: float, gen: torch.Generator,
                 dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """About 5 x 5 pseudo-Gaussian blobs with random signs per input and channel, norm ``eps``."""
        bh, bw = max(1, h // 5), max(1, w // 5)
        nh, nw = h // bh, w // bw
        oh, ow = (h - nh * bh) // 2, (w - nw * bw) // 2
        blob = _blob(bh, bw, dtype, False)
        signs = (torch.randint(0, 2, (n, c, nh, nw), generator=gen) * 2 - 1).to(dtype)
        tiles = (signs[:, :, :, None, :, None] * blob[None, None, None, :, None, :]).reshape(n, c, nh * bh, nw * bw)
        delta = torch.zeros(n, c, h, w, dtype=dtype)
        delta[:, :, oh:oh + nh * bh, ow:ow + nw * bw] = tiles
        delta = delta * (eps / view_per_sample(flat_lp(delta, 2.0), delta).clamp_min(1e-12))
        return delta.to(dev)

    @staticmethod
    def _l2_update(
        x_ref: torch.Tensor, delta: torch.Tensor, mask1: torch.Tensor, mask2: torch.Tensor,
        vh: torch.Tensor, vw: torch.Tensor, sh: int, sw: int, eps: float, transpose: bool,
        signs: torch.Tensor, low: float, high: float,
    ) -> torch.Tensor:
        """Move the mass of ``W1 u W2`` (plus the unused budget) into ``W1`` as old content + a new blob."""
        m, c = delta.shape[:2]
        rows = vh[:, None] + torch.arange(sh, device=vh.device)[None, :]
        cols = vw[:, None] + torch.arange(sw, device=vw.device)[None, :]
        index = (torch.arange(m, device=vh.device)[:, None, None, None], torch.arange(c, device=vh.device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :])
        old = delta[index]  # (m, c, sh, sw)
        old_norm = old.flatten(2).norm(dim=2)[:, :, None, None]
        union = mask1 | mask2
        mass = (delta * union).flatten(1).pow(2).sum(dim=1)
        slack = (eps ** 2 - delta.flatten(1).pow(2).sum(dim=1)).clamp_min(0)
        fresh = _blob(sh, sw, delta.dtype, transpose).to(delta.device)[None, None] * signs + old / (old_norm + 1e-12)
        radius = ((mass + slack) / c).sqrt()[:, None, None, None]
        fresh = fresh / fresh.flatten(2).norm(dim=2)[:, :, None, None].clamp_min(1e-12) * radius
        new = delta.masked_fill(union, 0.0)
        new[index] = fresh
        norms = view_per_sample(flat_lp(new, 2.0), new)
        new = new * torch.where(norms > 0, eps / norms.clamp_min(1e-30), torch.zeros_like(norms))
        return (x_ref + new).clamp(low, high)
