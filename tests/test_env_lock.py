"""The hash-checked locks of envs/ against their inputs, pyproject.toml and the conda environment.

envs/lock.sh resolves envs/requirements.txt together with torch's CPU build and writes three
locks: requirements-lock.txt (what the image installs on its base), torch-cpu-lock.txt (the CPU
base's torch) and test-lock.txt (pytest inside the image). These tests need no network and no
Docker: they read the files. They fail when requirements.txt changed after the locks were made,
when a lock line is not an exact, hashed pin, when two locks or the conda environment disagree on
a version, or when a locked version leaves a range of pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from test_container import declared_ranges  # one reading of pyproject.toml

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
REQUIREMENTS = ENVS / "requirements.txt"
LOCKS = ("requirements-lock.txt", "torch-cpu-lock.txt", "test-lock.txt")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")
INPUT = re.compile(r"^# input: requirements\.txt sha256=([0-9a-f]{64}); (\S+); (\S+)$", re.M)


@dataclass(frozen=True)
class Locked:
    """One line of a lock: the exact version and the sha256 hashes of its files."""

    name: str
    version: Version
    hashes: frozenset[str]


def parse_lock(text: str) -> dict[str, Locked]:
    """Parse a lock (pip requirements with --hash options) into its entries by canonical name.

    Args:
        text: The lock file's contents.

    Returns:
        The entries, keyed by canonical package name.

    Raises:
        AssertionError: A line is not ``name==version`` with sha256 hashes, or a package is
            listed twice.
    """
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()  # a --hash value holds no "#"
        if not line:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the lock ends inside a continued line"
    entries: dict[str, Locked] = {}
    for line in logical:
        spec, *options = line.split()
        assert options, f"{spec}: no --hash (pip install --require-hashes would refuse it)"
        for option in options:
            assert HASH.match(option), f"{spec}: {option!r} is not a --hash=sha256:<64 hex>"
        req = Requirement(spec)
        assert not req.marker and not req.url and not req.extras, f"{spec}: keep name==version"
        specifiers = list(req.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{spec}: not an == pin"
        assert "*" not in specifiers[0].version, f"{spec}: a wildcard is not a pin"
        name = canonicalize_name(req.name)
        assert name not in entries, f"{req.name} is locked twice"
        entries[name] = Locked(name, Version(specifiers[0].version), frozenset(options))
    return entries


def lock(name: str) -> dict[str, Locked]:
    return parse_lock((ENVS / name).read_text())


def direct_pins() -> dict[str, Version]:
    out = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = Version(next(iter(req.specifier)).version)
    return out


def conda_pip_pins() -> dict[str, Version]:
    env = yaml.safe_load((ENVS / "halp.yaml").read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    out = {}
    for line in pip:
        req = Requirement(line)
        out[canonicalize_name(req.name)] = Version(next(iter(req.specifier)).version)
    return out


# --- the parser itself ----------------------------------------------------------------------

GOOD = """# a header
numpy==2.3.5 \\
    --hash=sha256:{a} \\
    --hash=sha256:{b}
    # via -r requirements.txt
six==1.16.0 \\
    --hash=sha256:{a}
