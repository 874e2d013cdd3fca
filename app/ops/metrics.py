"""Prometheus metrics: what `/metrics` shows, and the cheap counters the hot path bumps.

Per message the hot path does a counter increment or two and, once per
message (not per receiver), one histogram observation; the chat reports each
connection's events through the `Observer` calls `Metrics` answers (`opened`,
`received`, `dropped`, `closed`). Everything that needs a walk (rooms, outbox
depths) is asked of the hub and the registry only when Prometheus scrapes
(`Chat.core_state`): one `Describe` each, sent together and waited for at most
`SCRAPE_ASK_SECONDS`. A paused actor still answers it; one that cannot in
time (slowed down by a fault control, swamped, stopped) leaves its series out
of that scrape (absent, which Prometheus reads as unknown, rather than stale),
and the scrape still answers. Mailbox depths are the runtime's own count,
read without a message (`ActorRef.mailbox_size`).

Each app has its own registry (tests build several apps in one process).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from actors.system import DROP_KINDS, END_REASONS, Chat

if TYPE_CHECKING:
    from app.ops.service import Connections

prometheus_client.disable_created_metrics()

REFUSAL_REASONS = ["full", "shutting_down", "address_full"]

SCRAPE_ASK_SECONDS = 1.0  # Prometheus's own scrape timeout is 10 s by default
FAN_OUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The series of one app, and the collector that reads its actors at scrape time.

    It is the chat's `Observer` of connections (actors/chat/connection.py).
    """

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.connections = Counter(
            "nane_connections", "Websocket connections accepted", registry=registry)
        self.refused = Counter(
            "nane_connections_refused", "Websocket connections refused before they opened",
            ["reason"], registry=registry)
        self.disconnects = Counter(
            "nane_disconnects", "Websocket connections ended, by why", ["reason"],
            registry=registry)
        self.frames_received = Counter(
            "nane_messages_received", "Data frames received from clients (before any check)",
            registry=registry)
        self.frames_dropped = Counter(
            "nane_messages_dropped", "Client frames not accepted as messages, by why",
            ["reason"], registry=registry)
        self.http_timeouts = Counter(
            "nane_http_request_timeouts", "Connections dropped for not finishing a request head "
            "within http_idle_timeout_seconds (embedded server and the websocket worker)",
            registry=registry)
        self.fan_out = Histogram(
            "nane_fan_out_seconds", "From the registry (with Redis, the listener) handing a "
            "message to the hub until every outbox has it", buckets=FAN_OUT_BUCKETS, registry=registry)
        self.controls = Counter(
            "nane_controls", "Fault controls used (only with --controls), by control",
            ["control"], registry=registry)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)
        for reason in END_REASONS:
            self.disconnects.labels(reason)
        for reason in DROP_KINDS:
            self.frames_dropped.labels(reason)

    def watch(self, chat: Chat, connections: Connections) -> None:
        """Start reporting the actors of `chat` and the open `connections`."""
        self.registry.register(_ChatCollector(chat, connections))

    # -- the chat's Observer of connections --

    def opened(self) -> None:
        self.connections.inc()

    def received(self) -> None:
        self.frames_received.inc()

    def dropped(self, kind: str) -> None:
        self.frames_dropped.labels(kind).inc()

    def closed(self, reason: str) -> None:
        self.disconnects.labels(reason).inc()


class _ChatCollector:
    """Gauges and totals kept by the actors themselves, read when scraped."""

    def __init__(self, chat: Chat, connections: Connections) -> None:
        self._chat = chat
        self._connections = connections

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        state = self._chat.core_state(SCRAPE_ASK_SECONDS)
        yield GaugeMetricFamily("nane_open_connections", "Websocket connections open now",
                                value=self._connections.open)
        mailbox = GaugeMetricFamily("nane_mailbox_messages", "Messages waiting in an actor's "
                                    "mailbox", labels=["actor"])
        for actor, size in state.mailboxes.items():
            mailbox.add_metric([actor], size)
        yield mailbox
        registry = state.registry
        if registry is not None and "rooms" in registry:  # on Redis, Redis counts them
            yield GaugeMetricFamily("nane_rooms", "Rooms that exist now", value=registry["rooms"])
            yield CounterMetricFamily("nane_rooms_forgotten", "Rooms forgotten to stay within "
                                      "max_rooms (least recently active first)",
                                      value=registry.get("forgotten", 0))
        hub = state.hub
        if hub is not None:
            yield GaugeMetricFamily("nane_sessions", "Sessions the hub delivers to now",
                                    value=hub["sessions"])
            yield CounterMetricFamily("nane_messages_delivered", "Frames handed to connections' "
                                      "outboxes (one per receiver)", value=hub["delivered"])
            yield CounterMetricFamily("nane_slow_consumer_disconnects", "Connections cut off "
                                      "because their outbox was full",
                                      value=hub["slow_consumers"])
            yield GaugeMetricFamily("nane_outbox_messages_max", "The fullest session outbox now",
                                    value=hub["outbox_max"])
            yield GaugeMetricFamily("nane_outbox_messages", "Frames waiting in all session "
                                    "outboxes now", value=hub["outbox_total"])
