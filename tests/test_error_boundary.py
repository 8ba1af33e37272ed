"""The error boundary (issue 25, class 2): no damaged input reaches the user as a traceback.

One table: every reader of the package (prepared splits, import-cmd, config YAML and
values, checkpoints, metrics.jsonl on resume, raw NTU / PKU-MMD / TU files, prepared TU
folders, results JSONs of tables / ensemble / graphcl-summary) is fed a family of
damaged files through the command line (:func:`halp.cli.main`, in-process). Each case
must end as the one-line ``halp VERB: error: ...`` with exit status 2, naming the damaged
file (or config key); anything else, an escaped exception above all, fails the case.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from halp.cli import main
from halp.data import tu
from halp.data.storage import load_split

# ------------------------------------------------------------------ the intact inputs


@dataclass(frozen=True)
class Inputs:
    """Intact inputs, written once; every case damages its own copy."""

    prepared: Path  # ntu60/ with manifest.json and xsub/
    checkpoint: Path
    run: Path  # a finished 1-epoch run folder
    cmd: Path  # a CMD/ISC-layout folder named xsub
    ntu_raw: Path
    pku_raw: Path
    tu_source: Path  # X_*.txt
    tu_root: Path  # ROOT/X/raw as prepared
    results: Path  # one results JSON + scores, named for halp tables
    seed_result: Path  # a per-seed graph result


@pytest.fixture(scope="module")
def inputs(
    tmp_path_factory: pytest.TempPathFactory, synth_ntu_raw: Path, synth_pku_raw: Path
) -> Inputs:
    from halp.data import prepare

    base = tmp_path_factory.mktemp("intact")
    prepared = base / "ntu60"
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], prepared)
    shutil.rmtree(prepared / "xview")
    data = prepared / "xsub"
    smoke = ["--config", "builtin:smoke", "--set", f"data.root={data}"]
    one = ["--set", "optim.epochs=1", "--set", "log.knn_every=0", "--set", "halp.mu_start_epoch=0"]
    assert main(["-q", "pretrain", *smoke, *one, "--run", str(base / "run")]) == 0
    checkpoint = base / "run" / "checkpoint.pt"
    cmd = base / "cmd" / "xsub"
    cmd.mkdir(parents=True)
    for ours, theirs in (("train", "train"), ("test", "val")):
        split = load_split(data, ours)
        np.save(cmd / f"{theirs}_data_joint.npy", np.array(split.data))
        names = [f"{n}.skeleton" for n in split.index.names]
        with open(cmd / f"{theirs}_label.pkl", "wb") as fh:
            pickle.dump((names, split.index.labels.tolist()), fh)
        np.save(cmd / f"{theirs}_num_frame.npy", split.index.frames)
    ntu_raw = base / "ntu_raw"
    ntu_raw.mkdir()
    for path in sorted(synth_ntu_raw.rglob("*.skeleton"))[:6]:
        shutil.copyfile(path, ntu_raw / path.name)
    tu_source = base / "tu_source"
    tu.write_tu(tu_source, "X", tu.synthetic_tu(graphs=24, seed=0))
    tu_root = base / "tu_root"
    tu.prepare_tu("X", tu_root, source=tu_source)
    results = base / "results"
    result = results / "ntu60_xsub_halp_linear.json"
    evaluate = ["-q", "evaluate", "linear", "--checkpoint", str(checkpoint), "--data", str(data)]
    fast = ["--set", "epochs=1", "--set", "batch_size=8", "--set", "workers=0"]
    assert main([*evaluate, *fast, "--set", "device=cpu", "--out", str(result)]) == 0
    seed_result = base / "seed.json"
    seed_result.write_text(json.dumps({"kind": "graph_svm_seed", "dataset": "X", "seed": 0}))
    return Inputs(
        prepared, checkpoint, base / "run", cmd, ntu_raw, synth_pku_raw, tu_source, tu_root,
        results, seed_result,
    )  # fmt: skip


# ------------------------------------------------------------------ damage


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 2)])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def text(content: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(content, encoding="utf-8")

    return write


def json_edit(change: Callable[[Any], Any]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return edit


def set_key(key: str, value: Any) -> Callable[[Any], Any]:
    def change(obj: Any) -> Any:
        obj[key] = value
        return obj

    return change


def npy(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        np.save(path, change(np.load(path)), allow_pickle=True)

    return edit


def with_nan(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array[len(array) // 2, 0, 3, 4, 0] = np.nan
    return array


def with_inf(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array[0, 1, 0, 0, 0] = np.inf
    return array


def objects(array: np.ndarray) -> np.ndarray:
    out = np.empty(len(array), dtype=object)
    out[:] = [a for a in array]
    return out


def pickled(obj: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(pickle.dumps(obj))

    return write


def lines_edit(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join(change(lines)) + "\n", encoding="utf-8")

    return edit


def line(number: int, content: str) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        lines[number] = content
        return lines

    return change


def checkpoint_edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        torch.save(change(torch.load(path, weights_only=True)), path)

    return edit


def drop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(payload: dict[str, Any]) -> dict[str, Any]:
        del payload[key]
        return payload

    return change


def nan_weights(payload: dict[str, Any]) -> dict[str, Any]:
    payload["model"] = {k: v.float().fill_(float("nan")) for k, v in payload["model"].items()}
    return payload


def one_nan_weight(payload: dict[str, Any]) -> dict[str, Any]:
    key = next(k for k in payload["model"] if "encoder_q" in k and "weight" in k)
    payload["model"][key].view(-1)[0] = float("nan")
    return payload


def config_edit(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(payload: dict[str, Any]) -> dict[str, Any]:
        payload["config"]["encoder"][key] = value
        return payload

    return change


# ------------------------------------------------------------------ the readers


@dataclass(frozen=True)
class Reader:
    """How to copy a reader's intact input into ``work`` and run the verb that reads it."""

    verb: str
    copy: Callable[[Inputs, Path], None]
    argv: Callable[[Inputs, Path], list[str]]


