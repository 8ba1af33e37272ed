"""AimCLR's energy-based attention-guided drop module (EADM; Guo et al., AAAI 2022).

EADM turns the extreme view's feature map into a second, "dropped" view: a parameter-free
attention (the inverse of SimAM's minimal energy, Yang et al., ICML 2021) marks the most
salient positions, and those are zeroed. It is deterministic (no sampling) and has no
parameters.

**Attention.** For a sample's values ``x_p`` over a set of positions ``p`` (``n`` of them):
``d_p = (x_p - mean_p x)^2``, ``e_p = d_p / (4 (sum_p d_p / (n - 1) + lambda)) + 0.5``,
``A_p = sigmoid(e_p)`` with ``lambda = 1e-4``. As ``e_p >= 0.5``, ``A_p >= sigmoid(0.5) ~
0.62``; a position is kept when ``A_p < threshold`` (0.7 as released: the argument the
authors call ``keep_prob`` acts as this threshold), i.e. the *most* salient positions drop.

**On the ST-GCN map** (:func:`eadm`, (N·M, C, T', V) before pooling), as released: ``A`` is
computed once per (sample, channel) over the (T', V) positions. Spatial drop: a joint's score
is the mean of ``A`` over (C, T'); joints scoring ``>= threshold`` are zeroed in every
channel and frame. Temporal drop: then every element whose own ``A`` is ``>= threshold``
is zeroed (``A`` from the undropped map). After each drop the map is rescaled by
``numel(mask) / sum(mask)`` with the sum taken over the *whole batch* (a batch-wide, not
per-sample, rescale, as released).

One version of the authors' mask code (two in-place assignments in sequence: set
``>= threshold`` to 0, then ``< threshold`` to 1, which also turns the fresh zeros into ones)
keeps every position, making the module the identity; another version of the same file
marks the dropped positions with a sentinel first and drops them. We implement the rule that
drops, which is what the paper describes.

**On the BiGRU feature** (:func:`eadm_channels`; our reading, not from AimCLR, whose encoder
is an ST-GCN): the BiGRU's (N, 2H) feature has no joint or frame axis, so the same energy is
taken with each sample's 2H channels as the positions, and channels with ``A >= threshold``
are zeroed, with the same batch-wide rescale.

**Guard.** If a mask keeps nothing anywhere in the batch, the released division would give
NaN; here that drop step is skipped and its input is returned unchanged
(:func:`keep_and_rescale`). This needs a threshold below ``sigmoid(0.75) ~ 0.68``: the mean
of ``e`` over a group is at most ``0.5 + (n - 1) / (4 n) < 0.75``,
so, ``sigmoid`` being concave there, the mean of ``A`` stays below ``sigmoid(0.75)`` and
some position keeps; at or below ``sigmoid(0.5)`` everything drops.
"""

from __future__ import annotations

import torch
from torch import Tensor

E_LAMBDA = 1e-4
"""SimAM's regulariser ``lambda`` in the energy (as released)."""


def energy_attention(x: Tensor, dims: tuple[int, ...], e_lambda: float = E_LAMBDA) -> Tensor:
    """SimAM's parameter-free attention ``sigmoid(e)`` of every element of ``x``.

    Args:
        x: any floating tensor; half precision is computed in float32.
        dims: the axes that form one group of positions (the mean and the variance are
            taken over them, separately for every index of the other axes).
        e_lambda: ``lambda`` of the energy.

    Returns:
        ``A`` of ``x``'s shape, in [sigmoid(0.5), 1).
    """
    n = 1
    for dim in dims:
        n *= x.shape[dim]
    if n < 2:
        raise ValueError(f"the energy needs at least 2 positions over dims {dims}, got {n}")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    d = (x - x.mean(dim=dims, keepdim=True)).square()
    variance = d.sum(dim=dims, keepdim=True) / (n - 1)
    return torch.sigmoid(d / (4 * (variance + e_lambda)) + 0.5)


def keep_and_rescale(x: Tensor, keep: Tensor) -> Tensor:
    """``x * keep * numel(keep) / sum(keep)``: zero the dropped positions, rescale the rest.

    Args:
        x: the map.
        keep: a boolean mask broadcastable to ``x``; its own size (not ``x``'s) and its sum
            over the whole batch give the rescale, as released.

    Returns:
        The dropped map; ``x`` itself (unchanged) when ``keep`` is all False, where the
        released division by zero would give NaN.
    """
    mask = keep.to(torch.promote_types(x.dtype, torch.float32))  # count in >= float32
    total = mask.sum()
    scale = mask * (mask.numel() / total.clamp_min(1.0))
    return torch.where(total > 0, x * scale, x).to(x.dtype)


def eadm(x: Tensor, threshold: float, e_lambda: float = E_LAMBDA) -> Tensor:
    """EADM on an ST-GCN feature map: spatial then temporal attention-guided drop.

    Args:
        x: (N·M, C, T', V) map before global pooling.
        threshold: positions with attention ``>= threshold`` drop (0.7 as released).
        e_lambda: ``lambda`` of the energy.

    Returns:
        (N·M, C, T', V), the dropped map (module docstring).
    """
    if x.dim() != 4:
        raise ValueError(f"expected an (N*M, C, T, V) map, got shape {tuple(x.shape)}")
    with torch.no_grad():  # the masks are constants: no gradient flows through them
        attention = energy_attention(x, dims=(2, 3), e_lambda=e_lambda)  # (B, C, T, V)
        keep_joints = attention.mean(dim=(1, 2)) < threshold  # (B, V)
        keep_elements = attention < threshold  # (B, C, T, V)
    x = keep_and_rescale(x, keep_joints[:, None, None, :])
    return keep_and_rescale(x, keep_elements)


def eadm_channels(f: Tensor, threshold: float, e_lambda: float = E_LAMBDA) -> Tensor:
    """EADM on a feature vector (the BiGRU's; our reading): channels are the positions.

    Args:
        f: (N, D) features.
        threshold: channels with attention ``>= threshold`` drop.
        e_lambda: ``lambda`` of the energy.

    Returns:
        (N, D), the dropped features, rescaled batch-wide by ``N·D / kept``.
    """
    if f.dim() != 2:
        raise ValueError(f"expected (N, D) features, got shape {tuple(f.shape)}")
    with torch.no_grad():
        keep = energy_attention(f, dims=(1,), e_lambda=e_lambda) < threshold
    return keep_and_rescale(f, keep)
