"""profiles/slurm without a cluster: it parses, covers the GPU rules, and maps `gpu` to --gpus.

The end-to-end run on a real single-node cluster is .ci/slurm.sh; here the Slurm commands are
stand-ins (sbatch records its arguments and refuses), so nothing is submitted or run.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
SITE = {
    "CHANGE_ME_account": "acct-test",
    "CHANGE_ME_cpu_partition": "cpu-test",
    "CHANGE_ME_gpu_partition": "gpu-test",
}


def gpu_rules() -> set[str]:
    """The workflow's rules that declare a `gpu` resource."""
    found = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule )", path.read_text(), flags=re.M):
            name = re.match(r"rule (\w+):", block)
            resources = re.search(r"^    resources:\n((?:        .*\n)+)", block, re.M)
            if name and resources and re.search(r"^\s+gpu=", resources.group(1), re.M):
                found.add(name.group(1))
    return found


def test_profile_parses_as_snakemake_reads_it() -> None:
    from snakemake.profiles import ProfileConfigFileParser

    with PROFILE.open() as stream:
        parsed = ProfileConfigFileParser().parse(stream)
    assert parsed["executor"] == "slurm"
    assert "slurm_account=CHANGE_ME_account" in parsed["default-resources"]
    assert "pretrain:tasks_per_gpu=0" in parsed["set-resources"]


def test_every_gpu_rule_gets_a_gpu_partition_and_one_task() -> None:
    profile = yaml.safe_load(PROFILE.read_text())
    rules = gpu_rules()
    assert {"pretrain", "evaluate", "transfer", "overhead"} <= rules
    assert set(profile["set-resources"]) == rules
    for rule, resources in profile["set-resources"].items():
        assert resources["slurm_partition"] == "CHANGE_ME_gpu_partition", rule
        assert resources["tasks_per_gpu"] == 0, rule
        # the count comes from the rule (config pretrain.gpus, as torchrun's); never here
        assert not {"gpu", "gpus", "gres", "slurm_extra"} & set(resources), rule
    assert not {"gpu", "gpus", "gres"} & set(profile["default-resources"])


def test_torchrun_launcher_passes_the_pretrain_arguments_through() -> None:
    """The pretrain rule's command under pretrain.gpus > 1, as torchrun's parser reads it.

    torchrun's argparse also scans the script's arguments for its own (abbreviated) options:
    without a `--` after `-m halp`, `--run` is taken for torchrun's `--run-path`.
    """
    run = pytest.importorskip("torch.distributed.run")
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    launcher = re.search(r'f"(torchrun [^"]*)"', common).group(1).format(gpus=2)
    rule = (ROOT / "workflow" / "rules" / "pretrain.smk").read_text()
    shell = re.search(r'"(\{params\.launcher\} pretrain [^"]*)"', rule).group(1)
    command = shell.split(" >>")[0]
    for field, value in (("launcher", launcher), ("run", "runs/r"), ("args", "--set seed=1")):
        command = command.replace(f"{{params.{field}}}", value)
    args = run.get_args_parser().parse_args(shlex.split(command)[1:])
    assert args.module and args.training_script == "halp" and args.nproc_per_node == "2"
    script_args = args.training_script_args
    script_args = script_args[1:] if script_args[:1] == ["--"] else script_args
    assert script_args == ["pretrain", "--run", "runs/r", "--auto-resume", "--set", "seed=1"]


def site_profile(folder: Path) -> Path:
    """profiles/slurm with the site values filled in and without the container lines."""
    text = PROFILE.read_text()
    for placeholder, value in SITE.items():
        assert placeholder in text
        text = text.replace(placeholder, value)
    profile = yaml.safe_load(text)
    profile.pop("software-deployment-method")
    profile.pop("apptainer-args")
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def stand_ins(folder: Path, calls: Path) -> None:
    """sbatch records its arguments and refuses; the rest answer as an empty cluster."""
    scripts = {
        "sbatch": f'printf "%s\\n" "$*" >> {shlex.quote(str(calls))}\n'
        'echo "sbatch: stand-in, not submitted" >&2\nexit 1',
        "sacctmgr": f"echo {SITE['CHANGE_ME_account']}",
        "sacct": "exit 0",
        "squeue": "exit 0",
        "scontrol": "echo MaxArraySize = 1001",
    }
    folder.mkdir()
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


@pytest.mark.slow
def test_sbatch_arguments_of_a_gpu_rule_and_a_cpu_rule(tmp_path: Path) -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm")
    work = tmp_path / "work"
    profile = site_profile(work / "profiles" / "slurm")
    calls = tmp_path / "sbatch-calls.txt"
    stand_ins(tmp_path / "bin", calls)
    # inputs in place, so that exactly one pretrain and one prepare job are submitted
    (work / "raw" / "synthetic" / "ntu").mkdir(parents=True)
    (work / "raw" / "synthetic" / "pku2").mkdir(parents=True)
    (work / "data" / "ntu60").mkdir(parents=True)
    (work / "data" / "ntu60" / "manifest.json").write_text("{}")
    (work / "gpus.yaml").write_text(
        yaml.safe_dump({"pretrain": {"gpus": 4, "threads": 8, "mem_mb": 32000, "runtime": 2880}})
    )
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(
        [
            *(sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")),
            *("--workflow-profile", str(profile.relative_to(work))),
            *("--slurm-init-seconds-before-status-checks", "1"),
            *("--configfile", str(ROOT / "config" / "smoke.yaml"), str(work / "gpus.yaml")),
            *("--", "runs/ntu60_xsub_halp/final.pt", "data/pku2/manifest.json"),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0, "the stand-in sbatch refuses every job"
    assert "SLURM sbatch failed" in run.stdout + run.stderr, run.stderr[-3000:]
    submitted = {}
    for line in calls.read_text().splitlines():
        args = shlex.split(line.split(" --wrap")[0])
        comment = args[args.index("--comment") + 1]
        submitted[comment.split("_wildcards")[0]] = args
    assert set(submitted) == {"rule_pretrain", "rule_prepare"}, calls.read_text()

    gpu = submitted["rule_pretrain"]
    for want in ("--gpus=4", "--cpus-per-task=8"):
        assert want in gpu
    expected = {"-A": "acct-test", "-p": "gpu-test", "-t": "2880", "--mem": "32000"}
    for flag, value in expected.items():
        assert gpu[gpu.index(flag) + 1] == value, (flag, gpu)
    assert not any(a.startswith(("--ntasks-per-gpu", "--gres", "--ntasks=")) for a in gpu), gpu

    cpu = submitted["rule_prepare"]
    assert cpu[cpu.index("-p") + 1] == "cpu-test"
    assert "--ntasks=1" in cpu and "--cpus-per-task=2" in cpu  # prepare_workers: 2
    assert not any(a.startswith(("--gpus", "--gres")) for a in cpu), cpu
