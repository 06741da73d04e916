"""The Prometheus endpoint: the daemon's figures for a fleet (``[metrics] listen``).

:class:`Exporter` keeps the figures in a registry of its own (one per daemon: a SIGHUP
rebuild starts from zero, as a restart does, and two daemons in one process never share a
series). It is fed by what the daemon already produces — the timeline entries
(:mod:`edgevoice.conversation.telemetry`), the latency figures of
:class:`~edgevoice.metrics.Metrics`, each tool's result — and reads the rest (turns, missing
devices) from the parts when scraped. :class:`MetricsServer` serves it over HTTP on the event
loop: ``GET /metrics``.

Series (the ``edgevoice_`` prefix; counters end in ``_total``)::

    turns_total                              user turns begun (the core's turn count)
    wake_detections_total{word}              wake words taken (echo of the reply excluded)
    replies_total{status}                    response.done by status (completed, cancelled,
                                             failed, incomplete, other)
    tokens_total{kind}                       usage of response.done: input, output,
                                             input_text, input_audio, output_text,
                                             output_audio, cached (parts of input/output:
                                             do not add them up)
    wake_to_send_seconds                     wake word → first audio written to the socket
    speech_end_to_reply_audio_seconds        end of the user's speech → reply at the speaker
    bargein_seconds                          onset of the interrupting speech → speaker
                                             silenced (local-speech barge-ins)
    reconnects_total{cause}                  connection lost or refused, then retried
    tool_calls_total{tool,outcome}           tool results (undeclared names: "(undeclared)")
    device_missing{device}                   1 while the microphone/speaker is missing

Guarantees:
- Nothing here runs per microphone frame: a timeline entry costs a dictionary lookup (most
  names are not counted), a counted one a counter increment.
- Bounded label sets: wake words and tools from the config, statuses, causes and outcomes
  from fixed lists (anything else is ``other``) — what the service or the model sends cannot
  grow the series.
- :class:`MetricsServer` reads at most :data:`MAX_REQUEST_BYTES` of a request within
  :data:`REQUEST_TIMEOUT_S`, serves at most :data:`MAX_CLIENTS` at once, and is closed by
  :meth:`MetricsServer.close` (the daemon's shutdown: a SIGHUP rebuild opens it again).
- Not thread-safe beyond what prometheus_client gives: the daemon's loop calls everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgevoice.conversation.telemetry import Telemetry, TelemetryName

log = logging.getLogger("edgevoice.metrics")

#: The ``reply done`` fields counted as tokens, by their ``kind`` label.
TOKEN_FIELDS = {"input": "input_tokens", "output": "output_tokens",
                "input_text": "input_text_tokens", "input_audio": "input_audio_tokens",
                "output_text": "output_text_tokens", "output_audio": "output_audio_tokens",
                "cached": "cached_tokens"}
STATUSES = ("completed", "cancelled", "failed", "incomplete", "in_progress")
OUTCOMES = ("ok", "failed", "timeout", "invalid", "unknown_tool", "rate_limited",
            "confirmation_needed", "declined", "duplicate", "interrupted", "error")
# (words in the link's "link down" reason → cause), first match wins.
CAUSES = (("authentication", "auth"), ("throttled", "throttled"), ("http", "http_error"),
          ("cannot connect", "connect_failed"), ("connection", "connection_lost"))
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BARGEIN_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0)

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
MAX_CLIENTS = 8


def reconnect_cause(reason: str) -> str:
    """The bounded ``cause`` label of a "link down" reason."""
    text = reason.lower()
    return next((cause for words, cause in CAUSES if words in text), "other")


def _count(value: Any) -> int:
    """A token count from a timeline field: missing or not a count = 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class _Live(Collector):
    """The figures read from the parts at scrape time."""

    def __init__(self, turns: Callable[[], int],
                 missing: Callable[[], Iterable[tuple[str, bool]]]) -> None:
        self._turns = turns
        self._missing = missing

    def collect(self) -> Iterator[Metric]:
        turns = CounterMetricFamily("edgevoice_turns", "User turns begun (wake word, "
                                    "follow-up speech, barge-in)")
        turns.add_metric([], self._turns())
        yield turns
        missing = GaugeMetricFamily("edgevoice_device_missing",
                                    "1 while the audio device is missing", labels=["device"])
        for device, gone in self._missing():
            missing.add_metric([device], 1.0 if gone else 0.0)
        yield missing


