"""Errors meant for users, all under one base class, :class:`HalpError`.

The command line prints a ``HalpError`` as one line (``halp VERB: error: ...``) and exits
with status 2; any other exception is an internal bug and keeps its traceback. Every
message names the file, line or config key at fault and says how to fix it. Each error
class lives here, at the bottom of the package, so that every layer can raise it and the
command line can tell a user's mistake from a bug without importing the layers.
"""

from __future__ import annotations


def quote(text: str, limit: int = 60) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters: a message quotes one short line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


class HalpError(Exception):
    """Base of every error caused by the user's input, files or configuration."""


class ConfigError(HalpError, ValueError):
    """A configuration key is unknown, missing or has a value of the wrong type."""


class RawFormatError(HalpError, ValueError):
    """A raw dataset file is malformed.

    Attributes:
        path: The file.
        line: 1-based line number (0 when no single line is at fault).
        message: What is wrong, without the location.
    """

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line > 0 else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, int, str]]:
        """Keep the exception picklable across worker processes."""
        return (type(self), (self.path, self.line, self.message))


class PrepareError(HalpError, RuntimeError):
    """Raw data cannot be prepared as asked (missing files, split sizes, bad options)."""


class DataFormatError(HalpError, ValueError):
    """A prepared dataset on disk is missing, incomplete or inconsistent."""


class FetchError(HalpError, RuntimeError):
    """A download failed or did not match its expected sha256."""


class CheckpointError(HalpError, ValueError):
    """A checkpoint is missing, not ours, of an unknown format or does not match the config."""


class TrainingDiverged(HalpError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class EvaluationError(HalpError, ValueError):
    """The checkpoint, the data or the configuration cannot be evaluated as asked."""


class TablesError(HalpError, ValueError):
    """A results file cannot be read or does not match its name; the message names it."""


class UsageError(HalpError, ValueError):
    """A command-line option or an argument given by the user is out of its range."""


class SampleNameError(HalpError, ValueError):
    """A file or sample name does not follow its dataset's naming scheme."""


class ReleaseError(HalpError, ValueError):
    """A release folder (``halp release``, ``halp verify``) is incomplete, changed or foreign."""
