"""Prototypes: spherical k-means over the most recent keys of the queue (paper Sec. 3.5).

HaLP's prototypes are the N = 20 centroids of a k-means on the unit sphere of the
K_top = 256 most recent queue entries, refreshed every few iterations. The authors fit
them with geomstats' ``RiemannianKMeans`` on the CPU (Fréchet means by gradient descent,
~50-100 ms per refresh). Here the default backend is a batched spherical k-means in torch
(Dhillon & Modha 2001) that runs wherever the keys are; geomstats stays available as an
optional reference backend (``pip install "halp-repro[geomstats]"``).

The two backends optimise slightly different things: spherical k-means maximises the
summed cosine similarity to the closest centroid (its M-step, the normalised mean of the
members, is exact for that objective), geomstats minimises the summed *squared geodesic*
distance (its M-step is the Fréchet mean). Both are compared with one neutral number,
:func:`kmeans_objective`, the mean geodesic distance of a point to its closest centroid.

Shapes: ``x`` is (n, d) or batched (b, n, d); centroids are (K, d) or (b, K, d).
"""

from __future__ import annotations

import math
import random
from typing import Literal

import torch
import torch.nn.functional as F

Init = Literal["kmeans++", "random"]
Backend = Literal["torch", "geomstats"]

# Two unit vectors whose squared chordal distance 2 - 2cos is below this count as the
# same point in the kmeans++ seeding (float32 rounding of cos(x, x) is ~1e-7).
_SAME_POINT_CHORD2 = 1e-6


