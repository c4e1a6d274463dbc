"""Emulating a whole cell from its file: emulators per driver, value generators, faults, a control API, rewriting."""
