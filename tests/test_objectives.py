"""Composable objectives: a new loss term is a registered objective plus a preset.

"Adding a method" (docs/development.md), followed literally for a toy objective that pulls each
query towards the batch mean of its keys: the objective is defined in this file, a
preset lists it after InfoNCE with a weight and a start epoch, and training runs it
without any change to the model's forward.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import Tensor

from halp.config import PretrainConfig, load_config
from halp.data import prepare
from halp.errors import ConfigError
from halp.methods import PRESETS, Preset, Term, View, check_config, preset_of
from halp.methods.model import PretrainModel
from halp.methods.views import VIEW_TRANSFORMS, ViewTransform
from halp.objectives import OBJECTIVES, Embeddings, Objective, StepContext, register_objective
from halp.train import pretrain


class ToyPull(Objective):
    """-mean(q . mean(k)): pull each query towards the batch's mean key."""

    def loss(self, emb: Embeddings, ctx: StepContext) -> Tensor:
        q, k = emb.queries["joint"], emb.keys["joint"]
        value = -(q @ k.mean(dim=0)).mean()
        ctx.terms["loss_toy"] = float(value.detach())
        return value


@pytest.fixture
def toy_method(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the toy objective and a preset `toy` (removed again after the test)."""
    monkeypatch.setitem(OBJECTIVES, "toy", lambda config, modalities, dim: ToyPull())
    monkeypatch.setitem(
        PRESETS,
        "toy",
        Preset(
            ("joint",),
            (Term("infonce"), Term("toy", weight=0.5, start_epoch=1, log_as="toy_weight")),
        ),
    )
    return "toy"


@pytest.fixture(scope="module")
def ntu_data(synth_ntu_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ntu60")
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], out)
    return out / "xsub"


def test_a_toy_objective_trains_through_a_preset(
    toy_method: str, ntu_data: Path, tmp_path: Path
) -> None:
    config = load_config(
        PretrainConfig,
        "builtin:smoke",
        [f"method={toy_method}", f"data.root={ntu_data}", "optim.epochs=2", "log.knn_every=0"],
    )
    pretrain(config, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "loss_toy" not in rows[0] and rows[0]["toy_weight"] == 0.0  # off before epoch 1
    assert "loss_toy" in rows[1] and rows[1]["toy_weight"] == 0.5
    assert -1.0 <= rows[1]["loss_toy"] <= 1.0


class ToyViewPull(Objective):
    """Pull the query towards a toy extra view; warn when the run is short."""

    def loss(self, emb: Embeddings, ctx: StepContext) -> Tensor:
        q, v = emb.queries["joint"], emb.view("toyflip")["joint"]
        value = -(q * v).sum(dim=1).mean()
        ctx.terms["loss_toyview"] = value.detach()
        return value

    def check(self, epochs: int) -> list[str]:
        return [f"toyview: {epochs} epochs is short for a toy"] if epochs < 5 else []


class Negate(ViewTransform):
    """A toy model-side transform: the clips with their sign flipped."""

    def before(self, x: Tensor, view: View, generator: object, state: object) -> Tensor:
        return -x * float(view.option("scale"))


def test_a_new_method_with_a_view_and_a_check_is_an_objective_and_a_preset(
    monkeypatch: pytest.MonkeyPatch,
    ntu_data: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The README's "Adding a method" with everything a method can add: an objective
    with a check hook, a view with its own load-time augmentation and a model-side
    transform whose option is a config key. Nothing in halp.train or halp.methods.model
    changes; the view reaches the objective, the warning reaches the log, and a term
    that could never switch on is named."""
    monkeypatch.setitem(OBJECTIVES, "toyview", lambda config, modalities, dim: ToyViewPull())
    monkeypatch.setitem(VIEW_TRANSFORMS, "negate", Negate())
    view = View("toyflip", "isc", "negate", (("scale", "moco.temperature"),), "method")
    preset = Preset(("joint",), (Term("infonce"), Term("toyview", weight=0.25)), views=(view,))
    monkeypatch.setitem(PRESETS, "toyview", preset)
    sets = ["method=toyview", f"data.root={ntu_data}", "optim.epochs=2", "log.knn_every=0"]
    config = load_config(PretrainConfig, "builtin:smoke", sets)
    model = PretrainModel(config)
    assert [v.option("scale") for v in model.views] == [config.moco.temperature]
    with caplog.at_level(logging.WARNING):
        pretrain(config, tmp_path / "run")
    assert "toyview: 2 epochs is short for a toy" in caplog.text
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(-1.0 <= r["loss_toyview"] <= 1.0 for r in rows)
    # the view is the transform of its own clips: encoding them by hand gives the same
    clips = {"toyflip": {"joint": torch.randn(8, 3, 16, 25, 2)}}
    got = model._encode_views(clips, torch.Generator())["toyflip"]["joint"]
    want = torch.nn.functional.normalize(
        model.query_encoder()(-clips["toyflip"]["joint"] * config.moco.temperature), dim=1
    )
    torch.testing.assert_close(got, want)
    late = Preset(("joint",), (Term("infonce"), Term("toyview", 1.0, start_epoch="optim.epochs")))
    assert "never switches on" in check_config(config, late, 2)[0]
    with pytest.raises(ConfigError, match=r"'optim\.epochs'.*never switches on"):
        check_config(config, late, 2, refuse=True)


def test_the_loss_is_the_weighted_sum_of_the_terms(toy_method: str) -> None:
    """forward sums weight x term in the preset's order; nothing else enters the loss."""
    config = load_config(PretrainConfig, "builtin:smoke", [f"method={toy_method}"])
    torch.manual_seed(0)
    model = PretrainModel(config)
    g = torch.Generator().manual_seed(1)
    views = {"joint": torch.randn(8, 3, 16, 25, 2, generator=g)}
    keys = {"joint": torch.randn(8, 3, 16, 25, 2, generator=g)}
    out = model(views, keys, epoch=1, generator=g)
    expected = float(out.terms["loss_cl_joint"]) + 0.5 * float(out.terms["loss_toy"])
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert preset_of(config).uses("toy") and not preset_of(config).halp


def test_an_unregistered_objective_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from halp.errors import ConfigError

    monkeypatch.setitem(PRESETS, "broken", Preset(("joint",), (Term("nope"),)))
    config = load_config(PretrainConfig, "builtin:smoke", ["method=broken"])
    with pytest.raises(ConfigError, match="'nope'"):
        PretrainModel(config)


def test_register_objective_refuses_a_duplicate_name() -> None:
    from halp.objectives import build_objective

    build_objective("infonce", PretrainConfig(), ("joint",), 16)  # loads the built-ins
    with pytest.raises(KeyError, match="infonce"):
        register_objective("infonce")(lambda config, modalities, dim: ToyPull())


# ---------------------------------------------------------------- HaLP as an objective


def _halp_model(*overrides: str) -> PretrainModel:
    config = load_config(
        PretrainConfig,
        "builtin:smoke",
        [
            "method=halp",
            "halp.mu_start_epoch=0",
            "halp.top_k=8",
            "halp.num_prototypes=4",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    return PretrainModel(config)


def _views(seed: int, batch: int = 8) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return (
        {"joint": torch.randn(batch, 3, 16, 25, 2, generator=g)},
        {"joint": torch.randn(batch, 3, 16, 25, 2, generator=g)},
    )


def test_prototypes_come_from_the_most_recent_keys() -> None:
    """Old keys fill most of the queue's first slots; the prototypes must follow the new."""
    from halp.objectives.halp import Prototypes, refresh_prototypes
    from halp.objectives.moco import KeyQueue

    g = torch.Generator().manual_seed(0)
    old_dir, new_dir = torch.eye(8)[0], torch.eye(8)[1]
    queue = KeyQueue(64, 8, g)
    queue.enqueue(torch.nn.functional.normalize(old_dir + 0.05 * torch.randn(48, 8, generator=g)))
    queue.enqueue(torch.nn.functional.normalize(new_dir + 0.05 * torch.randn(32, 8, generator=g)))
    # slots 0..15 and 48..63 now hold new keys, 16..47 old ones: keys[:32] would be mixed
    protos = Prototypes(2, 8)
    options = load_config(PretrainConfig, None, ["halp.top_k=32", "halp.num_prototypes=2"]).halp
    refresh_prototypes([protos], [queue], options, torch.Generator().manual_seed(1))
    assert bool(protos.ready)
    assert (protos.centres @ new_dir).min() > 0.95


def test_prototypes_are_refreshed_every_refresh_every_steps() -> None:
    model = _halp_model("halp.refresh_every=2")
    halp = model.objectives["halp"]
    generator = torch.Generator().manual_seed(0)
    model(*_views(99), epoch=0, generator=generator)  # 8 keys: the queue has seen top_k
    changed = []
    previous = halp.prototypes["joint"].centres.clone()
    for step in range(6):
        model.prepare_step(0, step, generator)
        now = halp.prototypes["joint"].centres.clone()
        changed.append(not torch.equal(now, previous))
        previous = now
        q, k = _views(step)
        model(q, k, epoch=0, generator=generator, step=step)  # new keys enter the queue
    # steps 0, 2, 4 refresh (the queue content changes every step)
    assert changed == [True, False, True, False, True, False]


@pytest.mark.parametrize("anchor", ["key", "query"])
def test_the_anchor_option_reaches_posHal(anchor: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import halp.objectives.halp as halp_module

    seen = {}
    original = halp_module.halp_term

    def spy(query, anchor_, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen["query"], seen["anchor"] = query.detach().clone(), anchor_.clone()
        return original(query, anchor_, *args, **kwargs)

    monkeypatch.setattr(halp_module, "halp_term", spy)
    model = _halp_model(f"halp.anchor={anchor}")
    generator = torch.Generator().manual_seed(0)
    q, k = _views(0)
    model(q, k, epoch=0, generator=generator)  # fills the queue: prototypes become ready
    model.prepare_step(0, 1, generator)
    out = model(q, k, epoch=0, generator=generator, step=1)
    assert "loss_halp_joint" in out.terms
    is_query = torch.equal(seen["anchor"], seen["query"])
    assert is_query == (anchor == "query")


def test_qk_slerp_generator_through_the_model() -> None:
    model = _halp_model("halp.generator=qk_slerp")
    generator = torch.Generator().manual_seed(0)
    q, k = _views(0)
    model(q, k, epoch=0, generator=generator)
    model.prepare_step(0, 1, generator)
    out = model(q, k, epoch=0, generator=generator, step=1)
    assert out.terms["halp_keep_joint"] == 1.0  # no rank filter
    assert "halp_t_star_joint" not in out.terms  # no t*
    assert out.terms["loss_halp_joint"] < 0
    with pytest.raises(ConfigError, match="qk_slerp"):
        _halp_model("halp.generator=qk_slerp", "halp.anchor=query")
