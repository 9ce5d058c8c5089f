r"""Margin p-values of Kesidis, Miller & Xiang (Sec. V): how atypically small a test input's margin is.

A Gaussian mixture is fitted, by EM with the number of components chosen by BIC, to the
log-margins :math:`\log \mu_f(x)` of the correctly classified training samples (per class, or
pooled over the classes). The margin p-value of a test input ``x`` whose class (the model's own
decision, for an unlabelled input) is :math:`\kappa` is

.. math::

    \pi_f(x) = \sum_{i=1}^{I_\kappa} w_i \left(1 - F\left(\frac{|\log \mu_f(x) - m_i|}{\sigma_i}\right)\right)

with :math:`(w_i, m_i, \sigma_i)` the weights, means and standard deviations of class
:math:`\kappa`'s mixture and ``F`` the standard normal c.d.f. A small p-value flags an input whose
margin is abnormally small for its class, as evasion attacks tend to leave (they stop just past the
decision boundary). Each component contributes at most ``w_i / 2``, so ``pi_f <= 1/2`` (``= 1/2``
at the centre of a one-component fit). Note that the formula is symmetric in the log-margin: a
margin far *above* a component's mean gets a small contribution too (the seed's wording,
"the probability that a sample has smaller margin", describes the lower side only).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> margins = np.exp(rng.normal(1.0, 0.3, size=500))       # correctly classified training margins
    >>> classes = rng.integers(0, 3, size=500)
    >>> est = MarginPValues(per_class=True).fit(margins, classes)
    >>> p = est.pvalues(np.array([np.e, 1e-3, 0.0]), np.array([0, 1, 2]))
    >>> bool(0.3 < p[0] <= 0.5), bool(p[1] < 1e-6), float(p[2])
    (True, True, 0.0)

Reference:
    G. Kesidis, D. J. Miller, Z. Xiang, "Notes on Margin Training and Margin p-Values for Deep
    Neural Network Classifiers", Sec. V (margin p-values); BIC: G. Schwarz, 1978.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from typing import Any

import numpy as np

from ..checks import check_bool, check_int, check_real, param_error

__all__ = ["MarginPValues", "detection_scores", "threshold_at_fpr"]

logger = logging.getLogger(__name__)

OWNER = "MarginPValues"


# --------------------------------------------------------------------------- input conversion


def _as_1d(values: Any, owner: str, name: str, *, floating: bool) -> np.ndarray:
    """A 1-D numpy array (float64 or int64) from a numpy array, a torch tensor or a sequence."""
    try:
        import torch

        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        raise param_error(owner, name, "a 1-D numpy array or torch tensor", type(values).__name__, TypeError) from None
    if arr.ndim != 1:
        raise param_error(owner, name, "a 1-D numpy array or torch tensor", f"shape {arr.shape}")
    if floating:
        if arr.dtype.kind not in "biuf":
            raise param_error(owner, name, "a 1-D array of real numbers", f"dtype {arr.dtype}", TypeError)
        arr = arr.astype(np.float64)
        if np.isnan(arr).any():
            raise param_error(owner, name, "free of NaN", f"{int(np.isnan(arr).sum())} NaN value(s)")
        return arr
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise param_error(owner, name, "a 1-D array of integer class indices", f"dtype {arr.dtype}", TypeError)
    return arr.astype(np.int64)


def _upper_tail(z: np.ndarray) -> np.ndarray:
    """``1 - F(z)`` of the standard normal, accurate far in the tail (``erfc``, not ``1 - cdf``)."""
    from scipy.special import ndtr

    return ndtr(-z)


# --------------------------------------------------------------------------- the estimator


class MarginPValues:
    r"""Fit per-class (or pooled) Gaussian mixtures to training log-margins; score test margins by p-value.

    A scikit-learn style estimator: parameters are stored as given (``get_params``/``set_params``
    work), checked on construction and again by :meth:`fit`, and the fitted state lives in
    attributes ending in ``_``.

    Each mixture is sklearn's ``GaussianMixture`` (EM) fitted to :math:`\log \mu` for every number
    of components ``1 .. min(max_components, n)`` (``n`` the class's sample count); the one with the
    smallest BIC is kept. Components are stored sorted by mean.

    Args:
        per_class: one mixture per class ``kappa`` (their :math:`\mathcal{T}_\kappa`, default), or one
            pooled over every class (their Figures 1-2 fit a single component to the whole set).
        max_components: largest number of mixture components tried, an int >= 1. Default 10.
        random_state: seed of EM's k-means initialisation (``None``, an int >= 0 or a
            ``numpy.random.RandomState``). Default 0.
        reg_covar: variance added to every component (sklearn's ``reg_covar``), a float >= 0, in
            squared log-margin units. It floors ``sigma_i`` at ``sqrt(reg_covar)``; EM with BIC can
            otherwise spend a component on a single outlying margin. Default 1e-6 (sklearn's).

    Margins and ties:
        :meth:`fit` takes the margins :math:`\mu_f(x) > 0` of the correctly classified training
        samples (:func:`deepmargin.metrics.logit_margins` with their labels). A negative margin (a
        misclassified sample) or an infinite one is an error. An exact zero (a tie between the two
        top outputs: no log, and not a correct decision either) is left out of the fit, with a
        warning; ``n_excluded_`` counts them. :meth:`pvalues` gives a margin ``<= 0`` (a tie, or
        an input misclassified with respect to the class it is scored for) the p-value 0, the
        lowest possible: an abnormally small margin.

    Fitted attributes (``per_class=True``: dicts keyed by class, int, of the values below):
        n_components_: number of components chosen by BIC (int).
        weights_, means_, sigmas_: ``(n_components,)`` float arrays: ``w_i``, ``m_i`` (of the
            log-margins) and ``sigma_i``, sorted by mean.
        bic_: ``(n_candidates,)`` BIC of 1, 2, ... components.
        n_samples_: margins fitted (int).
        classes_: ``(K,)`` sorted classes that were fitted (``None`` when pooled).
        n_excluded_: zero margins left out of the fit (int, over all classes).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> est = MarginPValues(per_class=False).fit(np.exp(rng.normal(0, 1, 300)))
        >>> est.n_components_
        1
        >>> round(float(est.pvalues(np.exp(est.means_))[0]), 3)
        0.5

    Reference:
        Kesidis, Miller & Xiang, "Notes on Margin Training and Margin p-Values", Sec. V.
    """

    def __init__(self, per_class: bool = True, max_components: int = 10, random_state: Any = 0,
                 reg_covar: float = 1e-6) -> None:
        self.per_class = per_class
        self.max_components = max_components
        self.random_state = random_state
        self.reg_covar = reg_covar
        self._check_params()

    # -- scikit-learn protocol -------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn's protocol)."""
        return {"per_class": self.per_class, "max_components": self.max_components, "random_state": self.random_state,
                "reg_covar": self.reg_covar}

    def set_params(self, **params: Any) -> MarginPValues:
        """Set constructor parameters (checked); returns ``self``."""
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(
                    f"The parameters of {OWNER} must be among {sorted(self.get_params())}. Got {key!r} instead."
                )
            setattr(self, key, value)
        self._check_params()
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{OWNER}({params})"

    def _check_params(self) -> None:
        per_class = self.per_class
        check_bool(bool(per_class) if isinstance(per_class, np.bool_) else per_class, "per_class", OWNER)
        check_int(self.max_components, "max_components", OWNER, low=1)
        check_real(self.reg_covar, "reg_covar", OWNER, low=0)
        rs = self.random_state
        if rs is None or isinstance(rs, np.random.RandomState):
            return
        check_int(rs, "random_state", OWNER, low=0, high=2**32 - 1,
                  expected="None, an int in [0, 2**32) or a numpy.random.RandomState")

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, margins: Any, classes: Any = None) -> MarginPValues:
        """Fit the mixture(s) to ``log(margins)``; returns ``self``.

        Args:
            margins: ``(N,)`` margins ``mu_f > 0`` of correctly classified training samples (numpy
                array or torch tensor). Exact zeros are left out (see the class docstring);
                negative or infinite margins are an error.
            classes: ``(N,)`` int classes of the samples; required when ``per_class``, ignored
                otherwise.

        Raises:
            ValueError: a bad margin, a missing/mismatched ``classes``, or a class (the pooled set)
                with fewer than 2 positive margins.
        """
        self._check_params()
        mu = _as_1d(margins, f"{OWNER}.fit", "margins", floating=True)
        if self.per_class:
            if classes is None:
                raise param_error(
                    f"{OWNER}.fit", "classes", "a 1-D int array of the samples' classes when per_class=True "
                    "(or construct MarginPValues(per_class=False))", None,
                )
            cls = _as_1d(classes, f"{OWNER}.fit", "classes", floating=False)
            if cls.shape != mu.shape:
                raise param_error(f"{OWNER}.fit", "classes", f"an array of length {mu.shape[0]} matching margins",
                                  f"length {cls.shape[0]}")
        else:
            cls = None
        if (mu < 0).any():
            bad = int((mu < 0).sum())
            raise param_error(
                f"{OWNER}.fit", "margins", "the margins mu_f > 0 of correctly classified training samples "
                "(select them with logit_margins(logits, y) > 0)", f"{bad} negative margin(s), the smallest {mu.min():.4g}",
            )
        if np.isinf(mu).any():
            raise param_error(f"{OWNER}.fit", "margins", "finite", f"{int(np.isinf(mu).sum())} infinite margin(s)")
        zero = mu == 0
        self.n_excluded_ = int(zero.sum())
        if self.n_excluded_:
            warnings.warn(
                f"{OWNER}.fit: left out {self.n_excluded_} zero margin(s) (ties between the two top outputs: "
                "not a correct decision, and log(0) is undefined).", UserWarning, stacklevel=2,
            )
            mu = mu[~zero]
            cls = cls[~zero] if cls is not None else None
        log_mu = np.log(mu)
        if cls is None:
            fit = self._fit_one(log_mu, "the pooled margins")
            self.classes_ = None
            self.n_components_, self.weights_, self.means_, self.sigmas_, self.bic_, self.n_samples_ = fit
        else:
            self.classes_ = np.unique(cls)
            fits = {int(k): self._fit_one(log_mu[cls == k], f"class {int(k)}") for k in self.classes_}
            self.n_components_ = {k: f[0] for k, f in fits.items()}
            self.weights_ = {k: f[1] for k, f in fits.items()}
            self.means_ = {k: f[2] for k, f in fits.items()}
            self.sigmas_ = {k: f[3] for k, f in fits.items()}
            self.bic_ = {k: f[4] for k, f in fits.items()}
            self.n_samples_ = {k: f[5] for k, f in fits.items()}
        return self

    def _fit_one(self, log_mu: np.ndarray, what: str) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        from sklearn.mixture import GaussianMixture

        n = int(log_mu.shape[0])
        if n < 2:
            raise ValueError(
                f"{OWNER}.fit needs at least 2 positive margins for {what} to fit a mixture. Got {n} instead. "
                + ("Use MarginPValues(per_class=False) to pool the classes, or more training samples."
                   if what.startswith("class") else "Pass more training samples.")
            )
        x = log_mu.reshape(-1, 1)
        candidates = range(1, min(int(self.max_components), n) + 1)
        models, bic = [], []
        for k in candidates:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*did not converge.*")  # BIC still ranks it
                warnings.filterwarnings("ignore", message=".*Number of distinct clusters.*")  # fewer distinct values than k
                gmm = GaussianMixture(n_components=k, covariance_type="diag", random_state=self.random_state,
                                      reg_covar=float(self.reg_covar)).fit(x)
            models.append(gmm)
            bic.append(float(gmm.bic(x)))
        best = int(np.argmin(bic))
        gmm = models[best]
        order = np.argsort(gmm.means_[:, 0], kind="stable")
        weights = gmm.weights_[order].astype(np.float64)
        means = gmm.means_[order, 0].astype(np.float64)
        sigmas = np.sqrt(gmm.covariances_[order, 0]).astype(np.float64)
        logger.debug("%s: %d margins, BIC picks %d component(s)", what, n, best + 1)
        return best + 1, weights, means, sigmas, np.asarray(bic, dtype=np.float64), n

    # -- scoring ---------------------------------------------------------------------------

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "n_components_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"This {OWNER} instance is not fitted yet: call fit before {method}.")

    def pvalues(self, margins: Any, classes: Any = None) -> np.ndarray:
        r"""The margin p-values :math:`\pi_f(x)` of ``margins`` (Sec. V), in ``[0, 1/2]``.

        Args:
            margins: ``(N,)`` margins (numpy array or torch tensor), usually the model's own-decision
                margins ``logit_margins(logits)`` of unlabelled test inputs. A margin ``<= 0`` gets 0.
            classes: ``(N,)`` int class of each input (its own decision ``logits.argmax(1)`` for
                unlabelled inputs); required when ``per_class``, ignored otherwise.

        Returns:
            ``(N,)`` float64 numpy array.

        Raises:
            ValueError: a class that was not fitted, ``classes`` missing or of the wrong length, NaN.
            sklearn.exceptions.NotFittedError: :meth:`fit` was not called.
        """
        self._check_fitted("pvalues")
        owner = f"{OWNER}.pvalues"
        mu = _as_1d(margins, owner, "margins", floating=True)
        out = np.zeros(mu.shape[0], dtype=np.float64)
        positive = mu > 0
        with np.errstate(divide="ignore"):
            log_mu = np.where(positive, np.log(np.where(positive, mu, 1.0)), 0.0)
        if not self.per_class:
            out[positive] = _mixture_pvalue(log_mu[positive], self.weights_, self.means_, self.sigmas_)
            return out
        if classes is None:
            raise param_error(owner, "classes", "a 1-D int array of the inputs' classes when per_class=True", None)
        cls = _as_1d(classes, owner, "classes", floating=False)
        if cls.shape != mu.shape:
            raise param_error(owner, "classes", f"an array of length {mu.shape[0]} matching margins", f"length {cls.shape[0]}")
        unknown = sorted(set(np.unique(cls).tolist()) - set(self.weights_))
        if unknown:
            raise ValueError(
                f"The 'classes' parameter of {owner} must hold only the fitted classes {sorted(self.weights_)}. "
                f"Got the unfitted class(es) {unknown} instead (no correctly classified training margins of "
                "those classes were fitted; fit them, or use per_class=False)."
            )
        for k in np.unique(cls[positive]):
            rows = positive & (cls == k)
            k = int(k)
            out[rows] = _mixture_pvalue(log_mu[rows], self.weights_[k], self.means_[k], self.sigmas_[k])
        return out

    def to_dict(self) -> dict[str, Any]:
        """The fitted mixture(s) as plain JSON-able values (lists, ints, floats; class keys as str).

        Keys: ``per_class``, ``max_components``, ``random_state`` (as given, or its repr), ``reg_covar``, ``n_excluded``,
        and either the pooled fit's ``n_samples, n_components, weights, means, sigmas, bic``, or
        ``classes: {"k": {same keys}}``.
        """
        self._check_fitted("to_dict")

        def one(n, k, w, m, s, b):
            return {"n_samples": int(n), "n_components": int(k), "weights": w.tolist(), "means": m.tolist(),
                    "sigmas": s.tolist(), "bic": b.tolist()}

        rs = self.random_state
        head = {"per_class": bool(self.per_class), "max_components": int(self.max_components),
                "random_state": rs if rs is None or isinstance(rs, numbers.Integral) else repr(rs),
                "reg_covar": float(self.reg_covar), "n_excluded": int(self.n_excluded_)}
        if not self.per_class:
            return {**head, **one(self.n_samples_, self.n_components_, self.weights_, self.means_, self.sigmas_, self.bic_)}
        return {**head, "classes": {
            str(k): one(self.n_samples_[k], self.n_components_[k], self.weights_[k], self.means_[k], self.sigmas_[k],
                        self.bic_[k])
            for k in sorted(self.weights_)
        }}


def _mixture_pvalue(log_mu: np.ndarray, weights: np.ndarray, means: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """sum_i w_i (1 - F(|log mu - m_i| / sigma_i)) for each ``log_mu``."""
    if log_mu.size == 0:
        return np.zeros(0, dtype=np.float64)
    z = np.abs(log_mu[:, None] - means[None, :]) / sigmas[None, :]
    return _upper_tail(z) @ weights


# --------------------------------------------------------------------------- detection


def threshold_at_fpr(pvalues_clean: Any, fpr: float) -> float:
    """The p-value threshold ``t`` that flags at most a share ``fpr`` of ``pvalues_clean``.

    The detection rule is strict: an input is flagged (declared attacked) when ``p < t``. With
    ``n`` clean p-values sorted ascending ``p_(1) <= ... <= p_(n)`` and ``k = floor(fpr * n)`` (the
    number of false positives allowed), ``t = p_(k+1)``: on these data exactly ``k`` inputs are
    flagged (``k / n`` is within ``1 / n`` of ``fpr`` and never above it), fewer when ``p_(k+1)`` ties
    with smaller values. With ``k = 0``, ``t = p_(1)`` and nothing is flagged.

    Args:
        pvalues_clean: ``(n,)`` p-values of clean inputs, ``n >= 1`` (numpy array or torch tensor).
        fpr: the false-positive rate allowed, a float in ``(0, 1)``.

    Returns:
        The threshold, a float.

    Example:
        >>> t = threshold_at_fpr(np.linspace(0.0, 0.5, 101), 0.05)
        >>> t, int((np.linspace(0.0, 0.5, 101) < t).sum())
        (0.025, 5)
    """
    owner = "threshold_at_fpr"
    check_real(fpr, "fpr", owner, low=0, high=1, low_open=True, high_open=True, type_exc=ValueError)
    p = _as_1d(pvalues_clean, owner, "pvalues_clean", floating=True)
    if p.size == 0:
        raise param_error(owner, "pvalues_clean", "a non-empty array", "an empty array")
    p = np.sort(p)
    k = int(math.floor(float(fpr) * p.size + 1e-9))  # + 1e-9: 0.29 * 100 = 28.999999999999996
    return float(p[min(k, p.size - 1)])


def detection_scores(pvalues_clean: Any, pvalues_attacked: Any, threshold: float) -> dict[str, float | int]:
    """Detection of attacked inputs by a small margin p-value: ROC AUC, and TPR/FPR at ``threshold``.

    Attacked inputs are the positive class, the score is ``1 - p`` (a smaller p-value is more
    suspicious); the AUC is ``sklearn.metrics.roc_auc_score`` and does not depend on a threshold.
    At ``threshold``, an input is flagged when ``p < threshold`` (as :func:`threshold_at_fpr`).

    Args:
        pvalues_clean: ``(n,)`` p-values of clean inputs (negatives), ``n >= 1``.
        pvalues_attacked: ``(m,)`` p-values of attacked inputs (positives), ``m >= 1``.
        threshold: the p-value threshold.

    Returns:
        ``{"auc", "tpr", "fpr", "n_clean", "n_attacked"}``: ``tpr`` the share of attacked inputs
        flagged, ``fpr`` the share of clean inputs flagged.

    Example:
        >>> s = detection_scores(np.array([0.3, 0.4, 0.5]), np.array([0.01, 0.35]), threshold=0.1)
        >>> round(s["auc"], 4), s["tpr"], s["fpr"]
        (0.8333, 0.5, 0.0)
    """
    from sklearn.metrics import roc_auc_score

    owner = "detection_scores"
    clean = _as_1d(pvalues_clean, owner, "pvalues_clean", floating=True)
    attacked = _as_1d(pvalues_attacked, owner, "pvalues_attacked", floating=True)
    for name, arr in (("pvalues_clean", clean), ("pvalues_attacked", attacked)):
        if arr.size == 0:
            raise param_error(owner, name, "a non-empty array", "an empty array")
    check_real(threshold, "threshold", owner, finite=False, expected="a real number")
    labels = np.concatenate([np.zeros(clean.size), np.ones(attacked.size)])
    scores = 1.0 - np.concatenate([clean, attacked])
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "tpr": float((attacked < threshold).mean()),
        "fpr": float((clean < threshold).mean()),
        "n_clean": int(clean.size),
        "n_attacked": int(attacked.size),
    }

