"""Tests of halp.encoders.bigru: shapes, both recurrences against references, init, size."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from halp.encoders.bigru import BiGRUEncoder, to_gru_input

F, H, P, OUT = 150, 16, 24, 8  # tiny sizes; F = 25 joints x 3 coordinates x 2 persons


def tiny(reference_forward: bool = False, **kw) -> BiGRUEncoder:
    sizes = dict(input_size=F, hidden_size=H, proj_hidden=P, out_dim=OUT)
    return BiGRUEncoder(**(sizes | kw), reference_forward=reference_forward)


def clip(n: int = 4, t: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, t, 25, 2, generator=torch.Generator().manual_seed(seed))


def standard_bigru(encoder: BiGRUEncoder) -> nn.GRU:
    """A plain ``nn.GRU(bidirectional=True)`` holding copies of the encoder's weights."""
    gru = nn.GRU(F, H, num_layers=encoder.num_layers, bidirectional=True, batch_first=True)
    gru.load_state_dict(encoder.gru.state_dict())
    return gru


def normalised(encoder: BiGRUEncoder, x: torch.Tensor) -> torch.Tensor:
    """The encoder's BatchNorm (eval mode) applied to the flattened clip: (N, T, F)."""
    seq = to_gru_input(x)
    return encoder.input_norm(seq.transpose(1, 2)).transpose(1, 2)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("reference_forward", [False, True])
def test_shapes_for_clip_and_flat_input(reference_forward: bool) -> None:
    enc = tiny(reference_forward)
    x = clip(n=3, t=5)
    assert enc.feature_dim == 2 * H
    assert enc.features(x).shape == (3, 2 * H)
    assert enc(x).shape == (3, OUT)
    flat = to_gru_input(x)
    assert flat.shape == (3, 5, F)
    torch.testing.assert_close(enc.features(flat), enc.features(x))


def test_rejects_wrong_input_shape() -> None:
    enc = tiny()
    with pytest.raises(ValueError, match="expected"):
        enc.features(torch.randn(2, 5, F + 1))
    with pytest.raises(ValueError, match="expected"):
        enc.features(torch.randn(2, F))


def test_projection_is_not_normalised() -> None:
    z = tiny()(clip())
    assert not torch.allclose(z.norm(dim=1), torch.ones(len(z)))


# --------------------------------------------------------------------------- recurrences


