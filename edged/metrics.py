"""Prometheus metrics of the runtime: collected at scrape time from devices, drivers and tag values."""
from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import os
import ssl
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _get_best_family, _get_ssl_ctx, _SilentHandler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

import edged
from edged.device import DeviceState

if TYPE_CHECKING:
    from edged.cell import MetricsSpec
    from edged.runtime import Runtime
    from edged.schema import Section

log = logging.getLogger(__name__)

POLL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def poll_histogram(registry: CollectorRegistry) -> Histogram:
    """The poll duration histogram, labelled by device and scan group."""
    return Histogram("edged_poll_duration_seconds", "Duration of one scan group poll of a device.",
                     ["device", "scan"], registry=registry, buckets=POLL_BUCKETS)


class RuntimeCollector(Collector):
    """Reads device states, driver counters, scan overruns and exported tag values at scrape time."""

    def __init__(self, runtime: "Runtime") -> None:
        self.rt = runtime

    def collect(self) -> Iterator:
        """Yield the metric families (called by prometheus-client on each scrape)."""
        rt = self.rt
        info = InfoMetricFamily("edged_build", "Version of edged and the cell it runs.")
        info.add_metric([], {"version": edged.__version__, "cell": rt.cell.name})
        yield info

        up = GaugeMetricFamily("edged_device_up", "1 when the device is connected and its last scans succeeded or "
                                                  "partly succeeded.", labels=["device", "driver"])
        state = GaugeMetricFamily("edged_device_state", "Device state: 1 for the current state.",
                                  labels=["device", "state"])
        tags = GaugeMetricFamily("edged_tags_configured", "Tags configured per device.", labels=["device"])
        req = CounterMetricFamily("edged_device_requests", "Requests sent to the device.", labels=["device"])
        vals = CounterMetricFamily("edged_device_values_read", "Values read from the device.", labels=["device"])
        errs = CounterMetricFamily("edged_device_errors", "Device errors by kind.", labels=["device", "kind"])
        tmo = CounterMetricFamily("edged_device_timeouts", "Requests that timed out.", labels=["device"])
        rec = CounterMetricFamily("edged_device_reconnects", "Successful reconnects after a loss.", labels=["device"])
        wr = CounterMetricFamily("edged_device_writes", "Writes to the device by result.", labels=["device", "result"])
        ovr = CounterMetricFamily("edged_scan_overruns", "Scan deadlines missed (skipped, never queued).",
                                  labels=["device", "scan"])
        scans = CounterMetricFamily("edged_scans", "Scan group polls completed.", labels=["device", "scan"])
        unit_up = GaugeMetricFamily("edged_device_unit_up", "1 when a part of a device that fails on its own (a unit "
                                                            "behind a gateway, a subscription) answers.",
                                    labels=["device", "unit"])
        gauges = GaugeMetricFamily("edged_device_fact", "Driver facts about a device (negotiated PDU size, server "
                                                         "service level, ...), by name.", labels=["device", "name"])
        infos: list[InfoMetricFamily] = []
        for name, runner in rt.runners.items():
            st = runner.driver.stats
            up.add_metric([name, runner.device.spec.driver],
                          1.0 if runner.state in (DeviceState.UP, DeviceState.DEGRADED) else 0.0)
            for s in DeviceState:
                state.add_metric([name, s.value], 1.0 if runner.state is s else 0.0)
            tags.add_metric([name], float(len(runner.device.tags)))
            req.add_metric([name], st.requests)
            vals.add_metric([name], st.values)
            tmo.add_metric([name], st.timeouts)
            rec.add_metric([name], st.reconnects)
            wr.add_metric([name, "ok"], st.writes)
            wr.add_metric([name, "failed"], st.writes_failed)
            for kind, n in sorted(st.errors.items()):
                errs.add_metric([name, kind], n)
            for g in runner.groups:
                ovr.add_metric([name, g.name], g.overruns)
                scans.add_metric([name, g.name], g.scans)
            for unit, ustate in sorted(st.unit_state.items()):
                unit_up.add_metric([name, unit], 1.0 if ustate == "up" else 0.0)
            facts = _driver_status(runner)
            for fact, value in sorted(facts.get("gauges", {}).items()):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    gauges.add_metric([name, str(fact)], float(value))
            info = facts.get("info")
            if info:
                fam = InfoMetricFamily("edged_device", "What a device says about itself (CPU order code, server "
                                                       "product, build), read once at connect.",
                                       labels=["device", "driver"])
                fam.add_metric([name, runner.device.spec.driver], {str(k): str(v) for k, v in info.items()})
                infos.append(fam)
        yield from (up, state, tags, req, vals, errs, tmo, rec, wr, ovr, scans, unit_up, gauges)
        yield from _merge_infos(infos)
        from edged.machine_state import metric_families

        yield from metric_families(rt.machines)  # normalized machine state per device (time in state, alarms)

        tasks = GaugeMetricFamily("edged_asyncio_tasks", "asyncio tasks alive (counted every 5 s): flat in a healthy "
                                                         "daemon.")
        tasks.add_metric([], rt.stats.tasks)
        yield tasks
        emitted = CounterMetricFamily("edged_samples_emitted", "Samples that passed report-by-exception into the "
                                                                "spool.")
        emitted.add_metric([], rt.stats.samples)
        yield emitted
        refused = CounterMetricFamily("edged_writes_refused", "Writes refused before reaching a device, by reason.",
                                      labels=["reason"])
        for reason, n in sorted(rt.stats.writes_refused.items()):
            refused.add_metric([reason], n)
        yield refused

        exported = [t for t in list(rt.cell.tags.values()) if t.export_metric]  # a reload may swap the tags
        if exported:
            g = GaugeMetricFamily("edged_tag_value", "Current value of tags configured with export_metric = true.",
                                  labels=["device", "tag", "unit"])
            q = GaugeMetricFamily("edged_tag_quality", "Quality of exported tags: 0 good, 1 uncertain, 2 bad.",
                                  labels=["device", "tag"])
            for t in exported:
                cur = rt.current.get(t.key)
                if cur is None:
                    continue
                value, quality, _ts = cur
                q.add_metric([t.device, t.name], float(quality))
                if isinstance(value, (int, float)):
                    g.add_metric([t.device, t.name, t.unit], float(value))
            yield g
            yield q


