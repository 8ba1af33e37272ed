"""halp.eval.smo: libsvm's C-SVC recomputed, bit for bit, against scikit-learn's SVC.

Every case compares the support vectors, their coefficients, the intercept, the iteration
count and the predictions with ``SVC(kernel="rbf", gamma=gamma)`` exactly (no tolerance):
a solver that differs from libsvm in one rounding, one tie or one shrinking decision
takes another path and fails these tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

from halp.eval import smo
from halp.eval.svm import svm_protocol


def _blobs(
    seed: int, n: int, overlap: float, duplicates: int = 0, twins: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping classes in 8-d (labels 3 and 7, unbalanced).

    ``duplicates`` rows are one repeated row (identical graphs give identical embeddings:
    ties in every comparison); ``twins`` rows are near-copies of others, some with the
    other label, close enough for their float32 Q entry to round to +-1 (a quadratic
    coefficient of 0, libsvm's TAU case).
    """
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.4, 3, 7)
    x = rng.normal(size=(n, 8)) + np.where(y == 7, overlap, 0.0)[:, None] * rng.normal(size=8)
    if duplicates:
        pick = rng.choice(n, duplicates, replace=False)
        x[pick[1:]] = x[pick[0]]
        y[pick[1:]] = y[pick[0]]
    if twins:
        pick = rng.choice(n, 2 * twins, replace=False)
        x[pick[twins:]] = x[pick[:twins]] + 1e-7 * rng.normal(size=(twins, 8))
        y[pick[twins:]] = np.where(rng.random(twins) < 0.5, 3, 7)
    return x, y


def _assert_same(
    reference: SVC, model: smo.BinaryModel, x_test: np.ndarray, kernel: np.ndarray
) -> None:
    assert model.iterations == int(reference.n_iter_[0])
    np.testing.assert_array_equal(model.support, reference.support_)
    np.testing.assert_array_equal(model.coef, reference._dual_coef_[0])
    assert -model.rho == reference._intercept_[0]
    np.testing.assert_array_equal(model.predict(kernel), reference.predict(x_test))


CASES = [  # (seed, n, overlap, duplicates, twins, C): small and large C, ties, easy and hard
    (0, 160, 0.8, 0, 0, 1e-3),
    (1, 160, 0.8, 0, 0, 1.0),
    (2, 240, 0.5, 12, 0, 10.0),
    (3, 240, 0.3, 0, 0, 1e3),
    (4, 400, 0.6, 30, 0, 1e2),
    (5, 400, 1.5, 0, 0, 1e3),
    (12, 300, 0.6, 0, 40, 1e2),
]


@pytest.mark.parametrize(("seed", "n", "overlap", "duplicates", "twins", "c"), CASES)
def test_fit_and_predict_equal_libsvm_bit_for_bit(
    seed: int, n: int, overlap: float, duplicates: int, twins: int, c: float
) -> None:
    x, y = _blobs(seed, n + 60, overlap, duplicates, twins)
    x_fit, y_fit, x_test = x[:n], y[:n], x[n:]
    gamma = smo.scale_gamma(x_fit)
    reference = SVC(C=c, kernel="rbf", gamma=gamma).fit(x_fit, y_fit)
    problem = smo.binary_problem(smo.train_kernel(x_fit, gamma), y_fit)
    model = smo.fit(problem, c)
    _assert_same(reference, model, x_test, smo.cross_kernel(x_test, x_fit, gamma))
    assert set(model.classes) == {3, 7}


def test_the_shared_pair_terms_give_the_same_problem_and_kernels() -> None:
    x, y = _blobs(6, 300, 0.7, 10)
    terms = smo.PairTerms.of(x)
    rows, held = np.arange(40, 300), np.arange(40)
    gamma = smo.scale_gamma(x[rows])
    direct = smo.binary_problem(smo.train_kernel(x[rows], gamma), y[rows])
    shared = terms.binary_problem(rows, y[rows], gamma)
    for name in ("order", "signs", "q", "qd", "classes"):
        np.testing.assert_array_equal(getattr(shared, name), getattr(direct, name))
    np.testing.assert_array_equal(
        terms.predict_kernel(held, rows, gamma), smo.cross_kernel(x[held], x[rows], gamma)
    )
    np.testing.assert_array_equal(terms.train_kernel(rows, gamma), smo.train_kernel(x[rows], gamma))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("shrinking", [True, False])
