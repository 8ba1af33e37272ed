"""GraphCL's graph augmentations (You et al., NeurIPS 2020, Sec. 3; the HaLP poster's graph table).

GraphCL contrasts a graph with one augmented view of it, the augmentation drawn per graph
from a set: ``random2`` = {node dropping, subgraph}, ``random3`` = + edge perturbation,
``random4`` = + attribute masking. Two readings of the pieces are offered (config keys
under ``graphcl.``):

- ``subgraph``: ``released`` keeps a random seed node and up to ``int(0.2 n)`` of its
  direct neighbours (the released code means to grow the frontier but discards the
  grown set); ``walk`` grows the frontier as the paper describes (random neighbours of
  the nodes kept so far) up to ``int(0.2 n) + 1`` nodes.
- ``edge_perturbation``: ``released`` drops ``int(E / 10)`` directed edge entries and adds
  none; ``paper`` drops a tenth of the undirected edges and adds as many new ones.
- ``self_loops``: ``released`` adds a self-loop to every node but the highest-index one
  mentioned by an edge (an off-by-one of the released code), builds view 2 from that
  graph, drops from view 2 every node left without any edge, then removes its
  self-loops (so view 1 has self-loops and view 2 has none); ``none`` uses the graph as
  it is and keeps every non-dropped node in view 2.

Every function is pure given a ``numpy.random.Generator``; graphs are ``(x, edges)`` with
``x`` (n, F) float32 and ``edges`` (2, E) int64 local node ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from halp.config import GraphCLConfig

Graph = tuple[np.ndarray, np.ndarray]
"""(x (n, F) float32, edges (2, E) int64)."""

AUG_SETS: dict[str, tuple[str, ...]] = {
    "random2": ("drop_nodes", "subgraph"),
    "random3": ("drop_nodes", "perturb_edges", "subgraph"),
    "random4": ("drop_nodes", "perturb_edges", "subgraph", "mask_nodes"),
}
"""The augmentation sets, in the order the draw indexes them."""


def count(n: int, ratio: float) -> int:
    """``int(n * ratio)`` without float surprises (``int(30 * 0.1)`` is 3, as ``int(30 / 10)``)."""
    return int(round(n * ratio, 9))


def released_self_loops(edges: np.ndarray) -> np.ndarray:
    """``edges`` plus a self-loop on each node ``0 .. max(edges) - 1`` (the released off-by-one)."""
    top = int(edges.max()) if edges.size else 0
    loops = np.arange(top, dtype=np.int64)
    return np.concatenate([edges, np.stack([loops, loops])], axis=1)


def drop_nodes(n: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool mask of the nodes kept after dropping ``int(ratio n)`` uniformly at random."""
    keep = np.ones(n, dtype=bool)
    keep[rng.choice(n, count(n, ratio), replace=False)] = False
    return keep


def subgraph(
    n: int,
    edges: np.ndarray,
    ratio: float,
    rng: np.random.Generator,
    mode: Literal["released", "walk"] = "released",
) -> np.ndarray:
    """(n,) bool mask of a connected piece: a random seed and up to ``int(ratio n)`` more nodes.

    ``released``: the extra nodes are distinct direct neighbours of the seed, drawn
    uniformly. ``walk``: each extra node is drawn uniformly from the neighbours of all the
    nodes kept so far (the paper's random-walk subgraph), until ``int(ratio n) + 1`` nodes
    are kept or no neighbour is left.
    """
    target = count(n, ratio) + 1
    seed = int(rng.integers(n))
    keep = np.zeros(n, dtype=bool)
    keep[seed] = True
    src, dst = edges
    if mode == "released":
        neighbours = np.unique(dst[(src == seed) & (dst != seed)])
        take = min(neighbours.size, target - 1)
        keep[rng.choice(neighbours, take, replace=False)] = True
        return keep
    while keep.sum() < target:
        frontier = np.unique(dst[keep[src] & ~keep[dst]])
        if frontier.size == 0:
            break
        keep[int(rng.choice(frontier))] = True
    return keep