def spherical_kmeans(
    x: torch.Tensor,
    num_clusters: int,
    generator: torch.Generator,
    iters: int = 50,
    tol: float = 1e-6,
    init: Init | torch.Tensor = "kmeans++",
    restarts: int = 1,
) -> torch.Tensor:
    """Spherical k-means: ``num_clusters`` unit centroids of the unit vectors ``x``.

    Args:
        x: (n, d) or (b, n, d) points; rows are L2-normalised here (defensively).
        num_clusters: K, with 1 <= K <= n.
        generator: the only source of randomness (seeding); its device may differ from
            ``x``'s (draws are made on the generator's device and moved).
        iters: maximum number of Lloyd iterations.
        tol: stop when every centroid moved by at most ``tol`` in cosine distance
            (1 - cos(old, new)), over the whole batch.
        init: ``"kmeans++"`` (default), ``"random"`` (K distinct random points), or a
            (K, d) / (b, K, d) tensor of initial centroids.
        restarts: R independent seedings run side by side as one batch of b * R problems
            (vectorised, no Python loop; on a CPU the time still grows about linearly
            with R); per item, the run with the smallest
            :func:`kmeans_objective` (mean geodesic distance) is returned. Like
            scikit-learn's ``n_init``. Must be 1 with a tensor ``init``.

    Returns:
        (K, d) or (b, K, d) unit centroids, in ``x``'s dtype and device.

    Algorithm (all batch items at once, no Python loop over the batch):

    * assignment: each point goes to the centroid of largest cosine similarity, which is
      the centroid of smallest geodesic distance arccos(cos); ties go to the lowest index;
    * update: a centroid becomes the L2-normalised sum (= normalised mean) of its members,
      the exact maximiser of their summed cosine similarity. A cluster whose members
      cancel out (sum of norm ~0, e.g. two antipodal points) keeps its centroid;
    * kmeans++ seeding (greedy variant, see ``_kmeanspp_init``) uses the squared chordal
      distance ``|x - c|^2 = 2 - 2 cos``, i.e. the classical D^2 weighting of k-means++
      in the embedding space; the spherical k-means objective sum(1 - cos) is half its
      sum. (geomstats weights by the plain geodesic distance and takes one candidate.)

    Edge cases, handled explicitly:

    * ``n < K`` raises ``ValueError``.
    * Empty cluster: re-seeded with the point farthest from (least similar to) its
      closest centroid. Several empty clusters of one item are filled in index order by
      farthest-first traversal: each takes the point farthest from all centroids so far,
      including those just re-seeded, so two empty clusters never land in the same spot.
      Ties go to the lowest point index: deterministic, no random draw.
    * Duplicate points, or fewer distinct points than clusters: no NaN is ever produced,
      but centroids may coincide (e.g. all 256 points identical gives K copies of that
      point). kmeans++ then draws among all points uniformly once every point is covered.

    The same generator state gives bit-identical output.
    """
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be (n, d) or (b, n, d), got shape {tuple(x.shape)}")
    batched = x.dim() == 3
    xb = F.normalize(x if batched else x.unsqueeze(0), dim=-1)  # (b, n, d)
    b, n, d = xb.shape
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    if n < num_clusters:
        raise ValueError(
            f"spherical k-means needs at least num_clusters={num_clusters} points, got {n}"
        )
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if restarts < 1 or (restarts > 1 and isinstance(init, torch.Tensor)):
        raise ValueError(f"restarts must be >= 1, and 1 with a tensor init; got {restarts}")
    if restarts > 1:
        runs = spherical_kmeans(
            xb.repeat_interleave(restarts, dim=0), num_clusters, generator, iters, tol, init
        ).unflatten(0, (b, restarts))  # (b, R, K, d)
        best = kmeans_objective(xb.unsqueeze(1), runs).argmin(dim=1)  # (b,)
        c = runs[torch.arange(b, device=xb.device), best]  # (b, K, d)
        return c if batched else c.squeeze(0)

    if isinstance(init, torch.Tensor):
        c = init if batched else init.unsqueeze(0)
        if c.shape != (b, num_clusters, d):
            expected = (b, num_clusters, d) if batched else (num_clusters, d)
            raise ValueError(f"init tensor must have shape {expected}, got {tuple(init.shape)}")
        c = F.normalize(c.to(device=xb.device, dtype=xb.dtype), dim=-1)
    elif init == "kmeans++":
        c = _kmeanspp_init(xb, num_clusters, generator)
    elif init == "random":
        c = _random_init(xb, num_clusters, generator)
    else:
        raise ValueError(f"unknown init {init!r}; expected 'kmeans++', 'random' or a tensor")

    for _ in range(iters):
        new = _lloyd_step(xb, c)
        shift = (1.0 - (new * c).sum(-1)).amax()  # largest cosine distance moved
        c = new
        if shift.item() <= tol:
            break
    return c if batched else c.squeeze(0)


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor
) -> torch.Tensor:
    """U[0, 1) draws made on the generator's device, returned on ``like``'s device/dtype."""
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64)
    return u.to(device=like.device, dtype=like.dtype)


