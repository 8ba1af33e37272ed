"""AimCLR and HiCLR as presets: mining, D3M, the hierarchical loss, views, training.

Each loss is compared with an explicit per-sample loop written from the formulas
(AimCLR Sec. 3.3-3.4; HiCLR's asymmetric hierarchical loss), and the gradient paths
(what is a detached teacher, what a student) are checked directly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from halp.config import PretrainConfig, load_config
from halp.data import prepare
from halp.data.loaders import PretrainDataset
from halp.data.storage import load_split
from halp.methods import PRESETS, views_of
from halp.methods.checkpoint import load_checkpoint
from halp.methods.model import PretrainModel
from halp.objectives import Embeddings, StepContext
from halp.objectives.distribution import DistributionDistillation, soft_target_ce
from halp.objectives.mining import NearestNeighbourInfoNCE, multi_positive_nce, positive_mask
from halp.objectives.moco import info_nce
from halp.train import pretrain

NEW = ("aimclr", "aimclr_halp", "hiclr", "hiclr_halp")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ntu_data(synth_ntu_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ntu60")
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], out)
    return out / "xsub"


def smoke(data: Path, *overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, "builtin:smoke", [f"data.root={data}", *overrides])


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def _emb(views: dict[str, torch.Tensor], seed: int = 0) -> Embeddings:
    q = _unit(5, 8, seed=seed).requires_grad_(True)
    k, queue = _unit(5, 8, seed=seed + 1), _unit(12, 8, seed=seed + 2)
    return Embeddings(
        {"joint": q},
        {"joint": k},
        {"joint": queue},
        {},
        {n: {"joint": v} for n, v in views.items()},
    )


# ------------------------------------------------------------------------ mining


def test_positive_mask_is_the_key_and_each_views_top_k() -> None:
    sims = [torch.randn(4, 10, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    mask = positive_mask(sims, topk=2)
    for i in range(4):
        expected = {0}
        for sim in sims:
            order = sorted(range(10), key=lambda j: -float(sim[i, j]))
            expected |= {1 + j for j in order[:2]}
        assert {int(j) for j in mask[i].nonzero()} == expected


def test_multi_positive_nce_against_a_loop() -> None:
    logits = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]).float()
    total = 0.0
    for i in range(3):
        z = sum(math.exp(float(v)) for v in logits[i])
        pos = [j for j in range(6) if mask[i, j]]
        total += -sum(float(logits[i, j]) - math.log(z) for j in pos) / len(pos)
    assert float(multi_positive_nce(logits, mask)) == pytest.approx(total / 3, rel=1e-5)


def test_nnm_is_infonce_before_its_start_and_mines_after() -> None:
    emb = _emb({"extreme": _unit(5, 8, seed=9).requires_grad_(True)})
    nnm = NearestNeighbourInfoNCE(0.07, start_epoch=3, topk=1)
    plain, _ = info_nce(emb.queries["joint"], emb.keys["joint"], emb.negatives["joint"], 0.07)
    assert torch.equal(nnm.loss(emb, StepContext(2, 0, 1.0)), plain)
    ctx = StepContext(3, 0, 1.0)
    mined = nnm.loss(emb, ctx)
    q, queue = emb.queries["joint"].detach(), emb.negatives["joint"]
    x = emb.views["extreme"]["joint"]
    _, logits = info_nce(emb.queries["joint"], emb.keys["joint"], queue, 0.07)
    expected = 0.0
    for i in range(5):
        pos = {0, 1 + int((q[i] @ queue.T).argmax()), 1 + int((x[i] @ queue.T).argmax())}
        log_p = F.log_softmax(logits[i].detach(), dim=0)
        expected += -sum(float(log_p[j]) for j in pos) / len(pos)
    assert float(mined) == pytest.approx(expected / 5, rel=1e-5)
    assert 1.0 <= float(ctx.terms["positives_joint"]) <= 3.0
    mined.backward()  # the views that chose positives get no gradient from the choice
    assert emb.queries["joint"].grad is not None
    assert emb.views["extreme"]["joint"].grad is None


def test_mining_starts_at_the_released_epoch() -> None:
    """The released loop passes 1-based epochs to ``epoch <= 150``: the 151st is mined."""
    for source in (None, "config/pretrain/aimclr_stgcn.yaml", "config/pretrain/hiclr_stgcn.yaml"):
        path = None if source is None else ROOT / source
        assert load_config(PretrainConfig, path).mining.start_epoch == 150, source
    emb = _emb({"extreme": _unit(5, 8, seed=9)})
    nnm = NearestNeighbourInfoNCE(0.07, start_epoch=150, topk=1)
    for epoch, mined in ((149, False), (150, True)):  # 0-based: the 150th and the 151st
        ctx = StepContext(epoch, 0, 1.0)
        nnm.loss(emb, ctx)
        assert ("positives_joint" in ctx.terms) == mined, epoch


# ------------------------------------------------------------------------ distributions


def _p(z: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """softmax([z.k, z.Q] / 0.07) for one sample, by hand."""
    logits = torch.cat([(z * k).sum().reshape(1), queue @ z]) / 0.07
    return logits.exp() / logits.exp().sum()


def test_d3m_against_a_loop_and_its_gradient_paths() -> None:
    e = _unit(5, 8, seed=20).requires_grad_(True)
    ed = _unit(5, 8, seed=21).requires_grad_(True)
    emb = _emb({"extreme": e, "extreme_drop": ed})
    d3m = DistributionDistillation(
        [("query", "extreme"), ("query", "extreme_drop")], 0.07, "mean", "d3m"
    )
    value = d3m.loss(emb, StepContext(0, 0, 1.0))
    assert value is not None
    q, k, queue = emb.queries["joint"], emb.keys["joint"], emb.negatives["joint"]
    expected = 0.0
    for i in range(5):
        pn = _p(q[i].detach(), k[i], queue)
        for student in (e, ed):
            expected += -float((pn * _p(student[i].detach(), k[i], queue).log()).sum()) / 2
    assert float(value) == pytest.approx(expected / 5, rel=1e-5)
    value.backward()
    assert q.grad is None or float(q.grad.abs().sum()) == 0.0  # the teacher is detached
    assert e.grad is not None and float(e.grad.abs().sum()) > 0
    assert ed.grad is not None and float(ed.grad.abs().sum()) > 0


def test_soft_target_ce_is_kl_plus_the_teachers_entropy() -> None:
    s, t = (torch.randn(4, 7, generator=torch.Generator().manual_seed(i)) for i in (1, 2))
    pt = F.softmax(t, dim=1)
    kl = F.kl_div(F.log_softmax(s, dim=1), pt, reduction="batchmean")
    entropy = -(pt * pt.log()).sum(dim=1).mean()
    assert float(soft_target_ce(s, t)) == pytest.approx(float(kl + entropy), rel=1e-5)


def test_hierarchy_is_a_chain_and_the_middle_branch_learns_only_as_student() -> None:
    normal = _unit(5, 8, seed=30).requires_grad_(True)
    strong = _unit(5, 8, seed=31).requires_grad_(True)
    emb = _emb({"normal": normal, "strong": strong})
    hier = DistributionDistillation(
        [("query", "normal"), ("normal", "strong")], 0.07, "sum", "hier"
    )
    value = hier.loss(emb, StepContext(0, 0, 1.0))
    assert value is not None
    q, k, queue = emb.queries["joint"], emb.keys["joint"], emb.negatives["joint"]
    expected = 0.0
    for i in range(5):
        p0, p1, p2 = (_p(z[i].detach(), k[i], queue) for z in (q, normal, strong))
        expected += -float((p0 * p1.log()).sum()) - float((p1 * p2.log()).sum())
    assert float(value) == pytest.approx(expected / 5, rel=1e-5)
    value.backward()
    assert normal.grad is not None
    # the normal branch's gradient is that of its student pair alone
    n2 = normal.detach().clone().requires_grad_(True)
    alone = DistributionDistillation([("query", "normal")], 0.07, "sum", "h")
    out = alone.loss(_emb({"normal": n2, "strong": strong.detach()}), StepContext(0, 0, 1.0))
    assert out is not None
    out.backward()
    assert n2.grad is not None
    assert torch.allclose(normal.grad, n2.grad, atol=1e-6)
    assert strong.grad is not None and float(strong.grad.abs().sum()) > 0


def test_hiclr_branches_and_weight_come_from_the_config() -> None:
    config = load_config(PretrainConfig, None, ["method=hiclr"])
    views = views_of(config)
    assert [(v.name, v.transform) for v in views] == [("normal", "none"), ("strong", "mask")]
    assert views[1].option("ratio") == config.hiclr.mask_ratio  # the option from its config key
    assert config.hiclr.hierarchy_weight == pytest.approx(0.5)  # 1 / (k - 1), k = 3
    one = load_config(PretrainConfig, None, ["method=hiclr", "hiclr.branches=[]"])
    assert views_of(one) == () and one.hiclr.hierarchy_weight == 0.0
    model = PretrainModel(load_config(PretrainConfig, "builtin:smoke", ["method=hiclr"]))
    assert set(model.masks) == {"joint"}  # one learnable token, trained with the encoder
    assert any(p is model.masks["joint"].token for p in model.parameters())


# ------------------------------------------------------------------------ data and training


def test_extra_views_are_independent_draws(ntu_data: Path) -> None:
    split = load_split(ntu_data, "train")
    ds = PretrainDataset(split, seed=3, views={"a": "aimclr_extreme", "b": "aimclr_extreme"})
    q, k, index, extra = ds[0]
    assert index == 0 and set(extra) == {"a", "b"}
    clips = [q, k, extra["a"], extra["b"]]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(clips[i], clips[j]), (i, j)
    again = PretrainDataset(split, seed=3, views={"a": "aimclr_extreme", "b": "aimclr_extreme"})
    assert torch.equal(again[0][3]["b"], extra["b"])  # reproducible per item
    plain = PretrainDataset(split, seed=3)
    assert len(plain[0]) == 3 and torch.equal(plain[0][0], q)  # query unchanged by extras


def _rows(run: Path) -> list[dict[str, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.mark.parametrize(
    ("method", "arch", "workers"),
    [
        ("aimclr", "bigru", 0),
        ("aimclr_halp", "stgcn", 0),
        ("hiclr", "stgcn", 0),
        ("hiclr_halp", "bigru", 2),  # persistent loader workers, across the resume too
    ],
)
def test_new_presets_train_and_resume_bit_identically(
    ntu_data: Path, tmp_path: Path, method: str, arch: str, workers: int
) -> None:
    keys = [f"method={method}", f"encoder.arch={arch}", "log.knn_every=0"]
    keys += [f"data.workers={workers}"]
    if arch == "stgcn":
        keys += ["encoder.width=4", "encoder.feature_dim=16", "encoder.proj_hidden=16"]
    pretrain(smoke(ntu_data, *keys, "optim.epochs=2"), tmp_path / "straight")
    pretrain(smoke(ntu_data, *keys, "optim.epochs=1"), tmp_path / "split")
    pretrain(smoke(ntu_data, *keys, "optim.epochs=2"), tmp_path / "split", resume=True)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = _rows(tmp_path / "straight")
    assert rows == _rows(tmp_path / "split")
    # mining from epoch 1 (smoke config): more than the key is positive
    assert "positives_joint" not in rows[0] and rows[1]["positives_joint"] >= 1.0
    first = "extreme" if method.startswith("aimclr") else "normal"
    term = "d3m" if method.startswith("aimclr") else "hier"
    assert f"{term}_{first}_joint" in rows[0]
    assert ("loss_halp_joint" in rows[1]) == PRESETS[method].halp


@pytest.mark.parametrize("base", ["aimclr", "hiclr"])
def test_mu_zero_makes_the_halp_preset_bit_identical(
    ntu_data: Path, tmp_path: Path, base: str
) -> None:
    common = ["optim.epochs=2", "log.knn_every=0"]
    pretrain(smoke(ntu_data, f"method={base}", *common), tmp_path / "a")
    pretrain(smoke(ntu_data, f"method={base}_halp", "halp.mu=0", *common), tmp_path / "b")
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert a and all(torch.equal(a[k], b[k]) for k in a)


def test_a_method_without_its_views_is_refused() -> None:
    model = PretrainModel(load_config(PretrainConfig, "builtin:smoke", ["method=aimclr"]))
    x = torch.randn(4, 3, 16, 25, 2)
    with pytest.raises(ValueError, match="needs the extra views"):
        model({"joint": x}, {"joint": x})


def test_a_folder_of_the_other_recipe_is_refused(ntu_data: Path, tmp_path: Path) -> None:
    """2s-AGCN data under a crossclr configuration: refused before training, naming the key."""
    from halp.errors import ConfigError

    config = smoke(ntu_data, "method=aimclr", "data.recipe=crossclr", "optim.epochs=1")
    with pytest.raises(ConfigError, match=r"data\.recipe"):
        pretrain(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_evaluation_refuses_data_of_another_recipe_than_the_checkpoints(
    ntu_data: Path, synth_ntu_raw: Path, tmp_path: Path
) -> None:
    from halp.config import EvalConfig
    from halp.errors import ConfigError
    from halp.evaluate import evaluate

    pretrain(smoke(ntu_data, "method=aimclr", "optim.epochs=1", "log.knn_every=0"), tmp_path / "r")
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "crossclr", recipe="crossclr")
    config = load_config(
        EvalConfig,
        None,
        [
            f"checkpoint={tmp_path / 'r' / 'final.pt'}",
            f"data_root={tmp_path / 'crossclr' / 'xsub'}",
        ],
    )
    with pytest.raises(ConfigError, match="crossclr"):
        evaluate(config, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_a_view_transform_refuses_an_encoder_without_its_method() -> None:
    """DAE drops graph edges: on the BiGRU it is refused naming the branch's config key, on
    the ST-GCN it builds (catches a check that never fires, or fires for every encoder)."""
    from halp.errors import ConfigError

    dae = "hiclr.branches=[{name: d, augmentation: hiclr_normal, strong: dae}]"
    bigru = load_config(PretrainConfig, "builtin:smoke", ["method=hiclr", dae])
    with pytest.raises(ConfigError, match=r"'hiclr\.branches': view 'd' \(dae\) drops graph"):
        PretrainModel(bigru)
    stgcn = ["encoder.arch=stgcn", "encoder.width=4", "encoder.feature_dim=16"]
    graph = load_config(PretrainConfig, "builtin:smoke", ["method=hiclr", dae, *stgcn])
    model = PretrainModel(graph)
    assert [v.transform for v in model.views] == ["dae"]
