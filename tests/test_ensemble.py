"""Late-fusion ensembles: scores files, the fused top-1, refusals, ``halp evaluate ensemble``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from halp.cli import main
from halp.config import EvalConfig, PretrainConfig, load_config
from halp.data import prepare
from halp.data.storage import SplitIndex, load_split
from halp.encoders.base import Encoder
from halp.errors import EvaluationError
from halp.eval.classifier import Classifier, fit_classifier, top1_of
from halp.eval.ensemble import ensemble, fuse, names_fingerprint, save_scores, scores_path
from halp.evaluate import evaluate
from halp.report.results import read_result
from halp.train import pretrain

# Five test samples, three classes. Joint gets 1 and 3 wrong (top-1 40 %), motion 2 (60 %).
# Sample 1: joint wrong, every fusion right. Sample 3: right only when motion weighs more.
# Sample 4: right with logits summed, wrong with softmax probabilities summed.
LABELS = np.array([0, 1, 2, 0, 1])
JOINT = np.array(
    [[2, 1, 0], [1, 0.5, 0], [0, 0, 3], [0, 2, 0], [4, 0, 0]], dtype=np.float32
)  # argmax 0 0 2 1 0
MOTION = np.array(
    [[0, 1.5, 0], [0, 2, 0], [1, 0, 0], [1.5, 0, 0], [0, 5, 4.9]], dtype=np.float32
)  # argmax 1 1 0 0 1


def write_member(
    folder: Path,
    stem: str,
    scores: np.ndarray,
    labels: np.ndarray = LABELS,
    names: list[str] | None = None,
    *,
    num_classes: int = 3,
    **fields: Any,
) -> Path:
    """A results JSON and its scores file as ``halp evaluate`` writes them (by hand)."""
    names = names or [f"S001C001P001R001A{i:03d}" for i in range(len(labels))]
    index = SplitIndex(
        dataset=fields.get("dataset", "ntu60"),
        benchmark=fields.get("benchmark", "xsub"),
        part="test",
        num_classes=num_classes,
        names=names,
        labels=np.asarray(labels),
        frames=np.full(len(labels), 50),
    )
    path = folder / f"{stem}.json"
    top1 = top1_of(scores, labels)
    result = {
        "protocol": "linear",
        "dataset": index.dataset,
        "benchmark": index.benchmark,
        "method": "hiclr",
        "modality": fields.get("modality", stem),
        "pretrained_on": index.dataset,
        "encoder_init": "pretrained",
        "metrics": {"top1": top1, "runs": [{"seed": 42, "top1": top1}]},
        **save_scores(path, scores, index, seed=42),
        "config": {"label_fraction": 1.0, "data_root": "data/ntu60/xsub"},
        "checkpoint": {"path": f"runs/{stem}/final.pt", "sha256": "0" * 64},
    }
    for key, value in fields.items():
        if key not in ("dataset", "benchmark"):
            result[key] = value
    path.write_text(json.dumps(result))
    return path


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Path]:
    return {
        "joint": write_member(tmp_path, "joint", JOINT),
        "motion": write_member(tmp_path, "motion", MOTION),
    }


# ------------------------------------------------------------------------ fusion


def test_the_ensemble_equals_a_hand_computation(pair: dict[str, Path], tmp_path: Path) -> None:
    # sum of logits, weights 1 and 2, written out
    hand = [[2, 4, 0], [1, 4.5, 0], [2, 0, 3], [3, 2, 0], [4, 10, 9.8]]
    assert fuse([JOINT, MOTION], [1.0, 2.0]) == pytest.approx(np.array(hand))
    out = tmp_path / "results" / "ntu60_xsub_hiclr-3s_linear.json"
    cases = [
        ({}, 60.0),  # argmax 1 1 2 1 1: sample 1 fixed, sample 0 lost
        ({"motion": 2.0}, 80.0),  # argmax 1 1 2 0 1: sample 3 follows motion
        ({"joint": 2.0}, 60.0),  # argmax 0 1 2 1 0
        ({"motion": 0.0}, 40.0),  # joint alone
    ]
    for weights, expected in cases:
        result = ensemble(pair, weights, out)
        assert result["metrics"]["top1"] == pytest.approx(expected), weights
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    m = result["metrics"]
    assert m["weights"] == {"joint": 1.0, "motion": 0.0}
    assert m["members"]["joint"] == {"top1": 40.0, "weight": 1.0, "path": str(pair["joint"])}
    assert m["members"]["motion"]["top1"] == pytest.approx(60.0)
    assert (result["protocol"], result["dataset"], result["benchmark"]) == (
        "linear",
        "ntu60",
        "xsub",
    )
    assert (result["method"], result["modality"]) == ("hiclr", "ensemble")
    for name, path in pair.items():
        row = result["members"][name]
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert row["scores_sha256"] == hashlib.sha256(scores_path(path).read_bytes()).hexdigest()
    assert result["test_set"]["names_sha256"] == names_fingerprint(
        [f"S001C001P001R001A{i:03d}" for i in range(5)]
    )
    assert "commit" in result["provenance"]
    # the tables read it as the "3s" variant of HiCLR's linear row
    row = read_result(out)
    assert (row.variant, row.protocol, row.top1) == ("hiclr-3s", "linear", 40.0)


def test_three_members_and_scores_files_are_not_results(tmp_path: Path) -> None:
    bone = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1]], np.float32)
    members = {
        "joint": write_member(tmp_path, "j", JOINT, modality="joint"),
        "motion": write_member(tmp_path, "m", MOTION, modality="motion"),
        "bone": write_member(tmp_path, "b", bone, modality="bone"),
    }
    # joint + motion + bone: argmax 1 1 2 1 2, so bone tips sample 4 over (60 % without it)
    out = tmp_path / "ntu60_xsub_hiclr-3s_linear.json"
    assert ensemble(members, None, out)["metrics"]["top1"] == pytest.approx(40.0)
    from halp.report.results import read_inputs

    inputs = read_inputs(tmp_path)  # j.scores.npz etc. are neither read nor complained of
    assert list(inputs.results) == [out.name]
    assert not any(name.endswith(".npz") for name in inputs.ignored)


# ------------------------------------------------------------------------ refusals


def _other(tmp_path: Path, **kw: Any) -> Path:
    folder = tmp_path / "other"
    folder.mkdir(exist_ok=True)
    return write_member(folder, "motion", kw.pop("scores", MOTION), **kw)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda t: _other(t, dataset="ntu120"), r"differ in dataset: 'ntu60' vs 'ntu120'"),
        (lambda t: _other(t, benchmark="xview"), r"differ in benchmark: 'xsub' vs 'xview'"),
        (
            lambda t: _other(t, scores=np.pad(MOTION, ((0, 0), (0, 1))), num_classes=4),
            "differ in number of classes: 3 vs 4",
        ),
        (
            lambda t: _other(t, names=[f"S002C001P001R001A{i:03d}" for i in range(5)]),
            r"differ in test set \(sha256 of its sample names\)",
        ),
        (lambda t: _other(t, labels=np.array([0, 1, 2, 0, 2])), "differ in their test labels"),
        (lambda t: _other(t, protocol="finetune"), "differ in protocol: 'linear' vs 'finetune'"),
        (lambda t: _other(t, method="aimclr"), "differ in method: 'hiclr' vs 'aimclr'"),
        (lambda t: _other(t, pretrained_on="ntu120"), "differ in pretrained_on"),
        (
            lambda t: _other(t, config={"label_fraction": 0.1}),
            "differ in config.label_fraction: 1.0 vs 0.1",
        ),
    ],
    ids=[
        "dataset",
        "benchmark",
        "classes",
        "names",
        "labels",
        "protocol",
        "method",
        "pretrained_on",
        "label_fraction",
    ],
)
def test_members_that_do_not_fit_together_are_refused(
    tmp_path: Path, make: Any, match: str
) -> None:
    joint = write_member(tmp_path, "joint", JOINT)
    other = make(tmp_path)
    out = tmp_path / "out.json"
    with pytest.raises(EvaluationError, match=match) as info:
        ensemble({"joint": joint, "motion": other}, None, out)
    assert str(joint) in str(info.value) or str(scores_path(joint)) in str(info.value)
    assert str(other) in str(info.value) or str(scores_path(other)) in str(info.value)
    assert not out.exists()


def test_missing_replaced_or_inconsistent_scores_are_refused(
    pair: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    motion = pair["motion"]
    saved = scores_path(motion).read_bytes()
    scores_path(motion).unlink()
    with pytest.raises(EvaluationError, match=r"motion.scores.npz of .* is missing") as info:
        ensemble(pair, None, out)
    assert "rerun `halp evaluate linear --checkpoint runs/motion/final.pt" in str(info.value)
    assert "--data data/ntu60/xsub" in str(info.value)
    # a scores file that is not the one the JSON was written with
    (tmp_path / "x").mkdir()
    write_member(tmp_path / "x", "motion", JOINT)
    scores_path(motion).write_bytes(scores_path(tmp_path / "x" / "motion.json").read_bytes())
    with pytest.raises(EvaluationError, match=r"not the scores file .* was written with"):
        ensemble(pair, None, out)
    # a JSON whose top-1 is not its scores' (sha256 entry dropped: only the check remains)
    scores_path(motion).write_bytes(saved)
    data = json.loads(motion.read_text())
    del data["scores_sha256"]
    data["metrics"]["runs"][0]["top1"] = 80.0
    motion.write_text(json.dumps(data))
    with pytest.raises(EvaluationError, match=r"give top-1 60\.0+ % but .* reports 80\.0+ %"):
        ensemble(pair, None, out)
    # a results JSON from before scores were saved, and a kNN one
    del data["scores"]
    motion.write_text(json.dumps(data))
    with pytest.raises(EvaluationError, match=r"names no scores file.*rerun `halp evaluate"):
        ensemble(pair, None, out)
    motion.write_text(json.dumps({**data, "protocol": "knn"}))
    with pytest.raises(EvaluationError, match="kNN result, which has no classifier scores"):
        ensemble(pair, None, out)
    assert not out.exists()


@pytest.mark.parametrize(
    "weights,match",
    [
        ({"bone": 1.0}, r"weights given for \['bone'\], which name no member"),
        ({"motion": -1.0}, r"finite and 0 or more, got \{'motion': -1.0\}"),
        ({"motion": float("nan")}, "finite and 0 or more"),
        ({"joint": 0.0, "motion": 0.0}, "all weights are 0"),
    ],
)
def test_bad_weights_are_refused(
    pair: dict[str, Path], tmp_path: Path, weights: dict[str, float], match: str
) -> None:
    with pytest.raises(EvaluationError, match=match):
        ensemble(pair, weights, tmp_path / "out.json")


def test_one_member_the_same_file_twice_or_over_a_member_are_refused(
    pair: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(EvaluationError, match="2 or more members, got 1"):
        ensemble({"joint": pair["joint"]}, None, tmp_path / "out.json")
    with pytest.raises(EvaluationError, match="'joint' and 'again' are the same file"):
        ensemble({"joint": pair["joint"], "again": pair["joint"]}, None, tmp_path / "o.json")
    with pytest.raises(EvaluationError, match="is member 'motion'"):
        ensemble(pair, None, pair["motion"])


# ------------------------------------------------------------------------ the command line


def test_the_cli_verb_end_to_end(
    pair: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results" / "ntu60_xsub_hiclr-3s_linear.json"
    argv = ["evaluate", "ensemble", "--member", f"joint={pair['joint']}"]
    argv += ["--member", f"motion={pair['motion']}", "--out", str(out)]
    assert main([*argv, "--weight", "motion=2"]) == 0
    assert "ensemble top-1 80.00 %" in capsys.readouterr().out
    assert json.loads(out.read_text())["metrics"]["weights"] == {"joint": 1.0, "motion": 2.0}
    out.unlink()
    # refusals are one line, exit status 2, and write nothing
    for extra, message in [
        (["--weight", "bone=1"], "name no member"),
        (["--weight", "motion=two"], "--weight motion=two: not a number"),
        (["--weight", "motion"], "expected NAME=VALUE"),
        (["--member", f"joint={pair['motion']}"], "'joint' is given twice"),
    ]:
        assert main([*argv, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("halp evaluate: error:") and message in err, err
    one = ["evaluate", "ensemble", "--member", f"joint={pair['joint']}", "--out", str(out)]
    assert main(one) == 2 and "2 or more --member" in capsys.readouterr().err
    # a results name that halp tables would refuse (another method) is refused before writing
    wrong = tmp_path / "results" / "ntu60_xsub_cmd-3s_linear.json"
    assert main([*argv[:-1], str(wrong)]) == 2
    assert "method is 'hiclr' but the file name says 'cmd'" in capsys.readouterr().err
    assert not out.exists() and not wrong.exists()
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    printed = capsys.readouterr().out
    assert "ensemble" in printed and "label_fraction = 1.0" in printed


# ------------------------------------------------------------------------ evaluate() writes scores


class _Tiny(Encoder):
    """Linear + BatchNorm features: both move while fine-tuning."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6))
        self.projection = torch.nn.Linear(6, 3)

    @property
    def feature_dim(self) -> int:
        return 6

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class _Fit:
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 4
    epochs: int = 3
    lr_steps: list[int] = field(default_factory=list)
    lr_gamma: float = 1.0
    eval_every: int = 1
    workers: int = 0


