"""Reload (SIGHUP, `systemctl reload`, `edged reload`): validate the changed cell file, then restart only what changed.

Devices are compared by the full content of their config table (tags included) and the scan groups their
tags use: unchanged devices keep their runner, connection and scan timing; changed ones restart, added
ones start, removed ones stop. Tags keep their slot (their place in the change filter and the process
image) when their table is unchanged; a changed or added tag gets a fresh slot from the spare slots the
runtime reserved, so no old state is ever read for it; when the spares run out the reload is refused
("tag layout changed: restart needed"). Control tasks are rebuilt as a whole control plane, between
cycles, when a task table or a tag it reads or writes changed. The spool and the sinks are kept; a change
to [spool], [sink.*], [metrics] or the [cell] keys other than log_level is refused (restart needed).
Sparkplug sinks rebirth (NBIRTH and every DBIRTH) when the set or definition of tags changed, and
send nothing when only device connection settings changed. An invalid file changes nothing.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged import sdnotify
from edged.cell import Cell, load_cell
from edged.errors import ConfigError

if TYPE_CHECKING:
    from edged.runtime import Runtime

log = logging.getLogger(__name__)

RESTART_KEYS_CELL = ("name", "state_dir", "heartbeat_s")  # [cell] keys whose change needs a restart


class RefuseReload(Exception):
    """The new file is valid but cannot be applied while running (a restart is needed)."""


@dataclasses.dataclass
class Plan:
    """What a reload changes."""

    added: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    restarted: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)
    control: str = "unchanged"  # "unchanged", "rebuilt", "started", "stopped"
    births: bool = False        # Sparkplug sinks need new births
    log_level: str | None = None

    @property
    def empty(self) -> bool:
        """True when nothing changes."""
        return not (self.added or self.removed or self.restarted or self.control != "unchanged"
                    or self.log_level)

    def as_dict(self) -> dict[str, list[str]]:
        """For /status."""
        out = {"added": self.added, "removed": self.removed, "restarted": self.restarted,
               "unchanged": self.unchanged, "control": [self.control]}
        if self.births:
            out["sparkplug"] = ["rebirth"]
        return out


def read_raw(path: str) -> dict[str, Any] | None:
    """The parsed TOML of a cell file, or None when it cannot be read (a built-in cell has no file)."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Reloader:
    """Applies a changed cell file to a running Runtime; one reload at a time, requests while busy are merged."""

    def __init__(self, runtime: "Runtime") -> None:
        self.rt = runtime
        self.raw = read_raw(runtime.cell.file)
        self._wanted = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._next_slot = 0  # fresh slots are never reused: a freed slot may still hold an old value
        self.ready = asyncio.Event()  # set by the runtime once start() completed

    def request(self) -> None:
        """Ask for a reload (the SIGHUP handler); it runs on the event loop as soon as the previous one ended."""
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="reload")

    async def _run(self) -> None:
        await self.ready.wait()  # a SIGHUP during start-up is applied once everything is up
        while self._wanted.is_set():
            self._wanted.clear()
            try:
                await self.reload()
            except Exception:  # a bug in reload must not take the daemon down
                log.exception("reload failed unexpectedly; the running config is unchanged where it failed")

    async def close(self) -> None:
        """Cancel a reload in progress (at shutdown)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def reload(self) -> str:
        """Validate and apply the cell file; returns "ok", "unchanged" or "failed"."""
        rt, board = self.rt, self.rt.status
        file = rt.cell.file
        record = board.reload if board is not None else None
        sdnotify.notify("RELOADING=1\nSTATUS=reloading " + file)
        log.info("reload: reading %s", file)
        errors: list[str] = []
        plan: Plan | None = None
        try:
            if self.raw is None:
                raise RefuseReload(f"{file}: the running cell was not loaded from a file, there is nothing to "
                                   f"reload")
            new = await asyncio.to_thread(load_cell, file)
            raw = await asyncio.to_thread(read_raw, file)
            if raw is None:
                raise RefuseReload(f"{file}: the file changed while it was read; try again")
            plan = self.plan(new, raw)
            await self.apply(new, raw, plan)
            from edged.secrets import warn_readable

            warn_readable(file, raw)
        except ConfigError as exc:
            errors = [str(i) for i in exc.issues]
        except RefuseReload as exc:
            errors = [str(exc)]
        result = "failed" if errors else ("unchanged" if plan is not None and plan.empty else "ok")
        if record is not None:
            import time

            record.count += 1
            record.failures += bool(errors)
            record.result, record.at, record.errors = result, time.time(), errors
            record.changes = plan.as_dict() if plan is not None and not errors else {}
            if not errors:
                board.config_loaded(file)
        if errors:
            for e in errors:
                log.error("reload refused, the running config is kept: %s", e)
        elif plan is not None:
            log.info("reload applied: %s", describe(plan))
        status = board.summary() if board is not None else ""
        sdnotify.notify(f"READY=1\nSTATUS={status}" + (" (last reload failed)" if errors and status else ""))
        return result

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, new: Cell, raw: dict[str, Any]) -> Plan:
        """Compare the running cell with the new one; raise RefuseReload for what needs a restart."""
        old, old_raw = self.rt.cell, self.raw or {}
        refuse = []
        oc, nc = old_raw.get("cell") or {}, raw.get("cell") or {}
        for key in RESTART_KEYS_CELL:
            if oc.get(key) != nc.get(key):
                refuse.append(f"[cell] {key}")
        for table in ("metrics", "spool", "sink"):
            if old_raw.get(table) != raw.get(table):
                refuse.append(f"[{table}]" if table != "sink" else "[sink.*]")
        if refuse:
            raise RefuseReload(f"{', '.join(refuse)} changed: restart needed (systemctl restart edged)")
        p = Plan()
        od, nd = old_raw.get("device") or {}, raw.get("device") or {}
        for name in new.devices:
            if name not in old.devices:
                p.added.append(name)
            elif od.get(name) != nd.get(name) or _scans_of(old, name) != _scans_of(new, name):
                p.restarted.append(name)
            else:
                p.unchanged.append(name)
        p.removed = [n for n in old.devices if n not in new.devices]
        self._assign_slots(new, raw, p)
        control_keys = _tag_refs(raw.get("task")) | _tag_refs(old_raw.get("task"))
        moved = any((old.tags.get(k) is None) != (new.tags.get(k) is None) or
                    (k in old.tags and old.tags[k].slot != new.tags[k].slot) for k in control_keys)
        if old.control is None and new.control is not None:
            p.control = "started"
        elif old.control is not None and new.control is None:
            p.control = "stopped"
        elif old.control is not None and (old_raw.get("task") != raw.get("task") or moved):
            p.control = "rebuilt"
        # a changed tag has a fresh slot, so comparing key -> slot maps finds added, removed and changed tags
        p.births = bool(p.added or p.removed) or any(
            {t.key: t.slot for t in old.devices[n].tags} != {t.key: t.slot for t in new.devices[n].tags}
            for n in p.restarted)
        if (old_raw.get("cell") or {}).get("log_level") != nc.get("log_level"):
            p.log_level = new.log_level
        return p

    def _assign_slots(self, new: Cell, raw: dict[str, Any], p: Plan) -> None:
        """Give every tag of the new cell its slot: the old one when its table (and scan group) is unchanged,
        else a fresh one; refuse when the spare slots are used up."""
        old, old_raw = self.rt.cell, self.raw or {}
        used = max((t.slot for t in old.tags.values()), default=-1) + 1
        used = max(used, self._next_slot)
        fresh = used
        od, nd = old_raw.get("device") or {}, raw.get("device") or {}
        for name, dev in new.devices.items():
            otags = ((od.get(name) or {}).get("tag") or {})
            ntags = ((nd.get(name) or {}).get("tag") or {})
            for tag in dev.tags:
                prev = old.tags.get(tag.key)
                if prev is not None and otags.get(tag.name) == ntags.get(tag.name) and \
                        old.scans[prev.scan] == new.scans[tag.scan]:
                    slot = prev.slot
                else:
                    slot, fresh = fresh, fresh + 1
                object.__setattr__(tag, "slot", slot)  # Tag is frozen; nothing has used the new one yet
                new.tags[tag.key] = tag
        if fresh > self.rt.slot_capacity:
            raise RefuseReload(f"tag layout changed: restart needed ({fresh - used} new or changed tag(s) need "
                               f"slots beyond the {self.rt.slot_capacity} reserved at start)")
        self._next_slot = fresh

    # -- applying ---------------------------------------------------------------------------------
    async def apply(self, new: Cell, raw: dict[str, Any], p: Plan) -> None:
        """Swap the cell, restart what changed, keep the rest."""
        rt, old = self.rt, self.rt.cell
        for name in p.unchanged:  # the running runner keeps its Device (same tags, same slots)
            new.devices[name] = old.devices[name]
            for t in old.devices[name].tags:
                new.tags[t.key] = t
        # one tag dict for the whole run: sinks and the control plane hold a reference to it
        tags = old.tags
        gone = [k for k in tags if k not in new.tags]
        tags.clear()
        tags.update(new.tags)
        new.tags = tags
        rt.cell = new
        if p.log_level:
            logging.getLogger().setLevel(p.log_level.upper())
        for name in p.removed + p.restarted:
            await rt.remove_device(name)
        for k in gone:
            rt.current.pop(k, None)
        if p.control != "unchanged":
            await self._restart_control(old, new)
        for name in p.restarted + p.added:
            rt.add_device(new.devices[name])
        if p.births:
            for sink in rt.sinks:
                rebirth_sparkplug(sink, tags)
        self.raw = raw

    async def _restart_control(self, old: Cell, new: Cell) -> None:
        """Stop the control plane (its cycle threads finish their cycle) and start one for the new tasks.

        Tasks the new file removes write their outputs' safe values (as at a clean stop); the others hand their
        outputs over to the new plane without a safe write in between, and their retained state (saved at
        stop, loaded at start) carries over.
        """
        rt = self.rt
        plane = rt.control
        if plane is not None:
            kept = {t.name for t in new.control.tasks} if new.control is not None else set()
            for run in list(getattr(plane, "tasks", [])):
                if run.spec.name not in kept and hasattr(plane, "remove_task"):
                    await plane.remove_task(run.spec.name)  # safe values of a task that goes away
            try:
                await plane.stop(safe_outputs=False)
            except TypeError:  # a plane without safe outputs
                await plane.stop()
            for collector in list(getattr(rt.registry, "_collector_to_names", {})):
                if getattr(collector, "plane", None) is plane:
                    rt.registry.unregister(collector)
            rt.control = None
        if new.control is not None and getattr(rt, "read_only", False):
            log.warning("read-only: the reloaded cell's control tasks do not run either")
        elif new.control is not None:
            from edged.control import ControlPlane

            rt.control = ControlPlane(new.control, new.tags, rt.registry, state_dir=new.state_dir)
            rt.control.start(asyncio.get_running_loop(), rt.append, rt.write_tag)


def rebirth_sparkplug(sink: Any, tags: dict[str, Any]) -> bool:
    """Re-declare a Sparkplug sink's metrics from the new tags and ask it for births; False for other sinks.

    The edge node's births are one NBIRTH plus a DBIRTH per device; sending only the DBIRTH of a changed
    device would need the sink's session internals, so the whole node is reborn (bdSeq unchanged).
    """
    node = getattr(sink, "node", None)
    if node is None or not hasattr(node, "_register") or not hasattr(sink, "_wake"):
        return False
    learned = [t for k, t in node.tags.items() if k in node.learned and k not in tags]
    node.tags, node.devices, node.types, node.by_alias, node._meta = {}, {}, {}, {}, {}
    for t in sorted(tags.values(), key=lambda t: t.slot):
        node._register(t)
    nxt = max((t.slot for t in tags.values()), default=-1) + 1
    for t in learned:  # control outputs: fresh aliases above every tag's
        node._register(dataclasses.replace(t, slot=nxt))
        nxt += 1
    node._next_slot = nxt
    sink._rebirth = True
    sink._wake.set()
    return True


def describe(p: Plan) -> str:
    """One line: what the reload did."""
    parts = []
    for what, names in (("added", p.added), ("restarted", p.restarted), ("removed", p.removed)):
        if names:
            parts.append(f"{what} {', '.join(names)}")
    parts.append(f"{len(p.unchanged)} device(s) untouched")
    if p.control != "unchanged":
        parts.append(f"control plane {p.control}")
    if p.births:
        parts.append("Sparkplug rebirth")
    if p.log_level:
        parts.append(f"log level {p.log_level}")
    return "; ".join(parts)


def _scans_of(cell: Cell, device: str) -> dict[str, Any]:
    """The scan group specs a device's tags use (a changed interval restarts the device)."""
    return {t.scan: cell.scans[t.scan] for t in cell.devices[device].tags}


def _tag_refs(tasks: Any) -> set[str]:
    """Every string in the task tables (tag keys among them)."""
    out: set[str] = set()
    if isinstance(tasks, dict):
        for v in tasks.values():
            out |= _tag_refs(v)
    elif isinstance(tasks, list):
        for v in tasks:
            out |= _tag_refs(v)
    elif isinstance(tasks, str):
        out.add(tasks)
    return out
