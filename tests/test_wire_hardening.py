"""Issue 8, items 6-10, through the real daemon: a deeply nested cell file is a config error (exit 2);
MQTT commands through real mosquitto that are huge, deeply nested, forge log lines, carry megabytes or
come by the thousand are refused, bounded and rate-limited without dropping the broker connection."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from daemon_support import Proc, eventually, metric, scrape
from mosquitto_support import Broker, Collector, free_port, mosquitto  # noqa: F401


# -- item 6: a cell file nested hundreds deep ---------------------------------------------------------------
@pytest.mark.parametrize("nesting", ["[" * 1000 + "]" * 1000, "{a = " * 1000 + "1" + "}" * 1000],
                         ids=["arrays", "inline-tables"])
def test_a_deeply_nested_cell_file_is_a_config_error_with_exit_2(tmp_path: Path, nesting: str) -> None:
    """tomllib recurses once per level: the daemon exits 2 (systemd does not restart it) with one error line."""
    cell = tmp_path / "cell.toml"
    cell.write_text(f'[cell]\nname = "deep"\nx = {nesting}\n')
    proc = subprocess.run([sys.executable, "-m", "edged", "run", "-c", str(cell)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"{cell}: (syntax): invalid TOML: arrays or inline tables are nested too deeply to read",
        "edged: 1 config error(s)"]


# -- items 7-10: commands through mosquitto to the daemon ---------------------------------------------------
def hardening_cell(tmp_path: Path, broker: Broker, metrics_port: int) -> Path:
    """A sim device with a writable number and string; three MQTT sinks with their own command topics."""
    sinks = ""
    for name, extra in (("up", "command_rate_per_s = 100\ncommand_burst = 50"),
                        ("big", "command_rate_per_s = 100\ncommand_burst = 50\nmax_command_bytes = 1048576"),
                        ("flood", "")):
        sinks += f"""
[sink.{name}]
type = "mqtt"
port = {broker.port}
topic = "{name}/{{cell}}/{{device}}"
status_topic = "{name}/{{cell}}/status"
gap_topic = "{name}/{{cell}}/gap"
command_topic = "{name}/{{cell}}/cmd/{{device}}/{{tag}}"
response_topic = "{name}/{{cell}}/cmd_result/{{device}}/{{tag}}"
{extra}
"""
    path = tmp_path / "cell.toml"
    path.write_text(f"""
[cell]
name = "line"
state_dir = "state"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[device.m]
driver = "sim"

[device.m.tag.sp]
address = "constant:0"
type = "int32"
access = "write"
min = 0
max = 1000

[device.m.tag.label]
address = "constant:abc"
type = "string"
access = "write"
{sinks}""")
    return path


class Operator:
    """A paho publisher of commands (QoS 1, waits for each PUBACK)."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator", protocol=mqtt.MQTTv311)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def send(self, sink: str, tag: str, payload: bytes | str, qos: int = 1) -> None:
        """Publish one command payload for m.<tag> on a sink's command topic."""
        info = self.client.publish(f"{sink}/line/cmd/m/{tag}", payload, qos=qos)
        if qos:
            info.wait_for_publish(30)

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def answers(col: Collector, sink: str) -> list[dict]:
    """The command responses a sink published so far, decoded."""
    return [json.loads(m.payload) for m in col.snapshot() if m.topic.startswith(f"{sink}/line/cmd_result/")]


def answer(col: Collector, sink: str, request_id: str) -> dict:
    """Wait for the response to one request id."""
    found = eventually(lambda: [a for a in answers(col, sink) if a.get("id") == request_id], timeout=60,
                       what=f"the answer to {request_id!r} on {sink}")
    return found[0]  # type: ignore[index]


@pytest.fixture
def daemon(tmp_path: Path, mosquitto: Broker):  # noqa: F811
    """The daemon with three command sinks, a collector of everything and an operator client."""
    metrics_port = free_port()
    col = Collector(mosquitto, ["up/#", "big/#", "flood/#"], client_id="sub-hardening").start()
    op = Operator(mosquitto)
    d = Proc(["run", "-c", str(hardening_cell(tmp_path, mosquitto, metrics_port))], cwd=tmp_path)
    try:
        for sink in ("up", "big", "flood"):
            eventually(lambda s=sink: any(m.topic == f"{s}/line/status" and m.payload == b"online"
                                          for m in col.snapshot()), timeout=60, what=f"sink {sink} online")
        yield d, col, op, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        op.close()
        col.stop()
        code = d.stop(signal.SIGTERM, 60)
        assert code == 0, d.stderr[-3000:]


