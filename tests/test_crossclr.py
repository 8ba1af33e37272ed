"""The CrosSCLR/AimCLR data recipe against a slow reference on real NTU files; its wiring
into `halp prepare --recipe crossclr`; the recipe check of prepared folders."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from halp.cli import main
from halp.data import ntu, prepare
from halp.data.crossclr import crossclr_sample
from halp.data.skeleton import BONE_CHILD, BONE_PARENT
from halp.data.storage import SplitWriter, check_recipe, load_split, recipe_of
from halp.errors import ConfigError, DataFormatError, RawFormatError

TWO_PEOPLE = ("S001C003P008R002A058", "S002C002P009R001A056")
# S001C002P003R002A013 and S010C003P007R002A021: shoulder depth changes sign within the
# sequence; S010C003P025R002A032: the body turns the other way (sum of v_z > 0)
MIXED_SIGNS = ("S001C002P003R002A013", "S010C003P007R002A021")
REAL = (*TWO_PEOPLE, *MIXED_SIGNS, "S010C003P025R002A032", "S005C003P017R001A040")


# ---------------------------------------------------------------- the slow reference


def reference(slots: np.ndarray, out_frames: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The recipe with loops per frame and body, written from its description.

    Returns (output, the resized frames before the rotation), both float64 (3, T, 25, 2).
    """
    frames = min(slots.shape[1], 300)
    x = np.zeros((3, frames, 25, 2))
    for m in range(min(2, slots.shape[0])):  # the first two bodies listed, in file order
        for t in range(frames):
            for j in range(25):
                x[:, t, j, m] = slots[m, t, j]
    length = 0
    for t in range(frames):
        if x[0, t, 0, 0] != 0 or x[1, t, 0, 0] != 0 or x[2, t, 0, 0] != 0:
            length += 1
    for m in range(2):
        for t in range(frames):
            centre = x[:, t, 20, m].copy()  # NTU joint 21
            for j in range(25):
                x[:, t, j, m] -= centre
    # linear resize of the first `length` frames, pixel centres at i + 0.5 (cv2.resize)
    resized = np.zeros((3, out_frames, 25, 2))
    for d in range(out_frames):
        pos = max((d + 0.5) * length / out_frames - 0.5, 0.0)
        lo = min(int(np.floor(pos)), length - 1)
        hi = min(lo + 1, length - 1)
        frac = pos - lo if lo < length - 1 else 0.0
        resized[:, d] = (1 - frac) * x[:, lo] + frac * x[:, hi]
    out = np.zeros_like(resized)
    for m in range(2):
        angles = []
        z_sum = 0.0
        for t in range(out_frames):
            vec = resized[:, t, 8, m] - resized[:, t, 4, m]  # joint 9 - joint 5
            vec[1] = 0.0
            cos_value = vec[0] / (np.linalg.norm(vec) + 1e-4)
            angles.append(np.degrees(np.arccos(cos_value)))
            z_sum += vec[2]
        for t in range(out_frames):
            theta = np.radians(-angles[t] if z_sum >= 0 else angles[t])
            c, s = np.cos(theta), np.sin(theta)
            rot = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
            for j in range(25):
                out[:, t, j, m] = rot @ resized[:, t, j, m]
    return out, resized


def real_slots(realdata: Path, name: str) -> np.ndarray:
    path = realdata / "ntu_raw_samples" / "nturgb+d_skeletons" / f"{name}.skeleton"
    return ntu.parse_skeleton(path.read_bytes(), str(path))


def variants(slots: np.ndarray) -> dict[str, np.ndarray]:
    """The real file and edits of it that reach the recipe's other branches."""
    short = slots[:, :30]  # fewer than 50 frames: resized up
    late = slots.copy()
    late[0, :7] = 0.0  # body 0 missing at the start: length counts, it does not locate
    long = np.concatenate([slots] * 5, axis=1)  # more than 300 frames: the first 300 kept
    return {"file": slots, "short": short, "late": late, "long": long}


# ---------------------------------------------------------------- recipe vs reference


@pytest.mark.parametrize("name", REAL)
def test_recipe_matches_the_slow_reference_on_real_files(realdata: Path, name: str) -> None:
    for variant, slots in variants(real_slots(realdata, name)).items():
        got = crossclr_sample(slots, name)
        want, _ = reference(slots)
        assert got.shape == (3, 50, 25, 2) and got.dtype == np.float32, variant
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6, err_msg=f"{name} {variant}")
    assert got.shape == (3, 50, 25, 2)


