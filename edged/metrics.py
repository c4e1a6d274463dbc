"""Prometheus metrics of the runtime: collected at scrape time from devices, drivers and tag values."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

import edged
from edged.device import DeviceState

if TYPE_CHECKING:
    from edged.runtime import Runtime

log = logging.getLogger(__name__)

POLL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def poll_histogram(registry: CollectorRegistry) -> Histogram:
    """The poll duration histogram, labelled by device and scan group."""
    return Histogram("edged_poll_duration_seconds", "Duration of one scan group poll of a device.",
                     ["device", "scan"], registry=registry, buckets=POLL_BUCKETS)


class RuntimeCollector(Collector):
    """Reads device states, driver counters, scan overruns and exported tag values at scrape time."""

    def __init__(self, runtime: "Runtime") -> None:
        from edged.machine_state import attach

        self.rt = runtime
        self.machines = attach(runtime)  # normalized machine state per device (time in state, parts, alarms)

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
        gauges = GaugeMetricFamily("edged_device_gauge", "Driver facts about a device (negotiated PDU size, server "
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

        yield from metric_families(self.machines)

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

        exported = [t for t in rt.cell.tags.values() if t.export_metric]
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


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[object, object]:
    """Start the metrics HTTP server in a thread; returns (server, thread)."""
    return start_http_server(port, addr=host, registry=registry)
