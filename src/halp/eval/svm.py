"""The graph protocol: RBF SVM on frozen embeddings, C chosen by inner cross-validation.

Protocol of GraphCL's TU experiments (and InfoGraph's before it): an outer stratified
10-fold split (shuffled; seeded here, unseeded in the released code); inside each outer
training part, ``GridSearchCV(SVC(), {"C": grid}, cv=5, scoring="accuracy")`` picks C;
an SVC with that C refitted on the whole outer training part is scored on the held-out
fold; the result is the mean of the 10 fold accuracies.

:func:`svm_protocol` computes exactly that, faster: the pairwise squared distances are
each inner split's RBF kernel ``exp(-gamma d^2)`` is computed once (with BLAS, and
scikit-learn's ``gamma="scale"`` of its own training rows, ``1 / (D var(X_train))``) and
reused for every C of the grid as a precomputed kernel, and the outer folds run in
parallel processes. :func:`plain_protocol` is
the straightforward scikit-learn version, kept as the reference it is tested and
benchmarked against (same chosen C values and fold accuracies).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
"""The released protocol's C values."""


@dataclass(frozen=True)
class SvmResult:
    """One protocol run.

    Attributes:
        fold_accuracies: Accuracy (percent) on each outer fold.
        chosen_c: The C chosen by the inner search of each outer fold.
    """

    fold_accuracies: list[float]
    chosen_c: list[float]

    @property
    def accuracy(self) -> float:
        """Mean fold accuracy (percent): the protocol's value."""
        return float(np.mean(self.fold_accuracies))


def outer_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outer StratifiedKFold(folds, shuffle=True, random_state=seed) split."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y)]


def _scale_gamma(x: np.ndarray) -> float:
    """scikit-learn's ``gamma="scale"``: 1 / (n_features * X.var()), 1 where X.var() is 0."""
    var = float(x.var())
    return 1.0 / (x.shape[1] * var) if var != 0 else 1.0


def _rbf(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-gamma ||x_r - x_c||^2) for every (r, c) of ``rows`` x ``cols`` (float64, BLAS)."""
    a, b = x[rows], x[cols]
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :]
    d2 -= 2.0 * (a @ b.T)
    np.maximum(d2, 0.0, out=d2)
    return np.exp(-gamma * d2)


def _one_fold(
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    c_grid: Sequence[float],
    inner_folds: int,
) -> tuple[float, float]:
    """(accuracy %, chosen C) of one outer fold, as GridSearchCV + refit would give."""
    inner = StratifiedKFold(n_splits=inner_folds)  # GridSearchCV's cv=int for a classifier
    scores = np.zeros((inner_folds, len(c_grid)))
    for f, (a, b) in enumerate(inner.split(np.zeros(len(train)), y[train])):
        rows, held = train[a], train[b]
        gamma = _scale_gamma(x[rows])
        k_fit, k_held = _rbf(x, rows, rows, gamma), _rbf(x, held, rows, gamma)
        for j, c in enumerate(c_grid):
            svc = SVC(C=c, kernel="precomputed").fit(k_fit, y[rows])
            scores[f, j] = np.mean(svc.predict(k_held) == y[held])
    best = int(np.argmax(scores.mean(axis=0)))  # first of the ties, as GridSearchCV's rank
    gamma = _scale_gamma(x[train])
    svc = SVC(C=c_grid[best], kernel="precomputed").fit(_rbf(x, train, train, gamma), y[train])
    accuracy = float(np.mean(svc.predict(_rbf(x, test, train, gamma)) == y[test]))
    return 100.0 * accuracy, float(c_grid[best])


def svm_protocol(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    folds: int = 10,
    inner_folds: int = 5,
    c_grid: Sequence[float] = C_GRID,
    workers: int = 1,
) -> SvmResult:
    """The protocol on embeddings ``x`` (G, D) and labels ``y`` (G,), folds seeded by ``seed``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    splits = outer_folds(y, folds, seed)
    args = [(x, y, tr, te, tuple(c_grid), inner_folds) for tr, te in splits]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=min(workers, folds)) as pool:
            results = list(pool.map(_one_fold, *zip(*args, strict=True)))
    else:
        results = [_one_fold(*a) for a in args]
    return SvmResult([r[0] for r in results], [r[1] for r in results])


def plain_protocol(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    folds: int = 10,
    inner_folds: int = 5,
    c_grid: Sequence[float] = C_GRID,
) -> SvmResult:
    """The reference: ``GridSearchCV(SVC(), {"C": c_grid}, cv=inner_folds)`` per outer fold."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    accuracies, chosen = [], []
    for train, test in outer_folds(y, folds, seed):
        search = GridSearchCV(SVC(), {"C": list(c_grid)}, cv=inner_folds, scoring="accuracy")
        search.fit(x[train], y[train])
        accuracies.append(100.0 * float(np.mean(search.predict(x[test]) == y[test])))
        chosen.append(float(search.best_params_["C"]))
    return SvmResult(accuracies, chosen)
