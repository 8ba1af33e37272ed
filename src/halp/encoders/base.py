"""What every skeleton encoder offers the objectives and the evaluation protocols."""

from __future__ import annotations

from torch import Tensor, nn


class Encoder(nn.Module):
    """A skeleton encoder: a representation and a projection head on top of it.

    Subclasses set ``projection`` (the head whose output the objectives see; the
    evaluation replaces it with the identity) and implement :meth:`features` and
    :attr:`feature_dim`. ``forward(x)`` is ``projection(features(x))``.
    """

    projection: nn.Module

    @property
    def feature_dim(self) -> int:
        """Size of :meth:`features`."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """(N, ...) clips -> (N, feature_dim) representations (pre-projection)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """(N, ...) clips -> (N, out_dim), the unnormalised projection."""
        return self.projection(self.features(x))
