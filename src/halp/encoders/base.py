"""What every skeleton encoder offers the objectives and the evaluation protocols."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Encoder(nn.Module):
    """A skeleton encoder: a representation and a projection head on top of it.

    Subclasses set ``projection`` (the head whose output the objectives see; the
    evaluation replaces it with the identity) and implement :meth:`features` and
    :attr:`feature_dim`. ``forward(x)`` is ``projection(features(x))``. Encoders used by
    AimCLR's extreme view also implement :meth:`features_and_dropped`.
    """

    projection: nn.Module

    @property
    def feature_dim(self) -> int:
        """Size of :meth:`features`."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """(N, ...) clips -> (N, feature_dim) representations (pre-projection)."""
        raise NotImplementedError

    def features_and_dropped(self, x: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
        """(N, ...) clips -> ``features(x)`` and its EADM-dropped version, from one pass.

        AimCLR's energy-based attention-guided drop (:mod:`halp.encoders.eadm`) at
        ``threshold``; encoders that support it override this.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no attention-guided drop (EADM); "
            "use an encoder that implements features_and_dropped"
        )

    def features_dropping_edges(
        self, x: Tensor, rate: float, generator: torch.Generator | None = None
    ) -> Tensor:
        """(N, ...) clips -> features with graph edges dropped (HiCLR's DAE); graph encoders."""
        raise NotImplementedError(
            f"{type(self).__name__} has no graph whose edges could be dropped (HiCLR's DAE "
            "needs encoder.arch: stgcn)"
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, ...) clips -> (N, out_dim), the unnormalised projection."""
        return self.projection(self.features(x))
