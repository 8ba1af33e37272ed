"""Downstream protocols: guards, samplers, transfer, results provenance, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from halp.config import EvalConfig, PretrainConfig, load_config
from halp.data import prepare
from halp.data.loaders import ClassificationDataset
from halp.data.storage import load_split
from halp.errors import CheckpointError, DataFormatError, EvaluationError
from halp.eval.classifier import fit_classifier, label_subset
from halp.evaluate import classifier_from_checkpoint, evaluate
from halp.methods.checkpoint import load_checkpoint
from halp.train import pretrain

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "builtin:smoke"


@pytest.fixture(scope="module")
def prepared(synth_ntu_raw: Path, synth_pku_raw: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("data")
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], out / "ntu60")
    prepare.prepare_pku(synth_pku_raw, out / "pku2")
    return out


@pytest.fixture(scope="module")
def checkpoint(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    config = load_config(
        PretrainConfig,
        SMOKE,
        [f"data.root={prepared / 'ntu60' / 'xsub'}", "optim.epochs=2", "log.knn_every=0"],
    )
    pretrain(config, run)
    return run / "checkpoint.pt"


def eval_config(checkpoint: Path, data: Path, *overrides: str) -> EvalConfig:
    base = [
        f"checkpoint={checkpoint}",
        f"data_root={data}",
        "epochs=2",
        "eval_every=1",
        "batch_size=8",
        "workers=0",
        "frames=16",
        "device=cpu",
    ]
    return load_config(EvalConfig, None, [*base, *overrides])


def test_linear_probe_result_and_provenance(
    checkpoint: Path, prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "res" / "ntu60_xsub_halp_linear.json"
    result = evaluate(eval_config(checkpoint, prepared / "ntu60" / "xsub", "lr_preset=cmd"), out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    m = result["metrics"]
    assert 0 <= m["top1"] <= 100 and m["top1"] <= m["best_on_test"]
    assert m["lr"] == 0.1  # the CMD preset
    assert m["lr_preset"] == "cmd"
    assert len(m["runs"][0]["history"]) == 2
    assert (result["protocol"], result["dataset"], result["benchmark"]) == (
        "linear",
        "ntu60",
        "xsub",
    )
    assert result["method"] == "halp" and result["modality"] == "joint"
    assert result["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert result["provenance"]["torch"] == torch.__version__
    assert result["provenance"]["numpy"] == np.__version__
    assert (
        len(result["provenance"]["commit"]) in (40, 7)
        or result["provenance"]["commit"] == "unknown"
    )
    assert result["config"]["protocol"] == "linear" and result["seconds"] > 0
    assert not list(out.parent.glob("*.partial"))


def test_lr_presets(checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    ntu = evaluate(
        eval_config(checkpoint, prepared / "ntu60" / "xsub", "lr_preset=halp", "epochs=1"),
        tmp_path / "a.json",
    )
    pku = evaluate(
        eval_config(checkpoint, prepared / "pku2" / "xsub", "lr_preset=halp", "epochs=1"),
        tmp_path / "b.json",
    )
    own = evaluate(
        eval_config(checkpoint, prepared / "pku2" / "xsub", "lr=0.02", "epochs=1"),
        tmp_path / "c.json",
    )
    assert (ntu["metrics"]["lr"], pku["metrics"]["lr"], own["metrics"]["lr"]) == (
        0.005,
        0.001,
        0.02,
    )
    # the default: the rate behind the method's published rows (a HaLP checkpoint here)
    default = evaluate(
        eval_config(checkpoint, prepared / "pku2" / "xsub", "epochs=1"), tmp_path / "d.json"
    )
    assert (default["metrics"]["lr"], default["metrics"]["lr_preset"]) == (0.001, "halp")


@pytest.mark.parametrize(
    "method,dataset,expected",
    [
        ("baseline", "ntu60", (0.005, "halp")),
        ("halp", "ntu120", (0.005, "halp")),
        ("halp_cmd", "pku2", (0.001, "halp")),
        ("cmd", "ntu60", (0.1, "cmd")),
        ("cmd", "pku2", (0.1, "cmd")),
    ],
)
def test_published_lr_preset_follows_the_method(
    method: str, dataset: str, expected: tuple[float, str]
) -> None:
    """Each published cell is reproduced with the learning rate that produced it."""
    from halp.evaluate import protocol_lr

    config = load_config(EvalConfig, None, ["protocol=linear"])
    assert protocol_lr(config, dataset, method) == expected
    other = load_config(EvalConfig, None, ["protocol=linear", "lr_preset=cmd"])
    assert protocol_lr(other, dataset, method) == (0.1, "cmd")  # one key away
    semi = load_config(EvalConfig, None, ["protocol=semi", "label_fraction=0.1"])
    assert protocol_lr(semi, dataset, method) == (0.01, "finetune")


def test_loading_guard_and_frozen_encoder_guard(checkpoint: Path, prepared: Path) -> None:
    payload = load_checkpoint(checkpoint)
    model = classifier_from_checkpoint(payload, "joint", 60)
    encoder_keys = {
        k
        for k in payload["model"]
        if k.startswith("branches.joint.encoder_q.") and ".projection." not in k
    }
    assert len(model.encoder.state_dict()) == len(encoder_keys)
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, payload["model"][f"branches.joint.encoder_q.{key}"])
    broken = dict(
        payload,
        model={k: v for k, v in payload["model"].items() if not k.endswith("gru.weight_hh_l0")},
    )
    with pytest.raises(EvaluationError, match=r"missing keys.*gru\.weight_hh_l0"):
        classifier_from_checkpoint(broken, "joint", 60)
    with pytest.raises(EvaluationError, match="no 'bone' encoder"):
        classifier_from_checkpoint(payload, "bone", 60)

    # the probe trains only fc and leaves the encoder bit-identical ...
    split = load_split(prepared / "ntu60" / "xsub", "train")
    data = ClassificationDataset(split, out_frames=16)
    config = eval_config(checkpoint, prepared / "ntu60" / "xsub", "epochs=1")
    fc_before = model.fc.weight.detach().clone()
    fit_classifier(model, data, data, config, 0.1, True, torch.device("cpu"), 0)
    assert not torch.equal(fc_before, model.fc.weight)
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, payload["model"][f"branches.joint.encoder_q.{key}"]), key
    # ... and a probe whose encoder moves is caught
    model = classifier_from_checkpoint(payload, "joint", 60)

    def drift(module: torch.nn.Module, inputs: object, output: object) -> None:
        module.running_mean.add_(1.0)  # type: ignore[operator]

    model.encoder.input_norm.register_forward_hook(drift)
    with pytest.raises(EvaluationError, match="changed frozen encoder tensors"):
        fit_classifier(model, data, data, config, 0.1, True, torch.device("cpu"), 0)


def test_label_subsets() -> None:
    labels = np.repeat(np.arange(5), 20)  # 100 samples, 5 classes
    a = label_subset(labels, 0.1, "random", seed=3)
    assert len(a) == 10 and np.array_equal(a, label_subset(labels, 0.1, "random", seed=3))
    assert not np.array_equal(a, label_subset(labels, 0.1, "random", seed=4))
    b = label_subset(labels, 0.01, "per_class", seed=0)
    assert sorted(set(labels[b])) == [0, 1, 2, 3, 4] and len(b) == 5
    assert len(label_subset(labels, 1.0, "random", 0)) == 100
    with pytest.raises(EvaluationError, match=r"0\.001 of 100 training samples is 0 samples"):
        label_subset(labels, 0.001, "random", 0)
    with pytest.raises(EvaluationError, match="not in"):
        label_subset(labels, 0.0, "random", 0)


def test_semi_supervised_repeats(checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    config = eval_config(
        checkpoint,
        prepared / "ntu60" / "xsub",
        "protocol=semi",
        "label_fraction=0.5",
        "repeats=2",
        "epochs=1",
    )
    m = evaluate(config, tmp_path / "semi.json")["metrics"]
    assert [r["seed"] for r in m["runs"]] == [42, 43]
    assert all(r["labelled"] == round(0.5 * 29) for r in m["runs"])
    tops = [r["top1"] for r in m["runs"]]
    assert m["top1"] == pytest.approx(np.mean(tops)) and m["top1_std"] == pytest.approx(
        np.std(tops)
    )
    assert m["lr"] == 0.01
    with pytest.raises(EvaluationError, match="0 samples"):
        evaluate(
            eval_config(
                checkpoint, prepared / "ntu60" / "xsub", "protocol=semi", "label_fraction=0.01"
            ),
            tmp_path / "x.json",
        )
    with pytest.raises(EvaluationError, match="semi needs a fraction below 1"):
        evaluate(
            eval_config(checkpoint, prepared / "ntu60" / "xsub", "protocol=semi"),
            tmp_path / "x.json",
        )


def test_transfer_takes_the_class_count_of_the_target(
    checkpoint: Path, prepared: Path, tmp_path: Path
) -> None:
    result = evaluate(
        eval_config(checkpoint, prepared / "pku2" / "xsub", "protocol=transfer", "epochs=1"),
        tmp_path / "t.json",
    )
    assert (result["dataset"], result["pretrained_on"]) == ("pku2", "ntu60")
    assert result["metrics"]["lr"] == 0.01
    run = result["metrics"]["runs"][0]
    assert run["classes"] == 51  # PKU-MMD II's classes, not the checkpoint's 60
    assert run["trainable_tensors"] > 2  # the whole network is fine-tuned
    with pytest.raises(EvaluationError, match="transfer needs a target other than"):
        evaluate(
            eval_config(checkpoint, prepared / "ntu60" / "xsub", "protocol=transfer"),
            tmp_path / "x.json",
        )


def test_knn_protocol(checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    result = evaluate(
        eval_config(checkpoint, prepared / "ntu60" / "xsub", "protocol=knn", "k=3"),
        tmp_path / "k.json",
    )
    assert result["metrics"]["k"] == 3 and 0 <= result["metrics"]["top1"] <= 100
    # the same protocol written out with scikit-learn on independently extracted features
    neighbors = pytest.importorskip("sklearn.neighbors")
    from halp.eval.knn import extract_features

    model = classifier_from_checkpoint(load_checkpoint(checkpoint), "joint", 60)
    splits = [load_split(prepared / "ntu60" / "xsub", part) for part in ("train", "test")]
    (g, gl), (f, fl) = (
        extract_features(
            model.encoder,
            ClassificationDataset(s, "joint", train=False, out_frames=16, seed=42),
        )
        for s in splits
    )
    knn = neighbors.KNeighborsClassifier(n_neighbors=3, metric="cosine").fit(g.numpy(), gl)
    expected = 100.0 * float((knn.predict(f.numpy()) == fl.numpy()).mean())
    assert result["metrics"]["top1"] == pytest.approx(expected, abs=1e-4)  # float32 percent


@pytest.mark.parametrize("protocol,trainable", [("linear", 2), ("finetune", None), ("semi", None)])
def test_only_the_linear_probe_freezes_the_encoder(
    checkpoint: Path, prepared: Path, tmp_path: Path, protocol: str, trainable: int | None
) -> None:
    extra = ["label_fraction=0.5"] if protocol == "semi" else []
    result = evaluate(
        eval_config(
            checkpoint, prepared / "ntu60" / "xsub", f"protocol={protocol}", "epochs=1", *extra
        ),
        tmp_path / f"{protocol}.json",
    )
    run = result["metrics"]["runs"][0]
    assert run["classes"] == 60
    if trainable is None:
        assert run["trainable_tensors"] > 2
    else:
        assert run["trainable_tensors"] == trainable


def test_bad_inputs(checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    data = prepared / "ntu60" / "xsub"
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a halp pretraining checkpoint"):
        evaluate(eval_config(tmp_path / "foreign.pt", data), tmp_path / "x.json")
    bad = tmp_path / "bad"
    for part in ("train", "test"):
        (bad / "xsub").mkdir(parents=True, exist_ok=True)
        (bad / "xsub" / f"{part}.npy").symlink_to(data / f"{part}.npy")
        index = json.loads((data / f"{part}.json").read_text())
        index["num_classes"] = 3  # the synthetic labels go up to 5
        (bad / "xsub" / f"{part}.json").write_text(json.dumps(index))
    # every reader of a prepared part checks its labels (halp.data.storage.read_index)
    with pytest.raises(DataFormatError, match="does not fit the dataset's 3 classes"):
        evaluate(eval_config(checkpoint, bad / "xsub"), tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