""".format(a="a" * 64, b="b" * 64)


def test_parser_reads_hashed_pins():
    entries = parse_lock(GOOD)
    assert set(entries) == {"numpy", "six"}
    assert entries["numpy"].version == Version("2.3.5")
    assert len(entries["numpy"].hashes) == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("six==1.16.0\n", "no --hash"),
        ("six>=1.16 \\\n    --hash=sha256:" + "a" * 64 + "\n", "not an == pin"),
        ("six==1.16.0 \\\n    --hash=md5:abc\n", "not a --hash=sha256"),
        (GOOD + "Six==1.16.0 \\\n    --hash=sha256:" + "c" * 64 + "\n", "locked twice"),
        ("six==1.16.0 \\\n", "inside a continued line"),
    ],
)
def test_parser_rejects_what_require_hashes_would(bad, message):
    with pytest.raises(AssertionError, match=message):
        parse_lock(bad)


# --- the locks ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOCKS)
def test_lock_is_made_from_the_current_requirements(name):
    text = (ENVS / name).read_text()
    match = INPUT.search(text)
    assert match, f"envs/{name} has no '# input:' header line: regenerate with bash envs/lock.sh"
    current = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    assert match.group(1) == current, (
        f"envs/{name} was made from another envs/requirements.txt: run bash envs/lock.sh"
    )
    assert "CPython 3.11" in text


@pytest.mark.parametrize("name", LOCKS)
def test_lock_lines_are_exact_hashed_pins(name):
    assert lock(name), f"envs/{name} locks nothing"


def test_lock_holds_every_direct_pin_at_its_version():
    locked = lock("requirements-lock.txt")
    for name, version in direct_pins().items():
        assert name in locked, f"{name} is in envs/requirements.txt but not in the lock"
        assert locked[name].version == version, (
            f"{name}: requirements.txt pins {version}, the lock has {locked[name].version}"
        )


def test_torch_is_only_in_the_cpu_base_lock():
    assert "torch" not in lock("requirements-lock.txt"), "the base image brings torch"
    assert "torch" not in lock("test-lock.txt")
    torch = lock("torch-cpu-lock.txt")["torch"]
    assert torch.version.local == "cpu", f"torch {torch.version} is not the CPU build"
    pinned = INPUT.search((ENVS / "torch-cpu-lock.txt").read_text()).group(2)
    assert pinned == f"torch=={torch.version}", (pinned, torch.version)


def test_locks_agree_on_every_shared_package():
    locks = {name: lock(name) for name in LOCKS}
    seen: dict[str, tuple[str, Locked]] = {}
    for name, entries in locks.items():
        for package, entry in entries.items():
            if package in seen:
                other_name, other = seen[package]
                assert (entry.version, entry.hashes) == (other.version, other.hashes), (
                    f"{package}: {entry.version} in {name}, {other.version} in {other_name}"
                )
            seen[package] = (name, entry)


def test_locked_versions_satisfy_pyproject():
    locked = lock("requirements-lock.txt") | lock("torch-cpu-lock.txt")
    for name, specifiers in declared_ranges().items():
        assert name in locked, f"{name} is declared in pyproject.toml but locked nowhere"
        for specifier in specifiers:
            assert specifier.contains(locked[name].version, prereleases=True), (
                f"{name}=={locked[name].version} is outside pyproject's range {specifier}"
            )


def test_conda_env_uses_the_locked_versions():
    locked = lock("requirements-lock.txt")
    conda = conda_pip_pins()
    conda.pop("torch")  # the GPU image's torch, checked against the base image in test_container
    for name, version in conda.items():
        assert name in locked, f"envs/halp.yaml pins {name}, which the lock does not hold"
        assert locked[name].version == version, (
            f"{name}: envs/halp.yaml pins {version}, the lock has {locked[name].version}"
        )


def test_images_install_the_locks_with_hashes():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(
        r"pip install [^&;]*--require-hashes -r envs/requirements-lock\.txt", dockerfile
    )
    base = (ENVS / "cpu-base.Dockerfile").read_text()
    assert re.search(r"pip install [^&;]*--require-hashes[^&;]*torch-cpu-lock\.txt", base)
    script = (ROOT / ".ci" / "container.sh").read_text()
    assert re.search(r"pip install [^&;]*--require-hashes[^&;]*test-lock\.txt", script)


def test_torch_wheel_on_this_machine_matches_the_lock():
    torch = lock("torch-cpu-lock.txt")["torch"]
    name = f"torch-{torch.version}-cp311-cp311-manylinux_2_28_x86_64.whl"
    folders = [*os.environ.get("PIP_FIND_LINKS", "").split(), "/opt/wheels"]
    found = [Path(f) / name for f in folders if (Path(f) / name).is_file()]
    if not found:
        pytest.skip(f"{name} is not on this machine")
    digest = hashlib.sha256(found[0].read_bytes()).hexdigest()
    assert f"--hash=sha256:{digest}" in torch.hashes, f"{found[0]} is not the locked file"