def test_options_match_libsvm(shrinking: bool) -> None:
    """Without shrinking, and cut short by max_iter (rho from the active set then)."""
    x, y = _blobs(7, 300, 0.4)
    gamma = smo.scale_gamma(x)
    problem = smo.binary_problem(smo.train_kernel(x, gamma), y)
    for c, max_iter in [(1e3, -1), (1e3, 1500), (10.0, 40)]:
        reference = SVC(C=c, gamma=gamma, shrinking=shrinking, max_iter=max_iter).fit(x, y)
        model = smo.fit(problem, c, shrinking=shrinking, max_iter=max_iter)
        _assert_same(reference, model, x, smo.cross_kernel(x, x, gamma))


def test_multiclass_precomputed_on_the_exact_kernels_equals_rbf() -> None:
    """The protocol hands 3+ classes to SVC(kernel="precomputed") on these kernels."""
    rng = np.random.default_rng(8)
    y = np.repeat([0, 1, 2], 50)
    x = rng.normal(size=(150, 5)) + y[:, None] * rng.normal(size=5)
    fit_rows, test_rows = np.arange(0, 150, 2), np.arange(1, 150, 2)
    gamma = smo.scale_gamma(x[fit_rows])
    terms = smo.PairTerms.of(x)
    for c in (0.1, 100.0):
        reference = SVC(C=c, gamma=gamma).fit(x[fit_rows], y[fit_rows])
        pre = SVC(C=c, kernel="precomputed").fit(terms.train_kernel(fit_rows, gamma), y[fit_rows])
        np.testing.assert_array_equal(pre.dual_coef_, reference.dual_coef_)
        np.testing.assert_array_equal(pre.intercept_, reference.intercept_)
        np.testing.assert_array_equal(pre.n_iter_, reference.n_iter_)
        kernel = terms.predict_kernel(test_rows, fit_rows, gamma)
        np.testing.assert_array_equal(
            pre.decision_function(kernel), reference.decision_function(x[test_rows])
        )


def test_kernels_are_symmetric_and_refuse_a_third_class() -> None:
    x, _ = _blobs(9, 120, 0.5)
    k = smo.train_kernel(x, 0.3)
    np.testing.assert_array_equal(k, k.T)
    assert np.all(np.diag(k) > 0.999)
    with pytest.raises(ValueError, match="exactly two classes"):
        smo.binary_problem(k, np.arange(120) % 3)
    problem = smo.binary_problem(k, _blobs(9, 120, 0.5)[1])
    for c, eps in [(0.0, 1e-3), (-1.0, 1e-3), (1.0, 0.0)]:
        with pytest.raises(ValueError, match="must be > 0"):
            smo.fit(problem, c, eps=eps)


def test_the_protocol_refuses_embeddings_with_nan() -> None:
    x, y = _blobs(10, 60, 1.0)
    x[17, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 of 60 embeddings hold NaN or inf \(first: row 17\)"):
        svm_protocol(x, y, 0, folds=3, inner_folds=2)


def test_scale_gamma_is_scikit_learns() -> None:
    x, y = _blobs(11, 90, 0.9)
    assert smo.scale_gamma(x) == SVC(gamma="scale").fit(x, y)._gamma
    assert smo.scale_gamma(x * 3.0) == SVC(gamma="scale").fit(x * 3.0, y)._gamma
    flat = np.full((6, 4), 2.5)  # var 0: scikit-learn falls back to 1
    assert smo.scale_gamma(flat) == SVC(gamma="scale").fit(flat, [0, 1] * 3)._gamma == 1.0
