r"""Gaussian-noise corruption at a given standard deviation or signal-to-noise ratio.

The SNR is the one of Cisse et al. (2017, Parseval networks), used by Elsayed et al. (2018,
Sec. 4.3.3) for their CIFAR-10 comparison:

.. math:: \mathrm{SNR}(x, \delta) = 20 \log_{10} \frac{\|x\|_2}{\|\delta\|_2}\ \text{dB}.

At a given SNR the noise :math:`\delta = \|x\|_2\, 10^{-\mathrm{SNR}/20}\, z / \|z\|_2` with
:math:`z \sim \mathcal{N}(0, I)` has exactly that SNR per input (before clipping to the bounds);
at a given standard deviation :math:`\delta = \sigma z`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..checks import check_bool, check_real, check_x
from ._base import (
    check_bounds,
    check_epsilons,
    check_seed,
    lp_norms,
    per_sample,
    resolve_generator,
)

logger = logging.getLogger(__name__)

__all__ = ["GaussianNoise", "gaussian_noise", "snr_db"]


def snr_db(x: torch.Tensor, x_noisy: torch.Tensor) -> torch.Tensor:
    r"""Per-input signal-to-noise ratio :math:`20 \log_{10}(\|x\|_2 / \|x_{noisy} - x\|_2)` in dB.

    Shape:
        x, x_noisy: ``(N, *)``; output: ``(N,)`` (``inf`` where there is no noise).

    Example:
        >>> x = torch.ones(1, 4)
        >>> snr_db(x, x + 0.1 * torch.tensor([[1.0, 1.0, 1.0, 1.0]])).round().item()
        20.0
    """
    if x.shape != x_noisy.shape:
        raise ValueError(
            f"The 'x_noisy' parameter of snr_db must have the shape of x, {tuple(x.shape)}. "
            f"Got {tuple(x_noisy.shape)} instead."
        )
    return 20 * torch.log10(lp_norms(x, 2.0) / lp_norms(x_noisy - x, 2.0))


def _check_level(value: float, name: str, owner: str, allow_inf: bool) -> float:
    if name == "std":
        return check_real(value, name, owner, low=0, type_exc=ValueError)
    # any finite level in dB, and +inf (no noise) where allowed
    return check_real(value, name, owner, low=-math.inf, low_open=True, finite=not allow_inf,
                      expected="a finite float in dB (or +inf for no noise)", type_exc=ValueError)


def _scale(x: torch.Tensor, z: torch.Tensor, mode: str, level: float) -> torch.Tensor:
    """Noise for one level given a standard normal draw ``z``."""
    if mode == "std":
        return level * z
    if math.isinf(level) and level > 0:
        return torch.zeros_like(z)
    target = lp_norms(x, 2.0) * 10.0 ** (-level / 20.0)
    return z * per_sample(target / lp_norms(z, 2.0).clamp_min(1e-30), z)


class GaussianNoise:
    r"""Additive Gaussian noise at a standard deviation (``std``) or an SNR in dB (``snr``).

    Called like an attack, ``noise(model, x, y)`` (``model`` and ``y`` are ignored and may be
    ``None``), so it plugs into the same evaluation code; ``noise.sweep(model, x, y, levels)``
    returns one batch per level, in the unit of the constructor (std values or SNRs), all
    from the same normal draw scaled to each level.

    .. math::
        x_{noisy} = \mathrm{clip}_{[a, b]}(x + \delta), \quad
        \delta = \sigma z \ \text{ or } \ \delta = \|x\|_2 10^{-\mathrm{SNR}/20} z / \|z\|_2,
        \quad z \sim \mathcal{N}(0, I).

    Args:
        std: standard deviation per coordinate, ``>= 0``; exclusive with ``snr``.
        snr: signal-to-noise ratio in dB (``inf``: no noise); exclusive with ``std``.
        bounds: ``(low, high)`` of valid inputs. Default ``(0, 1)``.
        clip: clip the noisy inputs to ``bounds`` (default ``True``; the SNR is that of the
            noise before clipping).
        seed: seeds a fresh generator on every call; exclusive with ``generator``.
        generator: a ``torch.Generator`` (its state advances between calls).

    Shape:
        x: ``(N, *)``; output: like ``x``.

    Example:
        >>> x = torch.rand(4, 1, 8, 8)
        >>> noisy = GaussianNoise(snr=20.0, clip=False, seed=0)(None, x, None)
        >>> torch.allclose(snr_db(x, noisy), torch.full((4,), 20.0))
        True

    Reference:
        Elsayed et al., NeurIPS 2018, Sec. 4.2.3 and 4.3.3 (SNR as in Cisse et al., ICML 2017).
    """

    name = "noise"

    def __init__(
        self,
        *,
        std: float | None = None,
        snr: float | None = None,
        bounds: Sequence[float] = (0.0, 1.0),
        clip: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        owner = "GaussianNoise"
        if (std is None) == (snr is None):
            raise ValueError(
                f"Exactly one of the 'std' and 'snr' parameters of {owner} must be given. "
                f"Got std={std!r}, snr={snr!r} instead."
            )
        self.mode = "std" if std is not None else "snr"
        self.level = _check_level(std if std is not None else snr, self.mode, owner, allow_inf=True)
        self.bounds = check_bounds(bounds, owner)
        self.clip = check_bool(clip, "clip", owner)
        check_seed(seed, generator, owner)
        self.seed = seed
        self.generator = generator

    @property
    def eps(self) -> float:
        """The noise level (std or SNR in dB): the ``eps`` column of result rows."""
        return self.level

    @property
    def norm_name(self) -> str:
        """``'std'`` or ``'snr_db'``: the ``norm`` column of result rows."""
        return "std" if self.mode == "std" else "snr_db"

    def __repr__(self) -> str:
        return (
            f"GaussianNoise({self.mode}={self.level!r}, bounds={self.bounds!r}, clip={self.clip!r}, seed={self.seed!r})"
        )

    def __call__(
        self,
        model: nn.Module | None,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Noisy copy of ``x`` at the constructor's level (``model`` and ``y`` are unused)."""
        return self.sweep(model, x, y, [self.level], generator=generator)[0]

    def sweep(
        self,
        model: nn.Module | None,
        x: torch.Tensor,
        y: torch.Tensor | None,
        levels: Sequence[float],
        *,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Noisy copies of ``x``, one per level (std values or SNRs, as constructed), same draw for all.

        Example:
            >>> x = torch.rand(3, 5)
            >>> a, b = GaussianNoise(std=0.1, clip=False, seed=1).sweep(None, x, None, [0.1, 0.2])
            >>> torch.allclose(b - x, 2 * (a - x))
            True
        """
        owner = "GaussianNoise.sweep"
        check_x(x, owner)
        if isinstance(levels, (str, bytes)) or not isinstance(levels, (Sequence, torch.Tensor)) or len(levels) == 0:
            raise ValueError(f"The 'levels' parameter of {owner} must be a non-empty sequence of floats. Got {levels!r} instead.")
        values = levels.tolist() if isinstance(levels, torch.Tensor) else list(levels)
        if self.mode == "std":
            values = check_epsilons(values, owner)
        else:
            values = [_check_level(v, "snr", owner, allow_inf=True) for v in values]
        gen = resolve_generator(generator, self.generator, self.seed)
        device = gen.device if gen is not None else x.device
        x0 = x.detach()
        z = torch.randn(x0.shape, generator=gen, device=device, dtype=x0.dtype).to(x0.device)
        out = []
        for level in values:
            noisy = x0 + _scale(x0, z, self.mode, level)
            out.append(noisy.clamp(*self.bounds) if self.clip else noisy)
        return out


def gaussian_noise(
    x: torch.Tensor,
    *,
    std: float | None = None,
    snr: float | None = None,
    bounds: Sequence[float] = (0.0, 1.0),
    clip: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Function form of :class:`GaussianNoise`: ``x`` plus Gaussian noise at ``std`` or ``snr`` dB.

    Example:
        >>> x = torch.full((2, 3), 0.5)
        >>> torch.equal(gaussian_noise(x, std=0.1, seed=0), gaussian_noise(x, std=0.1, seed=0))
        True
    """
    return GaussianNoise(std=std, snr=snr, bounds=bounds, clip=clip, seed=seed, generator=generator)(None, x)
