"""libsvm's C-SVC, recomputed exactly and faster, for the graph protocol's RBF SVM.

The graph protocol (:mod:`halp.eval.svm`) is defined by scikit-learn's ``SVC()``, i.e. by
libsvm 3.x: the SMO solver of Fan, Chen and Lin ("Working set selection using second
order information for training support vector machines", JMLR 6, 2005: WSS 3, with
libsvm's shrinking and gradient reconstruction; Chang and Lin, "LIBSVM", ACM TIST 2011,
sections 4.1-4.2, 5). This module performs the same floating-point operations in the
same order, so its dual coefficients, intercept, iteration count and predictions are
bit-identical to ``SVC(C=c, kernel="rbf", gamma=gamma).fit(x, y)`` (tested). It is
faster for four reasons, none of which changes a number:

- the gamma-free part of the kernel is computed once for every pair of rows
  (:class:`PairTerms`), and each training set's float32 ``Q`` once for every C of the
  grid, where libsvm recomputes and caches kernel rows in each fit;
- the solver keeps the whole ``Q`` in libsvm's position order (rows and columns move
  with its swaps; many swaps at once as one gather), so its loops read contiguous memory
  instead of going through a least-recently-used row cache;
- each working-set search is a branch-free pass that the compiler vectorises, then a
  scan in libsvm's order that keeps its tie-breaking;
- the loops are compiled for the machine they run on (numba, no fast-math, so every
  addition and multiplication rounds as in libsvm's compiled C++).

What must match libsvm, and does:

- kernel values: ``exp(-gamma (|x_i|^2 + |x_j|^2 - 2 x_i.x_j))`` with sequential dot
  products for training, ``exp(-gamma sum_k (x_k - s_k)^2)`` for prediction;
- the class grouping (labels sorted, samples of the first class first, each class in
  input order) and the +1/-1 sign of each sample;
- ``Q = float32(y_i y_j K_ij)`` and ``QD_i = K_ii`` in double;
- WSS 3's tie-breaking (the last index wins a tie), the shrinking schedule
  (every ``min(l, 1000)`` iterations), the one-off unshrinking at ``10 eps``, both
  branches of the gradient reconstruction, the bias ``rho`` and the stopping rule
  ``m(alpha) - M(alpha) < eps``;
- the decision value ``sum_s coef_s K(x, x_s) - rho`` summed over the support vectors in
  libsvm's order, the first class for a value > 0.

Only two-class problems run here; :mod:`halp.eval.svm` hands others to scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

TAU = 1e-12
"""libsvm's replacement for a non-positive quadratic coefficient."""

_LOWER, _UPPER, _FREE = 0, 1, 2


def scale_gamma(x: np.ndarray) -> float:
    """scikit-learn's ``gamma="scale"``: 1 / (n_features * X.var()), 1 where X.var() is 0."""
    var = float(x.var())
    return 1.0 / (x.shape[1] * var) if var != 0 else 1.0


_BLOCK = 256
"""Columns per block in the pairwise loops: a block of the transposed data stays in L2."""


@numba.njit(cache=True, nogil=True)
def _pair_terms(x: np.ndarray, differences: bool) -> np.ndarray:  # pragma: no cover - compiled
    """Symmetric (n, n): |x_i|^2 + |x_j|^2 - 2 x_i.x_j, or sum_k (x_ik - x_jk)^2.

    Every sum runs over k in order from 0.0, as libsvm's loops do; each SIMD lane
    carries one (i, j) pair, so vectorising over j changes no rounding.
    """
    n, d = x.shape
    xt = np.ascontiguousarray(x.T)
    sq = np.zeros(n)
    for i in range(n):
        total = 0.0
        for k in range(d):
            total += x[i, k] * x[i, k]
        sq[i] = total
    out = np.empty((n, n))
    acc = np.empty(_BLOCK)
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        for i in range(stop):  # the upper triangle j >= i of this block of columns
            first = max(start, i)
            if first >= stop:
                continue
            part = acc[: stop - first]
            part[:] = 0.0
            for k in range(d):
                xik = x[i, k]
                column = xt[k, first:stop]
                if differences:
                    for j in range(part.shape[0]):
                        diff = xik - column[j]
                        part[j] += diff * diff
                else:
                    for j in range(part.shape[0]):
                        part[j] += xik * column[j]
            for j in range(part.shape[0]):
                if differences:
                    out[i, first + j] = part[j]
                else:
                    out[i, first + j] = sq[i] + sq[first + j] - 2.0 * part[j]
    # both are symmetric ((a - b)^2 = (b - a)^2, sq_i + sq_j = sq_j + sq_i): mirror the
    # upper triangle in 64 x 64 tiles
    for r0 in range(0, n, 64):
        for c0 in range(0, r0 + 1, 64):
            for r in range(r0, min(r0 + 64, n)):
                for col in range(c0, min(c0 + 64, r)):
                    out[r, col] = out[col, r]
    return out


