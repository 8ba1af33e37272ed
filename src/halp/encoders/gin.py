"""GIN graph encoder of GraphCL's TU experiments (You et al. 2020; Xu et al. 2019).

``layers`` GIN convolutions of width ``hidden``, each with an MLP Linear-ReLU-Linear and
eps = 0 (not trained); after each convolution ReLU then BatchNorm. The graph embedding
concatenates the sum pooling of every layer's node features: ``layers * hidden`` = 96
dimensions for GraphCL's 3 x 32. Every Linear is Xavier-uniform with zero bias, as in
the released code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GINConv, global_add_pool


class GinEncoder(nn.Module):
    """Node features -> per-graph embedding (B, layers * hidden).

    Args:
        in_dim: Node feature width (the one-hot label count).
        hidden: Width of every layer (32).
        layers: Number of GIN layers (3).
    """

    def __init__(self, in_dim: int, hidden: int = 32, layers: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(layers):
            mlp = nn.Sequential(
                nn.Linear(in_dim if i == 0 else hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
            )
            self.convs.append(GINConv(mlp, eps=0.0, train_eps=False))
            self.norms.append(nn.BatchNorm1d(hidden))
        self.out_dim = hidden * layers

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Embed a batch of graphs.

        Args:
            x: (N, in_dim) node features of all graphs.
            edge_index: (2, E) directed edges (batch-global node ids), or the sparse
                (target x source) adjacency, which sums the same messages faster.
            batch: (N,) graph index of every node.
            num_graphs: B (graphs with no node get a zero embedding).

        Returns:
            (B, layers * hidden) graph embeddings.
        """
        pooled = []
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = norm(torch.relu(conv(x, edge_index)))
            pooled.append(global_add_pool(x, batch, size=num_graphs))
        return torch.cat(pooled, dim=1)


class GraphCLNet(nn.Module):
    """GIN encoder plus GraphCL's projection head (96 -> 96 -> 96), Xavier-initialised."""

    def __init__(self, in_dim: int, hidden: int = 32, layers: int = 3) -> None:
        super().__init__()
        self.encoder = GinEncoder(in_dim, hidden, layers)
        d = self.encoder.out_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Projections (B, d) of a batch of graphs (not normalised)."""
        return self.head(self.encoder(x, edge_index, batch, num_graphs))
