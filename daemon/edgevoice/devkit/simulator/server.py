"""A loopback Azure AI Voice Live server (api-version 2025-10-01) for tests and demos.

The simulator is an independent reference for the wire protocol: it builds every server event
as a plain dict with the shapes of the protocol reference (never the client's event models), so
the client and the official SDK can both be checked against it.

What it does:

* serves WebSocket upgrades on any path ending in ``/voice-live/realtime`` (others get 404),
  optionally checks ``api-key`` / ``Authorization: Bearer`` (401 otherwise);
* sends ``session.created``; merges ``session.update`` and answers ``session.updated`` with the
  full effective session, or ``error`` (``invalid_request_error`` with ``param``) for bad values;
* decodes ``input_audio_buffer.append`` per the session's input format and runs an energy VAD
  (RMS per 10 ms frame against ``vad_threshold_dbfs``) that emits ``speech_started`` /
  ``speech_stopped`` on the input timeline (ms since the connection's first appended audio),
  commits the utterance and, with ``create_response``, responds; manual commits without VAD;
* conversation items (create/retrieve/delete/truncate) with ids and ordering;
* responses with the full event lifecycle: audio (espeak-ng, or a tone) in ~100 ms deltas at the
  session's output format, transcripts, text-only replies, function calls; ``response.cancel``
  and server-VAD barge-in (``turn_detected``) with optional ``auto_truncate``;
* a :class:`~edgevoice.devkit.simulator.script.Script` chooses replies per turn and injects faults
  (also failed and incomplete replies, usage blocks, ``rate_limits.updated``, ``warning`` and
  transcription failures);
* a ``response.create`` with ``response.pre_generated_assistant_message`` speaks that text and
  consumes no script turn;
* in strict mode, every client event is first checked against the protocol's field tables
  (:mod:`.protocol`): anything they do not allow is an ``error``, not applied.

This module is the server: the listener, the handshake (path, credentials, scripted HTTP
faults), the per-connection faults, the script's progress shared by all connections and the
records tests read. The protocol of one connection is in :mod:`.connection`, the session
object in :mod:`.session`, the reply voice and the VAD in :mod:`.speech`.

Guarantees: binds 127.0.0.1 by default; every server event has a unique ``event_id``; every
``error`` caused by a client event echoes its ``event_id`` in ``error.event_id``; a misbehaving
client only ever gets ``error`` events (the connection stays open); :meth:`Simulator.close`
stops the server and every per-connection task. Everything sent and received is recorded in
:attr:`Simulator.connections` for tests, which can await events instead of sleeping; so is
every ``error`` sent (:class:`SentError`), with the client event it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from edgevoice.devkit.simulator.connection import MAX_AUDIO_BYTES, Connection
from edgevoice.devkit.simulator.script import Call, ConnectionFault, Script, ScriptedError, Turn
from edgevoice.devkit.simulator.speech import Tts

log = logging.getLogger(__name__)

PATH_SUFFIX = "/voice-live/realtime"
SENSITIVE_HEADERS = ("api-key", "authorization")
SENSITIVE_QUERY = ("api-key", "agent-access-token")


# --------------------------------------------------------------------------------------------
# Test-facing records


@dataclass
class AttemptRecord:
    """One upgrade request; ``status`` is 101 when it became a WebSocket connection."""

    path: str
    query: dict[str, str]
    header_names: list[str]
    status: int


@dataclass(frozen=True)
class SentError:
    """An ``error`` event the simulator sent. ``cause`` is the type of the client event it
    answers (None for none: a frame that is not a JSON object, a response that the server's
    VAD started); ``scripted`` marks the script's own ``error`` turns, which say nothing
    about the client."""

    error: dict[str, Any]  # the event's "error": type, code, message, param, event_id
    cause: str | None
    scripted: bool = False


@dataclass
class ConnectionRecord:
    """Everything that happened on one accepted connection (values of credentials redacted)."""

    index: int
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    received_events: list[dict[str, Any]] = field(default_factory=list)
    sent_events: list[dict[str, Any]] = field(default_factory=list)
    appended_audio: bytearray = field(default_factory=bytearray)
    #: Every ``error`` event sent on this connection, in order.
    errors: list[SentError] = field(default_factory=list)
    closed: bool = False
    #: Bytes of audio payload kept in the event lists so far (see :meth:`add`).
    payload_bytes: int = 0

    def add(self, events: list[dict[str, Any]], event: dict[str, Any]) -> None:
        """Record an event. Past ``MAX_AUDIO_BYTES`` of base64 audio per connection, audio
        payloads are replaced by a length marker so a long-running simulator stays bounded."""
        key = "audio" if "audio" in event else "delta" if "delta" in event else None
        payload = event.get(key) if key else None
        if isinstance(payload, str) and len(payload) > 256:
            if self.payload_bytes + len(payload) > MAX_AUDIO_BYTES:
                event = {**event, key: f"<{len(payload)} base64 chars not recorded>"}
            else:
                self.payload_bytes += len(payload)
        events.append(event)

    def add_error(self, error: dict[str, Any], cause: str | None, scripted: bool) -> None:
        """Record an ``error`` event that was sent (see :class:`SentError`)."""
        self.errors.append(SentError(error, cause, scripted))

    @property
    def header_names(self) -> list[str]:
        return list(self.headers)

    def received(self, type_: str) -> list[dict[str, Any]]:
        """Client events of ``type_`` received on this connection, in order."""
        return [e for e in self.received_events if e.get("type") == type_]

    def sent(self, type_: str) -> list[dict[str, Any]]:
        """Server events of ``type_`` sent on this connection, in order."""
        return [e for e in self.sent_events if e.get("type") == type_]


# --------------------------------------------------------------------------------------------
# Script progress shared by all connections of one simulator


@dataclass
class Plan:
    """What one response does."""

    turn_index: int | None
    say: str | None
    calls: tuple[Call, ...] = ()
    error: ScriptedError | None = None
    delay_ms: int = 0
    drop: str | None = None
    close_code: int | None = None
    turn: Turn | None = None
    speech_started_at_ms: int | None = None
    line: bool = False  # a pre_generated_assistant_message: spoken as given, no script turn


class Simulator:
    """Loopback Voice Live server. Use as ``async with Simulator(...) as sim:``.

    ``pace`` 0 sends reply audio as fast as possible, ``k > 0`` at k times real time.
    ``api_key``/``accept_token`` enable authentication (HTTP 401 otherwise).

    ``strict`` checks every client event against the protocol's field tables
    (:mod:`.protocol`) before handling it: an unknown key at any depth, a value of the wrong
    JSON type or outside its enumeration, or a missing required key is answered with an
    ``error`` (``invalid_request_error``, ``param`` the key path, ``event_id`` the event's)
    and the event is not applied. Without it unknown keys are tolerated, as a newer service
    would tolerate them, and only the values the simulator uses are checked."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        script: Script | None = None,
        api_key: str | None = None,
        accept_token: Callable[[str], bool] | None = None,
        pace: float = 0.0,
        tts: bool = True,
        vad_threshold_dbfs: float = -45.0,
        strict: bool = False,
    ) -> None:
        if pace < 0:
            raise ValueError("pace must be >= 0")
        self.host = host
        self.script = script or Script()
        self.api_key = api_key
        self.accept_token = accept_token
        self.pace = pace
        self.vad_threshold_dbfs = vad_threshold_dbfs
        self.strict = strict
        self.connections: list[ConnectionRecord] = []
        self.attempts: list[AttemptRecord] = []
        self._requested_port = port
        self._server: Server | None = None
        self._tts = Tts(tts)
        self._ids = itertools.count(1)
        self._id_tag = secrets.token_hex(3)
        self._changed = asyncio.Event()
        self._faults: dict[ServerConnection, ConnectionFault] = {}
        self._live: set[Connection] = set()
        self.injected = 0  # raw frames sent by inject()
        #: Every scripted fault that fired, in order, as ``(time.monotonic(), kind)``: kind is
        #: ``drop:<point>`` (a turn or connection drop point), ``http:<status>``, ``silent``
        #: or ``no_pong``. One entry per script entry at most, so it stays bounded.
        self.fired: list[tuple[float, str]] = []
        # Script progress (shared by every connection, see module docstring of script.py).
        self.turn_index = 0
        self._connection_index = 0
        self._fired: set[tuple[str, int, str]] = set()
        self._pending_tools: Turn | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; idempotent."""
        if self._server is not None:
            return
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            ping_interval=None,  # the simulator never drops a client on its own
            max_size=16 * 1024 * 1024,  # appends may carry up to 15 MiB
            compression=None,
        )
        # A restart after close() serves the same URL, so reconnecting clients find it again.
        self._requested_port = self.port

    async def close(self) -> None:
        """Close every connection (1001), stop all tasks and the listener; idempotent.
        :meth:`start` may be called again afterwards (same port, script progress kept)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except TimeoutError:
                log.warning("simulator connections did not close in time; aborting them")
                for session in list(self._live):
                    session.abort()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` without a path (clients append ``/voice-live/realtime``)."""
        return f"ws://{self.host}:{self.port}"

    # -- test helpers ------------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    @property
    def appended_audio(self) -> bytes:
        """All decoded input PCM16 received, over every connection."""
        return b"".join(bytes(c.appended_audio) for c in self.connections)

    def received(self, type_: str) -> list[dict[str, Any]]:
        """Client events of ``type_`` over every connection, in order."""
        return [e for c in self.connections for e in c.received(type_)]

    def sent(self, type_: str) -> list[dict[str, Any]]:
        """Server events of ``type_`` over every connection, in order."""
        return [e for c in self.connections for e in c.sent(type_)]

    @property
    def errors(self) -> list[SentError]:
        """Every ``error`` event sent, over every connection, in order."""
        return [e for c in self.connections for e in c.errors]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; re-checked on every recorded change."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if predicate():
                    return
                await changed.wait()

    async def wait_for_event(
        self, type_: str, timeout: float = 5.0, *, count: int = 1, sent: bool = False
    ) -> dict[str, Any]:
        """Wait until ``count`` client events of ``type_`` were received (``sent=True``: server
        events sent) over all connections; returns the ``count``-th one."""
        pick = self.sent if sent else self.received
        await self.wait_until(lambda: len(pick(type_)) >= count, timeout)
        return pick(type_)[count - 1]

    async def wait_for_connections(self, n: int, timeout: float = 5.0) -> None:
        """Wait until ``n`` WebSocket connections were accepted."""
        await self.wait_until(lambda: len(self.connections) >= n, timeout)

    async def wait_for_attempts(self, n: int, timeout: float = 5.0) -> None:
        """Wait until ``n`` upgrade requests arrived (accepted or rejected)."""
        await self.wait_until(lambda: len(self.attempts) >= n, timeout)

    async def wait_closed(self, index: int, timeout: float = 5.0) -> None:
        """Wait until connection number ``index`` has ended."""
        await self.wait_until(
            lambda: len(self.connections) > index and self.connections[index].closed, timeout
        )

    async def inject(self, frames: Iterable[str | bytes]) -> int:
        """Send ``frames`` exactly as given (valid events or not: fault tests) on the newest
        open connection, in order, between the simulator's own events. Returns how many were
        sent before the connection ended (0 without an open connection). They are counted in
        :attr:`injected`, not recorded as sent events."""
        live = [s for s in self._live if not s.rec.closed]
        if not live:
            return 0
        session = max(live, key=lambda s: s.rec.index)
        sent = 0
        for frame in frames:
            try:
                await session.ws.send(frame)
            except ConnectionClosed:
                break
            sent += 1
        self.injected += sent
        return sent

    async def drop_connections(self, close_code: int | None = None) -> int:
        """Drop every open connection now, as a failing service would (fault tests and the
        reconnect benchmark): a close frame with ``close_code``, else an abrupt TCP abort
        (the client sees 1006). The server keeps accepting. Returns how many were dropped."""
        live = [s for s in self._live if not s.rec.closed]
        for session in live:
            session.dropped = True  # its loop ends after the message in hand, if any
            if close_code is None:
                session.abort()
            else:
                with contextlib.suppress(ConnectionClosed):
                    await session.ws.close(close_code, "dropped by the simulator")
        return len(live)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _new_id(self, prefix: str) -> str:
        # A per-instance tag, as the service's ids never repeat across sessions: a client
        # that outlives one simulator must not see the next one reuse its item ids.
        return f"{prefix}_{self._id_tag}{next(self._ids):06d}"

    # -- script progress ---------------------------------------------------------------------

    def current_turn(self) -> Turn | None:
        """The turn the next non-follow-up response will use (None when turns ran out)."""
        turns = self.script.turns
        return turns[self.turn_index] if self.turn_index < len(turns) else None

    def _fire(self, drop: str, turn_index: int | None = None) -> bool:
        """True exactly once per (turn, drop point)."""
        idx = self.turn_index if turn_index is None else turn_index
        key = ("turn", idx, drop)
        if key in self._fired:
            return False
        self._fired.add(key)
        self.fired.append((time.monotonic(), f"drop:{drop}"))
        return True

    def _plan(self, follow_up: bool) -> Plan:
        if follow_up:
            pending, self._pending_tools = self._pending_tools, None
            text = pending.after_tools if pending and pending.after_tools else None
            return Plan(turn_index=None, say=text or self.script.default_after_tools)
        self._pending_tools = None
        turn = self.current_turn()
        if turn is None:
            return Plan(turn_index=None, say=self.script.default_say)
        idx = self.turn_index
        self.turn_index += 1
        drop = turn.drop if turn.drop in ("mid-audio", "after-function-call",
                                          "after-response-done") else None
        if drop is not None and ("turn", idx, drop) in self._fired:
            drop = None
        say = turn.say
        if say is None and not turn.calls and turn.error is None:
            say = self.script.default_say
        return Plan(
            turn_index=idx,
            say=say,
            calls=turn.calls,
            error=turn.error,
            delay_ms=turn.delay_ms,
            drop=drop,
            close_code=turn.close_code,
            turn=turn,
            speech_started_at_ms=turn.speech_started_at_ms,
        )

    def _line_plan(self, text: str) -> Plan:
        """A response.create with a pre_generated_assistant_message: that text is spoken
        (normal response events) and no script turn is consumed."""
        return Plan(turn_index=None, say=text, line=True)

    # -- handshake ---------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        query = _redacted_query(split.query)
        names = list(request.headers.keys())

        def reject(status: int, text: str) -> Response:
            self.attempts.append(AttemptRecord(request.path.split("?")[0], query, names, status))
            self._notify()
            return connection.respond(status, text)

        if not split.path.endswith(PATH_SUFFIX):
            return reject(404, "Not Found\n")
        if not self._authorized(request.headers, split.query):
            return reject(401, "Unauthorized: missing or invalid credentials\n")
        faults = self.script.connections
        fault = faults[self._connection_index] if self._connection_index < len(faults) else None
        self._connection_index += 1
        if fault is not None and fault.http_status is not None:
            self.fired.append((time.monotonic(), f"http:{fault.http_status}"))
            response = reject(fault.http_status, f"Scripted HTTP {fault.http_status}\n")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = str(math.ceil(fault.retry_after))
            return response
        self.attempts.append(AttemptRecord(split.path, query, names, 101))
        self._faults[connection] = fault or ConnectionFault()
        self._notify()
        return None

    def _authorized(self, headers: Headers, raw_query: str) -> bool:
        if self.api_key is None and self.accept_token is None:
            return True
        key = headers.get("api-key")
        if key is None:
            key = dict(parse_qsl(raw_query)).get("api-key")  # documented for browsers
        if key is not None:
            return self.api_key is not None and hmac.compare_digest(
                key.encode(), self.api_key.encode()
            )
        auth = headers.get("Authorization", "")
        if auth[:7].lower() == "bearer " and self.accept_token is not None:
            try:
                return bool(self.accept_token(auth[7:].strip()))
            except Exception:  # a broken validator means "no", never a crash
                log.exception("accept_token raised")
                return False
        return False

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None  # set once the handshake succeeded
        split = urlsplit(request.path)
        headers = {
            k: ("<redacted>" if k.lower() in SENSITIVE_HEADERS else v)
            for k, v in request.headers.raw_items()
        }
        record = ConnectionRecord(
            index=len(self.connections),
            path=split.path,
            query=_redacted_query(split.query),
            headers=headers,
        )
        self.connections.append(record)
        self._notify()
        fault = self._faults.pop(ws, ConnectionFault())
        if fault.no_pong:
            self.fired.append((time.monotonic(), "no_pong"))
            suppress_pongs(ws)
        if fault.silent:
            self.fired.append((time.monotonic(), "silent"))
        if fault.drop is not None:
            self.fired.append((time.monotonic(), f"drop:{fault.drop}"))
        connection = Connection(self, ws, record, fault)
        self._live.add(connection)
        try:
            await connection.run()
        except Exception:  # never let one connection take the server down
            log.exception("simulator session failed")
        finally:
            self._live.discard(connection)
            record.closed = True
            self._notify()


def _redacted_query(raw: str) -> dict[str, str]:
    return {
        k: ("<redacted>" if k.lower() in SENSITIVE_QUERY else v)
        for k, v in parse_qsl(raw, keep_blank_values=True)
    }


def suppress_pongs(ws: ServerConnection) -> None:
    """Scripted fault: the protocol still parses pings but its automatic pongs are dropped."""
    protocol = ws.protocol
    original = protocol.send_frame

    def send_frame(frame: Frame) -> None:
        if frame.opcode is not Opcode.PONG:
            original(frame)

    protocol.send_frame = send_frame  # type: ignore[method-assign]
