"""Reliability of the data layer: hostile raw files, archives, folders, workers, reruns.

Each test keeps a case from the bad-input and fault review: memory bounded by the
format's limits, no hang on a dead worker or a named pipe, a bad archive member is a
per-file error, duplicate names are refused, NaN never enters a prepared folder, a
prepared folder is valid only as a whole, and messages quote at most a short line.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import signal
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from halp.data import prepare
from halp.data.ntu import MAX_DECLARED_FRAMES, parse_skeleton
from halp.data.pku import parse_labels
from halp.data.storage import load_split
from halp.errors import DataFormatError, PrepareError, RawFormatError


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (never hang) when a test takes more than 60 s."""

    def expired(*_: object) -> None:
        raise TimeoutError("the test hung for 60 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _raw_copy(src: Path, dst: Path, count: int = 12) -> list[Path]:
    dst.mkdir(parents=True)
    files = sorted(src.rglob("*.skeleton"))[:count]
    for path in files:
        shutil.copy(path, dst / path.name)
    return sorted(dst.glob("*.skeleton"))


# ------------------------------------------------------------------------ memory


def test_a_huge_declared_frame_count_is_refused_before_allocating() -> None:
    raw = f"{10**7}\n".encode() + b"0\n" * 1000
    with pytest.raises(RawFormatError, match=rf"declares {10**7} frames, more than the"):
        parse_skeleton(raw, "S001C001P001R001A001.skeleton")
    assert MAX_DECLARED_FRAMES >= 300  # every real NTU clip fits


def test_a_frame_count_beyond_the_file_is_truncation() -> None:
    raw = b"2000\n" + b"0\n" * 10  # 2000 declared, 10 present: caught before any array
    with pytest.raises(RawFormatError, match=r":11: file ends before its 2000 frames"):
        parse_skeleton(raw, "S001C001P001R001A001.skeleton")


def test_raw_files_larger_than_the_limit_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big.skeleton"
    path.write_bytes(b"1\n" * 1000)
    with pytest.raises(RawFormatError, match=r"big.skeleton: 2000 bytes, more than the 1000"):
        prepare.read_source((None, str(path)), limit=1000)
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x/big.skeleton", b"0" * 100_000)  # compresses to a few hundred bytes
    assert archive.stat().st_size < 2000
    with pytest.raises(RawFormatError, match=r"a.zip!x/big.skeleton: decompresses to 100000"):
        prepare.read_source((str(archive), "x/big.skeleton"), limit=1000)


# ------------------------------------------------------------------------ archives


def _zip(files: list[Path], archive: Path) -> None:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, f"nturgb+d_skeletons/{path.name}")


def _corrupt_member(archive: Path, name: str) -> None:
    """Overwrite the middle of one member's compressed bytes."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 10, start + min(info.compress_size, 60)):
        data[i] ^= 0xFF
    archive.write_bytes(bytes(data))


def _encrypt_flag(archive: Path, name: str) -> None:
    """Mark one member as encrypted in its local and central headers."""
    data = bytearray(archive.read_bytes())
    encoded = name.encode()
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at != -1:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at : name_at + len(encoded)] == encoded:
                data[at + flag_at] |= 0x01
            at = data.find(signature, at + 4)
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["corrupt", "encrypted"])
def test_a_bad_archive_member_is_a_per_file_error(
    synth_ntu_raw: Path, tmp_path: Path, damage: str
) -> None:
    files = sorted(synth_ntu_raw.rglob("*.skeleton"))
    archive = tmp_path / "ntu.zip"
    _zip(files, archive)
    victim = f"nturgb+d_skeletons/{files[3].name}"
    (_corrupt_member if damage == "corrupt" else _encrypt_flag)(archive, victim)
    with pytest.raises(PrepareError, match=rf"ntu.zip!{re.escape(victim)}: unreadable archive"):
        prepare.prepare_ntu("ntu60", [archive], tmp_path / "a")
    summary = prepare.prepare_ntu("ntu60", [archive], tmp_path / "b", skip_bad=True)
    assert [s["name"] for s in summary.skipped] == [files[3].stem]
    total = sum(sum(parts.values()) for parts in summary.counts.values())
    assert total == 2 * (len(files) - 1)  # every other file, in both benchmarks


# ------------------------------------------------------------------------ folders


def test_a_named_pipe_in_the_raw_folder_is_skipped_not_opened(
    synth_ntu_raw: Path, tmp_path: Path, deadline: None, caplog: pytest.LogCaptureFixture
) -> None:
    raw = tmp_path / "raw"
    _raw_copy(synth_ntu_raw, raw)
    os.mkfifo(raw / "S001C001P001R001A059.skeleton")
    with caplog.at_level(logging.WARNING):
        summary = prepare.prepare_ntu("ntu60", [raw], tmp_path / "out")
    assert "not a regular file" in caplog.text and "A059" in caplog.text
    assert sum(summary.counts["xsub"].values()) == 12


def test_the_same_sample_twice_in_one_raw_folder_is_refused(
    synth_ntu_raw: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    files = _raw_copy(synth_ntu_raw, raw)
    (raw / "copy").mkdir()
    shutil.copy(files[0], raw / "copy" / files[0].name)
    with pytest.raises(PrepareError, match=rf"{files[0].stem} is there twice, as .* and .*copy"):
        prepare.prepare_ntu("ntu60", [raw], tmp_path / "out")


def test_an_unreadable_subfolder_is_reported(
    synth_ntu_raw: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(As root every folder is readable, so the walk's error is injected.)"""
    raw = tmp_path / "raw"
    _raw_copy(synth_ntu_raw, raw)
    real_walk = os.walk

    def walk(top: Path, onerror=None):  # type: ignore[no-untyped-def]
        onerror(PermissionError(13, "Permission denied", str(raw / "locked")))
        yield from real_walk(top, onerror=onerror)

    monkeypatch.setattr(prepare.os, "walk", walk)
    with caplog.at_level(logging.WARNING):
        prepare.find_files(raw, ".skeleton")
    assert "cannot read" in caplog.text and "locked" in caplog.text


