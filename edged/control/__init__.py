"""Deterministic control: cycle tasks of IEC 61131-3 style function blocks wired in TOML."""
