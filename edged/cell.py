"""Load a cell TOML file into a validated Cell: devices, tags, scan groups, spool, sinks, control tasks."""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.driver import DeviceSpec, Driver, available_drivers, load_driver
from edged.errors import ConfigError
from edged.schema import Issues, Section, valid_name
from edged.tag import DATA_TYPE_NAMES, Access, DataType, Tag

SCAN_MIN_MS = 10
SCAN_MAX_MS = 3_600_000
DEFAULT_METRICS_PORT = 9108


@dataclass(slots=True)
class ScanSpec:
    """A named scan group: interval and optional phase offset (auto when None)."""

    name: str
    interval_s: float
    phase_s: float | None = None


@dataclass(slots=True)
class MetricsSpec:
    """Where Prometheus metrics are served (loopback unless configured otherwise)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = DEFAULT_METRICS_PORT
    tls_cert: str | None = None      # HTTPS with this certificate chain and key (prometheus-client's TLS)
    tls_key: str | None = None
    tls_client_ca: str | None = None  # require client certificates signed by this CA
    username: str | None = None      # HTTP basic auth: the user and the file holding the password
    password_file: str | None = None


@dataclass(slots=True)
class Device:
    """A configured device: its spec, its driver instance (not connected) and its tags."""

    spec: DeviceSpec
    driver: Driver
    tags: list[Tag]
    state: Any = None  # edged.machine_state.StateRules from [device.<name>.state], or None


@dataclass(slots=True)
class Cell:
    """A whole validated cell config."""

    name: str
    file: str
    state_dir: Path
    metrics: MetricsSpec
    scans: dict[str, ScanSpec]
    devices: dict[str, Device]
    tags: dict[str, Tag]
    spool: Any = None
    sinks: list[Any] = field(default_factory=list)
    control: Any = None
    log_level: str = "info"
    heartbeat_s: float = 0.0
    simulate: dict[str, Any] = field(default_factory=dict)  # tag key -> value generator for `edged simulate`


def load_cell(path: str | os.PathLike[str]) -> Cell:
    """Read and validate a cell file; raise ConfigError listing every issue."""
    file = str(path)
    issues = Issues(file)
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        issues.add("(file)", f"cannot read the file: {exc.strerror or exc}")
        raise ConfigError(issues.items) from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        issues.add("(file)", f"expected UTF-8 text: {exc}")
        raise ConfigError(issues.items) from None
    except tomllib.TOMLDecodeError as exc:
        issues.add(*_syntax_issue(str(exc)))
        raise ConfigError(issues.items) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's int conversion limit)
        issues.add("(syntax)", f"invalid TOML value: {exc}")
        raise ConfigError(issues.items) from None
    except RecursionError:  # arrays or inline tables nested hundreds deep: tomllib recurses per level
        issues.add("(syntax)", "invalid TOML: arrays or inline tables are nested too deeply to read")
        raise ConfigError(issues.items) from None
    return parse_cell(data, file, base_dir=Path(path).resolve().parent)


def _syntax_issue(message: str) -> tuple[str, str]:
    """Turn a tomllib error into (dotted path, message); duplicate tables get their path."""
    m = re.match(r"Cannot declare \((.*)\) twice \((at line \d+, column \d+)\)", message)
    if m:
        parts = [p.strip().strip("'\"") for p in m.group(1).split(",") if p.strip()]
        kind = {"device": "device", "tag": "tag", "sink": "sink", "scan": "scan group", "task": "task",
                "block": "block"}.get(parts[-2] if len(parts) > 1 else "", "table")
        return ".".join(parts), f"duplicate {kind} {parts[-1]!r}: this table is declared twice ({m.group(2)})"
    m = re.match(r"Cannot overwrite a value \((at line \d+, column \d+)\)", message)
    if m:
        return "(syntax)", f"duplicate key: a key is set twice ({m.group(1)})"
    return "(syntax)", f"invalid TOML: {message}"


def parse_cell(data: dict[str, Any], file: str, base_dir: Path | None = None) -> Cell:
    """Validate a parsed TOML document; raise ConfigError listing every issue."""
    issues = Issues(file)
    root = Section(data, "", issues)

    cell_sec = root.section("cell", required=True)
    name = "cell"
    state_dir = Path(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "var")
    default_scan_ms = 1000
    log_level = "info"
    heartbeat_s: float | None = 60.0
    if cell_sec is not None:
        name = cell_sec.get_str("name") or "cell"
        if cell_sec.has("name") and isinstance(cell_sec.data["name"], str) and cell_sec.data["name"].strip() \
                and not valid_name(name):
            cell_sec.error("name", "expected a name of letters, digits, '_' or '-' (it becomes an MQTT topic "
                                   f"level and the Sparkplug edge node id), found {name!r}")
        sd = cell_sec.get_str("state_dir", None)
        if sd is not None and "\0" in sd:
            cell_sec.error("state_dir", f"expected a path without NUL characters, found {sd!r}")
        elif sd is not None:
            state_dir = Path(sd)
        default_scan_ms = cell_sec.get_int("default_scan_ms", 1000, min=SCAN_MIN_MS, max=SCAN_MAX_MS) or 1000
        log_level = cell_sec.get_str("log_level", "info", choices=["debug", "info", "warning", "error"]) or "info"
        heartbeat_s = cell_sec.get_float("heartbeat_s", 60.0, min=0.0, max=86400.0)
        cell_sec.finish()
    if not state_dir.is_absolute() and base_dir is not None:
        # a relative state_dir in the file is relative to the file's folder, also under systemd
        if cell_sec is not None and cell_sec.has("state_dir"):
            state_dir = base_dir / state_dir
        elif "STATE_DIRECTORY" not in os.environ:
            state_dir = Path.cwd() / state_dir

    metrics = _parse_metrics(root.section("metrics"))
    scans = _parse_scans(root.sections("scan"), default_scan_ms)
    devices, tags = _parse_devices(root, scans, default_scan_ms)

    from edged.spool.config import parse_spool
    from edged.sinks.config import parse_sinks
    from edged.control.config import parse_control

    spool = parse_spool(root.section("spool"))
    sinks = parse_sinks(root.sections("sink"), tags)
    control = parse_control(root.sections("task"), tags)
    from edged.simulation.generators import parse_simulate

    simulate = parse_simulate(root.sections("simulate"), tags, base_dir)
    root.finish()
    issues.raise_if_any()
    return Cell(name=name, file=file, state_dir=state_dir, metrics=metrics, scans=scans, devices=devices,
                tags=tags, spool=spool, sinks=sinks, control=control, log_level=log_level,
                heartbeat_s=heartbeat_s if heartbeat_s is not None else 60.0, simulate=simulate)


def _parse_metrics(sec: Section | None) -> MetricsSpec:
    spec = MetricsSpec()
    if sec is None:
        return spec
    spec.enabled = sec.get_bool("enabled", True)
    listen = sec.get_str("listen", f"127.0.0.1:{DEFAULT_METRICS_PORT}")
    if listen is not None:
        host, sep, port = listen.rpartition(":")
        if not sep or not (port.isascii() and port.isdigit()) or not (0 <= int(port) <= 65535) or not host:
            sec.error("listen", f"expected HOST:PORT such as \"127.0.0.1:{DEFAULT_METRICS_PORT}\", found {listen!r}")
        else:
            spec.host, spec.port = host.strip("[]"), int(port)
    from edged.metrics import parse_metrics_security

    parse_metrics_security(sec, spec)
    sec.finish()
    return spec


def _parse_scans(secs: dict[str, Section], default_scan_ms: int) -> dict[str, ScanSpec]:
    scans = {"default": ScanSpec("default", default_scan_ms / 1000.0)}
    for name, sec in secs.items():
        interval = sec.get_int("interval_ms", min=SCAN_MIN_MS, max=SCAN_MAX_MS)
        phase = sec.get_int("phase_ms", None, min=0, max=SCAN_MAX_MS)
        sec.finish()
        if interval is None:
            continue
        if phase is not None and phase >= interval:
            sec.error("phase_ms", f"expected a phase smaller than interval_ms ({interval}), found {phase}")
            continue
        scans[name] = ScanSpec(name, interval / 1000.0, None if phase is None else phase / 1000.0)
    return scans


def _parse_devices(root: Section, scans: dict[str, ScanSpec],
                   default_scan_ms: int) -> tuple[dict[str, Device], dict[str, Tag]]:
    devices: dict[str, Device] = {}
    tags: dict[str, Tag] = {}
    known = available_drivers()
    slot = 0
    for dname, dsec in root.sections("device").items():
        kind = dsec.get_str("driver")
        spec = DeviceSpec(
            name=dname,
            driver=kind or "",
            timeout_s=dsec.get_float("timeout_s", 1.0, min=0.01, max=60.0) or 1.0,
            backoff_initial_s=dsec.get_float("backoff_initial_s", 0.5, min=0.01, max=600.0) or 0.5,
            backoff_max_s=dsec.get_float("backoff_max_s", 30.0, min=0.1, max=3600.0) or 30.0,
            description=dsec.get_str("description", "", nonempty=False) or "",
        )
        if spec.backoff_max_s < spec.backoff_initial_s:
            dsec.error("backoff_max_s", f"expected at least backoff_initial_s ({spec.backoff_initial_s}), "
                                        f"found {spec.backoff_max_s}")
        cls: type[Driver] | None = None
        if kind is not None:
            if kind not in known:
                dsec.error("driver", f"expected one of the installed drivers ({', '.join(sorted(known))}), "
                                     f"found {kind!r}")
            else:
                cls = load_driver(kind)
        dev_tags: list[Tag] = []
        tag_secs = dsec.sections("tag")
        for tname, tsec in tag_secs.items():
            tag = _parse_tag(dname, tname, tsec, cls, scans, slot)
            if tag is not None:
                dev_tags.append(tag)
                tags[tag.key] = tag
                slot += 1
        if not tag_secs and cls is not None:
            dsec.error("tag", "expected at least one tag table (device.<name>.tag.<tag>)")
        # read only when present, so that "unknown key" messages of drivers keep listing their own keys
        state_sec = dsec.section("state") if dsec.has("state") else None
        rules = None
        if state_sec is not None:
            from edged.machine_state import parse_state_table

            rules = parse_state_table(state_sec, set(tag_secs))
        if cls is None:
            dsec.finish(also_known=dsec.keys())
            continue
        spec.intervals = {t.scan: scans[t.scan].interval_s for t in dev_tags}
        try:
            driver = cls.from_config(spec, dsec, dev_tags)
        except ConfigError as exc:  # drivers may raise instead of recording
            root.issues.items.extend(exc.issues)
            driver = None
        dsec.finish()
        if driver is not None:
            devices[dname] = Device(spec, driver, dev_tags, rules)
    _validate_per_kind(devices, root)
    return devices, tags


def _validate_per_kind(devices: dict[str, Device], root: Section) -> None:
    """Give each driver kind its cell-level check across its devices (e.g. one serial port, one baud rate)."""
    by_kind: dict[type[Driver], list[Driver]] = {}
    for dev in devices.values():
        by_kind.setdefault(type(dev.driver), []).append(dev.driver)
    for cls, drivers in by_kind.items():
        cls.validate_cell(drivers, lambda path, message: root.issues.add(path, message))


def _parse_tag(dname: str, tname: str, sec: Section, cls: type[Driver] | None,
               scans: dict[str, ScanSpec], slot: int) -> Tag | None:
    type_name = sec.get_str("type", None, choices=DATA_TYPE_NAMES)
    dtype = DataType(type_name) if type_name else None
    access_name = sec.get_str("access", "read", choices=["read", "write"])
    scale = sec.get_float("scale", 1.0)
    offset = sec.get_float("offset", 0.0)
    if scale == 0.0:
        sec.error("scale", "expected a non-zero number, found 0")
    unit = sec.get_str("unit", "", nonempty=False)
    description = sec.get_str("description", "", nonempty=False)
    deadband = sec.get_float("deadband", 0.0, min=0.0)
    export = sec.get_bool("export_metric", False)
    vmin = sec.get_float("min", None)
    vmax = sec.get_float("max", None)
    if vmin is not None and vmax is not None and vmin > vmax:
        sec.error("max", f"expected max >= min ({vmin}), found {vmax}")
    scan = sec.get_str("scan", None)
    scan_ms = sec.get_int("scan_ms", None, min=SCAN_MIN_MS, max=SCAN_MAX_MS)
    group = "default"
    if scan is not None and scan_ms is not None:
        sec.error("scan_ms", "expected either scan (a group name) or scan_ms, not both")
    elif scan is not None:
        if scan not in scans:
            sec.error("scan", f"expected a scan group defined under [scan] ({', '.join(sorted(scans))}), "
                              f"found {scan!r}")
        else:
            group = scan
    elif scan_ms is not None:
        group = f"{scan_ms}ms"
        spec = scans.setdefault(group, ScanSpec(group, scan_ms / 1000.0))
        if round(spec.interval_s * 1000) != scan_ms:  # a [scan.<N>ms] group with another interval
            sec.error("scan_ms", f"expected an interval that agrees with scan group {group!r} (the group of "
                                 f"scan_ms = {scan_ms}), found that [scan.{group}] has interval_ms = "
                                 f"{round(spec.interval_s * 1000)}: rename that group")
            group = "default"
    if cls is None:
        sec.finish(also_known=sec.keys())
        return None
    parsed = cls.parse_tag(sec, dtype)
    sec.finish()
    if parsed is None:
        return None
    addr, dtype = parsed[0], parsed[1]
    dims: tuple[int, ...] = tuple(parsed[2]) if len(parsed) > 2 else ()
    if export and (dims or not (dtype.is_numeric or dtype in (DataType.BOOL, DataType.ANY))):
        what = "an array" if dims else f"type {dtype.value!r}"
        sec.error("export_metric", f"expected a numeric or bool tag for a Prometheus gauge, found {what}")
    if (vmin is not None or vmax is not None) and not (dtype.is_numeric or dtype is DataType.ANY):
        sec.error("min" if vmin is not None else "max", f"expected min/max only on numeric tags, found type {dtype.value!r}")
    if deadband and not (dtype.is_numeric or dtype is DataType.ANY):
        sec.error("deadband", f"expected a deadband only on numeric tags, found type {dtype.value!r}")
    return Tag(
        device=dname, name=tname, address=str(sec.data.get("address", "")), dtype=dtype, scan=group, addr=addr,
        access=Access(access_name or "read"), scale=scale if scale not in (None, 0.0) else 1.0,
        offset=offset or 0.0, unit=unit or "", description=description or "", deadband=deadband or 0.0,
        export_metric=bool(export), min=vmin, max=vmax, slot=slot, dims=dims,
    )
