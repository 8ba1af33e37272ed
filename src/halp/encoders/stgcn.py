"""The ST-GCN encoder at 1/4 width, as AimCLR and HiCLR use it (Yan et al., AAAI 2018).

``STGCNEncoder`` = data BatchNorm -> 10 ST-GCN blocks on the skeleton's graph (NTU's by
default, any :class:`halp.data.layouts.SkeletonLayout`) -> global average
pool over (frames, joints) and mean over the M persons (the ``feature_dim`` = 256 feature
used by the evaluation) -> projection head ``Linear(256, 256) -> ReLU -> Linear(256, 128)``
(MoCo's "mlp" head). With the defaults it has **920,068** parameters: 821,380 in the
backbone (18,750 of them the learnable edge importances) and 98,688 in the head. The
"0.85 M" of the HiCLR paper matches the backbone with a single ``Linear(256, 128)`` (854,276)
or ``Linear(256, 120)`` (852,220) on top; which one it counted is not stated.

**Input and data BN.** Clips are (N, C=3, T, V=25, M). As released, each person is
normalised separately by one ``BatchNorm1d`` over V·C channels (channel ``v·C + c``) on
(N·M, V·C, T); the network then runs on (N·M, C, T, V), person ``m`` of sample ``n`` at row
``n·M + m``. The feature averages over *all* M persons, a zero-padded absent second person
included, as released.

**Graph** (:func:`spatial_partition`): the 24 NTU bones of :mod:`halp.data.skeleton` plus
self links; centre joint 21 (spine shoulder, index 20); the "spatial configuration"
partition with ``max_hop`` 1, read from the released code:

- hop distances are computed only up to ``max_hop``; farther pairs are "infinitely" far.
  So a joint's distance to the centre is 0 (the centre), 1 (its 4 neighbours) or infinite
  (the other 20 joints), and two infinite distances count as equal.
- the adjacency (pairs within ``max_hop``, self included) is normalised as ``A D^-1`` with
  ``D`` its column sums: entry ``[j, i]`` is ``1 / deg(i)``, ``deg`` counting the self link,
  and every column sums to 1.
- an entry ``[j, i]`` (neighbour ``j`` feeding joint ``i``) goes to subset 0 when ``j = i``;
  to subset 1 when ``j`` is as far from the centre as ``i`` or farther (the released
  "root" and "close" groups of hop 1, merged); to subset 2 when ``j`` is nearer the centre
  than ``i``. With the capped distances subset 2 holds only 8 entries: the centre into
  each of its 4 neighbours, and each of those into its one farther neighbour (e.g. left
  shoulder -> left elbow); every other neighbour lies in subset 1 (40 entries).
  The three subsets sum to the normalised adjacency.

**Block** (:class:`STGCNBlock`): graph convolution (a 1x1 ``Conv2d`` to ``out·K`` channels,
then ``sum_k sum_j y_k[..., j] (A_k * importance_k)[j, i]``) -> BN -> ReLU -> temporal
``Conv2d`` (9, 1) with stride (s, 1) and padding (4, 0) -> BN -> Dropout; plus a residual
(none in block 1; the identity when the shape is kept; else a strided 1x1 ``Conv2d`` + BN);
output ``ReLU(tcn + residual)``. Widths w, w, w, w, 2w, 2w, 2w, 4w, 4w, ``feature_dim``
(w = 16); temporal stride 2 in blocks 5 and 8 (so T = 50 gives T' = 13, T = 64 gives 16);
dropout ``p`` in blocks 2-10 (0.5 in the released pretraining). One (K, V, V) edge
importance of ones per block multiplies the graph (``edge_importance=True``).

**Init** as the released pretraining: every ``Conv2d`` and ``Linear`` weight ~ N(0, 0.02)
with zero bias, every BatchNorm weight ~ N(1, 0.02) with zero bias.

**Parameter names** follow the released ones where that costs nothing (``data_bn``,
``blocks.{i}.gcn.conv``, ``blocks.{i}.tcn.{0,2,3}``, ``blocks.{i}.residual.{0,1}``,
``edge_importance.{i}``, ``projection.{0,2}``): a released checkpoint should map onto ours
by renaming ``st_gcn_networks`` to ``blocks`` and ``fc`` to ``projection`` and dropping its
``A`` (here a non-persistent buffer, rebuilt from the code); no converter exists yet.

EADM (:mod:`halp.encoders.eadm`) acts on the final map; :meth:`STGCNEncoder.features_and_dropped`
gives the feature and the dropped feature from one backbone pass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from halp.data.layouts import NTU25, SkeletonLayout
from halp.data.skeleton import BONE_CHILD, BONE_PARENT, JOINT_NAMES, NUM_JOINTS
from halp.encoders.base import Encoder
from halp.encoders.eadm import eadm

NTU_EDGES: tuple[tuple[int, int], ...] = tuple(
    (int(c), int(p)) for c, p in zip(BONE_CHILD, BONE_PARENT, strict=True) if c != p
)
"""The 24 bones of the NTU skeleton as 0-based (child, parent) joint pairs."""

NTU_CENTRE = JOINT_NAMES.index("spine_shoulder")
"""The centre joint of the spatial partition (joint 21, index 20)."""


def hop_distances(num_joints: int, edges: tuple[tuple[int, int], ...], max_hop: int) -> np.ndarray:
    """(V, V) shortest-path lengths of an undirected graph, ``inf`` beyond ``max_hop``."""
    adjacency = np.eye(num_joints, dtype=bool)
    for i, j in edges:
        adjacency[i, j] = adjacency[j, i] = True
    distance = np.full((num_joints, num_joints), np.inf)
    reached = np.eye(num_joints, dtype=bool)
    for hop in range(max_hop + 1):
        distance[reached & np.isinf(distance)] = hop
        reached = (reached.astype(np.int64) @ adjacency.astype(np.int64)) > 0
    return distance


def spatial_partition(
    num_joints: int = NUM_JOINTS,
    edges: tuple[tuple[int, int], ...] = NTU_EDGES,
    centre: int = NTU_CENTRE,
    max_hop: int = 1,
) -> np.ndarray:
    """The ST-GCN "spatial configuration" adjacency, as released (module docstring).

    Args:
        num_joints: V.
        edges: undirected 0-based joint pairs (self links are added).
        centre: the centre joint.
        max_hop: neighbourhood radius; distances beyond it count as infinite.

    Returns:
        (1 + 2·max_hop, V, V) float64; entry ``[k, j, i]`` weighs joint ``j``'s subset-``k``
        message into joint ``i``.
    """
    hop = hop_distances(num_joints, edges, max_hop)
    adjacency = (hop <= max_hop).astype(np.float64)
    normalised = adjacency / adjacency.sum(axis=0, keepdims=True)  # A D^-1, D = column sums
    to_centre = hop[:, centre]
    j_dist, i_dist = to_centre[:, None], to_centre[None, :]  # [j, i]: neighbour j, joint i
    subsets = []
    for h in range(max_hop + 1):
        at_h = hop == h
        if h == 0:
            subsets.append(normalised * at_h)
            continue
        subsets.append(normalised * (at_h & (j_dist >= i_dist)))  # as far or farther (inf == inf)
        subsets.append(normalised * (at_h & (j_dist < i_dist)))  # nearer the centre
    return np.stack(subsets)


class GraphConv(nn.Module):
    """ST-GCN's spatial graph convolution: a 1x1 conv per subset, then the graph product.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        num_subsets: K, the partition's subsets.
    """

    def __init__(self, in_channels: int, out_channels: int, num_subsets: int) -> None:
        super().__init__()
        self.num_subsets = num_subsets
        self.conv = nn.Conv2d(in_channels, out_channels * num_subsets, kernel_size=1)

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        """(B, C_in, T, V), (K, V, V) -> (B, C_out, T, V): ``sum_k sum_j y_k[j] A_k[j, i]``."""
        y = self.conv(x)
        b, kc, t, v = y.shape
        y = y.view(b, self.num_subsets, kc // self.num_subsets, t, v)
        return torch.einsum("bkctj,kji->bcti", y, graph)


class STGCNBlock(nn.Module):
    """One ST-GCN block: graph conv -> temporal conv, a residual, ReLU (module docstring).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        num_subsets: K of the graph.
        temporal_kernel: odd temporal kernel size (9).
        stride: temporal stride.
        dropout: dropout probability after the temporal conv.
        residual: whether the block has a residual path (all but the first).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_subsets: int,
        temporal_kernel: int = 9,
        stride: int = 1,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.gcn = GraphConv(in_channels, out_channels, num_subsets)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(
                out_channels,
                out_channels,
                kernel_size=(temporal_kernel, 1),
                stride=(stride, 1),
                padding=((temporal_kernel - 1) // 2, 0),
            ),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout),
        )
        self.residual: nn.Module | None
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        """(B, C_in, T, V), (K, V, V) -> (B, C_out, T / stride, V)."""
        y = self.tcn(self.gcn(x, graph))
        if self.residual is not None:
            y = y + self.residual(x)
        return torch.relu(y)


