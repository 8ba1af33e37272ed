"""Batch-level augmentations that act inside the model step, on torch tensors.

Unlike :mod:`halp.data.augment` (one numpy sample at load time), these see a whole
batch (N, C, T, V, M) and may hold learnable state or mix samples:

- ``JointMask``: HiCLR's strong augmentation, the released default (Zhang et al.,
  AAAI 2023, "random mask"): in every frame a few joints are replaced by one
  learnable token, with one pattern shared by the whole batch.
- ``skele_adain``: HiCLR's SkeleAdaIN style swap, a named option of the strong set that
  only the authors' research code used: every sample takes the mean and standard
  deviation of a partner sample from the batch.

Randomness comes from an explicit ``torch.Generator``, never torch's global state.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

DEFAULT_MASK_RATIO = 0.1  # int(0.1 * V) joints per frame: 2 of NTU's 25, 2 of NW-UCLA's 20


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"expected a batch (N, C, T, V, M), got shape {tuple(x.shape)}")


def joint_mask_pattern(
    frames: int, joints: int, ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """(T, V) boolean mask: ``int(ratio * V)`` distinct joints per frame, True where masked.

    Each frame's joints are a uniform draw without replacement (the ``k`` smallest of V
    uniform scores), independent across frames. Built on the generator's device.
    """
    count = int(ratio * joints)  # the released rounding: int(0.1 * 25) = 2
    scores = torch.rand(frames, joints, generator=generator, device=generator.device)
    chosen = scores.argsort(dim=1)[:, :count]
    pattern = torch.zeros(frames, joints, dtype=torch.bool, device=generator.device)
    return pattern.scatter_(1, chosen, True)


class JointMask(nn.Module):
    """HiCLR's learnable random joint mask (the strong branch's augmentation).

    For a batch (N, C, T, V, M) it draws one (T, V) pattern of ``int(ratio * V)``
    distinct joints per frame (``joint_mask_pattern``), the same for every sample of the
    batch, and replaces the masked joints' values, in all channels and for both persons,
    by one learnable scalar ``token`` (initialised to 0, trained with the encoder, as
    released). The released ratio is 0.1 (2 of 25 joints per frame).

    Args:
        ratio: Fraction of the joints masked in each frame, in [0, 1).
    """

    def __init__(self, ratio: float = DEFAULT_MASK_RATIO) -> None:
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        self.ratio = float(ratio)
        self.token = nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        """The ratio, shown when the module is printed."""
        return f"ratio={self.ratio}"

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch with the masked joints set to ``token`` (a new tensor).

        Args:
            x: (N, C, T, V, M) batch.
            generator: Draws the pattern; the same seed gives the same pattern.
        """
        _check_batch(x)
        if generator is None:
            raise ValueError("JointMask needs a torch.Generator to draw its pattern")
        _, _, frames, joints, _ = x.shape
        pattern = joint_mask_pattern(frames, joints, self.ratio, generator).to(x.device)
        return torch.where(pattern[None, None, :, :, None], self.token.to(x.dtype), x)


def _mean_std(
    x: torch.Tensor, dims: tuple[int, ...], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    # unbiased variance plus eps, as released
    return x.mean(dim=dims, keepdim=True), (x.var(dim=dims, keepdim=True) + eps).sqrt()


def skele_adain(
    x: torch.Tensor,
    generator: torch.Generator,
    mode: Literal["TV", "V"] = "TV",
    eps: float = 1e-5,
) -> torch.Tensor:
    """HiCLR's SkeleAdaIN (research code only): give every sample a partner's statistics.

    Sample ``i``'s partner is sample ``(i + s) % N`` for one offset ``s`` drawn uniformly
    from ``1 .. N - 2`` (the released ``randint(1, N - 1)``, whose upper bound is
    exclusive, so N >= 3). Per (sample, channel, person), ``x`` is standardised with its
    own mean and standard deviation over (T, V) (``mode="TV"``) or over V in each frame
    (``mode="V"``), then rescaled with the partner's; the standard deviation is
    ``sqrt(unbiased variance + eps)``.

    Args:
        x: (N, C, T, V, M) batch.
        generator: Draws the offset.
        mode: ``"TV"`` (statistics over frames and joints) or ``"V"`` (per frame).
        eps: Added to the variances.

    Returns:
        A new (N, C, T, V, M) tensor.
    """
    _check_batch(x)
    if mode not in ("TV", "V"):
        raise ValueError(f"mode must be 'TV' or 'V', got {mode!r}")
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"SkeleAdaIN needs a batch of at least 3 samples, got {n}")
    shift = int(torch.randint(1, n - 1, (1,), generator=generator, device=generator.device))
    partner = x[(torch.arange(n, device=x.device) + shift) % n]
    dims = (2, 3) if mode == "TV" else (3,)
    mean, std = _mean_std(x, dims, eps)
    partner_mean, partner_std = _mean_std(partner, dims, eps)
    return (x - mean) / std * partner_std + partner_mean