@numba.njit(cache=True, nogil=True)
def _rbf(
    terms: np.ndarray, rows: np.ndarray, cols: np.ndarray, gamma: float
) -> np.ndarray:  # pragma: no cover
    """``exp(-gamma terms[rows][:, cols])``: the C library's exp per entry, as libsvm's."""
    out = np.empty((rows.shape[0], cols.shape[0]))
    for a in range(rows.shape[0]):
        source = terms[rows[a]]
        for b in range(cols.shape[0]):
            out[a, b] = math.exp(-gamma * source[cols[b]])
    return out


@numba.njit(cache=True, nogil=True)
def _q_matrix(  # pragma: no cover - compiled
    terms: np.ndarray, rows: np.ndarray, signs: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ``Q = float32(y_a y_b K_ab)`` and ``QD = K_aa`` of libsvm, training rows in its order."""
    n = rows.shape[0]
    q = np.empty((n, n), dtype=np.float32)
    qd = np.empty(n)
    for a in range(n):
        source = terms[rows[a]]
        for b in range(a, n):
            value = math.exp(-gamma * source[rows[b]])
            if b == a:
                qd[a] = value
            # y_a y_b K is +-K exactly, and rounding to float32 is symmetric in sign
            single = np.float32(value)
            q[a, b] = single if signs[a] == signs[b] else -single
    for r0 in range(0, n, 64):  # symmetric: mirror the upper triangle in tiles
        for c0 in range(0, r0 + 1, 64):
            for r in range(r0, min(r0 + 64, n)):
                for col in range(c0, min(c0 + 64, r)):
                    q[r, col] = q[col, r]
    return q, qd


@dataclass(frozen=True)
class PairTerms:
    """The gamma-free part of libsvm's RBF kernel for every pair of rows of ``x``.

    Attributes:
        fit: ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j``, the form libsvm's training kernel uses.
        predict: ``sum_k (x_ik - x_jk)^2``, the form libsvm's prediction uses.
    """

    fit: np.ndarray
    predict: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> PairTerms:
        """Both forms for the rows of ``x`` (G, D), computed once for every split."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        return cls(_pair_terms(x, False), _pair_terms(x, True))

    def train_kernel(self, rows: np.ndarray, gamma: float) -> np.ndarray:
        """K over training rows ``rows`` exactly as libsvm computes it in a fit."""
        rows = np.asarray(rows, dtype=np.int64)
        return _rbf(self.fit, rows, rows, float(gamma))

    def binary_problem(self, rows: np.ndarray, y: np.ndarray, gamma: float) -> BinaryProblem:
        """:func:`binary_problem` of training rows ``rows`` (labels ``y``), without forming K."""
        order, signs, classes = _libsvm_order(y)
        q, qd = _q_matrix(self.fit, np.asarray(rows, np.int64)[order], signs, float(gamma))
        return BinaryProblem(order, signs, q, qd, classes)

    def predict_kernel(self, rows: np.ndarray, train: np.ndarray, gamma: float) -> np.ndarray:
        """K(x_rows, x_train) exactly as libsvm computes it when predicting ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        return _rbf(self.predict, rows, np.asarray(train, dtype=np.int64), float(gamma))


def train_kernel(x: np.ndarray, gamma: float) -> np.ndarray:
    """The (n, n) RBF kernel of training rows ``x`` exactly as libsvm computes it in a fit."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    rows = np.arange(len(x))
    return _rbf(_pair_terms(x, False), rows, rows, float(gamma))


def cross_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """RBF kernel between rows ``a`` (m, D) and ``b`` (n, D) exactly as libsvm predicts with it."""
    both = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)])
    m = len(a)
    terms = _pair_terms(both, True)
    return _rbf(terms, np.arange(m), np.arange(m, len(both)), float(gamma))


