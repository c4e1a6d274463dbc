"""The three error kinds of edged: fatal config errors, retried device errors, per-scan read failures."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file: where it is and what is wrong."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class ConfigError(Exception):
    """A config is invalid; carries every issue found, not only the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class DeviceUnavailable(Exception):
    """A device cannot be reached; the caller retries with backoff and jitter."""


class ReadFailed(Exception):
    """One read of a scan failed; the tags it covers get bad quality."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class WriteFailed(Exception):
    """A write reached the driver but did not happen (the device refused it, or the driver refused the value).

    ``kind`` says why: ``refused`` (nothing was sent), ``exception`` (the device answered with an error),
    ``malformed`` (the answer could not be trusted), ``timeout``.
    """

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class WriteRefused(Exception):
    """A write was refused before reaching the device (unknown tag, read-only, type or range)."""
