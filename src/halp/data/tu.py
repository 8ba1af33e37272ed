"""TU graph-classification datasets (Morris et al., "TUDataset", 2020): read, verify, prepare.

The raw format is a folder of text files ``NAME_A.txt`` (one directed edge ``i, j`` per
line, 1-based global node ids), ``NAME_graph_indicator.txt`` (the graph of every node,
1-based), ``NAME_graph_labels.txt`` and ``NAME_node_labels.txt``. ``halp prepare tu
NAME`` downloads ``NAME.zip`` from the official collection (or reads a local archive or
folder), verifies it by content against :data:`KNOWN` (graph, node and edge counts,
class counts, and a SHA-256 of the canonicalised arrays, so a reordered but identical
edge file passes and any other change fails) and writes ``ROOT/NAME/raw/NAME_*.txt``,
the folder torch-geometric's ``TUDataset(ROOT, NAME)`` reads. Nothing is written unless
the whole dataset verified.

:func:`load_graphs` turns a prepared folder into per-graph tensors with the features the
GraphCL experiments use (poster's graph table): one-hot node labels, node attributes
ignored, graph labels mapped to 0..C-1 in sorted order (as torch-geometric does).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from halp.errors import DataFormatError, FetchError, PrepareError
from halp.io import MANIFEST, write_manifest

TU_URL = "https://www.chrsmrrs.com/graphkerneldatasets/{name}.zip"
"""The official TU Dortmund collection; ``{name}`` is replaced by the dataset name."""

PARTS = ("A", "graph_indicator", "graph_labels", "node_labels")
"""The raw files the experiments need (edge labels and node attributes are not used)."""

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A dataset name: letters, digits, ``_`` and ``-`` (every TU name, e.g. ``IMDB-BINARY``);
no ``/`` or ``..``, so ``ROOT/NAME`` never leaves ``ROOT``."""

MAX_ONE_HOT = 1024
"""The widest one-hot node feature: node labels span at most 1024 values. The four
datasets of the poster span 3 to 89 (DD), and every TU dataset with node labels far
fewer than 1024; a wider span is a damaged file (a one-hot of 10^12 columns would need
petabytes), refused before anything is allocated."""

_INT64 = (-(2**63), 2**63 - 1)


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid dataset name (:data:`NAME_PATTERN`).

    Raises:
        DataFormatError: naming the name and what is allowed.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise DataFormatError(
            f"dataset name {name!r}: use letters, digits, '_' and '-' only (at most 64, "
            "e.g. MUTAG or IMDB-BINARY); a name is a folder under the root and may not "
            "hold '/' or '..'"
        )
    return name


@dataclass(frozen=True)
class TuFigures:
    """What a correct copy of one dataset contains.

    Attributes:
        graphs: Number of graphs.
        nodes: Number of nodes over all graphs.
        edge_lines: Lines of ``NAME_A.txt`` (directed edges; each undirected edge twice).
        node_label_values: Distinct node labels (the one-hot width).
        class_counts: Graphs per class, classes in sorted label order.
        digest: SHA-256 of the canonical arrays (:func:`canonical_digest`).
    """

    graphs: int
    nodes: int
    edge_lines: int
    node_label_values: int
    class_counts: tuple[int, ...]
    digest: str


KNOWN: dict[str, TuFigures] = {
    "MUTAG": TuFigures(
        188, 3371, 7442, 7, (63, 125),
        "2bda70e122c1f0936c8e4f4ea86575ad6ed1eb26ffdda8de905d2888d3a1d3b9",
    ),
    "NCI1": TuFigures(
        4110, 122747, 265506, 37, (2053, 2057),
        "dffa05acae43bd26528a9ed3bd0ca60a7b54a9b7a4844fbd196f83c55efb2122",
    ),
    "PROTEINS": TuFigures(
        1113, 43471, 162088, 3, (663, 450),
        "352169265ed1c3a051cc58ac210522c04936d6a3578a8b0ef88d1d90df3ead43",
    ),
    "DD": TuFigures(
        1178, 334925, 1686092, 82, (691, 487),
        "6122fae6bef7144c31cf2ba00d3bad1c5cafd3e8e2a3ab39f99e641f96b9d7b5",
    ),
}  # fmt: skip
"""Content figures of the poster's four datasets, measured on copies cross-checked against a
second public copy (DD's edge file is a verified rebuild whose line order may differ: the
digest does not depend on it)."""