def test_the_reference_reaches_every_branch(realdata: Path) -> None:
    """Guards against a reference (and a recipe) that silently skips a step."""
    slots = real_slots(realdata, TWO_PEOPLE[0])
    out, _ = reference(slots)
    assert np.abs(out[..., 1]).sum() > 0  # the second person is kept
    late = variants(slots)["late"]
    # body 0 absent in 7 leading frames: only the first 63 of 70 frames are resized,
    # so the sample differs from resizing frames 7..69 (where body 0 is)
    late_out, _ = reference(late)
    cropped, _ = reference(late[:, 7:])
    assert np.abs(late_out - cropped).max() > 1e-2
    np.testing.assert_allclose(crossclr_sample(late, "late"), late_out, atol=2e-6)


@pytest.mark.parametrize("name", REAL)
def test_rotation_properties_on_real_files(realdata: Path, name: str) -> None:
    slots = real_slots(realdata, name)
    out = crossclr_sample(slots, name).astype(np.float64)
    _, before = reference(slots)  # centred and resized, not yet rotated
    for m in range(2 if name in TWO_PEOPLE else 1):
        assert np.abs(before[:, :, 20, m]).max() == 0.0  # joint 21 at the origin...
        assert np.abs(out[:, :, 20, m]).max() < 1e-7  # ...and kept there by the rotation
        np.testing.assert_allclose(out[1, ..., m], before[1, ..., m], atol=1e-6)  # about y
        bones = np.linalg.norm(out[:, :, BONE_CHILD, m] - out[:, :, BONE_PARENT, m], axis=0)
        bones_before = np.linalg.norm(
            before[:, :, BONE_CHILD, m] - before[:, :, BONE_PARENT, m], axis=0
        )
        np.testing.assert_allclose(bones, bones_before, atol=1e-6)
        # the shoulders turn onto +x in every frame whose depth difference has the sign of
        # the whole sequence, up to the 1e-4 in the recipe's arccos (at most
        # sin(arccos(n / (n + 1e-4))) of the shoulder width n)
        vec = before[:, :, 8, m] - before[:, :, 4, m]
        width = np.hypot(vec[0], vec[2])
        agree = (vec[2] >= 0) == (vec[2].sum() >= 0)
        turned = out[:, :, 8, m] - out[:, :, 4, m]
        bound = np.sqrt(1 - (width / (width + 1e-4)) ** 2) * width + 1e-6
        assert agree.sum() >= 29
        assert (np.abs(turned[2]) <= bound)[agree].all()
        np.testing.assert_allclose(turned[0][agree], width[agree], rtol=1e-3)
        if name in MIXED_SIGNS:
            # one sign per sequence, as released: the other frames are mirrored, not aligned
            assert (~agree).any() and (np.abs(turned[2]) > bound)[~agree].any()


def test_a_sample_without_body_zero_is_refused() -> None:
    slots = np.zeros((4, 20, 25, 3))
    slots[1] = 0.5  # only a second body
    with pytest.raises(RawFormatError, match=r"^some/file\.skeleton: the first body listed"):
        crossclr_sample(slots, "some/file.skeleton")


# ---------------------------------------------------------------- halp prepare --recipe


def skeleton_text(bodies: np.ndarray) -> bytes:
    """An NTU .skeleton file holding (B, F, 25, 3) bodies (all of them in every frame)."""
    lines = [str(bodies.shape[1])]
    for t in range(bodies.shape[1]):
        lines.append(str(bodies.shape[0]))
        for body in bodies[:, t]:
            lines += ["72057594037931101 0 1 1 1 1 0 0.1 -0.2 2", "25"]
            lines += [
                " ".join(f"{v:.5f}" for v in (*xyz, 0, 0, 0, 0, 1, 0, 0, 0, 2)) for xyz in body
            ]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.fixture(scope="module")
