"""Strict configuration: defaults < file < overrides, errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from halp.config import PretrainConfig, from_dict, load_config, to_dict
from halp.errors import ConfigError


def test_defaults_are_the_papers() -> None:
    c = PretrainConfig()
    assert (c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (0.01, 0.9, 1e-4)
    assert (c.optim.batch_size, c.optim.epochs, c.optim.lr_steps) == (64, 451, [351])
    assert (c.moco.queue_size, c.moco.momentum, c.moco.temperature) == (16384, 0.999, 0.07)
    h = c.halp
    assert (h.num_prototypes, h.top_k, h.refresh_every, h.num_positives) == (20, 256, 5, 100)
    assert (h.lam, h.mu, h.mu_start_epoch, h.anchor) == (0.8, 1.0, 200, "key")
    assert (c.cmd.topk, c.cmd.teacher_temperature, c.cmd.student_temperature) == (8192, 0.05, 0.1)
    assert (c.encoder.hidden_size, c.encoder.num_layers, c.seed) == (1024, 3, 42)


def test_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("method: cmd\nhalp:\n  lam: 0.6\noptim:\n  lr_steps: [10, 20]\n")
    c = load_config(PretrainConfig, path, ["halp.lam=0.4", "data.scale=[0.2, 0.9]", "seed=1"])
    assert c.method == "cmd" and c.halp.lam == 0.4 and c.optim.lr_steps == [10, 20]
    assert c.data.scale == (0.2, 0.9) and c.seed == 1
    assert from_dict(PretrainConfig, to_dict(c)) == c  # round trip through plain data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["halp.lamda=0.5"], "'halp.lamda' is unknown (did you mean 'halp.lam'?)"),
        (["optim.lr=fast"], "'optim.lr': expected a number, got 'fast'"),
        (["optim.epochs=1.5"], "'optim.epochs': expected an integer"),
        (["halp.tc_sampling=random"], "'halp.tc_sampling': 'random' is not one of"),
        (["encoder.reference_forward=1"], "expected true or false"),
        (["data.scale=[0.1]"], "'data.scale': expected 2 values"),
        (["optim.lr_steps=[1, x]"], "'optim.lr_steps[1]': expected an integer"),
        (["nonsense"], "must look like key.sub=value"),
        (["halp=3"], "'halp': expected a mapping"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(PretrainConfig, None, overrides)
    assert message in str(info.value)


def test_bad_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  momentun: 0.9\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: config key 'optim\.momentun' is unknown"):
        load_config(PretrainConfig, path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(PretrainConfig, path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(PretrainConfig, tmp_path / "none.yaml")


@pytest.mark.parametrize(
    "override,key",
    [
        ("halp.lam=1.5", "halp.lam"),
        ("halp.lam=.nan", "halp.lam"),
        ("halp.num_prototypes=1", "halp.num_prototypes"),
        ("halp.top_k=5", "halp.top_k"),  # below N = 20
        ("halp.top_k=20000", "halp.top_k"),  # above the queue (16384)
        ("halp.refresh_every=0", "halp.refresh_every"),
        ("halp.num_positives=0", "halp.num_positives"),
        ("optim.epochs=0", "optim.epochs"),
        ("optim.batch_size=0", "optim.batch_size"),
        ("optim.lr=-0.1", "optim.lr"),
        ("moco.temperature=0", "moco.temperature"),
        ("data.scale=[0.5, 0.2]", "data.scale"),
        ("log.knn_every=-1", "log.knn_every"),
        ("cmd.topk=0", "cmd.topk"),
    ],
)
def test_values_out_of_range_are_refused_at_load_time(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}'"):
        load_config(PretrainConfig, None, [override])


def test_eval_values_out_of_range_are_refused() -> None:
    from halp.config import EvalConfig

    for override, key in (("epochs=0", "epochs"), ("label_fraction=0", "label_fraction")):
        with pytest.raises(ConfigError, match=rf"config key '{key}'"):
            load_config(EvalConfig, None, [override])
    assert load_config(EvalConfig, None, ["label_fraction=0.1"]).label_fraction == 0.1
