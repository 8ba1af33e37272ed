"""Spherical k-means: known centres, edge cases, batching, and geomstats as the reference."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from halp.objectives.prototypes import (
    compute_prototypes,
    geomstats_kmeans,
    kmeans_objective,
    spherical_kmeans,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def vmf_like(
    seed: int, n: int = 256, d: int = 128, k: int = 20, noise: float = 0.45, iso: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """n unit points around k random centres (centre + isotropic noise of norm ~``noise``,
    normalised: a von Mises-Fisher-like cloud); the first ``iso`` fraction is replaced by
    isotropic points. Returns (x (n, d) float32, centres (k, d))."""
    g = gen(seed)
    centres = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.randint(k, (n,), generator=g)
    x = centres[labels] + noise / math.sqrt(d) * torch.randn(n, d, generator=g, dtype=torch.float64)
    m = int(iso * n)
    x[:m] = torch.randn(m, d, generator=g, dtype=torch.float64)
    return F.normalize(x, dim=-1).float(), centres.float()


def assert_unit(c: torch.Tensor) -> None:
    assert torch.isfinite(c).all()
    torch.testing.assert_close(c.norm(dim=-1), torch.ones(c.shape[:-1]), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- correctness


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_finds_well_separated_centres(init: str) -> None:
    x, centres = vmf_like(0, n=300, d=16, k=5, noise=0.3)
    c = spherical_kmeans(x, 5, gen(1), init=init, restarts=1 if init == "kmeans++" else 8)
    assert c.shape == (5, 16)
    assert_unit(c)
    cos = centres @ c.T  # (true, found)
    assert (cos.amax(dim=1) > 0.99).all(), cos.amax(dim=1)  # every true centre is found
    assert sorted(cos.argmax(dim=1).tolist()) == list(range(5))  # by a distinct centroid


def test_kmeans_objective_by_hand() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0]])
    assert kmeans_objective(x, c).item() == pytest.approx((0 + math.pi / 2 + math.pi) / 3)
    batched = kmeans_objective(torch.stack([x, x]), torch.stack([c, -c]))
    torch.testing.assert_close(batched, torch.tensor([math.pi / 2, math.pi / 2]))


def test_update_is_normalised_mean_and_converges() -> None:
    x, _ = vmf_like(2, n=120, d=8, k=4, noise=0.8)
    c = spherical_kmeans(x, 4, gen(0), iters=200, tol=0.0)
    # at the fixed point, each centroid is the normalised mean of the points closest to it
    assign = (x @ c.T).argmax(dim=1)
    for j in range(4):
        torch.testing.assert_close(c[j], F.normalize(x[assign == j].sum(0), dim=0))


# ---------------------------------------------------------------- edge cases


def test_empty_clusters_are_reseeded_with_farthest_points() -> None:
    # three clusters around e0, e1, e2 in the positive orthant: every point has x·e0 > 0
    centres = torch.eye(8)[:3]
    noise = 0.1 * torch.randn(90, 8, generator=gen(3))
    x = F.normalize(centres.repeat(30, 1) + noise.abs(), dim=1)
    a = centres[0]
    far = -F.normalize(torch.ones(8), dim=0)  # x·far < 0 < x·a for every point
    init = torch.stack([a, a, far])  # cluster 1 loses every tie to 0, cluster 2 wins nothing
    one = spherical_kmeans(x, 3, gen(0), iters=1, init=init)
    torch.testing.assert_close(one[0], F.normalize(x.sum(0), dim=0))  # everyone's centroid
    first = x[(x @ a).argmin()]  # the point farthest from centroid 0
    second = x[torch.maximum(x @ a, x @ first).argmin()]  # farthest from centroid 0 and first
    torch.testing.assert_close(one[1], first)
    torch.testing.assert_close(one[2], second)
    final = spherical_kmeans(x, 3, gen(0), init=init)
    assert_unit(final)
    means = F.normalize(x.reshape(30, 3, 8).sum(0), dim=1)  # the three clusters' true means
    torch.testing.assert_close((means @ final.T).amax(dim=1), torch.ones(3))


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_all_points_identical(init: str) -> None:
    p = F.normalize(torch.randn(128, generator=gen(0)), dim=0)
    x = p.expand(256, 128).clone()
    c = spherical_kmeans(x, 20, gen(0), init=init)
    assert_unit(c)
    assert ((c @ p) > 1 - 1e-6).all()  # the centroids coincide, as documented


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_fewer_distinct_points_than_clusters(init: str) -> None:
    distinct = F.normalize(torch.randn(5, 32, generator=gen(0), dtype=torch.float64), dim=1)
    x = distinct.repeat(50, 1)  # (250, 32), 5 distinct points
    c = spherical_kmeans(x, 20, gen(1), init=init)
    assert_unit(c.float())
    assert kmeans_objective(x, c).item() < 1e-6  # every distinct point is a centroid
    assert ((distinct @ c.T).amax(dim=1) > 1 - 1e-9).all()


def test_members_cancelling_out_keep_their_centroid() -> None:
    x = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    init = F.normalize(torch.tensor([[0.0, 1.0, 0.0]]), dim=1)
    c = spherical_kmeans(x, 1, gen(0), init=init)
    torch.testing.assert_close(c, init)


def test_bad_arguments() -> None:
    x = F.normalize(torch.randn(5, 4, generator=gen(0)), dim=1)
    with pytest.raises(ValueError, match="at least num_clusters=20 points, got 5"):
        spherical_kmeans(x, 20, gen(0))
    with pytest.raises(ValueError, match="unknown init"):
        spherical_kmeans(x, 2, gen(0), init="forgy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="init tensor must have shape"):
        spherical_kmeans(x, 2, gen(0), init=torch.ones(3, 4))
    with pytest.raises(ValueError, match="unknown k-means backend"):
        compute_prototypes(x, 2, gen(0), backend="sklearn")  # type: ignore[arg-type]


def test_input_is_normalised_defensively() -> None:
    x, _ = vmf_like(4, n=64, d=8, k=3)
    scaled = x * torch.rand(64, 1, generator=gen(9)).add(0.5)
    torch.testing.assert_close(spherical_kmeans(scaled, 3, gen(0)), spherical_kmeans(x, 3, gen(0)))


# ---------------------------------------------------------------- determinism and batching


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_same_seed_same_output(init: str) -> None:
    x, _ = vmf_like(5, n=256, d=32, k=20, noise=1.0)
    a = spherical_kmeans(x, 20, gen(7), init=init)
    b = spherical_kmeans(x, 20, gen(7), init=init)
    assert torch.equal(a, b)
    assert not torch.equal(a, spherical_kmeans(x, 20, gen(8), init=init))


def test_batched_equals_per_item_loop() -> None:
    xs = torch.stack([vmf_like(s, n=100, d=12, k=6, noise=0.7)[0] for s in range(4)])  # (4,100,12)
    init = torch.stack([x[torch.randperm(100, generator=gen(s))[:6]] for s, x in enumerate(xs)])
    batched = spherical_kmeans(xs, 6, gen(0), init=init)
    looped = torch.stack([spherical_kmeans(xs[i], 6, gen(0), init=init[i]) for i in range(4)])
    assert batched.shape == (4, 6, 12)
    torch.testing.assert_close(batched, looped, atol=1e-6, rtol=0)
    # the random seeding of a batch of one draws exactly what the unbatched call draws
    for init_mode in ("kmeans++", "random"):
        one = spherical_kmeans(xs[:1], 6, gen(3), init=init_mode)
        torch.testing.assert_close(one[0], spherical_kmeans(xs[0], 6, gen(3), init=init_mode))


def test_restarts_return_the_best_run() -> None:
    x, _ = vmf_like(6, n=256, d=32, k=20, noise=1.0)
    best = spherical_kmeans(x, 20, gen(0), restarts=5)
    # the same five runs, as a batch of five copies with the same generator state
    runs = spherical_kmeans(x.expand(5, -1, -1), 20, gen(0))
    objectives = kmeans_objective(x.expand(5, -1, -1), runs)
    assert kmeans_objective(x, best).item() == pytest.approx(objectives.min().item())
    assert objectives.max() > objectives.min()  # the restarts did differ


def test_compute_prototypes_torch_backend() -> None:
    x, _ = vmf_like(7)
    p = compute_prototypes(x, 20, gen(0))
    assert p.shape == (20, 128) and not p.requires_grad
    torch.testing.assert_close(p, spherical_kmeans(x, 20, gen(0)))


# ---------------------------------------------------------------- geomstats as the reference

GEOMSTATS_REASON = (
    "geomstats (the authors' k-means backend) is optional: "
    'pip install "halp-repro[geomstats]" to compare against it'
)


@pytest.fixture(scope="module")
def geomstats() -> object:
    return pytest.importorskip("geomstats", reason=GEOMSTATS_REASON)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iso", [0.0, 0.3, 1.0], ids=["clusters", "mixed", "isotropic"])
def test_objective_within_1pct_of_geomstats(geomstats: object, iso: float, seed: int) -> None:
    x, _ = vmf_like(seed, iso=iso)  # 256 x 128, 20 vMF-like clusters (+ isotropic points)
    ours = kmeans_objective(x, spherical_kmeans(x, 20, gen(seed))).item()
    theirs = kmeans_objective(x, geomstats_kmeans(x, 20, seed=seed)).item()
    assert ours <= 1.01 * theirs, (ours, theirs)


def test_geomstats_backend_is_seeded_and_does_not_leak(geomstats: object) -> None:
    x, _ = vmf_like(8, n=64, d=16, k=4)
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002 - the global states geomstats uses
    py_before, np_before = random.getstate(), np.random.get_state()  # noqa: NPY002
    a = geomstats_kmeans(x, 4, seed=5)
    assert random.getstate() == py_before
    np_after = np.random.get_state()  # noqa: NPY002
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:]
    assert a.shape == (4, 16) and a.dtype == x.dtype
    assert_unit(a)
    assert torch.equal(a, geomstats_kmeans(x, 4, seed=5))
    p = compute_prototypes(torch.stack([x, x]), 4, gen(0), backend="geomstats")
    assert p.shape == (2, 4, 16)