def _copytree(attr: str, name: str) -> Callable[[Inputs, Path], None]:
    return lambda i, w: shutil.copytree(getattr(i, attr), w / name) and None


def _knn(i: Inputs, w: Path, data: Path | None = None, ckpt: Path | None = None) -> list[str]:
    return [
        "evaluate", "knn", "--checkpoint", str(ckpt or i.checkpoint),
        "--data", str(data or i.prepared / "xsub"), "--set", "device=cpu",
        "--set", "workers=0", "--out", str(w / "out.json"),
    ]  # fmt: skip


def _pretrain(i: Inputs, w: Path, *extra: str) -> list[str]:
    return [
        "pretrain", "--config", "builtin:smoke", "--set", f"data.root={i.prepared / 'xsub'}",
        "--set", "optim.epochs=2", "--set", "log.knn_every=0", "--set", "halp.mu_start_epoch=0",
        "--run", str(w / "run"), *extra,
    ]  # fmt: skip


def _copy_results(i: Inputs, w: Path) -> None:
    shutil.copytree(i.results, w / "results")
    shutil.copytree(i.results, w / "other")  # the second ensemble member


READERS: dict[str, Reader] = {
    "split": Reader("evaluate", _copytree("prepared", "ntu60"),
                    lambda i, w: _knn(i, w, data=w / "ntu60" / "xsub")),
    "import-cmd": Reader("prepare", _copytree("cmd", "xsub"),
                         lambda i, w: ["prepare", "import-cmd", str(w / "xsub"), "--out",
                                       str(w / "out"), "--dataset", "ntu60"]),
    "config": Reader("pretrain", lambda i, w: (w / "c.yaml").write_text("seed: 1\n") and None,
                     lambda i, w: ["pretrain", "--config", str(w / "c.yaml"),
                                   *_pretrain(i, w)[3:]]),
    "checkpoint": Reader("evaluate", lambda i, w: shutil.copyfile(i.checkpoint, w / "c.pt")
                         and None, lambda i, w: _knn(i, w, ckpt=w / "c.pt")),
    "metrics": Reader("pretrain", _copytree("run", "run"),
                      lambda i, w: _pretrain(i, w, "--resume")),
    "ntu-raw": Reader("prepare", _copytree("ntu_raw", "raw"),
                      lambda i, w: ["prepare", "ntu60", "--raw", str(w / "raw"), "--out",
                                    str(w / "out"), "--workers", "1"]),
    "pku-raw": Reader("prepare", _copytree("pku_raw", "raw"),
                      lambda i, w: ["prepare", "pku2", "--raw", str(w / "raw"), "--out",
                                    str(w / "out"), "--workers", "1"]),
    "tu-source": Reader("prepare", _copytree("tu_source", "src"),
                        lambda i, w: ["prepare", "tu", "X", "--source", str(w / "src"),
                                      "--out", str(w / "root")]),
    "tu-zip": Reader("prepare",
                     lambda i, w: shutil.make_archive(str(w / "X"), "zip", i.tu_source) and None,
                     lambda i, w: ["prepare", "tu", "X", "--source", str(w / "X.zip"),
                                   "--out", str(w / "root")]),
    "tu-prepared": Reader("graphcl", _copytree("tu_root", "root"),
                          lambda i, w: ["graphcl", "--set", "dataset=X", "--set",
                                        f"root={w / 'root'}", "--set", "epochs=1",
                                        "--out", str(w / "r.json")]),
    "tables": Reader("tables", _copy_results,
                     lambda i, w: ["tables", "--results", str(w / "results"), "--out",
                                   str(w / "tables")]),
    "ensemble": Reader("evaluate", _copy_results,
                       lambda i, w: ["evaluate", "ensemble", "--member",
                                     f"a={w / 'results' / 'ntu60_xsub_halp_linear.json'}",
                                     "--member",
                                     f"b={w / 'other' / 'ntu60_xsub_halp_linear.json'}",
                                     "--out", str(w / "ntu60_xsub_halp-2s_linear.json")]),
    "graphcl-summary": Reader("graphcl-summary",
                              lambda i, w: shutil.copyfile(i.seed_result, w / "s.json")
                              and None,
                              lambda i, w: ["graphcl-summary", str(w / "s.json"), "--out",
                                            str(w / "tu_x_graphcl_svm.json")]),
}  # fmt: skip

