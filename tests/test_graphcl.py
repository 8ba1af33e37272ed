"""GraphCL and GraphCL+HaLP: GIN, NT-Xent, the anchor FIFO, training, the SVM protocol, results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from halp import graphcl
from halp.cli import main
from halp.config import GraphCLConfig, load_config
from halp.data import tu
from halp.encoders.gin import GinEncoder, GraphCLNet
from halp.errors import TablesError
from halp.objectives.graphcl import AnchorFifo, nt_xent
from halp.report.graphs import paired_gain, summarise
from halp.report.tables import build_tables

# ------------------------------------------------------------------ encoder


def _ring(n: int, offset: int = 0) -> torch.Tensor:
    a = torch.arange(n)
    b = (a + 1) % n
    return torch.stack([torch.cat([a, b]), torch.cat([b, a])]) + offset


def test_gin_embeds_every_graph_as_the_concatenated_sum_readouts() -> None:
    torch.manual_seed(0)
    enc = GinEncoder(5, hidden=32, layers=3).eval()
    x = torch.randn(7, 5)
    one = enc(x, _ring(7), torch.zeros(7, dtype=torch.long), 1)
    assert one.shape == (1, 96)
    # two disjoint copies read out as one graph: sum pooling doubles every layer's part
    # (mean or max pooling would not)
    double = enc(torch.cat([x, x]), torch.cat([_ring(7), _ring(7, 7)], 1),
                 torch.zeros(14, dtype=torch.long), 1)  # fmt: skip
    torch.testing.assert_close(double, 2 * one)
    # in a batch, each graph's embedding is its own (eval mode), whatever its neighbours
    y = torch.randn(4, 5)
    batch = torch.tensor([0] * 7 + [1] * 4)
    both = enc(torch.cat([x, y]), torch.cat([_ring(7), _ring(4, 7)], 1), batch, 2)
    torch.testing.assert_close(both[:1], one)
    # the readout concatenates the layers: the first 32 dimensions are layer 1's sum
    h = enc.norms[0](torch.relu(enc.convs[0](x, _ring(7))))
    torch.testing.assert_close(one[0, :32], h.sum(0))


def test_graphcl_net_is_xavier_initialised_with_zero_bias() -> None:
    torch.manual_seed(0)
    net = GraphCLNet(7)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 * 2 + 2  # 3 GIN MLPs + the head
    for lin in linears:
        assert torch.all(lin.bias == 0)
        bound = math.sqrt(6.0 / (lin.in_features + lin.out_features))
        assert lin.weight.abs().max() <= bound
        assert lin.weight.abs().max() > 0.8 * bound  # uniform over the Xavier range
    assert net.head[0].in_features == net.head[2].out_features == 96


# ------------------------------------------------------------------ loss, FIFO


def test_nt_xent_equals_the_released_explicit_loop() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    total = 0.0
    for i in range(6):
        sims = [
            math.exp(float(z1[i] @ z2[j] / (z1[i].norm() * z2[j].norm())) / 0.2) for j in range(6)
        ]
        total += -math.log(sims[i] / (sum(sims) - sims[i]))
    assert float(nt_xent(z1, z2, 0.2)) == pytest.approx(total / 6, rel=1e-12)
    # one direction: swapping the views changes the value
    assert float(nt_xent(z2, z1, 0.2)) != pytest.approx(total / 6, rel=1e-6)


def test_anchor_fifo_keeps_the_most_recent_in_order() -> None:
    fifo = AnchorFifo(5, 2)
    fifo.push(torch.tensor([[1.0, 0], [2, 0], [3, 0]]))
    fifo.push(torch.tensor([[4.0, 0], [5, 0], [6, 0]]))
    assert fifo.seen_count() == 6
    assert fifo.recent(4)[:, 0].tolist() == [3, 4, 5, 6]
    fifo.push(torch.arange(14.0).reshape(7, 2))
    assert fifo.recent(5)[:, 0].tolist() == [4, 6, 8, 10, 12]
    with pytest.raises(ValueError, match="keeps 5"):
        fifo.recent(6)


# ------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tu")
    tu.write_tu(root / "source", "SYNTH", tu.synthetic_tu(graphs=96, seed=0))
    tu.prepare_tu("SYNTH", root, source=root / "source")
    return root


def _cfg(root: Path, **keys: object) -> GraphCLConfig:
    base = {"dataset": "SYNTH", "root": str(root), "epochs": 2, "batch_size": 32,
            "halp.top_k": 32, "halp.num_positives": 8, "halp.mu_start_epoch": 1,
            "svm.folds": 3, "svm.inner_folds": 2, "svm.workers": 1}  # fmt: skip
    base.update(keys)
    return load_config(GraphCLConfig, None, [f"{k}={v}" for k, v in base.items()])


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.state_dict().values()]


def test_halp_before_its_switch_or_at_mu_zero_is_bit_identical_to_graphcl(
    synth_root: Path,
) -> None:
    data = tu.load_graphs(synth_root, "SYNTH")
    base, _ = graphcl.pretrain(_cfg(synth_root, method="graphcl"), data)
    late, h_late = graphcl.pretrain(
        _cfg(synth_root, method="graphcl_halp", **{"halp.mu_start_epoch": 2}), data
    )
    zero, _ = graphcl.pretrain(_cfg(synth_root, method="graphcl_halp", **{"halp.mu": 0.0}), data)
    for a, b, c in zip(_params(base), _params(late), _params(zero), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert h_late.halp_keep == [None, None]
    # switched on at epoch 1, the same run differs and reports HaLP's term
    on, h_on = graphcl.pretrain(_cfg(synth_root, method="graphcl_halp"), data)
    assert any(not torch.equal(a, b) for a, b in zip(_params(base), _params(on), strict=True))
    assert h_on.halp_keep[0] is None and h_on.halp_keep[1] is not None
    assert 0.5 < h_on.halp_keep[1] <= 1.0
    assert h_on.loss_halp[1] < 0  # -q.h / tau with q near its positives
    assert h_on.loss[1] == pytest.approx(h_on.loss_graphcl[1] + h_on.loss_halp[1], rel=1e-5)


def test_a_run_is_reproducible_and_writes_its_result(synth_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth_root, method="graphcl_halp", seed=3)
    a = graphcl.run(cfg, tmp_path / "a.json", log=lambda _: None)
    b = graphcl.run(cfg, None, log=lambda _: None)
    assert a["fold_accuracies"] == b["fold_accuracies"]
    assert a["history"]["loss"] == b["history"]["loss"]
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["seed"] == 3 and saved["config"]["method"] == "graphcl_halp"
    assert len(saved["fold_accuracies"]) == 3 and saved["provenance"]["commit"]


def test_training_lowers_the_loss_and_the_synthetic_classes_are_separable(
    synth_root: Path,
) -> None:
    """The smoke dataset's classes are learnable: well above the 50 % chance of two classes."""
    data = tu.load_graphs(synth_root, "SYNTH")
    cfg = _cfg(synth_root, epochs=4, **{"svm.folds": 4, "svm.inner_folds": 3})
    net, history = graphcl.pretrain(cfg, data)
    assert history.loss_graphcl[-1] < history.loss_graphcl[0]
    accuracy = graphcl.evaluate(graphcl.embed(net, data, cfg), data, cfg).accuracy
    assert accuracy >= 75.0