@numba.njit(cache=True, nogil=True)
def _up_values(  # pragma: no cover - compiled
    yf: np.ndarray, up: np.ndarray, grad: np.ndarray, values: np.ndarray, active: int
) -> None:
    """values_t = -y_t G_t for t in I_up, -inf elsewhere (no branches: vectorised)."""
    for t in range(active):
        values[t] = -yf[t] * grad[t] if up[t] else -np.inf


@numba.njit(cache=True, nogil=True)
def _select_i(values: np.ndarray, active: int) -> tuple[float, int]:  # pragma: no cover
    """WSS 3's i: the last position with the largest value, and that value.

    libsvm's loop ``if (v >= Gmax)`` over I_up only; the -inf entries outside I_up can
    only win while nothing in I_up has been seen (no -y G is -inf). When I_up is empty the
    value is -inf, the index any position, and :func:`_select_j` finds no j, as in libsvm.
    """
    gmax = -np.inf
    gmax_idx = -1
    for t in range(active):
        if values[t] >= gmax:
            gmax = values[t]
            gmax_idx = t
    return gmax, gmax_idx


@numba.njit(cache=True, nogil=True)
def _select_j(  # pragma: no cover - compiled
    row: np.ndarray,
    yf: np.ndarray,
    low: np.ndarray,
    grad: np.ndarray,
    qd: np.ndarray,
    active: int,
    gmax: float,
    i: int,
    eps: float,
    gains: np.ndarray,
    y_grads: np.ndarray,
) -> int:
    """WSS 3's j for the i found (second-order gain, last index on ties); -1 when optimal.

    Written with ``y_j G_j`` and ``-y_j`` instead of libsvm's two branches on ``y_j``:
    multiplying by +-1 and adding a negated term round exactly as libsvm's subtractions.
    A first, branch-free pass computes every candidate's gain (+inf outside I_low or
    where ``grad_diff <= 0``, where libsvm computes none); a second takes the last
    minimum in libsvm's order.
    """
    # i = -1 when I_up is empty: gmax is then -inf, no grad_diff is > 0, and what is read
    # here (the last position's values, and its row passed in) goes unused
    qd_i = qd[i]
    two_y_i = 2.0 * yf[i]
    for j in range(active):
        y_grad = yf[j] * grad[j]
        grad_diff = gmax + y_grad
        quad = qd_i + qd[j] - yf[j] * (two_y_i * np.float64(row[j]))
        quad = quad if quad > 0 else TAU
        obj = -(grad_diff * grad_diff) / quad
        gains[j] = obj if (low[j] and grad_diff > 0) else np.inf
        y_grads[j] = y_grad if low[j] else -np.inf
    gmax2 = -np.inf
    gmin_idx = -1
    obj_diff_min = np.inf
    for j in range(active):
        if y_grads[j] >= gmax2:
            gmax2 = y_grads[j]
        if gains[j] <= obj_diff_min:
            obj_diff_min = gains[j]
            gmin_idx = j
    if obj_diff_min == np.inf:  # no gain is +inf: nothing qualified
        gmin_idx = -1
    if gmax + gmax2 < eps or gmin_idx == -1:
        return -1
    return gmin_idx


