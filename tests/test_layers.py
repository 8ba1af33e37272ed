"""The package's layers: a module imports only from its own layer or the layers below.

Layers, bottom to top (docs/development.md, "Layout"): core (errors, io, schedules,
config, resources, runtime) < data < encoders < objectives < methods (presets, views,
model, checkpoint) < eval < run (train, evaluate, graphcl, release) < report < interface
(smoke, cli). Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "halp"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("halp", "errors", "io", "schedules", "config", "resources", "runtime")),
    ("data", ("data",)),
    ("encoders", ("encoders",)),
    ("objectives", ("objectives",)),
    ("methods", ("methods",)),
    ("eval", ("eval",)),
    ("run", ("train", "evaluate", "graphcl", "release")),
    ("report", ("report",)),
    ("interface", ("smoke", "cli", "__main__")),
]


def layer_of(module: str) -> int:
    """The rank of a dotted module name under ``halp``."""
    parts = module.split(".")
    assert parts[0] == "halp", module
    head = parts[1] if len(parts) > 1 else "halp"
    for rank, (_, members) in enumerate(LAYERS):
        if head in members:
            return rank
    raise AssertionError(f"{module} is in no layer; add it to LAYERS and docs/development.md")


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out.append((name, path))
    return out


def imports_of(path: Path, module: str) -> list[str]:
    """Every ``halp`` module that ``path`` imports (top level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "halp"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "halp":
                continue
            for alias in node.names:  # `from halp.data import prepare` imports halp.data.prepare
                sub = f"{node.module}.{alias.name}"
                is_module = (SRC.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                found.append(sub if is_module else node.module)
    return found


def test_every_module_has_a_layer() -> None:
    names = [name for name, _ in modules()]
    assert len(names) > 30
    for name in names:
        layer_of(name)


@pytest.mark.parametrize("module,path", modules(), ids=[m for m, _ in modules()])
def test_no_import_from_a_higher_layer(module: str, path: Path) -> None:
    mine = layer_of(module)
    upward = [
        f"{target} ({LAYERS[layer_of(target)][0]})"
        for target in imports_of(path, module)
        if layer_of(target) > mine
    ]
    assert not upward, f"{module} ({LAYERS[mine][0]}) imports from above: {upward}"


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The walker itself: an encoder importing the training loop is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from halp.train import pretrain\n")
    targets = imports_of(bad, "halp.encoders.bad")
    assert targets == ["halp.train"]
    assert layer_of("halp.train") > layer_of("halp.encoders.bad")


def test_documented_layout_lists_every_layer() -> None:
    page = (SRC.parents[1] / "docs" / "development.md").read_text(encoding="utf-8")
    section = page.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for name, members in LAYERS:
        assert name in section, name
        for member in members:
            if member not in ("halp", "__main__"):
                assert member in section, member


METHOD_SECTIONS = ("halp", "cmd", "mining", "aimclr", "hiclr")
"""Config sections that belong to one method: only its objectives and presets read them."""
METHOD_WORDS = ("nnm", "crossclr", "graphcl", "mask", "adain", "dae", "eadm")
"""Names of methods, objectives, recipes and view transforms the loop must not know."""
METHOD_FREE = ["train/loop.py", "train/monitor.py", "methods/model.py"]
"""The training loop and the model: they know no method (docs/development.md, "Adding a
method")."""


def method_mentions(path: Path) -> list[str]:
    """Attribute reads of a method's config section and code strings naming a method.

    Docstrings are prose and are not counted; every other string constant is.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in METHOD_SECTIONS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            words = set(re.findall(r"[a-z_]+", node.value.lower()))
            hits = words & set(METHOD_WORDS + METHOD_SECTIONS)
            if hits:
                found.append(f"line {node.lineno}: {sorted(hits)} in {node.value!r}")
    return found


@pytest.mark.parametrize("name", METHOD_FREE)
def test_the_loop_and_the_model_know_no_method(name: str) -> None:
    assert not method_mentions(SRC / name), f"{name}: {method_mentions(SRC / name)}"


def test_the_method_check_catches_a_config_section_and_a_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""A docstring may say HaLP, hiclr and crossclr."""\n'
        "def f(config):\n"
        '    """Nor here: config.hiclr."""\n'
        "    keep = 1.0 if config.data.recipe == 'crossclr' else 0.95\n"
        "    return config.halp.mu * keep\n"
    )
    found = method_mentions(bad)
    assert len(found) == 2 and "crossclr" in found[0] + found[1] and ".halp" in found[0] + found[1]
