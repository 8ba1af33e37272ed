"""Tests of halp.encoders.stgcn and halp.encoders.eadm: graph, blocks, sizes, reach, EADM."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import torch

from halp.encoders.base import Encoder
from halp.encoders.bigru import BiGRUEncoder
from halp.encoders.eadm import eadm, eadm_channels, energy_attention, keep_and_rescale
from halp.encoders.stgcn import (
    NTU_CENTRE,
    NTU_EDGES,
    GraphConv,
    STGCNEncoder,
    hop_distances,
    spatial_partition,
)

# the released NTU edge list, 1-based, written out by hand
RELEASED_EDGES_1BASED = {
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
    (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
}  # fmt: skip
STRIDES = (1, 1, 1, 1, 2, 1, 1, 2, 1, 1)


def clip(n: int = 2, t: int = 50, m: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, t, 25, m, generator=torch.Generator().manual_seed(seed))


def encoder(seed: int = 0, **kw) -> STGCNEncoder:
    torch.manual_seed(seed)
    return STGCNEncoder(**kw)


def tiny(seed: int = 0) -> STGCNEncoder:
    """The same 10 blocks, strides and graph at widths 4, 4, 4, 4, 8, 8, 8, 16, 16, 8."""
    return encoder(seed, width=4, feature_dim=8, proj_hidden=8, out_dim=4)


def calibrated(enc: STGCNEncoder, x: torch.Tensor) -> STGCNEncoder:
    """``enc`` in eval mode with BN statistics from ``x``.

    With the released init (weights ~ N(0, 0.02)) and fresh BN statistics the eval-mode
    activations shrink by orders of magnitude per block; calibrated statistics keep them
    near unit scale, as after training.
    """
    for m in enc.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batches
    enc.train()
    with torch.no_grad():
        enc.feature_map(x)
    return enc.eval()


def bfs_distances(start: int) -> list[float]:
    """Hop distances from ``start`` on the NTU bones, by breadth-first search."""
    neighbours: dict[int, list[int]] = {v: [] for v in range(25)}
    for a, b in RELEASED_EDGES_1BASED:
        neighbours[a - 1].append(b - 1)
        neighbours[b - 1].append(a - 1)
    dist = [math.inf] * 25
    dist[start] = 0
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for u in neighbours[v]:
            if dist[u] == math.inf:
                dist[u] = dist[v] + 1
                queue.append(u)
    return dist


# --------------------------------------------------------------------------- graph


def test_edges_and_centre_are_the_released_ones() -> None:
    assert {(a + 1, b + 1) for a, b in NTU_EDGES} == RELEASED_EDGES_1BASED
    assert NTU_CENTRE == 20  # joint 21, spine shoulder


def test_hop_distances_match_bfs_and_are_capped() -> None:
    full = hop_distances(25, NTU_EDGES, max_hop=30)
    for v in range(25):
        assert full[v].tolist() == bfs_distances(v)
    capped = hop_distances(25, NTU_EDGES, max_hop=1)
    assert np.array_equal(capped, np.where(full <= 1, full, np.inf))


def test_partition_structure() -> None:
    a = spatial_partition()
    assert a.shape == (3, 25, 25)
    support = a > 0
    # the subsets are disjoint; together they are the bones plus self links, symmetric
    assert support.sum(axis=0).max() == 1
    expected = np.eye(25, dtype=bool)
    for i, j in NTU_EDGES:
        expected[i, j] = expected[j, i] = True
    assert np.array_equal(support.any(axis=0), expected)
    assert np.array_equal(support[0], np.eye(25, dtype=bool))
    # A D^-1 with D the column sums: every joint's incoming weights sum to 1
    np.testing.assert_allclose(a.sum(axis=(0, 1)), np.ones(25))
    # every nonzero entry [j, i] is 1 / deg(i), deg counting the self link
    degree = expected.sum(axis=0)
    np.testing.assert_allclose(
        a.sum(axis=0)[expected], np.broadcast_to(1 / degree, (25, 25))[expected]
    )
    assert [int(s.sum()) for s in support] == [25, 40, 8]


def test_partition_entries_by_hand() -> None:
    a = spatial_partition()
    j = lambda k: k - 1  # noqa: E731  1-based joint numbers as in the NTU documentation
    # left elbow (6): neighbours 5 (shoulder, next to the centre) and 7 (wrist); degree 3
    assert a[0, j(6), j(6)] == pytest.approx(1 / 3)
    assert a[2, j(5), j(6)] == pytest.approx(1 / 3)  # the shoulder is nearer the centre
    assert a[1, j(7), j(6)] == pytest.approx(1 / 3)  # the wrist: "infinitely" far, as the elbow
    assert a[1, j(6), j(7)] == pytest.approx(1 / 3)  # capped distances: both inf, so equal
    # the centre (21) has neighbours 2, 3, 5, 9: degree 5; all of them are farther
    assert a[0, j(21), j(21)] == pytest.approx(1 / 5)
    assert a[1, j(5), j(21)] == pytest.approx(1 / 5)
    assert a[2, j(21), j(5)] == pytest.approx(1 / 3)  # shoulder 5: neighbours 21, 6
    # spine base (1): neighbours 2 (next to the centre), 13, 17; degree 4
    assert a[2, j(2), j(1)] == pytest.approx(1 / 4)
    assert a[1, j(13), j(1)] == pytest.approx(1 / 4)
    further = {(int(r) + 1, int(c) + 1) for r, c in zip(*np.nonzero(a[2]), strict=True)}
    assert further == {(21, 2), (21, 3), (21, 5), (21, 9), (2, 1), (3, 4), (5, 6), (9, 10)}


def test_graph_conv_against_loops() -> None:
    torch.manual_seed(0)
    conv = GraphConv(3, 4, num_subsets=3)
    graph = torch.rand(3, 6, 6)  # not symmetric: a transposed product would differ
    x = torch.randn(2, 3, 5, 6)
    with torch.no_grad():
        out = conv(x, graph)
        y = conv.conv(x).view(2, 3, 4, 5, 6)  # (B, K, C, T, V): subset-major channels
    slow = torch.zeros(2, 4, 5, 6)
    for i in range(6):
        for k in range(3):
            for jj in range(6):
                slow[..., i] += y[:, k, :, :, jj] * graph[k, jj, i]
    torch.testing.assert_close(out, slow, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- encoder


@pytest.mark.parametrize(("t", "t_out"), [(50, 13), (64, 16)])
def test_shapes(t: int, t_out: int) -> None:
    enc = encoder()
    x = clip(n=1, t=t, m=3)
    assert enc.feature_dim == 256
    assert enc.feature_map(x).shape == (3, 256, t_out, 25)
    assert enc(x).shape == (1, 128)
    f, d = enc.features_and_dropped(x, 0.7)
    assert f.shape == d.shape == (1, 256)


def test_parameter_count() -> None:
    enc = encoder()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(enc) == 920_068
    assert count(enc.projection) == 98_688  # 256*256 + 256 + 256*128 + 128
    assert count(enc.edge_importance) == 10 * 3 * 25 * 25
    assert count(enc) - count(enc.projection) == 821_380
    assert count(encoder(edge_importance=False)) == 920_068 - 18_750
    # the graph is code, not state: it is a buffer outside the state dict
    assert "adjacency" not in enc.state_dict()


def test_block_layout() -> None:
    enc = encoder()
    widths = [b.tcn[2].out_channels for b in enc.blocks]
    assert widths == [16, 16, 16, 16, 32, 32, 32, 64, 64, 256]
    assert [b.tcn[2].stride[0] for b in enc.blocks] == list(STRIDES)
    assert [b.tcn[4].p for b in enc.blocks] == [0.0] + [0.5] * 9
    assert enc.blocks[0].residual is None
    assert isinstance(enc.blocks[1].residual, torch.nn.Identity)
    assert isinstance(enc.blocks[4].residual, torch.nn.Sequential)  # width and stride change


def test_released_init() -> None:
    enc = encoder()
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    norms = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)
    assert weights.mean().abs().item() < 1e-3
    assert all(torch.all(m.bias == 0) for m in convs + norms)
    gammas = torch.cat([m.weight for m in norms])
    assert gammas.mean().item() == pytest.approx(1.0, abs=0.01)
    assert 0.01 < gammas.std().item() < 0.03
    assert all(torch.all(p == 1) for p in enc.edge_importance)


def test_rejects_wrong_input() -> None:
    enc = encoder()
    for bad in (
        torch.randn(2, 50, 150),
        torch.randn(2, 3, 50, 24, 2),
        torch.randn(2, 2, 50, 25, 2),
    ):
        with pytest.raises(ValueError, match=r"expected \(N, C=3, T, V=25, M\)"):
            enc.features(bad)
    with pytest.raises(ValueError, match="ntu25 graph has 25 joints"):
        STGCNEncoder(num_joints=20)
    with pytest.raises(ValueError, match="odd"):
        STGCNEncoder(temporal_kernel=8)


def test_data_bn_normalises_channel_joint_major_per_person() -> None:
    """BN channel v*C + c holds coordinate c of joint v, shared by both persons."""
    x = clip(n=2, t=20)
    enc = calibrated(tiny(), x)
    c, v, shift = 1, 7, 0.8
    moved = torch.zeros_like(x)
    moved[:, c, :, v, :] = shift
    plain = enc.feature_map(x - moved)
    assert (plain - enc.feature_map(x)).abs().max() > 0.1  # the shift is visible
    enc.data_bn.running_mean[v * 3 + c] += shift
    torch.testing.assert_close(enc.feature_map(x), plain)


def test_persons_are_averaged_over_both_even_when_one_is_empty() -> None:
    x = clip(n=2, t=20)
    x[1, ..., 1] = 0  # sample 1 has no second person (zero-padded, as the data store it)
    enc = calibrated(tiny(), x)
    fmap = enc.feature_map(x)
    per_person = fmap.mean(dim=(2, 3)).view(2, 2, -1)  # (N, M, C), row n*M + m
    f = enc.features(x)
    torch.testing.assert_close(f, per_person.mean(dim=1))
    # the empty person still contributes (its map is not zero): a mean over the present
    # persons only would give a different feature
    assert (f[1] - per_person[1, 0]).abs().max() > 0.01


# --------------------------------------------------------------------------- receptive field


def input_window(tau: int) -> tuple[int, int]:
    """Input frames that output frame ``tau`` of the last block can see (kernel 9, pad 4)."""
    lo = hi = tau
    for stride in reversed(STRIDES):
        lo, hi = stride * lo - 4, stride * hi + 4
    return lo, hi


def test_temporal_receptive_field() -> None:
    x = clip(n=1, t=200).double()
    enc = calibrated(tiny().double(), x)
    t0 = 100
    y = x.clone()
    y[:, :, t0] += 1.0
    diff = (enc.feature_map(y) - enc.feature_map(x)).abs().amax(dim=(0, 1, 3))  # per frame
    assert len(diff) == 50
    reach = [tau for tau in range(50) if input_window(tau)[0] <= t0 <= input_window(tau)[1]]
    assert reach == list(range(6, 45))  # |4 tau - 100| <= 76: 10 blocks, strides 2 at 5 and 8
    changed = [tau for tau in range(50) if diff[tau] > 1e-9]
    assert changed == reach
    assert diff[[tau for tau in range(50) if tau not in reach]].max() < 1e-12


def test_graph_receptive_field_is_ten_hops() -> None:
    x = clip(n=1, t=20).double()
    enc = calibrated(tiny().double(), x)
    joint = 21  # left hand tip (22): 11 or 12 hops from the right hand and the feet
    y = x.clone()
    y[:, :, :, joint, 0] += 1.0  # only person 0
    diff = (enc.feature_map(y) - enc.feature_map(x)).abs().amax(dim=(1, 2))  # (N*M, V)
    hops = bfs_distances(joint)
    far = [v for v in range(25) if hops[v] > 10]
    assert sorted(v + 1 for v in far) == [15, 16, 19, 20, 24, 25]
    assert diff[0, far].max() < 1e-12
    assert diff[0, [v for v in range(25) if hops[v] <= 10]].min() > 1e-9
    assert diff[1].max() == 0  # persons never mix before pooling


# --------------------------------------------------------------------------- EADM


def slow_attention(x: np.ndarray) -> np.ndarray:
    b, c, t, v = x.shape
    att = np.zeros_like(x)
    for n in range(b):
        for ch in range(c):
            values = x[n, ch]
            mu = sum(values[i, j] for i in range(t) for j in range(v)) / (t * v)
            d = (values - mu) ** 2
            var = d.sum() / (t * v - 1)
            for i in range(t):
                for j in range(v):
                    e = d[i, j] / (4 * (var + 1e-4)) + 0.5
                    att[n, ch, i, j] = 1 / (1 + math.exp(-e))
    return att


def slow_eadm(x: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The released EADM (fixed masks), loop by loop; also returns both keep masks."""
    b, _, _, v = x.shape
    att = slow_attention(x)
    keep_s = np.zeros((b, v))
    for n in range(b):
        for j in range(v):
            keep_s[n, j] = 1.0 if att[n, :, :, j].mean() < thr else 0.0
    x1 = np.zeros_like(x)
    for n in range(b):
        for j in range(v):
            x1[n, :, :, j] = x[n, :, :, j] * keep_s[n, j] * (b * v) / keep_s.sum()
    keep_t = (att < thr).astype(float)  # from the undropped map
    x2 = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        x2[idx] = x1[idx] * keep_t[idx] * keep_t.size / keep_t.sum()
    return x2, keep_s, keep_t


