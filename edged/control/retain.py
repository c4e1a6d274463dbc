"""Retained block state (IEC 61131-3 RETAIN): one checksummed file per task in the state folder, loaded whole or not at all."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = "edged-retain"
VERSION = 1
STATE_WIDTH = 4      # s[0..3] of a block record (see cext/ctl_blocks.pxi)

State = tuple[list[float], float]   # (s[0..3], timer elapsed ns)


class RetainError(ValueError):
    """A retain file that cannot be trusted (corrupted, foreign, or written by another format)."""


def retain_path(state_dir: Path, task: str) -> Path:
    """Where a task's retained state lives."""
    return Path(state_dir) / "retain" / f"{task}.json"


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def encode(task: str, names: list[str], types: list[str], states: list[tuple[float, ...]]) -> bytes:
    """The file content for the retained blocks of a task (states: Program.retained() rows)."""
    blocks = {}
    for name, btype, row in zip(names, types, states):
        blocks[name] = {"type": btype, "s": [float(x) for x in row[:STATE_WIDTH]], "elapsed_ns": float(row[STATE_WIDTH])}
    body = {"task": task, "blocks": blocks}
    return (json.dumps({"format": FORMAT, "version": VERSION, "sha256": _digest(body), "body": body},
                       sort_keys=True, indent=1) + "\n").encode()


def decode(data: bytes, task: str) -> dict[str, tuple[str, list[float], float]]:
    """Check a whole file and return {block: (type, s[0..3], elapsed_ns)}; RetainError if any part is wrong."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RetainError(f"not a retain file (unreadable JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RetainError(f"not a retain file (expected format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise RetainError(f"expected retain format version {VERSION}, found {doc.get('version')!r}")
    body = doc.get("body")
    if not isinstance(body, dict) or doc.get("sha256") != _digest(body):
        raise RetainError("checksum mismatch (the file is corrupted or was edited)")
    if body.get("task") != task:
        raise RetainError(f"written for task {body.get('task')!r}, not {task!r}")
    blocks = body.get("blocks")
    if not isinstance(blocks, dict):
        raise RetainError("expected a table of blocks")
    out: dict[str, tuple[str, list[float], float]] = {}
    for name, rec in blocks.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
            raise RetainError(f"block {name!r}: expected a record with a type")
        s, el = rec.get("s"), rec.get("elapsed_ns")
        if (not isinstance(s, list) or len(s) != STATE_WIDTH
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in s)):
            raise RetainError(f"block {name!r}: expected {STATE_WIDTH} numbers of state")
        if not isinstance(el, (int, float)) or isinstance(el, bool) or not math.isfinite(el) or el < 0:
            raise RetainError(f"block {name!r}: expected an elapsed time >= 0")
        out[name] = (rec["type"], [float(x) for x in s], float(el))
    return out


class RetainStore:
    """The retain file of one task: load() before the cycle starts, save() from a worker thread or at stop."""

    def __init__(self, state_dir: Path, task: str, names: list[str], types: list[str]) -> None:
        self.path = retain_path(state_dir, task)
        self.task = task
        self.names = list(names)
        self.types = list(types)
        self.last: list[tuple[float, ...]] | None = None
        self.saves = 0
        self.failing = False
        self._lock = threading.Lock()   # a periodic save in a worker thread may meet the final one at stop

    def load(self) -> list[State | None]:
        """The state of each retained block (None: starts cold). A bad file is reported, set aside, ignored whole."""
        cold: list[State | None] = [None] * len(self.names)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            log.info("control task %s: no retained state yet (%s); retained blocks start cold", self.task, self.path)
            return cold
        except OSError as exc:
            log.error("control task %s: cannot read retained state %s: %s; retained blocks start cold",
                      self.task, self.path, exc)
            return cold
        try:
            recs = decode(data, self.task)
        except RetainError as exc:
            bad = self.path.with_name(self.path.name + ".bad")
            try:
                os.replace(self.path, bad)
                kept = f"; kept as {bad}"
            except OSError:
                kept = ""
            log.error("control task %s: retained state %s rejected: %s; every retained block starts cold%s",
                      self.task, self.path, exc, kept)
            return cold
        out = list(cold)
        for k, (name, btype) in enumerate(zip(self.names, self.types)):
            rec = recs.get(name)
            if rec is None:
                log.info("control task %s: block %s has no retained state yet; it starts cold", self.task, name)
            elif rec[0] != btype:
                log.warning("control task %s: retained state of block %s is of a %s, the block is now a %s; "
                            "it starts cold", self.task, name, rec[0], btype)
            else:
                out[k] = (rec[1], rec[2])
        return out

    def save(self, states: list[tuple[float, ...]]) -> bool:
        """Write the file atomically (temporary file, fsync, rename) if the state changed; False on failure."""
        with self._lock:
            return self._save(states)

    def _save(self, states: list[tuple[float, ...]]) -> bool:
        if states == self.last:
            return True
        data = encode(self.task, self.names, self.types, states)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            if not self.failing:
                log.error("control task %s: cannot save retained state to %s: %s (retrying)", self.task, self.path, exc)
            self.failing = True
            return False
        if self.failing:
            log.info("control task %s: retained state saved again", self.task)
        self.failing = False
        self.last = list(states)
        self.saves += 1
        return True