def _driver_status(runner: object) -> dict:
    """A driver's status() facts; a failing status() must never break a scrape."""
    try:
        facts = runner.driver.status()  # type: ignore[attr-defined]
    except Exception as exc:  # a driver bug: logged at debug, the scrape goes on
        log.debug("status() of %s failed: %r", getattr(runner, "name", "?"), exc)
        return {}
    return facts if isinstance(facts, dict) else {}


def _merge_infos(infos: list[InfoMetricFamily]) -> Iterator[InfoMetricFamily]:
    """One edged_device_info family with a sample per device."""
    if not infos:
        return
    merged = InfoMetricFamily("edged_device", "What a device says about itself (CPU order code, server product, "
                                              "build), read once at connect.")
    for fam in infos:
        merged.samples.extend(fam.samples)
    yield merged


def parse_metrics_security(sec: "Section", spec: "MetricsSpec") -> None:
    """Read the TLS and basic-auth keys of [metrics] into spec.

    Keys: tls_cert/tls_key, tls_client_ca, username, password_file.
    """
    spec.tls_cert = sec.get_str("tls_cert", None)
    spec.tls_key = sec.get_str("tls_key", None)
    spec.tls_client_ca = sec.get_str("tls_client_ca", None)
    spec.username = sec.get_str("username", None)
    spec.password_file = sec.get_str("password_file", None)
    for key in ("tls_cert", "tls_key", "tls_client_ca", "password_file"):
        value = getattr(spec, key)
        if value is not None and not os.path.isabs(value):
            sec.error(key, f"expected an absolute file path, found {value!r}")
    if (spec.tls_cert is None) != (spec.tls_key is None):
        sec.error("tls_key" if spec.tls_key is None else "tls_cert",
                  "missing required key (tls_cert and tls_key go together)")
    if spec.tls_client_ca is not None and spec.tls_cert is None:
        sec.error("tls_client_ca", "expected tls_cert and tls_key too (client certificates need TLS)")
    if (spec.username is None) != (spec.password_file is None):
        sec.error("password_file" if spec.password_file is None else "username",
                  "missing required key (username and password_file go together)")


def _check_basic_auth(header: str, username: str, password: str) -> bool:
    """True when an Authorization header carries exactly this user and password (constant-time compare)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, pw = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return bool(sep) and hmac.compare_digest(user.encode(), username.encode()) \
        and hmac.compare_digest(pw.encode(), password.encode())


def make_app(registry: CollectorRegistry, status: Callable[[], dict[str, Any]] | None = None,
             auth: tuple[str, str] | None = None) -> Callable:
    """The WSGI app: /status as JSON (from ``status``), every other path the Prometheus exposition.

    With ``auth`` (user, password) every request needs HTTP basic auth.
    """
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        if auth is not None and not _check_basic_auth(environ.get("HTTP_AUTHORIZATION", ""), *auth):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="edged"'),
                                                ("Content-Type", "text/plain")])
            return [b"authentication required\n"]
        if environ.get("PATH_INFO", "").rstrip("/") == "/status" and status is not None:
            try:
                body, code = json.dumps(status(), indent=1).encode() + b"\n", "200 OK"
            except TimeoutError as exc:
                body, code = json.dumps({"error": str(exc)}).encode() + b"\n", "503 Service Unavailable"
            except Exception as exc:
                log.error("status: %r", exc, exc_info=exc)
                body, code = json.dumps({"error": repr(exc)}).encode() + b"\n", "500 Internal Server Error"
            start_response(code, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [body]
        return metrics_app(environ, start_response)

    return app


def serve(registry: CollectorRegistry, host: str, port: int, *, spec: "MetricsSpec | None" = None,
          status: Callable[[], dict[str, Any]] | None = None) -> tuple[object, object]:
    """Start the metrics and status HTTP server in a thread; returns (server, thread).

    TLS and basic auth as ``spec`` says.
    """
    class Server(ThreadingWSGIServer):
        """prometheus-client's threading server, with the address family of ``host``."""

    Server.address_family, addr = _get_best_family(host, port)
    auth = None
    if spec is not None and spec.username and spec.password_file:
        from edged.secrets import read_secret_file

        auth = (spec.username, read_secret_file(spec.password_file))
    httpd = make_server(addr, port, make_app(registry, status, auth), Server, handler_class=_SilentHandler)
    if spec is not None and spec.tls_cert and spec.tls_key:
        from edged.secrets import credential_path

        ctx = _get_ssl_ctx(str(credential_path(spec.tls_cert)), str(credential_path(spec.tls_key)),
                           ssl.PROTOCOL_TLS_SERVER, spec.tls_client_ca, None, spec.tls_client_ca is not None)
        # the handshake runs in the request's thread, not in accept(): a client that connects and stalls
        # cannot block the server for everyone else
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    elif spec is not None and not _is_loopback(addr):
        log.warning("metrics and status on %s:%d without TLS%s: anyone on that network can read them",
                    host, port, "" if auth else " or basic auth")
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return addr == "localhost"