def salient_map(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64)
    x[0, :, :, 2] += 4.0  # joint 2 of sample 0 and joints 1, 4 of sample 1 stand out
    x[1, :, :, 1] -= 5.0
    x[1, :, :, 4] += 3.0
    return x


def test_eadm_against_loops() -> None:
    x = salient_map()
    expected, keep_s, keep_t = slow_eadm(x.numpy(), 0.7)
    # the test can fail: joints and elements drop, unevenly across samples (so a
    # per-sample rescale would differ from the batch-wide one), and some survive
    kept_per_sample = keep_s.sum(axis=1)
    assert 0 < keep_s.sum() < keep_s.size and len(set(kept_per_sample)) > 1
    assert 0 < keep_t.sum() < keep_t.size
    torch.testing.assert_close(
        energy_attention(x, dims=(2, 3)), torch.from_numpy(slow_attention(x.numpy()))
    )
    torch.testing.assert_close(eadm(x, 0.7), torch.from_numpy(expected))


def test_eadm_channels_against_loops() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(4, 10, generator=g, dtype=torch.float64)
    f[0, 3] += 6.0
    thr = 0.7
    keep = np.zeros(f.shape)
    for n in range(4):
        row = f[n].tolist()
        mu = sum(row) / 10
        d = [(r - mu) ** 2 for r in row]
        var = sum(d) / 9
        for ch in range(10):
            keep[n, ch] = (
                1.0 if 1 / (1 + math.exp(-(d[ch] / (4 * (var + 1e-4)) + 0.5))) < thr else 0.0
            )
    assert 0 < keep.sum() < keep.size and len(set(keep.sum(axis=1))) > 1
    expected = f.numpy() * keep * keep.size / keep.sum()
    torch.testing.assert_close(eadm_channels(f, thr), torch.from_numpy(expected))


