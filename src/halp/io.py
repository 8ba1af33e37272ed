"""Atomic file output and content hashes: the one home of "nothing half-written".

Every file the package writes goes through :func:`atomic_path`: it is written under a
temporary name in the destination folder, flushed to disk and renamed over the
destination, so a reader (or a killed run) sees the old file or the new one, never a
part of either. Text, JSON, bytes, ``torch.save`` payloads and ``manifest.json`` all use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)

MANIFEST = "manifest.json"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    The caller writes the temporary file completely (and closes it) inside the ``with``
    block. On any exception the temporary file is removed and ``path`` is untouched. The
    result gets the usual permissions (0666 minus the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json`` atomically; it is written last and marks completion."""
    path = Path(folder) / MANIFEST
    atomic_write_json(path, manifest)
    return path


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(path: Path, error: type[Exception], key: str = "epoch") -> list[dict[str, Any]]:
    """The rows of a JSON-lines file whose every row is an object with an integer ``key``.

    Blank lines are skipped (a file that was rewritten by hand may hold some).

    Raises:
        error: naming ``path`` and the line, for text that is not UTF-8, a line that is
            not JSON, or a row that is not an object with an integer ``key``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start}); it is damaged") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{path}:{number}: not valid JSON ({err.msg})") from None
        value = row.get(key) if isinstance(row, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise error(f"{path}:{number}: expected an object with an integer {key!r}")
        rows.append(row)
    return rows