@dataclass(frozen=True)
class TuArrays:
    """One dataset as flat arrays (0-based).

    Attributes:
        edges: (E, 2) int64 directed edges between global node ids.
        graph_of_node: (n,) int64 graph index of every node (non-decreasing).
        node_labels: (n,) int64 raw node labels.
        graph_labels: (g,) int64 raw graph labels.
    """

    edges: np.ndarray
    graph_of_node: np.ndarray
    node_labels: np.ndarray
    graph_labels: np.ndarray

    @property
    def num_graphs(self) -> int:
        """Number of graphs."""
        return int(self.graph_labels.shape[0])


def _parse_ints(text: str, path: Path, columns: int) -> np.ndarray:
    """Parse ``columns`` integers per line; on failure name the first bad line.

    The fast path parses the whole text at once; it is taken only when every non-blank
    line holds ``columns - 1`` commas and the value count is ``columns`` per line, so a
    line with a value too many cannot be balanced by a later one with a value too few.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        values = np.array(text.replace(",", " ").split(), dtype=np.int64)
    except (ValueError, OverflowError):
        values = None
    shaped = all(line.count(",") == columns - 1 for line in lines)
    if values is not None and shaped and values.size == columns * len(lines):
        return values.reshape(len(lines), columns) if columns > 1 else values
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.replace(",", " ").split()
        ok = len(fields) == columns and all(_is_int(f) for f in fields)
        if not ok:
            raise DataFormatError(
                f"{path}:{number}: expected {columns} integer(s) separated by a comma, "
                f"got {line.strip()[:60]!r}; re-download the dataset with `halp prepare tu`"
            )
        big = [f for f in fields if not _INT64[0] <= int(f) <= _INT64[1]]
        if big:
            raise DataFormatError(
                f"{path}:{number}: {big[0][:30]} is out of range (64-bit integers); "
                "re-download the dataset with `halp prepare tu`"
            )
    raise DataFormatError(f"{path}: could not parse it as {columns} integer(s) per line")


def _is_int(field: str) -> bool:
    """Whether ``field`` is a decimal integer (optional leading ``-``, ASCII digits)."""
    digits = field[1:] if field.startswith("-") else field
    return digits.isascii() and digits.isdigit()


def read_tu(folder: Path | str, name: str) -> TuArrays:
    """Read ``folder/NAME_{A,graph_indicator,graph_labels,node_labels}.txt``.

    Raises:
        DataFormatError: a file is missing or malformed, or the files disagree (an edge
            to a node that does not exist, nodes of a graph not contiguous, ...); the
            message names the file (and line).
    """
    folder = Path(folder)
    texts = {}
    for part in PARTS:
        path = folder / f"{name}_{part}.txt"
        if not path.is_file():
            raise DataFormatError(
                f"{path} is missing: a TU dataset folder holds {', '.join(_names(name))}; "
                f"run `halp prepare tu {name}`"
            )
        texts[part] = (path, path.read_text(encoding="ascii", errors="replace"))

    def ints(part: str, columns: int) -> np.ndarray:
        path, text = texts[part]
        return _parse_ints(text, path, columns)

    edges = ints("A", 2) - 1
    graph_of_node = ints("graph_indicator", 1) - 1
    graph_labels = ints("graph_labels", 1)
    node_labels = ints("node_labels", 1)
    n, g = graph_of_node.shape[0], graph_labels.shape[0]
    indicator = texts["graph_indicator"][0]
    if node_labels.shape[0] != n:
        raise DataFormatError(
            f"{texts['node_labels'][0]}: {node_labels.shape[0]} node labels for {n} nodes "
            f"in {indicator}; the download is incomplete"
        )
    if n == 0 or graph_of_node.min() != 0 or graph_of_node.max() != g - 1:
        raise DataFormatError(
            f"{indicator}: graph ids must run from 1 to {g} (the lines of "
            f"{texts['graph_labels'][0]}); the files belong to different downloads"
        )
    if np.any(np.diff(graph_of_node) < 0) or np.unique(graph_of_node).size != g:
        raise DataFormatError(f"{indicator}: every graph's nodes must be contiguous and non-empty")
    outside = (edges < 0) | (edges >= n)
    if outside.any():
        line = int(np.argmax(outside.any(axis=1)))
        node = int(edges[line][outside[line]][0]) + 1
        raise DataFormatError(
            f"{texts['A'][0]}:{line + 1}: the edge names node {node}, but the nodes are "
            f"numbered 1..{n} (lines of {indicator})"
        )
    if edges.size and np.any(graph_of_node[edges[:, 0]] != graph_of_node[edges[:, 1]]):
        bad = int(np.argmax(graph_of_node[edges[:, 0]] != graph_of_node[edges[:, 1]]))
        raise DataFormatError(f"{texts['A'][0]}:{bad + 1}: the edge joins two different graphs")
    return TuArrays(edges, graph_of_node, node_labels, graph_labels)


def _names(name: str) -> list[str]:
    return [f"{name}_{part}.txt" for part in PARTS]


def canonical_digest(arrays: TuArrays) -> str:
    """SHA-256 of the dataset's content, independent of the edge lines' order.

    Hashed: the graph indicator, the node labels, the graph labels and the edges as
    (source, target) pairs sorted lexicographically, all as little-endian int64.
    """
    h = hashlib.sha256()
    order = np.lexsort((arrays.edges[:, 1], arrays.edges[:, 0])) if arrays.edges.size else []
    for part in (
        arrays.graph_of_node,
        arrays.node_labels,
        arrays.graph_labels,
        arrays.edges[order],
    ):
        h.update(np.ascontiguousarray(part, dtype="<i8").tobytes())
        h.update(b"|")
    return h.hexdigest()


def figures_of(arrays: TuArrays) -> TuFigures:
    """The content figures of ``arrays`` (compare with :data:`KNOWN`)."""
    _, counts = np.unique(arrays.graph_labels, return_counts=True)
    return TuFigures(
        graphs=arrays.num_graphs,
        nodes=int(arrays.graph_of_node.shape[0]),
        edge_lines=int(arrays.edges.shape[0]),
        node_label_values=int(np.unique(arrays.node_labels).size),
        class_counts=tuple(int(c) for c in counts),
        digest=canonical_digest(arrays),
    )


def verify(arrays: TuArrays, name: str, where: str) -> None:
    """Check ``arrays`` against :data:`KNOWN` [name]; unknown names pass with no check.

    Raises:
        PrepareError: a figure differs (each difference named, with ``where``).
    """
    known = KNOWN.get(name)
    if known is None:
        return
    found = figures_of(arrays)
    wrong = [
        f"{field} {getattr(found, field)!r} (expected {getattr(known, field)!r})"
        for field in ("graphs", "nodes", "edge_lines", "node_label_values", "class_counts")
        if getattr(found, field) != getattr(known, field)
    ]
    if not wrong and found.digest != known.digest:
        wrong.append("content hash differs with the same counts (edited labels or edges)")
    if wrong:
        raise PrepareError(
            f"{where}: this is not the official {name}: " + "; ".join(wrong) + ". "
            "The download may be truncated or from another source; nothing was written"
        )


def _download(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except OSError as err:
        raise FetchError(
            f"downloading {url} failed: {err}; pass --source with a local copy"
        ) from None


def _extract(blob: bytes, name: str, where: str, into: Path) -> None:
    """Write the needed ``NAME_*.txt`` members of a zip archive into ``into``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        members = {Path(m).name: m for m in archive.namelist()}
        for file_name in _names(name):
            if file_name not in members:
                raise PrepareError(
                    f"{where}: the archive has no {file_name}; is it the TU archive of {name}?"
                )
            (into / file_name).write_bytes(archive.read(members[file_name]))
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as err:
        raise PrepareError(
            f"{where}: not a readable zip archive ({err}); the download is truncated or "
            "corrupt, download it again"
        ) from None


