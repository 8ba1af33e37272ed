"""NW-UCLA: the all_sqe reader, its checks, splits and normalisation (halp.data.nwucla)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from halp.data import nwucla
from halp.data.prepare import prepare_nwucla
from halp.data.storage import load_split
from halp.data.synthetic import synth_nwucla
from halp.errors import PrepareError

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("HALP_REALDATA", ROOT.parent / "shared" / "realdata"))


@pytest.fixture(scope="module")
def real_sqe() -> Path:
    """The real all_sqe folder; tests using it skip when it is absent."""
    folder = REALDATA / "nwucla" / "all_sqe"
    if not folder.is_dir():
        pytest.skip(
            f"the real NW-UCLA release was not found at {folder}; set HALP_REALDATA to the "
            "folder holding nwucla/all_sqe/ (the 1,484 JSON files)"
        )
    return folder


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic all_sqe files (6 classes x 8); read-only."""
    out = tmp_path_factory.mktemp("synth_nwucla")
    synth_nwucla(out, classes=6, per_class=8, seed=0)
    return out / "all_sqe"


def copy_raw(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- names


def test_parse_name_and_labels() -> None:
    clip = nwucla.parse_name("a11_s03_e02_v02")
    assert (clip.action, clip.subject, clip.repetition, clip.view) == (11, 3, 2, 2)
    assert clip.label == 8  # a11 "throw" is the 9th class
    assert [nwucla.ACTION_LABELS[a] for a in (1, 6, 8, 12)] == [0, 5, 6, 9]
    for bad, why in (
        ("a07_s01_e00_v01", "action a07"),
        ("a01_s11_e00_v01", "subject s11"),
        ("a01_s01_e00_v04", "view v04"),
        ("S001C001P001R001A001", "not an NW-UCLA clip name"),
    ):
        with pytest.raises(ValueError, match=why):
            nwucla.parse_name(bad)


# --------------------------------------------------------------------------- bad files


def _clip_json(name: str = "a01_s01_e00_v01", frames: int = 3, **change: object) -> dict:
    rng = np.random.default_rng(0)
    data = {
        "file_name": name,
        "skeletons": (rng.normal(0, 0.3, (frames, 20, 3)) + np.array([0.0, 0.0, 3.0]))
        .round(6)
        .tolist(),
        "label": 1,
    }
    data.update(change)
    return data


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda: json.dumps(_clip_json())[:-40], "not valid JSON"),  # truncated
        (lambda: json.dumps(_clip_json(file_name="a01_s01_e01_v01")), "renamed or edited"),
        (lambda: json.dumps(_clip_json(label=2)), "label 2 disagrees"),
        (lambda: json.dumps(_clip_json(label=True)), "label True disagrees"),
        (lambda: json.dumps({"file_name": "a01_s01_e00_v01", "label": 1}), "'skeletons'"),
        (lambda: json.dumps([1, 2, 3]), "a JSON list"),
        (lambda: json.dumps(_clip_json(skeletons=[])), "non-empty list of frames"),
        (
            lambda: json.dumps(
                _clip_json(skeletons=[*_clip_json()["skeletons"][:1], [[0] * 3] * 25])
            ),
            "frame 1: expected 20 joints",
        ),
        (
            lambda: json.dumps(
                _clip_json(skeletons=[[[0.1, 0.2, 3.0]] * 20, [[math.nan, 0, 3]] * 20])
            ),
            "frame 1: a coordinate is NaN or infinite",
        ),
        (
            lambda: json.dumps(_clip_json(skeletons=(np.ones((2, 20, 3)) * 3000).tolist())),
            "beyond 10 m",
        ),
        (
            lambda: json.dumps(_clip_json(skeletons=[[["x", 0, 0]] * 20])),
            "frame 0: a coordinate is not a number",
        ),
        (lambda: b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
    ids=[
        "truncated",
        "file_name",
        "label",
        "bool-label",
        "missing-key",
        "not-object",
        "no-frames",
        "joint-count",
        "nan",
        "millimetres",
        "string",
        "binary",
    ],
)
def test_bad_file_is_refused_naming_it(
    synth_raw: Path, tmp_path: Path, content: object, message: str
) -> None:
    raw = copy_raw(synth_raw, tmp_path / "raw")
    out = tmp_path / "out"
    prepare_nwucla(raw, out)  # a good dataset first: a refused run must leave it intact
    before = (out / "manifest.json").read_bytes()
    victim = sorted(raw.glob("a01_*.json"))[0]
    body = content()  # type: ignore[operator]
    body = body if isinstance(body, bytes) else body.encode()
    # the generated file belongs to another name: rename the fields' expectations
    body = body.replace(b"a01_s01_e00_v01", victim.stem.encode())
    victim.write_bytes(body)
    with pytest.raises(PrepareError, match=message) as err:
        prepare_nwucla(raw, out)
    assert victim.name in str(err.value)
    assert "--skip-bad" in str(err.value)
    assert (out / "manifest.json").read_bytes() == before
    assert not (tmp_path / ".out.partial").exists()
    # skipped on request, and listed
    summary = prepare_nwucla(raw, out, skip_bad=True)
    assert [s["name"] for s in summary.skipped] == [victim.stem]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"][0]["name"] == victim.stem
    assert sum(summary.counts["xview3"].values()) == 47


