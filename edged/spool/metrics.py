"""Prometheus collector for the spool: depth, bytes, oldest age, drops, gaps, per-sink lag and acks, writer commits."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
                                    SummaryMetricFamily)
from prometheus_client.registry import Collector

from edged.spool.spool import COMMIT_BUCKETS

if TYPE_CHECKING:
    from edged.spool.spool import Spool


class SpoolCollector(Collector):
    """Reads Spool.stats() at scrape time (no work on the sample path)."""

    def __init__(self, spool: "Spool") -> None:
        self.spool = spool

    def collect(self) -> Iterator[Metric]:
        """Yield the spool metric families."""
        st = self.spool.stats()
        yield GaugeMetricFamily("edged_spool_depth_samples", "Samples in the spool not yet acked by every sink (including those waiting for a commit).",
                                value=st.depth_samples)
        yield GaugeMetricFamily("edged_spool_bytes", "Encoded bytes of the samples held in the spool.",
                                value=st.depth_bytes)
        yield GaugeMetricFamily("edged_spool_oldest_sample_age_seconds",
                                "Time the oldest sample has waited in the spool.", value=st.oldest_age_s)
        yield CounterMetricFamily("edged_spool_appended_samples", "Samples stored in the spool.",
                                  value=st.appended_total)
        yield CounterMetricFamily("edged_spool_dropped_samples",
                                  "Samples dropped (spool full or too old) before every sink acked them.",
                                  value=st.dropped_total)
        yield CounterMetricFamily("edged_spool_gaps", "Gap records created for dropped samples.",
                                  value=st.gaps_total)
        yield SummaryMetricFamily("edged_spool_append_duration_seconds",
                                  "Time spent in Spool.append: the in-memory hand-over to the writer thread "
                                  "(acquisition waits for it; it never waits for the disk).",
                                  count_value=st.appends_total, sum_value=st.append_seconds_total)
        cum, buckets = 0, []
        for bound, n in zip((*map(str, COMMIT_BUCKETS), "+Inf"), st.commit_buckets):
            cum += n
            buckets.append((bound, cum))
        yield HistogramMetricFamily("edged_spool_commit_duration_seconds",
                                    "Duration of the writer thread's commits (SQLite transaction and, with "
                                    "durability \"batch\", its fsync).", buckets=buckets,
                                    sum_value=st.commit_seconds_total)
        yield CounterMetricFamily("edged_spool_commits", "Commits by the spool's writer thread (failed ones too).",
                                  value=st.commits_total)
        yield CounterMetricFamily("edged_spool_commit_failures",
                                  "Commits that failed (disk full, I/O error); their new samples became gaps.",
                                  value=st.commit_failures_total)
        yield GaugeMetricFamily("edged_spool_queue_samples",
                                "Samples handed over by acquisition, waiting for the writer thread.",
                                value=st.queue_samples)
        yield GaugeMetricFamily("edged_spool_uncommitted_samples",
                                "Samples not yet committed (queued, or in the commit under way); a kill -9 "
                                "loses at most these.", value=st.uncommitted_samples)
        yield CounterMetricFamily("edged_spool_queue_dropped_samples",
                                  "Samples dropped because the hand-over queue was full (also counted in "
                                  "edged_spool_dropped_samples_total and reported as gaps).",
                                  value=st.queue_dropped_total)
        lag = GaugeMetricFamily("edged_spool_sink_lag_samples", "Samples in the spool a sink has not acked.",
                                labels=["sink"])
        acked = CounterMetricFamily("edged_spool_acked_samples", "Samples a sink acknowledged to the spool.",
                                    labels=["sink"])
        for name, value in st.lag_samples.items():
            lag.add_metric([name], value)
        for name, value in st.acked_total.items():
            acked.add_metric([name], value)
        yield lag
        yield acked

    def describe(self) -> Iterator[Metric]:
        """No up-front description (collect is cheap; registering calls it once)."""
        return iter(())


def register_spool_metrics(spool: "Spool", registry: CollectorRegistry) -> None:
    """Register the spool's collector on a registry."""
    registry.register(SpoolCollector(spool))
