"""Prometheus metrics of the whole pool, read from Redis at every scrape.

Every figure lives in Redis (`worker.store.stats`, the dispatch structures), so any one process can
export them for all workers: `GET /metrics` on the receiver, or `astria-queue metrics --port N`
where no receiver runs. Metric names start with `astria_queue_`:

    jobs_total{state,tenant,lane}            counter: enqueued, succeeded, failed, revoked
    jobs_cost_mc_total{tenant,lane}          counter: Astria's cost_mc of finished jobs
    failures_total{error}                    counter: failed jobs by error class
    webhook_attempts_total{result}           counter: webhook attempts: delivered, retry, dead
    webhook_seconds{type}                    histogram: a webhook's event to its delivery
    jobs_current{state}                      gauge: queued (not sent yet), at_astria, retrying
    job_seconds{lane,outcome}                histogram: enqueue to outcome (the SLO's figure)
    post_seconds{lane}                       histogram: enqueue to the job's first POST
    backlog{lane}                            gauge: jobs waiting in the lane's queue
    oldest_queued_seconds{lane}              gauge: age of the lane's oldest job not sent yet
    engines{state}                           gauge: engines beating (fresh) or not (stale)
    engine_threads{pool,state}               gauge: their threads, busy and total, by pool
    astria_requests_total{method,status}     counter: by HTTP status, or "network"
    astria_request_seconds{method}           histogram: Astria request latency
    rate_limit_per_second{kind}              gauge: the limiter's current rate (submit, poll)
    dead_letters                             gauge: failed jobs kept for redrive
    dead_messages                            gauge: broker messages that could not be read
    webhooks_pending, webhooks_dead          gauge

`tenant` is bounded: with TENANTS_FILE its tenants, else the METRICS_MAX_TENANTS busiest, and
every other tenant is counted as `other`. Every process reads the same figures: scraping several
gives copies, so dashboards and alerts take max() over instances.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from worker.constants import read_tenant_counter
from worker.runtime import runtime
from worker.settings import Settings
from worker.store.stats import JOB_BUCKETS, LATENCY_BUCKETS

_STATES = {"enqueued": "enqueued", "SUCCESS": "succeeded", "FAILURE": "failed",
           "REVOKED": "revoked"}


def named_tenants(settings: Settings, counters: dict[str, float]) -> set[str]:
    """The tenants that get a label of their own (see the module docstring)."""
    if settings.tenants.registered:
        return set(settings.tenants.named)
    volume: defaultdict[str, float] = defaultdict(float)
    for name, value in counters.items():
        if (read := read_tenant_counter(name)) and read[2] == "enqueued":
            volume[read[0]] += value
    busiest = sorted(volume, key=lambda tenant: (-volume[tenant], tenant))
    return set(busiest[:settings.metrics_max_tenants])


class QueueCollector:
    """Reads the figures from Redis when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        rt = runtime()
        counters = rt.stats.counters()
        gauges = rt.stats.gauges()

        jobs = CounterMetricFamily("astria_queue_jobs", "Jobs by state, tenant and lane",
                                   labels=["state", "tenant", "lane"])
        cost = CounterMetricFamily("astria_queue_jobs_cost_mc", "Astria's cost_mc of jobs",
                                   labels=["tenant", "lane"])
        named = named_tenants(rt.settings, counters)
        by_jobs: defaultdict[tuple[str, str, str], float] = defaultdict(float)
        by_cost: defaultdict[tuple[str, str], float] = defaultdict(float)
        for name, value in counters.items():
            if read := read_tenant_counter(name):
                tenant, lane, what = read
                tenant = tenant if tenant in named else "other"
                if what in _STATES:
                    by_jobs[(_STATES[what], tenant, lane)] += value
                elif what == "cost_mc":
                    by_cost[(tenant, lane)] += value
        for labels, value in sorted(by_jobs.items()):
            jobs.add_metric(list(labels), value)
        for cost_labels, value in sorted(by_cost.items()):
            cost.add_metric(list(cost_labels), value)
        yield jobs
        yield cost
        failures = CounterMetricFamily("astria_queue_failures", "Failed jobs by error class",
                                       labels=["error"])
        attempts = CounterMetricFamily("astria_queue_webhook_attempts",
                                       "Webhook delivery attempts by result: delivered, retry "
                                       "(to be tried again), dead (out of attempts)",
                                       labels=["result"])
        for name, value in sorted(counters.items()):
            if name.startswith("error:"):
                failures.add_metric([name.removeprefix("error:")], value)
            elif name.startswith("webhook:"):
                attempts.add_metric([name.removeprefix("webhook:")], value)
        yield failures
        yield attempts

        current = GaugeMetricFamily("astria_queue_jobs_current", "Jobs now, by state",
                                    labels=["state"])
        current.add_metric(["queued"], gauges.queued)
        current.add_metric(["at_astria"], sum(gauges.in_flight.values()))
        current.add_metric(["retrying"], gauges.retrying)
        yield current
        backlog = GaugeMetricFamily("astria_queue_backlog", "Jobs waiting in a lane's queue",
                                    labels=["lane"])
        oldest = GaugeMetricFamily("astria_queue_oldest_queued_seconds",
                                   "Age of the lane's oldest job not sent to Astria yet",
                                   labels=["lane"])
        for lane, waiting in gauges.backlog.items():
            backlog.add_metric([lane], waiting)
            oldest.add_metric([lane], gauges.oldest_by_lane.get(lane, 0.0))
        yield backlog
        yield oldest

        requests = CounterMetricFamily("astria_queue_astria_requests",
                                       "Astria requests by method and HTTP status",
                                       labels=["method", "status"])
        for name, value in sorted(counters.items()):
            if name.startswith("http:"):
                _, method, status = name.split(":")
                requests.add_metric([method, status], value)
        yield requests
        yield from self._latency(counters)
        yield from self._histograms(counters)

        limit = GaugeMetricFamily("astria_queue_rate_limit_per_second",
                                  "The rate limiter's current rate, by kind of request",
                                  labels=["kind"])
        ceiling = rt.settings.astria_rate_limit_per_second
        for kind, rate in gauges.rates.items():
            limit.add_metric([kind], ceiling if rate is None else rate)
        yield limit
        yield GaugeMetricFamily("astria_queue_dead_letters", "Failed jobs kept for redrive",
                                value=gauges.dead)
        yield GaugeMetricFamily("astria_queue_dead_messages",
                                "Broker messages that could not be read (astria-queue dead "
                                "messages)", value=gauges.dead_messages)
        yield GaugeMetricFamily("astria_queue_webhooks_pending", "Webhooks not delivered yet",
                                value=gauges.webhooks_pending)
        yield GaugeMetricFamily("astria_queue_webhooks_dead", "Webhooks whose retries ran out",
                                value=gauges.webhooks_dead)
        beats = rt.engines.beats(time.time())
        engines = GaugeMetricFamily("astria_queue_engines",
                                    "Engines by heartbeat: fresh, or stale (stopped beating)",
                                    labels=["state"])
        engines.add_metric(["fresh"], len(beats.fresh))
        engines.add_metric(["stale"], len(beats.stale))
        yield engines
        threads = GaugeMetricFamily("astria_queue_engine_threads",
                                    "Engine threads of the beating engines, by pool (astria, "
                                    "webhook, copy) and state (busy, total)",
                                    labels=["pool", "state"])
        for pool, (busy, size) in sorted(beats.threads.items()):
            threads.add_metric([pool, "busy"], busy)
            threads.add_metric([pool, "total"], size)
        yield threads

    @staticmethod
    def _histograms(counters: dict[str, float]) -> Iterable[Metric]:
        """Enqueue-to-outcome time by lane and outcome (the SLO's own figure), enqueue to the
        first POST by lane (the wait in the queue) and event to webhook delivery by type, as
        lib/histogram.lua keeps them."""
        for metric, labels, help_text in (
                ("astria_queue_job_seconds", ["lane", "outcome"],
                 "Seconds from enqueue to outcome"),
                ("astria_queue_post_seconds", ["lane"],
                 "Seconds from enqueue to the job's first POST"),
                ("astria_queue_webhook_seconds", ["type"],
                 "Seconds from a webhook's event to its delivery (2xx)")):
            field = metric.removeprefix("astria_queue_")
            histogram = HistogramMetricFamily(metric, help_text, labels=labels)
            series = sorted({tuple(name.split("|")[1:-1]) for name in counters
                             if name.startswith(field + "|") and name.endswith("|count")})
            for values in series:
                name = "|".join((field, *values, ""))
                running, buckets = 0.0, []
                for bound in [*(f"{b:g}" for b in JOB_BUCKETS), "+Inf"]:
                    running += counters.get(name + bound, 0.0)
                    buckets.append((bound, running))
                histogram.add_metric([values[0], *(_STATES.get(v, v) for v in values[1:])],
                                     buckets, sum_value=counters.get(name + "sum", 0.0))
            yield histogram

    @staticmethod
    def _latency(counters: dict[str, float]) -> Iterable[Metric]:
        histogram = HistogramMetricFamily("astria_queue_astria_request_seconds",
                                          "Astria request latency", labels=["method"])
        methods = sorted({name.split(":")[1] for name in counters
                          if name.startswith("latency_count:")})
        for method in methods:
            running, buckets = 0.0, []
            for bound in [*(f"{b:g}" for b in LATENCY_BUCKETS), "+Inf"]:
                running += counters.get(f"latency_bucket:{method}:{bound}", 0.0)
                buckets.append((bound, running))
            histogram.add_metric([method], buckets,
                                 sum_value=counters.get(f"latency_sum:{method}", 0.0))
        yield histogram


def registry() -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(QueueCollector())
    return reg


_app: Callable[..., Iterable[bytes]] | None = None


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    global _app
    if _app is None:
        _app = make_wsgi_app(registry())
    return _app(environ, start_response)