def prepare_tu(
    name: str,
    root: Path | str,
    source: Path | str | None = None,
    url: str = TU_URL,
    timeout: float = 120.0,
) -> Path:
    """Fetch, verify and write one TU dataset as ``root/NAME/raw/NAME_*.txt``.

    Args:
        name: Dataset name, e.g. ``MUTAG``.
        root: Output root (torch-geometric's ``TUDataset`` root).
        source: A local ``NAME.zip`` or a folder holding ``NAME_*.txt``; None downloads.
        url: Download address; ``{name}`` is replaced by ``name``.
        timeout: Seconds before a stalled download fails.

    Returns:
        The written ``raw`` folder. An existing one is replaced only after the new copy
        verified; a run killed midway leaves the old folder (or none) in place.
    """
    try:
        raw = Path(root) / check_name(name) / "raw"
    except DataFormatError as err:
        raise PrepareError(str(err)) from None
    raw.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=raw.parent))
    try:
        if source is not None and Path(source).is_dir():
            where = str(source)
            for file_name in _names(name):
                path = Path(source) / file_name
                if not path.is_file():
                    raise PrepareError(f"{path} is missing; a TU folder holds {_names(name)}")
                shutil.copyfile(path, staging / file_name)
        else:
            where = str(source) if source is not None else url.format(name=name)
            blob = Path(source).read_bytes() if source is not None else _download(where, timeout)
            _extract(blob, name, where, staging)
        try:
            arrays = read_tu(staging, name)
        except DataFormatError as err:
            raise PrepareError(f"{where}: {err}") from None
        verify(arrays, name, where)
        try:
            _check_span(arrays, f"{where}: {name}_node_labels.txt")
        except DataFormatError as err:
            raise PrepareError(str(err)) from None
        figures = figures_of(arrays)
        write_manifest(
            staging,
            {
                "dataset": name,
                "source": where,
                "graphs": figures.graphs,
                "nodes": figures.nodes,
                "edge_lines": figures.edge_lines,
                "class_counts": list(figures.class_counts),
                "digest": figures.digest,
                "verified": name in KNOWN,
            },
        )
        old = raw.with_name(".raw.old")
        shutil.rmtree(old, ignore_errors=True)
        if raw.exists():
            raw.rename(old)
        staging.rename(raw)
        shutil.rmtree(old, ignore_errors=True)
        return raw
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class GraphData:
    """A dataset ready for training: per-graph tensors.

    Attributes:
        name: Dataset name.
        x: Per graph, (n_i, F) float one-hot node labels.
        edges: Per graph, (2, E_i) int64 directed edges (local node ids).
        y: (G,) int64 class of every graph (0..C-1).
    """

    name: str
    x: list[torch.Tensor]
    edges: list[torch.Tensor]
    y: torch.Tensor

    @property
    def num_features(self) -> int:
        """F, the one-hot width."""
        return int(self.x[0].shape[1])

    @property
    def num_classes(self) -> int:
        """C."""
        return int(self.y.max()) + 1

    def __len__(self) -> int:
        return len(self.x)


