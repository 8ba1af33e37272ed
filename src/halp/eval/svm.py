"""The graph protocol: RBF SVM on frozen embeddings, C chosen by inner cross-validation.

Protocol of GraphCL's TU experiments (and InfoGraph's before it): an outer stratified
10-fold split (shuffled; seeded here, unseeded in the released code); inside each outer
training part, ``GridSearchCV(SVC(), {"C": grid}, cv=5, scoring="accuracy")`` picks C;
an SVC with that C refitted on the whole outer training part is scored on the held-out
fold; the result is the mean of the 10 fold accuracies.

:func:`svm_protocol` computes exactly that, bit for bit, faster:

- the gamma-free part of libsvm's RBF kernel is computed once for every pair of graphs
  (:class:`halp.eval.smo.PairTerms`); each split's kernel is then one ``exp`` per entry,
  with scikit-learn's ``gamma="scale"`` of that split's training rows;
- two-class problems are solved by :mod:`halp.eval.smo`, libsvm's solver recomputed with
  the same floating-point operations, one kernel and one ``Q`` shared by the whole C grid
  (others by scikit-learn's ``SVC(kernel="precomputed")`` on the same exact kernels);
- the outer folds run in parallel processes.

:func:`plain_protocol` is the straightforward scikit-learn version, kept as the
reference it is tested and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from halp.eval import smo

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


class _Classifier(Protocol):
    def predict(self, kernel: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class _Shared:
    """What every outer fold of one protocol run reads: embeddings, labels, pair terms."""

    x: np.ndarray
    y: np.ndarray
    terms: smo.PairTerms


_SHARED: list[_Shared] = []
"""This process's :class:`_Shared` (set by :func:`_setup`, in each worker process)."""


def _setup(x: np.ndarray, y: np.ndarray) -> None:
    _SHARED[:] = [_Shared(x, y, smo.PairTerms.of(x))]


def _models(
    data: _Shared, rows: np.ndarray, gamma: float, c_grid: Sequence[float]
) -> list[_Classifier]:
    """One model per C fitted on training rows ``rows``: libsvm's, from one shared kernel."""
    if len(np.unique(data.y[rows])) == 2:
        problem = data.terms.binary_problem(rows, data.y[rows], gamma)
        return [smo.fit(problem, c) for c in c_grid]
    kernel = data.terms.train_kernel(rows, gamma)
    return [SVC(C=c, kernel="precomputed").fit(kernel, data.y[rows]) for c in c_grid]


def _scores(
    data: _Shared, train: np.ndarray, held: np.ndarray, c_grid: Sequence[float]
) -> list[float]:
    """Accuracy on ``held`` of each C's model fitted on ``train`` (one kernel for all)."""
    gamma = smo.scale_gamma(data.x[train])
    kernel = data.terms.predict_kernel(held, train, gamma)
    truth = data.y[held]
    return [float(np.mean(m.predict(kernel) == truth)) for m in _models(data, train, gamma, c_grid)]


def _one_fold(
    train: np.ndarray, test: np.ndarray, c_grid: Sequence[float], inner_folds: int
) -> tuple[float, float]:
    """(accuracy %, chosen C) of one outer fold, as GridSearchCV + refit would give."""
    (data,) = _SHARED
    inner = StratifiedKFold(n_splits=inner_folds)  # GridSearchCV's cv=int for a classifier
    scores = np.zeros((inner_folds, len(c_grid)))
    for f, (a, b) in enumerate(inner.split(np.zeros(len(train)), data.y[train])):
        scores[f] = _scores(data, train[a], train[b], c_grid)
    best = int(np.argmax(scores.mean(axis=0)))  # first of the ties, as GridSearchCV's rank
    (accuracy,) = _scores(data, train, test, [c_grid[best]])
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
    """The protocol on embeddings ``x`` (G, D) and labels ``y`` (G,), folds seeded by ``seed``.

    Each process (this one, or each of ``workers``) holds the pair terms of all G
    embeddings, two float64 (G, G) arrays: 270 MB for NCI1's 4,110 graphs.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.asarray(y)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():  # scikit-learn refuses these too; the kernels would carry NaN silently
        raise ValueError(
            f"{int(bad.sum())} of {len(x)} embeddings hold NaN or inf (first: row "
            f"{int(np.flatnonzero(bad)[0])}); the encoder diverged: check its training log"
        )
    splits = outer_folds(y, folds, seed)
    trains, tests = [tr for tr, _ in splits], [te for _, te in splits]
    grids, inners = [tuple(c_grid)] * len(splits), [inner_folds] * len(splits)
    if workers > 1:
        with ProcessPoolExecutor(
            max_workers=min(workers, folds), initializer=_setup, initargs=(x, y)
        ) as pool:
            results = list(pool.map(_one_fold, trains, tests, grids, inners))
    else:
        _setup(x, y)
        try:
            results = [_one_fold(*a) for a in zip(trains, tests, grids, inners, strict=True)]
        finally:
            _SHARED.clear()
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
