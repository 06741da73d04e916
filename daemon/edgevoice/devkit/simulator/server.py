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
* a :class:`~edgevoice.devkit.simulator.script.Script` chooses replies per turn and injects faults.

Guarantees: binds 127.0.0.1 by default; every server event has a unique ``event_id``; every
``error`` caused by a client event echoes its ``event_id`` in ``error.event_id``; a misbehaving
client only ever gets ``error`` events (the connection stays open); :meth:`Simulator.close`
stops the server and every per-connection task. Everything sent and received is recorded in
:attr:`Simulator.connections` for tests, which can await events instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import hmac
import itertools
import json
import logging
import math
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from edgevoice.audio.convert import (
    OUTPUT_FORMAT_RATES,
    decode,
    encode,
    read_wav,
    resample,
    wire_rate,
)
from edgevoice.devkit.simulator.script import Call, ConnectionFault, Script, ScriptedError, Turn

log = logging.getLogger(__name__)

PATH_SUFFIX = "/voice-live/realtime"
INPUT_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
INPUT_RATES = (8000, 16000, 24000, 44100, 48000)
TURN_DETECTION_TYPES = (
    "server_vad",
    "semantic_vad",
    "azure_semantic_vad",
    "azure_semantic_vad_en",
    "azure_semantic_vad_multilingual",
)
MODALITIES = ("text", "audio", "animation", "avatar")
#: Reply audio is sent in deltas of this length.
CHUNK_MS = 100
#: VAD analysis frame.
FRAME_MS = 10
#: Bound on the input buffer and on the per-connection recording (tests only need a few MB).
MAX_AUDIO_BYTES = 64 * 1024 * 1024
SENSITIVE_HEADERS = ("api-key", "authorization")
SENSITIVE_QUERY = ("api-key", "agent-access-token")


