"""Bad Voice Live server input for the robustness tests, built from real events.

- :func:`record_frames` runs a short conversation against the loopback simulator on 127.0.0.1
  (server VAD, a spoken reply, a function call and its follow-up, a truncate, a refused
  cancel) and returns every server frame as sent: real, valid events to start from.
- :func:`bad_frames` is a hypothesis strategy for a batch of frames derived from such events:
  mutated events (fields dropped or of the wrong type, huge strings, ids of unknown or
  earlier items, responses and calls, bad base64 or odd-length audio, unknown types), valid
  events out of order, frames damaged at the byte level and frames that are not JSON
  objects at all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect

from edgevoice.devkit.simulator import Simulator
from edgevoice.devkit.simulator.script import Script
from edgevoice.wire.events import SERVER_EVENT_TYPES

Frame = str | bytes
Event = dict[str, Any]

RECORD_SCRIPT: dict[str, Any] = {
    "turn": [
        {"user": "what's the weather", "say": "It is sunny."},
        {"user": "open the window", "say": "Opening it.",
         "calls": [{"name": "open_window", "arguments": {"side": "left"}}],
         "after_tools": "The window is open."},
    ],
}
RATE = 24000  # the simulator's default input rate (pcm16)
#: Keys whose values name items, responses, calls or events: the "wrong order" mutations
#: point them elsewhere.
ID_KEYS = frozenset({"response_id", "item_id", "call_id", "previous_item_id", "id", "event_id"})


# ------------------------------------------------------------------ recording real events


def _utterance() -> bytes:
    """A loud tone then silence at 24 kHz: the simulator's energy VAD makes it one turn."""
    t = np.arange(int(0.4 * RATE)) / RATE
    tone = (8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes()
    return tone + bytes(int(0.8 * RATE) * 2)


async def _append(ws: ClientConnection, pcm: bytes) -> None:
    chunk = RATE // 10 * 2  # 100 ms
    for i in range(0, len(pcm), chunk):
        audio = base64.b64encode(pcm[i : i + chunk]).decode("ascii")
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))


async def _read_until(ws: ClientConnection, frames: list[str], wanted: str, count: int) -> Event:
    """Read server frames into ``frames`` until ``count`` events of type ``wanted`` in all."""
    while True:
        seen = [json.loads(f) for f in frames]
        hits = [e for e in seen if e["type"] == wanted]
        if len(hits) >= count:
            return hits[count - 1]
        frame = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(frame, str)
        frames.append(frame)


async def record_frames() -> list[str]:
    """Every server frame of a short scripted conversation with the simulator, in order."""
    frames: list[str] = []
    async with Simulator(script=Script.from_dict(RECORD_SCRIPT), pace=0.0, tts=False) as sim:
        url = f"{sim.url}/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime"
        async with connect(url) as ws:
            await _read_until(ws, frames, "session.created", 1)
            await ws.send(json.dumps({"type": "session.update", "session": {
                "input_audio_transcription": {"model": "azure-speech"}}}))
            await _read_until(ws, frames, "session.updated", 1)
            await _append(ws, _utterance())
            await _read_until(ws, frames, "response.done", 1)
            await _append(ws, _utterance())
            await _read_until(ws, frames, "response.done", 2)
            call = await _read_until(ws, frames, "response.function_call_arguments.done", 1)
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": call["call_id"],
                "output": '{"ok": true}'}}))
            await ws.send(json.dumps({"type": "response.create"}))
            await _read_until(ws, frames, "response.done", 3)
            spoken = await _read_until(ws, frames, "response.audio.done", 1)
            await ws.send(json.dumps({"type": "conversation.item.truncate",
                                      "item_id": spoken["item_id"], "content_index": 0,
                                      "audio_end_ms": 50}))
            await _read_until(ws, frames, "conversation.item.truncated", 1)
            await ws.send(json.dumps({"type": "response.cancel"}))  # nothing active: an error
            await _read_until(ws, frames, "error", 1)
    return frames


# ------------------------------------------------------------------ strategies

_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats()  # NaN and infinities become JSON-invalid literals: also bad input
            | st.text(max_size=30))
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# Huge strings in any field: log lines and error messages must stay short and nothing may
# choke on them (kept well below the link's 10 MiB frame limit: this is not a size test).
_huge = st.builds(lambda n, ch: ch * n, st.integers(20_000, 300_000),
                  st.sampled_from(["A", "é", "中", '"', "\\", " ", "\n"]))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# Audio deltas: not base64 at all, wrong padding, odd byte counts for PCM16, empty, long.
