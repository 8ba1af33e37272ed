"""``halp release`` and ``halp verify``: a round trip; each changed or foreign file refused.

Two tiny runs on one synthetic benchmark (HaLP for two epochs, the baseline for one), each
evaluated with kNN; the releases are copied per test and changed the way a careless or
dishonest hand would change them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from halp import release as rel
from halp.cli import main
from halp.config import EvalConfig, PretrainConfig, load_config
from halp.data import prepare
from halp.data.synthetic import synth_ntu
from halp.errors import ReleaseError
from halp.evaluate import evaluate
from halp.train import pretrain


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished runs, their kNN results, and a release of each."""
    root = tmp_path_factory.mktemp("release")
    synth_ntu(root / "raw", classes=4, per_class=6, seed=1)
    prepare.prepare_ntu("ntu60", [root / "raw"], root / "data", workers=1)
    data = root / "data" / "xsub"
    out: dict[str, Path] = {"data": data, "root": root}
    for name, method, epochs in (("a", "halp", 2), ("b", "baseline", 1)):
        cfg = load_config(
            PretrainConfig,
            "builtin:smoke",
            [f"method={method}", f"data.root={data}", f"optim.epochs={epochs}"],
        )
        run = root / "runs" / f"ntu60_xsub_{name}"
        pretrain(cfg, run)
        result = root / "results" / name / f"ntu60_xsub_{name}_knn.json"
        evaluate(
            EvalConfig(
                protocol="knn", checkpoint=str(run / "final.pt"), data_root=str(data), device="cpu"
            ),
            result,
        )
        out[f"run_{name}"], out[f"result_{name}"] = run, result
        out[name] = rel.release(run, root / f"release_{name}", [result]).folder
    return out


def _copy(made: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(made[name], tmp_path / name))


def _refused(folder: Path, data: Path, pattern: str) -> None:
    with pytest.raises(ReleaseError, match=pattern) as caught:
        rel.verify(folder, data)
    assert "\n" not in str(caught.value)  # one line