class _ProtocolError(Exception):
    """A client mistake, reported as an ``error`` event (the connection stays open)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class _Dropped(Exception):
    """A scripted drop closed the connection; the current task ends quietly."""


# --------------------------------------------------------------------------------------------
# Test-facing records


@dataclass
class AttemptRecord:
    """One upgrade request; ``status`` is 101 when it became a WebSocket connection."""

    path: str
    query: dict[str, str]
    header_names: list[str]
    status: int


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
# Speech synthesis


class _Tts:
    """espeak-ng speech (or a 440 Hz tone) as PCM16 mono, cached per (text, rate)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and shutil.which("espeak-ng") is not None
        self._cache: dict[tuple[str, int], bytes] = {}
        self._dir: Path | None = None
        self._seq = itertools.count()

    async def pcm(self, text: str, rate: int) -> bytes:
        key = (text, rate)
        if key not in self._cache:
            native = await self._synthesize(text)
            if native is None:
                self._cache[key] = _tone(text, rate)
            else:
                data, native_rate = native
                self._cache[key] = resample(data, native_rate, rate)
        return self._cache[key]

    async def _synthesize(self, text: str) -> tuple[bytes, int] | None:
        if not self.enabled:
            return None
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="edgevoice-sim-"))
        out = self._dir / f"tts-{next(self._seq)}.wav"
        try:
            # Text via stdin so a leading "-" is never parsed as an option; the subprocess
            # keeps the event loop free while espeak-ng runs.
            proc = await asyncio.create_subprocess_exec(
                "espeak-ng", "-v", "en-us", "-w", str(out), "--stdin",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await asyncio.wait_for(proc.communicate(text.encode("utf-8")), 10)
            except (TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            if proc.returncode != 0:
                return None
            data, rate = read_wav(out)
            return (data, rate) if data else None
        except (OSError, ValueError, EOFError, TimeoutError) as exc:
            log.warning("espeak-ng failed (%s); using a tone", exc)
            return None
        finally:
            out.unlink(missing_ok=True)

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _tone(text: str, rate: int) -> bytes:
    """440 Hz at -10 dBFS, ~65 ms per character (0.3–20 s), 10 ms fades against clicks."""
    seconds = min(max(len(text) * 0.065, 0.3), 20.0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    wave = 0.316 * np.sin(2 * np.pi * 440.0 * t)
    fade = min(n // 2, rate // 100)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return (wave * 32767).astype("<i2").tobytes()


# --------------------------------------------------------------------------------------------
# Session configuration


def _default_session(model: str | None) -> dict[str, Any]:
    """The effective session of a new connection (protocol reference §10.1)."""
    return {
        "id": f"sess_{secrets.token_hex(10)}",
        "object": "realtime.session",
        "model": model,
        "modalities": ["text", "audio"],
        "instructions": "",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_sampling_rate": 24000,
        "input_audio_transcription": None,
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
        },
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
    }


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_modalities(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise _ProtocolError("modalities must be a list of strings", param)
    bad = [m for m in value if m not in MODALITIES]
    if bad:
        raise _ProtocolError(f"Invalid modality {bad[0]!r}", param)
    if "text" not in value:
        raise _ProtocolError("modalities must include 'text'", param)
    return list(value)


def _check_output_format(value: Any, param: str) -> str:
    if not isinstance(value, str) or value not in OUTPUT_FORMAT_RATES:
        raise _ProtocolError(
            f"Invalid output_audio_format {value!r}; expected one of "
            f"{', '.join(OUTPUT_FORMAT_RATES)}",
            param,
        )
    return str(value)


def _check_optional_typed(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _ProtocolError(f"{param.split('.')[-1]} must be null or an object with 'type'", param)
    return value


def _check_turn_detection(value: Any) -> dict[str, Any] | None:
    param = "session.turn_detection"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _ProtocolError("turn_detection must be null or an object", param)
    if value.get("type") not in TURN_DETECTION_TYPES:
        raise _ProtocolError(
            f"Invalid turn_detection.type {value.get('type')!r}", f"{param}.type"
        )
    td = dict(value)
    if "threshold" in td and not (_is_number(td["threshold"]) and 0 <= td["threshold"] <= 1):
        raise _ProtocolError("threshold must be a number between 0 and 1", f"{param}.threshold")
    for key in ("prefix_padding_ms", "silence_duration_ms", "speech_duration_ms"):
        if key in td and not (_is_int(td[key]) and 0 <= td[key] <= 60_000):
            raise _ProtocolError(f"{key} must be an integer between 0 and 60000", f"{param}.{key}")
    for key in ("create_response", "interrupt_response", "auto_truncate", "remove_filler_words"):
        if key in td and not isinstance(td[key], bool):
            raise _ProtocolError(f"{key} must be a boolean", f"{param}.{key}")
    if td["type"] != "semantic_vad":
        # The effective config shows the defaults the VAD really uses.
        td.setdefault("threshold", 0.5)
        td.setdefault("prefix_padding_ms", 300)
        td.setdefault("silence_duration_ms", 500)
    return td


def _check_tools(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _ProtocolError("tools must be a list", "session.tools")
    for i, tool in enumerate(value):
        param = f"session.tools[{i}]"
        if not isinstance(tool, dict):
            raise _ProtocolError("tool must be an object", param)
        if tool.get("type") == "function":
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise _ProtocolError("function tool needs a name", f"{param}.name")
            params = tool.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise _ProtocolError(
                    "parameters must be a JSON schema object", f"{param}.parameters"
                )
        elif tool.get("type") != "mcp":
            raise _ProtocolError(f"Invalid tool type {tool.get('type')!r}", f"{param}.type")
    return value


def _merge_session(current: dict[str, Any], update: Any, audio_produced: bool) -> dict[str, Any]:
    """Apply a partial ``session.update``: only present fields change, ``null`` disables the
    nullable objects. All-or-nothing: any invalid field rejects the whole update."""
    if not isinstance(update, dict):
        raise _ProtocolError("session must be an object", "session")
    new = copy.deepcopy(current)
    for key, value in update.items():
        param = f"session.{key}"
        if key in ("id", "object"):
            continue  # read-only; echoing them back is harmless
        if key == "model":
            if value is not None and value != current.get("model"):
                raise _ProtocolError("The model of a session cannot be changed", param)
            continue
        if key == "modalities":
            value = _check_modalities(value, param)
        elif key == "instructions":
            if not isinstance(value, str):
                raise _ProtocolError("instructions must be a string", param)
        elif key == "voice":
            if not (isinstance(value, str) and value) and not (
                isinstance(value, dict) and isinstance(value.get("type"), str)
            ):
                raise _ProtocolError("voice must be a name or an object with 'type'", param)
            if audio_produced and value != current.get("voice"):
                raise _ProtocolError(
                    "Cannot update a session's voice after the model has produced audio",
                    param,
                    "cannot_update_voice",
                )
        elif key == "input_audio_format":
            if value not in INPUT_FORMATS:
                raise _ProtocolError(
                    f"Invalid input_audio_format {value!r}; expected one of "
                    f"{', '.join(INPUT_FORMATS)}",
                    param,
                )
        elif key == "input_audio_sampling_rate":
            if value not in INPUT_RATES or not _is_int(value):
                raise _ProtocolError(
                    f"Invalid input_audio_sampling_rate {value!r}; expected one of "
                    f"{', '.join(map(str, INPUT_RATES))}",
                    param,
                )
        elif key == "output_audio_format":
            value = _check_output_format(value, param)
        elif key == "turn_detection":
            value = _check_turn_detection(value)
        elif key in (
            "input_audio_transcription",
            "input_audio_noise_reduction",
            "input_audio_echo_cancellation",
        ):
            if key == "input_audio_transcription":
                if value is not None and not (
                    isinstance(value, dict) and isinstance(value.get("model"), str)
                ):
                    raise _ProtocolError("input_audio_transcription needs a model", param)
            else:
                value = _check_optional_typed(value, param)
        elif key == "tools":
            value = _check_tools(value)
        elif key == "tool_choice":
            ok = value in ("auto", "none", "required") or (
                isinstance(value, dict)
                and value.get("type") == "function"
                and isinstance(value.get("name"), str)
            )
            if not ok:
                raise _ProtocolError(f"Invalid tool_choice {value!r}", param)
        elif key == "temperature":
            if not (_is_number(value) and 0 <= value <= 2):
                raise _ProtocolError("temperature must be a number between 0 and 2", param)
        elif key == "max_response_output_tokens":
            if value != "inf" and not (_is_int(value) and 1 <= value <= 4096):
                raise _ProtocolError("must be an integer 1..4096 or 'inf'", param)
        new[key] = value  # unknown fields are kept: the real service knows more than we check
    if new["input_audio_format"] != "pcm16":
        if "input_audio_sampling_rate" in update and new["input_audio_sampling_rate"] != 8000:
            raise _ProtocolError(
                "G.711 input is 8000 Hz", "session.input_audio_sampling_rate"
            )
        new["input_audio_sampling_rate"] = 8000
    return new


# --------------------------------------------------------------------------------------------
# Energy VAD


@dataclass
class _Vad:
    """Frame-level state of the energy VAD; times are ms on the input timeline."""

    speaking: bool = False
    run_start: float | None = None
    run_ms: float = 0.0
    gap_ms: float = 0.0
    last_speech_end: float = 0.0
    onset: float = 0.0
    item_id: str | None = None

    def reset(self) -> None:
        self.speaking = False
        self._end_run()
        self.item_id = None

    def _end_run(self) -> None:
        """Forget the current run of voiced frames: the next onset is confirmed afresh."""
        self.run_start, self.run_ms, self.gap_ms = None, 0.0, 0.0

    def step(self, speech: bool, t: float, min_speech_ms: float, silence_ms: float) -> str | None:
        """Feed one frame starting at ``t``; returns "start", "stop" or None."""
        end = t + FRAME_MS
        if not self.speaking:
            if speech:
                if self.run_start is None:
                    self.run_start = t
                self.run_ms += FRAME_MS
                self.gap_ms = 0.0
                if self.run_ms >= min_speech_ms:
                    self.speaking = True
                    self.onset = self.run_start
                    self.last_speech_end = end
                    return "start"
            elif self.run_start is not None:
                # Tolerate short dips (stop consonants) while confirming an onset.
                self.gap_ms += FRAME_MS
                if self.gap_ms > 40:
                    self._end_run()
            return None
        if speech:
            self.last_speech_end = end
        elif end - self.last_speech_end >= silence_ms:
            self.speaking = False
            self._end_run()
            return "stop"
        return None


# --------------------------------------------------------------------------------------------
# Script progress shared by all connections of one simulator


@dataclass
class _Plan:
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


@dataclass
class _Active:
    """The response in progress on a connection."""

    id: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    audio_item_id: str | None = None
    first_audio_at: float | None = None
    audio_ms_sent: float = 0.0
    transcript_sent: str = ""
    heard: bool = False

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the response is cancelled."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)


class Simulator:
    """Loopback Voice Live server. Use as ``async with Simulator(...) as sim:``.

    ``pace`` 0 sends reply audio as fast as possible, ``k > 0`` at k times real time.
    ``api_key``/``accept_token`` enable authentication (HTTP 401 otherwise)."""

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
    ) -> None:
        if pace < 0:
            raise ValueError("pace must be >= 0")
        self.host = host
        self.script = script or Script()
        self.api_key = api_key
        self.accept_token = accept_token
        self.pace = pace
        self.vad_threshold_dbfs = vad_threshold_dbfs
        self.connections: list[ConnectionRecord] = []
        self.attempts: list[AttemptRecord] = []
        self._requested_port = port
        self._server: Server | None = None
        self._tts = _Tts(tts)
        self._ids = itertools.count(1)
        self._id_tag = secrets.token_hex(3)
        self._changed = asyncio.Event()
        self._faults: dict[ServerConnection, ConnectionFault] = {}
        self._sessions: set[_Session] = set()
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
                for session in list(self._sessions):
                    session.abort()
        self._tts.close()

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
        live = [s for s in self._sessions if not s.rec.closed]
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
        live = [s for s in self._sessions if not s.rec.closed]
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

    def _plan(self, follow_up: bool) -> _Plan:
        if follow_up:
            pending, self._pending_tools = self._pending_tools, None
            text = pending.after_tools if pending and pending.after_tools else None
            return _Plan(turn_index=None, say=text or self.script.default_after_tools)
        self._pending_tools = None
        turn = self.current_turn()
        if turn is None:
            return _Plan(turn_index=None, say=self.script.default_say)
        idx = self.turn_index
        self.turn_index += 1
        drop = turn.drop if turn.drop in ("mid-audio", "after-function-call",
                                          "after-response-done") else None
        if drop is not None and ("turn", idx, drop) in self._fired:
            drop = None
        say = turn.say
        if say is None and not turn.calls and turn.error is None:
            say = self.script.default_say
        return _Plan(
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
        session = _Session(self, ws, record, fault)
        self._sessions.add(session)
        try:
            await session.run()
        except Exception:  # never let one connection take the server down
            log.exception("simulator session failed")
        finally:
            self._sessions.discard(session)
            record.closed = True
            self._notify()


def _redacted_query(raw: str) -> dict[str, str]:
    return {
        k: ("<redacted>" if k.lower() in SENSITIVE_QUERY else v)
        for k, v in parse_qsl(raw, keep_blank_values=True)
    }


def _usage(in_audio_ms: float, out_audio_ms: float, out_text: str) -> dict[str, Any]:
    """Plausible token usage (audio ~ 10 tokens/s in, 20 tokens/s out, words ~ 1.3 tokens)."""
    text_out = math.ceil(len(out_text.split()) * 1.3)
    audio_in = math.ceil(in_audio_ms / 100)
    audio_out = math.ceil(out_audio_ms / 50)
    text_in = 120
    inp, out = text_in + audio_in, text_out + audio_out
    return {
        "total_tokens": inp + out,
        "input_tokens": inp,
        "output_tokens": out,
        "input_token_details": {"cached_tokens": 0, "text_tokens": text_in,
                                "audio_tokens": audio_in},
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


# --------------------------------------------------------------------------------------------
# One connection


class _Session:
    """Protocol state of one connection. Events are handled in arrival order by :meth:`run`;
    a response runs as its own task so cancels and audio keep flowing meanwhile."""

    def __init__(
        self, sim: Simulator, ws: ServerConnection, record: ConnectionRecord,
        fault: ConnectionFault,
    ) -> None:
        self.sim = sim
        self.ws = ws
        self.rec = record
        self.fault = fault
        model = record.query.get("model") or None
        self.config = _default_session(model)
        self.items: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.item_audio_ms: dict[str, float] = {}
        self.audio_produced = False
        self.buffer = bytearray()
        self.buffer_ms = 0.0
        self.last_input_ms = 0.0
        self.timeline_ms = 0.0
        self.frame_rest = b""
        self.vad = _Vad()
        self.active: _Active | None = None
        self.tool_outputs_pending = False
        self.dropped = False
        self.handlers: dict[str, Callable[[dict[str, Any], str | None], Any]] = {
            "session.update": self.on_session_update,
            "input_audio_buffer.append": self.on_append,
            "input_audio_buffer.commit": self.on_commit,
            "input_audio_buffer.clear": self.on_clear,
            "conversation.item.create": self.on_item_create,
            "conversation.item.retrieve": self.on_item_retrieve,
            "conversation.item.delete": self.on_item_delete,
            "conversation.item.truncate": self.on_item_truncate,
            "response.create": self.on_response_create,
            "response.cancel": self.on_response_cancel,
        }

    # -- plumbing ----------------------------------------------------------------------------

    async def run(self) -> None:
        fired = self.sim.fired
        if self.fault.no_pong:
            fired.append((time.monotonic(), "no_pong"))
            _suppress_pongs(self.ws)
        if self.fault.silent:
            fired.append((time.monotonic(), "silent"))
        if self.fault.drop is not None:
            fired.append((time.monotonic(), f"drop:{self.fault.drop}"))
        try:
            if self.fault.drop == "before-session-created":
                await self.drop(self.fault.close_code)
                return
            if not self.fault.silent:
                await self.send({"type": "session.created", "session": copy.deepcopy(self.config)})
            async for message in self.ws:
                if self.fault.silent:
                    self.record_received(message)
                    continue
                await self.dispatch(message)
                if self.dropped:
                    break
        except (ConnectionClosed, _Dropped):
            pass
        finally:
            active = self.active
            if active is not None and active.task is not None and not active.task.done():
                active.task.cancel()
                with contextlib.suppress(BaseException):
                    await active.task

    def abort(self) -> None:
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    async def drop(self, close_code: int | None) -> None:
        """Scripted drop: a close frame with ``close_code``, else an abrupt TCP abort (1006)."""
        self.dropped = True
        if close_code is not None:
            await self.ws.close(close_code, "scripted drop")
        else:
            self.abort()
        raise _Dropped

    async def send(self, event: dict[str, Any]) -> None:
        event = {"type": event["type"], "event_id": self.sim._new_id("event"), **event}
        # Recorded before sending so the record keeps wire order across concurrent senders.
        self.rec.add(self.rec.sent_events, event)
        try:
            await self.ws.send(json.dumps(event))
        except ConnectionClosed:
            # Never delivered: the record only holds what the client could have received.
            for i in range(len(self.rec.sent_events) - 1, -1, -1):
                if self.rec.sent_events[i].get("event_id") == event["event_id"]:
                    del self.rec.sent_events[i]
                    break
            raise
        finally:
            self.sim._notify()

    async def error(
        self,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        await self.send({
            "type": "error",
            "error": {"type": type_, "code": code, "message": message, "param": param,
                      "event_id": event_id},
        })

    def record_received(self, message: str | bytes) -> dict[str, Any] | None:
        try:
            text = message.decode("utf-8") if isinstance(message, bytes) else message
            event = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        if isinstance(event, dict):
            self.rec.add(self.rec.received_events, event)
            self.sim._notify()
            return event
        return None

    async def dispatch(self, message: str | bytes) -> None:
        event = self.record_received(message)
        if event is None:
            await self.error("Invalid event: the message is not a JSON object", code="invalid_json")
            return
        raw_id = event.get("event_id")
        event_id = raw_id if isinstance(raw_id, str) else None
        etype = event.get("type")
        handler = self.handlers.get(etype) if isinstance(etype, str) else None
        if handler is None:
            await self.error(
                f"Invalid value: {etype!r}. Unsupported or unknown client event type.",
                param="type",
                code="invalid_value",
                event_id=event_id,
            )
            return
        try:
            await handler(event, event_id)
        except _ProtocolError as exc:
            await self.error(exc.message, param=exc.param, code=exc.code, event_id=event_id)
        except (ConnectionClosed, _Dropped, asyncio.CancelledError):
            raise
        except Exception:
            # A simulator bug must not end the session: report it like the service would.
            log.exception("simulator failed on %s", etype)
            await self.error("The server had an error while processing your request.",
                             type_="server_error", event_id=event_id)

    # -- conversation store ------------------------------------------------------------------

    async def _announce_item(self, response_id: str, output_index: int,
                             item: dict[str, Any]) -> None:
        """output_item.added then conversation.item.created for a new response item."""
        await self.send({"type": "response.output_item.added", "response_id": response_id,
                         "output_index": output_index, "item": copy.deepcopy(item)})
        prev = self.last_item_id()
        self.add_item(item)
        await self.send({"type": "conversation.item.created", "previous_item_id": prev,
                         "item": copy.deepcopy(item)})

    async def _finish_item(self, response_id: str, output_index: int,
                           item: dict[str, Any]) -> dict[str, Any]:
        """Store the final item (unless the client deleted it meanwhile), then
        output_item.done; returns the item."""
        if item["id"] in self.items:
            self.items[item["id"]] = copy.deepcopy(item)
        await self.send({"type": "response.output_item.done", "response_id": response_id,
                         "output_index": output_index, "item": copy.deepcopy(item)})
        return item

    def last_item_id(self) -> str | None:
        return self.order[-1] if self.order else None

    def add_item(self, item: dict[str, Any], after: str | None = None,
                 at_root: bool = False) -> None:
        self.items[item["id"]] = copy.deepcopy(item)
        if at_root:
            self.order.insert(0, item["id"])
        elif after is not None:
            self.order.insert(self.order.index(after) + 1, item["id"])
        else:
            self.order.append(item["id"])

    # -- session -----------------------------------------------------------------------------

    async def on_session_update(self, event: dict[str, Any], event_id: str | None) -> None:
        old_rate = self.input_rate()
        self.config = _merge_session(self.config, event.get("session"), self.audio_produced)
        if self.input_rate() != old_rate:
            self.frame_rest = b""  # a partial frame of the old rate would be misread
        if self.config["turn_detection"] is None:
            self.vad.reset()
        await self.send({"type": "session.updated", "session": copy.deepcopy(self.config)})
        turn = self.sim.current_turn()
        if turn is not None and turn.drop == "after-session-updated" and self.sim._fire(turn.drop):
            await self.drop(turn.close_code)

    def input_rate(self) -> int:
        """Sample rate of the appended audio (G.711 is always 8 kHz)."""
        return wire_rate(self.config["input_audio_format"],
                         int(self.config["input_audio_sampling_rate"]))

    # -- input audio -------------------------------------------------------------------------

    async def on_append(self, event: dict[str, Any], event_id: str | None) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise _ProtocolError("audio must be a base64 string", "audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise _ProtocolError("Invalid base64 in audio", "audio", "invalid_base64") from None
        pcm = decode(raw, self.config["input_audio_format"])
        if len(self.buffer) + len(pcm) > MAX_AUDIO_BYTES:
            raise _ProtocolError("Input audio buffer is full; commit or clear it", "audio")
        if len(self.rec.appended_audio) + len(pcm) <= MAX_AUDIO_BYTES:
            self.rec.appended_audio += pcm
        rate = self.input_rate()
        self.buffer += pcm
        self.buffer_ms += len(pcm) / 2 / rate * 1000
        td = self.config["turn_detection"]
        if td is None:
            self.timeline_ms += len(pcm) / 2 / rate * 1000
            if self.buffer_ms >= 300:
                await self.maybe_drop_mid_user_audio()
            return
        await self.run_vad(pcm, rate, td)

    async def run_vad(self, pcm: bytes, rate: int, td: dict[str, Any]) -> None:
        data = self.frame_rest + pcm
        frame_bytes = rate * FRAME_MS // 1000 * 2
        n = len(data) // frame_bytes
        self.frame_rest = data[n * frame_bytes:]
        if n == 0:
            return
        frames = np.frombuffer(data[: n * frame_bytes], dtype="<i2").reshape(n, -1)
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
        dbfs = 20 * np.log10(np.maximum(rms, 1e-3) / 32768.0)
        # turn_detection.threshold shifts the energy gate: +-10 dB around 0.5.
        gate = self.sim.vad_threshold_dbfs + (float(td.get("threshold", 0.5)) - 0.5) * 20
        min_speech = float(td.get("speech_duration_ms") or 100)
        silence = float(td.get("silence_duration_ms", 500))
        for level in dbfs:
            t = self.timeline_ms
            self.timeline_ms += FRAME_MS
            change = self.vad.step(bool(level > gate), t, min_speech, silence)
            if change == "start":
                await self.on_speech_started(td)
            elif change == "stop":
                await self.on_speech_stopped(td)
        if not self.vad.speaking:
            # Only the recent past can become part of an utterance: bound the idle buffer.
            keep = int((float(td.get("prefix_padding_ms", 300)) + 1000) / 1000 * rate) * 2
            if len(self.buffer) > keep:
                del self.buffer[: len(self.buffer) - keep]
                self.buffer_ms = len(self.buffer) / 2 / rate * 1000

    async def on_speech_started(self, td: dict[str, Any]) -> None:
        item_id = self.sim._new_id("item")
        self.vad.item_id = item_id
        start = max(0, round(self.vad.onset - float(td.get("prefix_padding_ms", 300))))
        await self.send({
            "type": "input_audio_buffer.speech_started",
            "audio_start_ms": start,
            "item_id": item_id,
        })
        active = self.active
        if active is not None and td.get("interrupt_response", True):
            await self.cancel_active("turn_detected")
            if td.get("auto_truncate", False) and active.audio_item_id is not None:
                await self.auto_truncate(active)
        await self.maybe_drop_mid_user_audio()

    async def maybe_drop_mid_user_audio(self) -> None:
        turn = self.sim.current_turn()
        if turn is not None and turn.drop == "mid-user-audio" and self.sim._fire(turn.drop):
            await self.drop(turn.close_code)

    async def on_speech_stopped(self, td: dict[str, Any]) -> None:
        item_id = self.vad.item_id or self.sim._new_id("item")
        self.vad.item_id = None
        await self.send({
            "type": "input_audio_buffer.speech_stopped",
            "audio_end_ms": round(self.vad.last_speech_end),
            "item_id": item_id,
        })
        await self.commit(item_id)
        if td.get("create_response", True):
            await self.start_response({}, None, trigger="vad")

    async def commit(self, item_id: str) -> None:
        prev = self.last_item_id()
        audio_ms = self.last_input_ms = self.buffer_ms
        self.buffer.clear()
        self.buffer_ms = 0.0
        await self.send({
            "type": "input_audio_buffer.committed",
            "previous_item_id": prev,
            "item_id": item_id,
        })
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.add_item(item)
        self.item_audio_ms[item_id] = audio_ms
        await self.send({"type": "conversation.item.created", "previous_item_id": prev,
                         "item": item})
        if self.config.get("input_audio_transcription"):
            turn = self.sim.current_turn()
            transcript = turn.user if turn is not None and turn.user else "(speech)"
            self.items[item_id]["content"][0]["transcript"] = transcript
            await self.send({
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
            })

    async def on_commit(self, event: dict[str, Any], event_id: str | None) -> None:
        if not self.buffer:
            raise _ProtocolError(
                "Error committing input audio buffer: the buffer is empty.",
                code="input_audio_buffer_commit_empty",
            )
        item_id = self.vad.item_id or self.sim._new_id("item")
        self.reset_input()
        await self.commit(item_id)

    async def on_clear(self, event: dict[str, Any], event_id: str | None) -> None:
        self.buffer.clear()
        self.buffer_ms = 0.0
        self.reset_input()
        await self.send({"type": "input_audio_buffer.cleared"})

    def reset_input(self) -> None:
        """After a manual commit or a clear the next audio starts a new utterance: no VAD
        run and no partial frame carries over (the buffer itself is the caller's)."""
        self.vad.reset()
        self.frame_rest = b""

    # -- conversation items ------------------------------------------------------------------

    def require_item(self, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or item_id not in self.items:
            raise _ProtocolError(f"Item with id {item_id!r} not found", "item_id",
                                 "item_not_found")
        return item_id, self.items[item_id]

    async def on_item_create(self, event: dict[str, Any], event_id: str | None) -> None:
        req = event.get("item")
        if not isinstance(req, dict):
            raise _ProtocolError("item must be an object", "item")
        prev = event.get("previous_item_id")
        if prev is not None and not isinstance(prev, str):
            raise _ProtocolError("previous_item_id must be a string", "previous_item_id")
        if prev is not None and prev != "root" and prev not in self.items:
            raise _ProtocolError(f"Previous item with id {prev!r} not found",
                                 "previous_item_id", "item_not_found")
        item = self.validate_item(req)
        if prev == "root":
            self.add_item(item, at_root=True)
            reported_prev = None
        else:
            after = prev if isinstance(prev, str) else None
            reported_prev = after if after is not None else self.last_item_id()
            self.add_item(item, after=after)
        if item["type"] == "function_call_output":
            self.tool_outputs_pending = True
        await self.send({"type": "conversation.item.created", "previous_item_id": reported_prev,
                         "item": item})

    def validate_item(self, req: dict[str, Any]) -> dict[str, Any]:
        item_id = req.get("id")
        if item_id is not None:
            if not isinstance(item_id, str) or not item_id:
                raise _ProtocolError("item.id must be a string", "item.id")
            if item_id in self.items:
                raise _ProtocolError(f"Item with id {item_id!r} already exists", "item.id",
                                     "duplicate_item_id")
        base = {"id": item_id or self.sim._new_id("item"), "object": "realtime.item"}
        kind = req.get("type")
        if kind == "message":
            role = req.get("role")
            if role not in ("system", "user", "assistant"):
                raise _ProtocolError(f"Invalid role {role!r}", "item.role")
            content = req.get("content")
            if not isinstance(content, list):
                raise _ProtocolError("content must be a list", "item.content")
            allowed = {"system": ("input_text",), "user": ("input_text", "input_audio"),
                       "assistant": ("text",)}[role]
            parts = []
            for i, part in enumerate(content):
                ptype = part.get("type") if isinstance(part, dict) else None
                if ptype not in allowed:
                    raise _ProtocolError(
                        f"Content type {ptype!r} is not allowed in a {role} message",
                        f"item.content[{i}].type",
                    )
                if ptype == "input_audio":
                    # Audio bytes are never echoed in items.
                    parts.append({"type": "input_audio", "transcript": part.get("transcript")})
                else:
                    if not isinstance(part.get("text"), str):
                        raise _ProtocolError("text must be a string", f"item.content[{i}].text")
                    parts.append({"type": ptype, "text": part["text"]})
            status = req.get("status", "completed")
            return {**base, "type": "message", "role": role, "status": status, "content": parts}
        if kind == "function_call":
            for key in ("name", "call_id", "arguments"):
                if not isinstance(req.get(key), str):
                    raise _ProtocolError(f"{key} must be a string", f"item.{key}")
            return {**base, "type": "function_call", "name": req["name"],
                    "call_id": req["call_id"], "arguments": req["arguments"],
                    "status": req.get("status", "completed")}
        if kind == "function_call_output":
            if not isinstance(req.get("call_id"), str):
                raise _ProtocolError("call_id must be a string", "item.call_id")
            if not isinstance(req.get("output"), str):
                raise _ProtocolError("output must be a string", "item.output")
            return {**base, "type": "function_call_output", "call_id": req["call_id"],
                    "output": req["output"]}
        raise _ProtocolError(f"Invalid item type {kind!r}", "item.type")

    async def on_item_retrieve(self, event: dict[str, Any], event_id: str | None) -> None:
        _, item = self.require_item(event)
        await self.send({"type": "conversation.item.retrieved", "item": copy.deepcopy(item)})

    async def on_item_delete(self, event: dict[str, Any], event_id: str | None) -> None:
        item_id, _ = self.require_item(event)
        del self.items[item_id]
        self.order.remove(item_id)
        self.item_audio_ms.pop(item_id, None)
        await self.send({"type": "conversation.item.deleted", "item_id": item_id})

    async def on_item_truncate(self, event: dict[str, Any], event_id: str | None) -> None:
        item_id, item = self.require_item(event)
        if item.get("role") != "assistant" or not any(
            p.get("type") == "audio" for p in item.get("content", [])
        ):
            raise _ProtocolError("Only assistant messages with audio can be truncated", "item_id")
        content_index = event.get("content_index", 0)
        if content_index != 0:
            raise _ProtocolError("content_index must be 0", "content_index")
        end = event.get("audio_end_ms")
        duration = self.item_audio_ms.get(item_id, 0.0)
        if not _is_int(end) or end < 0:
            raise _ProtocolError("audio_end_ms must be a non-negative integer", "audio_end_ms")
        if end > duration:
            raise _ProtocolError(
                f"audio_end_ms {end} is beyond the item's audio ({int(duration)} ms)",
                "audio_end_ms",
            )
        await self.truncate(item_id, end)

    async def truncate(self, item_id: str, end_ms: int) -> None:
        item = self.items[item_id]
        duration = self.item_audio_ms.get(item_id, 0.0)
        for part in item["content"]:
            if part.get("type") == "audio" and part.get("transcript"):
                # Unheard text leaves the context: keep the share that was played.
                text = part["transcript"]
                keep = int(len(text) * (end_ms / duration)) if duration else 0
                part["transcript"] = text[:keep]
        self.item_audio_ms[item_id] = float(end_ms)
        await self.send({"type": "conversation.item.truncated", "item_id": item_id,
                         "content_index": 0, "audio_end_ms": end_ms})

    async def auto_truncate(self, active: _Active) -> None:
        item_id = active.audio_item_id
        if item_id is None or item_id not in self.items or active.first_audio_at is None:
            return
        # The server assumes playback at real time from the first delta on.
        played = (time.monotonic() - active.first_audio_at) * 1000
        end = int(min(played, self.item_audio_ms.get(item_id, 0.0)))
        await self.truncate(item_id, end)

    # -- responses ---------------------------------------------------------------------------

    async def on_response_create(self, event: dict[str, Any], event_id: str | None) -> None:
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise _ProtocolError("response must be an object", "response")
        if "modalities" in params:
            _check_modalities(params["modalities"], "response.modalities")
        if "output_audio_format" in params:
            _check_output_format(params["output_audio_format"], "response.output_audio_format")
        await self.start_response(params, event_id, trigger="client")

    async def on_response_cancel(self, event: dict[str, Any], event_id: str | None) -> None:
        active = self.active
        if active is None:
            raise _ProtocolError("Cancellation failed: no active response",
                                 code="response_cancel_not_active")
        rid = event.get("response_id")
        if rid is not None and rid != active.id:
            raise _ProtocolError(f"Cancellation failed: response {rid!r} is not active",
                                 "response_id", "response_cancel_not_active")
        await self.cancel_active("client_cancelled")

    async def cancel_active(self, reason: str) -> None:
        """Stop the active response and wait until its closing events were sent."""
        active = self.active
        if active is None:
            return
        active.cancel_reason = reason
        active.wake.set()
        if active.task is not None:
            await asyncio.wait({active.task}, timeout=10)

    async def start_response(self, params: dict[str, Any], event_id: str | None,
                             trigger: str) -> None:
        if self.active is not None:
            if params.get("cancel_previous", True) is False:
                raise _ProtocolError("Conversation already has an active response",
                                     code="conversation_already_has_active_response")
            await self.cancel_active("turn_detected" if trigger == "vad" else "client_cancelled")
        follow_up = trigger == "client" and self.tool_outputs_pending
        self.tool_outputs_pending = False
        plan = self.sim._plan(follow_up)
        active = _Active(id=self.sim._new_id("resp"))
        self.active = active
        active.task = asyncio.create_task(self.respond(active, plan, params, event_id))

    async def respond(self, active: _Active, plan: _Plan, params: dict[str, Any],
                      event_id: str | None) -> None:
        try:
            await self._respond(active, plan, params, event_id)
        except (ConnectionClosed, _Dropped):
            pass
        except Exception:
            log.exception("simulator response failed")
        finally:
            if self.active is active:
                self.active = None

    async def _respond(self, active: _Active, plan: _Plan, params: dict[str, Any],
                       event_id: str | None) -> None:
        if plan.error is not None:
            self.active = None
            await self.error(plan.error.message, type_=plan.error.type, code=plan.error.code,
                             event_id=event_id)
            return
        await active.pause(plan.delay_ms / 1000)
        modalities = params.get("modalities") or self.config["modalities"]
        fmt = params.get("output_audio_format") or self.config["output_audio_format"]
        response: dict[str, Any] = {
            "id": active.id, "object": "realtime.response", "status": "in_progress",
            "status_details": None, "output": [], "usage": None,
        }
        await self.send({"type": "response.created", "response": copy.deepcopy(response)})
        output: list[dict[str, Any]] = []
        text_out = ""
        if plan.say and active.cancel_reason is None:
            item = await self.speak(active, len(output), plan, "audio" in modalities, fmt)
            output.append(item)
            text_out = plan.say
        for call in plan.calls:
            if active.cancel_reason is not None:
                break
            output.append(await self.call(active, len(output), call))
        if plan.calls and active.cancel_reason is None:
            self.sim._pending_tools = plan.turn
        cancelled = active.cancel_reason is not None
        response.update(
            status="cancelled" if cancelled else "completed",
            status_details={"type": "cancelled", "reason": active.cancel_reason}
            if cancelled else None,
            output=output,
            usage=_usage(self.last_input_ms, active.audio_ms_sent, text_out),
        )
        self.active = None  # before sending: a cancel racing response.done must fail
        await self.send({"type": "response.done", "response": response})
        if plan.drop in ("after-function-call", "after-response-done") and not cancelled:
            if plan.drop == "after-response-done" or plan.calls:
                if self.sim._fire(plan.drop, plan.turn_index):
                    await self.drop(plan.close_code)

    async def speak(self, active: _Active, output_index: int, plan: _Plan, audio: bool,
                    fmt: str) -> dict[str, Any]:
        text = (plan.say or "").strip()
        item_id = self.sim._new_id("item")
        item: dict[str, Any] = {
            "id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
            "status": "in_progress", "content": [],
        }
        await self._announce_item(active.id, output_index, item)
        ids = {"response_id": active.id, "item_id": item_id, "output_index": output_index,
               "content_index": 0}
        words = re.findall(r"\s*\S+", text) or [""]
        if audio:
            active.audio_item_id = item_id
            await self.send({"type": "response.content_part.added", **ids,
                             "part": {"type": "audio", "transcript": ""}})
            if item_id in self.items:  # truncatable from its first delta on
                self.items[item_id]["content"] = [{"type": "audio", "transcript": ""}]
            rate = OUTPUT_FORMAT_RATES[fmt]
            pcm = await self.sim._tts.pcm(text, rate)
            chunk = rate * CHUNK_MS // 1000 * 2
            n = max(1, math.ceil(len(pcm) / chunk))
            drop_at = max(1, n // 2) if plan.drop == "mid-audio" else None
            spoken = 0
            started = time.monotonic()
            for i in range(n):
                if active.cancel_reason is not None:
                    break
                target = math.ceil((i + 1) * len(words) / n)
                if target > spoken:
                    await self.send({"type": "response.audio_transcript.delta", **ids,
                                     "delta": "".join(words[spoken:target])})
                    spoken = target
                piece = pcm[i * chunk:(i + 1) * chunk]
                if active.first_audio_at is None:
                    active.first_audio_at = time.monotonic()
                self.audio_produced = True
                active.audio_ms_sent += len(piece) / 2 / rate * 1000
                self.item_audio_ms[item_id] = active.audio_ms_sent
                await self.send({"type": "response.audio.delta", **ids,
                                 "delta": base64.b64encode(encode(piece, fmt)).decode("ascii")})
                heard = plan.speech_started_at_ms
                if heard is not None and active.audio_ms_sent >= heard and not active.heard:
                    # Scripted: the service's VAD "hears" the user over the reply.
                    active.heard = True
                    await self.on_speech_started(self.config.get("turn_detection") or {})
                if drop_at is not None and i + 1 == drop_at and plan.turn_index is not None:
                    if self.sim._fire("mid-audio", plan.turn_index):
                        # The cut reply is not consumed: the next response speaks it again.
                        if self.sim.turn_index == plan.turn_index + 1:
                            self.sim.turn_index = plan.turn_index
                        await self.drop(plan.close_code)
                if self.sim.pace > 0:
                    due = started + (i + 1) * CHUNK_MS / 1000 / self.sim.pace
                    await active.pause(due - time.monotonic())
                else:
                    await asyncio.sleep(0)  # let cancels and appends in between
            transcript = text if active.cancel_reason is None else "".join(words[:spoken]).strip()
            await self.send({"type": "response.audio.done", **ids})
            await self.send({"type": "response.audio_transcript.done", **ids,
                             "transcript": transcript})
            part: dict[str, Any] = {"type": "audio", "transcript": transcript}
        else:
            await self.send({"type": "response.content_part.added", **ids,
                             "part": {"type": "text", "text": ""}})
            sent = 0
            for i, word in enumerate(words):
                if active.cancel_reason is not None:
                    break
                await self.send({"type": "response.text.delta", **ids, "delta": word})
                sent = i + 1
                await asyncio.sleep(0)
            transcript = text if active.cancel_reason is None else "".join(words[:sent]).strip()
            await self.send({"type": "response.text.done", **ids, "text": transcript})
            part = {"type": "text", "text": transcript}
        await self.send({"type": "response.content_part.done", **ids, "part": part})
        item["status"] = "incomplete" if active.cancel_reason is not None else "completed"
        item["content"] = [part]
        return await self._finish_item(active.id, output_index, item)

    async def call(self, active: _Active, output_index: int, call: Call) -> dict[str, Any]:
        item_id = self.sim._new_id("item")
        call_id = call.call_id or self.sim._new_id("call")
        item: dict[str, Any] = {
            "id": item_id, "object": "realtime.item", "type": "function_call",
            "name": call.name, "call_id": call_id, "arguments": "", "status": "in_progress",
        }
        await self._announce_item(active.id, output_index, item)
        ids = {"response_id": active.id, "item_id": item_id, "output_index": output_index,
               "call_id": call_id}
        args = call.arguments
        # At least two pieces so clients must really concatenate.
        size = max(1, math.ceil(len(args) / 3))
        pieces = [args[i:i + size] for i in range(0, len(args), size)] or [""]
        for piece in pieces:
            await self.send({"type": "response.function_call_arguments.delta", **ids,
                             "delta": piece})
            await asyncio.sleep(0)
        await self.send({"type": "response.function_call_arguments.done", **ids,
                         "name": call.name, "arguments": args})
        item.update(arguments=args, status="completed")
        return await self._finish_item(active.id, output_index, item)


def _suppress_pongs(ws: ServerConnection) -> None:
    """Scripted fault: the protocol still parses pings but its automatic pongs are dropped."""
    protocol = ws.protocol
    original = protocol.send_frame

    def send_frame(frame: Frame) -> None:
        if frame.opcode is not Opcode.PONG:
            original(frame)

    protocol.send_frame = send_frame  # type: ignore[method-assign]
