"""Strict typed reading of TOML tables: every key read is recorded, unread keys are errors."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

from edged.errors import ConfigError, ConfigIssue

_REQUIRED = object()

_TOML_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def describe(value: Any) -> str:
    """Say what a TOML value is, for error messages."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        digits = len(str(abs(value))) if abs(value) < 10**100 else None
        return f"integer {value}" if digits is not None else "an integer of more than 100 digits"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class Issues:
    """Collects config issues for one file so that all are reported at once."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigIssue] = []

    def add(self, path: str, message: str) -> None:
        """Record one issue at a dotted path."""
        self.items.append(ConfigIssue(self.file, path, message))

    def raise_if_any(self) -> None:
        """Raise ConfigError carrying every issue, if there are any."""
        if self.items:
            raise ConfigError(self.items)


class Section:
    """A TOML table under a dotted path; typed getters record what was read."""

    # Set by tooling (the config reference check) to observe every key the code asks for.
    recorder: Callable[[str, str], None] | None = None

    def __init__(self, data: dict[str, Any], path: str, issues: Issues) -> None:
        self.data = data
        self.path = path
        self.issues = issues
        self.read: set[str] = set()
        self._known: set[str] = set()

    # -- paths and errors -------------------------------------------------
    def path_of(self, key: str) -> str:
        """Dotted path of a key in this section."""
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | None, message: str) -> None:
        """Record an issue at this section (key None) or at one of its keys."""
        self.issues.add(self.path_of(key) if key else (self.path or "(top level)"), message)

    def has(self, key: str) -> bool:
        """True when the key is present (does not mark it read)."""
        return key in self.data

    def keys(self) -> list[str]:
        """The keys present in this table."""
        return list(self.data)

    # -- typed getters ------------------------------------------------------
    def raw(self, key: str, default: Any = _REQUIRED) -> Any:
        """The raw value of a key (marks it read); records an issue when required and missing."""
        self._known.add(key)
        if Section.recorder is not None:
            Section.recorder(self.path, key)
        if key not in self.data:
            if default is _REQUIRED:
                self.error(key, "missing required key")
                return None
            return default
        self.read.add(key)
        return self.data[key]

    def _typed(self, key: str, types: tuple[type, ...], expected: str, default: Any) -> Any:
        value = self.raw(key, default)
        if key not in self.data:
            return value
        if isinstance(value, bool) and bool not in types:
            self.error(key, f"expected {expected}, found {describe(value)}")
            return None
        if not isinstance(value, types):
            self.error(key, f"expected {expected}, found {describe(value)}")
            return None
        return value

    def get_str(self, key: str, default: Any = _REQUIRED, *, choices: Sequence[str] | None = None,
                nonempty: bool = True) -> Any:
        """A string, optionally one of given choices."""
        value = self._typed(key, (str,), "a string", default)
        if key not in self.data or value is None:
            return value
        if nonempty and not value.strip():
            self.error(key, "expected a non-empty string, found an empty string")
            return None
        if choices is not None and value not in choices:
            self.error(key, f"expected one of {', '.join(repr(c) for c in choices)}, found {value!r}")
            return None
        return value

    def get_bool(self, key: str, default: Any = _REQUIRED) -> Any:
        """A boolean."""
        return self._typed(key, (bool,), "a boolean (true or false)", default)

    def get_int(self, key: str, default: Any = _REQUIRED, *, min: int | None = None,
                max: int | None = None) -> Any:
        """An integer within optional bounds."""
        value = self._typed(key, (int,), "an integer", default)
        if key not in self.data or value is None:
            return value
        return self._bounded(key, value, min, max)

    def get_float(self, key: str, default: Any = _REQUIRED, *, min: float | None = None,
                  max: float | None = None) -> Any:
        """A number (integer or float) within optional bounds, returned as float."""
        value = self._typed(key, (int, float), "a number", default)
        if key not in self.data or value is None:
            return value
        if isinstance(value, int) and not -1e308 < value < 1e308:  # float() would raise OverflowError
            self.error(key, f"expected a finite number, found {describe(value)}")
            return None
        if math.isnan(value) or math.isinf(value):
            self.error(key, f"expected a finite number, found {describe(value)}")
            return None
        value = self._bounded(key, value, min, max)
        return None if value is None else float(value)

    def _bounded(self, key: str, value: Any, lo: Any, hi: Any) -> Any:
        if lo is not None and value < lo or hi is not None and value > hi:
            rng = (f"between {lo} and {hi}" if lo is not None and hi is not None
                   else f"at least {lo}" if lo is not None else f"at most {hi}")
            found = describe(value).removeprefix("integer ").removeprefix("number ")
            self.error(key, f"expected a value {rng}, found {found}")
            return None
        return value

    def get_list(self, key: str, default: Any = _REQUIRED, *, item: type | tuple[type, ...] = str,
                 expected: str = "an array of strings") -> Any:
        """An array whose items all have the given type."""
        value = self._typed(key, (list,), expected, default)
        if key not in self.data or value is None:
            return value
        for i, v in enumerate(value):
            if not isinstance(v, item) or (isinstance(v, bool) and item is not bool):
                self.error(f"{key}[{i}]", f"expected {expected}, found {describe(v)}")
                return None
        return value

    def get_scalar(self, key: str, default: Any = _REQUIRED) -> Any:
        """A boolean, number or string (for constants)."""
        return self._typed(key, (bool, int, float, str), "a boolean, number or string", default)

    # -- sub-tables ---------------------------------------------------------
    def section(self, key: str, *, required: bool = False) -> "Section | None":
        """A sub-table as a Section, or None when absent (an issue if required)."""
        value = self.raw(key, _REQUIRED if required else None)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.error(key, f"expected a table, found {describe(value)}")
            return None
        return Section(value, self.path_of(key), self.issues)

    def sections(self, key: str) -> dict[str, "Section"]:
        """A table of named tables (e.g. ``device.<name>``), each as a Section."""
        table = self.section(key)
        if table is None:
            return {}
        out: dict[str, Section] = {}
        for name, value in table.data.items():
            table._known.add(name)
            table.read.add(name)
            if not isinstance(value, dict):
                table.error(name, f"expected a table, found {describe(value)}")
                continue
            if not valid_name(name):
                table.error(name, "expected a name of letters, digits, '_' or '-' (no dots or spaces), "
                                  f"found {name!r}")
                continue
            out[name] = Section(value, table.path_of(name), self.issues)
        return out

    def finish(self, also_known: Iterable[str] = ()) -> None:
        """Report every key that no getter read as unknown, naming the keys that are allowed."""
        known = self._known | set(also_known)
        for key in self.data:
            if key not in self.read and key not in known:
                allowed = ", ".join(sorted(known)) or "none"
                self.error(key, f"unknown key (allowed here: {allowed})")
            elif key not in self.read:
                # known but read by nobody: treat as read (e.g. rejected types already reported)
                pass


def valid_name(name: str) -> bool:
    """True for names usable as device, tag, sink or block names."""
    return bool(name) and all(c.isalnum() or c in "_-" for c in name) and name[0] not in "-"

