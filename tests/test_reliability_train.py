"""Reliability of configuration, pretraining and evaluation: user errors are named early,
results never come from wrong or stale inputs, and a bad state is never kept as good."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from halp.cli import main
from halp.config import EvalConfig, PretrainConfig, load_config
from halp.data import prepare
from halp.data.storage import SplitWriter
from halp.errors import CheckpointError, ConfigError, EvaluationError, TrainingDiverged
from halp.evaluate import evaluate
from halp.methods.checkpoint import CHECKPOINT
from halp.methods.model import PretrainModel
from halp.train import pretrain


@pytest.fixture(scope="module")
def data(synth_ntu_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ntu60")
    prepare.prepare_ntu("ntu60", [synth_ntu_raw], out)
    return out


def smoke(root: Path, *overrides: str) -> PretrainConfig:
    return load_config(
        PretrainConfig,
        "builtin:smoke",
        [f"data.root={root}", "optim.epochs=1", "log.knn_every=0", *overrides],
    )


# ------------------------------------------------------------------------ configuration


def test_set_values_are_read_as_users_type_them() -> None:
    config = load_config(PretrainConfig, None, ["optim.lr=1e-3", "halp.lam=.5"])
    assert (config.optim.lr, config.halp.lam) == (0.001, 0.5)
    with pytest.raises(ConfigError, match=r"override 'halp.lam=\[0.5': the value is not valid"):
        load_config(PretrainConfig, None, ["halp.lam=[0.5"])
    with pytest.raises(ConfigError, match=r"config key 'optim\.lr'"):
        load_config(PretrainConfig, None, ["optim.lr=nan"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_a_config_error(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'device': 'cuda', but this machine has no CUDA"):
        pretrain(smoke(data / "xsub", "device=cuda"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_term_that_never_switches_on_is_warned_about(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="halp.train"):
        pretrain(smoke(data / "xsub", "halp.mu_start_epoch=5"), tmp_path / "run")
    assert "the halp term of HaLP starts at epoch 5 but the run has 1 epochs" in caplog.text


# ------------------------------------------------------------------------ resume


def test_resume_on_another_benchmark_is_refused_naming_both(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    pretrain(smoke(data / "xsub"), run)
    with pytest.raises(CheckpointError, match=r"trained on ntu60 xsub, but .* ntu60 xview"):
        pretrain(smoke(data / "xview", "optim.epochs=2"), run, resume=True)


def test_a_halp_key_fixed_before_halp_starts_is_accepted_on_resume(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    pretrain(smoke(data / "xsub", "halp.mu_start_epoch=2"), run)
    fixed = smoke(data / "xsub", "halp.mu_start_epoch=2", "optim.epochs=3", "halp.num_prototypes=3")
    with caplog.at_level(logging.WARNING, logger="halp.train"):
        row = pretrain(fixed, run, resume=True)
    assert "changed halp.num_prototypes: accepted" in caplog.text
    assert "loss_halp_joint" in row  # epoch 2 ran HaLP with 3 prototypes
    after_start = smoke(data / "xsub", "halp.mu_start_epoch=2", "optim.epochs=4")
    with pytest.raises(CheckpointError, match=r"differs from the checkpoint's in halp\.num"):
        pretrain(after_start, run, resume=True)  # HaLP ran with 3: 20 is refused now


def test_non_finite_weights_are_never_checkpointed(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    pretrain(smoke(data / "xsub"), run)
    good = (run / CHECKPOINT).read_bytes()
    real_prepare = PretrainModel.prepare_step

    def poisoned(self: PretrainModel, *args: object) -> None:
        real_prepare(self, *args)  # type: ignore[arg-type]
        # a statistic that the loss never sees: only the end-of-epoch check can catch it
        self.branch("joint").encoder_q.input_norm.running_var.fill_(float("inf"))

    monkeypatch.setattr(PretrainModel, "prepare_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"running_var holds NaN or infinite values after"):
        pretrain(smoke(data / "xsub", "optim.epochs=2"), run, resume=True)
    assert (run / CHECKPOINT).read_bytes() == good


# ------------------------------------------------------------------------ evaluation


@pytest.fixture(scope="module")
def checkpoint(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    pretrain(smoke(data / "xsub"), run)
    return run / CHECKPOINT


def eval_config(checkpoint: Path, root: Path, *overrides: str) -> EvalConfig:
    base = [f"checkpoint={checkpoint}", f"data_root={root}", "protocol=knn", "workers=0"]
    return load_config(EvalConfig, None, [*base, "device=cpu", *overrides])


def test_evaluation_uses_the_checkpoints_clip_length(
    checkpoint: Path, data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    result = evaluate(eval_config(checkpoint, data / "xsub"), tmp_path / "a.json")
    assert result["config"]["frames"] == 16  # builtin:smoke pretrains on 16 frames
    with caplog.at_level(logging.WARNING, logger="halp.evaluate"):
        other = evaluate(eval_config(checkpoint, data / "xsub", "frames=32"), tmp_path / "b.json")
    assert other["config"]["frames"] == 32
    assert "32-frame clips, but the encoder was pretrained on 16-frame clips" in caplog.text


def test_a_result_records_the_terms_its_checkpoint_never_trained(
    checkpoint: Path, data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The fixture is HaLP trained for 1 epoch with mu from epoch 1: its kNN result is the
    baseline's, and says so; with mu from epoch 0 nothing is recorded."""
    with caplog.at_level(logging.WARNING, logger="halp.evaluate"):
        result = evaluate(eval_config(checkpoint, data / "xsub"), tmp_path / "a.json")
    assert result["method"] == "halp" and result["inactive_terms"] == ["halp"]
    assert "the halp term(s) of halp never switched on in its 1 epoch(s)" in caplog.text
    run = tmp_path / "on"
    pretrain(smoke(data / "xsub", "halp.mu_start_epoch=0"), run)
    on = evaluate(eval_config(run / CHECKPOINT, data / "xsub"), tmp_path / "b.json")
    assert on["inactive_terms"] == []


