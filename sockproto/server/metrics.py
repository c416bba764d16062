# -*- test-case-name: tests.test_config -*-
"""Prometheus metrics: ``--metrics ENDPOINT`` serves ``/metrics`` over HTTP.

The services count in plain attributes on their hot paths (see
:class:`sockproto.server.connections.Traffic` and :mod:`sockproto.server.latency`); this
collector turns them into metric families when Prometheus scrapes.
prometheus_client's Twisted resource collects in a thread-pool thread, so
the counters are copied in the reactor thread first: nothing is read while
the reactor changes it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.application import service
from twisted.internet import defer, endpoints, threads
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from sockproto.interfaces import IMetricsSource, IServerReactor
from sockproto.server.listen import ListeningService, listeningServices

log = Logger()

PREFIX = "sockproto"


def snapshot(root: service.IService) -> list[dict[str, Any]]:
    """The counters of every service, copied (call in the reactor thread)."""
    result = []
    for listening in listeningServices(root):
        factory = listening.factory
        if not IMetricsSource.providedBy(factory):
            continue  # the metrics endpoint itself
        entry: dict[str, Any] = {
            "service": listening.name,
            "traffic": {kind: (t.open, t.total, t.bytesIn, t.bytesOut) for kind, t in factory.traffic.items()},
            "errors": dict(factory.errors),
        }
        entry.update(factory.metricsSnapshot())
        result.append(entry)
    return result


class SockprotoCollector(Collector):
    """Metric families from the counters of every service under ``root``."""

    def __init__(self, root: service.IService, reactor: IServerReactor) -> None:
        self.root = root
        self.reactor = reactor

    def _snapshot(self) -> list[dict[str, Any]]:
        if threading.current_thread() is threading.main_thread():  # the reactor's thread
            return snapshot(self.root)
        return threads.blockingCallFromThread(self.reactor, snapshot, self.root)

    def collect(self) -> Iterator[Any]:
        services = self._snapshot()
        byTransport = ["service", "transport"]
        openConnections = GaugeMetricFamily(f"{PREFIX}_connections_open", "Connections open now.", labels=byTransport)
        connections = CounterMetricFamily(f"{PREFIX}_connections", "Connections accepted.", labels=byTransport)
        received = CounterMetricFamily(f"{PREFIX}_received_bytes", "Bytes received from clients.", labels=byTransport)
        sent = CounterMetricFamily(f"{PREFIX}_sent_bytes", "Bytes written to clients.", labels=byTransport)
        errors = CounterMetricFamily(
            f"{PREFIX}_errors", "Errors by kind: refused, idle_timeout, line_too_long, wrong_protocol, "
            "slow_consumer, tls_handshake_timeout, and binary error codes.", labels=["service", "kind"]
        )
        chatMessages = CounterMetricFamily(
            f"{PREFIX}_chat_messages", "Lines users said (to a room, /me, /msg).", labels=["service"]
        )
        chatDeliveries = CounterMetricFamily(
            f"{PREFIX}_chat_deliveries", "Room lines (messages and notices) and private messages written to members.",
            labels=["service"],
        )
        chatSlow = CounterMetricFamily(
            f"{PREFIX}_chat_slow_consumer_disconnects", "Chat clients dropped for not reading.", labels=["service"]
        )
        chatMembers = GaugeMetricFamily(f"{PREFIX}_chat_members", "Chat users online.", labels=["service"])
        chatRooms = GaugeMetricFamily(f"{PREFIX}_chat_rooms", "Chat rooms open.", labels=["service"])
        operations = CounterMetricFamily(
            f"{PREFIX}_binary_operations", "SPB/1 requests by op.", labels=["service", "op"]
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_binary_request_duration_seconds",
            "Time from a request's arrival to its reply being written (writes: until committed).",
            labels=["service", "op"],
        )
        byNode = ["service", "node"]
        clusterLinked = GaugeMetricFamily(
            f"{PREFIX}_cluster_linked", "1 while linked to the cluster's Redis, else 0.", labels=byNode
        )
        clusterReconnects = CounterMetricFamily(
            f"{PREFIX}_cluster_reconnects", "Times the link to Redis was made again after it was lost.", labels=byNode
        )
        clusterPublished = CounterMetricFamily(
            f"{PREFIX}_cluster_published_events", "Events (lines, notices, private messages) sent to the cluster.",
            labels=byNode,
        )
        clusterReceived = CounterMetricFamily(
            f"{PREFIX}_cluster_received_events", "Events heard from the other servers.", labels=byNode
        )
        clusterDropped = CounterMetricFamily(
            f"{PREFIX}_cluster_dropped_events", "Events not sent to the cluster (link down, Redis too slow).",
            labels=byNode,
        )
        clusterRejected = CounterMetricFamily(
            f"{PREFIX}_cluster_rejected_events",
            "Messages and events from the cluster's channel dropped: malformed, unsigned, forged or not confirmed.",
            labels=byNode,
        )
        clusterDelay = HistogramMetricFamily(
            f"{PREFIX}_cluster_delay_seconds",
            "From publishing on one server to arriving on this one (meaningful when their clocks agree).",
            labels=byNode,
        )
        storeKeys = GaugeMetricFamily(f"{PREFIX}_store_keys", "Keys in the store.", labels=["service"])
        storeCommits = CounterMetricFamily(f"{PREFIX}_store_commits", "Store transactions.", labels=["service"])
        storeRefusing = GaugeMetricFamily(
            f"{PREFIX}_store_refusing_writes",
            "1 while writes are refused: the disk is full (until it has room) or failed a sync (until a restart).",
            labels=["service"],
        )
        for entry in services:
            name = entry["service"]
            for kind, (isOpen, total, bytesIn, bytesOut) in sorted(entry["traffic"].items()):
                openConnections.add_metric([name, kind], isOpen)
                connections.add_metric([name, kind], total)
                received.add_metric([name, kind], bytesIn)
                sent.add_metric([name, kind], bytesOut)
            for kind, count in sorted(entry["errors"].items()):
                errors.add_metric([name, kind], count)
            if "chat" in entry:
                chat = entry["chat"]
                chatMessages.add_metric([name], chat["messages"])
                chatDeliveries.add_metric([name], chat["deliveries"])
                chatSlow.add_metric([name], chat["slowConsumers"])
                chatMembers.add_metric([name], chat["members"])
                chatRooms.add_metric([name], chat["rooms"])
            if "cluster" in entry:
                cluster = entry["cluster"]
                labels = [name, cluster["node"]]
                clusterLinked.add_metric(labels, cluster["linked"])
                clusterReconnects.add_metric(labels, cluster["reconnects"])
                clusterPublished.add_metric(labels, cluster["published"])
                clusterReceived.add_metric(labels, cluster["received"])
                clusterDropped.add_metric(labels, cluster["dropped"])
                clusterRejected.add_metric(labels, cluster.get("rejected", 0))
                clusterDelay.add_metric(labels, *cluster["delay"])
            for op, count in sorted(entry.get("operations", {}).items()):
                operations.add_metric([name, op], count)
            for op, (buckets, total) in sorted(entry.get("latency", {}).items()):
                latency.add_metric([name, op], buckets, total)
            if "store" in entry:
                storeKeys.add_metric([name], entry["store"]["keys"])
                if "commits" in entry["store"]:
                    storeCommits.add_metric([name], entry["store"]["commits"])
                if "refusing_writes" in entry["store"]:
                    storeRefusing.add_metric([name], entry["store"]["refusing_writes"])
        yield from (
            openConnections, connections, received, sent, errors,
            chatMessages, chatDeliveries, chatSlow, chatMembers, chatRooms,
            clusterLinked, clusterReconnects, clusterPublished, clusterReceived, clusterDropped, clusterRejected,
            clusterDelay,
            operations, latency, storeKeys, storeCommits, storeRefusing,
        )


def metricsSite(root: service.IService, reactor: IServerReactor) -> Site:
    """An HTTP site with ``/metrics`` for every service under ``root`` and the process."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry()
    registry.register(SockprotoCollector(root, reactor))
    ProcessCollector(registry=registry)
    top = Resource()
    top.putChild(b"metrics", _Exposition(registry))
    top.putChild(b"", _Index())
    site = Site(top)
    site.noisy = False
    return site