def check_prepared(raw: Path, name: str, arrays: TuArrays) -> None:
    """Refuse ``raw`` unless its ``manifest.json`` (of :func:`prepare_tu`) vouches for ``arrays``.

    The files read must be those that were verified when prepared: the manifest names
    the dataset and records its counts and content digest (:func:`canonical_digest`);
    a known dataset is also checked against :data:`KNOWN` again.

    Raises:
        DataFormatError: the manifest is missing or unreadable, names another dataset,
            or a figure differs (each difference named).
    """
    manifest = Path(raw) / MANIFEST
    again = f"run `halp prepare tu {name} --out ROOT` again"
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(
            f"{manifest} is missing: {raw} was not written (and verified) by "
            f"`halp prepare tu`; {again}"
        ) from None
    except (ValueError, OSError) as err:
        raise DataFormatError(f"{manifest}: unreadable ({err}); {again}") from None
    if not isinstance(recorded, dict):
        raise DataFormatError(f"{manifest}: not a manifest of `halp prepare tu`; {again}")
    if recorded.get("dataset") != name:
        raise DataFormatError(
            f"{manifest}: the files were prepared as {recorded.get('dataset')!r}, not "
            f"{name!r} (copied from another dataset?); {again}"
        )
    found = figures_of(arrays)
    expected = {
        "graphs": found.graphs,
        "nodes": found.nodes,
        "edge_lines": found.edge_lines,
        "class_counts": list(found.class_counts),
        "digest": found.digest,
    }
    wrong = [
        f"{key} {value!r} (manifest: {recorded.get(key)!r})"
        for key, value in expected.items()
        if recorded.get(key) != value
    ]
    if wrong:
        raise DataFormatError(
            f"{raw}: the files differ from what `halp prepare tu` verified and recorded in "
            f"{manifest}: " + "; ".join(wrong) + f" (edited or replaced since?); {again}"
        )
    try:
        verify(arrays, name, str(raw))
    except PrepareError as err:
        raise DataFormatError(str(err)) from None