def test_round_trip_checks_and_reruns_knn(made: dict[str, Path]) -> None:
    folder = made["a"]
    lines: list[str] = []
    done = rel.verify(folder, made["data"], say=lines.append)
    recorded = json.loads(made["result_a"].read_text())["metrics"]["top1"]
    assert done.knn is not None and done.knn[1] == recorded and done.knn[2] == recorded
    assert done.encoders == ("joint",) and done.results == 1
    # the encoder file: named by its own hash, no optimiser or key encoder, strict reload
    (encoder,) = folder.glob("*.pt")
    digest = rel.sha256_of(encoder)
    assert encoder.name == f"ntu60_xsub_a-{digest[:8]}.pt"
    payload = torch.load(encoder, weights_only=True)
    assert "optimizer" not in payload and "model" not in payload
    full = torch.load(made["run_a"] / "final.pt", weights_only=True)["model"]
    state = payload["encoders"]["joint"]
    assert set(state) == {
        k.removeprefix("branches.joint.encoder_q.")
        for k in full
        if k.startswith("branches.joint.encoder_q.")
    }
    for key, value in state.items():
        assert torch.equal(value, full[f"branches.joint.encoder_q.{key}"])
    # the card: Hugging Face model-index with the recorded number
    header = yaml.safe_load(
        re.match(r"---\n(.*?)\n---\n", (folder / "README.md").read_text(), re.S)[1]
    )  # type: ignore[index]
    (result,) = header["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == pytest.approx(recorded)
    assert result["dataset"]["type"] == "ntu60" and result["dataset"]["split"] == "xsub"
    # the sums file is what sha256sum -c reads: every file but itself
    listed = {line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines()}
    assert listed == {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
    } - {"SHA256SUMS"}


def test_cli_round_trip_and_refusal(
    made: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    assert (
        main(
            [
                "release",
                str(made["run_b"]),
                "--out",
                str(out),
                "--results",
                str(made["root"] / "results"),
            ]
        )
        == 0
    )
    assert [p.name for p in (out / "results").iterdir()] == [
        "ntu60_xsub_b_knn.json"
    ]  # found by hash
    assert main(["verify", str(out), "--data", str(made["data"])]) == 0
    assert "verified" in capsys.readouterr().out
    (out / "metrics.csv").write_text("epoch,loss\n0,0.1\n")
    assert main(["verify", str(out), "--data", str(made["data"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("halp verify: error:") and "metrics.csv" in err and "\n" not in err


def test_tampered_files_are_refused(made: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(made, "a", tmp_path)
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text() + "# edited\n")
    _refused(folder, made["data"], r"config\.yaml: sha256 differs from SHA256SUMS")
    folder = _copy(made, "a", tmp_path / "2")
    (encoder,) = folder.glob("*.pt")
    raw = bytearray(encoder.read_bytes())
    raw[-100] ^= 1
    encoder.write_bytes(bytes(raw))
    _refused(folder, made["data"], re.escape(encoder.name) + ": sha256 differs")
    folder = _copy(made, "a", tmp_path / "3")
    (folder / "extra.txt").write_text("hello")
    _refused(folder, made["data"], r"extra\.txt: not listed in SHA256SUMS")
    folder = _copy(made, "a", tmp_path / "4")
    (folder / "metrics.jsonl").unlink()
    _refused(folder, made["data"], r"metrics\.jsonl: listed in SHA256SUMS but missing")


def test_wrong_hash_prefix_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(made, "a", tmp_path)
    (encoder,) = folder.glob("*.pt")
    wrong = folder / "ntu60_xsub_a-00000000.pt"
    encoder.rename(wrong)
    sums = folder / "SHA256SUMS"
    sums.write_text(sums.read_text().replace(encoder.name, wrong.name))  # the sums made consistent
    _refused(folder, made["data"], r"hash prefix 00000000 is not the file's sha256 prefix")


def test_card_of_another_run_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(made, "a", tmp_path)
    shutil.copyfile(made["b"] / "README.md", folder / "README.md")
    rel.write_sums(folder)  # re-summed, so only the card's identity can tell
    _refused(
        folder,
        made["data"],
        r"README\.md: the card is for encoder ntu60_xsub_b-.* a card from another run",
    )


def test_result_of_another_run_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        ReleaseError, match=r"ntu60_xsub_b_knn\.json: a result of another checkpoint"
    ):
        rel.release(made["run_a"], tmp_path / "r", [made["result_b"]])
    folder = _copy(made, "a", tmp_path)
    shutil.copyfile(made["result_b"], folder / "results" / "ntu60_xsub_b_knn.json")
    rel.write_sums(folder)
    _refused(folder, made["data"], r"ntu60_xsub_b_knn\.json: a result of another checkpoint")


def test_card_number_and_knn_rerun_must_match_the_record(
    made: dict[str, Path], tmp_path: Path
) -> None:
    # a changed number in the card only
    folder = _copy(made, "a", tmp_path)
    card = folder / "README.md"
    text = card.read_text()
    value = re.search(r"value: ([0-9.]+)", text)
    assert value is not None
    card.write_text(text.replace(value[0], "value: 99.5", 1))
    rel.write_sums(folder)
    _refused(folder, made["data"], r"model-index numbers differ from the results")
    # a consistent forgery (record, card and sums all say 99.5): only the rerun tells
    folder = _copy(made, "a", tmp_path / "2")
    record = folder / "results" / "ntu60_xsub_a_knn.json"
    data = json.loads(record.read_text())
    data["metrics"]["top1"] = 99.5
    record.write_text(json.dumps(data))
    card = folder / "README.md"
    card.write_text(card.read_text().replace(value[0], "value: 99.5", 1))
    rel.write_sums(folder)
    _refused(folder, made["data"], r"kNN top-1 rerun [0-9.]+ %, recorded 99\.5000 %")
    # the rerun is on the recorded benchmark only
    _refused(
        made["a"],
        made["data"].parent / "xview",
        r"holds ntu60 xview, the record was made on ntu60 xsub",
    )


def test_release_needs_a_finished_run_and_a_new_folder(
    made: dict[str, Path], tmp_path: Path
) -> None:
    unfinished = tmp_path / "run"
    shutil.copytree(made["run_a"], unfinished)
    (unfinished / "final.pt").unlink()
    with pytest.raises(ReleaseError, match=r"no final\.pt, so the run has not finished"):
        rel.release(unfinished, tmp_path / "out")
    with pytest.raises(ReleaseError, match=r"exists and is not an empty folder"):
        rel.release(made["run_a"], made["a"])
