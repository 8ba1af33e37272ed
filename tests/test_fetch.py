"""`halp fetch`: sha256-checked, atomic downloads (file:// URLs, no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from halp.data.fetch import fetch
from halp.errors import FetchError


def test_fetch_checks_the_digest(tmp_path: Path) -> None:
    src = tmp_path / "archive.7z"
    src.write_bytes(b"skeletons" * 1000)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    out = fetch(src.as_uri(), tmp_path / "raw" / "archive.7z", good)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(FetchError, match="was not kept"):
        fetch(src.as_uri(), tmp_path / "raw" / "other.7z", "0" * 64)
    assert not list((tmp_path / "raw").glob("*other*"))
    with pytest.raises(FetchError, match="64 hexadecimal digits"):
        fetch(src.as_uri(), tmp_path / "x", "abc")
    with pytest.raises(FetchError, match="failed"):
        fetch((tmp_path / "missing").as_uri(), tmp_path / "y", good)
