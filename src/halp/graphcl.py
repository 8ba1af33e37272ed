"""GraphCL and GraphCL+HaLP on TU graphs, one seed: pretrain, embed, SVM protocol.

The poster's graph table ("HaLP with GraphCL"). GraphCL (You et al. 2020), as its
released ``unsupervised_TU`` code runs: GIN 3 x 32 (:mod:`halp.encoders.gin`), views from
:mod:`halp.data.graph_augment`, NT-Xent at tau 0.2 (:func:`halp.objectives.graphcl.nt_xent`),
Adam 0.01, batch 128, 20 epochs over a dataset shuffled once; evaluation by the SVM
protocol (:mod:`halp.eval.svm`) on the pre-projection embeddings of the un-augmented
graphs at the last epoch.

HaLP inside GraphCL is this package's reading (the authors did not publish theirs):
anchors are the detached, normalised view-2 projections (GraphCL has no key encoder),
queries the normalised view-1 projections; prototypes are the spherical k-means
centroids of a FIFO of the last ``halp.top_k`` anchors, refreshed every
``halp.refresh_every`` steps; PosHal and L_HaLP are the skeleton methods' own
(:func:`halp.objectives.halp.halp_term`, paper Eq. 3-8) at GraphCL's tau, and
``L = L_GraphCL + mu L_HaLP`` from epoch ``halp.mu_start_epoch``. The FIFO fills from the
first step; HaLP's draws use their own generator, so before the switch (and with mu = 0)
a run is bit-identical to GraphCL's.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_torch_csr_tensor

from halp.config import GraphCLConfig, to_dict
from halp.data.graph_augment import Graph, make_views, released_self_loops
from halp.data.tu import GraphData, load_graphs
from halp.encoders.gin import GraphCLNet
from halp.errors import TrainingDiverged
from halp.eval.svm import SvmResult, check_inputs, svm_protocol
from halp.io import atomic_write_json
from halp.methods.presets import GRAPH_PRESETS, Preset, check_config, term_weight
from halp.objectives import Embeddings, Objective, StepContext, build_objective
from halp.objectives.graphcl import AnchorFifo
from halp.runtime import provenance

HALP_STREAM = 0x48614C50  # offset of HaLP's generator seed from the run's seed ("HaLP")


def to_batch(graphs: Sequence[Graph]) -> Batch:
    """A torch-geometric batch of ``(x, edges)`` numpy graphs."""
    return Batch.from_data_list(
        [Data(x=torch.from_numpy(x), edge_index=torch.from_numpy(e)) for x, e in graphs]
    )


def _embed(net: GraphCLNet, batch: Batch, project: bool) -> torch.Tensor:
    """Encode a batch; messages are summed by a sparse (target x source) adjacency product.

    The same sums as GINConv's edge-wise gather and scatter, 1.4-2x faster on a CPU for
    DD-sized batches (only the order of the float additions differs).
    """
    fn = net if project else net.encoder
    n = int(batch.num_nodes)
    with warnings.catch_warnings():  # torch's "sparse CSR is beta" notice, once per batch
        warnings.simplefilter("ignore", UserWarning)
        adjacency = to_torch_csr_tensor(batch.edge_index.flip(0), size=(n, n))
    return fn(batch.x, adjacency, batch.batch, batch.num_graphs)


STREAM = "graph"
"""The one stream of a graph method (the skeleton methods' modality)."""


class NormalisedOnUse(Mapping[str, torch.Tensor]):
    """Unit queries made from projections when an objective first reads them.

    The order in which autograd nodes are created decides the order in which a
    tensor's gradients are summed; normalising z1 only when HaLP reads it (after
    NT-Xent's own normalisation) keeps the gradients of GraphCL+HaLP bit-identical to
    those of the package's graph loop before it used the shared objectives.
    """

    def __init__(self, projections: dict[str, torch.Tensor]) -> None:
        self.projections = projections
        self.made: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.made:
            self.made[key] = F.normalize(self.projections[key], dim=1)
        return self.made[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.projections)

    def __len__(self) -> int:
        return len(self.projections)


def preset_of_graph(config: GraphCLConfig) -> Preset:
    """The graph preset named by ``config.method``."""
    return GRAPH_PRESETS[config.method]


@dataclass
class History:
    """Per-epoch training record.

    Attributes:
        loss: Mean total loss per epoch.
        loss_graphcl: Mean NT-Xent per epoch.
        loss_halp: Mean L_HaLP per epoch (0 while off).
        halp_keep: Mean rank-filter keep rate per epoch (None while off).
        seconds: Wall time per epoch.
    """

    loss: list[float] = field(default_factory=list)
    loss_graphcl: list[float] = field(default_factory=list)
    loss_halp: list[float] = field(default_factory=list)
    halp_keep: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def pretrain(
    config: GraphCLConfig, data: GraphData, log: Callable[[str], None] = lambda _: None
) -> tuple[GraphCLNet, History]:
    """Pretrain GraphCL (with HaLP for ``method: graphcl_halp``) on ``data``, one seed.

    Randomness: the weights from ``torch.manual_seed(seed)``, the dataset order and the
    augmentations from ``numpy.random.default_rng(seed)``, HaLP's P_sel, t_c and k-means
    draws from a torch generator seeded ``seed + HALP_STREAM``.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (names the epoch).
    """
    preset = preset_of_graph(config)
    for warning in check_config(config, preset, config.epochs):
        log(f"warning: {warning}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    halp_gen = torch.Generator().manual_seed(config.seed + HALP_STREAM)
    net = GraphCLNet(data.num_features, config.hidden, config.layers)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    dim = net.encoder.out_dim
    objectives: dict[str, Objective] = {
        t.objective: build_objective(t.objective, config, (STREAM,), dim) for t in preset.terms
    }
    weights = {t.objective: term_weight(config, t) for t in preset.terms}
    fifo = AnchorFifo(config.halp.top_k, dim)
    order = rng.permutation(len(data))  # shuffled once, batches in that order (as released)
    graphs = [(x.numpy(), e.numpy()) for x, e in zip(data.x, data.edges, strict=True)]
    history = History()
    step = 0
    for epoch in range(config.epochs):
        start = time.perf_counter()
        active = [(n, w.at(epoch)) for n, w in weights.items() if w.at(epoch) != 0.0]
        sums = np.zeros(3)
        keeps: list[float] = []
        net.train()
        batches = 0
        for first in range(0, len(order), config.batch_size):
            ids = order[first : first + config.batch_size]
            if len(ids) < 2:
                continue  # NT-Xent needs another graph in the batch
            for name, weight in active:  # e.g. HaLP's prototype refresh
                ctx = StepContext(epoch, step, weight, halp_gen)
                objectives[name].prepare({STREAM: fifo}, ctx)
            views = [make_views(graphs[i][0], graphs[i][1], config, rng) for i in ids]
            z1 = _embed(net, to_batch([v[0] for v in views]), project=True)
            z2 = _embed(net, to_batch([v[1] for v in views]), project=True)
            anchors = F.normalize(z2.detach(), dim=1)  # GraphCL has no key encoder
            emb = Embeddings(
                queries=NormalisedOnUse({STREAM: z1}),
                keys={STREAM: anchors},
                negatives={},
                banks={STREAM: fifo},
                projections={"view1": {STREAM: z1}, "view2": {STREAM: z2}},
            )
            terms: dict[str, Any] = {}
            loss: torch.Tensor | None = None
            for name, weight in active:
                value = objectives[name].loss(
                    emb, StepContext(epoch, step, weight, halp_gen, terms)
                )
                if value is not None:
                    loss = weight * value if loss is None else loss + weight * value
            assert loss is not None, "GraphCL's NT-Xent is always on"
            fifo.push(anchors)
            for name, weight in active:
                objectives[name].after_enqueue(len(ids), StepContext(epoch, step, weight, halp_gen))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            batches += 1
            loss_halp = float(terms.get(f"loss_halp_{STREAM}", 0.0))
            sums += [float(loss.detach()), float(terms["loss_graphcl"]), loss_halp]
            if f"halp_keep_{STREAM}" in terms:
                keeps.append(float(terms[f"halp_keep_{STREAM}"]))
        mean = sums / max(batches, 1)
        if not np.all(np.isfinite(mean)):
            raise TrainingDiverged(
                f"GraphCL on {data.name} (seed {config.seed}): loss {mean[0]} in epoch "
                f"{epoch + 1}; lower `lr` or check the dataset"
            )
        history.loss.append(float(mean[0]))
        history.loss_graphcl.append(float(mean[1]))
        history.loss_halp.append(float(mean[2]))
        history.halp_keep.append(float(np.mean(keeps)) if keeps else None)
        history.seconds.append(time.perf_counter() - start)
        log(
            f"epoch {epoch + 1}/{config.epochs} loss {mean[0]:.4f} "
            f"(graphcl {mean[1]:.4f}, halp {mean[2]:.4f}, mu {_mu(weights, epoch)}) "
            f"{history.seconds[-1]:.1f}s"
        )
    return net, history


def _mu(weights: dict[str, Any], epoch: int) -> float:
    """HaLP's weight in ``epoch`` (0 for GraphCL and before the switch)."""
    return float(weights["halp"].at(epoch)) if "halp" in weights else 0.0


@torch.no_grad()
def embed(
    net: GraphCLNet, data: GraphData, config: GraphCLConfig, batch_size: int = 256
) -> np.ndarray:
    """(G, layers * hidden) pre-projection embeddings of the un-augmented graphs (eval mode).

    The graphs are view 1 as in training (with the released self-loops when
    ``self_loops: released``).
    """
    net.eval()
    out = []
    for first in range(0, len(data), batch_size):
        graphs = []
        for i in range(first, min(first + batch_size, len(data))):
            x, e = data.x[i].numpy(), data.edges[i].numpy()
            if config.self_loops == "released":
                e = released_self_loops(e)
            graphs.append((x, e))
        out.append(_embed(net, to_batch(graphs), project=False))
    return torch.cat(out).numpy()


def evaluate(embeddings: np.ndarray, data: GraphData, config: GraphCLConfig) -> SvmResult:
    """The SVM protocol on ``embeddings``, its folds seeded by the run's seed."""
    s = config.svm
    return svm_protocol(
        embeddings, data.y.numpy(), config.seed, s.folds, s.inner_folds, s.c_grid, s.workers
    )


def run(
    config: GraphCLConfig, out: Path | str | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Pretrain and evaluate one seed; write the result JSON to ``out`` (atomically) if given."""
    check_config(config, preset_of_graph(config), config.epochs, refuse=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    data = load_graphs(config.root, config.dataset)
    s = config.svm  # refuse labels or folds the protocol cannot run on before pretraining
    check_inputs(data.y.numpy(), config.seed, s.folds, s.inner_folds)
    start, cpu = time.perf_counter(), time.process_time()
    net, history = pretrain(config, data, log)
    pretrain_s, pretrain_cpu = time.perf_counter() - start, time.process_time() - cpu
    embeddings = embed(net, data, config)
    start, cpu = time.perf_counter(), time.process_time()
    result = evaluate(embeddings, data, config)
    svm_s, svm_cpu = time.perf_counter() - start, time.process_time() - cpu
    result_obj: dict[str, Any] = {
        "kind": "graph_svm_seed",
        "dataset": config.dataset,
        "method": config.method,
        "seed": config.seed,
        "accuracy": result.accuracy,
        "fold_accuracies": result.fold_accuracies,
        "chosen_c": result.chosen_c,
        "inner_scores": result.inner_scores,  # mean inner-CV accuracy per C, per fold
        "history": history.__dict__,
        # wall and CPU seconds of this process (SVM worker processes not counted in CPU)
        "seconds": {"pretrain": pretrain_s, "svm": svm_s},
        "cpu_seconds": {"pretrain": pretrain_cpu, "svm": svm_cpu},
        "graphs": len(data),
        "config": to_dict(config),
        "provenance": provenance(torch.device("cpu")),
    }
    log(f"{config.dataset} {config.method} seed {config.seed}: {result.accuracy:.2f} %")
    if out is not None:
        atomic_write_json(Path(out), result_obj)
    return result_obj