def test_fit_classifier_returns_the_final_models_test_scores_in_test_order() -> None:
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = Classifier(_Tiny(), 3)
    out = fit_classifier(
        model, TensorDataset(x[:20], y[:20]), TensorDataset(x[20:], y[20:]), _Fit(), 0.5, False,
        torch.device("cpu"), 0,
    )  # fmt: skip
    model.eval()
    with torch.no_grad():
        final = model(x[20:]).numpy()  # after the last epoch, not an earlier evaluation's
    assert out["scores"].dtype == np.float32 and np.array_equal(out["scores"], final)
    assert out["top1"] == top1_of(out["scores"], y[20:].numpy())
    assert len(out["history"]) == 3


@pytest.fixture(scope="module")
def smoke(synth_ntu_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A prepared synthetic NTU-60 and a 1-epoch smoke checkpoint."""
    root = tmp_path_factory.mktemp("ens")
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], root / "ntu60")
    config = load_config(
        PretrainConfig,
        "builtin:smoke",
        [f"data.root={root / 'ntu60' / 'xsub'}", "optim.epochs=1", "log.knn_every=0"],
    )
    pretrain(config, root / "run")
    return root / "run" / "checkpoint.pt", root / "ntu60" / "xsub"


def _eval(smoke: tuple[Path, Path], *overrides: str) -> EvalConfig:
    checkpoint, data = smoke
    base = [f"checkpoint={checkpoint}", f"data_root={data}", "epochs=1", "batch_size=8"]
    base += ["workers=0", "frames=16", "device=cpu", "lr=0.5"]
    return load_config(EvalConfig, None, [*base, *overrides])


def test_evaluate_writes_the_final_classifiers_scores(
    smoke: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    linear = tmp_path / "ntu60_xsub_halp_linear.json"
    result = evaluate(_eval(smoke), linear)
    npz = tmp_path / "ntu60_xsub_halp_linear.scores.npz"
    assert result["scores"] == npz.name
    assert result["scores_sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()
    test = load_split(smoke[1], "test")
    with np.load(npz) as f:
        scores, labels = f["scores"], f["labels"]
        assert scores.dtype == np.float32 and scores.shape == (len(test), 60)
        assert labels.dtype == np.int64 and np.array_equal(labels, test.index.labels)
        assert str(f["names_sha256"]) == names_fingerprint(test.index.names)
        assert (str(f["dataset"]), str(f["benchmark"]), int(f["num_classes"])) == (
            "ntu60",
            "xsub",
            60,
        )
    assert len(np.unique(scores.argmax(1))) > 1  # not a constant classifier
    assert 100.0 * float(np.mean(scores.argmax(1) == labels)) == pytest.approx(
        result["metrics"]["top1"], abs=1e-9
    )
    assert "scores" not in result["metrics"]["runs"][0]  # not inlined in the JSON
    # repeats: the first repeat's classifier, whose accuracy is that run's
    semi = tmp_path / "ntu60_xsub_halp_semi50.json"
    m = evaluate(_eval(smoke, "protocol=semi", "label_fraction=0.5", "repeats=2"), semi)
    single = tmp_path / "one" / "ntu60_xsub_halp_semi50.json"
    evaluate(_eval(smoke, "protocol=semi", "label_fraction=0.5"), single)
    with np.load(scores_path(semi)) as f, np.load(scores_path(single)) as one:
        assert np.array_equal(f["scores"], one["scores"])  # the seed-42 classifier's, alone
        assert top1_of(f["scores"], f["labels"]) == m["metrics"]["runs"][0]["top1"]
        assert int(f["seed"]) == m["metrics"]["runs"][0]["seed"] == 42
    # kNN trains no classifier and writes no scores
    knn = tmp_path / "ntu60_xsub_halp_knn.json"
    assert "scores" not in evaluate(_eval(smoke, "protocol=knn"), knn)
    assert not scores_path(knn).exists()
    # two real members through the verb: the fused top-1 of the saved scores
    other = tmp_path / "seed7" / "ntu60_xsub_halp_linear.json"
    evaluate(_eval(smoke, "seed=7"), other)
    out = tmp_path / "ens" / "ntu60_xsub_halp-2s_linear.json"
    argv = ["evaluate", "ensemble", "--member", f"a={linear}", "--member", f"b={other}"]
    assert main([*argv, "--weight", "b=0.5", "--out", str(out)]) == 0
    with np.load(scores_path(linear)) as a, np.load(scores_path(other)) as b:
        fused = a["scores"].astype(np.float64) + 0.5 * b["scores"]
        expected = 100.0 * float(np.mean(fused.argmax(1) == a["labels"]))
    assert json.loads(out.read_text())["metrics"]["top1"] == pytest.approx(expected)
    assert read_result(out).variant == "halp-2s"
    # the protocol of a member is checked on real files too
    assert main([*argv[:-1], f"b={semi}", "--out", str(out)]) == 2
    assert "differ in protocol: 'linear' vs 'semi'" in capsys.readouterr().err


def test_members_must_be_the_streams_they_are_named_after(tmp_path: Path) -> None:
    """A typo that fuses the joint model twice, or two settings, is refused."""
    joint = write_member(tmp_path, "joint", JOINT)
    twice = write_member(tmp_path, "again", MOTION, modality="joint")
    with pytest.raises(EvaluationError, match="is a model of the 'joint' stream"):
        ensemble({"joint": joint, "motion": twice}, None, tmp_path / "out.json")
    # other names (e.g. two seeds of one stream) are free
    ensemble({"joint": joint, "seed2": twice}, None, tmp_path / "out.json")
    other = write_member(
        tmp_path,
        "motion",
        MOTION,
        pretrain_config={"encoder": {"arch": "stgcn"}, "data": {"recipe": "crossclr"}},
    )
    with pytest.raises(EvaluationError, match=r"pretraining encoder\.arch"):
        ensemble({"joint": joint, "motion": other}, None, tmp_path / "out.json")