# ------------------------------------------------------------------ results and table


def _seed_file(path: Path, seed: int, acc: float, method: str = "graphcl", **cfg: object) -> Path:
    config = {"dataset": "MUTAG", "method": method, "seed": seed, "epochs": 20, **cfg}
    path.write_text(json.dumps({
        "kind": "graph_svm_seed", "dataset": "MUTAG", "method": method, "seed": seed,
        "accuracy": acc, "fold_accuracies": [acc], "chosen_c": [1.0], "seconds": {},
        "config": config, "provenance": {"commit": "abc"},
    }))  # fmt: skip
    return path


def test_summary_and_paired_gain(tmp_path: Path) -> None:
    base = summarise(
        [_seed_file(tmp_path / f"b{s}.json", s, 86.0 + s) for s in range(3)],
        tmp_path / "tu_mutag_graphcl_svm.json",
    )
    assert base["mean"] == pytest.approx(87.0)
    assert base["std"] == pytest.approx(1.0)  # sample std (ddof = 1)
    other = summarise(
        [_seed_file(tmp_path / f"h{s}.json", s, 87.0 + s + 0.1 * s, "graphcl_halp")
         for s in range(3)],
        tmp_path / "tu_mutag_graphcl-halp_svm.json",
    )  # fmt: skip
    gain = paired_gain(base, other)
    assert gain is not None
    diffs = np.array([1.0, 1.1, 1.2])
    half = 4.302652729911275 * diffs.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert gain.mean == pytest.approx(1.1)
    assert gain.low == pytest.approx(1.1 - half) and gain.high == pytest.approx(1.1 + half)
    written = build_tables(tmp_path, tmp_path / "tables")
    md = next(p for p in written if p.name == "table_graphcl.md").read_text()
    assert "87.00 ± 1.00 / 86.80 ± 1.34 (+0.20)" in md
    assert "+1.10 [+0.85, +1.35] gain (published +2.55)" in md
    assert "MUTAG: GraphCL 87.00 is within the published mean ± 2 std" in md
    assert "tu_nci1_graphcl_svm.json)" in md  # a missing cell names its file


