"""CNC benchmark: GRBL status polls per second through edged against a hand-written pyserial loop, and the
line parsers' throughput.

The emulated GRBL controller runs in another process (``edged simulate``), on a pty pair and on TCP, so
this process's CPU time is the client's alone. Contenders, each for ``--seconds``, back to back:

  (a)  edged: ``CncDriver.read(group)`` in a loop (the event-loop stream, the line splitter, the
       strict answer matching, the status parser, the machine-state tracker, readings for 8 tags);
  (b)  a hand-written loop: pyserial (pty) or a blocking socket (TCP), write ``?``, read lines until
       one starts with ``<``, split it on ``|`` and ``,`` (no checks);
  parsers: ``grbl.parse_line`` and ``haas.parse_answer`` on realistic lines, and the splitter plus
       parser on one blob, in lines per second.

Run: ``.venv/bin/python bench/cnc.py [--seconds 3 --rounds 3 --write-md]``
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MD_SECTION = "## CNC status polling"
FIELDS = ["status.state", "mpos.x", "mpos.y", "mpos.z", "wpos.x", "fs.feed", "fs.spindle", "ov.feed"]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cell(directory: Path, port: str, name: str) -> Path:
    """A cell with one GRBL device at ``port`` and 8 status tags."""
    lines = ['[cell]', 'name = "bench"', f'state_dir = "{directory / "state"}"', 'log_level = "warning"',
             '[metrics]', 'enabled = false', f"[device.{name}]", 'driver = "cnc"', 'dialect = "grbl"',
             f'port = "{port}"', "timeout_s = 2.0"]
    for f in FIELDS:
        lines += [f"[device.{name}.tag.{f.replace('.', '_')}]", f'address = "{f}"']
    path = directory / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def edged_polls(cell_file: Path, seconds: float) -> tuple[float, float]:
    """(a): status polls per second through CncDriver.read, and CPU seconds per poll."""
    from edged.cell import load_cell

    cell = load_cell(cell_file)
    dev = next(iter(cell.devices.values()))
    drv = dev.driver
    group = dev.tags[0].scan

    async def run() -> tuple[int, float, float]:
        await drv.connect()
        n = 0
        c0, t0 = time.process_time(), time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            readings = await drv.read(group)
            assert readings[0].value is not None
            n += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        await drv.close()
        return n, wall, cpu

    n, wall, cpu = asyncio.run(run())
    return n / wall, cpu / n


def hand_polls(port: str, seconds: float) -> tuple[float, float]:
    """(b): the hand-written loop: write ``?``, read lines to the report, split it."""
    if port.startswith("tcp://"):
        host, _, p = port[6:].rpartition(":")
        sock = socket.create_connection((host, int(p)))
        f = sock.makefile("rb")
        write, readline, close = sock.sendall, f.readline, sock.close
    else:
        import serial

        ser = serial.Serial(port, 115200, timeout=2.0)
        write, readline, close = ser.write, ser.readline, ser.close
    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        write(b"?")
        while True:
            line = readline()
            if line.startswith(b"<"):
                break
        fields = line.strip()[1:-1].split(b"|")
        state = fields[0]
        mpos = [float(x) for x in fields[1].split(b":")[1].split(b",")]
        assert state and len(mpos) >= 3
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    close()
    return n / wall, cpu / n


def parser_rates(seconds: float) -> dict[str, float]:
    """Lines per second of the parsers alone, and of the splitter plus parser on a blob."""
    from edged.drivers.cnc import grbl, haas
    from edged.drivers.cnc.framing import LineSplitter

    status = ["<Idle|MPos:0.000,0.000,0.000|Bf:15,128|FS:0,0|WCO:0.000,0.000,0.000>",
              "<Run|MPos:19.656,5.000,-2.000|Bf:12,96|FS:1000,12000|Ln:42|Ov:100,100,100|A:SF>",
              "<Hold:1|MPos:19.656,5.000,-2.000|Bf:15,128|FS:0,12000|Pn:Z>", "ok"]
    answers = ["PROGRAM, O00110, IDLE, PARTS, 4523", "STATUS, BUSY", "MACRO, 5041, 12.500000",
               "P.O. TIME, 00027:50:59", "MODE, (MEM)", "M30 #1, 553"]
    out = {}
    for name, fn, lines in (("grbl.parse_line", grbl.parse_line, status),
                            ("haas.parse_answer", haas.parse_answer, answers)):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for line in lines * 250:
                fn(line)
            n += len(lines) * 250
        out[name] = n / (time.perf_counter() - t0)
    blob = ("\r\n".join(status * 250) + "\r\n").encode()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sp = LineSplitter()
        for line in sp.feed(blob):
            grbl.parse_line(line)
        n += len(status) * 250
    out["splitter + grbl.parse_line"] = n / (time.perf_counter() - t0)
    return out


def main() -> int:
    """Start the emulator process, run the contenders, print (and optionally record) the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write-md", action="store_true", help="replace the CNC section of BENCHMARKS.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edged-bench-cnc-"))
    pty_port = str(tmp / "grbl.tty")
    tcp_port = f"tcp://127.0.0.1:{free_port()}"
    serve = tmp / "serve.toml"
    text = make_cell(tmp, pty_port, "gpty").read_text() + "\n".join(
        make_cell(tmp, tcp_port, "gtcp").read_text().splitlines()[6:]) + "\n"
    serve.write_text(text)
    sim = subprocess.Popen([sys.executable, "-m", "edged", "simulate", "-c", str(serve)], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, cwd=tmp)
    try:
        assert sim.stdout is not None and "serving" in sim.stdout.readline()
        rows = []
        for label, port, cell_name in (("pty", pty_port, "gpty"), ("tcp", tcp_port, "gtcp")):
            cell = make_cell(tmp, port, cell_name)
            best_a = best_b = (0.0, 0.0)
            for _ in range(args.rounds):
                a = edged_polls(cell, args.seconds)
                b = hand_polls(port, args.seconds)
                best_a, best_b = max(best_a, a), max(best_b, b)
            rows.append((label, best_a, best_b))
        parsers = parser_rates(args.seconds)
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(10)
    lines = ["| line | (a) edged polls/s | (a) CPU µs/poll | (b) hand-written polls/s | (b) CPU µs/poll | (a)/(b) |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, (ra, ca), (rb, cb) in rows:
        lines.append(f"| {label} | {ra:,.0f} | {ca * 1e6:,.0f} | {rb:,.0f} | {cb * 1e6:,.0f} | {ra / rb:.2f} |")
    lines += ["", "| parser | lines/s |", "|---|---:|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in parsers.items()]
    table = "\n".join(lines)
    print(table)
    if args.write_md:
        md = ROOT / "BENCHMARKS.md"
        text = md.read_text()
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        body = (f"{MD_SECTION}\n\n`bench/cnc.py` (command: `.venv/bin/python bench/cnc.py --seconds {args.seconds:g} "
                f"--rounds {args.rounds}`; best of {args.rounds} rounds). The emulated GRBL controller "
                f"(`edged simulate`) runs in another process; (a) is `CncDriver.read` back to back (8 status tags: "
                f"event-loop stream, splitter, strict matching, checked parse, machine state, readings), (b) a "
                f"hand-written blocking pyserial / socket loop that writes `?`, reads to the `<...>` line and splits "
                f"it without checks. Run on {stamp}, load average {os.getloadavg()[0]:.1f} (a shared machine):\n\n"
                f"{table}\n")
        if MD_SECTION in text:
            start = text.index(MD_SECTION)
            nxt = text.find("\n## ", start + 1)
            old = text[start:nxt if nxt >= 0 else len(text)]
            notes = old[old.index("\nReading it:"):].rstrip("\n") + "\n" if "\nReading it:" in old else ""
            text = text[:start] + body + notes + (text[nxt:] if nxt >= 0 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + body
        md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
