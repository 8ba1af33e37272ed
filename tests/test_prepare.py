"""`prepare`: raw folders or zips -> our format, with bad input, skipping and atomicity."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from halp.data import ntu, prepare
from halp.data.skeleton import process_sample
from halp.data.storage import SplitWriter, load_split
from halp.errors import DataFormatError, RawFormatError


def skeleton_files(raw: Path) -> list[Path]:
    return sorted(raw.rglob("*.skeleton"))


def read_all(out: Path, bench: str) -> dict[str, tuple]:
    parts = {}
    for part in ("train", "test"):
        split = load_split(out / bench, part)
        parts[part] = (
            np.asarray(split.data),
            split.index.names,
            split.index.labels.tolist(),
            split.index.frames.tolist(),
        )
    return parts


def test_ntu_prepare_writes_every_benchmark(synth_ntu_raw: Path, tmp_path: Path) -> None:
    summary = prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "out")
    files = skeleton_files(synth_ntu_raw)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files_found"] == len(files) == 48
    for bench in ("xsub", "xview"):
        counts = summary.counts[bench]
        assert counts["train"] + counts["test"] == 48 and min(counts.values()) > 0
        assert manifest["benchmarks"][bench] == counts
        parts = read_all(tmp_path / "out", bench)
        for part, (data, names, labels, _) in parts.items():
            assert data.shape == (len(names), 3, 300, 25, 2) and data.dtype == np.float32
            for name, label in zip(names, labels, strict=True):
                parsed = ntu.parse_name(name)
                assert label == parsed.label
                assert ntu.is_train(parsed, bench) == (part == "train")
    # each row is exactly the per-sample pipeline applied to its file
    data, names, _, frames = read_all(tmp_path / "out", "xsub")["test"]
    path = synth_ntu_raw / "nturgb+d_skeletons" / f"{names[3]}.skeleton"
    bodies = ntu.parse_skeleton(path.read_bytes(), str(path))
    np.testing.assert_array_equal(data[3], process_sample(bodies))
    assert frames[3] == bodies.shape[1]


def test_workers_do_not_change_the_bytes(synth_ntu_raw: Path, tmp_path: Path) -> None:
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "one", workers=1)
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "two", workers=2)
    for bench in ("xsub", "xview"):
        for part in ("train", "test"):
            for suffix in (".npy", ".json"):
                one = (tmp_path / "one" / bench / f"{part}{suffix}").read_bytes()
                two = (tmp_path / "two" / bench / f"{part}{suffix}").read_bytes()
                assert _without_run_id(one) == _without_run_id(two)


def _without_run_id(data: bytes) -> bytes:
    """An index with its run id (unique per preparation) blanked; arrays unchanged."""
    return re.sub(rb'"run_id": "[0-9a-f]{32}"', b'"run_id": ""', data)


def test_zip_and_two_archives_give_the_same_result(synth_ntu_raw: Path, tmp_path: Path) -> None:
    files = skeleton_files(synth_ntu_raw)
    first, second = tmp_path / "a.zip", tmp_path / "b"
    with zipfile.ZipFile(first, "w") as zf:
        for path in files[::2]:
            zf.write(path, f"nturgb+d_skeletons/{path.name}")
    second.mkdir()
    for path in files[1::2]:
        shutil.copy(path, second / path.name)
    prepare.prepare_ntu("ntu120", [synth_ntu_raw], tmp_path / "folder")
    prepare.prepare_ntu("ntu120", [first, second], tmp_path / "mixed", workers=2)
    for bench in ("xsub", "xset"):
        a, b = read_all(tmp_path / "folder", bench), read_all(tmp_path / "mixed", bench)
        for part in a:
            np.testing.assert_array_equal(a[part][0], b[part][0])
            assert a[part][1:] == b[part][1:]
    with pytest.raises(prepare.PrepareError, match="also found in another --raw"):
        prepare.prepare_ntu("ntu120", [synth_ntu_raw, second], tmp_path / "dup")


def test_missing_inputs_explain_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(prepare.PrepareError, match=r"no such file or folder.*register"):
        prepare.prepare_ntu("ntu60", [tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(prepare.PrepareError, match=r"holds no \.skeleton file"):
        prepare.prepare_ntu("ntu60", [tmp_path / "empty"], tmp_path / "out")
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(prepare.PrepareError, match="not a zip archive"):
        prepare.prepare_ntu("ntu60", [tmp_path / "text.zip"], tmp_path / "out")
    with pytest.raises(prepare.PrepareError, match="skeleton: folder not found"):
        prepare.prepare_pku(tmp_path / "empty", tmp_path / "out")


def _raw_with(synth_ntu_raw: Path, tmp_path: Path, extra: dict[str, bytes]) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in skeleton_files(synth_ntu_raw)[:6]:
        shutil.copy(path, raw / path.name)
    for name, data in extra.items():
        (raw / name).write_bytes(data)
    return raw


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("S001C001P001R001A002.skeleton", b"", "S001C001P001R001A002.skeleton:1: empty file"),
        ("S001C001P001R001A002.skeleton", b"3\r\n1\r\n", ".skeleton:2: file ends before"),
        ("my_recording.skeleton", b"1\r\n0\r\n", "'my_recording' is not an NTU sample name"),
        ("S001C001P001R001A061.skeleton", b"1\r\n0\r\n", "action 61 is outside ntu60"),
    ],
)
def test_bad_file_stops_or_is_skipped(
    synth_ntu_raw: Path, tmp_path: Path, filename: str, data: bytes, message: str
) -> None:
    raw = _raw_with(synth_ntu_raw, tmp_path, {filename: data})
    with pytest.raises(prepare.PrepareError, match="--skip-bad") as info:
        prepare.prepare_ntu("ntu60", [raw], tmp_path / "out")
    assert message in str(info.value) and str(raw / filename) in str(info.value)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").rglob("*.json"))  # nothing that looks complete
    assert not list((tmp_path / "out").rglob("*.partial"))
    summary = prepare.prepare_ntu("ntu60", [raw], tmp_path / "out", skip_bad=True)
    assert [s["name"] for s in summary.skipped] == [filename.removesuffix(".skeleton")]
    assert message in summary.skipped[0]["error"]
    assert "skipped 1 bad file(s) (listed in manifest.json)" in list(summary.lines())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["skipped"] == summary.skipped
    assert sum(manifest["benchmarks"]["xsub"].values()) == 6


def test_ntu60_ignores_ntu120_only_setups(synth_ntu_raw: Path, tmp_path: Path) -> None:
    raw = _raw_with(synth_ntu_raw, tmp_path, {})
    src = skeleton_files(synth_ntu_raw)[0]
    shutil.copy(src, raw / ("S018" + src.name[4:]))
    summary = prepare.prepare_ntu("ntu60", [raw], tmp_path / "out")
    assert summary.extra["ignored_outside_dataset"] == 1
    assert sum(summary.counts["xsub"].values()) == 6
    with pytest.raises(prepare.PrepareError, match="found 7 of the 114480"):
        prepare.prepare_ntu("ntu120", [raw], tmp_path / "o2", expect_complete=True)


def test_missing_skeleton_samples_are_excluded(synth_ntu_raw: Path, tmp_path: Path) -> None:
    src = skeleton_files(synth_ntu_raw)[0]
    raw = _raw_with(synth_ntu_raw, tmp_path, {"S001C002P005R002A008.skeleton": src.read_bytes()})
    summary = prepare.prepare_ntu("ntu60", [raw], tmp_path / "out")
    assert summary.extra["excluded_missing_skeletons"] == 1
    names = read_all(tmp_path / "out", "xsub")
    assert "S001C002P005R002A008" not in names["train"][1] + names["test"][1]


def test_interrupted_prepare_leaves_nothing_complete(
    synth_ntu_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], out)  # an earlier complete run
    before = (out / "xsub" / "train.npy").read_bytes()
    calls = {"n": 0}
    original = SplitWriter.append

    def append(self: SplitWriter, *args: object) -> None:
        calls["n"] += 1
        # while writing, only the temporary file of this part exists
        assert self.tmp_path.exists()
        if calls["n"] == 20:
            raise KeyboardInterrupt
        original(self, *args)

    monkeypatch.setattr(SplitWriter, "append", append)
    manifest = (out / "manifest.json").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_ntu("ntu60", [synth_ntu_raw], out)
    # the re-run wrote into a working folder next to `out`, removed on the interruption; the
    # earlier dataset stays valid as a whole (its manifest and parts), never a mix of runs
    assert not list(out.rglob("*.partial")) and not list(tmp_path.glob(".out.*"))
    assert (out / "manifest.json").read_bytes() == manifest
    assert (out / "xsub" / "train.npy").read_bytes() == before  # old parts stay intact
    assert len(load_split(out / "xsub", "train")) > 0


def test_array_without_index_is_refused(synth_ntu_raw: Path, tmp_path: Path) -> None:
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "out")
    (tmp_path / "out" / "xsub" / "test.json").unlink()
    with pytest.raises(DataFormatError, match=r"index not found.*interrupted"):
        load_split(tmp_path / "out" / "xsub", "test")


def test_pku_prepare(synth_pku_raw: Path, tmp_path: Path) -> None:
    summary = prepare.prepare_pku(synth_pku_raw, tmp_path / "out", workers=2)
    for bench in ("xsub", "xview"):
        assert sum(summary.counts[bench].values()) == 48
        parts = read_all(tmp_path / "out", bench)
        for _, (data, names, labels, frames) in parts.items():
            assert data.shape[1:] == (3, 300, 25, 2) and set(labels) <= set(range(6))
            assert all("_" in n for n in names) and min(frames) > 0
    # an instance equals its cut-out frames through the same pipeline
    data, names, _, _ = read_all(tmp_path / "out", "xsub")["train"]
    video, row = names[0].rsplit("_", 1)
    label_file = synth_pku_raw / "label" / f"{video}.txt"
    from halp.data import pku

    inst = pku.parse_labels(label_file.read_text(), str(label_file), video)[int(row)]
    skel = synth_pku_raw / "skeleton" / f"{video}.txt"
    clip = pku.cut(pku.parse_skeleton(skel.read_bytes(), str(skel)), inst, str(label_file))
    np.testing.assert_array_equal(data[0], process_sample(clip, rank_by_energy=False))


def _pku_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_pku_bad_inputs(synth_pku_raw: Path, tmp_path: Path) -> None:
    raw = _pku_copy(synth_pku_raw, tmp_path / "raw")
    label = sorted((raw / "label").glob("*.txt"))[0]
    label.write_text("")
    with pytest.raises(prepare.PrepareError, match=f"{label}:1: label file holds no action"):
        prepare.prepare_pku(raw, tmp_path / "out")
    summary = prepare.prepare_pku(raw, tmp_path / "out", skip_bad=True)
    assert [s["name"] for s in summary.skipped] == [label.stem]
    label.write_text("1,0,100000,1\n")
    with pytest.raises(prepare.PrepareError, match=r"\[0, 100000\) exceed the"):
        prepare.prepare_pku(raw, tmp_path / "out")
    split = raw / "cross_view_v2.txt"
    lines = split.read_text().splitlines()
    lines[1] += ", A99N99-L"
    split.write_text("\n".join(lines) + "\n")
    with pytest.raises(RawFormatError, match=r"cross_view_v2.txt:2: 1 training video\(s\) have no"):
        prepare.prepare_pku(raw, tmp_path / "out")


def test_real_pku_sample_with_a_handmade_label(realdata: Path, tmp_path: Path) -> None:
    """The real skeleton file, with a label and split files written here (synthetic)."""
    raw = tmp_path / "raw"
    (raw / "skeleton").mkdir(parents=True)
    (raw / "label").mkdir()
    (raw / "skeleton" / "A10N08-L.txt").symlink_to(
        realdata / "pkummd_v2_sample" / "skeleton" / "A10N08-L.txt"
    )
    (raw / "label" / "A10N08-L.txt").write_text("1,10,100,1\n5,200,520,2\n")
    for name in ("cross_subject_v2.txt", "cross_view_v2.txt"):
        (raw / name).write_text("Training videos: \nA10N08-L\nValidataion videos: \n\n")
    summary = prepare.prepare_pku(raw, tmp_path / "out")
    assert summary.counts["xsub"] == {"train": 2, "test": 0}
    split = load_split(tmp_path / "out" / "xsub", "train")
    assert split.index.frames.tolist() == [90, 320] and split.index.labels.tolist() == [0, 4]
    assert np.isfinite(split.data).all() and np.abs(split.data[1, :, :300]).max() < 3


def test_real_ntu_files(realdata: Path, tmp_path: Path) -> None:
    raw = realdata / "ntu_raw_samples" / "nturgb+d_skeletons"
    summary = prepare.prepare_ntu("ntu120", [raw], tmp_path / "out", workers=2)
    assert summary.counts == {"xsub": {"train": 12, "test": 6}, "xset": {"train": 5, "test": 13}}
    split = load_split(tmp_path / "out" / "xsub", "train")
    i = split.index.names.index("S001C003P008R002A058")  # two people
    assert split.index.frames[i] == 70 and np.abs(split.data[i, :, :70, :, 1]).sum() > 0


# ------------------------------------------------------------------------ import-cmd


def _cmd_folder(out: Path, tmp_path: Path, bench: str = "xsub") -> Path:
    folder = tmp_path / "cmd" / bench
    folder.mkdir(parents=True)
    for ours, theirs in (("train", "train"), ("test", "val")):
        split = load_split(out / bench, ours)
        np.save(folder / f"{theirs}_data_joint.npy", np.asarray(split.data))
        with open(folder / f"{theirs}_label.pkl", "wb") as fh:
            names = [f"{n}.skeleton" for n in split.index.names]
            pickle.dump((names, [np.int64(v) for v in split.index.labels]), fh)
        np.save(folder / f"{theirs}_num_frame.npy", split.index.frames)
    return folder


def test_import_cmd_round_trip(synth_ntu_raw: Path, tmp_path: Path) -> None:
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "ours")
    folder = _cmd_folder(tmp_path / "ours", tmp_path)
    prepare.import_cmd(folder, tmp_path / "imported", "ntu60")
    a, b = read_all(tmp_path / "ours", "xsub"), read_all(tmp_path / "imported", "xsub")
    for part in a:
        np.testing.assert_array_equal(a[part][0], b[part][0])
        assert a[part][1:] == b[part][1:]


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_import_cmd_refuses_bad_input(
    synth_ntu_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "ours")
    folder = _cmd_folder(tmp_path / "ours", tmp_path)
    _, labels = pickle.loads((folder / "train_label.pkl").read_bytes())
    assert max(labels) == 5  # the synthetic set has labels 0..5
    monkeypatch.setitem(prepare.NUM_CLASSES, "tiny", 5)
    with pytest.raises(prepare.PrepareError, match=r"label 5 outside 0\.\.4 for tiny"):
        prepare.import_cmd(folder, tmp_path / "x", "tiny")
    with pytest.raises(prepare.PrepareError, match="cannot tell the benchmark"):
        prepare.import_cmd(folder.rename(tmp_path / "cmd" / "whatever"), tmp_path / "x", "ntu60")
    folder = tmp_path / "cmd" / "whatever"
    np.save(folder / "val_num_frame.npy", np.ones(3, dtype=np.int64))
    with pytest.raises(prepare.PrepareError, match="they must agree"):
        prepare.import_cmd(folder, tmp_path / "x", "ntu60", benchmark="xsub")
    (folder / "train_label.pkl").write_bytes(pickle.dumps(([_Evil()], [0])))
    with pytest.raises(prepare.PrepareError, match=r"refusing to load builtins\.print"):
        prepare.import_cmd(folder, tmp_path / "x", "ntu60", benchmark="xsub")
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_real_label_pickles_load_with_the_restricted_unpickler(realdata: Path) -> None:
    path = realdata / "ntu_split_labels" / "ntu" / "xsub" / "val_label.pkl"
    names, labels = prepare._read_label_pickle(path)
    assert len(names) == len(labels) == 16_487
    assert not names[0].endswith(".skeleton") and labels[0] == ntu.parse_name(names[0]).label
