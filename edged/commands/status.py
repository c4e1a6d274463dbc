"""Show what a running daemon is doing: devices, cycle tasks, spool, sinks, config and the last reload."""
from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
import tomllib
import urllib.error
import urllib.request
from typing import Any

from edged.cell import load_cell

DEFAULT_CELL = "/etc/edged/cell.toml"
STATE_COLOURS = {"up": "32", "connected": "32", "ready": "32", "ok": "32", "unchanged": "32", "degraded": "33",
                 "connecting": "33", "silent": "33", "backoff": "33", "down": "31", "disconnected": "31",
                 "failed": "31"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged status`."""
    p.add_argument("-c", "--config", default=DEFAULT_CELL, metavar="CELL.toml",
                   help=f"cell file: where the daemon serves /status (default {DEFAULT_CELL})")
    p.add_argument("--url", default=None, help="status URL instead (e.g. http://127.0.0.1:9108/status)")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.add_argument("--cafile", default=None, help="CA that signed the daemon's TLS certificate (default: the "
                                                  "system's CAs and the certificate itself, if self-signed)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon (default 5)")


def metrics_of(cell_file: str) -> Any:
    """Only the [metrics] table of a cell file: `edged reload` must find the daemon while the rest of the
    file is broken (that is what it reports)."""
    from edged.cell import _parse_metrics
    from edged.errors import ConfigError
    from edged.schema import Issues, Section

    try:
        data = tomllib.loads(open(cell_file, encoding="utf-8").read())
    except (OSError, ValueError):
        return load_cell(cell_file).metrics  # reports the problem as a config error
    issues = Issues(cell_file)
    sec = data.get("metrics")
    spec = _parse_metrics(Section(sec, "metrics", issues) if isinstance(sec, dict) else None)
    if issues.items:
        raise ConfigError(issues.items)
    return spec


def status_url(cell_file: str, cafile: str | None = None) -> tuple[str, dict[str, str], ssl.SSLContext | None]:
    """The /status URL of a cell's daemon, its auth header and TLS context (from the cell's [metrics])."""
    from edged.secrets import read_secret_file

    m = metrics_of(cell_file)
    if not m.enabled:
        raise SystemExit(f"edged status: {cell_file}: [metrics] enabled = false: the daemon serves no status")
    host = "127.0.0.1" if m.host in ("0.0.0.0", "") else "::1" if m.host == "::" else m.host
    host = f"[{host}]" if ":" in host else host
    headers = {}
    if m.username and m.password_file:
        token = base64.b64encode(f"{m.username}:{read_secret_file(m.password_file)}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    ctx = None
    if m.tls_cert:
        ctx = ssl.create_default_context(cafile=cafile)
        if cafile is None:
            try:
                ctx.load_verify_locations(m.tls_cert)  # a self-signed certificate is its own CA
            except (OSError, ssl.SSLError):
                pass
        ctx.check_hostname = False  # the cell names the address, which the certificate may not list
        if m.tls_client_ca and m.tls_key:
            ctx.load_cert_chain(m.tls_cert, m.tls_key)
    return f"{'https' if m.tls_cert else 'http'}://{host}:{m.port}/status", headers, ctx


def fetch(url: str, headers: dict[str, str], ctx: ssl.SSLContext | None, timeout: float) -> dict[str, Any]:
    """GET the status JSON."""
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
        return json.loads(r.read())


def _ago(iso_time: str | None, now: str) -> str:
    if not iso_time:
        return "-"
    from datetime import datetime

    secs = (datetime.fromisoformat(now.replace("Z", "+00:00")) -
            datetime.fromisoformat(iso_time.replace("Z", "+00:00"))).total_seconds()
    if secs < 120:
        return f"{secs:.1f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    return f"{secs / 3600:.1f}h ago"


def table(rows: list[list[str]], colour: bool, state_col: int | None = None) -> list[str]:
    """Left-aligned columns; the state column coloured when ``colour``."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        cells = []
        for i, v in enumerate(r):
            text = v.ljust(widths[i]) if i < len(r) - 1 else v
            if colour and n == 0:
                text = f"\033[1m{text}\033[0m"
            elif colour and i == state_col and v in STATE_COLOURS:
                text = f"\033[{STATE_COLOURS[v]}m{text}\033[0m"
            cells.append(text)
        out.append("  ".join(cells).rstrip())
    return out


def render(s: dict[str, Any], colour: bool) -> str:
    """The status as readable tables."""
    now = s.get("time") or ""
    cfg = s.get("config", {})
    lines = [f"cell {s['cell']}  edged {s.get('version')}  pid {s.get('pid')}  up {s.get('uptime_s', 0):.0f}s",
             f"summary: {s.get('summary', '')}",
             f"config: {cfg.get('file')}  sha256 {str(cfg.get('sha256'))[:12]}  loaded {_ago(cfg.get('loaded_at'), now)}"]
    rl = s.get("reload", {})
    if rl.get("count"):
        lines.append(f"reload: {rl['count']} ({rl.get('failures', 0)} failed), last {rl.get('last_result')} "
                     f"{_ago(rl.get('last_at'), now)}")
        lines += [f"  error: {e}" for e in rl.get("errors") or []]
    rows = [["DEVICE", "DRIVER", "STATE", "SINCE", "LAST GOOD READ", "TAGS", "LAST ERROR"]]
    for name, d in sorted(s.get("devices", {}).items()):
        err = d.get("last_error") or ""
        if err and d.get("last_error_at"):
            err = f"{err} ({_ago(d['last_error_at'], now)})"
        rows.append([name, d.get("driver", ""), d.get("state", ""), _ago(d.get("since"), now),
                     _ago(d.get("last_good_read"), now), str(d.get("tags", "")), err])
        for unit, st in sorted((d.get("units") or {}).items()):
            rows.append([f"  {unit}", "", st, "", "", "", ""])
        for k, v in sorted((d.get("driver_status") or {}).items()):
            rows.append([f"  {k}", "", "", "", "", "", str(v)])
    lines += ["", *table(rows, colour, state_col=2)]
    tasks = s.get("cycle_tasks") or {}
    if tasks:
        rows = [["CYCLE TASK", "PERIOD", "LATENESS p99", "OVERRUNS", "CYCLES"]]
        for name, t in sorted(tasks.items()):
            p99 = t.get("lateness_p99_s")
            rows.append([name, f"{t['period_s'] * 1000:g} ms",
                         "-" if p99 is None else (f"<= {p99 * 1000:g} ms" if isinstance(p99, float) else str(p99)),
                         str(t.get("overruns")), str(t.get("cycles"))])
        lines += ["", *table(rows, colour)]
    sp = s.get("spool")
    if sp:
        lines += ["", f"spool: {sp['depth_samples']} samples ({sp['depth_bytes']} bytes), oldest "
                      f"{sp['oldest_age_s']:.1f}s, {sp['commit_rate_per_s']:g} samples/s, dropped {sp['dropped_total']}"]
    sinks = s.get("sinks") or {}
    if sinks:
        rows = [["SINK", "TYPE", "STATE", "LAG", "LAST ACK"]]
        for name, k in sorted(sinks.items()):
            rows.append([name, k.get("type", ""), k.get("state", ""), str(k.get("lag_samples")),
                         _ago(k.get("last_ack"), now)])
        lines += ["", *table(rows, colour, state_col=2)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Fetch /status and print it; exit 1 when the daemon does not answer."""
    if args.url:
        url, headers, ctx = args.url, {}, None
    else:
        url, headers, ctx = status_url(args.config, args.cafile)
    try:
        data = fetch(url, headers, ctx, args.timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"edged status: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data, colour=sys.stdout.isatty()))
    return 0
