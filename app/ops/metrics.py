"""Prometheus metrics: what `/metrics` shows, and the cheap counters the hot path bumps.

Per message the hot path does a counter increment or two and, once per
message (not per receiver), one histogram observation; everything that needs
a walk (rooms, outbox depths) is asked of the hub and the registry only when
Prometheus scrapes: one `Describe` each, sent together and waited for at most
`SCRAPE_ASK_SECONDS`. A paused actor still answers it; one that cannot in
time (slowed down by a fault control, swamped, stopped) leaves its series out
of that scrape (absent, which Prometheus reads as unknown, rather than stale),
and the scrape still answers. Mailbox depths are the runtime's own count,
read without a message (`ActorRef.mailbox_size`).

Each app has its own registry (tests build several apps in one process).
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from actors.chat.message import DROP_REASONS
from actors.chat.session import GOING_AWAY, PING_TIMEOUT, SLOW_CONSUMER, Disconnect
from actors.runtime.actor import Describe, ask_all

prometheus_client.disable_created_metrics()

FLOOD = Disconnect(1008, "too many messages")
BY_CONTROL = "fault control"  # the close reason of every disconnect a fault control makes
DISCONNECT_REASONS = {SLOW_CONSUMER: "slow_consumer", FLOOD: "flood", PING_TIMEOUT: "ping_timeout",
                      GOING_AWAY: "shutdown"}
CLOSE_CODE_REASONS = {1009: "too_large", 1007: "invalid_utf8", 1002: "protocol_error",
                      1008: "flood"}
ALL_DISCONNECT_REASONS = [*DISCONNECT_REASONS.values(), *CLOSE_CODE_REASONS.values(), "client",
                          "control"]
REFUSAL_REASONS = ["full", "shutting_down", "address_full"]
DROPPED_BEFORE_PARSING = ["rate_limited", "binary"]

SCRAPE_ASK_SECONDS = 1.0  # Prometheus's own scrape timeout is 10 s by default
FAN_OUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The series of one app, and the collector that reads its actors at scrape time."""

    def __init__(self):
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
        self.received = Counter(
            "nane_messages_received", "Data frames received from clients (before any check)",
            registry=registry)
        self.dropped = Counter(
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
        for reason in ALL_DISCONNECT_REASONS:
            self.disconnects.labels(reason)
        for reason in [*DROP_REASONS, *DROPPED_BEFORE_PARSING]:
            self.dropped.labels(reason)

    def watch(self, chat, connections) -> None:
        """Start reporting the actors of `chat` and the open `connections`."""
        self.registry.register(_ChatCollector(chat, connections))

    def disconnected(self, reason: Disconnect | None, close_code: int | None) -> None:
        if reason is not None:
            label = DISCONNECT_REASONS.get(reason) or (
                "control" if reason.reason.startswith(BY_CONTROL) else "client")
        else:
            label = CLOSE_CODE_REASONS.get(close_code or 0, "client")
        self.disconnects.labels(label).inc()


class _ChatCollector:
    """Gauges and totals kept by the actors themselves, read when scraped."""

    def __init__(self, chat, connections):
        self._chat = chat
        self._connections = connections

    def describe(self):
        return []

    def collect(self):
        chat = self._chat
        described = ask_all([chat.hub, chat.registry], Describe(), SCRAPE_ASK_SECONDS)
        yield GaugeMetricFamily("nane_open_connections", "Websocket connections open now",
                                value=self._connections.open)
        mailbox = GaugeMetricFamily("nane_mailbox_messages", "Messages waiting in an actor's "
                                    "mailbox", labels=["actor"])
        mailbox.add_metric(["hub"], chat.hub.mailbox_size)
        mailbox.add_metric(["registry"], chat.registry.mailbox_size)
        if chat.kozma is not None:
            mailbox.add_metric(["kozma"], chat.kozma.mailbox_size)
        yield mailbox
        registry = described.get(chat.registry)
        if registry is not None and "rooms" in registry:  # on Redis, Redis counts them
            yield GaugeMetricFamily("nane_rooms", "Rooms that exist now", value=registry["rooms"])
            yield CounterMetricFamily("nane_rooms_forgotten", "Rooms forgotten to stay within "
                                      "max_rooms (least recently active first)",
                                      value=registry.get("forgotten", 0))
        hub = described.get(chat.hub)
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