def perturb_edges(
    n: int,
    edges: np.ndarray,
    ratio: float,
    rng: np.random.Generator,
    mode: Literal["released", "paper"] = "released",
) -> np.ndarray:
    """The perturbed (2, E') edge list.

    ``released``: ``int(ratio E)`` of the E directed entries dropped (the two directions of
    an undirected edge independently), none added. ``paper``: ``int(ratio U)`` of the U
    undirected non-loop edges dropped (both directions) and as many new undirected edges
    between distinct, previously unconnected nodes added (fewer only if the graph is
    nearly complete); self-loops are kept.
    """
    if mode == "released":
        e = edges.shape[1]
        kept = rng.choice(e, e - count(e, ratio), replace=False)
        return edges[:, np.sort(kept)]
    src, dst = edges
    loops = edges[:, src == dst]
    pairs = np.unique(np.sort(edges[:, src != dst], axis=0), axis=1)  # (2, U), i < j
    u = pairs.shape[1]
    k = count(u, ratio)
    remaining = pairs[:, np.sort(rng.choice(u, u - k, replace=False))]
    existing = set(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))
    added: list[tuple[int, int]] = []
    capacity = n * (n - 1) // 2 - u
    while len(added) < min(k, capacity):
        a, b = sorted(int(v) for v in rng.choice(n, 2, replace=False))
        if (a, b) not in existing:
            existing.add((a, b))
            added.append((a, b))
    new = np.array(added, dtype=np.int64).reshape(-1, 2).T
    both = np.concatenate([remaining, new], axis=1)
    return np.concatenate([both, both[::-1], loops], axis=1)


def mask_nodes(x: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``x`` with ``int(ratio n)`` random rows replaced by N(0.5, 0.5^2) noise."""
    x = x.copy()
    rows = rng.choice(x.shape[0], count(x.shape[0], ratio), replace=False)
    x[rows] = rng.normal(0.5, 0.5, size=(rows.size, x.shape[1])).astype(x.dtype)
    return x


def induced(x: np.ndarray, edges: np.ndarray, keep: np.ndarray) -> Graph:
    """The subgraph on the nodes of ``keep``, relabelled 0..k-1 in their original order."""
    new_id = np.cumsum(keep) - 1
    inside = keep[edges[0]] & keep[edges[1]]
    return x[keep], new_id[edges[:, inside]]


def _materialise_released(x: np.ndarray, edges: np.ndarray) -> Graph:
    """Keep the nodes some edge mentions (at least node 0), then remove self-loops."""
    keep = np.zeros(x.shape[0], dtype=bool)
    keep[edges.ravel()] = True
    if not keep.any():
        keep[0] = True
    x, edges = induced(x, edges, keep)
    return x, edges[:, edges[0] != edges[1]]


def augment(
    x: np.ndarray, edges: np.ndarray, kind: str, config: GraphCLConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One augmentation ``kind`` (an entry of :data:`AUG_SETS`) applied to a graph.

    Returns:
        (x, edges, keep): the features, the surviving edges (old node ids) and, for node
        dropping and subgraph, the (n,) mask of the nodes kept (None for the others).
    """
    n = x.shape[0]
    if kind == "drop_nodes":
        keep = drop_nodes(n, config.drop_ratio, rng)
        return x, edges[:, keep[edges[0]] & keep[edges[1]]], keep
    if kind == "subgraph":
        keep = subgraph(n, edges, config.subgraph_ratio, rng, config.subgraph)
        return x, edges[:, keep[edges[0]] & keep[edges[1]]], keep
    if kind == "perturb_edges":
        return x, perturb_edges(n, edges, config.perturb_ratio, rng, config.edge_perturbation), None
    if kind == "mask_nodes":
        return mask_nodes(x, config.mask_ratio, rng), edges, None
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {sorted(_KINDS)}")


_KINDS = {kind for kinds in AUG_SETS.values() for kind in kinds}


def make_views(
    x: np.ndarray, edges: np.ndarray, config: GraphCLConfig, rng: np.random.Generator
) -> tuple[Graph, Graph]:
    """GraphCL's two views: the graph itself and one augmentation drawn from ``config.aug_set``."""
    kinds: Sequence[str] = AUG_SETS[config.aug_set]
    kind = kinds[int(rng.integers(len(kinds)))]
    if config.self_loops == "released":
        edges = released_self_loops(edges)
    x2, e2, keep = augment(x, edges, kind, config, rng)
    if config.self_loops == "released":
        return (x, edges), _materialise_released(x2, e2)
    if keep is not None:
        return (x, edges), induced(x2, e2, keep)
    return (x, edges), (x2, e2)