_bad_audio = st.one_of(
    st.sampled_from(["!!!!", "AAA", "A", "=", "AAAA====", "AA=A", "%%%%", " AAAA", "AAAA\n",
                     "éAAA", "AAAA" * 1000 + "*"]),
    st.text(max_size=40),
    st.binary(min_size=1, max_size=2001).filter(lambda b: len(b) % 2 == 1).map(_b64),
    st.just(""),
    st.integers(1, 3).map(lambda s: _b64(bytes(RATE * 2 * s))),
)
_fresh_id = st.text(min_size=0, max_size=12)
_types = st.sampled_from(sorted(SERVER_EVENT_TYPES)) | st.text(max_size=30) | _scalars


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside ``value`` (dict keys and list indices)."""
    out: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, child in items:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


def _parent(event: Event, path: tuple[Any, ...]) -> Any:
    node: Any = event
    for key in path[:-1]:
        node = node[key]
    return node


def _ids_of(corpus: list[Event]) -> list[str]:
    return sorted({v for e in corpus for p in _paths(e) if p[-1] in ID_KEYS
                   and isinstance(v := _parent(e, p)[p[-1]], str)})


def real_event(corpus: list[Event]) -> st.SearchStrategy[Event]:
    """An event of the corpus, its type chosen first: audio deltas, most of a real
    conversation, do not crowd out the rarer events."""
    by_type: dict[str, list[Event]] = {}
    for event in corpus:
        by_type.setdefault(str(event.get("type")), []).append(event)
    return st.sampled_from(sorted(by_type)).flatmap(lambda t: st.sampled_from(by_type[t]))


@st.composite
def mutated_event(draw: st.DrawFn, corpus: list[Event], ids: list[str]) -> Event:
    """A real event with one to three mutations; ``ids`` are ids seen in the corpus."""
    event: Event = copy.deepcopy(draw(real_event(corpus)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(event)
        op = draw(st.sampled_from(["drop", "wrong", "huge", "id", "type", "audio", "extra"]))
        if op == "drop" and paths:
            path = draw(st.sampled_from(paths))
            parent = _parent(event, path)
            del parent[path[-1]]
        elif op in ("wrong", "huge") and paths:
            path = draw(st.sampled_from(paths))
            _parent(event, path)[path[-1]] = draw(_values if op == "wrong" else _huge)
        elif op == "id":
            id_paths = [p for p in paths if p[-1] in ID_KEYS]
            if id_paths:
                path = draw(st.sampled_from(id_paths))
                # An id seen before (an earlier item, response or call) or an unknown one.
                new = draw(st.sampled_from(ids) | _fresh_id) if ids else draw(_fresh_id)
                _parent(event, path)[path[-1]] = new
        elif op == "type":
            event["type"] = draw(_types)
        elif op == "audio":
            if event.get("type") != "response.audio.delta":
                event = copy.deepcopy(draw(st.sampled_from(
                    [e for e in corpus if e.get("type") == "response.audio.delta"] or corpus)))
            event["delta"] = draw(_bad_audio)
        elif op == "extra":
            event[draw(st.text(max_size=10))] = draw(_values)
    return event


@st.composite
def damaged_text(draw: st.DrawFn, event: Event) -> Frame:
    """The JSON of ``event`` cut short, with a byte that is not UTF-8, or with bytes changed."""
    text = json.dumps(event)
    how = draw(st.sampled_from(["cut", "not_utf8", "flip"]))
    if how == "cut":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    data = bytearray(text.encode())
    at = draw(st.integers(0, len(data)))
    if how == "not_utf8":
        return bytes(data[:at]) + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) \
            + bytes(data[at:])
    if at < len(data):
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


_garbage: st.SearchStrategy[Frame] = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60),
    _values.map(json.dumps),  # JSON that is not an event object
    st.integers(1, 100_000).map(lambda n: "[" * n),  # nesting deeper than any parser allows
    st.integers(1, 3_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from(["", "null", "{}", "[]", '{"type":null}', '{"type":5}', '{"type":""}',
                     "\ufeff{}", '{"type":"response.done"}', '{"type":"response.audio.delta"}',
                     '{"type":"response.created","response":{"id":null}}',
                     '{"type":"input_audio_buffer.speech_started","audio_start_ms":NaN,'
                     '"item_id":"x"}',
                     '{"type":"response.done","response":{"id":"r","status":"completed"},'
                     '"type":"error"}']),
)


def _encode(event: Event, binary: bool) -> Frame:
    text = json.dumps(event, ensure_ascii=False)
    return text.encode() if binary else text


def bad_frame(corpus: list[Event]) -> st.SearchStrategy[Frame]:
    """One bad (or valid but unexpected) server frame derived from ``corpus``."""
    ids = _ids_of(corpus)
    events = mutated_event(corpus, ids)
    return st.one_of(
        st.builds(_encode, events, st.booleans()),
        # Valid events in the wrong order: replayed late, twice, or before their start.
        st.builds(_encode, real_event(corpus), st.booleans()),
        real_event(corpus).flatmap(damaged_text),
        _garbage,
    )


def bad_frames(corpus: list[Event], max_size: int = 20) -> st.SearchStrategy[list[Frame]]:
    """A batch of one to ``max_size`` frames of :func:`bad_frame`."""
    return st.lists(bad_frame(corpus), min_size=1, max_size=max_size)


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@contextlib.contextmanager
def error_records() -> Iterator[list[logging.LogRecord]]:
    """The records the daemon's loggers emit at ERROR and above meanwhile. Parts that survive
    an exception of their own (the link's reader, the daemon's handlers) log it that way, so
    any such record under bad input is a bug even when nothing crashed."""
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    logger = logging.getLogger("edgevoice")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def describe(frames: list[Frame], limit: int = 160) -> str:
    """The frames, one a line, each cut to ``limit`` characters (huge ones stay readable)."""
    lines = []
    for frame in frames:
        text = repr(frame)
        lines.append(text if len(text) <= limit else f"{text[:limit]}… ({len(frame)} long)")
    return "\n".join(lines)