def _check_span(arrays: TuArrays, path: Path | str) -> int:
    """The lowest node label, after checking that the labels span at most MAX_ONE_HOT."""
    low, high = int(arrays.node_labels.min()), int(arrays.node_labels.max())
    if high - low + 1 > MAX_ONE_HOT:
        raise DataFormatError(
            f"{path}: node labels span {low}..{high}, a one-hot width of {high - low + 1}; "
            f"at most {MAX_ONE_HOT} is supported (TU datasets span under 100)"
        )
    return low


def load_graphs(root: Path | str, name: str) -> GraphData:
    """Load ``root/NAME/raw`` (as written by :func:`prepare_tu`) into per-graph tensors.

    The files are checked against their manifest first (:func:`check_prepared`). Node
    features: one-hot of ``node_label - min(node_label)`` with width ``max - min + 1``
    (torch-geometric's reading of TU node labels), at most :data:`MAX_ONE_HOT`; node
    attributes are not used.
    """
    raw = Path(root) / check_name(name) / "raw"
    arrays = read_tu(raw, name)
    check_prepared(raw, name, arrays)
    low = _check_span(arrays, raw / f"{name}_node_labels.txt")
    labels = arrays.node_labels - low
    onehot = np.zeros((labels.shape[0], int(labels.max()) + 1), dtype=np.float32)
    onehot[np.arange(labels.shape[0]), labels] = 1.0
    starts = np.searchsorted(arrays.graph_of_node, np.arange(arrays.num_graphs + 1))
    edge_graph = arrays.graph_of_node[arrays.edges[:, 0]]
    order = np.argsort(edge_graph, kind="stable")
    edges_sorted = arrays.edges[order]
    edge_starts = np.searchsorted(edge_graph[order], np.arange(arrays.num_graphs + 1))
    xs, es = [], []
    for i in range(arrays.num_graphs):
        a, b = starts[i], starts[i + 1]
        xs.append(torch.from_numpy(onehot[a:b]))
        local = edges_sorted[edge_starts[i] : edge_starts[i + 1]] - a
        es.append(torch.from_numpy(np.ascontiguousarray(local.T)))
    _, y = np.unique(arrays.graph_labels, return_inverse=True)
    return GraphData(name, xs, es, torch.from_numpy(y.astype(np.int64)))


def write_tu(folder: Path | str, name: str, arrays: TuArrays) -> None:
    """Write ``arrays`` in the raw TU format (1-based ids), e.g. for generated datasets."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = {
        "A": "\n".join(f"{i + 1}, {j + 1}" for i, j in arrays.edges.tolist()),
        "graph_indicator": "\n".join(str(g + 1) for g in arrays.graph_of_node.tolist()),
        "graph_labels": "\n".join(str(v) for v in arrays.graph_labels.tolist()),
        "node_labels": "\n".join(str(v) for v in arrays.node_labels.tolist()),
    }
    for part, text in lines.items():
        (folder / f"{name}_{part}.txt").write_text(text + "\n", encoding="ascii")


def synthetic_tu(graphs: int = 188, seed: int = 0) -> TuArrays:
    """A small two-class dataset in which the class is learnable from structure and labels.

    Class 0: trees (a random tree on 10-25 nodes); class 1: the same kind of tree with
    3-5 extra edges closing rings. Node labels (7 values) are drawn with a class-dependent
    bias, weak enough that structure matters too. MUTAG-sized by default; it stands in
    for the real datasets in the smoke configuration.
    """
    rng = np.random.default_rng(seed)
    edges, graph_of_node, node_labels, graph_labels = [], [], [], []
    offset = 0
    for g in range(graphs):
        label = g % 2
        n = int(rng.integers(10, 26))
        pairs = {(int(rng.integers(0, v)), v) for v in range(1, n)}  # a random tree
        if label == 1:
            while len(pairs) < n - 1 + int(rng.integers(3, 6)):
                a, b = sorted(int(v) for v in rng.choice(n, 2, replace=False))
                pairs.add((a, b))
        probs = np.full(7, 1.0)
        probs[label * 3] += 1.5
        labels = rng.choice(7, size=n, p=probs / probs.sum())
        for a, b in sorted(pairs):
            edges += [(offset + a, offset + b), (offset + b, offset + a)]
        graph_of_node += [g] * n
        node_labels += labels.tolist()
        graph_labels.append(1 if label else -1)
        offset += n
    return TuArrays(
        np.array(edges, dtype=np.int64),
        np.array(graph_of_node, dtype=np.int64),
        np.array(node_labels, dtype=np.int64),
        np.array(graph_labels, dtype=np.int64),
    )
