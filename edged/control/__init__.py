"""Deterministic control: cycle tasks of IEC 61131-3 style function blocks wired in TOML."""
from __future__ import annotations

from typing import Any

__all__ = ["ControlPlane", "ControlSpec", "parse_control"]


def __getattr__(name: str) -> Any:
    """Lazy exports, so that loading a config does not import the compiled core."""
    if name == "ControlPlane":
        from edged.control.plane import ControlPlane
        return ControlPlane
    if name == "ControlSpec":
        from edged.control.config import ControlSpec
        return ControlSpec
    if name == "parse_control":
        from edged.control.config import parse_control
        return parse_control
    raise AttributeError(name)
