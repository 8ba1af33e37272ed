"""Data files shipped with the package: the official missing-skeleton lists and configs.

``configs/<name>.yaml`` are configurations that ``--config builtin:<name>`` loads, so an
installed package needs no repository: ``builtin:smoke`` is the tiny CPU configuration of
the embedded default run.
"""

from __future__ import annotations

from importlib import resources

BUILTIN_PREFIX = "builtin:"


def builtin_configs() -> list[str]:
    """The names ``--config builtin:NAME`` accepts."""
    folder = resources.files(__name__).joinpath("configs")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def builtin_config_text(name: str) -> str | None:
    """The YAML text of the built-in configuration ``name``, or None if there is none."""
    entry = resources.files(__name__).joinpath("configs", f"{name}.yaml")
    return entry.read_text(encoding="utf-8") if entry.is_file() else None