@numba.njit(cache=True, nogil=True)
def _set_status(  # pragma: no cover - compiled
    t: int,
    alpha: np.ndarray,
    c: float,
    yf: np.ndarray,
    status: np.ndarray,
    up: np.ndarray,
    low: np.ndarray,
) -> None:
    """Set the status of position t (libsvm's update_alpha_status) and its I_up / I_low flags."""
    if alpha[t] >= c:
        status[t] = _UPPER
    elif alpha[t] <= 0:
        status[t] = _LOWER
    else:
        status[t] = _FREE
    if yf[t] > 0:
        up[t] = status[t] != _UPPER
        low[t] = status[t] != _LOWER
    else:
        up[t] = status[t] != _LOWER
        low[t] = status[t] != _UPPER


@numba.njit(cache=True, nogil=True)
def _reconstruct(  # pragma: no cover - compiled
    q: np.ndarray,
    status: np.ndarray,
    alpha: np.ndarray,
    grad: np.ndarray,
    grad_bar: np.ndarray,
    active: int,
) -> None:
    """Rebuild the inactive gradients from G_bar and the free alphas (reconstruct_gradient)."""
    n = grad.shape[0]
    if active == n:
        return
    for j in range(active, n):
        grad[j] = grad_bar[j] + -1.0
    nr_free = 0
    for j in range(active):
        if status[j] == _FREE:
            nr_free += 1
    if nr_free * n > 2 * active * (n - active):
        for i in range(active, n):
            row = q[i]
            for j in range(active):
                if status[j] == _FREE:
                    grad[i] += alpha[j] * np.float64(row[j])
    else:
        for i in range(active):
            if status[i] == _FREE:
                row = q[i]
                alpha_i = alpha[i]
                for j in range(active, n):
                    grad[j] += alpha_i * np.float64(row[j])


@numba.njit(cache=True, nogil=True)
def _be_shrunk(y: Any, status: Any, g: Any, gmax1: float, gmax2: float) -> bool:  # pragma: no cover
    """Whether a position (its y, status, gradient) leaves the active set: be_shrunk."""
    if status == _UPPER:
        return -g > gmax1 if y == 1 else -g > gmax2
    if status == _LOWER:
        return g > gmax2 if y == 1 else g > gmax1
    return False


@numba.njit(cache=True, nogil=True)
def _swap(ids, y, yf, status, up, low, alpha, grad, grad_bar, qd, a, b):  # pragma: no cover
    """Exchange positions a and b of every per-position array (libsvm's swap_index).

    Q moves afterwards, in :func:`_permute_q`.
    """
    ids[a], ids[b] = ids[b], ids[a]
    y[a], y[b] = y[b], y[a]
    yf[a], yf[b] = yf[b], yf[a]
    status[a], status[b] = status[b], status[a]
    up[a], up[b] = up[b], up[a]
    low[a], low[b] = low[b], low[a]
    alpha[a], alpha[b] = alpha[b], alpha[a]
    grad[a], grad[b] = grad[b], grad[a]
    grad_bar[a], grad_bar[b] = grad_bar[b], grad_bar[a]
    qd[a], qd[b] = qd[b], qd[a]


