"""Prometheus metrics of a running indexer, read from its counters at each scrape.

Nothing here is updated on the hot path: the engine already keeps plain counters
(``Indexer.measures``, the writer's totals, each chain's progress), and a custom collector
turns them into metric families when /metrics is asked for. The registry is the app's own, so
two apps in one process (tests) never clash.

A source may expose counters as ``source.stats``, an object or a dict with any of:
``requests`` (int, requests sent), ``errors`` (int, failed requests, retried or not),
``request_seconds`` (float, summed latency of all requests) and ``retries`` (int).
Absent keys are simply not reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

SOURCE_STATS = {
    "requests": ("evmflow_source_requests", "Requests the source sent."),
    "errors": ("evmflow_source_errors", "Requests of the source that failed."),
    "retries": ("evmflow_source_retries", "Requests the source sent again."),
    "request_seconds": (
        "evmflow_source_request_seconds",
        "Seconds spent waiting for the source's answers, summed.",
    ),
}


def _stat(stats: Any, name: str) -> Any:
    if isinstance(stats, dict):
        return stats.get(name)
    return getattr(stats, name, None)


class IndexerCollector(Collector):
    def __init__(self, indexer: Any) -> None:
        self.indexer = indexer

    def collect(self) -> Iterator[Metric]:
        yield from self.chain_metrics()
        for kind, name, doc, value in self.totals():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc, value=value)

    def totals(self) -> list[tuple[str, str, str, float]]:
        """(counter or gauge, name, help, value) of the whole process."""
        indexer = self.indexer
        m = indexer.measures
        elapsed = time.perf_counter() - m.started
        rows = [
            ("counter", "evmflow_events", "Events handled by this process.", m.events),
            ("counter", "evmflow_batches", "Batches processed by this process.", m.batches),
            (
                "gauge",
                "evmflow_events_per_second",
                "Events handled per second since this process started indexing.",
                m.events / elapsed if elapsed > 0 else 0.0,
            ),
            ("gauge", "evmflow_batch_events", "Events in the last batch.", m.last_batch_events),
            ("gauge", "evmflow_batch_size_limit", "Most events in one batch.", indexer.batch_size),
            ("counter", "evmflow_decode_seconds", "Seconds spent decoding logs.", m.decode_seconds),
            (
                "counter",
                "evmflow_preload_seconds",
                "Seconds spent in the preload phase.",
                m.preload_seconds,
            ),
            (
                "counter",
                "evmflow_handler_seconds",
                "Seconds spent running handlers.",
                m.handler_seconds,
            ),
            (
                "gauge",
                "evmflow_last_batch_preload_seconds",
                "Preload seconds of the last batch.",
                m.last_preload_seconds,
            ),
            (
                "gauge",
                "evmflow_last_batch_handler_seconds",
                "Handler seconds of the last batch.",
                m.last_handler_seconds,
            ),
            (
                "counter",
                "evmflow_waited_on_writer_seconds",
                "Seconds processing waited for the writer (backpressure, drains).",
                m.waited_on_writer_seconds,
            ),
            (
                "counter",
                "evmflow_reorgs",
                "Chain reorganisations detected.",
                m.reorgs,
            ),
            (
                "counter",
                "evmflow_rollbacks",
                "Rollbacks done after reorganisations.",
                m.rollbacks,
            ),
        ]
        writer = indexer.writer
        if writer is not None:
            rows += [
                ("counter", "evmflow_commits", "Database transactions committed.", writer.commits),
                (
                    "counter",
                    "evmflow_batches_committed",
                    "Batches committed.",
                    writer.batches_committed,
                ),
                (
                    "counter",
                    "evmflow_commit_seconds",
                    "Seconds spent committing.",
                    writer.commit_seconds,
                ),
                (
                    "gauge",
                    "evmflow_last_commit_seconds",
                    "Seconds of the last commit.",
                    writer.last_commit_seconds,
                ),
                (
                    "counter",
                    "evmflow_writer_idle_seconds",
                    "Seconds the writer had nothing to commit.",
                    writer.idle_seconds,
                ),
                (
                    "gauge",
                    "evmflow_writer_queue_batches",
                    "Batches waiting for the writer.",
                    writer.in_flight,
                ),
            ]
        return rows

    def chain_metrics(self) -> Iterator[Metric]:
        chains = list(self.indexer.chains.values())
        block = GaugeMetricFamily(
            "evmflow_chain_block",
            "Highest block whose events are all processed.",
            labels=["chain_id"],
        )
        events = CounterMetricFamily(
            "evmflow_chain_events",
            "Events handled on the chain, across restarts.",
            labels=["chain_id"],
        )
        head = GaugeMetricFamily(
            "evmflow_chain_head_block", "Highest block known to exist.", labels=["chain_id"]
        )
        end = GaugeMetricFamily(
            "evmflow_chain_end_block", "The chain's configured end block.", labels=["chain_id"]
        )
        stats: dict[str, CounterMetricFamily] = {
            key: CounterMetricFamily(name, doc, labels=["chain_id"])
            for key, (name, doc) in SOURCE_STATS.items()
        }
        for chain in chains:
            label = [str(chain.chain_id)]
            block.add_metric(label, chain.progress.block)
            events.add_metric(label, chain.progress.events)
            if chain.head is not None:
                head.add_metric(label, chain.head)
            if chain.end_block is not None:
                end.add_metric(label, chain.end_block)
            source_stats = getattr(chain.source, "stats", None)
            if source_stats is None:
                continue
            for key, family in stats.items():
                value = _stat(source_stats, key)
                if value is not None:
                    family.add_metric(label, value)
        yield from (block, events, head, end)
        yield from (family for family in stats.values() if family.samples)


def make_registry(indexer: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IndexerCollector(indexer))
    return registry
