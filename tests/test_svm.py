"""halp.eval.svm: the graph SVM protocol is scikit-learn's GridSearchCV(SVC()) per outer fold.

The embeddings are 96 wide, as the graph table's (3 GIN layers of 32, sum-pooled), with
the large, shifted values sum pooling gives, so that libsvm's kernel sums run over as many
terms as in the real runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from halp import graphcl
from halp.cli import main
from halp.data import tu
from halp.errors import EvaluationError, HalpError
from halp.eval.svm import C_GRID, check_inputs, svm_protocol

WIDTH = 96


def _embeddings(
    seed: int, per_class: tuple[int, ...], spread: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sum-pooling-like embeddings: non-negative, offset, overlapping classes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(per_class)), per_class)
    centres = rng.normal(size=(len(per_class), WIDTH)) * spread
    x = np.abs(rng.normal(size=(len(y), WIDTH)) + centres[y]) * 20.0 + 50.0
    return x, y


def _reference(
    x: np.ndarray, y: np.ndarray, seed: int, folds: int, inner: int
) -> tuple[list[float], list[float], list[list[float]]]:
    """The released protocol written out in the test: one GridSearchCV per outer fold."""
    accuracies, chosen, scores = [], [], []
    outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in outer.split(x, y):
        search = GridSearchCV(SVC(), {"C": list(C_GRID)}, cv=inner, scoring="accuracy")
        search.fit(x[train], y[train])
        accuracies.append(100.0 * float(np.mean(search.predict(x[test]) == y[test])))
        chosen.append(float(search.best_params_["C"]))
        scores.append([float(s) for s in search.cv_results_["mean_test_score"]])
    return accuracies, chosen, scores


@pytest.mark.parametrize(
    ("seed", "per_class", "folds", "inner"),
    [(0, (70, 50), 10, 5), (1, (45, 40, 35), 5, 3), (2, (60, 60), 4, 3)],
)
def test_the_protocol_is_grid_search_inside_each_seeded_outer_fold(
    seed: int, per_class: tuple[int, ...], folds: int, inner: int
) -> None:
    x, y = _embeddings(seed, per_class, spread=0.35)
    result = svm_protocol(x, y, seed, folds=folds, inner_folds=inner)
    accuracies, chosen, scores = _reference(x, y, seed, folds, inner)
    assert result.fold_accuracies == accuracies
    assert result.chosen_c == chosen
    assert result.inner_scores == scores
    assert result.accuracy == pytest.approx(np.mean(accuracies))
    # the data must exercise the search: not every fold picks the same C, not all correct
    assert len(set(chosen)) >= 2
    assert 100.0 / len(per_class) < result.accuracy < 100.0


def test_the_outer_folds_in_processes_give_the_serial_numbers() -> None:
    x, y = _embeddings(3, (64, 56), spread=0.3)
    serial = svm_protocol(x, y, 7, folds=6, inner_folds=4, workers=1)
    parallel = svm_protocol(x, y, 7, folds=6, inner_folds=4, workers=3)
    assert parallel == serial
    assert len(serial.fold_accuracies) == 6


def test_the_folds_depend_on_the_seed() -> None:
    x, y = _embeddings(4, (40, 40), spread=0.3)
    a = svm_protocol(x, y, 0, folds=5, inner_folds=3)
    b = svm_protocol(x, y, 1, folds=5, inner_folds=3)
    assert a.fold_accuracies != b.fold_accuracies


# ------------------------------------------------------------------ refusals


def test_embeddings_with_nan_or_a_wrong_shape_are_refused() -> None:
    x, y = _embeddings(5, (30, 30), spread=0.5)
    x[17, 3] = np.nan
    with pytest.raises(
        EvaluationError, match=r"1 of 60 embeddings hold NaN or inf \(first: row 17\)"
    ):
        svm_protocol(x, y, 0, folds=3, inner_folds=2)
    x[17, 3] = np.inf
    with pytest.raises(EvaluationError, match="NaN or inf"):
        svm_protocol(x, y, 0, folds=3, inner_folds=2)
    with pytest.raises(EvaluationError, match=r"shape \(60, 96\) for 59 labels"):
        svm_protocol(np.zeros((60, WIDTH)), y[:59], 0)


@pytest.mark.parametrize(
    ("labels", "seed", "folds", "inner", "message"),
    [
        ([0] * 40, 0, 10, 5, r"at least 2 classes; the labels hold only \[0\] \(40 graphs\)"),
        ([0] * 40 + [1] * 9, 0, 10, 5, r"svm\.folds = 10 exceeds the smallest class \(label 1, 9 "),
        ([0] * 60 + [1] * 50, 0, 1000, 5, r"svm\.folds = 1000 .* at most 50$"),
        ([0] * 60 + [1] * 10, 0, 10, 10, r"svm\.inner_folds = 10 exceeds the 9 graphs"),
        ([0] * 60 + [1] * 12, 0, 5, 10, r"svm\.inner_folds = 10 exceeds the 9 graphs"),
        ([0] * 30 + [1] * 30, -1, 10, 5, r"seed -1 cannot seed .* \[0, 2\*\*32\)"),
        ([0] * 30 + [1] * 30, 2**32, 10, 5, r"seed 4294967296 cannot seed"),
        ([0] * 30 + [1] * 30, 0, 1, 5, r"svm\.folds = 1 .* at least 2"),
    ],
)
def test_inputs_the_protocol_cannot_run_on_are_refused_in_one_line(
    labels: list[int], seed: int, folds: int, inner: int, message: str
) -> None:
    y = np.asarray(labels)
    x = np.random.default_rng(0).normal(size=(len(y), WIDTH))
    with pytest.raises(EvaluationError, match=message) as caught:
        svm_protocol(x, y, seed, folds=folds, inner_folds=inner)
    assert isinstance(caught.value, HalpError) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("smallest", "folds", "inner"), [(10, 10, 9), (12, 5, 9), (10, 10, 5)])
def test_the_smallest_inputs_allowed_run_without_a_scikit_learn_warning(
    smallest: int, folds: int, inner: int
) -> None:
    """The refusals are not stricter than needed: at the limit scikit-learn runs cleanly."""
    y = np.asarray([0] * 40 + [1] * smallest)
    x = np.random.default_rng(1).normal(size=(len(y), WIDTH)) + y[:, None]
    check_inputs(y, 0, folds, inner)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "The least populated class in y has only ..."
        result = svm_protocol(x, y, 0, folds=folds, inner_folds=inner, c_grid=(1.0, 10.0))
    assert len(result.fold_accuracies) == folds


def test_halp_graphcl_refuses_impossible_folds_before_pretraining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tu.write_tu(tmp_path / "source", "SYNTH", tu.synthetic_tu(graphs=40, seed=0))
    tu.prepare_tu("SYNTH", tmp_path, source=tmp_path / "source")  # verified, with its manifest

    def no_pretraining(*args: object, **kwargs: object) -> None:
        raise AssertionError("pretraining started before the SVM inputs were checked")

    monkeypatch.setattr(graphcl, "pretrain", no_pretraining)
    base = ["graphcl", "--set", "dataset=SYNTH", "--set", f"root={tmp_path}"]
    status = main([*base, "--set", "svm.folds=1000", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("halp graphcl: error: svm.folds = 1000 exceeds the smallest class")
    assert len(err.splitlines()) == 1
    assert main([*base, "--set", "seed=-3", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "seed" in err and "-3" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()
