"""The graph protocol: RBF SVM on frozen embeddings, C chosen by inner cross-validation.

Protocol of GraphCL's TU experiments (and InfoGraph's before it): an outer stratified
10-fold split (shuffled; seeded here, unseeded in the released code); inside each outer
training part, ``GridSearchCV(SVC(), {"C": grid}, cv=5, scoring="accuracy")`` picks C;
an SVC with that C refitted on the whole outer training part (GridSearchCV's ``refit``)
is scored on the held-out fold; the result is the mean of the 10 fold accuracies.

:func:`svm_protocol` runs exactly that with scikit-learn (libsvm computes every kernel
and solves every problem); only the outer folds are spread over processes, each fold's
search running as it would in one process, so the numbers do not depend on ``workers``.
Inputs the protocol cannot split or fit (one class, a class smaller than the fold count,
NaN embeddings, a seed scikit-learn refuses) are refused up front by :func:`check_inputs`
with a :class:`halp.errors.EvaluationError` naming the config key.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from halp.config import SvmConfig
from halp.errors import EvaluationError

C_GRID = tuple(SvmConfig().c_grid)
"""The released protocol's C values (their one home: ``halp.config.SvmConfig.c_grid``)."""

SEED_LIMIT = 2**32
"""Seeds must lie in [0, 2**32): numpy's ``RandomState``, behind scikit-learn's splits."""


@dataclass(frozen=True)
class SvmResult:
    """One protocol run.

    Attributes:
        fold_accuracies: Accuracy (percent) on each outer fold.
        chosen_c: The C chosen by the inner search of each outer fold.
        inner_scores: Per outer fold, the mean inner-CV accuracy (fraction) of each C of
            the grid, in grid order: GridSearchCV's ``mean_test_score`` (shows near-ties).
    """

    fold_accuracies: list[float]
    chosen_c: list[float]
    inner_scores: list[list[float]]

    @property
    def accuracy(self) -> float:
        """Mean fold accuracy (percent): the protocol's value."""
        return float(np.mean(self.fold_accuracies))


def outer_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outer StratifiedKFold(folds, shuffle=True, random_state=seed) split."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y)]


def check_inputs(y: np.ndarray, seed: int, folds: int = 10, inner_folds: int = 5) -> None:
    """Refuse labels, fold counts or a seed the protocol cannot run on, before any work.

    Every class needs at least ``folds`` members (so each outer test fold holds it) and,
    in every outer training part, at least ``inner_folds`` members (so each inner split
    trains on every class); the smallest outer training part holds
    ``n - ceil(n / folds)`` members of a class of ``n``.

    Raises:
        EvaluationError: Naming the config key at fault and what it needs.
    """
    if not 0 <= seed < SEED_LIMIT:
        raise EvaluationError(
            f"seed {seed} cannot seed the SVM protocol's folds: it must be in [0, 2**32)"
        )
    if folds < 2 or inner_folds < 2:
        raise EvaluationError(
            f"svm.folds = {folds} and svm.inner_folds = {inner_folds}: both must be at least 2"
        )
    classes, counts = np.unique(np.asarray(y), return_counts=True)
    if len(classes) < 2:
        raise EvaluationError(
            f"the SVM protocol needs at least 2 classes; the labels hold only "
            f"{classes.tolist()} ({len(y)} graphs): check the dataset's graph labels"
        )
    small = int(np.argmin(counts))
    least, label = int(counts[small]), classes[small].item()
    if least < folds:
        raise EvaluationError(
            f"svm.folds = {folds} exceeds the smallest class (label {label!r}, {least} "
            f"graphs): every outer fold must hold every class; set svm.folds to at most {least}"
        )
    in_training = least - -(-least // folds)  # n - ceil(n / folds)
    if in_training < inner_folds:
        raise EvaluationError(
            f"svm.inner_folds = {inner_folds} exceeds the {in_training} graphs of the smallest "
            f"class (label {label!r}) left in an outer training part: every inner split must "
            f"train on every class; lower svm.inner_folds or svm.folds"
        )


def _one_fold(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    c_grid: Sequence[float],
    inner_folds: int,
) -> tuple[float, float, list[float]]:
    """(accuracy %, chosen C, mean inner score per C) of one outer fold, by GridSearchCV."""
    search = GridSearchCV(SVC(), {"C": list(c_grid)}, cv=inner_folds, scoring="accuracy")
    search.fit(x_train, y_train)
    accuracy = 100.0 * float(np.mean(search.predict(x_test) == y_test))
    inner = [float(s) for s in search.cv_results_["mean_test_score"]]
    return accuracy, float(search.best_params_["C"]), inner


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

    Args:
        x: One embedding per graph.
        y: One label per graph.
        seed: Seeds the outer split (the released code leaves it unseeded).
        folds: Outer stratified folds (``svm.folds``).
        inner_folds: GridSearchCV's ``cv`` (``svm.inner_folds``).
        c_grid: The C values searched (``svm.c_grid``).
        workers: Processes over the outer folds (``svm.workers``; 1: this process).

    Raises:
        EvaluationError: NaN or infinite embeddings, or inputs refused by
            :func:`check_inputs`.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise EvaluationError(
            f"the SVM protocol needs one embedding row per label: got embeddings of shape "
            f"{x.shape} for {len(y)} labels"
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():  # scikit-learn refuses these too, with a traceback
        raise EvaluationError(
            f"{int(bad.sum())} of {len(x)} embeddings hold NaN or inf (first: row "
            f"{int(np.flatnonzero(bad)[0])}); the encoder diverged: check its training log"
        )
    check_inputs(y, seed, folds, inner_folds)
    splits = outer_folds(y, folds, seed)
    jobs = [
        (x[tr], y[tr], x[te], y[te], tuple(c_grid), inner_folds)
        for tr, te in splits  # each process gets its fold's rows only
    ]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=min(workers, folds)) as pool:
            results = list(pool.map(_one_fold, *zip(*jobs, strict=True)))
    else:
        results = [_one_fold(*job) for job in jobs]
    return SvmResult([r[0] for r in results], [r[1] for r in results], [r[2] for r in results])