def test_energy_of_a_two_valued_map() -> None:
    """Half the positions at +1, half at -1: d = 1 everywhere, sum d / (n - 1) = n / (n - 1)."""
    n = 4 * 6
    x = torch.ones(2, 3, 4, 6, dtype=torch.float64)
    x.view(2, 3, n)[..., ::2] = -1.0
    e = 1 / (4 * (n / (n - 1) + 1e-4)) + 0.5  # just below 0.75: the bound of the guard
    expected = torch.full_like(x, 1 / (1 + math.exp(-e)))
    torch.testing.assert_close(energy_attention(x, dims=(2, 3)), expected)
    assert torch.equal(eadm(x, expected[0, 0, 0, 0].item() + 1e-6), x)  # all kept
    assert torch.equal(eadm(x, expected[0, 0, 0, 0].item() - 1e-6), x)  # all dropped: guard


def test_eadm_drops_nothing_above_one_and_guards_an_empty_mask() -> None:
    x = salient_map()
    assert torch.equal(eadm(x, 1.5), x)
    assert torch.equal(eadm_channels(x[:, :, 0, 0], 1.5), x[:, :, 0, 0])
    # A >= sigmoid(0.5) ~ 0.62 everywhere: a threshold of 0.6 drops every position;
    # the map is then left unchanged rather than divided by zero
    assert torch.equal(eadm(x, 0.6), x)
    assert torch.equal(eadm_channels(x[:, :, 0, 0], 0.6), x[:, :, 0, 0])
    none = torch.zeros(3, 1, 1, 6, dtype=torch.bool)
    assert torch.equal(keep_and_rescale(x, none), x)


