"""Ask the running daemon to reload its cell file (SIGHUP) and wait for the result: exit 0 applied, 1 refused."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import urllib.error

from edged.commands.status import DEFAULT_CELL, fetch, status_url


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged reload`."""
    p.add_argument("-c", "--config", default=DEFAULT_CELL, metavar="CELL.toml",
                   help=f"cell file of the running daemon (default {DEFAULT_CELL})")
    p.add_argument("--pid", type=int, default=None,
                   help="daemon's process id (systemd's $MAINPID; default: the pid /status reports)")
    p.add_argument("--url", default=None, help="status URL instead of the cell's [metrics] listen address")
    p.add_argument("--cafile", default=None, help="CA of the daemon's TLS certificate (see edged status)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the result (default 30)")


def run(args: argparse.Namespace) -> int:
    """Signal the daemon, then poll /status until its reload counter moves and print the outcome."""
    try:
        url, headers, ctx = (args.url, {}, None) if args.url else status_url(args.config, args.cafile)
    except SystemExit as exc:  # metrics disabled: no status to wait on
        url = None
        print(exc, file=sys.stderr)
    before = None
    if url is not None:
        try:
            before = fetch(url, headers, ctx, 5.0)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            print(f"edged reload: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
            if args.pid is None:
                return 1
    pid = args.pid or (before or {}).get("pid")
    if not pid:
        print("edged reload: no pid (pass --pid)", file=sys.stderr)
        return 1
    try:
        os.kill(int(pid), signal.SIGHUP)
    except OSError as exc:
        print(f"edged reload: cannot signal pid {pid}: {exc.strerror}", file=sys.stderr)
        return 1
    if before is None:
        print(f"sent SIGHUP to {pid}; the result is in the log (no status endpoint to wait on)")
        return 0
    count = before["reload"]["count"]
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            now = fetch(url, headers, ctx, 5.0)
        except (urllib.error.URLError, OSError, ValueError):
            continue
        rl = now["reload"]
        if rl["count"] > count:
            if rl["last_result"] == "failed":
                print("reload refused; the running config is kept:", file=sys.stderr)
                for e in rl["errors"]:
                    print(f"  {e}", file=sys.stderr)
                return 1
            ch = rl.get("changes") or {}
            done = "; ".join(f"{k} {', '.join(v)}" for k, v in ch.items()
                             if v and k != "unchanged" and v != ["unchanged"])
            print(f"reload {rl['last_result']}: {done or 'nothing to restart'}")
            return 0
    print(f"edged reload: no result within {args.timeout:.0f} s (see the log)", file=sys.stderr)
    return 1
