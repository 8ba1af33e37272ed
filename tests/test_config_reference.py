"""The generated configuration reference: complete, right about ranges and readers, not stale."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from halp.config import EvalConfig, GraphCLConfig, PretrainConfig
from halp.report import config_reference as ref

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "config.md"


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += _leaf_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, ref.Key]]:
    return {
        "pretrain": {k.name: k for k in ref.dataclass_keys(PretrainConfig, ref.pretrain_readers)},
        "eval": {
            k.name: k
            for k in ref.dataclass_keys(EvalConfig, lambda n: ref.EVAL_READERS.get(n, "all"))
        },
        "graph": {k.name: k for k in ref.dataclass_keys(GraphCLConfig, ref.graph_readers)},
    }


def test_every_key_is_listed(rows: dict[str, dict[str, ref.Key]]) -> None:
    for name, cls in (("pretrain", PretrainConfig), ("eval", EvalConfig), ("graph", GraphCLConfig)):
        assert sorted(rows[name]) == sorted(_leaf_keys(cls))


def test_types_defaults_ranges_and_meanings_come_from_the_source(
    rows: dict[str, dict[str, ref.Key]],
) -> None:
    pre = rows["pretrain"]
    assert pre["halp.lam"].default == 0.8 and pre["halp.lam"].allowed == "in [0, 1]"
    assert pre["halp.lam"].meaning == "lambda: t_c ~ U(0, lambda t*)"
    # a rule of the section and one of the enclosing configuration, both found
    assert "at least halp.num_prototypes" in pre["halp.top_k"].allowed
    assert "at most moco.queue_size" in pre["halp.top_k"].allowed
    # rules checked in a loop over keys
    assert pre["encoder.width"].allowed == "in 1..4096"  # _count(..., 1, MAX_WIDTH)
    assert "in 0..4294967295" in pre["seed"].allowed  # _seed
    assert pre["encoder.arch"].allowed == "one of `bigru`, `stgcn`"
    assert pre["optim.lr_steps"].type == "list[int]" and pre["optim.lr_steps"].default == [351]
    # the comment line above a field is part of its meaning
    assert "authors' step-by-step GRU" in pre["encoder.reference_forward"].meaning
    assert rows["eval"]["frames"].type == "int | null"
    assert "in (0, 1]" in rows["eval"]["keep"].allowed


def test_readers(rows: dict[str, dict[str, ref.Key]]) -> None:
    pre = rows["pretrain"]
    assert pre["cmd.topk"].readers == "cmd, halp_cmd"
    assert pre["halp.lam"].readers == "halp, halp_cmd, aimclr_halp, hiclr_halp"
    assert pre["mining.topk"].readers == "aimclr, aimclr_halp, hiclr, hiclr_halp"
    assert pre["aimclr.extreme_augmentation"].readers == "aimclr, aimclr_halp"
    assert pre["optim.lr"].readers == "all"
    assert rows["eval"]["k"].readers == "knn"
    assert rows["graph"]["halp.mu"].readers == "graphcl_halp"


def test_workflow_keys_from_schema_and_config() -> None:
    keys = {
        k.name: k
        for k in ref.workflow_keys(
            ROOT / "workflow" / "schemas" / "config.schema.yaml", ROOT / "config" / "config.yaml"
        )
    }
    assert keys["pretrain.gpus"].default == 1 and "torchrun" in keys["pretrain.gpus"].meaning
    assert "docker://" in keys["container"].meaning
    assert keys["grid.protocols"].allowed.startswith("each one of `linear`")


def test_committed_page_is_current() -> None:
    assert PAGE.is_file(), (
        "run: python -m halp.report.config_reference --out docs/reference/config.md"
    )
    assert PAGE.read_text(encoding="utf-8") == ref.render(ROOT), (
        "docs/reference/config.md is stale: run "
        "python -m halp.report.config_reference --out docs/reference/config.md"
    )
