"""Positive hallucination (PosHal) and the HaLP loss (paper Sec. 3.2-3.6, Eq. 3-8).

For every anchor key k (the KEY of MoCo, never the query) and each of its Ng positives:

1. p* is the prototype closest to k; P_sel is drawn uniformly from the other P - 1;
2. t* (Eq. 7) is how far the slerp from k towards P_sel can go before P_sel becomes
   more similar than p*;
3. t_c ~ U(0, λ t*) sets the hardness; h = slerp(k, P_sel; t_c);
4. the rank filter keeps h only if p* is still its closest prototype among all P;
5. L_HaLP = -(1/G) Σ_kept q·h / τ (Eq. 8), h carrying no gradient.

Every function is pure; randomness comes from an explicit ``torch.Generator`` (its device
may differ from the data's: draws are made there and moved). Shapes: B anchors, Ng
positives per anchor, P prototypes, D feature dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

TStarMode = Literal["paper", "reference"]
TcSampling = Literal["paper", "reference", "fixed"]

_REF_EPS = 1e-8  # the authors' additive epsilons, reproduced in t_star(mode="reference")
PselMode = Literal["paper", "reference"]

FIXED_DELTA = 0.01
"""How far inside p*'s cell ``tc_sampling="fixed"`` stays: t_c = max(t* - 0.01, 0).

At t_c = t* exactly a positive lies on the bisector of p* and P_sel, where the rank
filter's argmax is a tie decided by rounding (about half the positives lost); the
authors' code uses the same 0.01 for its "t_c = t*" mode."""

REFERENCE_NEAREST = 20
"""The authors draw P_sel among the 20 prototypes nearest the anchor, after p*."""


def _angle_eps(dtype: torch.dtype) -> float:
    """Below this, sin Ω counts as 0 (Ω -> 0 or Ω -> π): sqrt(machine eps), 3e-4 in float32.

    Near 0, slerp and normalised lerp then differ by O(Ω^3), below float resolution; near
    π, the great circle through two almost antipodal points is numerically undefined.
    """
    return math.sqrt(torch.finfo(dtype).eps)


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle Ω in [0, π] between unit vectors (..., D) -> (...).

    Computed as 2·atan2(|a - b|, |a + b|), which equals arccos(a·b) for unit vectors but
    keeps full precision near 0 and π, where arccos of a rounded dot product does not
    (arccos(1 - 6e-8) is already 3.4e-4 in float32).
    """
    return _arc(a, b)[0]


def _arc(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ω, sin Ω) of unit vectors (..., D), each (...), accurate near 0 and π.

    With m = |a - b| = 2 sin(Ω/2) and p = |a + b| = 2 cos(Ω/2): Ω = 2 atan2(m, p) and
    sin Ω = m p / 2, free of the cancellation in sin(Ω) for Ω near π.
    """
    m = (a - b).norm(dim=-1)
    p = (a + b).norm(dim=-1)
    return 2.0 * torch.atan2(m, p), 0.5 * m * p


