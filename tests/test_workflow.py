"""The Snakemake workflow: the planned DAG, lint, format, the smoke run end to end,
reruns after a deleted intermediate, and resuming a killed pretraining."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytest.importorskip("snakemake", reason="the workflow tests need snakemake (the test extra)")


def snakemake(*args: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def job_stats(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def expected_counts(config: dict) -> dict[str, int]:
    grid = config["grid"]
    methods = len(grid["methods"])
    knn = sum(b.split("_")[0] in grid["knn_datasets"] for b in grid["benchmarks"])
    evaluations = (
        len(grid["benchmarks"]) * methods * (len(grid["protocols"]) - ("knn" in grid["protocols"]))
        + knn * methods * ("knn" in grid["protocols"])
        + len(grid["semi"]["benchmarks"]) * methods * len(grid["semi"]["percents"])
        + len(grid["ablations"]["variants"])
    )
    runs = {f"{b}_{m}" for b in grid["benchmarks"] for m in grid["methods"]}
    runs |= {f"{s}_xsub_{m}" for s in grid["transfer"]["sources"] for m in grid["methods"]}
    runs |= {f"{grid['ablations']['benchmark']}_{v}" for v in grid["ablations"]["variants"]}
    datasets = {b.split("_")[0] for b in grid["benchmarks"]} | set(grid["transfer"]["sources"])
    datasets.add(grid["transfer"]["target"].split("_")[0])
    # AimCLR, HiCLR and their ensembles: an ensemble is fused from its members' evaluations
    ensembles = config.get("ensembles") or {}
    extra_evals, fused, crossclr = set(), set(), set()
    for framework in grid.get("frameworks", []):
        for b in framework["benchmarks"]:
            for v in framework["variants"]:
                members = ensembles[v]["members"].values() if v in ensembles else [v]
                if v in ensembles:
                    fused.add(f"{b}_{v}")
                for m in members:
                    runs.add(f"{b}_{m}")
                    extra_evals.add(f"{b}_{m}_linear")
                    if config["variants"].get(m, {}).get("recipe") == "crossclr":
                        crossclr.add(b.split("_")[0])
                    else:
                        datasets.add(b.split("_")[0])
    main = {f"{b}_{m}_{p}" for b in grid["benchmarks"] for m in grid["methods"] for p in ["linear"]}
    nwucla = config["nwucla"]  # its own grid: splits x methods x protocols
    runs |= {f"nwucla_{s}_{m}" for s in nwucla["splits"] for m in nwucla["methods"]}
    if nwucla["splits"] and nwucla["methods"]:
        datasets.add("nwucla")
    evaluations += len(nwucla["splits"]) * len(nwucla["methods"]) * len(nwucla["protocols"])
    counts = {
        "prepare": len(datasets),
        "pretrain": len(runs),
        "evaluate": evaluations + len(extra_evals - main),
        "transfer": len(grid["transfer"]["sources"]) * methods,
        "overhead": int(grid["overhead"]),
        "tables": 1,
        "figures": 1,
        "all": 1,
    }
    if fused:
        counts["ensemble"] = len(fused)
    if crossclr:
        counts["prepare_crossclr"] = len(crossclr)
    if config["synthetic"]:
        counts.update(synth_ntu=1, synth_pku2=1, synth_nwucla=int("nwucla" in datasets))
    graphs = config["graphs"]
    pairs = len(graphs["datasets"]) * len(graphs["methods"])
    counts.update(
        prepare_tu=len(graphs["datasets"]),
        graphcl_seed=pairs * len(graphs["seeds"]),
        graphcl_summary=pairs,
    )
    if graphs["synthetic"]:
        counts["synth_tu"] = len(graphs["datasets"])
    return counts


def test_full_grid_plans_every_job_of_the_paper() -> None:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    stats = job_stats(snakemake("-n", "--cores", "8").stdout)
    assert {k: v for k, v in stats.items() if k != "total"} == expected_counts(config)
    # the paper's grid: 5 benchmarks x 4 methods + 13 ablation variants; linear 20, kNN 16
    # (NTU only), semi 2 x 4 x 4 = 32, ablations 13; transfer 2 sources x 4 methods. Then
    # on the 4 NTU benchmarks: AimCLR 4 variants and 3s-AimCLR (+ 2 stream variants: 24
    # runs, 4 fusions); HiCLR 4 variants and the streams of 2 ensembles (+ 4 stream
    # variants: 32 runs, 8 fusions); the slides' 6 arrangements on NTU-60 x-sub. Each run
    # is evaluated once (linear). NW-UCLA: 8 methods on xview3, kNN, linear and 10 % semi.
    assert (stats["pretrain"], stats["evaluate"], stats["transfer"]) == (95 + 8, 143 + 24, 8)
    assert (stats["ensemble"], stats["prepare_crossclr"]) == (12, 2)
    # the poster's graph table: 4 datasets x 2 methods x 5 seeds
    assert (stats["graphcl_seed"], stats["graphcl_summary"]) == (40, 8)


def test_smoke_plan_covers_the_nwucla_reader() -> None:
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    smoke = ("-n", "--cores", "2", "--configfile", str(ROOT / "config" / "smoke.yaml"))
    stats = job_stats(snakemake(*smoke).stdout)
    assert {k: v for k, v in stats.items() if k != "total"} == expected_counts(config)
    assert stats["synth_nwucla"] == 1
    target = "results/nwucla_xview3_halp_semi10.json"
    out = snakemake("-n", "-p", "--cores", "2", target, "--configfile", smoke[-1]).stdout
    assert job_stats(out) == {
        "synth_nwucla": 1, "prepare": 1, "pretrain": 1, "evaluate": 1, "total": 4,
    }  # fmt: skip
    assert "halp prepare nwucla --raw raw/synthetic/nwucla" in out
    assert "--set data.layout=kinect20 --set data.recipe=nwucla" in out
    assert "--set label_fraction=0.1" in out


def test_single_target_plans_only_its_chain() -> None:
    out = snakemake("-n", "--cores", "8", "results/ntu60_xsub_halp_linear.json").stdout
    assert job_stats(out) == {"prepare": 1, "pretrain": 1, "evaluate": 1, "total": 3}
    out = snakemake("-n", "--cores", "8", "results/ntu120_to_pku2_halp_cmd_transfer.json").stdout
    assert job_stats(out) == {"prepare": 2, "pretrain": 1, "transfer": 1, "total": 4}


def test_lint_and_format_are_clean() -> None:
    lint = snakemake("--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    snakefmt = shutil.which("snakefmt", path=str(BIN)) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed (it is in the test extra)")
    fmt = subprocess.run([snakefmt, "--check", str(ROOT)], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr


def test_bad_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["grid"]["protocols"] = ["linear", "knearest"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake("-n", "--cores", "1", "--configfile", str(path), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "knearest" in proc.stdout + proc.stderr and "protocols" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke configuration run end to end, once for the module."""
    work = tmp_path_factory.mktemp("smoke")
    snakemake("--cores", "2", "--configfile", str(ROOT / "config" / "smoke.yaml"), cwd=work)
    return work