RESULT = "results/ntu60_xsub_halp_linear.json"
SCORES = "results/ntu60_xsub_halp_linear.scores.npz"
SKELETON = "raw/S001C001P001R002A002.skeleton"
PKU_SKELETON = "raw/skeleton/A01N01-L.txt"
PKU_LABEL = "raw/label/A01N01-L.txt"

# (reader, file damaged (relative to the work folder) or None, damage, what the message names)
CASES: list[tuple[str, str | None, Callable[[Path], None] | None, str]] = [
    # prepared split arrays and indices
    *[("split", "ntu60/xsub/train.npy", d, "train.npy") for d in (truncate, empty, garbage)],
    ("split", "ntu60/xsub/train.npy", npy(objects), "train.npy"),
    ("split", "ntu60/xsub/train.npy", npy(lambda a: a[:, :, :, :24]), "train.npy"),
    ("split", "ntu60/xsub/train.npy", npy(lambda a: a.astype(np.float64)), "train.npy"),
    ("split", "ntu60/xsub/train.npy", npy(with_nan), "train.npy"),
    ("split", "ntu60/xsub/test.npy", npy(with_nan), "test.npy"),
    ("split", "ntu60/xsub/train.npy", npy(with_inf), "train.npy"),
    *[("split", "ntu60/xsub/train.json", d, "train.json") for d in (truncate, empty, garbage)],
    ("split", "ntu60/xsub/train.json", text("[1, 2]"), "train.json"),
    ("split", "ntu60/xsub/train.json", json_edit(set_key("labels", "abc")), "train.json"),
    ("split", "ntu60/xsub/train.json", json_edit(set_key("names", 7)), "train.json"),
    ("split", "ntu60/xsub/train.json", json_edit(set_key("num_samples", "29")), "train.json"),
    ("split", "ntu60/xsub/train.json", json_edit(set_key("num_classes", None)), "train.json"),
    ("split", "ntu60/xsub/train.json", json_edit(set_key("frames", None)), "train.json"),
    ("split", "ntu60/xsub/train.json", json_edit(set_key("dataset", [1])), "train.json"),
    ("split", "ntu60/xsub/train.json", json_edit(set_key("extra", 5)), "train.json"),
    ("split", "ntu60/manifest.json", garbage, "manifest.json"),
    ("split", "ntu60/manifest.json", text("[]"), "manifest.json"),
    ("split", "ntu60/manifest.json", json_edit(set_key("run_ids", [1])), "manifest.json"),
    # import-cmd
    *[("import-cmd", "xsub/train_data_joint.npy", d, "train_data_joint.npy")
      for d in (truncate, empty, garbage, npy(objects), npy(lambda a: a[:, :, :, :24]))],
    ("import-cmd", "xsub/val_data_joint.npy", npy(with_inf), "val_data_joint.npy"),
    *[("import-cmd", "xsub/train_label.pkl", d, "train_label.pkl")
      for d in (truncate, empty, garbage, pickled(("abc", "def")), pickled((["a"], None)),
                pickled(None), pickled({"a": 1}), pickled(([1, 2], [0, 1])))],
    *[("import-cmd", "xsub/train_num_frame.npy", d, "train_num_frame.npy")
      for d in (truncate, empty, garbage, npy(objects), npy(lambda a: a[:3]),
                npy(lambda a: a.astype(np.float64) + 0.5), npy(lambda a: np.full_like(a, 0)),
                npy(lambda a: np.full_like(a, -7)), npy(lambda a: np.full_like(a, 10**12)))],
    # config files and values
    ("config", "c.yaml", garbage, "c.yaml"),
    ("config", "c.yaml", text("seed: 1\x00\n"), "c.yaml"),
    ("config", "c.yaml", text("- 1\n- 2\n"), "c.yaml"),
    ("config", "c.yaml", text("seed: -1\n"), "seed"),
    ("config", "c.yaml", text(f"seed: {10**22}\n"), "seed"),
    ("config", "c.yaml", text("encoder:\n  hidden_size: 1000000000000\n"), "encoder.hidden_size"),
    ("config", "c.yaml", text("optim:\n  epochs: 100000000000000\n"), "optim.epochs"),
    ("config", "c.yaml", text("optim:\n  lr: .nan\n"), "optim.lr"),
    ("config", "c.yaml", text("moco:\n  temperature: .inf\n"), "moco.temperature"),
    ("config", "c.yaml", text("data:\n  frames: 99999999\n"), "data.frames"),
    ("config", "c.yaml", text("encoder: 3\n"), "encoder"),
    # checkpoints
    *[("checkpoint", "c.pt", d, "c.pt") for d in (truncate, empty, garbage)],
    ("checkpoint", "c.pt", checkpoint_edit(drop("model")), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(drop("config")), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(drop("epoch")), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(set_key("epoch", "x")), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(set_key("epoch", 1.5)), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(set_key("config", [1])), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(set_key("model", [1])), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(set_key("data", 3)), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(config_edit("hidden_size", "big")), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(config_edit("hidden_size", 10**12)), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(nan_weights), "c.pt"),
    ("checkpoint", "c.pt", checkpoint_edit(one_nan_weight), "c.pt"),
    # metrics.jsonl on --resume
    ("metrics", "run/metrics.jsonl", text('{"epoch": 0}\n{"epoch": \n'), "metrics.jsonl"),
    ("metrics", "run/metrics.jsonl", text("[1]\n"), "metrics.jsonl"),
    ("metrics", "run/metrics.jsonl", text('{"loss": 1}\n'), "metrics.jsonl"),
    ("metrics", "run/metrics.jsonl", text('{"epoch": "0"}\n'), "metrics.jsonl"),
    ("metrics", "run/metrics.jsonl", garbage, "metrics.jsonl"),
    # raw NTU .skeleton files
    *[("ntu-raw", SKELETON, d, "S001C001P001R002A002") for d in (truncate, empty, garbage)],
    ("ntu-raw", SKELETON, lines_edit(line(0, "99999999999999999999")), "S001C001P001R002A002"),
    ("ntu-raw", SKELETON, lines_edit(line(5, "nan nan nan 1 2 3 4 5 6 7 8 9")), "A002"),
    # raw PKU-MMD files
    *[("pku-raw", PKU_SKELETON, d, "A01N01-L.txt") for d in (truncate, empty, garbage)],
    *[("pku-raw", PKU_LABEL, d, "A01N01-L.txt") for d in (empty, garbage)],
    ("pku-raw", PKU_LABEL, text("1,10,99999999999999999999999,1\n"), "A01N01-L.txt"),
    *[("pku-raw", "raw/cross_subject_v2.txt", d, "cross_subject_v2.txt")
      for d in (empty, garbage, text("Training videos:\nA01N01-L, Z99\n"))],
    # raw TU files (prepare tu) and prepared TU folders (graphcl)
    *[("tu-source", "src/X_A.txt", d, "X_A.txt") for d in (truncate, garbage)],
    ("tu-source", "src/X_graph_indicator.txt", empty, "X_graph_indicator.txt"),
    ("tu-source", "src/X_A.txt", lines_edit(line(1, "1, 12345678901234567890")), "X_A.txt"),
    ("tu-source", "src/X_A.txt", lines_edit(line(1, "1, 0")), "X_A.txt"),
    ("tu-source", "src/X_node_labels.txt", lines_edit(line(1, "1000000000000")), "labels"),
    ("tu-source", "src/X_graph_labels.txt", lines_edit(line(1, "1.5")), "X_graph_labels"),
    ("tu-source", "src/X_graph_indicator.txt", garbage, "X_graph_indicator.txt"),
    *[("tu-zip", "X.zip", d, "X.zip") for d in (truncate, empty, garbage)],
    *[("tu-prepared", "root/X/raw/X_graph_labels.txt", d, "X_graph_labels.txt")
      for d in (truncate, empty, garbage)],
    ("tu-prepared", "root/X/raw/X_graph_labels.txt", lines_edit(line(0, "7")), "manifest"),
    ("tu-prepared", "root/X/raw/manifest.json", garbage, "manifest.json"),
    ("tu-prepared", "root/X/raw/manifest.json", text("[]"), "manifest.json"),
    # results JSONs: tables, ensemble members and their scores, per-seed graph results
    *[("tables", RESULT, d, "ntu60_xsub_halp_linear.json") for d in (truncate, empty, garbage)],
    ("tables", RESULT, text("[1]"), "ntu60_xsub_halp_linear.json"),
    ("tables", RESULT, json_edit(set_key("metrics", {"top1": "high"})), "linear.json"),
    ("tables", "results/tu_x_graphcl_svm.json", garbage, "tu_x_graphcl_svm.json"),
    ("tables", "results/overhead.json", garbage, "overhead.json"),
    *[("ensemble", RESULT, d, "ntu60_xsub_halp_linear.json") for d in (truncate, garbage)],
    ("ensemble", RESULT, json_edit(set_key("metrics", 5)), "ntu60_xsub_halp_linear.json"),
    ("ensemble", RESULT, json_edit(set_key("scores", 5)), "ntu60_xsub_halp_linear.json"),
    *[("ensemble", SCORES, d, "scores.npz") for d in (truncate, empty, garbage)],
    *[("graphcl-summary", "s.json", d, "s.json") for d in (truncate, empty, garbage)],
    ("graphcl-summary", "s.json", text("[]"), "s.json"),
]  # fmt: skip


def _case_id(case: tuple[str, str | None, Any, str]) -> str:
    reader, target, damage, _ = case
    name = getattr(damage, "__qualname__", "none").split(".")[0]
    return f"{reader}:{Path(target or '-').name}:{name}"


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{_case_id(c)}" for i, c in enumerate(CASES)])
def test_damaged_input_is_a_one_line_error(
    case: tuple[str, str | None, Callable[[Path], None] | None, str],
    inputs: Inputs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reader_name, target, damage, named = case
    reader = READERS[reader_name]
    reader.copy(inputs, tmp_path)
    if target is not None and damage is not None:
        damage(tmp_path / target)
    argv = reader.argv(inputs, tmp_path)
    capsys.readouterr()
    try:
        status = main(["-q", *argv])
    except SystemExit as err:  # argparse
        status = err.code
    except BaseException as err:  # the point of the test: nothing else may escape
        pytest.fail(f"{type(err).__name__} escaped as a traceback: {err}"[:600])
    err_lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert status == 2, f"exit {status}, stderr {err_lines[-3:]}"
    last = err_lines[-1]
    assert last.startswith(f"halp {reader.verb}: error: "), last
    assert named in last, f"the message does not name {named!r}: {last}"
