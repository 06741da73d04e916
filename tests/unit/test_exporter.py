"""The Prometheus exporter fed with timeline entries, and its HTTP server on 127.0.0.1 (a real
socket, answered by urllib and by raw requests): series, bounded labels, bad requests."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgevoice.conversation.telemetry import Telemetry, TelemetryName
from edgevoice.exporter import MAX_REQUEST_BYTES, Exporter, MetricsServer, reconnect_cause


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None, missing: set[str] | None = None) -> Exporter:
    gone = missing if missing is not None else set()
    return Exporter(wake_words=["hey_jarvis"], tools=["get_time"], turns=lambda: 3,
                    missing=lambda: [(d, d in gone) for d in ("microphone", "speaker")],
                    clock=clock or Clock())


def samples(exporter: Exporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(exporter.text().decode())
            for s in f.samples}


def entry(name: TelemetryName, t: float = 0.0, **fields: Any) -> Telemetry:
    return Telemetry(name, t, fields)


def test_series_from_the_timeline_with_bounded_labels() -> None:
    clock = Clock()
    gone = {"speaker"}
    x = make(clock, gone)
    x.on_telemetry(entry(TelemetryName.WAKE, word="hey_jarvis", score=0.9))
    x.on_telemetry(entry(TelemetryName.WAKE, word="some_other_model"))
    x.on_telemetry(entry(TelemetryName.REPLY_DONE, status="completed", input_tokens=100,
                         output_tokens=40, output_audio_tokens=30, cached_tokens=True))
    x.on_telemetry(entry(TelemetryName.REPLY_DONE, status="canceled"))  # no usage: 0
    x.on_telemetry(entry(TelemetryName.REPLY_DONE, status="something new"))
    x.on_telemetry(entry(TelemetryName.LINK_DOWN, reason="Voice Live: throttled (HTTP 429)"))
    x.on_telemetry(entry(TelemetryName.LINK_DOWN, reason="Voice Live: connection closed (1006)"))
    x.on_tool_done("get_time", "ok")
    x.on_tool_done("made_up_by_the_model", "unknown_tool")
    x.on_tool_done("get_time", "weird")
    x.on_telemetry(entry(TelemetryName.USER_SAID, text="not counted"))
    got = samples(x)
    assert got[("edgevoice_turns_total", ())] == 3
    assert got[("edgevoice_device_missing", (("device", "speaker"),))] == 1
    assert got[("edgevoice_device_missing", (("device", "microphone"),))] == 0
    assert got[("edgevoice_wake_detections_total", (("word", "hey_jarvis"),))] == 1
    assert got[("edgevoice_wake_detections_total", (("word", "other"),))] == 1
    assert got[("edgevoice_replies_total", (("status", "completed"),))] == 1
    assert got[("edgevoice_replies_total", (("status", "cancelled"),))] == 1
    assert got[("edgevoice_replies_total", (("status", "other"),))] == 1
    assert got[("edgevoice_tokens_total", (("kind", "input"),))] == 100
    assert got[("edgevoice_tokens_total", (("kind", "output_audio"),))] == 30
    assert got[("edgevoice_tokens_total", (("kind", "cached"),))] == 0  # not a count
    assert got[("edgevoice_reconnects_total", (("cause", "throttled"),))] == 1
    assert got[("edgevoice_reconnects_total", (("cause", "connection_lost"),))] == 1
    assert got[("edgevoice_tool_calls_total", (("outcome", "ok"), ("tool", "get_time")))] == 1
    assert got[("edgevoice_tool_calls_total",
                (("outcome", "unknown_tool"), ("tool", "(undeclared)")))] == 1
    assert got[("edgevoice_tool_calls_total", (("outcome", "other"), ("tool", "get_time")))] == 1
    assert not any(name.endswith("_created") for name, _ in got)


def test_latency_histograms() -> None:
    clock = Clock()
    x = make(clock)
    x.on_figure("wake_to_send_ms", 120.0)
    x.on_figure("first_audio_ms", 800.0)
    x.on_figure("first_audio_ms", -5.0)  # nonsense: dropped
    # A pause 40 ms into the user's speech, the barge-in 200 ms in: silenced at the pause.
    clock.now = 50.060
    x.on_telemetry(entry(TelemetryName.SPEAKER_PAUSED, 50.04, voiced_ms=40))
    clock.now = 50.300
    x.on_telemetry(entry(TelemetryName.BARGE_IN, 50.2, by="local speech", speech_ms=200))
    # Without an early pause: silenced at the barge-in itself.
    clock.now = 60.230
    x.on_telemetry(entry(TelemetryName.BARGE_IN, 60.2, by="local speech", speech_ms=200))
    # A pause that was resumed does not count; a server barge-in has no local onset.
    x.on_telemetry(entry(TelemetryName.SPEAKER_PAUSED, 70.0))
    x.on_telemetry(entry(TelemetryName.SPEAKER_RESUMED, 70.1))
    x.on_telemetry(entry(TelemetryName.BARGE_IN, 70.2, by="server speech"))
    got = samples(x)
    assert got[("edgevoice_wake_to_send_seconds_sum", ())] == pytest.approx(0.12)
    assert got[("edgevoice_speech_end_to_reply_audio_seconds_count", ())] == 1
    assert got[("edgevoice_bargein_seconds_count", ())] == 2
    assert got[("edgevoice_bargein_seconds_sum", ())] == pytest.approx(0.06 + 0.23)
    assert got[("edgevoice_bargein_seconds_bucket", (("le", "0.1"),))] == 1


@pytest.mark.parametrize(("reason", "cause"), [
    ("Voice Live: authentication failed (HTTP 401) at wss://x", "auth"),
    ("Voice Live: HTTP 503 on connect to wss://x", "http_error"),
    ("Voice Live: cannot connect to wss://x: ConnectionRefusedError", "connect_failed"),
    ("Voice Live: connection failed: keepalive ping timeout (code 1011)", "connection_lost"),
    ("disconnected", "other")])
def test_reconnect_causes(reason: str, cause: str) -> None:
    assert reconnect_cause(reason) == cause


async def raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_the_server_answers_scrapes_refuses_the_rest_and_closes() -> None:
    x = make()
    x.on_telemetry(entry(TelemetryName.WAKE, word="hey_jarvis"))
    server = MetricsServer(x, "127.0.0.1", 0)
    await server.start()
    assert server.address is not None
    port = server.address[1]
    url = f"http://127.0.0.1:{port}/metrics"

    def get(path: str) -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as res:
                return res.status, res.headers["Content-Type"], res.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    status, ctype, body = await asyncio.to_thread(get, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=")
    assert 'edgevoice_wake_detections_total{word="hey_jarvis"} 1.0' in body
    assert (await asyncio.to_thread(get, "/metrics?x=1"))[0] == 200
    assert (await asyncio.to_thread(get, "/secrets"))[0] == 404
    post = await raw(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405 ")
    head = await raw(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    # A header beyond the bound, and garbage, are closed without an answer.
    assert await raw(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_BYTES
                     + b"\r\n\r\n") == b""
    assert await raw(port, b"\x00\x01garbage\r\n\r\n") == b"HTTP/1.1 405 Method Not Allowed" \
        b"\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nGET only\n"
    assert server.requests == 3

    # The port is taken while it listens; after close() nothing answers and it is free.
    other = MetricsServer(x, "127.0.0.1", port)
    with pytest.raises(OSError):
        await other.start()
    await server.close()
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(urllib.request.urlopen, url, None, 2)
    await other.start()  # free again at once (a SIGHUP rebuild binds the same port)
    await other.close()


async def test_a_silent_client_is_dropped_after_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevoice import exporter
    monkeypatch.setattr(exporter, "REQUEST_TIMEOUT_S", 0.2)
    server = MetricsServer(make(), "127.0.0.1", 0)
    await server.start()
    assert server.address is not None
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and then nothing
        assert await asyncio.to_thread(s.recv, 100) == b""
    await server.close()