@pytest.mark.slow
def test_smoke_run_builds_every_target(smoke_dir: Path) -> None:
    results = sorted(p.name for p in (smoke_dir / "results").glob("*.json"))
    assert "ntu60_xsub_halp_linear.json" in results
    assert "ntu60_to_pku2_halp_cmd_transfer.json" in results
    assert "ntu60_xsub_halp_semi50.json" in results and "overhead.json" in results
    assert {f"nwucla_xview3_halp_{p}.json" for p in ("knn", "linear", "semi10")} <= set(results)
    linear = json.loads((smoke_dir / "results" / "ntu60_xsub_halp_linear.json").read_text())
    assert linear["protocol"] == "linear" and 0 <= linear["metrics"]["top1"] <= 100
    assert (smoke_dir / "results" / "tables" / "tables.md").is_file()
    assert (smoke_dir / "results" / "tables" / "table1_linear.tex").is_file()
    assert (smoke_dir / "results" / "figures" / "figures.md").is_file()
    assert list((smoke_dir / "results" / "figures").glob("pretrain_loss_*.png"))
    again = snakemake("-n", "--cores", "2", "--configfile", str(ROOT / "config" / "smoke.yaml"),
                      cwd=smoke_dir).stdout  # fmt: skip
    assert "Nothing to be done" in again