class _Exposition(Resource):
    """
    ``/metrics``, collected in the reactor thread (the counters are plain
    attributes the reactor changes).  prometheus_client's own Twisted
    resource goes through WSGI, which fails for a peer on a UNIX socket.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        Resource.__init__(self)
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class _Index(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"sockproto metrics are at /metrics\n"


def metricsService(endpoint: str, root: service.IService, reactor: IServerReactor) -> ListeningService:
    """Serves the metrics of ``root`` on ``endpoint`` (checked like a ``--listen`` string)."""
    return ListeningService("metrics", [endpoint], metricsSite(root, reactor), reactor)


# -- the metrics of --workers: every worker's, summed ----------------------------




class SummedMetrics(Resource):
    """``/metrics``: every worker's metrics, fetched over its UNIX socket, summed."""

    isLeaf = True

    def __init__(self, reactor: IServerReactor, supervisor: Any) -> None:
        from twisted.web.client import Agent

        Resource.__init__(self)
        self.reactor = reactor
        self.supervisor = supervisor
        # The URI's host names the worker: http://worker2/metrics is worker 2's socket.
        self.agent = Agent.usingEndpointFactory(reactor, self)

    def endpointForURI(self, uri: Any) -> Any:
        number = int(uri.host.decode().removeprefix("worker"))
        return endpoints.UNIXClientEndpoint(self.reactor, self.supervisor.metricsSocket(number), timeout=5)

    def render_GET(self, request: Any) -> Any:
        from twisted.web.client import readBody

        def fetch(number: int) -> defer.Deferred[bytes]:
            def body(response: Any) -> Any:
                if response.code != 200:
                    raise ValueError(f"worker {number} answered {response.code}")
                return readBody(response)

            return self.agent.request(b"GET", b"http://worker%d/metrics" % number).addCallback(body)

        numbers = sorted(self.supervisor.workers)
        d = defer.DeferredList([fetch(n) for n in numbers], consumeErrors=True)

        def answer(results: list[tuple[bool, Any]]) -> None:
            texts = [body.decode() for ok, body in results if ok]
            request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
            up = "".join(
                f'sockproto_worker_up{{worker="{n}"}} {1 if ok else 0}\n'
                for n, (ok, _) in zip(numbers, results, strict=True)
            )
            body = sumExpositions(texts) + (
                "# HELP sockproto_worker_up 1 for each worker whose metrics could be read.\n"
                "# TYPE sockproto_worker_up gauge\n" + up
                + "# HELP sockproto_worker_restarts_total Workers started again after ending.\n"
                "# TYPE sockproto_worker_restarts_total counter\n"
                + f"sockproto_worker_restarts_total {self.supervisor.restarts}\n"
            )
            request.write(body.encode())
            request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET


def sumExpositions(texts: list[str]) -> str:
    """Prometheus text expositions added together, sample by sample (same name and labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for text in texts:
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as e:
            log.warn("metrics: a worker's metrics did not parse: {reason}", reason=e)
            continue
        for family in parsed:
            _, _, samples = families.setdefault(family.name, (family.type, family.documentation, {}))
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = samples.get(key, 0.0) + sample.value
    out = []
    for name, (kind, documentation, samples) in families.items():
        # The parser names a counter's family without its "_total"; the text format wants it.
        shownName = f"{name}_total" if kind == "counter" else name
        out.append(f"# HELP {shownName} {documentation}\n# TYPE {shownName} {kind}\n")
        for (sampleName, labels), value in samples.items():
            shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            out.append(f"{sampleName}{{{shown}}} {value!r}\n" if shown else f"{sampleName} {value!r}\n")
    return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def workerMetricsService(endpoint: str, supervisor: Any, reactor: IServerReactor) -> ListeningService:
    """Serves, on ``endpoint``, the sum of the metrics of ``supervisor``'s workers (see server/workers.py)."""
    top = Resource()
    top.putChild(b"metrics", SummedMetrics(reactor, supervisor))
    top.putChild(b"", _Index())
    site = Site(top)
    site.noisy = False
    return ListeningService("metrics", [endpoint], site, reactor)