def _geodesic(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The great circle from unit a towards unit b (broadcast (..., D)).

    Returns (Ω (...), sin Ω (...), u (..., D)) with b = cos Ω a + sin Ω u, u the unit
    tangent at a. u is the part of b - a (when a·b >= 0) or of b + a (a·b < 0) orthogonal
    to a; both equal b - (a·b) a up to scale, but are small vectors formed without
    cancellation, so u stays accurate as Ω -> 0 or π. Where a and b are exactly parallel
    or antipodal there is no unique tangent and u = 0.
    """
    omega, sin_o = _arc(a, b)
    near = (a * b).sum(-1, keepdim=True) >= 0
    d = torch.where(near, b - a, b + a)  # (..., D)
    perp = d - (d * a).sum(-1, keepdim=True) * a
    tiny = torch.finfo(a.dtype).tiny
    perp_norm = perp.norm(dim=-1, keepdim=True)
    u = torch.where(perp_norm <= tiny, torch.zeros_like(perp), perp / perp_norm.clamp(min=tiny))
    return omega, sin_o, u


def _along(a: torch.Tensor, omega: torch.Tensor, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """cos(tΩ) a + sin(tΩ) u, L2-normalised, or a where it vanishes (the slerp's last step).

    Shapes broadcast: a, u (..., D); omega, t (...).
    """
    ang = (t * omega).unsqueeze(-1)  # (..., 1)
    out = torch.cos(ang) * a + torch.sin(ang) * u  # (..., D)
    norm = out.norm(dim=-1, keepdim=True)
    tiny = norm <= torch.finfo(a.dtype).eps
    return torch.where(tiny, a.expand_as(out), out / norm.clamp(min=torch.finfo(a.dtype).tiny))


def closest_prototype(anchor: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Index of p*, the prototype most similar to each anchor (step 2).

    Args:
        anchor: (B, D) unit anchors (keys).
        prototypes: (P, D) unit prototypes.

    Returns:
        (B,) long; ties go to the lowest index (``argmax``), as in :func:`rank_filter`.
    """
    return (anchor @ prototypes.T).argmax(dim=-1)  # (B, P) -> (B,)


def select_other_prototypes(
    closest: torch.Tensor,
    num_prototypes: int,
    num_positives: int,
    generator: torch.Generator,
    similarity: torch.Tensor | None = None,
    nearest: int | None = None,
) -> torch.Tensor:
    """Indices of P_sel: for each anchor, Ng draws uniform over the candidate prototypes.

    The paper (Sec. 3.3) draws among all P - 1 non-closest prototypes: a draw r in
    [0, P - 1) is shifted past the closest index (r -> r + 1 when r >= closest), which maps
    it one-to-one onto the other P - 1 indices. With ``nearest`` = W (the authors' code,
    W = 20) the candidates are the W prototypes most similar to the anchor after p*
    (ranks 2..W + 1); for P <= W + 1 that is the same set, drawn in another order.

    Args:
        closest: (B,) long, index of p* per anchor.
        num_prototypes: P >= 2.
        num_positives: Ng.
        generator: source of the draws.
        similarity: (B, P) anchor-prototype similarities; needed with ``nearest``.
        nearest: W, or None for all P - 1 (the paper).

    Returns:
        (B, Ng) long, never equal to ``closest``.
    """
    if num_prototypes < 2:
        raise ValueError(f"PosHal needs at least 2 prototypes, got {num_prototypes}")
    if nearest is not None:
        if similarity is None or nearest < 1:
            raise ValueError("nearest-W selection needs the similarities and W >= 1")
        # descending and stable: ties keep index order, so rank 0 is argmax's p*
        order = similarity.argsort(dim=1, descending=True, stable=True)  # (B, P)
        candidates = order[:, 1 : 1 + min(nearest, num_prototypes - 1)]  # (B, W)
        shape = (closest.shape[0], num_positives)
        j = torch.randint(candidates.shape[1], shape, generator=generator, device=generator.device)
        return candidates.gather(1, j.to(candidates.device))
    shape = (closest.shape[0], num_positives)
    r = torch.randint(num_prototypes - 1, shape, generator=generator, device=generator.device)
    r = r.to(closest.device)  # (B, Ng)
    return r + (r >= closest.unsqueeze(-1)).long()


def t_star(
    anchor: torch.Tensor,
    p_closest: torch.Tensor,
    p_selected: torch.Tensor,
    mode: TStarMode = "paper",
) -> torch.Tensor:
    """Eq. 7: the largest slerp step t* in [0, 1] that keeps p* at least as close as P_sel.

    Args:
        anchor: (B, D) unit anchors k.
        p_closest: (B, D) their closest prototypes p*.
        p_selected: (B, Ng, D) the selected prototypes P_sel.
        mode: ``"paper"`` (default) or ``"reference"`` (the authors' code, see below).

    Returns:
        (B, Ng) t*, finite; in [0, 1] for ``"paper"``.

    Derivation. Let Ω = angle(k, P_sel), u the unit tangent at k pointing to P_sel
    (P_sel = cos Ω k + sin Ω u), d = p* - P_sel, a = k·d >= 0 and c = 1 - P_sel·p* =
    |d|^2 / 2 >= 0. The slerp is s(t) = [sin((1-t)Ω) k + sin(tΩ) P_sel] / sin Ω
    = cos θ k + sin θ u with θ = tΩ, so

        g(θ) = s·p* - s·P_sel = s·d = a cos θ + (u·d) sin θ,

    g(0) = a >= 0 and g(Ω) = P_sel·d = -c <= 0. As a sinusoid of period 2π, g has
    exactly one zero θ0 in [0, π) and it lies in [0, Ω]; t* = θ0 / Ω is therefore the
    boundary and the largest t in [0, 1] at which p* is still at least as similar:

        θ0 = atan2(k·d, -u·d)  in [0, π].

    This is Eq. 7: from P_sel·d = -c, -u·d = (c + a cos Ω) / sin Ω, hence
    tan θ0 = a sin Ω / (c + a cos Ω) = sin Ω / (κ + cos Ω) with κ = c / a. The form
    atan2(a sin Ω, c + a cos Ω) never divides by zero (a >= 0 multiplies κ's
    denominator away); the form used here is the same one divided by sin Ω > 0, which
    also avoids the cancellation of c + a cos Ω near Ω = π (both terms ~ 2 there). With
    atan2, θ0 > π/2 comes out right when κ + cos Ω < 0, where plain atan gives a
    negative angle. d, k·d and u are formed from small differences, so they stay
    accurate for nearly duplicate prototypes and for Ω near 0 or π.

    Edge cases (paper mode), each with its choice:

    * a = k·(p* - P_sel) <= 0: k is equidistant (or, when the caller passes a p* that is
      not the closest, already nearer to P_sel): **t* = 0**, h = k. At equality this is
      the exact value (g(θ) = (u·d) sin θ < 0 for θ > 0).
    * duplicate prototypes, P_sel == p* (d = 0 exactly, κ = 0/0): **t* = 1**. Every point
      of the slerp is then equally similar to both, so the largest admissible t is 1; it
      is also the limit of t* as P_sel -> p* (a = O(|d|), c = O(|d|^2), so κ -> 0 and
      θ0 -> Ω), and what the authors' code returns (for Ω < π/2). h moves towards
      P_sel = p*, the anchor's own prototype: still a valid positive.
    * Ω -> 0 (k == P_sel) and Ω -> π (k == -P_sel, sin Ω -> 0, the slerp's great circle
      is undefined): **t* = 0**, h = k, whenever sin Ω <= sqrt(eps) (3.4e-4 in float32,
      i.e. within 0.02° of ±P_sel). This takes precedence over the duplicate rule.

    Reference mode reproduces the authors' ``generate_positives_using_mixup`` exactly:
    κ = (1 - P_sel·p*) / (k·(p* - P_sel) + 1e-8), Ω = arccos(P_sel·k),
    t* = atan(sin Ω / (κ + cos Ω + 1e-8)) / (Ω + 1e-8) -- with plain atan, so t* < 0 when
    κ + cos Ω < 0. Two guards are added that change nothing where the original is finite:
    the dot product is clamped to [-1, 1] before arccos, and a non-finite t* becomes 0.
    """
    k = anchor.unsqueeze(1)  # (B, 1, D)
    p0 = p_closest.unsqueeze(1)  # (B, 1, D)

    if mode == "reference":
        k_dot_ps = (k * p_selected).sum(-1)  # (B, Ng)
        k_dot_p0 = (k * p0).sum(-1)  # (B, 1)
        ps_dot_p0 = (p_selected * p0).sum(-1)  # (B, Ng)
        kappa = (1.0 - ps_dot_p0) / (k_dot_p0 - k_dot_ps + _REF_EPS)
        omega = torch.arccos(k_dot_ps.clamp(-1.0, 1.0))
        theta = torch.atan(torch.sin(omega) / (kappa + torch.cos(omega) + _REF_EPS))
        t = theta / (omega + _REF_EPS)
        return torch.where(torch.isfinite(t), t, torch.zeros_like(t))
    if mode != "paper":
        raise ValueError(f"unknown t* mode {mode!r}; expected 'paper' or 'reference'")

    omega, sin_o, u = _geodesic(k, p_selected)  # (B, Ng), (B, Ng), (B, Ng, D)
    degenerate = sin_o <= _angle_eps(anchor.dtype)
    d = p0 - p_selected  # (B, Ng, D)
    a = (k * d).sum(-1)  # (B, Ng)
    theta = torch.atan2(a.clamp(min=0.0), -(u * d).sum(-1))  # (B, Ng), in [0, π]
    t = (theta / omega.clamp(min=_angle_eps(anchor.dtype))).clamp(0.0, 1.0)
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    t = torch.where(a <= 0, zero, t)  # k equidistant (or p* not the closest)
    t = torch.where((d == 0).all(dim=-1), one, t)  # duplicate prototypes
    return torch.where(degenerate, zero, t)  # Ω -> 0 or π


def sample_tc(
    t_star: torch.Tensor,
    lam: float,
    generator: torch.Generator,
    mode: TcSampling = "paper",
) -> torch.Tensor:
    """The slerp step t_c actually used, given t* (step 4): controls the positives' hardness.

    Args:
        t_star: (B, Ng) t* from :func:`t_star`.
        lam: λ in [0, 1] (0.8 in the paper).
        generator: source of the draws (unused for ``"fixed"``).
        mode:
            * ``"paper"``: t_c ~ U(0, λ t*) (paper Sec. 3.4); mean t_c / t* = λ / 2, so a larger
              λ gives harder positives (further from k).
            * ``"reference"``: t_c = (1 - u) t*, u ~ U(0, λ), i.e. t_c ~ U((1 - λ) t*, t*):
              the authors' code; here a larger λ gives easier positives.
            * ``"fixed"``: t_c = max(t* - δ, 0) with δ = :data:`FIXED_DELTA` (0.01), the
              paper's "t_c = t* only" ablation, kept just inside p*'s cell so that the
              rank filter does not decide a tie (the authors' sentinel λ = 1000 means
              the same t* - 0.01).

    Returns:
        (B, Ng) t_c.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if mode == "fixed":
        return (t_star - FIXED_DELTA).clamp(min=0.0)
    if mode not in ("paper", "reference"):
        raise ValueError(f"unknown t_c sampling {mode!r}; expected 'paper', 'reference', 'fixed'")
    u = torch.rand(t_star.shape, generator=generator, device=generator.device)
    u = u.to(device=t_star.device, dtype=t_star.dtype)  # (B, Ng), U[0, 1)
    if mode == "paper":
        return lam * u * t_star
    return (1.0 - lam * u) * t_star


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation from a (t = 0) to b (t = 1), step 5.

    Args:
        a: (..., D) unit vectors, the start.
        b: (..., D) unit vectors, the end.
        t: (...) steps (any real t works: t < 0 extrapolates away from b). Shapes
            broadcast.

    Returns:
        (..., D) unit vectors [sin((1-t)Ω) a + sin(tΩ) b] / sin Ω, L2-normalised (the
        authors' 1e-8 in the denominator cancels in the normalisation).

    Evaluated in the equivalent tangent form cos(tΩ) a + sin(tΩ) u, u the unit tangent
    at a pointing to b (see ``_geodesic``). It has no 1/sin Ω, so it needs no
    normalised-lerp fallback as Ω -> 0, and it keeps full precision near Ω = π, where
    the two terms of the classical form nearly cancel (a loss of ~eps / sin Ω). For
    exactly antipodal a, b (no unique geodesic) it returns ±a, the normalised lerp, and
    a itself where that vanishes (t = 1/2).
    """
    omega, _, u = _geodesic(a, b)
    return _along(a, omega, u, t)


def rank_filter(h: torch.Tensor, prototypes: torch.Tensor, closest: torch.Tensor) -> torch.Tensor:
    """Step 6: keep a positive only if its closest prototype among ALL P is still p*.

    t* only considers p* and P_sel; a third prototype may overtake p* along the way.

    Args:
        h: (B, Ng, D) hallucinated positives.
        prototypes: (P, D).
        closest: (B,) index of p* per anchor (from :func:`closest_prototype`).

    Returns:
        (B, Ng) bool; ties go to the lowest index, as in :func:`closest_prototype`.
    """
    return (h @ prototypes.T).argmax(dim=-1) == closest.unsqueeze(-1)  # (B, Ng, P) -> (B, Ng)


def halp_loss(q: torch.Tensor, h: torch.Tensor, keep: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 8: L_HaLP = -(1/G) Σ_{kept (b, m)} q_b·h_{b,m} / τ.

    Args:
        q: (B, D) queries (carry the gradient).
        h: (B, Ng, D) positives (detached here: no gradient flows into them).
        keep: (B, Ng) bool rank-filter mask.
        tau: temperature τ (0.07, MoCo's).

    Returns:
        Scalar. G is the number of kept positives over the whole batch (a global average,
        as in the authors' code: anchors with more survivors weigh more). When G = 0 the
        loss is exactly 0, still attached to q's graph (zero gradient), with no host sync.
    """
    sim = torch.einsum("bd,bnd->bn", q, h.detach())  # (B, Ng)
    neg = torch.where(keep, -sim, torch.zeros_like(sim))  # masked entries are exactly +0
    count = keep.sum().clamp(min=1).to(sim.dtype)
    return neg.sum() / (count * tau)


@dataclass(frozen=True)
class Hallucination:
    """The output of :func:`hallucinate` (all detached)."""

    h: torch.Tensor  # (B, Ng, D) unit positives
    keep: torch.Tensor  # (B, Ng) bool, passed the rank filter
    t_star: torch.Tensor  # (B, Ng) Eq. 7
    t_c: torch.Tensor  # (B, Ng) the step used
    closest: torch.Tensor  # (B,) long, index of p*
    selected: torch.Tensor  # (B, Ng) long, index of P_sel


@torch.no_grad()
def hallucinate(
    anchor: torch.Tensor,
    prototypes: torch.Tensor,
    num_positives: int,
    lam: float,
    generator: torch.Generator,
    tc_sampling: TcSampling = "paper",
    t_star_mode: TStarMode = "paper",
    psel: PselMode = "paper",
) -> Hallucination:
    """PosHal (paper Sec. 3.3-3.4, Algorithm 1): Ng positives per anchor and their rank-filter mask.

    Args:
        anchor: (B, D) anchor keys (normalised here; any gradient is dropped).
        prototypes: (P, D) prototypes, P >= 2 (normalised here).
        num_positives: Ng (100 in the paper).
        lam: λ of :func:`sample_tc` (0.8 in the paper).
        generator: draws P_sel first, then t_c.
        tc_sampling: ``"paper"`` | ``"reference"`` | ``"fixed"``, see :func:`sample_tc`.
        t_star_mode: ``"paper"`` | ``"reference"``, see :func:`t_star`.
        psel: ``"paper"``: P_sel among all P - 1 non-closest prototypes; ``"reference"``:
            among the :data:`REFERENCE_NEAREST` nearest after p* (the authors' code).

    Returns:
        A :class:`Hallucination`; feed ``h`` and ``keep`` to :func:`halp_loss`.
    """
    k = F.normalize(anchor, dim=-1)  # (B, D)
    protos = F.normalize(prototypes, dim=-1)  # (P, D)
    similarity = k @ protos.T  # (B, P)
    closest = similarity.argmax(dim=-1)  # (B,), as closest_prototype
    nearest = REFERENCE_NEAREST if psel == "reference" else None
    selected = select_other_prototypes(
        closest, protos.shape[0], num_positives, generator, similarity, nearest
    )
    # t* and the great circle depend on (anchor, P_sel) only: compute them once for all P
    # prototypes, then gather the Ng selected ones (P = 20 < Ng = 100 in the paper).
    every = protos.unsqueeze(0).expand(k.shape[0], -1, -1)  # (B, P, D)
    ts = t_star(k, protos[closest], every, mode=t_star_mode).gather(1, selected)  # (B, Ng)
    tc = sample_tc(ts, lam, generator, mode=tc_sampling)  # (B, Ng)
    omega, _, u = _geodesic(k.unsqueeze(1), protos.unsqueeze(0))  # (B, P), (B, P, D)
    rows = torch.arange(k.shape[0], device=k.device).unsqueeze(1)  # (B, 1)
    h = _along(k.unsqueeze(1), omega.gather(1, selected), u[rows, selected], tc)  # slerp
    keep = rank_filter(h, protos, closest)  # (B, Ng)
    return Hallucination(h=h, keep=keep, t_star=ts, t_c=tc, closest=closest, selected=selected)


@torch.no_grad()
def slerp_towards(
    anchor: torch.Tensor,
    target: torch.Tensor,
    num_positives: int,
    lam: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The paper's "slerp between q and k" ablation (77.92 vs 79.7 on NTU-60 x-sub).

    Our reading of that one-line ablation: positives are slerped from the anchor k
    towards the (detached) query q with t ~ U(0, λ), without prototypes, t* or rank
    filter, and used in :func:`halp_loss` with every positive kept.

    Args:
        anchor: (B, D) anchor keys k.
        target: (B, D) the other end, the queries q (detached here).
        num_positives: Ng.
        lam: λ in [0, 1].
        generator: source of the steps.

    Returns:
        (B, Ng, D) unit positives.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    k = F.normalize(anchor, dim=-1).unsqueeze(1)  # (B, 1, D)
    q = F.normalize(target.detach(), dim=-1).unsqueeze(1)  # (B, 1, D)
    shape = (anchor.shape[0], num_positives)
    t = torch.rand(shape, generator=generator, device=generator.device)
    t = lam * t.to(device=anchor.device, dtype=anchor.dtype)  # (B, Ng)
    return slerp(k, q, t)
