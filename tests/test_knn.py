"""Batched torch kNN equals scikit-learn's KNeighborsClassifier on small data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from halp.eval.knn import knn_accuracy, knn_predict

sklearn = pytest.importorskip("sklearn.neighbors", reason="scikit-learn is a test dependency")


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_matches_sklearn(k: int) -> None:
    rng = np.random.default_rng(k)
    gallery = rng.normal(size=(200, 16)).astype(np.float32)
    labels = rng.integers(0, 7, size=200)
    queries = rng.normal(size=(90, 16)).astype(np.float32)
    clf = sklearn.KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    normed = F.normalize(torch.from_numpy(gallery), dim=1).numpy()
    clf.fit(normed, labels)
    want = clf.predict(F.normalize(torch.from_numpy(queries), dim=1).numpy())
    got = knn_predict(
        torch.from_numpy(gallery),
        torch.from_numpy(labels),
        torch.from_numpy(queries),
        k=k,
        batch_size=32,
    )
    np.testing.assert_array_equal(got.numpy(), want)


def test_knn_accuracy_and_bad_k() -> None:
    g = torch.eye(3)
    assert knn_accuracy(g, torch.tensor([0, 1, 2]), g, torch.tensor([0, 1, 1])) == pytest.approx(
        200 / 3
    )
    with pytest.raises(ValueError, match=r"k must be in 1\.\.3"):
        knn_predict(g, torch.tensor([0, 1, 2]), g, k=4)