def crossclr_out(synth_ntu_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crossclr") / "ntu60"
    argv = ["prepare", "ntu60", "--raw", str(synth_ntu_raw), "--out", str(out)]
    assert main([*argv, "--recipe", "crossclr", "--workers", "2"]) == 0
    return out


def test_prepare_crossclr_end_to_end(crossclr_out: Path, synth_ntu_raw: Path) -> None:
    manifest = json.loads((crossclr_out / "manifest.json").read_text())
    assert manifest["normalisation"] == {"recipe": "crossclr", "frames": 50}
    assert manifest["num_frames"] == 50 and manifest["empty_samples"] == []
    for bench in ("xsub", "xview"):
        total = 0
        for part in ("train", "test"):
            split = load_split(crossclr_out / bench, part)
            total += len(split)
            assert split.data.shape == (len(split), 3, 50, 25, 2)
            assert split.index.frames.tolist() == [50] * len(split)
            assert all(split.valid_frames(i) == 50 for i in range(len(split)))
        assert total == 48
        assert recipe_of(crossclr_out / bench) == "crossclr"
    # a row is the recipe applied to its file, and the slow reference agrees
    split = load_split(crossclr_out / "xsub", "train")
    name = split.index.names[2]
    path = synth_ntu_raw / "nturgb+d_skeletons" / f"{name}.skeleton"
    slots = ntu.parse_skeleton(path.read_bytes(), str(path))
    np.testing.assert_array_equal(split.data[2], crossclr_sample(slots, str(path)))
    np.testing.assert_allclose(split.data[2], reference(slots)[0], atol=2e-6)


def test_prepare_crossclr_on_the_real_files(realdata: Path, tmp_path: Path) -> None:
    raw = realdata / "ntu_raw_samples" / "nturgb+d_skeletons"
    summary = prepare.prepare_ntu("ntu60", [raw], tmp_path / "out", recipe="crossclr")
    assert summary.counts == {"xsub": {"train": 12, "test": 6}, "xview": {"train": 9, "test": 9}}
    split = load_split(tmp_path / "out" / "xsub", "train")
    i = split.index.names.index(TWO_PEOPLE[0])
    np.testing.assert_allclose(
        split.data[i], reference(real_slots(realdata, TWO_PEOPLE[0]))[0], atol=2e-6
    )


def test_default_recipe_is_unchanged(synth_ntu_raw: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in sorted(synth_ntu_raw.rglob("*.skeleton"))[:6]:
        shutil.copy(path, raw / path.name)
    prepare.prepare_ntu("ntu60", [raw], tmp_path / "default")
    manifest = json.loads((tmp_path / "default" / "manifest.json").read_text())
    assert manifest["normalisation"] == {"recipe": "2s-AGCN", "compaction": "all"}
    assert manifest["num_frames"] == 300
    assert recipe_of(tmp_path / "default" / "xsub") == "2s-agcn"
    assert load_split(tmp_path / "default" / "xsub", "train").data.shape[2] == 300


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        # a real file whose upload broke off: the parser's error, for either recipe
        ("S005C002P013R002A056.skeleton", None, "the file is truncated"),
        ("S001C001P001R001A002.skeleton", b"3\r\n0\r\n0\r\n0\r\n", "no body in any of the 3"),
        ("S001C001P001R001A003.skeleton", "zero-spine-base", "the first body listed has a zero"),
    ],
)
def test_bad_files_stop_the_run_or_are_skipped(
    realdata: Path, tmp_path: Path, filename: str, data: bytes | str | None, message: str
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    good = realdata / "ntu_raw_samples" / "nturgb+d_skeletons"
    for name in TWO_PEOPLE:
        shutil.copy(good / f"{name}.skeleton", raw)
    if data is None:
        shutil.copy(realdata / "ntu_raw_samples" / "truncated" / filename, raw)
    elif data == "zero-spine-base":
        bodies = np.random.default_rng(0).normal(size=(1, 4, 25, 3))
        bodies[:, :, 0] = 0.0  # joint 1 at exactly 0 in every frame: length 0
        (raw / filename).write_bytes(skeleton_text(bodies))
    else:
        assert isinstance(data, bytes)
        (raw / filename).write_bytes(data)
    with pytest.raises(prepare.PrepareError, match="--skip-bad") as info:
        prepare.prepare_ntu("ntu60", [raw], tmp_path / "out", recipe="crossclr")
    assert message in str(info.value) and str(raw / filename) in str(info.value)
    assert not (tmp_path / "out" / "manifest.json").exists()
    summary = prepare.prepare_ntu(
        "ntu60", [raw], tmp_path / "out", recipe="crossclr", skip_bad=True
    )
    assert [s["name"] for s in summary.skipped] == [filename.removesuffix(".skeleton")]
    assert message in summary.skipped[0]["error"]
    assert sum(summary.counts["xsub"].values()) == 2


def test_recipe_options_are_checked(
    synth_ntu_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(prepare.PrepareError, match="--recipe must be one of 2s-agcn, crossclr"):
        prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "o", recipe="CrosSCLR")
    with pytest.raises(prepare.PrepareError, match="--compaction belongs to the 2s-AGCN"):
        prepare.prepare_ntu(
            "ntu60", [synth_ntu_raw], tmp_path / "o", recipe="crossclr", compaction="leading"
        )
    argv = ["prepare", "ntu60", "--raw", str(synth_ntu_raw), "--out", str(tmp_path / "o")]
    assert main([*argv, "--recipe", "crossclr", "--compaction", "all"]) == 2
    assert "--compaction belongs to the 2s-AGCN recipe" in capsys.readouterr().err
    argv = ["prepare", "pku2", "--raw", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*argv, "--recipe", "crossclr"]) == 2
    assert "--recipe crossclr is implemented for NTU RGB+D only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- recipe_of / check_recipe