def _random_init(xb: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """K distinct random points per item (a random permutation's first K indices)."""
    b, n, _ = xb.shape
    idx = _uniform((b, n), generator, xb).argsort(dim=-1)[:, :k]  # (b, K)
    return torch.gather(xb, 1, idx.unsqueeze(-1).expand(-1, -1, xb.shape[-1]))


def _kmeanspp_init(xb: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding with squared chordal distance weights, batched over items.

    Each new centre is the best of ``2 + floor(ln K)`` candidates drawn with probability
    proportional to the squared chordal distance to the closest centre so far (the greedy
    variant of Arthur & Vassilvitskii 2007, as in scikit-learn): the candidate that lowers
    the total squared distance most wins. Plain k-means++ often leaves one of 20
    well-separated clusters without a centre, which the Lloyd steps cannot repair.

    Sampling is by inverse CDF with uniforms drawn up front (one device transfer), so it
    works for a CPU generator and CUDA data alike. A point closer than
    ``_SAME_POINT_CHORD2`` to a chosen centre has weight 0; when every point has weight 0
    (fewer distinct points than clusters), the draw is uniform over all points.
    """
    b, n, d = xb.shape
    trials = 2 + int(math.log(k))
    u = _uniform((b, k, trials), generator, xb)  # (b, K, L)
    first = (u[:, 0, 0] * n).long().clamp_(max=n - 1)  # (b,)
    arange_b = torch.arange(b, device=xb.device)
    centres = [xb[arange_b, first]]  # K x (b, d)
    min_d2 = _chord2(xb, centres[0].unsqueeze(1)).squeeze(1)  # (b, n)
    for j in range(1, k):
        w = torch.where(min_d2 > _SAME_POINT_CHORD2, min_d2, torch.zeros_like(min_d2))
        total = w.sum(-1, keepdim=True)  # (b, 1)
        w = torch.where(total > 0, w, torch.ones_like(w))
        cdf = w.cumsum(-1)  # (b, n)
        target = u[:, j] * cdf[:, -1:]  # (b, L)
        cand = torch.searchsorted(cdf, target, right=True).clamp_(max=n - 1)  # (b, L)
        cand_x = torch.gather(xb, 1, cand.unsqueeze(-1).expand(-1, -1, d))  # (b, L, d)
        new_d2 = torch.minimum(min_d2.unsqueeze(1), _chord2(xb, cand_x))  # (b, L, n)
        best = new_d2.sum(-1).argmin(-1)  # (b,), first on ties
        centres.append(cand_x[arange_b, best])
        min_d2 = new_d2[arange_b, best]
    return torch.stack(centres, dim=1)  # (b, K, d)


def _chord2(xb: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared chordal distance 2 - 2cos of (b, n, d) points to (b, L, d) centres: (b, L, n)."""
    cos = c @ xb.transpose(1, 2)  # (b, L, n)
    return (2.0 - 2.0 * cos).clamp_(min=0.0)


def _lloyd_step(xb: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """One assignment + normalised-mean update, with empty clusters re-seeded."""
    b = xb.shape[0]
    k = c.shape[1]
    sim = xb @ c.transpose(1, 2)  # (b, n, K)
    best_sim, assign = sim.max(dim=-1)  # (b, n), (b, n)
    one_hot = F.one_hot(assign, k).to(xb.dtype)  # (b, n, K)
    sums = one_hot.transpose(1, 2) @ xb  # (b, K, d)
    counts = one_hot.sum(dim=1)  # (b, K)
    norms = sums.norm(dim=-1, keepdim=True)  # (b, K, 1)
    eps = torch.finfo(xb.dtype).eps
    new = torch.where(norms > eps, sums / norms.clamp(min=eps), c)  # (b, K, d)

    empty = counts == 0  # (b, K)
    num_empty = int(empty.sum(dim=1).max())
    if num_empty:
        # Farthest-first: the r-th empty cluster of an item takes the point least similar
        # to its closest centroid so far, counting the clusters re-seeded before it.
        arange_b = torch.arange(b, device=xb.device)
        slots = torch.argsort((~empty).to(torch.uint8), dim=1, stable=True)  # empties first
        nearest = best_sim  # (b, n)
        for r in range(num_empty):
            has = empty.sum(dim=1) > r  # (b,)
            point = xb[arange_b, nearest.argmin(dim=1)]  # (b, d)
            put = has.unsqueeze(1) & (torch.arange(k, device=xb.device) == slots[:, r : r + 1])
            new = torch.where(put.unsqueeze(-1), point.unsqueeze(1), new)  # (b, K, d)
            sim_new = (xb @ point.unsqueeze(-1)).squeeze(-1)  # (b, n)
            nearest = torch.where(has.unsqueeze(1), torch.maximum(nearest, sim_new), nearest)
    return new


def kmeans_objective(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Mean geodesic distance (radians) of each point to its closest centroid.

    Args:
        x: (n, d) or (b, n, d) points (normalised here).
        centroids: (K, d) or (b, K, d) centroids (normalised here).

    Returns:
        A scalar, or (b,) for batched input: mean over points of
        ``arccos(clamp(max_j cos(x_i, c_j), -1, 1))``.
    """
    xn = F.normalize(x, dim=-1)
    cn = F.normalize(centroids, dim=-1)
    best = (xn @ cn.transpose(-1, -2)).amax(dim=-1)  # (..., n)
    return torch.arccos(best.clamp(-1.0, 1.0)).mean(dim=-1)


def geomstats_kmeans(
    x: torch.Tensor,
    num_clusters: int,
    seed: int,
    tol: float = 1e-3,
    max_iter: int = 100,
    init: Init = "kmeans++",
) -> torch.Tensor:
    """Riemannian k-means of geomstats (the authors' backend), for reference and comparison.

    Args:
        x: (n, d) or (b, n, d) points (normalised here; a batch is fitted item by item).
        num_clusters: K.
        seed: seeds the Python ``random`` and numpy global generators that geomstats draws
            from; both global states are saved before and restored after the fit, so the
            caller's random streams are untouched.
        tol: Passed to ``RiemannianKMeans`` (1e-3 as in the authors' run).
        max_iter: Passed to ``RiemannianKMeans``.
        init: Passed to ``RiemannianKMeans`` (kmeans++ as in the authors' run).

    Returns:
        (K, d) or (b, K, d) centroids in ``x``'s dtype and device (normalised).

    Uses the geomstats >= 2.7 API ``RiemannianKMeans(space, n_clusters, init, tol,
    max_iter)`` on ``Hypersphere(dim=d - 1)``, the sphere the d-dimensional keys lie on. The
    authors' code used the 2.5/2.6 API with ``Hypersphere(dim=128)`` for 128-d features, a
    sphere of one dimension more; the dimension is not cosmetic: geomstats' Frechet mean
    stops when the squared step falls below ``epsilon * dim``, so the centres differ slightly
    (up to 0.02 apart on 5-d data for dimensions 3, 4 and 6). geomstats is an optional
    dependency: ``pip install "halp-repro[geomstats]"``.
    """
    try:
        import numpy as np
        from geomstats.geometry.hypersphere import Hypersphere
        from geomstats.learning.kmeans import RiemannianKMeans
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the geomstats k-means backend needs geomstats: "
            'pip install "halp-repro[geomstats]" (geomstats 2.8 with numpy < 2.4)'
        ) from err

    if x.dim() == 3:
        return torch.stack(
            [geomstats_kmeans(item, num_clusters, seed, tol, max_iter, init) for item in x]
        )
    n, d = x.shape
    if n < num_clusters:
        raise ValueError(f"k-means needs at least num_clusters={num_clusters} points, got {n}")
    data = F.normalize(x.detach().to("cpu", torch.float64), dim=-1).numpy()
    space = Hypersphere(dim=d - 1)
    kmeans = RiemannianKMeans(space, n_clusters=num_clusters, init=init, tol=tol, max_iter=max_iter)
    # geomstats draws from the global `random` and numpy generators: seed them for this fit
    # only, and give the caller's streams back untouched.
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002
        kmeans.fit(data)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    centres = torch.as_tensor(np.asarray(kmeans.cluster_centers_), dtype=torch.float64)
    return F.normalize(centres, dim=-1).to(device=x.device, dtype=x.dtype)


def compute_prototypes(
    keys: torch.Tensor,
    num_clusters: int,
    generator: torch.Generator,
    backend: Backend = "torch",
) -> torch.Tensor:
    """HaLP's prototypes: ``num_clusters`` spherical k-means centroids of ``keys``.

    Args:
        keys: (n, d) or (b, n, d) keys, e.g. the 256 most recent queue entries.
        num_clusters: N, the number of prototypes (20 in the paper).
        generator: randomness of the seeding; for ``backend="geomstats"`` one integer seed
            is drawn from it.
        backend: ``"torch"`` (:func:`spherical_kmeans`, default) or ``"geomstats"``
            (:func:`geomstats_kmeans`, optional dependency).

    Returns:
        (N, d) or (b, N, d) unit prototypes, detached, in ``keys``' dtype and device.
    """
    keys = keys.detach()
    if backend == "torch":
        return spherical_kmeans(keys, num_clusters, generator)
    if backend == "geomstats":
        seed = int(torch.randint(2**31 - 1, (), generator=generator, device=generator.device))
        return geomstats_kmeans(keys, num_clusters, seed)
    raise ValueError(f"unknown k-means backend {backend!r}; expected 'torch' or 'geomstats'")
