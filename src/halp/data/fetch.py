"""Download a file and check its sha256 (for PKU-MMD archives and similar).

The file is streamed to a temporary name next to ``out`` and renamed only when its
digest matches, so a failed or interrupted download never leaves a file that looks
complete. NTU RGB+D cannot be fetched this way: it needs a registration.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from halp.errors import FetchError
from halp.io import sha256_of


def fetch(url: str, out: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``out`` unless ``out`` already has the digest ``sha256``."""
    out = Path(out)
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise FetchError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")
    if out.is_file() and sha256_of(out) == expected:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as fh:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                fh.write(block)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"downloading {url} failed: {err}") from None
    except BaseException:  # Ctrl-C (KeyboardInterrupt), a signal: keep nothing
        tmp.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise FetchError(
            f"{url}: sha256 is {digest.hexdigest()}, expected {expected}; the file was not kept"
        )
    os.replace(tmp, out)
    return out
