"""TU graph data: reading, content verification, preparation, and GraphCL's augmentations."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from halp.config import GraphCLConfig
from halp.data import graph_augment as ga
from halp.data import tu
from halp.errors import DataFormatError, FetchError, PrepareError

# ------------------------------------------------------------------ TU files


@pytest.mark.parametrize("name", ["MUTAG", "NCI1", "PROTEINS", "DD"])
def test_real_datasets_match_their_known_figures(tu_realdata: Path, name: str) -> None:
    figures = tu.figures_of(tu.read_tu(tu_realdata / name, name))
    assert figures == tu.KNOWN[name]


def _mutag_zip(
    tu_realdata: Path, tmp_path: Path, edit: dict[str, dict[str, str]] | None = None
) -> Path:
    """MUTAG as the TU collection's archive lays it out (MUTAG/MUTAG_*.txt), in tmp_path."""
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as archive:
        for path in sorted((tu_realdata / "MUTAG").glob("MUTAG_*.txt")):
            text = path.read_text()
            for old, new in (edit or {}).get(path.name, {}).items():
                text = text.replace(old, new, 1)
            archive.writestr(f"MUTAG/{path.name}", text)
    out = tmp_path / "MUTAG.zip"
    out.write_bytes(blob.getvalue())
    return out


def test_prepare_from_an_archive_writes_what_torch_geometric_reads(
    tu_realdata: Path, tmp_path: Path
) -> None:
    from torch_geometric.datasets import TUDataset

    source = _mutag_zip(tu_realdata, tmp_path)
    raw = tu.prepare_tu("MUTAG", tmp_path / "tu", source=source)
    assert (raw / "manifest.json").is_file()
    pyg = TUDataset(str(tmp_path / "tu"), "MUTAG")  # reads raw/ offline
    ours = tu.load_graphs(tmp_path / "tu", "MUTAG")
    assert len(pyg) == len(ours) == 188
    for i in (0, 1, 100, 187):
        assert pyg[i].num_nodes == ours.x[i].shape[0]
        assert int(pyg[i].y) == int(ours.y[i])
        assert pyg[i].x.shape[1] == ours.num_features == 7
        assert (pyg[i].x == ours.x[i]).all()  # one-hot node labels, same columns
        pyg_edges = {tuple(e) for e in pyg[i].edge_index.T.tolist()}
        assert pyg_edges == {tuple(e) for e in ours.edges[i].T.tolist()}


def test_the_download_path_fetches_and_verifies_an_archive(
    tu_realdata: Path, tmp_path: Path
) -> None:
    # a file:// address goes through the same urllib download as the TU collection's https
    archive = _mutag_zip(tu_realdata, tmp_path)
    url = archive.with_name("{name}.zip").as_uri().replace("%7B", "{").replace("%7D", "}")
    raw = tu.prepare_tu("MUTAG", tmp_path / "tu", url=url)
    manifest = (raw / "manifest.json").read_text()
    assert '"verified": true' in manifest and archive.as_uri() in manifest
    with pytest.raises(FetchError, match="pass --source"):
        tu.prepare_tu("NCI1", tmp_path / "tu", url=url)  # no NCI1.zip there


def test_a_truncated_archive_is_refused_and_nothing_is_written(
    tu_realdata: Path, tmp_path: Path
) -> None:
    source = _mutag_zip(tu_realdata, tmp_path)
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(PrepareError, match="truncated or corrupt"):
        tu.prepare_tu("MUTAG", tmp_path / "tu", source=source)
    assert not (tmp_path / "tu" / "MUTAG" / "raw").exists()
    assert [p.name for p in (tmp_path / "tu" / "MUTAG").iterdir()] == []  # no staging left


def test_edited_content_with_the_same_counts_is_refused(tu_realdata: Path, tmp_path: Path) -> None:
    # one node label changed (same label set): only the content hash can tell
    text = (tu_realdata / "MUTAG" / "MUTAG_node_labels.txt").read_text().splitlines()
    swap = next(i for i in range(1, len(text)) if text[i] != text[0])
    edit = {"MUTAG_node_labels.txt": {"\n".join(text[: swap + 1]): "\n".join(
        [*text[:swap], text[0]])}}  # fmt: skip
    source = _mutag_zip(tu_realdata, tmp_path, edit)
    with pytest.raises(PrepareError, match="content hash differs"):
        tu.prepare_tu("MUTAG", tmp_path / "tu", source=source)


