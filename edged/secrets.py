"""Secrets: read from $CREDENTIALS_DIRECTORY (systemd LoadCredential=) first, else the file or environment
variable the cell names; warn when the cell file or a key file is readable by other users."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

SECRET_KEY_WORDS = ("password", "key", "secret", "token")  # a "*_file" key with one of these names a secret


def credential_path(path: str) -> Path:
    """Where a secret file is read from: ``$CREDENTIALS_DIRECTORY/<basename>`` when systemd passed a credential
    of that name (``LoadCredential=mqtt.pass:/etc/edged/mqtt.pass``), else the path itself."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        candidate = Path(creds) / Path(path).name
        if candidate.is_file():
            return candidate
    return Path(path)


def read_secret_file(path: str) -> str:
    """The secret in a file (one line; the trailing newline is dropped), from the credentials directory first.

    Raises OSError; its message names the file, never the content.
    """
    return credential_path(path).read_text(encoding="utf-8").rstrip("\r\n")


def secret_files(data: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, path) of every key in a parsed cell that names a secret file (password_file, tls_key...)."""
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, str) and value and any(w in key for w in SECRET_KEY_WORDS) \
                    and (key.endswith("_file") or key.endswith("key") or key.endswith("keyfile")):
                yield dotted, value
            elif isinstance(value, dict):
                yield from secret_files(value, dotted)


def readable_by_others(path: Path) -> bool:
    """True when the file exists and its mode lets users other than owner and group read it."""
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def warn_readable(cell_file: str, data: dict[str, Any]) -> list[str]:
    """Log a warning for the cell file and each secret file that others can read; returns the warnings."""
    warnings = []
    if readable_by_others(Path(cell_file)):
        warnings.append(f"{cell_file} is readable by other users (mode {_mode(Path(cell_file))}): "
                        f"chmod 0640 it (make install creates it 0640 root:edged)")
    base = Path(cell_file).resolve().parent
    for key, value in secret_files(data):
        p = credential_path(value)
        p = p if p.is_absolute() else base / p
        if readable_by_others(p):
            warnings.append(f"{key}: {p} is readable by other users (mode {_mode(p)}): chmod 0600 or 0640 it, "
                            f"or pass it with LoadCredential=")
    for w in warnings:
        log.warning("%s", w)
    return warnings


def _mode(p: Path) -> str:
    return oct(stat.S_IMODE(p.stat().st_mode)).replace("0o", "0")
