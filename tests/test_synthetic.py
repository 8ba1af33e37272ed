"""The synthetic dataset: real raw formats, split coverage, determinism, learnability."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from halp.data import synthetic
from halp.data.synthetic import synth_ntu, synth_pku

NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})\.skeleton")
XSUB_TRAIN = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
BENCHMARKS = {  # is_train(setup, camera, performer) per NTU benchmark, written out again here
    "xsub": lambda s, c, p: p in XSUB_TRAIN,
    "xview": lambda s, c, p: c != 1,
    "xset": lambda s, c, p: s % 2 == 0,
}


def parse_ntu(raw: bytes) -> list[np.ndarray]:
    """A strict reader of the .skeleton layout: per frame a (bodies, 25, 3) xyz array."""
    text = raw.decode("ascii")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")[:-1]
    pos = 1
    frames = []
    for _ in range(int(lines[0])):
        bodies = []
        for _ in range(int(lines[pos])):
            body = lines[pos + 1].split()
            assert len(body) == 10 and int(body[0]) > 2**56 and body[-1] == "2"
            assert lines[pos + 2] == "25"
            rows = [line.split() for line in lines[pos + 3 : pos + 28]]
            assert all(len(r) == 12 and r[-1] == "2" for r in rows)
            bodies.append(np.array([[float(v) for v in r[:3]] for r in rows]))
            pos += 27
        frames.append(np.array(bodies).reshape(-1, 25, 3))
        pos += 1
    assert pos == len(lines), "trailing lines"
    return frames


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def ntu(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return synth_ntu(tmp_path_factory.mktemp("ntu"), classes=6, per_class=8, seed=0)


@pytest.fixture(scope="module")
def pku(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("pku")
    return root, synth_pku(root, classes=6, per_class=8, seed=0)


def test_ntu_names_cover_every_benchmark(ntu: list[Path]) -> None:
    assert len(ntu) == 48 == len({p.name for p in ntu})
    assert all(p.parent.name == "nturgb+d_skeletons" for p in ntu)
    ids = [tuple(map(int, NAME.fullmatch(p.name).groups())) for p in ntu]
    assert {a for *_, a in ids} == set(range(1, 7))
    assert {c for _, c, *_ in ids} == {1, 2, 3}
    assert {r for *_, r, _ in ids} == {1, 2}
    assert {s for s, *_ in ids} <= {1, 2, 3, 4}
    for name, is_train in BENCHMARKS.items():
        for action in range(1, 7):
            sides = {is_train(s, c, p) for s, c, p, _, a in ids if a == action}
            assert sides == {True, False}, (name, action)


def test_ntu_three_per_class_suffice(tmp_path: Path) -> None:
    paths = synth_ntu(tmp_path, classes=10, per_class=3, seed=5, max_setup=3)
    ids = [tuple(map(int, NAME.fullmatch(p.name).groups())) for p in paths]
    assert len(set(ids)) == 30 and {s for s, *_ in ids} <= {1, 2, 3}
    for is_train in BENCHMARKS.values():
        for action in range(1, 11):
            assert {is_train(s, c, p) for s, c, p, _, a in ids if a == action} == {True, False}


def test_ntu_file_structure(ntu: list[Path]) -> None:
    lengths, body_counts = set(), set()
    for path in ntu:
        frames = parse_ntu(path.read_bytes())
        lengths.add(len(frames))
        body_counts |= {len(f) for f in frames}
        action = int(path.name[-12:-9])
        assert {len(f) for f in frames} == {2 if synthetic.is_two_person(action - 1) else 1}
        xyz = np.concatenate(frames)
        assert np.isfinite(xyz).all() and 1.0 < xyz[..., 2].min() and xyz[..., 2].max() < 5.0
    assert len(lengths) > 10 and min(lengths) >= 40 and max(lengths) <= 150
    assert body_counts == {1, 2}


def test_ntu_float_format_matches_release(ntu: list[Path]) -> None:
    lines = ntu[0].read_bytes().decode().split("\r\n")
    assert re.fullmatch(r"\d+", lines[0]) and lines[1] == "1" and lines[3] == "25"
    assert all(len(v.lstrip("-").replace(".", "").lstrip("0")) <= 7 for v in lines[4].split())


def test_ntu_bodies_keep_their_order(ntu: list[Path]) -> None:
    path = next(p for p in ntu if synthetic.is_two_person(int(p.name[-12:-9]) - 1))
    body_lines = [ln.split()[0] for ln in path.read_text().splitlines() if len(ln.split()) == 10]
    assert body_lines[0::2] == [body_lines[0]] * (len(body_lines) // 2)
    assert body_lines[1::2] == [body_lines[1]] * (len(body_lines) // 2)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        synth_ntu(tmp_path / run / "ntu", classes=3, per_class=4, seed=seed)
        synth_pku(tmp_path / run / "pku", classes=3, per_class=4, seed=seed)
    a, b, c = (tree_hash(tmp_path / run) for run in "abc")
    assert a == b != c


def test_pku_files(pku: tuple[Path, dict[str, list[Path]]]) -> None:
    root, files = pku
    videos = sorted(p.stem for p in files["skeleton"])
    assert videos == sorted(p.stem for p in files["label"])
    assert all(re.fullmatch(r"A\d\dN\d\d-[LMR]", v) for v in videos)
    total = 0
    for video in videos:
        raw = (root / "skeleton" / f"{video}.txt").read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")
        rows = np.array([line.split() for line in raw.decode().splitlines()], dtype=float)
        assert rows.shape[1] == 150
        last_end = 0
        for line in (root / "label" / f"{video}.txt").read_text().splitlines():
            cls, start, end, conf = map(int, line.split(","))
            assert 1 <= cls <= 6 and last_end < start < end <= len(rows) and conf in (1, 2)
            assert np.abs(rows[start:end, :75]).sum(axis=1).min() > 0
            two = np.abs(rows[start:end, 75:]).sum(axis=1) > 0
            assert two.all() if synthetic.is_two_person(cls - 1) else not two.any()
            last_end = end
            total += 1
    assert total == 48


@pytest.mark.parametrize("split", ["cross_subject_v2.txt", "cross_view_v2.txt"])
def test_pku_splits(pku: tuple[Path, dict[str, list[Path]]], split: str) -> None:
    root, files = pku
    lines = (root / split).read_text().split("\n")
    assert lines[0] == "Training videos: " and lines[2] == "Validataion videos: "
    assert lines[4:] == [""]
    train, test = lines[1].split(", "), lines[3].split(", ")
    assert sorted(train + test) == sorted(p.stem for p in files["skeleton"])
    for side in (train, test):
        labels = "".join((root / "label" / f"{v}.txt").read_text() for v in side)
        assert {int(row.split(",")[0]) for row in labels.splitlines()} == set(range(1, 7))


def test_classes_are_learnable(tmp_path: Path) -> None:
    """Nearest class mean on per-joint mean/std (relative to spine_mid) beats 2x chance."""
    paths = synth_ntu(tmp_path, classes=6, per_class=12, seed=3)
    feats, labels = [], []
    for path in paths:
        xyz = np.stack([f[0] for f in parse_ntu(path.read_bytes())])  # first body, (T, 25, 3)
        rel = xyz - xyz[:, 1:2]
        feats.append(np.concatenate([rel.mean(0).ravel(), rel.std(0).ravel()]))
        labels.append(int(path.name[-12:-9]) - 1)
    x, y = np.array(feats), np.array(labels)
    train = np.zeros(len(y), bool)
    for cls in range(6):
        train[np.flatnonzero(y == cls)[::2]] = True
    means = np.stack([x[train & (y == c)].mean(0) for c in range(6)])
    pred = np.linalg.norm(x[~train, None] - means, axis=-1).argmin(1)
    assert (pred == y[~train]).mean() > 2 / 6


def test_parsed_by_the_package_readers(
    ntu: list[Path], pku: tuple[Path, dict[str, list[Path]]]
) -> None:
    ntu_reader = pytest.importorskip("halp.data.ntu")
    pku_reader = pytest.importorskip("halp.data.pku")
    for path in ntu:
        slots = ntu_reader.parse_skeleton(path.read_bytes(), path.name)
        assert slots.shape[1] == len(parse_ntu(path.read_bytes()))
    root, files = pku
    videos = {p.stem for p in files["skeleton"]}
    for path in files["skeleton"]:
        bodies = pku_reader.parse_skeleton(path.read_bytes(), path.name)
        label = root / "label" / path.name
        for instance in pku_reader.parse_labels(label.read_text(), label.name, path.stem):
            assert pku_reader.cut(bodies, instance, path.name).shape[1] == instance.frames
    for split in files["split"]:
        assert pku_reader.read_split(split, videos) < videos


def test_lost_joints_are_zero_and_default_is_unchanged(tmp_path: Path) -> None:
    from halp.data.ntu import parse_skeleton
    from halp.data.synthetic import lost_joints_of, synth_ntu

    files = synth_ntu(tmp_path / "lost", classes=3, per_class=3, seed=2, lost_joints=10)
    seen_loss = False
    for path in files:
        bodies = parse_skeleton(path.read_bytes(), str(path))
        zero = ~bodies[0].any(axis=(0, 2))  # joints that are zero in every frame
        assert not zero[[0, 1, 4, 8]].any()  # the normalisation's joints are never lost
        seen_loss |= bool(zero.any())
    assert seen_loss
    assert len(lost_joints_of(0, 0, 0)) == 0
    with pytest.raises(ValueError):
        synth_ntu(tmp_path / "bad", classes=2, per_class=1, lost_joints=22)