def test_an_empty_split_is_refused(checkpoint: Path, tmp_path: Path, data: Path) -> None:
    root = tmp_path / "empty" / "xsub"
    for part, count in (("train", 3), ("test", 0)):
        writer = SplitWriter(root, part, count, (3, 300, 25, 2), "ntu60", "xsub", 60)
        for i in range(count):
            writer.append(torch.zeros(3, 300, 25, 2).numpy() + 0.1, f"s{i}", 0, 50)
        writer.close()
    with pytest.raises(EvaluationError, match=r"test: no samples, so there is nothing to test"):
        evaluate(eval_config(checkpoint, root), tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_evaluate_prints_its_config_and_lists_its_keys(
    checkpoint: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "knn", "--checkpoint", str(checkpoint), "--data", str(data / "xsub")]
    assert main([*argv, "--print-config", "--set", "k=3"]) == 0
    printed = capsys.readouterr().out
    assert "k: 3" in printed and "protocol: knn" in printed
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "label_fraction = 1.0" in capsys.readouterr().out
    assert main(argv) == 2  # no --out
    assert "needs --out" in capsys.readouterr().err


def test_index_files_with_missing_keys_are_named(data: Path, tmp_path: Path) -> None:
    from halp.data.storage import read_index
    from halp.errors import DataFormatError

    index = json.loads((data / "xsub" / "train.json").read_text())
    del index["labels"]
    (tmp_path / "train.json").write_text(json.dumps(index))
    with pytest.raises(DataFormatError, match=r"train.json: index lacks labels"):
        read_index(tmp_path / "train.json")


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes (as ENOSPC, what the OS raises)."""

    def __init__(self, path: Path, room: int) -> None:
        super().__init__(path, "wb")
        self.room = room

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size
        return super().write(data)


@pytest.mark.parametrize("room", [700, 20_000])
def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    room: int,
) -> None:
    from halp.methods import checkpoint

    run = tmp_path / "run"
    pretrain(smoke(data / "xsub"), run)
    good = (run / CHECKPOINT).read_bytes()
    # the real torch.save writes into the full disk: it raises "RuntimeError: ... unexpected
    # pos ..." by itself, which must reach the user as the operating system's error
    monkeypatch.setattr(checkpoint, "_open", lambda path: _FullDisk(path, room))
    with pytest.raises(OSError, match=r"No space left on device: '.*checkpoint.pt'"):
        pretrain(smoke(data / "xsub", "optim.epochs=2"), run, resume=True)
    assert (run / CHECKPOINT).read_bytes() == good
    assert not list(run.glob("*.partial")) and not list(run.glob(".*.partial"))
    args = ["--set", f"data.root={data / 'xsub'}", "--set", "optim.epochs=2"]
    args += ["--set", "log.knn_every=0", "--run", str(run), "--resume"]
    assert main(["-q", "pretrain", "--config", "builtin:smoke", *args]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("halp pretrain: error: [Errno 28] No space left on device: ")
    assert (run / CHECKPOINT).read_bytes() == good


def test_prepare_reports_each_warning_once(synth_ntu_raw: Path, tmp_path: Path) -> None:
    summary = prepare.prepare_ntu("ntu60", [synth_ntu_raw], tmp_path / "out")
    assert "warning_incomplete" in summary.extra  # logged once, kept in the manifest
    assert not any("WARNING" in line for line in summary.lines())
