"""Errors that point at the offending file and line."""

from __future__ import annotations


class RawFormatError(ValueError):
    """A raw dataset file is malformed. ``line`` is 1-based (0 when no single line is at fault)."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line > 0 else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, int, str]]:  # picklable across processes
        return (type(self), (self.path, self.line, self.message))


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""