class Exporter:
    """See the module docstring. ``wake_words`` and ``tools``: the configured names (the
    only label values those series take); ``turns()`` and ``missing()`` are read when
    scraped; ``clock``: the daemon's (that of the microphone's stream times)."""

    def __init__(
        self,
        *,
        wake_words: Iterable[str],
        tools: Iterable[str],
        turns: Callable[[], int],
        missing: Callable[[], Iterable[tuple[str, bool]]],
        clock: Callable[[], float],
    ) -> None:
        self.clock = clock
        # No ``_created`` twin of every series (process-wide; nothing else here uses them):
        # half the scrape's size, and Prometheus does not need them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        r.register(_Live(turns, missing))
        self._words = frozenset(wake_words)
        self._tools = frozenset(tools)
        self.wakes = Counter("edgevoice_wake_detections", "Wake words taken", ["word"],
                             registry=r)
        for word in self._words:
            self.wakes.labels(word)
        self.replies = Counter("edgevoice_replies", "Replies ended (response.done), by status",
                               ["status"], registry=r)
        self.tokens = Counter("edgevoice_tokens", "Tokens of the replies (response.done "
                              "usage); the text/audio/cached kinds are parts of input/output",
                              ["kind"], registry=r)
        for kind in TOKEN_FIELDS:
            self.tokens.labels(kind)
        self.wake_to_send = Histogram(
            "edgevoice_wake_to_send_seconds",
            "Wake word detected to the first audio written to the socket", registry=r,
            buckets=LATENCY_BUCKETS)
        self.first_audio = Histogram(
            "edgevoice_speech_end_to_reply_audio_seconds",
            "End of the user's speech to the first reply audio at the speaker", registry=r,
            buckets=LATENCY_BUCKETS)
        self.bargein = Histogram(
            "edgevoice_bargein_seconds",
            "Onset of the user's interrupting speech to the speaker silenced (local VAD)",
            registry=r, buckets=BARGEIN_BUCKETS)
        self.reconnects = Counter("edgevoice_reconnects",
                                  "Connections lost or refused (then retried), by cause",
                                  ["cause"], registry=r)
        self.tool_calls = Counter("edgevoice_tool_calls", "Tool calls, by tool and outcome",
                                  ["tool", "outcome"], registry=r)
        self._paused_at: float | None = None  # the speaker was paused then (a barge-in?)

    # ------------------------------------------------------------------ feeding

    def on_telemetry(self, entry: Telemetry) -> None:
        """A timeline entry (the daemon's ``_telemetry``)."""
        name, fields = entry.name, entry.fields
        if name is TelemetryName.WAKE:
            word = str(fields.get("word"))
            self.wakes.labels(word if word in self._words else "other").inc()
        elif name is TelemetryName.REPLY_DONE:
            status = str(fields.get("status"))
            status = "cancelled" if status == "canceled" else status
            self.replies.labels(status if status in STATUSES else "other").inc()
            for kind, key in TOKEN_FIELDS.items():
                n = _count(fields.get(key))
                if n:
                    self.tokens.labels(kind).inc(n)
        elif name is TelemetryName.LINK_DOWN:
            self.reconnects.labels(reconnect_cause(str(fields.get("reason", "")))).inc()
        elif name is TelemetryName.SPEAKER_PAUSED:
            self._paused_at = self.clock()
        elif name is TelemetryName.SPEAKER_RESUMED:
            self._paused_at = None
        elif name is TelemetryName.BARGE_IN:
            self._on_barge_in(entry)

    def _on_barge_in(self, entry: Telemetry) -> None:
        speech_ms = entry.fields.get("speech_ms")
        silenced = self._paused_at if self._paused_at is not None else self.clock()
        self._paused_at = None
        if not isinstance(speech_ms, int | float):
            return  # not decided on local speech: its onset is not known here
        onset = entry.t - speech_ms / 1000
        latency = silenced - onset
        if 0 <= latency <= 60:
            self.bargein.observe(latency)

    def on_figure(self, name: str, ms: float) -> None:
        """A latency figure of :class:`~edgevoice.metrics.Metrics` (``wake_to_send_ms``,
        ``first_audio_ms``)."""
        if ms < 0:
            return
        if name == "wake_to_send_ms":
            self.wake_to_send.observe(ms / 1000)
        elif name == "first_audio_ms":
            self.first_audio.observe(ms / 1000)

    def on_tool_done(self, tool: str, outcome: str) -> None:
        self.tool_calls.labels(tool if tool in self._tools else "(undeclared)",
                               outcome if outcome in OUTCOMES else "other").inc()

    def text(self) -> bytes:
        """The exposition, as a scrape gets it."""
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` (also ``/``) over HTTP/1.1 on the event loop; see the module
    docstring for its bounds. :meth:`start` raises OSError when it cannot listen."""

    def __init__(self, exporter: Exporter, host: str, port: int) -> None:
        self.exporter = exporter
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self.requests = 0

    @property
    def address(self) -> tuple[str, int] | None:
        """Where it listens (the port the system chose for port 0); None when closed."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  limit=MAX_REQUEST_BYTES, reuse_address=True)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        for task in list(self._clients):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= MAX_CLIENTS:
            writer.close()
            return
        self._clients.add(task)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await self._serve(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            pass  # a slow, broken or oversized request: just close
        except Exception:
            log.exception("metrics endpoint: error while answering a request")
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        method, target = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"GET only\n", "text/plain"
        elif path not in ("/metrics", "/"):
            status, body, ctype = "404 Not Found", b"try /metrics\n", "text/plain"
        else:
            self.requests += 1
            status, body, ctype = "200 OK", self.exporter.text(), CONTENT_TYPE_LATEST
        head_out = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        writer.write(head_out.encode("ascii") + (body if method != "HEAD" else b""))
        await writer.drain()