def _released_init(module: nn.Module) -> None:
    """The released pretraining's init: conv/linear N(0, 0.02), BN weight N(1, 0.02), bias 0."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def drop_edges(graph: Tensor, max_rate: float, generator: torch.Generator | None) -> Tensor:
    """HiCLR's Drop-Edges (DAE) on one block's (K, V, V) graph, as its research code did.

    A rate r ~ U(0, max_rate) is drawn, every entry is zeroed with probability r and the
    kept ones are scaled by 1 / (1 - r) (dropout on the adjacency). r stays on the
    device: no host synchronisation. The released "add edges" half is commented out
    there, and is not offered here.
    """
    if not 0.0 <= max_rate < 1.0:
        raise ValueError(f"the edge drop rate must be in [0, 1), got {max_rate}")
    rate = torch.rand((), generator=generator, device=graph.device) * max_rate
    keep = torch.rand(graph.shape, generator=generator, device=graph.device) >= rate
    return graph * keep / (1.0 - rate)


class STGCNEncoder(Encoder):
    """Data BN -> 10 ST-GCN blocks -> pool over frames, joints, persons -> projection head.

    Args:
        in_channels: coordinates per joint (3).
        width: w, the width of the first blocks (16 = 1/4 of ST-GCN's 64).
        feature_dim: width of the last block, the feature size (256).
        proj_hidden: hidden width of the projection head (256).
        out_dim: size of the projection (the MoCo embedding, 128).
        dropout: dropout probability in blocks 2-10 (0.5 in the released pretraining).
        edge_importance: learn one (K, V, V) multiplier of the graph per block.
        num_joints: V; must be the layout's joint count.
        temporal_kernel: odd temporal kernel size of every block (9).
        layout: the skeleton whose bones (:attr:`SkeletonLayout.edges`) and centre joint
            make the graph (NTU's 25 joints by default; NW-UCLA's Kinect v1 20-joint
            graph: ``halp.data.layouts.KINECT20``, centre the shoulder centre).
    """

    adjacency: Tensor

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 16,
        feature_dim: int = 256,
        proj_hidden: int = 256,
        out_dim: int = 128,
        dropout: float = 0.5,
        edge_importance: bool = True,
        num_joints: int | None = None,
        temporal_kernel: int = 9,
        layout: SkeletonLayout = NTU25,
    ) -> None:
        super().__init__()
        num_joints = layout.num_joints if num_joints is None else num_joints
        if num_joints != layout.num_joints:
            raise ValueError(
                f"the {layout.name} graph has {layout.num_joints} joints, got num_joints "
                f"{num_joints}"
            )
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and positive, got {temporal_kernel}")
        self.in_channels = in_channels
        self.num_joints = num_joints
        self._feature_dim = feature_dim
        partition = spatial_partition(layout.num_joints, layout.edges, layout.centre)
        graph = torch.tensor(partition, dtype=torch.float32)
        self.register_buffer("adjacency", graph, persistent=False)  # the code defines it
        k = graph.shape[0]
        self.data_bn = nn.BatchNorm1d(in_channels * num_joints)
        w = width
        plan = [  # (in, out, stride)
            (in_channels, w, 1), (w, w, 1), (w, w, 1), (w, w, 1), (w, 2 * w, 2),
            (2 * w, 2 * w, 1), (2 * w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1),
            (4 * w, feature_dim, 1),
        ]  # fmt: skip
        self.blocks = nn.ModuleList(
            STGCNBlock(
                c_in,
                c_out,
                k,
                temporal_kernel,
                stride,
                dropout=dropout if i > 0 else 0.0,
                residual=i > 0,
            )
            for i, (c_in, c_out, stride) in enumerate(plan)
        )
        self.edge_importance = (
            nn.ParameterList(nn.Parameter(torch.ones_like(graph)) for _ in self.blocks)
            if edge_importance
            else None
        )
        self.projection = nn.Sequential(
            nn.Linear(feature_dim, proj_hidden),
            nn.ReLU(),
            nn.Linear(proj_hidden, out_dim),
        )
        self.apply(_released_init)

    @property
    def feature_dim(self) -> int:
        """Size of ``features``: the last block's width."""
        return self._feature_dim

    def _check(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels or x.shape[3] != self.num_joints:
            raise ValueError(
                f"expected (N, C={self.in_channels}, T, V={self.num_joints}, M) input, "
                f"got shape {tuple(x.shape)}"
            )

    def feature_map(
        self, x: Tensor, edge_drop: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """(N, C, T, V, M) -> (N·M, feature_dim, T', V): the last block's map, before pooling.

        ``edge_drop`` > 0 drops graph edges in every block (:func:`drop_edges`, HiCLR's DAE).
        """
        self._check(x)
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)  # BN channel v·C + c, per person
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
        for i, block in enumerate(self.blocks):
            graph = self.adjacency
            if edge_drop > 0:
                graph = drop_edges(graph, edge_drop, generator)
            if self.edge_importance is not None:
                graph = graph * self.edge_importance[i]
            x = block(x, graph)
        return x

    @staticmethod
    def pool(feature_map: Tensor, num_samples: int) -> Tensor:
        """(N·M, C, T', V) -> (N, C): mean over frames and joints, then over the M persons."""
        pooled = feature_map.mean(dim=(2, 3))  # (N·M, C)
        return pooled.view(num_samples, -1, pooled.shape[1]).mean(dim=1)

    def features(self, x: Tensor) -> Tensor:
        """(N, C, T, V, M) -> (N, feature_dim): the pre-projection feature."""
        return self.pool(self.feature_map(x), x.shape[0])

    def features_dropping_edges(
        self, x: Tensor, rate: float, generator: torch.Generator | None = None
    ) -> Tensor:
        """(N, C, T, V, M) -> (N, feature_dim) with graph edges dropped (HiCLR's DAE)."""
        return self.pool(self.feature_map(x, rate, generator), x.shape[0])

    def features_and_dropped(self, x: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
        """(N, C, T, V, M) -> the feature and the EADM-dropped feature, (N, feature_dim) each.

        One backbone pass: both come from the same final map (and, in training mode, the
        same dropout draws), so the first equals ``features(x)``.
        """
        fmap = self.feature_map(x)
        n = x.shape[0]
        return self.pool(fmap, n), self.pool(eadm(fmap, threshold), n)
