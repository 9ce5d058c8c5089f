"""Two-dimensional toy datasets for decision-boundary pictures (Elsayed et al. 2018, Fig. 1)."""

from __future__ import annotations

import numpy as np

from ._validation import check_seed, is_int, is_nonnegative_real

__all__ = ["make_moons", "make_spirals"]


def _check_size_noise(n_samples: object, noise: object, owner: str) -> tuple[int, float]:
    if not is_int(n_samples) or int(n_samples) < 2:  # type: ignore[call-overload]
        raise ValueError(f"The 'n_samples' parameter of {owner} must be an int >= 2. Got {n_samples!r} instead.")
    if not is_nonnegative_real(noise):
        raise ValueError(f"The 'noise' parameter of {owner} must be a float >= 0. Got {noise!r} instead.")
    return int(n_samples), float(noise)  # type: ignore[call-overload, arg-type]


def make_moons(n_samples: int, *, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (scikit-learn's ``make_moons``), balanced, shuffled.

    Args:
        n_samples: number of points (classes differ in size by at most one).
        noise: standard deviation of the Gaussian jitter added to each coordinate.
        seed: non-negative int seed.

    Returns:
        ``(x, y)``: float32 ``(n_samples, 2)`` (not standardised) and int64 ``(n_samples,)``.

    Example:
        >>> x, y = make_moons(10, seed=0)
        >>> x.shape, sorted(set(y.tolist()))
        ((10, 2), [0, 1])
    """
    n_samples, noise = _check_size_noise(n_samples, noise, "make_moons")
    seed = check_seed(seed, owner="make_moons")
    from sklearn.datasets import make_moons as sklearn_moons  # imported here: scikit-learn is slow to import

    x, y = sklearn_moons(n_samples=n_samples, noise=noise, shuffle=True, random_state=np.random.RandomState(seed))
    return x.astype(np.float32), y.astype(np.int64)


def make_spirals(
    n_samples: int, *, noise: float = 0.05, turns: float = 1.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved Archimedean spirals, one per class, balanced, shuffled.

    Class ``k`` in ``{0, 1}`` lies on ``r(t) = t``, ``phi(t) = 2 pi turns t + k pi`` for
    ``t`` in ``[0.05, 1]``; ``t = sqrt(u)`` with ``u`` uniform, so the points are roughly
    uniform along each arm. Gaussian jitter of standard deviation ``noise`` is added to each
    coordinate. The two arms are ``1 / (2 turns)`` apart radially.

    Args:
        n_samples: number of points (classes differ in size by at most one).
        noise: standard deviation of the jitter (the outer radius is 1).
        turns: number of full turns of each arm.
        seed: non-negative int seed.

    Returns:
        ``(x, y)``: float32 ``(n_samples, 2)`` (not standardised) and int64 ``(n_samples,)``.

    Example:
        >>> x, y = make_spirals(10, seed=0)
        >>> x.shape, int(y.sum())
        ((10, 2), 5)
    """
    n_samples, noise = _check_size_noise(n_samples, noise, "make_spirals")
    seed = check_seed(seed, owner="make_spirals")
    if not is_nonnegative_real(turns) or float(turns) == 0.0:
        raise ValueError(f"The 'turns' parameter of make_spirals must be a float > 0. Got {turns!r} instead.")
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples, dtype=np.int64) % 2
    t_min = 0.05
    t = np.sqrt(rng.uniform(t_min**2, 1.0, size=n_samples))
    phi = 2.0 * np.pi * turns * t + np.pi * y
    x = np.stack([t * np.cos(phi), t * np.sin(phi)], axis=1)
    x = x + noise * rng.standard_normal(x.shape)
    perm = rng.permutation(n_samples)
    return x[perm].astype(np.float32), y[perm]
