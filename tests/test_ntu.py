"""NTU names, splits, missing lists and the raw parser, on constructed and real files."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from halp.data import ntu
from halp.errors import RawFormatError


def skeleton_text(bodies_per_frame: list[int], seed: int = 0, eol: str = "\r\n") -> str:
    """A well-formed .skeleton text with the given body count per frame."""
    rng = np.random.default_rng(seed)
    lines = [str(len(bodies_per_frame))]
    for count in bodies_per_frame:
        lines.append(str(count))
        for b in range(count):
            lines.append(f"7205759403793110{b} 0 1 1 1 1 0 0.02 0.05 2")
            lines.append("25")
            for _ in range(25):
                xyz = rng.normal(size=3) + np.array([0, 0, 3])
                lines.append(
                    " ".join(f"{v:.7g}" for v in xyz) + " 277.4 191.8 1036.2 519.1 "
                    "-0.2 0.05 0.96 -0.12 2"
                )
    return eol.join(lines) + eol


def parse(text: str) -> np.ndarray:
    return ntu.parse_skeleton(text.encode(), "S001C001P001R001A001.skeleton")


# ------------------------------------------------------------------- names and splits


def test_parse_name_fields_and_label() -> None:
    name = ntu.parse_name("S017C002P040R002A060.skeleton")
    assert (name.setup, name.camera, name.performer, name.replication, name.action) == (
        17,
        2,
        40,
        2,
        60,
    )
    assert name.label == 59
    for bad in ("S1C002P040R002A060", "X001C002P040R002A060", "S001C002P040R002A060x", ""):
        with pytest.raises(ValueError, match="not an NTU sample name"):
            ntu.parse_name(bad)


def test_split_rules() -> None:
    names = ["S001C001P001R001A001", "S002C002P003R001A001", "S003C003P103R001A002"]
    assert ntu.split_names(names, "ntu120", "xsub") == (
        ["S001C001P001R001A001", "S003C003P103R001A002"],
        ["S002C002P003R001A001"],
    )
    assert ntu.split_names(names, "ntu60", "xview") == (names[1:], names[:1])
    assert ntu.split_names(names, "ntu120", "xset") == (names[1:2], [names[0], names[2]])
    with pytest.raises(ValueError, match="benchmarks"):
        ntu.split_names(names, "ntu60", "xset")
    with pytest.raises(ValueError, match="outside ntu60"):
        ntu.split_names(["S001C001P001R001A061"], "ntu60", "xsub")
    # a missing-skeleton sample is dropped
    assert ntu.split_names(["S001C002P005R002A008"], "ntu60", "xsub") == ([], [])


def test_missing_lists_have_the_official_sizes() -> None:
    m60, m120 = ntu.missing_samples("ntu60"), ntu.missing_samples("ntu120")
    assert (len(m60), len(m120)) == (302, 535)
    assert m60 <= m120


def _all_names(dataset: str) -> list[str]:
    spec = ntu.DATASETS[dataset]
    return [
        f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{a:03d}"
        for s in range(1, spec.max_setup + 1)
        for c in (1, 2, 3)
        for p in range(1, 41)
        for r in (1, 2)
        for a in range(1, spec.num_classes + 1, 7)
    ]


@pytest.mark.parametrize("dataset", ["ntu60", "ntu120"])
def test_official_split_sizes_from_names(realdata: Path, dataset: str) -> None:
    """Our rules + missing lists reproduce the official name lists exactly."""
    folder = realdata / "ntu_split_labels" / ("ntu" if dataset == "ntu60" else "ntu120")
    official = {}
    for bench_dir in sorted(folder.iterdir()):
        for part in ("train", "val"):
            with open(bench_dir / f"{part}_label.pkl", "rb") as fh:
                names, labels = pickle.load(fh)
            official[bench_dir.name, part] = [ntu.sample_name(n) for n in names]
            assert labels == [ntu.parse_name(n).label for n in names]
    # the official lists hold exactly the existing samples; derive the universe from them
    universe = sorted({n for names in official.values() for n in names})
    universe += sorted(ntu.missing_samples(dataset))
    assert len(universe) == ntu.DATASETS[dataset].num_files
    for bench, (n_train, n_test) in ntu.DATASETS[dataset].split_sizes.items():
        train, test = ntu.split_names(sorted(universe), dataset, bench)
        assert (len(train), len(test)) == (n_train, n_test)
        assert set(train) == set(official[bench, "train"])
        assert set(test) == set(official[bench, "val"])


def test_split_sizes_on_the_full_name_grid_are_disjoint() -> None:
    names = _all_names("ntu60")
    train, test = ntu.split_names(names, "ntu60", "xsub")
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(set(names) - ntu.missing_samples("ntu60"))


def test_missing_lists_equal_the_official_files(realdata: Path) -> None:
    meta = realdata / "ntu_raw_samples" / "meta"
    for dataset, filename in (
        ("ntu60", "NTU_RGBD_samples_with_missing_skeletons.txt"),
        ("ntu120", "NTU_RGBD120_samples_with_missing_skeletons.txt"),
    ):
        lines = (meta / filename).read_text().splitlines()[3:]  # 3 header lines
        assert ntu.missing_samples(dataset) == {ln.strip() for ln in lines if ln.strip()}


# ----------------------------------------------------------------------------- parser


def test_parse_constructed_file() -> None:
    bodies = parse(skeleton_text([1, 2, 0, 1]))
    assert bodies.shape == (4, 4, 25, 3)
    present = bodies.sum(axis=(2, 3)) != 0
    np.testing.assert_array_equal(present[:2], [[1, 1, 0, 1], [0, 1, 0, 0]])
    assert not present[2:].any()


def test_crlf_and_lf_give_identical_arrays() -> None:
    np.testing.assert_array_equal(
        parse(skeleton_text([1, 2], eol="\r\n")), parse(skeleton_text([1, 2], eol="\n"))
    )


def test_zero_body_frame_is_an_empty_frame() -> None:
    """The format allows 0 bodies in a frame; it parses as a missing frame."""
    bodies = parse(skeleton_text([0, 1, 0]))
    assert not bodies[:, 0].any() and not bodies[:, 2].any() and bodies[0, 1].any()


BAD_CASES = {
    "empty": ("", 1, "empty file"),
    "blank": ("\r\n \r\n", 1, "empty file"),
    "zero frames": ("0\r\n", 1, "frame count is 0"),
    "all frames empty": ("2\r\n0\r\n0\r\n", 1, "no body in any"),
    "five bodies": (None, 2, "5 bodies in frame 1; at most 4"),
    "24 joints": (None, 4, "joint count is 24"),
    "letter": (None, 5, "non-numeric field 'a'"),
    "short joint line": (None, 5, "a joint line needs 12 values, found 11"),
    "body line": (None, 3, "a body line needs 10 values, found 9"),
    "truncated": (None, 20, "truncated"),
    "trailing data": (None, 30, "unexpected data after the last"),
    "frame count text": ("three\r\n", 1, "non-numeric field 't'"),
    "frame count float": ("3.5\r\n", 1, "expected the frame count"),
    "nan": (None, 5, "non-numeric field 'n'"),
}


def _bad_text(case: str) -> str:
    given = BAD_CASES[case][0]
    if given is not None:
        return given
    lines = skeleton_text([1]).split("\r\n")
    if case == "five bodies":
        return skeleton_text([5])
    if case == "24 joints":
        lines[3] = "24"
    elif case == "letter":
        lines[4] = lines[4].replace(" ", " a", 1)
    elif case == "short joint line":
        lines[4] = lines[4].rsplit(" ", 1)[0]
    elif case == "body line":
        lines[2] = lines[2].rsplit(" ", 1)[0]
    elif case == "truncated":
        lines = lines[:20]
    elif case == "trailing data":
        lines.insert(-1, "1")
    elif case == "nan":
        lines[4] = "nan " + lines[4].split(" ", 1)[1]
    return "\r\n".join(lines)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_line_and_problem(case: str) -> None:
    _, line, message = BAD_CASES[case]
    with pytest.raises(RawFormatError) as info:
        parse(_bad_text(case))
    err = info.value
    assert err.path == "S001C001P001R001A001.skeleton"
    assert err.line == line, str(err)
    assert message in err.message
    assert str(err).startswith(f"S001C001P001R001A001.skeleton:{line}: ")


def test_error_survives_pickling() -> None:
    err = RawFormatError("a.skeleton", 3, "bad")
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.line, again.message, str(again)) == (
        "a.skeleton",
        3,
        "bad",
        "a.skeleton:3: bad",
    )


# -------------------------------------------------------------------------- real files


def _readme_table(realdata: Path) -> dict[str, tuple[int, int]]:
    """file -> (frames, bodies) from the real-data folder's README table."""
    rows = {}
    text = (realdata / "ntu_raw_samples" / "README.md").read_text()
    for match in re.finditer(
        r"^\| (S\d{3}C\d{3}P\d{3}R\d{3}A\d{3}) \| (\d+) \| (\d+) \|", text, re.MULTILINE
    ):
        rows[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return rows


def test_real_files_parse_with_documented_counts(realdata: Path) -> None:
    table = _readme_table(realdata)
    files = sorted((realdata / "ntu_raw_samples" / "nturgb+d_skeletons").glob("*.skeleton"))
    assert len(files) == 18 and len(table) == 18
    for path in files:
        bodies = ntu.parse_skeleton(path.read_bytes(), str(path))
        frames, max_bodies = table[path.stem]
        assert bodies.shape[1] == frames, path.name
        present = bodies.sum(axis=(2, 3)) != 0
        assert present.sum(axis=0).max() == max_bodies, path.name
        assert present[:max_bodies].all(), path.name  # no frame with 0 bodies in these files
        assert np.abs(bodies[0, :, :, 2]).max() < 6  # depth in metres


def test_real_truncated_files_fail_with_line(realdata: Path) -> None:
    expected = {"S005C002P013R002A056": "frame 44/59", "S012C001P008R002A030": "frame 101/161"}
    for path in sorted((realdata / "ntu_raw_samples" / "truncated").glob("*.skeleton")):
        with pytest.raises(RawFormatError, match="truncated") as info:
            ntu.parse_skeleton(path.read_bytes(), str(path))
        assert expected[path.stem] in info.value.message
        assert info.value.line == len(path.read_bytes().splitlines())


def test_real_crlf_and_lf_copies_are_identical(realdata: Path) -> None:
    crlf = realdata / "ntu_raw_samples" / "nturgb+d_skeletons" / "S001C001P001R001A001.skeleton"
    lf = realdata / "ntu_raw_samples" / "lf_variant" / "S001C001P001R001A001.skeleton"
    assert b"\r\n" in crlf.read_bytes() and b"\r\n" not in lf.read_bytes()
    np.testing.assert_array_equal(
        ntu.parse_skeleton(crlf.read_bytes(), str(crlf)),
        ntu.parse_skeleton(lf.read_bytes(), str(lf)),
    )