def test_reference_forward_equals_frame_by_frame_stepping() -> None:
    """The authors' EncoderRNN: seq-len-1 calls of a BiGRU, carrying h_n between them."""
    torch.manual_seed(0)
    enc = tiny(reference_forward=True).eval()
    x = clip(n=4, t=9)
    gru = standard_bigru(enc)
    with torch.no_grad():
        seq = normalised(enc, x)
        hidden = None
        outputs = []
        for t in range(seq.shape[1]):
            out, hidden = gru(seq[:, t : t + 1], hidden)
            outputs.append(out)
        expected = torch.cat(outputs, dim=1)[:, -1]  # (N, 2H), the top layer at the last frame
        got = enc.features(x)
    assert got.shape == expected.shape == (4, 2 * H)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_default_is_a_true_bigru_and_differs_from_reference() -> None:
    torch.manual_seed(0)
    enc = tiny().eval()
    x = clip(n=4, t=9)
    with torch.no_grad():
        full, h_n = standard_bigru(enc)(normalised(enc, x))
        got = enc.features(x)
        enc.reference_forward = True
        reference = enc.features(x)
    # the final state of each direction: forward at the last frame, backward at the first
    torch.testing.assert_close(
        got, torch.cat([full[:, -1, :H], full[:, 0, H:]], 1), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(got, torch.cat([h_n[-2], h_n[-1]], 1), atol=1e-5, rtol=0)
    # the forward directions share weights and layer-1 inputs, but from layer 2 on their
    # inputs differ, so with 3 layers both halves of the feature differ
    assert (got[:, :H] - reference[:, :H]).abs().max() > 1e-3
    assert (got[:, H:] - reference[:, H:]).abs().max() > 1e-3


def test_single_layer_forward_halves_agree() -> None:
    """With one layer both modes share the forward direction; only the other half differs."""
    torch.manual_seed(0)
    enc = tiny(num_layers=1).eval()
    x = clip(t=6)
    with torch.no_grad():
        default = enc.features(x)
        enc.reference_forward = True
        reference = enc.features(x)
    torch.testing.assert_close(default[:, :H], reference[:, :H])
    assert (default[:, H:] - reference[:, H:]).abs().max() > 1e-3


@pytest.mark.parametrize("reference_forward", [False, True])
def test_gradient_reaches_every_parameter(reference_forward: bool) -> None:
    enc = tiny(reference_forward)
    enc(clip()).square().sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- parameters


def test_xavier_init_where_the_reference_applies_it() -> None:
    torch.manual_seed(0)
    enc = BiGRUEncoder(input_size=8, hidden_size=64, num_layers=3, proj_hidden=64, out_dim=16)

    def uniform_std(bound: float) -> float:
        return bound / math.sqrt(3)

    def xavier_std(w: torch.Tensor) -> float:
        fan_out, fan_in = w.shape
        return uniform_std(math.sqrt(6 / (fan_in + fan_out)))

    for name, p in enc.gru.named_parameters():
        if name.startswith("weight"):
            assert p.std().item() == pytest.approx(xavier_std(p), rel=0.05), name
            assert p.abs().max() <= math.sqrt(3) * xavier_std(p) + 1e-6, name
        else:  # biases keep nn.GRU's default U(-1/sqrt(H), 1/sqrt(H))
            assert p.std().item() == pytest.approx(uniform_std(1 / math.sqrt(64)), rel=0.15)
    first, last = enc.projection[0].weight, enc.projection[-1].weight
    assert last.std().item() == pytest.approx(xavier_std(last), rel=0.08)
    # the first Linear keeps PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    default_std = uniform_std(1 / math.sqrt(first.shape[1]))
    assert first.std().item() == pytest.approx(default_std, rel=0.05)
    assert abs(xavier_std(first) - default_std) / default_std > 0.5  # the two are far apart


def test_same_seed_same_init_and_one_layout_for_both_modes() -> None:
    torch.manual_seed(3)
    a = tiny(reference_forward=False).state_dict()
    torch.manual_seed(3)
    b = tiny(reference_forward=True).state_dict()
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert all(k.split(".")[0] in {"input_norm", "gru", "projection"} for k in a)


def test_checkpoint_evaluates_both_ways() -> None:
    trained = tiny()
    other = tiny(reference_forward=True)
    other.load_state_dict(trained.state_dict())  # strict
    trained.eval()
    other.eval()
    x = clip()
    with torch.no_grad():
        trained.reference_forward = True
        torch.testing.assert_close(other.features(x), trained.features(x))


def test_deepcopy_is_independent_after_use() -> None:
    """A MoCo key encoder is a deepcopy; the reference templates must not tie it to the query."""
    enc = tiny(reference_forward=True).eval()
    x = clip()
    with torch.no_grad():
        before = enc.features(x)
        key = copy.deepcopy(enc)
        for p in enc.parameters():
            p.add_(1.0)
        torch.testing.assert_close(key.features(x), before)
        assert (enc.features(x) - before).abs().max() > 1e-3
    assert not any(p.is_meta for p in key.parameters())


def test_parameter_count_at_full_size() -> None:
    with torch.device("meta"):
        enc = BiGRUEncoder()
    f, h, layers, p, out = 150, 1024, 3, 2048, 128

    def gru_direction(inputs: int) -> int:  # 3 gates: W_ih, W_hh, b_ih, b_hh
        return 3 * h * inputs + 3 * h * h + 2 * 3 * h

    gru = 2 * (gru_direction(f) + (layers - 1) * gru_direction(2 * h))
    head = (2 * h * p + p) + (p * out + out)
    batchnorm = 2 * f
    expected = gru + head + batchnorm
    assert expected == 49_457_580  # "~49.5 M" parameters at full size (paper Sec. 4.2)
    assert sum(q.numel() for q in enc.parameters()) == expected
    assert enc.feature_dim == 2048
