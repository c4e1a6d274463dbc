"""Sink and command metrics, created once per registry and shared by every sink (label ``sink``)."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class SinkMetrics:
    """The metric objects of all sinks on one registry."""

    published: Counter
    messages: Counter
    acked: Counter
    connected: Gauge
    connects: Counter
    latency: Histogram
    gaps: Counter
    commands: Counter
    retried: Counter
    refusals_suppressed: Counter


_by_registry: "weakref.WeakKeyDictionary[CollectorRegistry, SinkMetrics]" = weakref.WeakKeyDictionary()


def sink_metrics(registry: CollectorRegistry) -> SinkMetrics:
    """The shared sink metrics of a registry (registered on first use)."""
    m = _by_registry.get(registry)
    if m is None:
        m = SinkMetrics(
            published=Counter("edged_sink_published_samples", "Samples a sink delivered upstream.",
                              ["sink"], registry=registry),
            messages=Counter("edged_sink_published_messages", "Messages a sink delivered upstream.",
                             ["sink"], registry=registry),
            acked=Counter("edged_sink_acked_samples", "Samples a sink acknowledged to the spool after delivery.",
                          ["sink"], registry=registry),
            connected=Gauge("edged_sink_connected", "1 while the sink is connected upstream.",
                            ["sink"], registry=registry),
            connects=Counter("edged_sink_connects", "Successful upstream connections of a sink.",
                             ["sink"], registry=registry),
            latency=Histogram("edged_sink_publish_latency_seconds",
                              "Time from publishing a message to its acknowledgement by the broker.",
                              ["sink"], buckets=LATENCY_BUCKETS, registry=registry),
            gaps=Counter("edged_sink_gaps_forwarded", "Gap records a sink forwarded upstream.",
                         ["sink"], registry=registry),
            commands=Counter("edged_commands", "Write commands received from upstream, by result and reason.",
                             ["sink", "result", "reason"], registry=registry),
            retried=Counter("edged_sink_retried_samples",
                            "Samples sent but not acknowledged before the connection dropped; they are sent "
                            "again, so a subscriber may see them twice.", ["sink"], registry=registry),
            refusals_suppressed=Counter("edged_command_refusals_suppressed",
                                        "Refused commands beyond the sink's refusal rate limit: counted in "
                                        "edged_commands_total, but neither logged nor answered.",
                                        ["sink"], registry=registry),
        )
        _by_registry[registry] = m
    return m
