"""The package's layers: a module imports only from its own layer or the layers below.

Layers, bottom to top (docs/development.md, "Layout"): core (errors, io, schedules,
config, resources, runtime) < data < encoders < objectives < methods (methods, model,
checkpoint) < eval < run (train, evaluate, graphcl, release) < report < interface (smoke,
cli). Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "halp"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("halp", "errors", "io", "schedules", "config", "resources", "runtime")),
    ("data", ("data",)),
    ("encoders", ("encoders",)),
    ("objectives", ("objectives",)),
    ("methods", ("methods", "model", "checkpoint")),
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
    raise AssertionError(f"{module} is in no layer; add it to LAYERS and the README")


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
