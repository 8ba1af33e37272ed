"""PKU-MMD II readers: skeleton rows, labels, split files, instance cutting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from halp.data import pku
from halp.errors import RawFormatError


def rows(frames: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "\n".join(" " + " ".join(f"{v:f}" for v in rng.normal(size=150)) for _ in range(frames))


def test_skeleton_rows_become_two_bodies() -> None:
    text = rows(5)
    bodies = pku.parse_skeleton(text.encode(), "v.txt")
    assert bodies.shape == (2, 5, 25, 3)
    first = np.array(text.splitlines()[0].split(), dtype=float)
    np.testing.assert_array_equal(bodies[0, 0], first[:75].reshape(25, 3))
    np.testing.assert_array_equal(bodies[1, 0], first[75:].reshape(25, 3))


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 1, "empty skeleton file"),
        ("1 2 3\n", 1, "needs 150 values, found 3"),
        (rows(2) + "\n" + " 1.0" * 149, 3, "found 149"),
        (rows(1) + "\n" + " x" * 150, 2, "non-numeric value 'x'"),
        (rows(1) + "\n" + " nan" * 150, 2, "non-finite"),
    ],
)
def test_bad_skeleton(text: str, line: int, message: str) -> None:
    with pytest.raises(RawFormatError, match=message) as info:
        pku.parse_skeleton(text.encode(), "v.txt")
    assert info.value.line == line


def test_labels() -> None:
    instances = pku.parse_labels("3,10,50,1\n\n51,60,90,2\n", "l.txt", "A01N01-L")
    assert [(i.name, i.label, i.start, i.end, i.line) for i in instances] == [
        ("A01N01-L_0", 2, 10, 50, 1),
        ("A01N01-L_1", 50, 60, 90, 3),
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 1, "holds no action"),
        ("\n\n", 1, "holds no action"),
        ("1,2,3\n", 1, "expected 'class,start,end,confidence'"),
        ("1,a,3,1\n", 1, "non-numeric"),
        ("1,2,3,1\n52,1,4,1\n", 2, "class 52 outside"),
        ("1,9,9,1\n", 1, "empty or negative"),
    ],
)
def test_bad_labels(text: str, line: int, message: str) -> None:
    with pytest.raises(RawFormatError, match=message) as info:
        pku.parse_labels(text, "l.txt", "v")
    assert (info.value.path, info.value.line) == ("l.txt", line)


def test_cut_rejects_rows_beyond_the_skeleton() -> None:
    bodies = np.zeros((2, 100, 25, 3))
    (inst,) = pku.parse_labels("1,90,101,1\n", "l.txt", "v")
    with pytest.raises(RawFormatError, match=r"\[90, 101\) exceed the 100 frames") as info:
        pku.cut(bodies, inst, "l.txt")
    assert info.value.line == 1
    (ok,) = pku.parse_labels("1,90,100,1\n", "l.txt", "v")
    assert pku.cut(bodies, ok, "l.txt").shape == (2, 10, 25, 3)


def test_split_file(tmp_path: Path) -> None:
    path = tmp_path / "cross_subject_v2.txt"
    path.write_text("Training videos: \nA01N01-L, A01N01-M\nValidataion videos: \nA02N01-L\n")
    assert pku.read_split(path, {"A01N01-L", "A01N01-M", "A02N01-L"}) == {"A01N01-L", "A01N01-M"}
    with pytest.raises(RawFormatError, match="have no skeleton file") as info:
        pku.read_split(path, {"A01N01-L"})
    assert info.value.line == 2 and "A01N01-M" in str(info.value)
    with pytest.raises(RawFormatError, match="split file not found"):
        pku.read_split(tmp_path / "nope.txt", set())
    path.write_text("Training videos:\n")
    with pytest.raises(RawFormatError, match="line 2 must list"):
        pku.read_split(path, set())


def test_real_pku_sample_reads_as_1040_by_150(realdata: Path) -> None:
    path = realdata / "pkummd_v2_sample" / "skeleton" / "A10N08-L.txt"
    bodies = pku.parse_skeleton(path.read_bytes(), str(path))
    assert bodies.shape == (2, 1040, 25, 3)
    present = bodies.reshape(2, 1040, -1).any(axis=2).sum(axis=1)
    assert present.tolist() == [1040, 728]  # as the folder's README documents
    assert 1.7 < bodies[0, :, :, 2].min() and bodies[0, :, :, 2].max() < 3.3
