"""Skeleton encoders, by the ``encoder.arch`` config key (paper Sec. 4.2: a BiGRU).

:data:`ENCODERS` maps a name to a builder taking the configuration; ``bigru`` is the
paper's 3-layer bidirectional GRU (:mod:`halp.encoders.bigru`), ``stgcn`` the 1/4-width
ST-GCN of AimCLR and HiCLR (:mod:`halp.encoders.stgcn`). Every encoder exposes
``features(x)`` (the pre-projection representation used by the evaluation protocols),
``feature_dim``, ``forward(x)`` (the projection that the objectives see) and a
``projection`` module that the evaluation replaces with the identity.
"""

from __future__ import annotations

from collections.abc import Callable

from halp.config import PretrainConfig
from halp.data.layouts import get_layout
from halp.encoders.base import Encoder
from halp.encoders.bigru import BiGRUEncoder, to_gru_input
from halp.encoders.stgcn import STGCNEncoder

INPUT_FEATURES = 150
"""Per-frame features of an NTU clip: 25 joints x 3 coordinates x 2 persons (other layouts:
``SkeletonLayout.features_per_frame``)."""


def _bigru(config: PretrainConfig) -> Encoder:
    e = config.encoder
    return BiGRUEncoder(
        input_size=get_layout(config.data.layout).features_per_frame,
        hidden_size=e.hidden_size,
        num_layers=e.num_layers,
        proj_hidden=e.proj_hidden,
        out_dim=e.out_dim,
        reference_forward=e.reference_forward,
    )


def _stgcn(config: PretrainConfig) -> Encoder:
    e = config.encoder
    return STGCNEncoder(
        width=e.width,
        feature_dim=e.feature_dim,
        proj_hidden=e.proj_hidden,
        out_dim=e.out_dim,
        dropout=e.dropout,
        layout=get_layout(config.data.layout),
    )


ENCODERS: dict[str, Callable[[PretrainConfig], Encoder]] = {"bigru": _bigru, "stgcn": _stgcn}


def build_encoder(name: str, config: PretrainConfig) -> Encoder:
    """A fresh encoder ``name`` sized by ``config.encoder`` for ``config.data.layout``'s joints."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    return ENCODERS[name](config)


__all__ = [
    "ENCODERS",
    "INPUT_FEATURES",
    "BiGRUEncoder",
    "Encoder",
    "STGCNEncoder",
    "build_encoder",
    "to_gru_input",
]
