"""PosHal and the HaLP loss, checked against analytic values and slow references written here."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from halp.objectives.poshal import (
    FIXED_DELTA,
    REFERENCE_NEAREST,
    Hallucination,
    closest_prototype,
    hallucinate,
    halp_loss,
    rank_filter,
    sample_tc,
    select_other_prototypes,
    slerp,
    slerp_towards,
    t_star,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ---------------------------------------------------------------- slow references


def great_circle(k: torch.Tensor, ps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, Ω): s(t) = cos(tΩ) k + sin(tΩ) u is the geodesic from k (t=0) to ps (t=1)."""
    cos = (k * ps).sum(-1).clamp(-1, 1)
    u = F.normalize(ps - cos.unsqueeze(-1) * k, dim=-1)
    return u, torch.arccos(cos)


def random_cases(seed: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n triples (k, p*, P_sel) in float64, p* being the more similar of two random unit vectors."""
    g = gen(seed)
    k, a, b = unit(g, n, d), unit(g, n, d), unit(g, n, d)
    a_closer = ((k * a).sum(-1) >= (k * b).sum(-1)).unsqueeze(-1)
    return k, torch.where(a_closer, a, b), torch.where(a_closer, b, a)


def negative_kappa_cases(seed: int, n: int, d: int) -> tuple[torch.Tensor, ...]:
    """Triples with κ + cos Ω < 0: P_sel more than 100° from k, p* moderately close to k."""
    g = gen(seed)
    basis = torch.linalg.qr(torch.randn(n, d, 3, generator=g, dtype=torch.float64)).Q  # (n,d,3)
    e0, e1, e2 = basis.unbind(-1)
    alpha = torch.empty(n, 1, dtype=torch.float64).uniform_(1.75, 3.0, generator=g)  # ∠(k, P_sel)
    beta = torch.empty(n, 1, dtype=torch.float64).uniform_(0.7, 1.55, generator=g)  # ∠(k, p*)
    gamma = torch.empty(n, 1, dtype=torch.float64).uniform_(-1.5, 1.5, generator=g)
    k = e0
    ps = torch.cos(alpha) * e0 + torch.sin(alpha) * e1
    p0 = torch.cos(beta) * e0 + torch.sin(beta) * (torch.cos(gamma) * e1 + torch.sin(gamma) * e2)
    kappa = (1 - (ps * p0).sum(-1)) / (k * (p0 - ps)).sum(-1)
    keep = kappa + torch.cos(alpha.squeeze(-1)) < -0.02
    assert keep.sum() >= n // 10
    return k[keep], p0[keep], ps[keep]


def sim_gap(k: torch.Tensor, p0: torch.Tensor, ps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """s(t)·p* - s(t)·P_sel on the great circle k -> P_sel, for a grid t of shape (n, T)."""
    u, omega = great_circle(k, ps)
    diff = p0 - ps
    ang = t * omega.unsqueeze(-1)  # (n, T)
    return torch.cos(ang) * (k * diff).sum(-1, keepdim=True) + torch.sin(ang) * (
        (u * diff).sum(-1, keepdim=True)
    )


# ---------------------------------------------------------------- t* (Eq. 7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("d", [2, 3, 16, 128])
def test_t_star_makes_both_prototypes_equally_similar(d: int, dtype: torch.dtype) -> None:
    cases = [random_cases(d, 500, d)]
    if d >= 3:
        cases.append(negative_kappa_cases(d, 500, d))
    for k, p0, ps in (tuple(x.to(dtype) for x in case) for case in cases):
        ts = t_star(k, p0, ps.unsqueeze(1)).squeeze(1)  # (n,)
        assert ((ts >= 0) & (ts <= 1)).all()
        h = slerp(k, ps, ts)  # our slerp
        torch.testing.assert_close((h * p0).sum(-1), (h * ps).sum(-1), atol=1e-5, rtol=0)
        u, omega = great_circle(k.double(), ps.double())  # the slow, independent one
        s = (
            torch.cos(ts.double() * omega).unsqueeze(-1) * k.double()
            + torch.sin(ts.double() * omega).unsqueeze(-1) * u
        )
        torch.testing.assert_close(
            (s * p0.double()).sum(-1), (s * ps.double()).sum(-1), atol=1e-5, rtol=0
        )


def test_negative_kappa_paper_is_right_reference_is_negative() -> None:
    k, p0, ps = negative_kappa_cases(0, 2000, 32)
    paper = t_star(k, p0, ps.unsqueeze(1)).squeeze(1)
    reference = t_star(k, p0, ps.unsqueeze(1), mode="reference").squeeze(1)
    assert len(paper) > 100
    assert (reference < 0).all()  # the authors' plain atan
    assert (paper > 0.5).all()  # θ0 > π/2 and Ω < π give t* > 1/2
    h = slerp(k, ps, paper)
    torch.testing.assert_close((h * p0).sum(-1), (h * ps).sum(-1), atol=1e-9, rtol=0)


def test_reference_mode_equals_paper_mode_where_both_are_defined() -> None:
    k, p0, ps = random_cases(1, 2000, 16)
    paper = t_star(k, p0, ps.unsqueeze(1)).squeeze(1)
    reference = t_star(k, p0, ps.unsqueeze(1), mode="reference").squeeze(1)
    a = (k * (p0 - ps)).sum(-1)
    kappa = (1 - (ps * p0).sum(-1)) / a
    fine = (a > 1e-3) & (kappa + (k * ps).sum(-1) > 0.05)
    assert fine.float().mean() > 0.9
    torch.testing.assert_close(reference[fine], paper[fine], atol=1e-6, rtol=0)


@pytest.mark.parametrize("d", [3, 16, 128])
def test_t_star_is_the_largest_admissible_t_by_grid_search(d: int) -> None:
    cases = zip(random_cases(d, 150, d), negative_kappa_cases(d, 300, d), strict=True)
    k, p0, ps = (torch.cat(x) for x in cases)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64).expand(len(k), -1)  # (n, T)
    admissible = sim_gap(k, p0, ps, grid) >= 0  # sim to p* >= sim to P_sel
    largest = torch.where(admissible, grid, torch.full_like(grid, -1.0)).amax(dim=1)
    ts = t_star(k, p0, ps.unsqueeze(1)).squeeze(1)
    assert (largest - ts).abs().max() <= 1 / 20000 + 1e-9


@pytest.mark.parametrize(
    ("theta_k", "theta_p0", "theta_ps", "expected"),
    [(0, -20, 100, 0.4), (0, 84, 150, 0.78), (0, 30, -120, 0.375), (10, 0, 70, 5 / 12)],
)
def test_t_star_on_the_circle_is_the_angle_bisector(
    theta_k: float, theta_p0: float, theta_ps: float, expected: float
) -> None:
    # D = 2: the slerp k -> P_sel hits the bisector of p* and P_sel at angle (θ* + θsel)/2,
    # so t* = ((θ* + θsel)/2 - θk) / (θsel - θk).
    assert ((theta_p0 + theta_ps) / 2 - theta_k) / (theta_ps - theta_k) == pytest.approx(expected)

    def on_circle(deg: float, dtype: torch.dtype) -> torch.Tensor:
        rad = math.radians(deg)
        return torch.tensor([[math.cos(rad), math.sin(rad)]], dtype=dtype)

    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        k, p0 = on_circle(theta_k, dtype), on_circle(theta_p0, dtype)
        ps = on_circle(theta_ps, dtype).unsqueeze(1)
        assert t_star(k, p0, ps).item() == pytest.approx(expected, abs=tol)
    reference = t_star(k.double(), p0.double(), ps.double(), mode="reference").item()
    if theta_ps == 150:  # κ + cos Ω < 0: the authors' code goes the wrong way
        assert reference == pytest.approx(-0.42, abs=1e-6)
    else:
        assert reference == pytest.approx(expected, abs=1e-6)


def test_t_star_edge_cases() -> None:
    e = torch.eye(4, dtype=torch.float64)
    with torch.no_grad():
        # duplicate prototypes (κ = 0/0): t* = 1
        k = F.normalize(e[0] + 0.5 * e[1], dim=0)[None]
        assert t_star(k, e[:1], e[None, :1]).item() == 1.0
        # k equidistant from p* and P_sel: t* = 0
        k = F.normalize(e[0] + e[1] + e[2], dim=0)[None]
        assert t_star(k, e[:1], e[None, 1:2]).item() == 0.0
        # Ω -> 0: k == P_sel (so p* is not really closer), and k == p* == P_sel
        assert t_star(e[:1], e[1:2], e[None, :1]).item() == 0.0
        assert t_star(e[:1], e[:1], e[None, :1]).item() == 0.0
        # Ω -> π: P_sel == -k
        assert t_star(e[:1], e[1:2], -e[None, :1]).item() == 0.0
        for mode in ("paper", "reference"):
            for k, p0, ps in [
                (e[:1], e[:1], e[None, :1]),
                (e[:1], e[1:2], -e[None, :1]),
                (F.normalize(e[0] + e[1], dim=0)[None], e[:1], e[None, 1:2]),
            ]:
                for dtype in (torch.float32, torch.float64):
                    out = t_star(k.to(dtype), p0.to(dtype), ps.to(dtype), mode=mode)  # type: ignore[arg-type]
                    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown t\\* mode"):
        t_star(e[:1], e[:1], e[None, 1:2], mode="atan")  # type: ignore[arg-type]


# ---------------------------------------------------------------- selection, t_c, slerp


def test_closest_and_selected_prototypes() -> None:
    g = gen(0)
    anchor, protos = unit(g, 300, 8), unit(g, 5, 8)
    closest = closest_prototype(anchor, protos)
    brute = [max(range(5), key=lambda j, a=a: float(a @ protos[j])) for a in anchor]
    assert closest.tolist() == brute
    sel = select_other_prototypes(closest, 5, 200, gen(1))  # (300, 200)
    assert sel.shape == (300, 200) and sel.dtype == torch.long
    assert (sel != closest[:, None]).all() and sel.min() >= 0 and sel.max() <= 4
    for c in range(5):  # uniform over the four others
        rows = sel[closest == c]
        freq = torch.bincount(rows.flatten(), minlength=5).double() / rows.numel()
        expected = torch.full((5,), 0.25, dtype=torch.float64)
        expected[c] = 0.0
        torch.testing.assert_close(freq, expected, atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="at least 2 prototypes"):
        select_other_prototypes(closest, 1, 3, gen(1))


def test_reference_tc_is_uniform_between_1_minus_lambda_and_1() -> None:
    lam = 0.6
    ts = torch.rand(500, 200, generator=gen(0), dtype=torch.float64) + 0.1
    ratio = (sample_tc(ts, lam, gen(1), mode="reference") / ts).flatten()
    assert ratio.min() >= 1 - lam and ratio.max() <= 1
    qs = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    torch.testing.assert_close(torch.quantile(ratio, qs), 1 - lam + lam * qs, atol=0.005, rtol=0)


def test_fixed_tc_is_just_inside_t_star_and_bad_arguments() -> None:
    """The "t_c = t* only" ablation stays FIXED_DELTA inside p*'s cell (issue: at t* exactly
    the rank filter decides a tie by rounding), never below 0."""
    ts = torch.tensor([[0.0, 0.005, 0.01, 0.5, 1.0]])
    fixed = sample_tc(ts, 0.8, gen(1), mode="fixed")
    torch.testing.assert_close(fixed, torch.tensor([[0.0, 0.0, 0.0, 0.49, 0.99]]))
    assert FIXED_DELTA == 0.01
    with pytest.raises(ValueError, match="lambda"):
        sample_tc(ts, 1.5, gen(1))
    with pytest.raises(ValueError, match="unknown t_c sampling"):
        sample_tc(ts, 0.5, gen(1), mode="uniform")  # type: ignore[arg-type]


def test_lambda_controls_hardness_monotonically() -> None:
    g = gen(0)
    anchor, protos = unit(g, 64, 32, dtype=torch.float32), unit(g, 20, 32, dtype=torch.float32)
    ratios, sims = [], []
    for lam in (0.2, 0.4, 0.6, 0.8, 1.0):
        out = hallucinate(anchor, protos, 100, lam, gen(1))  # same draws for every λ
        positive = out.t_star > 0
        ratio = (out.t_c[positive] / out.t_star[positive]).mean().item()
        assert ratio == pytest.approx(lam / 2, abs=0.01)
        ratios.append(ratio)
        sims.append(torch.einsum("bd,bnd->bn", anchor, out.h).mean().item())
    assert all(a > b for a, b in itertools.pairwise(sims))  # further from k as λ grows


def test_slerp_endpoints_angles_and_degenerate_pairs() -> None:
    g = gen(0)
    a, b = unit(g, 100, 16), unit(g, 100, 16)
    torch.testing.assert_close(slerp(a, b, torch.zeros(100, dtype=torch.float64)), a)
    torch.testing.assert_close(slerp(a, b, torch.ones(100, dtype=torch.float64)), b)
    t = torch.rand(100, generator=g, dtype=torch.float64)
    s = slerp(a, b, t)
    u, omega = great_circle(a, b)
    reference = torch.cos(t * omega)[:, None] * a + torch.sin(t * omega)[:, None] * u
    torch.testing.assert_close(s, reference)
    # identical, antipodal (including the midpoint, where lerp vanishes) and nearly equal
    e = torch.eye(3)
    for x, y in [(e[0], e[0]), (e[0], -e[0]), (e[0], F.normalize(e[0] + 1e-5 * e[1], dim=0))]:
        for tt in (0.0, 0.3, 0.5, 1.0):
            out = slerp(x, y, torch.tensor(tt))
            assert torch.isfinite(out).all() and out.norm().item() == pytest.approx(1.0)
    assert torch.equal(slerp(e[0], -e[0], torch.tensor(0.5)), e[0])


def test_slerp_towards_query() -> None:
    g = gen(0)
    k = unit(g, 8, 16, dtype=torch.float32)
    q = unit(g, 8, 16, dtype=torch.float32).requires_grad_()
    h = slerp_towards(k, q, 50, 0.5, gen(1))
    assert h.shape == (8, 50, 16) and not h.requires_grad
    omega = torch.arccos((k * q.detach()).sum(-1))  # (8,)
    ang = torch.arccos(torch.einsum("bd,bnd->bn", k, h).clamp(-1, 1))
    assert (ang <= 0.5 * omega[:, None] + 1e-3).all()
    # on the great circle through k and q: no component outside their plane
    u, _ = great_circle(k, q.detach())
    inplane = (
        torch.einsum("bd,bnd->bn", k, h)[..., None] * k[:, None]
        + torch.einsum("bd,bnd->bn", u, h)[..., None] * u[:, None]
    )
    torch.testing.assert_close(inplane, h, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- rank filter and loss


def test_rank_filter_keeps_exactly_the_positives_still_closest_to_p_star() -> None:
    g = gen(0)
    anchor, protos = unit(g, 64, 16), unit(g, 20, 16)
    out = hallucinate(anchor, protos, 20, 1.0, gen(1))  # λ = 1: the hardest positives
    h = out.h.reshape(-1, 16)
    brute = torch.tensor(
        [max(range(20), key=lambda j, v=v: float(v @ protos[j])) for v in h]
    ).reshape(64, 20)
    assert torch.equal(out.keep, brute == out.closest[:, None])
    assert torch.equal(rank_filter(out.h, protos, out.closest), out.keep)
    assert 0 < out.keep.sum() < out.keep.numel()  # the filter does remove some here


def test_h_carries_no_gradient_q_does() -> None:
    g = gen(0)
    anchor = unit(g, 8, 16, dtype=torch.float32).requires_grad_()
    protos = unit(g, 5, 16, dtype=torch.float32)
    out = hallucinate(anchor, protos, 10, 0.8, gen(1))
    assert isinstance(out, Hallucination)
    assert not out.h.requires_grad
    q = unit(g, 8, 16, dtype=torch.float32).requires_grad_()
    h = out.h.clone().requires_grad_()  # even a grad-requiring h gets none from the loss
    loss = halp_loss(q, h, out.keep, tau=0.07)
    loss.backward()
    assert h.grad is None and anchor.grad is None
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_loss_matches_hand_computation() -> None:
    g = gen(0)
    q, h = unit(g, 3, 4), unit(g, 3, 5, 4)
    keep = torch.rand(3, 5, generator=g) > 0.4
    total, count = 0.0, 0
    for b in range(3):
        for m in range(5):
            if keep[b, m]:
                total += float(q[b] @ h[b, m]) / 0.07
                count += 1
    assert 0 < count < 15
    assert halp_loss(q, h, keep, tau=0.07).item() == pytest.approx(-total / count, rel=1e-12)


def test_loss_is_zero_with_finite_gradient_when_nothing_survives() -> None:
    g = gen(0)
    q = unit(g, 4, 8).requires_grad_()
    loss = halp_loss(q, unit(g, 4, 6, 8), torch.zeros(4, 6, dtype=torch.bool), tau=0.07)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert q.grad is not None and torch.equal(q.grad, torch.zeros_like(q))


def _assert_finite(out: Hallucination) -> None:
    for name in ("h", "t_star", "t_c"):
        assert torch.isfinite(getattr(out, name)).all(), name
    torch.testing.assert_close(out.h.norm(dim=-1), torch.ones(out.h.shape[:-1]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("t_star_mode", ["paper", "reference"])
@pytest.mark.parametrize(
    "case",
    ["duplicates", "all_equal", "equidistant", "on_prototype", "antipodal", "identical_anchors"],
)
def test_hallucinate_edge_cases_stay_finite(case: str, t_star_mode: str) -> None:
    g = gen(0)
    protos = unit(g, 6, 8, dtype=torch.float32)
    anchor = unit(g, 16, 8, dtype=torch.float32)
    if case == "duplicates":
        protos[1] = protos[0]
        anchor = F.normalize(protos[0] + 0.05 * anchor, dim=-1)
    elif case == "all_equal":
        protos = protos[:1].expand(6, -1).clone()
    elif case == "equidistant":
        protos = torch.eye(8)[:6]
        anchor = F.normalize(torch.eye(8)[0] + torch.eye(8)[1], dim=0).expand(16, -1).clone()
    elif case == "on_prototype":
        anchor = protos[torch.arange(16) % 6].clone()
    elif case == "antipodal":
        anchor = -protos[torch.arange(16) % 6]  # Ω = π to one prototype
    elif case == "identical_anchors":
        anchor = anchor[:1].expand(16, -1).clone()
    with torch.no_grad():
        out = hallucinate(anchor, protos, 30, 0.8, gen(1), t_star_mode=t_star_mode)  # type: ignore[arg-type]
    _assert_finite(out)
    loss = halp_loss(anchor, out.h, out.keep, tau=0.07)
    assert torch.isfinite(loss)
    if t_star_mode == "reference":
        return
    if case == "duplicates":  # P_sel == p* (index 1 when p* is 0): t* = 1, positive kept
        dup = (out.closest[:, None] == 0) & (out.selected == 1)
        assert dup.any() and (out.t_star[dup] == 1.0).all() and out.keep[dup].all()
    if case == "all_equal":
        assert (out.t_star == 1.0).all() and out.keep.all()
    if case == "on_prototype":  # k == p*: every slerp leaves p* closest
        assert out.keep.all()


def test_hallucinate_is_deterministic_and_shaped() -> None:
    g = gen(0)
    anchor, protos = unit(g, 16, 32, dtype=torch.float32), unit(g, 20, 32, dtype=torch.float32)
    a = hallucinate(anchor, protos, 100, 0.8, gen(5))
    b = hallucinate(anchor, protos, 100, 0.8, gen(5))
    for name in ("h", "keep", "t_star", "t_c", "closest", "selected"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.h.shape == (16, 100, 32) and a.keep.shape == a.t_star.shape == (16, 100)
    assert a.closest.shape == (16,) and a.selected.shape == (16, 100)
    assert ((a.t_c >= 0) & (a.t_c <= 0.8 * a.t_star)).all()  # paper: t_c ~ U(0, λ t*)
    # the per-prototype shortcut inside equals the direct per-positive composition
    p_sel = protos[a.selected]
    assert torch.equal(a.closest, closest_prototype(anchor, protos))
    torch.testing.assert_close(a.t_star, t_star(anchor, protos[a.closest], p_sel))
    torch.testing.assert_close(a.h, slerp(anchor.unsqueeze(1), p_sel, a.t_c))
    assert torch.equal(a.keep, rank_filter(a.h, protos, a.closest))


def clustered(seed: int, anchors: int = 256, prototypes: int = 20, d: int = 128):
    """Anchors clustered around prototypes, as after training (a k-means of the anchors)."""
    g = gen(seed)
    centres = unit(g, prototypes, d, dtype=torch.float32)
    owner = torch.randint(prototypes, (anchors,), generator=g)
    noise = 0.35 * torch.randn(anchors, d, generator=g) / math.sqrt(d)
    return F.normalize(centres[owner] + noise, dim=-1), centres


@pytest.mark.parametrize("mode", ["paper", "reference", "fixed"])
def test_every_tc_mode_keeps_its_positives_through_the_rank_filter(mode: str) -> None:
    """Through the whole of PosHal (t*, t_c, slerp, filter): every mode keeps nearly all
    positives on clustered data. At t_c = t* exactly about half were lost to rounding."""
    anchors, centres = clustered(0)
    out = hallucinate(anchors, centres, 100, 0.8, gen(1), tc_sampling=mode)  # type: ignore[arg-type]
    keep = out.keep.float().mean().item()
    assert keep >= 0.95, (mode, keep)
    at_t_star = rank_filter(
        slerp(anchors[:, None], centres[out.selected], out.t_star), centres, out.closest
    )
    assert at_t_star.float().mean().item() < 0.8  # the tie that FIXED_DELTA avoids


def test_reference_psel_draws_among_the_nearest_after_p_star() -> None:
    """psel="reference": P_sel among the 20 prototypes nearest the anchor after p* (the
    authors' code); "paper": among all N - 1. Identical sets for N <= 21."""
    g = gen(3)
    anchors, protos = unit(g, 64, 16), unit(g, 40, 16)
    sim = anchors @ protos.T
    closest = sim.argmax(dim=1)
    ref = select_other_prototypes(closest, 40, 300, gen(4), sim, REFERENCE_NEAREST)
    rank = sim.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = p*
    ranks = rank.gather(1, ref)
    assert ranks.min() == 1 and ranks.max() == REFERENCE_NEAREST  # ranks 2..21, p* never
    assert len(torch.unique(ranks)) == REFERENCE_NEAREST  # all 20 candidates drawn
    paper = select_other_prototypes(closest, 40, 300, gen(4))
    assert rank.gather(1, paper).max() > REFERENCE_NEAREST  # the paper reaches further
    small_sim = sim[:, :21]
    c21 = small_sim.argmax(dim=1)
    few = select_other_prototypes(c21, 21, 500, gen(5), small_sim, REFERENCE_NEAREST)
    assert set(few.unique().tolist()) == set(range(21)) and (few != c21[:, None]).all()
    out = hallucinate(anchors, protos, 50, 0.8, gen(6), psel="reference")
    assert rank.gather(1, out.selected).max() <= REFERENCE_NEAREST