def test_huge_and_deeply_nested_commands_are_refused_and_the_connection_stays(daemon) -> None:
    """Item 7: 500,000-deep JSON is refused by size before parsing; deep JSON within the size is a bad request."""
    d, col, op, url = daemon
    op.send("up", "sp", b"[" * 500_000)
    op.send("up", "sp", b"[" * 3000)  # within max_command_bytes, deeper than the JSON parser recurses
    op.send("up", "sp", b'{"id": "deep-value", "value": ' + b"[" * 900 + b"]" * 900 + b"}")
    op.send("up", "sp", json.dumps({"value": 42, "id": "after"}).encode())
    after = answer(col, "up", "after")
    assert after["ok"] is True and after["value"] == 42, after
    refused = [a for a in answers(col, "up") if a["id"] == ""]
    assert len(refused) == 2, refused
    assert "larger than max_command_bytes = 4096" in refused[0]["error"]
    assert "nested too deeply" in refused[1]["error"]
    deep = answer(col, "up", "deep-value")
    assert deep["ok"] is False and len(deep["error"]) < 300, deep
    text = scrape(url)
    assert metric(text, "edged_sink_connects_total", sink="up") == 1.0, "the command dropped the connection"
    assert metric(text, "edged_commands_total", sink="up", result="refused", reason="too_large") == 1.0
    assert metric(text, "edged_commands_total", sink="up", result="refused", reason="bad_request") == 1.0
    assert "RecursionError" not in d.stderr and "Traceback" not in d.stderr


def test_a_command_id_cannot_forge_an_audit_line(daemon) -> None:
    """Item 8: ids are escaped in every audit line (accepted or refused); a newline in them starts no new line."""
    d, col, op, url = daemon
    forged = '"}\n{"inj":1'
    op.send("up", "sp", json.dumps({"value": 7, "id": forged}).encode())
    op.send("up", "nope", json.dumps({"value": "x", "id": "r2" + forged}).encode())
    assert answer(col, "up", forged)["ok"] is True
    assert answer(col, "up", "r2" + forged)["ok"] is False
    eventually(lambda: sum("edged.audit" in line and "inj" in line for line in d.err) >= 2, timeout=30,
               what="two audit lines naming the forged id")
    assert not any(line.startswith('{"inj"') for line in d.err), d.err
    audit = [line for line in d.err if "edged.audit" in line and "inj" in line]
    assert all(r"\n" in line for line in audit), audit


def test_megabyte_values_are_refused_and_never_echoed_in_full(daemon) -> None:
    """Item 9: a 1 MB string is refused for a string tag (longer than the bound); echoes stay short."""
    d, col, op, url = daemon
    huge = "A" * 1_000_000
    op.send("big", "label", json.dumps({"value": huge, "id": "big-string"}).encode())
    op.send("big", "sp", json.dumps({"value": "9" * 1_000_000, "id": "big-number"}).encode())
    op.send("big", "label", json.dumps({"value": "B" * 4096, "id": "max-string"}).encode())
    op.send("big", "label", json.dumps({"value": "B" * 4097, "id": "over-string"}).encode())
    s = answer(col, "big", "big-string")
    assert s["ok"] is False and "at most 4096 characters" in s["error"] and len(s["error"]) < 300, s["error"][:400]
    n = answer(col, "big", "big-number")
    assert n["ok"] is False and len(n["error"]) < 300, n["error"][:400]
    assert answer(col, "big", "max-string")["ok"] is True
    assert answer(col, "big", "over-string")["ok"] is False
    responses = [m for m in col.snapshot() if m.topic.startswith("big/line/cmd_result/")]
    assert max(len(m.payload) for m in responses if json.loads(m.payload)["id"] != "max-string") < 1000
    assert max(len(line) for line in d.err) < 2000, "a log line repeats a megabyte value"


def test_a_thousand_refused_commands_give_few_answers_and_log_lines(daemon) -> None:
    """Item 10: refusals share the sink's rate limit (5/s, burst 5 here); the rest are only counted."""
    d, col, op, url = daemon
    for i in range(1000):
        op.send("flood", "nope", json.dumps({"value": 1, "id": f"f{i}"}).encode(), qos=0)
    op.send("flood", "nope", json.dumps({"value": 1, "id": "last"}).encode())

    def counted() -> float:
        return metric(scrape(url), "edged_commands_total", sink="flood", result="refused", reason="unknown_tag") or 0

    eventually(lambda: counted() == 1001, timeout=60, what="1001 refusals counted")
    suppressed = metric(scrape(url), "edged_command_refusals_suppressed_total", sink="flood")
    answered = [a for a in answers(col, "flood") if a["id"].startswith("f") or a["id"] == "last"]
    logged = [line for line in d.err if "write refused" in line and "sink=flood" in line]
    assert suppressed is not None and suppressed + len(answered) == 1001, (suppressed, len(answered))
    assert suppressed >= 500, f"only {suppressed} of 1001 refusals were suppressed"
    assert len(logged) == len(answered), (len(logged), len(answered))
    assert sum("refused commands arrive faster than" in line for line in d.err) >= 1
