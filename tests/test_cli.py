"""The `halp` command line: verbs, exit codes and the embedded smoke run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from halp.cli import main
from halp.methods import PRESETS


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_synth_is_deterministic_through_the_cli(tmp_path: Path) -> None:
    for name in ("a", "b"):
        argv = ["synth", "ntu", "--out", str(tmp_path / name), "--classes", "3", "--per-class", "4"]
        assert main(argv) == 0
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert main(["synth", "pku", "--out", str(tmp_path / "p"), "--seed", "3"]) == 0
    assert (tmp_path / "p" / "cross_subject_v2.txt").is_file()


def test_prepare_verbs_and_errors(
    synth_ntu_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["prepare", "ntu60", "--raw", str(synth_ntu_raw), "--out", str(out), "--workers", "2"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "ntu60 xsub: train" in printed and "skipped 0 bad file(s)" in printed
    assert json.loads((out / "manifest.json").read_text())["dataset"] == "ntu60"
    code = main(["prepare", "ntu60", "--raw", str(tmp_path / "absent"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "halp prepare: error:" in err and "absent: no such file" in err
    assert (
        main(["prepare", "ntu60", "--raw", str(synth_ntu_raw), "--out", str(out), "--workers", "0"])
        == 2
    )
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_smoke_runs_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "halp", "smoke", "--out", str(tmp_path / "smoke")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "smoke" / "smoke.json").read_text())
    assert set(report["benchmarks"]) == {
        "ntu60_xsub",
        "ntu60_xview",
        "ntu120_xsub",
        "ntu120_xset",
        "pku2_xsub",
        "pku2_xview",
    }
    for bench in report["benchmarks"].values():
        assert bench["pretrain_batch"]["joint"] == [8, 3, 64, 25, 2]
        assert bench["train"] > 0 and bench["test"] > 0
    assert set(report["pretrain"]) == set(PRESETS)  # every method of the package
    for method, row in report["pretrain"].items():
        assert row["epoch"] == 2 and 0 <= row["knn_top1"] <= 100, method
        assert ("loss_halp_joint" in row) == PRESETS[method].halp
    assert (tmp_path / "smoke" / "runs" / "ntu60_xsub_halp" / "checkpoint.pt").is_file()


def test_pretrain_verb(
    synth_ntu_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["prepare", "ntu60", "--raw", str(synth_ntu_raw), "--out", str(data)]) == 0
    config = "builtin:smoke"
    base = [
        "pretrain",
        "--config",
        str(config),
        "--set",
        f"data.root={data / 'xsub'}",
        "--run",
        str(tmp_path / "run"),
    ]
    assert main([*base, "--set", "optim.epochs=1", "--print-config"]) == 0
    assert "epochs: 1" in capsys.readouterr().out
    assert main([*base, "--set", "optim.epochs=1"]) == 0
    assert "pretraining finished" in capsys.readouterr().out
    assert main([*base, "--set", "optim.epochs=2", "--resume"]) == 0
    assert main([*base, "--set", "halp.lamda=1"]) == 2
    assert "'halp.lamda' is unknown (did you mean 'halp.lam'?)" in capsys.readouterr().err


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A HalpError is one line with exit 2; any other exception is a bug and propagates."""
    import halp.cli as cli
    from halp.errors import ConfigError

    def user_error(args: object) -> None:
        raise ConfigError("config key 'optim.lr': -1 is invalid")

    def bug(args: object) -> None:
        raise ValueError("internal: shapes do not match")

    argv = ["synth", "ntu", "--out", str(tmp_path)]
    monkeypatch.setattr(cli, "run_synth", user_error)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "halp synth: error: config key 'optim.lr': -1 is invalid\n"
    with pytest.raises(ConfigError):  # --debug shows the traceback of user errors too
        main(["--debug", *argv])
    monkeypatch.setattr(cli, "run_synth", bug)
    with pytest.raises(ValueError, match="internal"):  # never dressed up as bad input
        main(argv)


def test_a_bad_config_value_fails_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "pretrain",
            "--config",
            "builtin:smoke",
            "--set",
            "halp.lam=1.5",
            "--set",
            f"data.root={tmp_path / 'does-not-exist'}",
            "--run",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    assert "config key 'halp.lam': 1.5 is invalid; it must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["pretrain", "--config", "builtin:nope", "--run", str(tmp_path / "r")]) == 2
    assert "known: builtin:graphcl, builtin:smoke" in capsys.readouterr().err