@numba.njit(cache=True, nogil=True)
def _permute_q(  # pragma: no cover - compiled
    q: np.ndarray, spare: np.ndarray, swaps: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``count`` recorded position swaps to the rows and columns of Q: (Q, spare).

    Few swaps are applied one by one (a row and a column each); many at once, as one
    gather into ``spare`` (the matrices then trade places). Either way Q ends in libsvm's
    position order; only the cost differs.
    """
    n = q.shape[0]
    if count * 6 <= n:
        for s in range(count):
            a, b = swaps[s, 0], swaps[s, 1]
            for k in range(n):
                q[a, k], q[b, k] = q[b, k], q[a, k]
            for k in range(n):
                q[k, a], q[k, b] = q[k, b], q[k, a]
        return q, spare
    perm = np.arange(n)
    for s in range(count):
        a, b = swaps[s, 0], swaps[s, 1]
        perm[a], perm[b] = perm[b], perm[a]
    for r in range(n):
        source = q[perm[r]]
        target = spare[r]
        for k in range(n):
            target[k] = source[perm[k]]
    return spare, q


@numba.njit(cache=True, nogil=True)
def _do_shrinking(  # pragma: no cover - compiled
    q, ids, y, yf, status, up, low, alpha, grad, grad_bar, qd, swaps, active, unshrink, eps
):
    """Shrink the active set as libsvm's do_shrinking: (active, unshrink, swaps recorded).

    The maximal violations m(alpha) and M(alpha) first; once, when they are within
    10 eps, the whole gradient is rebuilt and every variable made active again; then each
    variable that cannot move at the bound it sits on leaves the active set, swapped with
    the last active one that stays. The swaps are recorded in ``swaps`` for Q.
    """
    gmax1 = -np.inf
    gmax2 = -np.inf
    for t in range(active):
        if y[t] == 1:
            if status[t] != _UPPER and -grad[t] >= gmax1:
                gmax1 = -grad[t]
            if status[t] != _LOWER and grad[t] >= gmax2:
                gmax2 = grad[t]
        else:
            if status[t] != _UPPER and -grad[t] >= gmax2:
                gmax2 = -grad[t]
            if status[t] != _LOWER and grad[t] >= gmax1:
                gmax1 = grad[t]
    if not unshrink and gmax1 + gmax2 <= eps * 10:
        unshrink = True
        _reconstruct(q, status, alpha, grad, grad_bar, active)
        active = grad.shape[0]
    count = 0
    t = 0
    while t < active:
        if _be_shrunk(y[t], status[t], grad[t], gmax1, gmax2):
            active -= 1
            while active > t:
                if not _be_shrunk(y[active], status[active], grad[active], gmax1, gmax2):
                    _swap(ids, y, yf, status, up, low, alpha, grad, grad_bar, qd, t, active)
                    swaps[count, 0] = t
                    swaps[count, 1] = active
                    count += 1
                    break
                active -= 1
        t += 1
    return active, unshrink, count


@numba.njit(cache=True, nogil=True)
def _add_row(target: np.ndarray, row: np.ndarray, scale: float) -> None:  # pragma: no cover
    """``target += scale * row`` element by element, the float32 row widened first."""
    for k in range(target.shape[0]):
        target[k] += scale * np.float64(row[k])


@numba.njit(cache=True, nogil=True)
def _solve(  # pragma: no cover - compiled
    q_in: np.ndarray,
    qd_in: np.ndarray,
    y_in: np.ndarray,
    c: float,
    eps: float,
    shrinking: bool,
    max_iter: int,
) -> tuple[np.ndarray, float, int]:
    """Solve the C-SVC dual from alpha = 0 as libsvm's Solver::Solve: (alpha, rho, iterations).

    Positions, swaps and the order of every loop follow libsvm. Two restructurings
    change no number: the gradient update of an iteration also writes the values the
    next search for i scans (unless shrinking or a reconstruction comes in between,
    after which they are written afresh), and Q is kept whole in position order.
    """
    n = q_in.shape[0]
    q = q_in.copy()
    spare = np.empty_like(q_in)
    swaps = np.empty((n, 2), dtype=np.int64)
    ids = np.arange(n)
    y = y_in.copy()
    yf = y_in.astype(np.float64)
    qd = qd_in.copy()
    status = np.zeros(n, dtype=np.int8)  # every alpha starts at its lower bound 0
    up = y_in > 0  # I_up: y = +1 below C, or y = -1 above 0
    low = y_in < 0  # I_low: y = +1 above 0, or y = -1 below C
    alpha = np.zeros(n)
    grad = np.full(n, -1.0)  # G = Q alpha + p with p = -e
    grad_bar = np.zeros(n)
    values = np.empty(n)
    gains = np.empty(n)
    y_grads = np.empty(n)
    active = n
    unshrink = False
    iters = 0
    counter = min(n, 1000) + 1
    fresh = False  # whether `values` holds -y G over I_up for the current state
    while True:
        if max_iter != -1 and iters >= max_iter:
            break
        counter -= 1
        if counter == 0:
            counter = min(n, 1000)
            if shrinking:
                fresh = False
                active, unshrink, count = _do_shrinking(
                    q, ids, y, yf, status, up, low, alpha, grad, grad_bar, qd, swaps,
                    active, unshrink, eps,
                )  # fmt: skip
                if count:
                    q, spare = _permute_q(q, spare, swaps, count)
        if not fresh:
            _up_values(yf, up, grad, values, active)
        gmax, i = _select_i(values, active)
        j = _select_j(q[i], yf, low, grad, qd, active, gmax, i, eps, gains, y_grads)
        if j == -1:
            _reconstruct(q, status, alpha, grad, grad_bar, active)
            active = n
            _up_values(yf, up, grad, values, active)
            gmax, i = _select_i(values, active)
            j = _select_j(q[i], yf, low, grad, qd, active, gmax, i, eps, gains, y_grads)
            if j == -1:
                break
            counter = 1
        iters += 1

        row_i = q[i]
        row_j = q[j]
        old_i = alpha[i]
        old_j = alpha[j]
        if y[i] != y[j]:
            quad = qd[i] + qd[j] + 2.0 * np.float64(row_i[j])
            if quad <= 0:
                quad = TAU
            delta = (-grad[i] - grad[j]) / quad
            diff = alpha[i] - alpha[j]
            alpha[i] += delta
            alpha[j] += delta
            if diff > 0:
                if alpha[j] < 0:
                    alpha[j] = 0.0
                    alpha[i] = diff
            elif alpha[i] < 0:
                alpha[i] = 0.0
                alpha[j] = -diff
            if diff > 0.0:  # C_i - C_j: one C for every sample here
                if alpha[i] > c:
                    alpha[i] = c
                    alpha[j] = c - diff
            elif alpha[j] > c:
                alpha[j] = c
                alpha[i] = c + diff
        else:
            quad = qd[i] + qd[j] - 2.0 * np.float64(row_i[j])
            if quad <= 0:
                quad = TAU
            delta = (grad[i] - grad[j]) / quad
            total = alpha[i] + alpha[j]
            alpha[i] -= delta
            alpha[j] += delta
            if total > c:
                if alpha[i] > c:
                    alpha[i] = c
                    alpha[j] = total - c
            elif alpha[j] < 0:
                alpha[j] = 0.0
                alpha[i] = total
            if total > c:
                if alpha[j] > c:
                    alpha[j] = c
                    alpha[i] = total - c
            elif alpha[i] < 0:
                alpha[i] = 0.0
                alpha[j] = total

        d_i = alpha[i] - old_i
        d_j = alpha[j] - old_j
        upper_i = status[i] == _UPPER
        upper_j = status[j] == _UPPER
        _set_status(i, alpha, c, yf, status, up, low)
        _set_status(j, alpha, c, yf, status, up, low)
        for k in range(active):
            g = grad[k] + (np.float64(row_i[k]) * d_i + np.float64(row_j[k]) * d_j)
            grad[k] = g
            values[k] = -yf[k] * g if up[k] else -np.inf
        fresh = True
        # G_bar = sum over upper-bound t of C Q_t: follow i and j across the bound
        # (libsvm subtracts C Q_t; adding (-C) Q_t rounds identically)
        if upper_i != (status[i] == _UPPER):
            _add_row(grad_bar, row_i, -c if upper_i else c)
        if upper_j != (status[j] == _UPPER):
            _add_row(grad_bar, row_j, -c if upper_j else c)

    # rho (calculate_rho); active == n here unless max_iter stopped the loop
    ub = np.inf
    lb = -np.inf
    nr_free = 0
    sum_free = 0.0
    for t in range(active):
        y_grad = y[t] * grad[t]
        if status[t] == _UPPER:
            if y[t] == -1:
                ub = min(ub, y_grad)
            else:
                lb = max(lb, y_grad)
        elif status[t] == _LOWER:
            if y[t] == 1:
                ub = min(ub, y_grad)
            else:
                lb = max(lb, y_grad)
        else:
            nr_free += 1
            sum_free += y_grad
    rho = sum_free / nr_free if nr_free > 0 else (ub + lb) / 2
    out = np.empty(n)
    for t in range(n):
        out[ids[t]] = alpha[t]
    return out, rho, iters


@numba.njit(cache=True, nogil=True)
def _decision(
    kernel: np.ndarray, sv: np.ndarray, coef: np.ndarray, rho: float
) -> np.ndarray:  # pragma: no cover
    m = kernel.shape[0]
    out = np.empty(m)
    for t in range(m):
        s = 0.0
        for k in range(sv.shape[0]):
            s += coef[k] * kernel[t, sv[k]]
        out[t] = s - rho
    return out


@dataclass(frozen=True)
class BinaryProblem:
    """One two-class training set in libsvm's order, ready for any C.

    Attributes:
        order: Training-row index of each libsvm position (first class first, each
            class in input order).
        signs: +1 for the first (smaller) class, -1 for the second, per position.
        q: ``float32(signs_i signs_j K)`` in libsvm's order (n, n).
        qd: ``K_ii`` in libsvm's order (float64).
        classes: The two labels, sorted; ``classes[0]`` is predicted for a value > 0.
    """

    order: np.ndarray
    signs: np.ndarray
    q: np.ndarray
    qd: np.ndarray
    classes: np.ndarray


def _libsvm_order(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group two classes as libsvm does: (order, +-1 per position, sorted labels)."""
    classes = np.unique(y)
    if len(classes) != 2:
        raise ValueError(f"a binary problem needs exactly two classes, got {len(classes)}")
    order = np.concatenate([np.flatnonzero(y == classes[0]), np.flatnonzero(y == classes[1])])
    signs = np.where(y[order] == classes[0], 1, -1).astype(np.int8)
    return order, signs, classes


def binary_problem(kernel: np.ndarray, y: np.ndarray) -> BinaryProblem:
    """Arrange the training kernel ``kernel`` (n, n) and labels ``y`` as libsvm does."""
    order, signs, classes = _libsvm_order(y)
    k = kernel[np.ix_(order, order)]
    q = (k * np.multiply.outer(signs, signs)).astype(np.float32)
    return BinaryProblem(order, signs, q, np.ascontiguousarray(np.diag(k)), classes)


@dataclass(frozen=True)
class BinaryModel:
    """A fitted two-class SVC.

    Attributes:
        support: Support vectors as training-row indices, in libsvm's order.
        coef: Their coefficients ``alpha_s y_s``.
        rho: The bias (the decision value is ``sum_s coef_s K(x, x_s) - rho``).
        iterations: The solver's iteration count (scikit-learn's ``n_iter_``).
        classes: The two labels, sorted.
    """

    support: np.ndarray
    coef: np.ndarray
    rho: float
    iterations: int
    classes: np.ndarray

    def decision(self, kernel: np.ndarray) -> np.ndarray:
        """``sum_s coef_s K(x, x_s) - rho`` per row of ``kernel`` (m, n_train), libsvm's sums."""
        return _decision(np.ascontiguousarray(kernel), self.support, self.coef, self.rho)

    def predict(self, kernel: np.ndarray) -> np.ndarray:
        """The label libsvm predicts: the first class where the decision value is > 0."""
        return np.where(self.decision(kernel) > 0, self.classes[0], self.classes[1])


def fit(
    problem: BinaryProblem,
    c: float,
    eps: float = 1e-3,
    shrinking: bool = True,
    max_iter: int = -1,
) -> BinaryModel:
    """Fit libsvm's C-SVC on ``problem`` (scikit-learn's defaults: tol 1e-3, shrinking)."""
    if not (c > 0 and eps > 0):  # libsvm's svm_check_parameter refuses these too
        raise ValueError(f"C and eps must be > 0 (libsvm), got C={c}, eps={eps}")
    alpha, rho, iterations = _solve(
        problem.q, problem.qd, problem.signs, float(c), float(eps), bool(shrinking), int(max_iter)
    )
    coef = alpha * problem.signs
    nonzero = np.flatnonzero(np.abs(coef) > 0)
    return BinaryModel(
        problem.order[nonzero], coef[nonzero], float(rho), int(iterations), problem.classes
    )
