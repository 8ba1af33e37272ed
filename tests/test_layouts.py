"""Skeleton layouts (halp.data.layouts): NTU's unchanged, Kinect v1's taken from the data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from halp.config import EvalConfig, PretrainConfig, load_config
from halp.data import skeleton
from halp.data.augment import (
    LEFT_RIGHT_PERMUTATION,
    build_augmentation,
    joint_corruption,
    spatial_flip,
)
from halp.data.layouts import KINECT20, LAYOUTS, NTU25, get_layout
from halp.data.loaders import PretrainDataset
from halp.data.modalities import bone, modality_function
from halp.data.prepare import prepare_nwucla
from halp.data.storage import SplitWriter, check_layout, load_split
from halp.data.synthetic import synth_nwucla
from halp.encoders import build_encoder
from halp.encoders.stgcn import NTU_CENTRE, NTU_EDGES, STGCNEncoder, spatial_partition
from halp.errors import ConfigError, DataFormatError
from halp.evaluate import evaluate
from halp.methods.checkpoint import load_checkpoint
from halp.train import pretrain

SMOKE = "builtin:smoke"
NWUCLA = ["data.layout=kinect20", "data.recipe=nwucla"]


@pytest.fixture(scope="module")
def nwucla_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    synth_nwucla(raw, classes=6, per_class=8, seed=0)
    out = tmp_path_factory.mktemp("nwucla")
    prepare_nwucla(raw / "all_sqe", out, num_frames=90)
    return out


def test_ntu_layout_is_the_historical_constants() -> None:
    assert NTU25.num_joints == skeleton.NUM_JOINTS == 25 and NTU25.persons == 2
    assert NTU25.edges == NTU_EDGES and NTU25.centre == NTU_CENTRE
    np.testing.assert_array_equal(NTU25.bone_parent, skeleton.BONE_PARENT)
    np.testing.assert_array_equal(NTU25.bone_child, skeleton.BONE_CHILD)
    np.testing.assert_array_equal(NTU25.left_right, LEFT_RIGHT_PERMUTATION)
    np.testing.assert_array_equal(
        spatial_partition(NTU25.num_joints, NTU25.edges, NTU25.centre), spatial_partition()
    )
    assert build_augmentation("spatial_flip") is spatial_flip  # NTU's transforms, unchanged
    assert build_augmentation("joint_corruption") is joint_corruption
    assert NTU25.features_per_frame == 150


def test_kinect20_layout() -> None:
    assert set(LAYOUTS) == {"ntu25", "kinect20"} and get_layout("kinect20") is KINECT20
    assert KINECT20.num_joints == 20 and KINECT20.persons == 1
    assert KINECT20.features_per_frame == 60
    assert len(KINECT20.edges) == 19  # a tree over 20 joints
    # mirroring swaps the arms (4-7 <-> 8-11) and legs (12-15 <-> 16-19), keeps the spine
    perm = KINECT20.left_right
    assert perm.tolist() == [
        0,
        1,
        2,
        3,
        *range(8, 12),
        *range(4, 8),
        *range(16, 20),
        *range(12, 16),
    ]
    assert (perm[perm] == np.arange(20)).all()
    assert KINECT20.joint_names[KINECT20.centre] == "shoulder_centre"
    with pytest.raises(ConfigError, match=r"data\.layout.*'kinect'.*ntu25, kinect20"):
        get_layout("kinect")


def test_kinect20_graph() -> None:
    graph = spatial_partition(20, KINECT20.edges, KINECT20.centre)
    assert graph.shape == (3, 20, 20)
    np.testing.assert_allclose(graph.sum(axis=(0, 1)), 1.0)  # every column sums to 1
    # subset 2 (towards the centre): the shoulder centre into its 4 neighbours (spine, head,
    # both shoulders), and those into their farther neighbours (hip centre, both elbows)
    src, dst = np.nonzero(graph[2])
    assert sorted(zip(src.tolist(), dst.tolist(), strict=True)) == [
        (1, 0), (2, 1), (2, 3), (2, 4), (2, 8), (4, 5), (8, 9),
    ]  # fmt: skip
    enc = STGCNEncoder(width=4, feature_dim=8, proj_hidden=8, out_dim=4, layout=KINECT20)
    assert enc.features(torch.randn(2, 3, 16, 20, 1)).shape == (2, 8)
    with pytest.raises(ValueError, match=r"V=20"):
        enc.features(torch.randn(2, 3, 16, 25, 1))


def test_bone_and_flip_follow_the_layout() -> None:
    x = np.random.default_rng(0).normal(size=(3, 4, 20, 1)).astype(np.float32)
    bones = modality_function("bone", KINECT20)(x)
    np.testing.assert_array_equal(bones, bone(x, KINECT20))
    np.testing.assert_array_equal(bones[:, :, 2], 0.0)  # the root: shoulder centre
    np.testing.assert_array_equal(bones[:, :, 5], x[:, :, 5] - x[:, :, 4])  # elbow - shoulder
    np.testing.assert_array_equal(bones[:, :, 12], x[:, :, 12] - x[:, :, 0])  # hip - centre
    flipped = build_augmentation("spatial_flip", KINECT20)(x, np.random.default_rng(0))
    extreme = build_augmentation("aimclr_extreme", KINECT20)
    assert extreme(x, np.random.default_rng(0)).shape == x.shape
    rng = np.random.default_rng(0)
    if rng.random() < 0.5:  # the flip's coin for this seed
        np.testing.assert_array_equal(flipped[:, :, 4:8], x[:, :, 8:12])
    else:
        np.testing.assert_array_equal(flipped, x)
    corrupt = build_augmentation("joint_corruption", KINECT20)
    for seed in range(4):  # 12 of the 20 joints change (zeroed or mapped), as 15 of NTU's 25
        changed = (corrupt(x, np.random.default_rng(seed)) != x).any(axis=(0, 1, 3))
        assert changed.sum() == 12
    forced = spatial_flip(x, rng, p=1.0, permutation=KINECT20.left_right)
    np.testing.assert_array_equal(forced[:, :, 12:16], x[:, :, 16:20])
    np.testing.assert_array_equal(forced[:, :, :4], x[:, :, :4])


def test_dataset_takes_the_layout_from_the_data(nwucla_data: Path) -> None:
    split = load_split(nwucla_data / "xview3", "train")
    assert split.layout is KINECT20 and split.data.shape[2:] == (90, 20, 1)
    ds = PretrainDataset(
        split,
        ["joint", "motion", "bone"],
        augmentation="isc",
        out_frames=16,
        views={"extreme": "aimclr_extreme"},
    )
    query, _key, _index, extra = ds[0]
    assert {m: tuple(t.shape) for m, t in query.items()} == {
        m: (3, 16, 20, 1) for m in ("joint", "motion", "bone")
    }
    assert (query["bone"][:, :, KINECT20.centre] == 0).all()
    assert tuple(extra["extreme"]["joint"].shape) == (3, 16, 20, 1)


def test_encoders_are_built_for_the_configured_layout() -> None:
    config = load_config(PretrainConfig, SMOKE, NWUCLA)
    gru = build_encoder("bigru", config)
    assert gru.features(torch.randn(2, 3, 8, 20, 1)).shape[0] == 2
    assert gru.input_norm.num_features == 60
    assert build_encoder("bigru", load_config(PretrainConfig, SMOKE)).input_norm.num_features == 150


def test_layout_mismatch_is_a_config_error(nwucla_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds kinect20 skeletons.*set data\.layout=kinect20"):
        check_layout(nwucla_data / "xview3", "ntu25", "data.layout")
    config = load_config(
        PretrainConfig, SMOKE, [f"data.root={nwucla_data / 'xview3'}", "data.recipe=nwucla"]
    )
    with pytest.raises(ConfigError, match=r"data\.layout"):
        pretrain(config, tmp_path / "run")


def test_array_of_another_layout_is_refused(tmp_path: Path) -> None:
    writer = SplitWriter(tmp_path / "b", "train", 1, (3, 4, 25, 2), "x", "b", 2, layout="kinect20")
    writer.append(np.zeros((3, 4, 25, 2), np.float32), "s", 0, 4)
    writer.close()
    assert json.loads((tmp_path / "b" / "train.json").read_text())["layout"] == "kinect20"
    with pytest.raises(DataFormatError, match=r"layout kinect20, float32 \(N, 3, T, 20, 1\)"):
        load_split(tmp_path / "b", "train")


@pytest.mark.parametrize(
    "method,extra",
    [
        ("cmd", []),  # joint, motion and bone streams
        (
            "aimclr",  # the extreme view's mirroring, and EADM on the ST-GCN map
            ["encoder.arch=stgcn", "encoder.width=4", "encoder.feature_dim=8",
             "encoder.proj_hidden=8", "data.augmentation=aimclr_normal"],
        ),
        (
            "hiclr_halp",  # the joint mask and Drop-Edges on the Kinect v1 graph
            ["encoder.arch=stgcn", "encoder.width=4", "encoder.feature_dim=8",
             "encoder.proj_hidden=8", "data.augmentation=hiclr_basic",
             'hiclr.branches=[{name: dae, augmentation: hiclr_normal, strong: dae},'
             ' {name: mask, augmentation: hiclr_normal, strong: mask}]'],
        ),
    ],
)  # fmt: skip
def test_methods_train_and_evaluate_on_kinect20(
    nwucla_data: Path, tmp_path: Path, method: str, extra: list[str]
) -> None:
    config = load_config(
        PretrainConfig,
        SMOKE,
        [f"data.root={nwucla_data / 'xview3'}", *NWUCLA, f"method={method}", "optim.epochs=2",
         "log.knn_every=2", *extra],
    )  # fmt: skip
    row = pretrain(config, tmp_path / "run")
    assert np.isfinite(row["loss"]) and 0.0 <= row["knn_top1"] <= 100.0
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert saved["config"]["data"]["layout"] == "kinect20"
    eval_config = load_config(
        EvalConfig,
        None,
        [f"checkpoint={tmp_path / 'run' / 'checkpoint.pt'}",
         f"data_root={nwucla_data / 'xview3'}", "protocol=knn", "workers=0", "device=cpu"],
    )  # fmt: skip
    result = evaluate(eval_config, tmp_path / "knn.json")
    assert 0.0 <= result["metrics"]["top1"] <= 100.0
