"""The BiGRU skeleton encoder of ISC, CMD and HaLP (paper Sec. 4.2).

``BiGRUEncoder`` = ``BatchNorm1d`` over the input channels -> a GRU of ``num_layers`` (3)
layers and two directions of ``hidden_size`` each -> the top layer's final state (the
``2 * hidden_size`` feature used by linear and kNN evaluation) -> a projection head
``Linear -> ReLU -> Linear`` (the MoCo embedding, not normalised: MoCo normalises).

**Two recurrences over one parameter layout.** The parameters always live in one standard
``nn.GRU(bidirectional=True)`` module (``self.gru``), so a checkpoint loads into either
mode and can be evaluated both ways; ``reference_forward`` only picks how ``features``
runs them:

- ``reference_forward=False`` (default): a true bidirectional GRU over the whole clip,
  one (cuDNN-friendly) call. The feature is the top layer's final state of each
  direction, ``[output[:, -1, :H], output[:, 0, H:]]`` (= ``h_n``): the forward
  direction after reading the clip up to its last frame, the backward direction after
  reading it back to its first. Both halves summarise the whole clip. (Taking
  ``output[:, -1]`` instead would give the backward half a single step from a zero
  state: no temporal context, and a top-layer backward recurrent weight that never
  receives a gradient.)
- ``reference_forward=True``: what the authors' ``EncoderRNN`` computes. It feeds the
  bidirectional GRU one frame at a time (sequence-length-1 calls) and carries ``h_n``
  from call to call, so its "backward" direction also runs forward in time: each layer
  is two forward-running GRUs (the ``_l{k}`` and ``_l{k}_reverse`` weights) whose outputs
  are concatenated and fed to the next layer. We run each of these 2 x ``num_layers``
  GRUs over the whole clip in one call (no per-frame Python loop) by calling a
  parameter-free single-layer ``nn.GRU`` template with that layer's and direction's
  weights through ``torch.func.functional_call``. The templates live on the meta device
  and are not registered as submodules, so they add nothing to ``state_dict``,
  ``parameters()`` or memory; every call reads the current weights from ``self.gru``.

**Init** as the reference: ``xavier_uniform_`` on every 2-D GRU weight and on the last
projection ``Linear``; the first projection ``Linear`` and all biases keep PyTorch's
defaults. At the full size (150 -> 1024 x 3 layers x 2 directions, head 2048 -> 2048 ->
128) the encoder has 49,457,580 parameters.

On CUDA, ``nn.GRU`` wants its weights in one contiguous cuDNN buffer; moving the module
with ``.to(device)`` arranges that. A copy made on the GPU (``copy.deepcopy``, e.g. a MoCo
key encoder) should call ``encoder.gru.flatten_parameters()`` once. The reference mode's
per-(layer, direction) calls cannot use that buffer; cuDNN may copy their weights (and warn
once) on every call, a small cost next to the recurrence. Neither mode was timed on a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from halp.encoders.base import Encoder
from halp.encoders.eadm import eadm_channels


def to_gru_input(x: Any) -> Any:
    """(..., C, T, V, M) -> (..., T, V * C * M), the BiGRU's per-frame feature vectors.

    As the reference, (N, C, T, V, M) is permuted to (N, T, V, C, M) and flattened, so
    the 150 features of a frame run joint-major, then xyz, then person (fastest): feature
    ``v * C * M + c * M + m``. Works on numpy arrays and torch tensors alike.
    """
    *lead, c, t, v, m = x.shape
    moved = x.movedim(-4, -2) if isinstance(x, torch.Tensor) else np.moveaxis(x, -4, -2)
    return moved.reshape(*lead, t, v * c * m)


_GRU_TENSORS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_DIRECTIONS = ("", "_reverse")


class BiGRUEncoder(Encoder):
    """BatchNorm -> bidirectional GRU -> last-frame feature -> projection head.

    Args:
        input_size: features per frame (150 = 25 joints x 3 coordinates x 2 persons).
        hidden_size: GRU hidden size per direction; the feature is ``2 * hidden_size``.
        num_layers: stacked GRU layers.
        proj_hidden: width of the projection head's hidden layer.
        out_dim: size of the projection (the MoCo embedding).
        reference_forward: run the recurrence as the authors' code does (module
            docstring); may be switched on an existing encoder.
    """

    def __init__(
        self,
        input_size: int = 150,
        hidden_size: int = 1024,
        num_layers: int = 3,
        proj_hidden: int = 2048,
        out_dim: int = 128,
        reference_forward: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.reference_forward = reference_forward
        self.input_norm = nn.BatchNorm1d(input_size)
        self.gru = nn.GRU(
            input_size, hidden_size, num_layers=num_layers, bidirectional=True, batch_first=True
        )
        self.projection = nn.Sequential(
            nn.Linear(2 * hidden_size, proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, out_dim),
        )
        # single-layer, parameter-free stand-ins for one (layer, direction) of self.gru;
        # a tuple, so that nn.Module does not register them
        layer_inputs = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self._layer_templates = tuple(
            nn.GRU(size, hidden_size, batch_first=True, device="meta") for size in layer_inputs
        )
        for name, p in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(p)
        nn.init.xavier_uniform_(self.projection[-1].weight)  # type: ignore[arg-type]

    @property
    def feature_dim(self) -> int:
        """Size of ``features``: both directions of the top layer, ``2 * hidden_size``."""
        return 2 * self.hidden_size

    def features(self, x: Tensor) -> Tensor:
        """(N, C, T, V, M) or (N, T, F) -> (N, 2H): the pre-projection feature.

        A 5-D clip is flattened per frame with :func:`to_gru_input`.
        """
        if x.dim() == 5:
            x = to_gru_input(x)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"expected (N, C, T, V, M) or (N, T, {self.input_size}) input, "
                f"got shape {tuple(x.shape)}"
            )
        x = self.input_norm(x.transpose(1, 2)).transpose(1, 2)  # BN over F on (N, F, T)
        if self.reference_forward:
            return self._forward_in_time(x)[:, -1]  # both halves at the last frame
        out, _ = self.gru(x)  # (N, T, 2H)
        h = self.hidden_size
        return torch.cat([out[:, -1, :h], out[:, 0, h:]], dim=1)  # final state per direction

    def features_and_dropped(self, x: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
        """The feature and its EADM-dropped version, (N, 2H) each, from one GRU pass.

        Our reading of AimCLR's EADM for a feature without joint or frame axes: SimAM's
        energy over each sample's 2H channels, channels with attention ``>= threshold``
        zeroed, a batch-wide rescale (:func:`halp.encoders.eadm.eadm_channels`).
        """
        f = self.features(x)
        return f, eadm_channels(f, threshold)

    def _forward_in_time(self, x: Tensor) -> Tensor:
        """(N, T, F) -> (N, T, 2H): both directions of every layer run forward in time.

        Equals stepping ``self.gru`` frame by frame with the carried ``h_n`` (as the
        reference ``EncoderRNN`` does) but makes 2 x ``num_layers`` whole-clip GRU calls.
        """
        h = x
        for k, template in enumerate(self._layer_templates):
            halves = []
            for direction in _DIRECTIONS:
                weights = {
                    f"{t}_l0": getattr(self.gru, f"{t}_l{k}{direction}") for t in _GRU_TENSORS
                }
                out, _ = functional_call(template, weights, (h,))
                halves.append(out)
            h = torch.cat(halves, dim=-1)
        return h