def test_check_recipe(crossclr_out: Path, tmp_path: Path) -> None:
    folder = crossclr_out / "xsub"
    check_recipe(folder, "crossclr", "data.recipe")
    with pytest.raises(ConfigError) as info:
        check_recipe(folder, "2s-agcn", "data.recipe")
    message = str(info.value)
    for part in (str(folder), "crossclr recipe", "data.recipe is 2s-agcn", "--recipe 2s-agcn"):
        assert part in message
    assert "data.recipe=crossclr" in message
    with pytest.raises(ConfigError, match=r"data\.recipe: 'CrosSCLR' is not a recipe"):
        check_recipe(folder, "CrosSCLR", "data.recipe")
    # a folder written by hand: no manifest, unknown recipe, accepted
    writer = SplitWriter(tmp_path / "hand" / "xsub", "train", 1, (3, 4, 25, 2), "ntu60", "xsub", 60)
    writer.append(np.zeros((3, 4, 25, 2), np.float32), "S001C001P001R001A001", 0, 4)
    writer.close()
    assert recipe_of(tmp_path / "hand" / "xsub") is None
    check_recipe(tmp_path / "hand" / "xsub", "crossclr", "data.recipe")
    check_recipe(tmp_path / "hand" / "xsub", "2s-agcn", "data.recipe")
    (tmp_path / "hand" / "manifest.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"manifest\.json: not valid JSON"):
        recipe_of(tmp_path / "hand" / "xsub")


def _cmd_layout(folder: Path) -> Path:
    """A tiny CMD/ISC-layout benchmark folder (2 samples per part), written by hand."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        np.save(folder / f"{part}_data_joint.npy", rng.normal(size=(2, 3, 8, 25, 2)))
        names = ["S001C001P001R001A001.skeleton", "S001C001P002R001A002.skeleton"]
        (folder / f"{part}_label.pkl").write_bytes(pickle.dumps((names, [0, 1])))
        np.save(folder / f"{part}_num_frame.npy", np.array([8, 6]))
    return folder


def test_imported_cmd_arrays_are_2s_agcn(crossclr_out: Path, tmp_path: Path) -> None:
    src = _cmd_layout(tmp_path / "cmd" / "xview")
    prepare.import_cmd(src, tmp_path / "imported", "ntu60")
    assert recipe_of(tmp_path / "imported" / "xview") == "2s-agcn"
    with pytest.raises(ConfigError, match="prepared with the 2s-agcn recipe"):
        check_recipe(tmp_path / "imported" / "xview", "crossclr", "data.recipe")
    # importing into a crossclr folder: its crossclr benchmarks are no longer vouched for,
    # so they are refused rather than read as 2s-AGCN arrays
    mixed = tmp_path / "mixed"
    shutil.copytree(crossclr_out, mixed)
    shutil.rmtree(mixed / "xview")
    prepare.import_cmd(src, mixed, "ntu60")
    assert recipe_of(mixed / "xview") == "2s-agcn" and len(load_split(mixed / "xview", "train"))
    with pytest.raises(DataFormatError, match="mixes two runs"):
        load_split(mixed / "xsub", "train")