def test_foreign_file_name_is_refused(synth_raw: Path, tmp_path: Path) -> None:
    raw = copy_raw(synth_raw, tmp_path / "raw")
    (raw / "labels.json").write_text("{}")
    with pytest.raises(PrepareError, match=r"labels\.json: 'labels' is not an NW-UCLA clip name"):
        prepare_nwucla(raw, tmp_path / "out")


def test_missing_and_empty_raw(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match=r"no such file or folder.*all_sqe"):
        prepare_nwucla(tmp_path / "absent", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match=r"holds no \.json file"):
        prepare_nwucla(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(PrepareError, match="val-subjects"):
        prepare_nwucla(tmp_path / "empty", tmp_path / "out", val_subjects=range(1, 11))


def test_expect_complete_refuses_a_subset(synth_raw: Path, tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="not the all_sqe release"):
        prepare_nwucla(synth_raw, tmp_path / "out", expect_complete=True)


# --------------------------------------------------------------------------- splits


def test_splits_on_synthetic_data(synth_raw: Path, tmp_path: Path) -> None:
    summary = prepare_nwucla(synth_raw, tmp_path / "out", workers=2)
    names = sorted(p.stem for p in synth_raw.glob("*.json"))
    clips = {n: nwucla.parse_name(n) for n in names}
    for view in nwucla.VIEWS:
        bench = f"xview{view}"
        train = load_split(tmp_path / "out" / bench, "train")
        test = load_split(tmp_path / "out" / bench, "test")
        assert sorted(train.index.names + test.index.names) == names
        assert {clips[n].view for n in test.index.names} == {view}
        assert view not in {clips[n].view for n in train.index.names}
        assert train.data.shape[1:] == (3, nwucla.MAX_FRAMES, 20, 1)
        val_train = load_split(tmp_path / "out" / f"{bench}-val", "train")
        val_test = load_split(tmp_path / "out" / f"{bench}-val", "test")
        assert sorted(val_train.index.names + val_test.index.names) == sorted(train.index.names)
        assert {clips[n].subject for n in val_test.index.names} <= set(nwucla.VAL_SUBJECTS)
        assert not {clips[n].subject for n in val_train.index.names} & set(nwucla.VAL_SUBJECTS)
        assert len(val_test) > 0
        assert summary.counts[f"{bench}-val"] == {"train": len(val_train), "test": len(val_test)}
    test3 = load_split(tmp_path / "out" / "xview3", "test")
    assert test3.layout.name == "kinect20"
    labels = dict(zip(test3.index.names, test3.index.labels.tolist(), strict=True))
    assert all(labels[n] == clips[n].label for n in labels)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["layout"] == "kinect20"
    assert manifest["release_verified"] is False
    assert manifest["normalisation"]["recipe"] == "nwucla"


def test_zip_archive_gives_the_same_arrays(synth_raw: Path, tmp_path: Path) -> None:
    archive = Path(
        shutil.make_archive(str(tmp_path / "all_sqe"), "zip", synth_raw.parent, "all_sqe")
    )
    from_zip = prepare_nwucla(archive, tmp_path / "zip")
    from_dir = prepare_nwucla(synth_raw, tmp_path / "dir")
    assert from_zip.counts == from_dir.counts
    for part in ("train", "test"):
        a, b = (load_split(tmp_path / d / "xview3", part) for d in ("zip", "dir"))
        assert a.index.names == b.index.names
        np.testing.assert_array_equal(a.data, b.data)


def test_single_frame_rule(synth_raw: Path, tmp_path: Path) -> None:
    single = [
        p.stem
        for p in synth_raw.glob("a02_*.json")
        if len(json.loads(p.read_text())["skeletons"]) == 1
    ]
    assert len(single) == 1  # synth writes one, like the release's a02_s09_e04_v0{2,3}
    kept = prepare_nwucla(synth_raw, tmp_path / "kept")
    dropped = prepare_nwucla(synth_raw, tmp_path / "dropped", drop_single_frame=True)
    for bench in nwucla.BENCHMARKS:
        assert sum(kept.counts[bench].values()) == 48
        assert sum(dropped.counts[bench].values()) == 47
    assert dropped.extra["dropped_single_frame"] == single
    split = load_split(tmp_path / "kept" / "xview3", "train")
    split = (
        split
        if single[0] in split.index.names
        else load_split(tmp_path / "kept" / "xview3", "test")
    )
    i = split.index.names.index(single[0])
    assert split.index.frames[i] == 1
    assert split.data[i, :, 1:].max() == 0  # one stored frame, zero padding after it


# --------------------------------------------------------------------------- normalisation


def _rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rotation_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _synthetic_clip(synth_raw: Path) -> np.ndarray:
    path = sorted(synth_raw.glob("a04_*.json"))[0]
    return nwucla.parse_clip(path.read_bytes(), str(path), path.stem)


def test_normalisation_is_upright_facing_and_centred(synth_raw: Path) -> None:
    x = nwucla.normalize_clip(_synthetic_clip(synth_raw))
    first = x[0]
    np.testing.assert_allclose(first[nwucla.SPINE], 0.0, atol=1e-12)
    up = first[nwucla.SHOULDER_CENTRE] - first[nwucla.HIP_CENTRE]
    np.testing.assert_allclose(up / np.linalg.norm(up), [0.0, 1.0, 0.0], atol=1e-9)
    across = first[nwucla.RIGHT_SHOULDER] - first[nwucla.LEFT_SHOULDER]
    assert across[0] > 0 and abs(across[2]) < 1e-9  # horizontal part along +x


@pytest.mark.parametrize("yaw", [0.3, -1.2, 2.9])
def test_normalisation_removes_the_view(synth_raw: Path, yaw: float) -> None:
    clip = _synthetic_clip(synth_raw)
    moved = clip @ (_rotation_y(yaw) @ _rotation_x(0.2)).T + (0.4, -0.3, 1.1)
    np.testing.assert_allclose(nwucla.normalize_clip(moved), nwucla.normalize_clip(clip), atol=1e-9)
    # centring alone would not: the recipe does more than subtract a joint
    assert not np.allclose(moved - moved[0, 1], clip - clip[0, 1], atol=1e-3)


def test_missing_joints_stay_zero_and_later_frames_align(synth_raw: Path) -> None:
    clip = _synthetic_clip(synth_raw)
    clip[0, nwucla.LEFT_SHOULDER] = 0.0  # frame 0 cannot be used: frame 1 aligns the clip
    clip[3, 7] = 0.0
    x = nwucla.normalize_clip(clip)
    assert (x[0, nwucla.LEFT_SHOULDER] == 0).all() and (x[3, 7] == 0).all()
    np.testing.assert_allclose(x[1, nwucla.SPINE], 0.0, atol=1e-12)


# --------------------------------------------------------------------------- real files


def test_real_release(real_sqe: Path, tmp_path: Path) -> None:
    summary = prepare_nwucla(real_sqe, tmp_path / "out", workers=2, expect_complete=True)
    assert summary.extra["release_verified"] is True
    for bench, sizes in nwucla.SPLIT_SIZES.items():
        assert summary.counts[bench] == dict(zip(("train", "test"), sizes, strict=True))
    assert summary.counts["xview3-val"] == {"train": 829, "test": 191}
    train = load_split(tmp_path / "out" / "xview3", "train")
    assert train.index.frames.min() == 1 and train.index.frames.max() == 201
    assert np.bincount(train.index.labels, minlength=10).min() > 0
    # every stored clip starts centred on its spine and upright
    first = np.asarray(train.data[:, :, 0, :, 0])  # (N, 3, V)
    np.testing.assert_allclose(first[:, :, nwucla.SPINE], 0.0, atol=1e-6)
    up = first[:, :, nwucla.SHOULDER_CENTRE] - first[:, :, nwucla.HIP_CENTRE]
    assert (up[:, 1] > 0.99 * np.linalg.norm(up, axis=1)).mean() > 0.99


def test_real_release_predict_and_cluster_protocol(real_sqe: Path, tmp_path: Path) -> None:
    summary = prepare_nwucla(real_sqe, tmp_path / "out", workers=2, drop_single_frame=True)
    assert summary.counts["xview3"] == {"train": 1019, "test": 463}
    assert sorted(summary.extra["dropped_single_frame"]) == [
        "a02_s09_e04_v02",
        "a02_s09_e04_v03",
    ]


def test_real_file_edited_is_refused(real_sqe: Path, tmp_path: Path) -> None:
    name = "a01_s01_e00_v01"
    data = json.loads((real_sqe / f"{name}.json").read_text())
    assert nwucla.parse_clip(json.dumps(data).encode(), name, name).shape == (44, 20, 3)
    data["skeletons"][5] = data["skeletons"][5][:19]
    with pytest.raises(Exception, match="frame 5: expected 20 joints"):
        nwucla.parse_clip(json.dumps(data).encode(), name, name)
