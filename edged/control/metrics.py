"""Prometheus collector of the control plane: read at scrape time from the C counters and histograms."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

if TYPE_CHECKING:
    from edged.control.plane import ControlPlane

LATENESS_BUCKETS_S = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0)
EXECUTION_BUCKETS_S = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0)


def histogram_family(name: str, doc: str, rows: list[tuple[str, object]], which: str,
                     bounds_s: tuple[float, ...]) -> HistogramMetricFamily:
    """A histogram family (label task) from the C histograms of cycle threads."""
    fam = HistogramMetricFamily(name, doc, labels=["task"])
    les_ns = [round(b * 1e9) for b in bounds_s]
    for task, thread in rows:
        counts, total, sum_ns = thread.histogram(which, les_ns)  # type: ignore[attr-defined]
        buckets = [(repr(b), float(c)) for b, c in zip(bounds_s, counts)]
        buckets.append(("+Inf", float(max(total, counts[-1] if counts else 0))))
        fam.add_metric([task], buckets, sum_value=sum_ns / 1e9)
    return fam


class ControlCollector:
    """Cycle lateness and execution histograms, overruns, real-time grants, ring and write counters."""

    def __init__(self, plane: "ControlPlane") -> None:
        self.plane = plane

    def collect(self) -> Iterator[Metric]:
        """Yield every control metric (called by prometheus_client at scrape time)."""
        runs = self.plane.tasks
        rows = [(r.spec.name, r.thread) for r in runs]
        yield histogram_family("edged_cycle_lateness_seconds", "Wake-up time of a cycle minus its deadline.",
                               rows, "lateness", LATENESS_BUCKETS_S)
        yield histogram_family("edged_cycle_execution_seconds", "Run time of one cycle (inputs, blocks, outputs).",
                               rows, "execution", EXECUTION_BUCKETS_S)
        cycles = CounterMetricFamily("edged_cycle_cycles", "Cycles run.", labels=["task"])
        overruns = CounterMetricFamily("edged_cycle_overruns", "Cycles that ended after the next deadline.",
                                       labels=["task"])
        skipped = CounterMetricFamily("edged_cycle_skipped", "Cycles skipped after overruns (policy skip).",
                                      labels=["task"])
        stale = CounterMetricFamily("edged_cycle_inputs_stale",
                                    "Cycles that kept their previous inputs because the image was being written.",
                                    labels=["task"])
        period = GaugeMetricFamily("edged_cycle_period_seconds", "Configured cycle period.", labels=["task"])
        running = GaugeMetricFamily("edged_cycle_running", "1 while the task's cycle thread runs.", labels=["task"])
        requested = GaugeMetricFamily("edged_cycle_realtime_requested",
                                      "1 when the task asks for priority, affinity, mlock or a CPU wake-up latency.", labels=["task", "what"])
        granted = GaugeMetricFamily("edged_cycle_realtime_granted",
                                    "1 when the OS granted what the task asked for (0 if refused or not asked).",
                                    labels=["task", "what"])
        samples = CounterMetricFamily("edged_control_samples", "Block output samples delivered.", labels=["task"])
        dropped = CounterMetricFamily("edged_control_samples_dropped", "Samples dropped because the ring was full.",
                                      labels=["task"])
        writes = CounterMetricFamily("edged_control_writes", "Block outputs written to tags.", labels=["task", "tag"])
        failed = CounterMetricFamily("edged_control_write_failures", "Block output writes that failed.",
                                     labels=["task", "tag"])
        retain_saves = CounterMetricFamily("edged_control_retain_saves",
                                           "Saves of the task's retained block state to the state folder.",
                                           labels=["task"])
        retain_failing = GaugeMetricFamily("edged_control_retain_failing",
                                           "1 while saving the task's retained state fails.", labels=["task"])
        for r in runs:
            name, th, ts = r.spec.name, r.thread, r.spec
            if r.retain is not None:
                retain_saves.add_metric([name], r.retain.saves)
                retain_failing.add_metric([name], 1.0 if r.retain.failing else 0.0)
            cycles.add_metric([name], th.cycles)
            overruns.add_metric([name], th.overruns)
            skipped.add_metric([name], th.skipped)
            stale.add_metric([name], r.program.stale_inputs)
            period.add_metric([name], ts.period_us / 1e6)
            running.add_metric([name], 1.0 if th.running else 0.0)
            for what, asked, rc in (("priority", ts.priority > 0, th.prio_errno),
                                    ("affinity", ts.cpu >= 0, th.cpu_errno),
                                    ("mlock", ts.mlock, self.plane.mlock_errno),
                                    ("cpu_dma_latency", ts.cpu_dma_latency_us >= 0, self.plane.dma_latency_errno)):
                requested.add_metric([name, what], 1.0 if asked else 0.0)
                granted.add_metric([name, what], 1.0 if asked and rc == 0 else 0.0)
            samples.add_metric([name], r.samples)
            dropped.add_metric([name], r.ring.dropped)
            for st in r.out_states:
                writes.add_metric([name, st.tag.key], st.writes)
                failed.add_metric([name, st.tag.key], st.failures)
        yield from (cycles, overruns, skipped, stale, period, running, requested, granted, samples, dropped, writes, failed,
                    retain_saves, retain_failing)
