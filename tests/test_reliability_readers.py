"""Reliability of the readers (issue 25): data is re-checked where it is read, bad values
are named with their true place, and nothing outside the asked-for folders is touched."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from halp.data import prepare as prepare_module
from halp.data import tu
from halp.errors import DataFormatError, PrepareError

# ------------------------------------------------------------------ TU graphs (classes 3, 7)


@pytest.fixture
def tu_root(tmp_path: Path) -> Path:
    """``ROOT/X/raw`` written and recorded by ``prepare_tu`` from a synthetic dataset."""
    tu.write_tu(tmp_path / "source", "X", tu.synthetic_tu(graphs=12, seed=0))
    tu.prepare_tu("X", tmp_path / "root", source=tmp_path / "source")
    return tmp_path / "root"


def test_graph_files_edited_after_prepare_are_refused(tu_root: Path) -> None:
    tu.load_graphs(tu_root, "X")  # as prepared: accepted
    labels = tu_root / "X" / "raw" / "X_graph_labels.txt"
    values = labels.read_text().split()
    values[0] = "1" if values[0] == "-1" else "-1"  # one graph relabelled, counts kept
    labels.write_text("\n".join(values) + "\n")
    with pytest.raises(DataFormatError, match=r"differ from what .* verified .* class_counts"):
        tu.load_graphs(tu_root, "X")


def test_graph_files_copied_under_another_name_are_refused(tu_root: Path) -> None:
    other = tu_root / "Y" / "raw"
    other.mkdir(parents=True)
    for path in (tu_root / "X" / "raw").iterdir():
        (other / path.name.replace("X", "Y", 1)).write_bytes(path.read_bytes())
    with pytest.raises(DataFormatError, match=r"prepared as 'X', not 'Y'"):
        tu.load_graphs(tu_root, "Y")
    (other / "manifest.json").unlink()
    with pytest.raises(DataFormatError, match=r"manifest.json is missing"):
        tu.load_graphs(tu_root, "Y")


def test_a_recorded_digest_must_match_the_content(tu_root: Path) -> None:
    edges = tu_root / "X" / "raw" / "X_A.txt"
    lines = edges.read_text().splitlines()
    a, b = lines[0].split(", ")
    lines[0] = f"{b}, {a}"  # same counts, another edge
    edges.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"digest"):
        tu.load_graphs(tu_root, "X")


def test_a_twenty_digit_number_is_a_line_error(tmp_path: Path) -> None:
    tu.write_tu(tmp_path, "X", tu.synthetic_tu(graphs=4))
    path = tmp_path / "X_node_labels.txt"
    lines = path.read_text().splitlines()
    lines[4] = "12345678901234567890"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"X_node_labels\.txt:5: 12345678901234567890 is out"):
        tu.read_tu(tmp_path, "X")


def test_a_huge_node_label_is_refused_before_the_one_hot(tmp_path: Path) -> None:
    arrays = tu.synthetic_tu(graphs=6)
    labels = arrays.node_labels.copy()
    labels[3] = 10**12
    tu.write_tu(tmp_path / "src", "X", tu.TuArrays(arrays.edges, arrays.graph_of_node, labels,
                                                   arrays.graph_labels))  # fmt: skip
    with pytest.raises(PrepareError, match=r"node labels span 0\.\.1000000000000"):
        tu.prepare_tu("X", tmp_path / "root", source=tmp_path / "src")
    # a folder that bypassed prepare (manifest written by hand) is refused on load too
    raw = tmp_path / "root" / "X" / "raw"
    tu.write_tu(raw, "X", tu.TuArrays(arrays.edges, arrays.graph_of_node, labels,
                                      arrays.graph_labels))  # fmt: skip
    figures = tu.figures_of(tu.read_tu(raw, "X"))
    manifest = {"dataset": "X", "graphs": figures.graphs, "nodes": figures.nodes,
                "edge_lines": figures.edge_lines, "class_counts": list(figures.class_counts),
                "digest": figures.digest}  # fmt: skip
    (raw / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match=r"one-hot width of 1000000000001; at most 1024"):
        tu.load_graphs(tmp_path / "root", "X")


@pytest.mark.parametrize("bad", [0, -3, 10_000])
def test_a_bad_node_id_in_an_edge_is_named_with_its_line(tmp_path: Path, bad: int) -> None:
    arrays = tu.synthetic_tu(graphs=4)
    tu.write_tu(tmp_path, "X", arrays)
    path = tmp_path / "X_A.txt"
    lines = path.read_text().splitlines()
    first = lines[6].split(", ")[0]
    lines[6] = f"{first}, {bad}"
    path.write_text("\n".join(lines) + "\n")
    n = len(arrays.graph_of_node)
    expected = rf"X_A\.txt:7: the edge names node {bad}, .* 1\.\.{n}"
    with pytest.raises(DataFormatError, match=expected):
        tu.read_tu(tmp_path, "X")


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "/abs", ""])
def test_a_dataset_name_cannot_leave_the_root(tmp_path: Path, name: str) -> None:
    tu.write_tu(tmp_path / "src", "X", tu.synthetic_tu(graphs=4))
    root = tmp_path / "a" / "b" / "root"
    with pytest.raises(PrepareError, match=r"dataset name .* letters, digits"):
        tu.prepare_tu(name, root, source=tmp_path / "src")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    with pytest.raises(DataFormatError, match=r"dataset name"):
        tu.load_graphs(root, name)


def test_the_graph_config_refuses_a_path_as_dataset() -> None:
    from halp.config import GraphCLConfig, load_config
    from halp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"config key 'dataset': '\.\./\.\./x'"):
        load_config(GraphCLConfig, None, ["dataset=../../x"])
    assert np.isfinite(load_config(GraphCLConfig, None, ["dataset=IMDB-BINARY"]).lr)


# ------------------------------------------------------------------ config ranges (class 2)


@pytest.mark.parametrize(
    ("cls", "override", "key"),
    [
        ("PretrainConfig", "seed=-1", "seed"),
        ("PretrainConfig", f"seed={10**22}", "seed"),
        ("EvalConfig", "seed=-1", "seed"),
        ("GraphCLConfig", f"seed={2**32}", "seed"),
        ("PretrainConfig", "encoder.hidden_size=1000000000", "encoder.hidden_size"),
        ("GraphCLConfig", "hidden=100000", "hidden"),
        ("PretrainConfig", "optim.epochs=100000000000", "optim.epochs"),
        ("PretrainConfig", "optim.lr_steps=[-3]", "optim.lr_steps[0]"),
        ("PretrainConfig", "moco.queue_size=100000000000", "moco.queue_size"),
        ("PretrainConfig", "halp.mu=.inf", "halp.mu"),
        ("PretrainConfig", "cmd.weight=.nan", "cmd.weight"),
        ("PretrainConfig", "optim.weight_decay=.nan", "optim.weight_decay"),
        ("EvalConfig", "momentum=7", "momentum"),
        ("EvalConfig", "workers=100000", "workers"),
    ],
)
def test_numeric_config_keys_are_range_checked(cls: str, override: str, key: str) -> None:
    from halp import config
    from halp.errors import ConfigError

    with pytest.raises(ConfigError, match=f"config key '{re.escape(key)}'"):
        config.load_config(getattr(config, cls), None, [override])
    config.load_config(getattr(config, cls), None, [f"seed={2**32 - 1}"])  # the largest seed


# ------------------------------------------------------------------ weak spots (class 9)


def _skeleton(synth_ntu_raw: Path) -> Path:
    return sorted(synth_ntu_raw.rglob("*.skeleton"))[0]


@pytest.mark.parametrize("at", [2, 51, 200])
def test_a_blank_line_is_reported_where_it_is(synth_ntu_raw: Path, at: int) -> None:
    from halp.data import ntu
    from halp.errors import RawFormatError

    lines = _skeleton(synth_ntu_raw).read_bytes().split(b"\n")
    lines.insert(at - 1, b"")  # the new line number ``at``
    with pytest.raises(RawFormatError, match=rf"x.skeleton:{at}: blank line"):
        ntu.parse_skeleton(b"\n".join(lines), "x.skeleton")
    lines[at - 1] = b"  \r"  # blanks and a CRLF ending
    with pytest.raises(RawFormatError, match=rf"x.skeleton:{at}: blank line"):
        ntu.parse_skeleton(b"\r\n".join(lines), "x.skeleton")


def test_trailing_blank_lines_are_still_accepted(synth_ntu_raw: Path) -> None:
    from halp.data import ntu

    raw = _skeleton(synth_ntu_raw).read_bytes()
    assert np.array_equal(
        ntu.parse_skeleton(raw.rstrip() + b"\n\n\n", "x"), ntu.parse_skeleton(raw, "x")
    )


def test_ctrl_c_during_fetch_is_one_line_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import urllib.request

    from halp.cli import main

    class Response:
        def __init__(self) -> None:
            self.blocks = 0

        def __enter__(self) -> Response:
            return self

        def __exit__(self, *args: object) -> None:
            return None

        def read(self, size: int) -> bytes:
            self.blocks += 1
            if self.blocks == 3:
                raise KeyboardInterrupt
            return b"x" * size

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response())
    out = tmp_path / "dl" / "archive.zip"
    try:
        status = main(
            ["fetch", "https://example.org/a.zip", "--sha256", "0" * 64, "--out", str(out)]
        )
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a traceback")
    assert status == 130
    assert capsys.readouterr().err.strip() == "halp fetch: interrupted (Ctrl-C)"
    assert list((tmp_path / "dl").iterdir()) == []  # no .partial left


def test_a_folder_named_like_a_sample_is_warned_about(
    synth_ntu_raw: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from halp.data.prepare import find_files

    raw = tmp_path / "raw"
    raw.mkdir()
    for path in sorted(synth_ntu_raw.rglob("*.skeleton"))[:3]:
        (raw / path.name).write_bytes(path.read_bytes())
    (raw / "S001C001P001R001A001.skeleton").mkdir()
    with caplog.at_level("WARNING"):
        found = find_files(raw, ".skeleton")
    assert len(found) == 3
    assert "S001C001P001R001A001.skeleton is a folder, not a .skeleton file" in caplog.text


# ------------------------------------------------------------------ features (class 1)


def test_non_finite_features_are_refused_naming_the_sample() -> None:
    import torch

    from halp.data.storage import SkeletonSplit, SplitIndex
    from halp.errors import EvaluationError
    from halp.eval.knn import check_features

    index = SplitIndex("ntu60", "xsub", "test", 3, ["a", "b", "c"], np.zeros(3, np.int64),
                       np.ones(3, np.int64))  # fmt: skip
    split = SkeletonSplit(np.zeros((3, 3, 1, 25, 2), np.float32), index)
    features = torch.ones(3, 4)
    check_features(features, split)
    features[1, 2] = float("nan")
    features[2, 0] = float("inf")
    with pytest.raises(EvaluationError, match=r"sample 1 \(b\) of ntu60/xsub/test \(and 1 more\)"):
        check_features(features, split)


# ------------------------------------------------------------------ prepare workers (class 5)


def _children(pid: int) -> list[int]:
    """The live (not zombie) forked children of ``pid`` (same command line), from /proc."""
    found = []
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            forked = (entry / "cmdline").read_bytes() == command
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z" and forked:
            found.append(int(entry.name))
    return found


def _slow_ntu_job(job: tuple) -> Any:
    """The real job, 30 ms slower, so that a run lasts long enough to be interrupted."""
    import time

    time.sleep(0.03)
    return _REAL_NTU_JOB(job)


_REAL_NTU_JOB = prepare_module._ntu_job


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_killing_a_worker_at_random_moments_never_hangs(
    synth_ntu_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import random
    import signal
    import threading
    import time

    from halp.data import prepare

    monkeypatch.setattr(prepare, "_ntu_job", _slow_ntu_job)

    def expired(*_: object) -> None:
        raise TimeoutError("prepare hung after a worker was killed")

    previous = signal.signal(signal.SIGALRM, expired)
    rng = random.Random(0)
    killed = 0
    try:
        for trial in range(10):
            delay = rng.uniform(0.0, 0.6)

            def kill(delay: float = delay) -> None:
                time.sleep(delay)
                workers = _children(os.getpid())
                if workers:
                    os.kill(rng.choice(workers), signal.SIGKILL)

            killer = threading.Thread(target=kill)
            killer.start()
            signal.alarm(30)
            out = tmp_path / f"out{trial}"
            try:
                prepare.prepare_ntu("ntu60", [synth_ntu_raw], out, workers=2)
            except PrepareError as err:
                assert "a worker process died" in str(err)
                assert not out.exists() and not list(tmp_path.glob(f".out{trial}.*"))
                killed += 1
            finally:
                signal.alarm(0)
                killer.join()
            deadline = time.monotonic() + 5
            while _children(os.getpid()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _children(os.getpid()) == [], "workers outlived the run"
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert killed >= 3  # most kills land while the run is going


_SLOW_PREPARE = """
import sys, time
from halp.data import prepare
real = prepare._ntu_job
def slow(job):
    time.sleep(0.5)
    return real(job)
prepare._ntu_job = slow
prepare.prepare_ntu("ntu60", [sys.argv[1]], sys.argv[2], workers=2)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_workers_die_with_a_killed_parent(synth_ntu_raw: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PREPARE, str(synth_ntu_raw), str(tmp_path / "out")]
    )
    try:
        deadline = time.monotonic() + 30
        while len(workers := _children(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) >= 2, "the workers did not start"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in workers if _alive(pid)]
        assert not alive, f"workers {alive} outlived their killed parent"
    finally:
        parent.kill()
        parent.wait()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
