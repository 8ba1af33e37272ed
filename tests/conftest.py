"""Shared fixtures: the real data samples (optional) and small synthetic datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("HALP_REALDATA", ROOT.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The folder of real NTU / PKU-MMD samples; tests using it skip when it is absent."""
    if not (REALDATA / "ntu_raw_samples").is_dir():
        pytest.skip(
            f"real data samples not found at {REALDATA}; set HALP_REALDATA to the folder "
            "holding ntu_raw_samples/, ntu_split_labels/ and pkummd_v2_sample/"
        )
    return REALDATA


@pytest.fixture(scope="session")
def tu_realdata() -> Path:
    """The folder of real TU datasets (MUTAG, NCI1, PROTEINS, DD); tests skip when absent."""
    folder = REALDATA / "tu"
    if not (folder / "MUTAG").is_dir():
        pytest.skip(
            f"real TU datasets not found at {folder}; set HALP_REALDATA to the folder "
            "holding tu/MUTAG, tu/NCI1, tu/PROTEINS and tu/DD"
        )
    return folder


@pytest.fixture(scope="session")
def synth_ntu_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic NTU .skeleton files (6 classes x 8), shared by the session; read-only."""
    from halp.data.synthetic import synth_ntu

    out = tmp_path_factory.mktemp("synth_ntu")
    synth_ntu(out, classes=6, per_class=8, seed=0)
    return out


@pytest.fixture(scope="session")
def synth_pku_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic PKU-MMD II raw folder (6 classes x 8 instances); read-only."""
    from halp.data.synthetic import synth_pku

    out = tmp_path_factory.mktemp("synth_pku")
    synth_pku(out, classes=6, per_class=8, seed=0)
    return out