def test_a_missing_graph_is_refused_naming_the_counts(tu_realdata: Path, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    for path in (tu_realdata / "MUTAG").glob("MUTAG_*.txt"):
        (folder / path.name).write_text(path.read_text())
    labels = folder / "MUTAG_graph_labels.txt"
    labels.write_text("\n".join(labels.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(PrepareError, match="graph ids must run from 1 to 187"):
        tu.prepare_tu("MUTAG", tmp_path / "tu", source=folder)


def test_a_verified_copy_is_kept_when_a_bad_one_replaces_it(
    tu_realdata: Path, tmp_path: Path
) -> None:
    good = tu.prepare_tu("MUTAG", tmp_path / "tu", source=_mutag_zip(tu_realdata, tmp_path))
    before = (good / "MUTAG_A.txt").read_bytes()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(PrepareError):
        tu.prepare_tu("MUTAG", tmp_path / "tu", source=bad)
    assert (good / "MUTAG_A.txt").read_bytes() == before


def test_malformed_lines_are_named(tmp_path: Path) -> None:
    arrays = tu.synthetic_tu(graphs=4)
    tu.write_tu(tmp_path, "X", arrays)
    a = tmp_path / "X_A.txt"
    lines = a.read_text().splitlines()
    lines[2] = "3; 4"
    a.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"X_A\.txt:3: expected 2 integer"):
        tu.read_tu(tmp_path, "X")
    # a value too many on one line and one too few on the next still total 2 per line
    lines[2], lines[3] = "3, 4, 5", "6"
    a.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"X_A\.txt:3: expected 2 integer"):
        tu.read_tu(tmp_path, "X")
    (tmp_path / "X_node_labels.txt").unlink()
    with pytest.raises(DataFormatError, match=r"X_node_labels\.txt is missing"):
        tu.read_tu(tmp_path, "X")


def test_an_edge_between_graphs_is_refused(tmp_path: Path) -> None:
    arrays = tu.synthetic_tu(graphs=4)
    edges = arrays.edges.copy()
    edges[0, 1] = len(arrays.graph_of_node) - 1  # a node of the last graph
    tu.write_tu(tmp_path, "X", tu.TuArrays(edges, arrays.graph_of_node, arrays.node_labels,
                                          arrays.graph_labels))  # fmt: skip
    with pytest.raises(DataFormatError, match=r"X_A\.txt:1: the edge joins two different"):
        tu.read_tu(tmp_path, "X")


def test_digest_ignores_edge_order_only() -> None:
    arrays = tu.synthetic_tu(graphs=6)
    shuffled = tu.TuArrays(
        arrays.edges[np.random.default_rng(0).permutation(len(arrays.edges))],
        arrays.graph_of_node, arrays.node_labels, arrays.graph_labels,
    )  # fmt: skip
    assert tu.canonical_digest(shuffled) == tu.canonical_digest(arrays)
    flipped = arrays.graph_labels.copy()
    flipped[0] = -flipped[0]
    other = tu.TuArrays(arrays.edges, arrays.graph_of_node, arrays.node_labels, flipped)
    assert tu.canonical_digest(other) != tu.canonical_digest(arrays)


def test_synthetic_graphs_are_undirected_and_two_classes() -> None:
    arrays = tu.synthetic_tu(graphs=20, seed=1)
    pairs = {tuple(e) for e in arrays.edges.tolist()}
    assert all((b, a) in pairs for a, b in pairs)
    assert sorted(set(arrays.graph_labels.tolist())) == [-1, 1]


# ------------------------------------------------------------------ augmentations

# A hand-made graph: ring 0-7, path 8-9-10 hanging from 3, node 11 joined to 0 (12 nodes).
_PAIRS = [(i, (i + 1) % 8) for i in range(8)] + [(3, 8), (8, 9), (9, 10), (0, 11)]
EDGES = np.array(_PAIRS + [(b, a) for a, b in _PAIRS], dtype=np.int64).T
X = np.eye(12, dtype=np.float32)


def _edge_set(edges: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in edges.T}


def _config(**keys: object) -> GraphCLConfig:
    return GraphCLConfig(**keys)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_drop_nodes_matches_a_slow_reference(seed: int) -> None:
    keep = ga.drop_nodes(12, 0.25, np.random.default_rng(seed))
    dropped = set(np.random.default_rng(seed).choice(12, 3, replace=False).tolist())
    assert {i for i in range(12) if not keep[i]} == dropped
    _, e2, _ = ga.augment(X, EDGES, "drop_nodes", _config(drop_ratio=0.25),
                           np.random.default_rng(seed))  # fmt: skip
    expected = {(a, b) for a, b in _PAIRS + [(b, a) for a, b in _PAIRS]
                if a not in dropped and b not in dropped}  # fmt: skip
    assert _edge_set(e2) == expected  # never an edge to a dropped node


def test_count_is_int_of_n_over_ten() -> None:
    assert [ga.count(n, 0.1) for n in (9, 10, 29, 30, 31, 70)] == [0, 1, 2, 3, 3, 7]
    assert ga.count(5, 0.2) == 1


@pytest.mark.parametrize("seed", range(6))
def test_released_subgraph_is_the_seed_and_its_neighbours(seed: int) -> None:
    keep = ga.subgraph(12, EDGES, 0.2, np.random.default_rng(seed), "released")
    rng = np.random.default_rng(seed)
    centre = int(rng.integers(12))
    neighbours = sorted({b for a, b in _edge_set(EDGES) if a == centre})
    take = min(len(neighbours), ga.count(12, 0.2))
    chosen = set(rng.choice(np.array(neighbours), take, replace=False).tolist())
    assert set(np.flatnonzero(keep).tolist()) == {centre} | chosen


@pytest.mark.parametrize("seed", range(6))
def test_walk_subgraph_grows_its_frontier(seed: int) -> None:
    ratio = 0.5  # 7 nodes: more than any node's neighbourhood, so the frontier must grow
    keep = ga.subgraph(12, EDGES, ratio, np.random.default_rng(seed), "walk")
    rng = np.random.default_rng(seed)
    kept = [int(rng.integers(12))]
    while len(kept) < ga.count(12, ratio) + 1:
        frontier = sorted({b for a, b in _edge_set(EDGES) if a in kept and b not in kept})
        kept.append(int(rng.choice(np.array(frontier))))
    assert set(np.flatnonzero(keep).tolist()) == set(kept)
    assert keep.sum() == 7


@pytest.mark.parametrize("seed", range(4))
def test_released_edge_perturbation_only_drops_entries(seed: int) -> None:
    e2 = ga.perturb_edges(12, EDGES, 0.1, np.random.default_rng(seed), "released")
    e = EDGES.shape[1]
    kept = np.sort(np.random.default_rng(seed).choice(e, e - e // 10, replace=False))
    assert np.array_equal(e2, EDGES[:, kept])


@pytest.mark.parametrize("seed", range(4))
def test_paper_edge_perturbation_drops_and_adds_undirected_edges(seed: int) -> None:
    loops = np.array([[5, 6], [5, 6]])
    edges = np.concatenate([EDGES, loops], axis=1)
    e2 = ga.perturb_edges(12, edges, 0.25, np.random.default_rng(seed), "paper")
    before = {tuple(sorted(p)) for p in _PAIRS}
    after_all = _edge_set(e2)
    assert {(5, 5), (6, 6)} <= after_all  # self-loops untouched
    after = {(a, b) for a, b in after_all if a < b}
    assert all((b, a) in after_all for a, b in after)  # symmetric
    assert len(after) == len(before) == 12  # as many added as dropped
    assert len(before - after) == 3 == len(after - before)
    assert e2.shape[1] == len(after_all)  # no duplicates


def test_attribute_masking_changes_exactly_a_tenth_of_the_rows() -> None:
    x = np.zeros((30, 4), dtype=np.float32)
    x2 = ga.mask_nodes(x, 0.1, np.random.default_rng(0))
    changed = np.flatnonzero(np.any(x2 != 0, axis=1))
    assert len(changed) == 3
    assert x.sum() == 0  # the input is not modified


def test_released_views_self_loops_and_isolated_nodes() -> None:
    cfg = _config(aug_set="random2")
    for seed in range(8):
        (x1, e1), (x2, e2) = ga.make_views(X, EDGES, cfg, np.random.default_rng(seed))
        assert x1.shape == (12, 12)
        loops = {a for a, b in _edge_set(e1) if a == b}
        assert loops == set(range(11))  # the released off-by-one: not node 11
        assert not any(a == b for a, b in _edge_set(e2))  # view 2 has none
        assert 1 <= x2.shape[0] < 12
        # every view-2 node comes from the original graph, with its one-hot row intact
        assert (x2.sum(axis=1) == 1).all()
        rows = x2.argmax(axis=1)
        assert len(set(rows.tolist())) == len(rows)


def test_views_without_self_loops_keep_every_surviving_node() -> None:
    cfg = _config(aug_set="random2", self_loops="none")
    rng = np.random.default_rng(3)
    (_, e1), (x2, _) = ga.make_views(X, EDGES, cfg, rng)
    assert _edge_set(e1) == _edge_set(EDGES)
    # node dropping keeps 11 nodes (isolated ones too); a subgraph at most int(0.2 n) + 1
    assert x2.shape[0] == 11 or 1 <= x2.shape[0] <= ga.count(12, 0.2) + 1


def test_the_augmentation_is_drawn_from_the_set() -> None:
    seen = set()
    cfg = _config(aug_set="random4", self_loops="none")
    for seed in range(40):
        _, (x2, _) = ga.make_views(X, EDGES, cfg, np.random.default_rng(seed))
        if not np.array_equal(x2, X[: x2.shape[0]]) and x2.shape[0] == 12:
            seen.add("mask")
        elif x2.shape[0] == 12:
            seen.add("perturb")
        else:
            seen.add("drop_or_subgraph")
    assert seen == {"mask", "perturb", "drop_or_subgraph"}