def test_summary_refuses_mixed_configs_and_repeated_seeds(tmp_path: Path) -> None:
    a = _seed_file(tmp_path / "a.json", 0, 80.0)
    b = _seed_file(tmp_path / "b.json", 1, 80.0, epochs=10)
    with pytest.raises(TablesError, match="different configurations"):
        summarise([a, b], tmp_path / "s.json")
    c = _seed_file(tmp_path / "c.json", 0, 81.0)
    with pytest.raises(TablesError, match="both seed 0"):
        summarise([a, c], tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


# ------------------------------------------------------------------ command line


def test_cli_synth_prepare_graphcl_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["synth", "tu", "--out", str(tmp_path / "raw"), "--graphs", "40"]) == 0
    source = tmp_path / "raw"
    assert main(["prepare", "tu", "SYNTHETIC", "--out", str(tmp_path / "tu"),
                 "--source", str(source)]) == 0  # fmt: skip
    manifest = json.loads((tmp_path / "tu" / "SYNTHETIC" / "raw" / "manifest.json").read_text())
    assert manifest["graphs"] == 40 and manifest["verified"] is False  # not an official set
    out = tmp_path / "seed0.json"
    keys = ["dataset=SYNTHETIC", f"root={tmp_path / 'tu'}", "epochs=1", "batch_size=16",
            "svm.folds=2", "svm.inner_folds=2", "svm.workers=1"]  # fmt: skip
    args = [x for k in keys for x in ("--set", k)]
    assert main(["graphcl", *args, "--out", str(out)]) == 0
    assert main(["graphcl-summary", str(out), "--out", str(tmp_path / "s.json")]) == 0
    assert "SYNTHETIC graphcl:" in capsys.readouterr().out


def test_halp_keys_without_meaning_in_graphcl_are_refused() -> None:
    from halp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"halp\.anchor"):
        load_config(GraphCLConfig, None, ["halp.anchor=query"])
    with pytest.raises(ConfigError, match=r"halp\.warmup_samples"):
        load_config(GraphCLConfig, None, ["halp.warmup_samples=10"])


def test_cli_refuses_a_corrupt_archive_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "MUTAG.zip"
    bad.write_bytes(b"not a zip")
    assert main(["prepare", "tu", "MUTAG", "--out", str(tmp_path), "--source", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("halp prepare: error: ") and "MUTAG.zip" in err
