"""Margin p-values (Kesidis, Miller & Xiang, Sec. V): the formula, BIC order, per-class fits, thresholds, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from deepmargin.metrics import MarginPValues, detection_scores, threshold_at_fpr


def _reference_pvalues(log_mu: np.ndarray, weights, means, sigmas, *, tail: bool = True) -> np.ndarray:
    """The seed's formula written out with scipy.stats, one component at a time.

    ``tail=False`` computes ``1 - F(z)`` literally (loses relative precision far in the tail);
    ``tail=True`` uses the survival function ``norm.sf``, the same quantity computed accurately.
    """
    out = np.zeros_like(log_mu)
    for w, m, s in zip(weights, means, sigmas):
        z = np.abs(log_mu - m) / s
        out += w * (norm.sf(z) if tail else 1.0 - norm.cdf(z))
    return out


def _mixture_samples(rng: np.random.Generator, means, sigma: float, n_per: int) -> np.ndarray:
    return np.concatenate([rng.normal(m, sigma, n_per) for m in means])


# --------------------------------------------------------------------------- the formula


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_component_centre_is_half_and_falls_away_on_both_sides(seed):
    rng = np.random.default_rng(seed)
    est = MarginPValues(per_class=False, random_state=seed).fit(np.exp(rng.normal(1.5, 0.4, 400)))
    assert est.n_components_ == 1
    centre, sigma = est.means_[0], est.sigmas_[0]
    assert est.pvalues(np.array([math.exp(centre)]))[0] == pytest.approx(0.5, abs=1e-12)
    offsets = np.linspace(0.0, 4.0, 41) * sigma
    below = est.pvalues(np.exp(centre - offsets))
    above = est.pvalues(np.exp(centre + offsets))
    assert np.all(np.diff(below) < 0) and np.all(np.diff(above) < 0)
    np.testing.assert_allclose(below, above, rtol=1e-9)  # symmetric in the log-margin
    assert below[-1] == pytest.approx(1 - norm.cdf(4.0), rel=1e-6)


@pytest.mark.parametrize("per_class", [False, True])
def test_pvalues_equal_an_independent_computation_of_the_formula(per_class):
    rng = np.random.default_rng(3)
    log_mu = np.concatenate([_mixture_samples(rng, [-1.0, 2.0], 0.3, 150), _mixture_samples(rng, [0.5], 0.5, 300)])
    classes = np.repeat([0, 1], 300)
    est = MarginPValues(per_class=per_class).fit(np.exp(log_mu), classes)
    test_log = rng.uniform(-4, 5, 200)
    test_cls = rng.integers(0, 2, 200)
    got = est.pvalues(np.exp(test_log), test_cls)
    for tail, tol in ((True, {"rtol": 1e-9, "atol": 1e-300}), (False, {"rtol": 1e-9, "atol": 1e-15})):
        if per_class:
            want = np.empty_like(test_log)
            for k in (0, 1):
                rows = test_cls == k
                want[rows] = _reference_pvalues(test_log[rows], est.weights_[k], est.means_[k], est.sigmas_[k],
                                                tail=tail)
        else:
            want = _reference_pvalues(test_log, est.weights_, est.means_, est.sigmas_, tail=tail)
        np.testing.assert_allclose(got, want, **tol)
    assert np.all((got >= 0) & (got <= 0.5))


def test_nonpositive_margins_get_pvalue_zero_and_torch_inputs_work():
    rng = np.random.default_rng(0)
    est = MarginPValues(per_class=True).fit(torch.from_numpy(np.exp(rng.normal(0, 1, 200))),
                                            torch.from_numpy(rng.integers(0, 2, 200)))
    margins = torch.tensor([-1.0, 0.0, 1.0, float("inf")])
    p = est.pvalues(margins, torch.tensor([0, 1, 0, 1]))
    assert isinstance(p, np.ndarray) and p.dtype == np.float64
    assert p[0] == 0.0 and p[1] == 0.0 and p[3] == 0.0 and p[2] > 0.1
    assert est.pvalues(np.zeros(0), np.zeros(0, dtype=int)).shape == (0,)


# --------------------------------------------------------------------------- model order


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("means", [[0.0], [-3.0, 0.0, 3.0]])
def test_bic_picks_the_number_of_components(seed, means):
    rng = np.random.default_rng(seed)
    log_mu = _mixture_samples(rng, means, 0.3, 250)
    est = MarginPValues(per_class=False, max_components=6, random_state=seed).fit(np.exp(log_mu))
    assert est.n_components_ == len(means)
    assert est.bic_.shape == (6,) and int(np.argmin(est.bic_)) + 1 == len(means)
    np.testing.assert_allclose(est.means_, means, atol=0.1)  # sorted by mean
    np.testing.assert_allclose(est.sigmas_, 0.3, rtol=0.2)
    np.testing.assert_allclose(est.weights_, 1 / len(means), atol=0.05)
    assert est.weights_.sum() == pytest.approx(1.0)


def test_components_are_capped_at_the_sample_count():
    est = MarginPValues(per_class=True, max_components=10).fit(np.array([1.0, 2.0, 3.0, 0.5, 0.7]),
                                                               np.array([0, 0, 0, 1, 1]))
    assert est.bic_[0].shape == (3,) and est.bic_[1].shape == (2,)
    assert 1 <= est.n_components_[0] <= 3 and 1 <= est.n_components_[1] <= 2


# --------------------------------------------------------------------------- per class


def test_per_class_fits_use_only_their_class():
    rng = np.random.default_rng(5)
    log_mu = np.concatenate([rng.normal(0.0, 0.5, 200), rng.normal(1.0, 0.5, 200), rng.normal(2.0, 0.2, 200)])
    classes = np.repeat([0, 1, 2], 200)
    base = MarginPValues(per_class=True).fit(np.exp(log_mu), classes)
    shifted_log = np.where(classes == 0, log_mu, log_mu + 3.0 * classes)  # move classes 1 and 2 only
    shifted = MarginPValues(per_class=True).fit(np.exp(shifted_log), classes)
    for attr in ("weights_", "means_", "sigmas_", "bic_"):
        np.testing.assert_array_equal(getattr(base, attr)[0], getattr(shifted, attr)[0])
    assert base.n_components_[0] == shifted.n_components_[0]
    assert not np.allclose(base.means_[1], shifted.means_[1])  # the moved classes did change
    probe = np.exp(rng.normal(0.0, 1.0, 50))
    np.testing.assert_array_equal(base.pvalues(probe, np.zeros(50, int)), shifted.pvalues(probe, np.zeros(50, int)))
    np.testing.assert_array_equal(base.classes_, [0, 1, 2])
    assert base.n_samples_ == {0: 200, 1: 200, 2: 200}


def test_pooled_ignores_classes_and_to_dict_is_json():
    rng = np.random.default_rng(0)
    margins = np.exp(rng.normal(0, 1, 300))
    a = MarginPValues(per_class=False).fit(margins)
    b = MarginPValues(per_class=False).fit(margins, rng.integers(0, 3, 300))
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.pvalues(margins[:10]), b.pvalues(margins[:10], np.full(10, 99)))
    assert isinstance(a.n_components_, int) and a.classes_ is None
    for est in (a, MarginPValues().fit(margins, rng.integers(0, 3, 300))):
        data = json.loads(json.dumps(est.to_dict()))
        fits = [data] if not data["per_class"] else list(data["classes"].values())
        for fit in fits:
            assert len(fit["bic"]) == 10 and len(fit["weights"]) == fit["n_components"]


def test_sklearn_protocol():
    est = MarginPValues(per_class=False, max_components=3, random_state=7)
    assert est.get_params() == {"per_class": False, "max_components": 3, "random_state": 7, "reg_covar": 1e-6}
    copy = clone(est)
    assert copy.get_params() == est.get_params() and copy is not est
    assert est.set_params(max_components=4) is est and est.max_components == 4
    assert "max_components=4" in repr(est)
    with pytest.raises(ValueError, match="The parameters of MarginPValues must be among"):
        est.set_params(n_components=2)


def test_reg_covar_floors_the_sigmas():
    margins = np.exp(np.array([0.0, 0.0, 0.0, 0.001, 1.0, 1.0, 1.001]))
    est = MarginPValues(per_class=False, max_components=3, reg_covar=0.01).fit(margins)
    assert np.all(est.sigmas_ >= 0.1 - 1e-12)


# --------------------------------------------------------------------------- thresholds and detection


@pytest.mark.parametrize("n", [37, 100, 1000])
@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1, 0.29, 0.5])
def test_threshold_gives_the_requested_fpr_on_its_data(n, fpr):
    p = np.random.default_rng(n).uniform(0, 0.5, n)
    t = threshold_at_fpr(p, fpr)
    achieved = float((p < t).mean())
    assert achieved <= fpr + 1e-12 and fpr - achieved < 1 / n
    assert threshold_at_fpr(torch.from_numpy(p), fpr) == t


def test_threshold_never_exceeds_the_fpr_with_ties():
    p = np.array([0.0] * 10 + list(np.linspace(0.1, 0.5, 90)))
    t = threshold_at_fpr(p, 0.05)  # 5 allowed, 10 tied at 0: none can be flagged
    assert t == 0.0 and (p < t).sum() == 0
    assert (p < threshold_at_fpr(p, 0.15)).sum() == 15


def test_detection_scores_match_sklearn():
    rng = np.random.default_rng(0)
    clean, attacked = rng.uniform(0, 0.5, 200), rng.uniform(0, 0.2, 150)
    s = detection_scores(clean, attacked, 0.05)
    labels = np.r_[np.zeros(200), np.ones(150)]
    assert s["auc"] == pytest.approx(roc_auc_score(labels, -np.r_[clean, attacked]))
    assert s["tpr"] == pytest.approx((attacked < 0.05).mean()) and s["fpr"] == pytest.approx((clean < 0.05).mean())
    assert (s["n_clean"], s["n_attacked"]) == (200, 150)
    assert detection_scores(np.array([0.3, 0.4]), np.array([0.0, 0.1]), 0.2)["auc"] == 1.0
    assert detection_scores(np.array([0.0, 0.1]), np.array([0.3, 0.4]), 0.2)["auc"] == 0.0


# --------------------------------------------------------------------------- errors


def test_negative_margins_in_fit_are_an_error():
    with pytest.raises(ValueError, match=r"'margins' parameter of MarginPValues.fit must be the margins mu_f > 0.*1 negative"):
        MarginPValues(per_class=False).fit(np.array([1.0, 2.0, -0.5, 3.0]))
    with pytest.raises(ValueError, match="must be finite"):
        MarginPValues(per_class=False).fit(np.array([1.0, 2.0, np.inf]))
    with pytest.raises(ValueError, match="free of NaN"):
        MarginPValues(per_class=False).fit(np.array([1.0, np.nan, 2.0]))


def test_zero_margins_are_left_out_of_the_fit():
    rng = np.random.default_rng(0)
    margins = np.exp(rng.normal(0, 1, 100))
    with pytest.warns(UserWarning, match="left out 3 zero margin"):
        est = MarginPValues(per_class=False).fit(np.r_[margins, 0.0, 0.0, 0.0])
    ref = MarginPValues(per_class=False).fit(margins)
    assert est.n_excluded_ == 3 and est.n_samples_ == 100
    np.testing.assert_array_equal(est.means_, ref.means_)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="at least 2 positive margins for class 1 to fit a mixture. Got 1"):
        MarginPValues().fit(np.r_[margins, 0.0, 2.0], np.r_[np.zeros(100, int), 1, 1])


def test_class_errors():
    rng = np.random.default_rng(0)
    margins, classes = np.exp(rng.normal(0, 1, 100)), rng.integers(0, 2, 100)
    with pytest.raises(ValueError, match="'classes' parameter of MarginPValues.fit must be a 1-D int array"):
        MarginPValues().fit(margins)
    with pytest.raises(ValueError, match="length 100 matching margins. Got 'length 99'"):
        MarginPValues().fit(margins, classes[:99])
    with pytest.raises(TypeError, match="integer class indices"):
        MarginPValues().fit(margins, classes + 0.5)
    with pytest.raises(ValueError, match="at least 2 positive margins for class 2 to fit a mixture. Got 1 instead"):
        MarginPValues().fit(np.r_[margins, 1.0], np.r_[classes, 2])
    est = MarginPValues().fit(margins, classes)
    with pytest.raises(ValueError, match=r"only the fitted classes \[0, 1\]. Got the unfitted class\(es\) \[5\]"):
        est.pvalues(np.array([1.0, 1.0]), np.array([0, 5]))
    with pytest.raises(ValueError, match="'classes' parameter of MarginPValues.pvalues"):
        est.pvalues(np.array([1.0]))
    with pytest.raises(ValueError, match="at least 2 positive margins for the pooled margins"):
        MarginPValues(per_class=False).fit(np.array([1.0]))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_components": 0}, ValueError, "'max_components' parameter of MarginPValues must be an int >= 1. Got 0"),
        ({"max_components": 2.5}, TypeError, "'max_components' parameter of MarginPValues must be an int >= 1"),
        ({"max_components": True}, TypeError, "'max_components'"),
        ({"per_class": "yes"}, TypeError, "'per_class' parameter of MarginPValues must be a bool. Got 'yes'"),
        ({"random_state": -1}, ValueError, "'random_state' parameter of MarginPValues must be None, an int"),
        ({"random_state": "0"}, TypeError, "'random_state'"),
        ({"reg_covar": -1.0}, ValueError, "'reg_covar' parameter of MarginPValues must be a finite float >= 0"),
    ],
)
def test_bad_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        MarginPValues(**kwargs)
    est = MarginPValues()
    est.max_components, est.per_class = kwargs.get("max_components", 10), kwargs.get("per_class", True)
    est.random_state, est.reg_covar = kwargs.get("random_state", 0), kwargs.get("reg_covar", 1e-6)
    with pytest.raises(exc, match=match):  # checked again by fit (after attribute assignment)
        est.fit(np.ones(4), np.zeros(4, int))


def test_other_errors():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        MarginPValues().pvalues(np.ones(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="1-D numpy array"):
        MarginPValues(per_class=False).fit(np.ones((3, 2)))
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="'fpr' parameter of threshold_at_fpr must be a float in \\(0, 1\\)"):
            threshold_at_fpr(np.ones(3), bad)
    with pytest.raises(ValueError, match="non-empty"):
        threshold_at_fpr(np.zeros(0), 0.1)
    with pytest.raises(ValueError, match="'pvalues_attacked' parameter of detection_scores must be a non-empty"):
        detection_scores(np.ones(3), np.zeros(0), 0.1)