@pytest.mark.slow
def test_deleting_an_intermediate_reruns_only_its_dependents(smoke_dir: Path) -> None:
    smoke = ["-n", "--cores", "2", "--configfile", str(ROOT / "config" / "smoke.yaml")]
    # one result: its evaluation and the tables
    (smoke_dir / "results" / "pku2_xsub_cmd_linear.json").unlink()
    out = snakemake(*smoke, cwd=smoke_dir).stdout
    assert job_stats(out) == {"evaluate": 1, "tables": 1, "figures": 1, "all": 1, "total": 4}
    # a checkpoint and one result that needs it: the pretraining, then everything that
    # reads that checkpoint (linear, kNN, semi, transfer), nothing else. (A checkpoint
    # deleted alone is only remade when something downstream is out of date: Snakemake
    # does not rerun up-to-date results for a missing intermediate.)
    (smoke_dir / "runs" / "ntu60_xsub_halp" / "final.pt").unlink()
    (smoke_dir / "results" / "ntu60_xsub_halp_linear.json").unlink()
    out = snakemake(*smoke, cwd=smoke_dir).stdout
    assert job_stats(out) == {
        "pretrain": 1, "evaluate": 4, "transfer": 1, "tables": 1, "figures": 1, "all": 1,
        "total": 9,
    }  # fmt: skip


@pytest.mark.slow
def test_killed_pretraining_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["pretrain"]["set"]["optim.epochs"] = 40
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config))
    target = "runs/ntu60_xsub_baseline/final.pt"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    # the target goes first: options like --configfile take several values and would
    # swallow a target placed after them
    cmd = [sys.executable, "-m", "snakemake", target, "--snakefile", str(ROOT / "Snakefile"),
           "--cores", "1", "--configfile", str(path)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    metrics = tmp_path / "runs" / "ntu60_xsub_baseline" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("snakemake ended before it could be killed")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a cluster would
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert 3 <= done < 40 and not (tmp_path / target).exists()
    snakemake("--unlock", "--configfile", str(path), cwd=tmp_path)
    snakemake(target, "--cores", "1", "--rerun-incomplete", "--configfile", str(path), cwd=tmp_path)
    log = (tmp_path / "logs" / "pretrain" / "ntu60_xsub_baseline.log").read_text()
    assert re.search(r"resuming runs/ntu60_xsub_baseline from epoch (\d+)", log)
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(40))  # continued, not restarted


def _workflow_copies() -> tuple[dict[str, str], tuple[str, ...]]:
    """The wildcard patterns and the preset names that workflow/rules/common.smk keeps."""
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    block = text.split("wildcard_constraints:", 1)[1].split("\n\n", 1)[0]
    patterns = dict(re.findall(r'(\w+)="([^"]+)"', block))
    presets = re.search(r"^PRESETS = \(([^)]*)\)", text, re.M)
    assert presets is not None
    return patterns, tuple(re.findall(r'"(\w+)"', presets[1]))


def test_the_workflow_copy_of_names_agrees_with_the_package() -> None:
    """Method names and results naming live in halp.methods and halp.report.naming; the
    workflow (which cannot always import the package) keeps a copy that must agree."""
    from halp.methods import PRESETS
    from halp.report import naming

    patterns, presets = _workflow_copies()
    assert presets == tuple(PRESETS)
    # NW-UCLA's results (nwucla_xviewK_...) are not the paper tables' (its table is its own)
    assert set(patterns["dataset"].split("|")) == {*naming.DATASETS, "nwucla"}
    assert set(patterns["split"].split("|")) == {*naming.SPLITS, "xview[123](-val)?"}
    schema = (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text()
    for method in PRESETS:
        assert re.search(rf"[(|]{method}[|)]", schema), method
    target = re.compile(
        r"^{dataset}_{split}_{variant}_{protocol}\.json$".format(
            **{k: f"(?:{v})" for k, v in patterns.items()}
        )
    )
    for dataset in naming.DATASETS:
        for variant in (*PRESETS, "halp-lam0.6", "halp_cmd-N10"):
            for protocol in ("linear", "knn", "finetune", "semi10"):
                name = naming.result_name(dataset, "xsub", variant, protocol)
                assert target.match(name), name
    bad = "ntu60_xsub_nosuchmethod_linear.json"
    assert naming.EVAL_NAME.match(bad) and not target.match(bad)  # the copy is the stricter