def test_eadm_keeps_dtype_and_passes_gradients() -> None:
    x = salient_map().float().requires_grad_()
    out = eadm(x, 0.7)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad == 0).any() and (x.grad != 0).any()  # dropped elements get no gradient
    assert eadm(salient_map().bfloat16(), 0.7).dtype == torch.bfloat16


# --------------------------------------------------------------------------- one pass, two features


def test_features_and_dropped_eval_and_train() -> None:
    x = clip(n=2, t=30)
    enc = calibrated(tiny(), x)
    f, d = enc.features_and_dropped(x, 0.7)
    assert torch.equal(f, enc.features(x))
    n = x.shape[0]
    torch.testing.assert_close(d, enc.pool(eadm(enc.feature_map(x), 0.7), n))
    assert not torch.allclose(f, d)
    f_all, d_none = enc.features_and_dropped(x, 1.5)
    assert torch.equal(f_all, d_none)
    enc.train()  # dropout draws: the same RNG state gives the same feature
    torch.manual_seed(3)
    f_train = enc.features(x)
    torch.manual_seed(3)
    f_pair, d_pair = enc.features_and_dropped(x, 0.7)
    assert torch.equal(f_pair, f_train)
    assert not torch.allclose(f_train, f)  # train mode really differs (dropout, batch BN)
    d_pair.sum().backward()
    assert enc.blocks[0].gcn.conv.weight.grad is not None


def test_bigru_features_and_dropped() -> None:
    torch.manual_seed(0)
    enc = BiGRUEncoder(hidden_size=8, num_layers=1, proj_hidden=8, out_dim=4).eval()
    x = clip(n=3, t=6)
    f, d = enc.features_and_dropped(x, 0.7)
    assert torch.equal(f, enc.features(x))
    torch.testing.assert_close(d, eadm_channels(f, 0.7))
    assert not torch.allclose(f, d)
    f_all, d_none = enc.features_and_dropped(x, 1.5)
    assert torch.equal(f_all, d_none)


def test_base_encoder_has_no_drop() -> None:
    class Plain(Encoder):
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(NotImplementedError, match="Plain has no attention-guided drop"):
        Plain().features_and_dropped(torch.zeros(1, 2), 0.7)
