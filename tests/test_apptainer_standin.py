"""``.ci/apptainer-standin``: the Apptainer command lines Snakemake writes, as ``docker run``.

A fake ``docker`` records what the stand-in asks of it, so these tests need no Docker:
the version line Snakemake parses, the command Snakemake's own ``shellcmd`` builds, and the
refusals. CI runs the stand-in for real over the image (``.ci/container.sh``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / ".ci" / "apptainer-standin"

FAKE_DOCKER = """#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
if args[:2] == ["image", "inspect"]:
    print('sha256:feed ["PATH=/opt/venv/bin:/usr/bin:/bin","VIRTUAL_ENV=/opt/venv"]')
elif "--entrypoint" in args and args[args.index("--entrypoint") + 1] == "cat":
    print("root:x:0:0:root:/root:/bin/bash")
    print("halp:x:1000:1000::/home/halp:/bin/sh")
    print("root:x:0:")
    print("halp:x:1000:")
else:
    record = {"argv": args, "env": dict(os.environ)}
    with open(os.environ["FAKE_DOCKER_OUT"], "a") as fh:
        fh.write(json.dumps(record) + "\\n")
"""


@pytest.fixture()
def fake(tmp_path: Path) -> dict[str, str]:
    """The environment for the stand-in: a fake docker, a stand-in image file, a cache."""
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    (tmp_path / "halp.sif").write_text("# apptainer stand-in: docker image halp-repro:ci-cpu\n")
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path),
        "APPTAINER_STANDIN_DOCKER": str(docker),
        "FAKE_DOCKER_OUT": str(tmp_path / "calls.jsonl"),
    }


def _run(cmd: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", cmd], env=env, cwd=cwd, capture_output=True, text=True)


def _calls(env: dict[str, str]) -> list[dict]:
    lines = Path(env["FAKE_DOCKER_OUT"]).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_snakemake_finds_it_as_apptainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from snakemake.deployment.singularity import Singularity

    out = subprocess.run([sys.executable, STANDIN, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "apptainer version 1.3.6\n"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "apptainer").symlink_to(STANDIN)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    checker = Singularity()
    monkeypatch.setattr(checker, "checked", False)
    monkeypatch.setattr(checker, "binary", None)
    checker.check()  # Snakemake's own check: binary on PATH, version line, minimum version
    assert checker.binary == "apptainer" and checker.version.startswith("apptainer version")


def test_snakemake_shellcmd_runs_as_docker_run(
    fake: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snakemake.deployment import singularity

    work = tmp_path / "work"
    (work / ".snakemake" / "storage").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "apptainer").symlink_to(STANDIN)
    env = {**fake, "PATH": f"{bindir}:{fake['PATH']}", "HALP_X": "1", "LD_LIBRARY_PATH": "/x"}
    env["VIRTUAL_ENV"] = "/host/venv"  # set by the image too: the image's value must win
    monkeypatch.setenv("PATH", env["PATH"])
    checker = singularity.Singularity()
    monkeypatch.setattr(checker, "checked", False)
    monkeypatch.setattr(checker, "binary", None)
    checker.check()  # as Snakemake does before the first job: finds `apptainer`
    here = Path.cwd()
    os.chdir(work)
    try:  # Snakemake's own command line, as its shell() builds it for a rule
        cmd = singularity.shellcmd(
            str(tmp_path / "halp.sif"),
            "halp pretrain --run 'runs/a b' >> log 2>&1",
            bind=[Path(".snakemake/storage"), Path("missing")],
            args="--nv",
            shell_executable="/bin/bash",
        )
    finally:
        os.chdir(here)
    env["SINGULARITYENV_INSIDE"] = "yes"
    done = _run(cmd, env, work)
    assert done.returncode == 0, done.stderr
    assert "Could not find any nv files" in done.stderr  # --nv on a host without GPUs
    (call,) = _calls(env)
    argv, seen = call["argv"], call["env"]
    assert argv[:2] == ["run", "--rm"]
    assert argv[argv.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert argv[argv.index("--workdir") + 1] == str(work)
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    targets = {m.split("target=")[1].split(",")[0] for m in mounts}
    assert {str(work), str(work / ".snakemake" / "storage"), "/tmp", "/etc/passwd"} <= targets
    passwd = next(m for m in mounts if "target=/etc/passwd" in m).split("source=")[1].split(",")[0]
    assert f":x:{os.getuid()}:{os.getgid()}:" in Path(passwd).read_text()  # the caller has an entry
    image_at = argv.index("halp-repro:ci-cpu")
    assert argv[image_at - 2 : image_at] == ["--entrypoint", "bash"]
    assert argv[image_at + 1 :] == ["-c", "halp pretrain --run 'runs/a b' >> log 2>&1"]
    passed = {argv[i + 1] for i, a in enumerate(argv) if a == "--env"}
    assert {"HALP_X", "INSIDE", "HOME"} <= passed
    assert not {"PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "SINGULARITYENV_INSIDE"} & passed
    assert seen["INSIDE"] == "yes" and seen["HOME"] == str(work)  # --home is the cwd


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["shell", "x.sif"], "implements 'exec' and 'run' only"),
        (["exec", "--cleanenv", "IMG", "true"], "option --cleanenv is not supported"),
        (["exec", "--bind", "/no/such/path", "IMG", "true"], "/no/such/path: no such file"),
        (["exec", "missing.sif", "true"], "could not open image missing.sif"),
        (["exec", "real.sif", "true"], "is a real SIF image"),
    ],
)
def test_refusals(fake: dict[str, str], tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "real.sif").write_bytes(b"#!/usr/bin/env run-singularity\n\x00SIF_MAGIC")
    args = [str(tmp_path / "halp.sif") if a == "IMG" else a for a in args]
    done = subprocess.run(
        [sys.executable, STANDIN, *args], env=fake, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 255 and message in done.stderr
    assert done.stderr.startswith("FATAL:") and done.stderr.count("\n") == 1