def test_out_holding_foreign_files_is_refused(synth_ntu_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(PrepareError, match=r"holds other files \(thesis.tex\)"):
        prepare.prepare_ntu("ntu60", [synth_ntu_raw], out)
    assert (out / "thesis.tex").read_text() == "precious"


# ------------------------------------------------------------------------ workers


def _die_on_one(job: tuple) -> prepare.Outcome:
    """A worker that is killed (as by the out-of-memory killer) on one file."""
    if job[0].endswith("A003"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _REAL_NTU_JOB(job)


_REAL_NTU_JOB = prepare._ntu_job


def test_a_dead_worker_fails_the_run_naming_the_sample(
    synth_ntu_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deadline: None
) -> None:
    monkeypatch.setattr(prepare, "_ntu_job", _die_on_one)
    with pytest.raises(PrepareError, match=r"worker process died .* while preparing S\w+"):
        prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "out", workers=2)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


# ------------------------------------------------------------------------ NaN and reruns


def test_import_cmd_refuses_nan_naming_the_sample(synth_ntu_raw: Path, tmp_path: Path) -> None:
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "ours")
    folder = tmp_path / "cmd" / "xsub"
    folder.mkdir(parents=True)
    for ours, theirs in (("train", "train"), ("test", "val")):
        split = load_split(tmp_path / "ours" / "xsub", ours)
        data = np.array(split.data)
        if theirs == "val":
            data[2, 0, 5, 3, 0] = np.nan
        np.save(folder / f"{theirs}_data_joint.npy", data)
        with open(folder / f"{theirs}_label.pkl", "wb") as fh:
            pickle.dump(
                ([f"{n}.skeleton" for n in split.index.names], split.index.labels.tolist()), fh
            )
        np.save(folder / f"{theirs}_num_frame.npy", split.index.frames)
    with pytest.raises(PrepareError, match=r"val_data_joint.npy: sample 2: .* NaN or infinite"):
        prepare.import_cmd(folder, tmp_path / "imported", "ntu60")
    assert not (tmp_path / "imported" / "xsub").exists()


def test_a_folder_mixing_two_preparations_is_refused(synth_ntu_raw: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], first)
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], second)
    shutil.copy(second / "xsub" / "test.json", first / "xsub" / "test.json")
    assert len(load_split(first / "xsub", "train")) > 0  # the untouched part still loads
    with pytest.raises(DataFormatError, match=r"test.json: written by preparation \w+, but .*"):
        load_split(first / "xsub", "test")
    (first / "manifest.json").unlink()
    with pytest.raises(DataFormatError, match=r"manifest.json is missing"):
        load_split(first / "xsub", "train")


def test_import_cmd_keeps_the_benchmarks_imported_before(
    synth_ntu_raw: Path, tmp_path: Path
) -> None:
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "ours")
    for bench in ("xsub", "xview"):
        folder = tmp_path / "cmd" / bench
        folder.mkdir(parents=True)
        for ours, theirs in (("train", "train"), ("test", "val")):
            split = load_split(tmp_path / "ours" / bench, ours)
            np.save(folder / f"{theirs}_data_joint.npy", np.asarray(split.data))
            with open(folder / f"{theirs}_label.pkl", "wb") as fh:
                names = [f"{n}.skeleton" for n in split.index.names]
                pickle.dump((names, split.index.labels.tolist()), fh)
            np.save(folder / f"{theirs}_num_frame.npy", split.index.frames)
        prepare.import_cmd(folder, tmp_path / "imported", "ntu60")
    manifest = json.loads((tmp_path / "imported" / "manifest.json").read_text())
    assert set(manifest["benchmarks"]) == set(manifest["run_ids"]) == {"xsub", "xview"}
    for bench in ("xsub", "xview"):
        assert len(load_split(tmp_path / "imported" / bench, "train")) > 0


# ------------------------------------------------------------------------ messages


def test_cr_only_line_endings_quote_at_most_a_short_line() -> None:
    raw = b"1\r0\r" + b"0.1 " * 20000  # one 80 kB "line"
    with pytest.raises(RawFormatError) as info:
        parse_skeleton(raw, "S001C001P001R001A001.skeleton")
    assert len(str(info.value)) < 300


def test_an_infinite_label_field_is_a_line_error() -> None:
    with pytest.raises(RawFormatError, match=r"labels.txt:2: non-numeric or infinite"):
        parse_labels("1,0,10,1\n2,inf,30,1\n", "labels.txt", "0001-L")


def test_a_body_only_after_the_stored_frames_is_listed_as_empty(tmp_path: Path) -> None:
    joint = "0.1 0.2 3.0 0 0 0 0 0 0 0 0 2\n"
    body = "72057594037931101 0 1 1 1 1 0 0.1 0.1 2\n25\n" + joint * 25
    frames = ["0\n"] * 300 + ["1\n" + body] * 10  # the body appears in frames 301-310 only
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "S001C001P001R001A001.skeleton").write_text("310\n" + "".join(frames))
    summary = prepare.prepare_ntu("ntu60", [raw], tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["empty_samples"] == summary.empty == ["S001C001P001R001A001"]
