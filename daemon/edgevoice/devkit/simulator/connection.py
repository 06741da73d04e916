"""One simulated connection: the client events in arrival order, the input audio buffer with
its VAD, the conversation items, and the responses the script asks for."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from edgevoice.audio.convert import OUTPUT_FORMAT_RATES, decode, encode, wire_rate
from edgevoice.devkit.simulator.protocol import check_client_event
from edgevoice.devkit.simulator.script import Call, ConnectionFault
from edgevoice.devkit.simulator.session import (
    ProtocolError,
    check_modalities,
    check_output_format,
    default_session,
    is_int,
    merge_session,
)
from edgevoice.devkit.simulator.speech import FRAME_MS, Vad

if TYPE_CHECKING:
    from edgevoice.devkit.simulator.server import ConnectionRecord, Plan, Simulator

log = logging.getLogger(__name__)

#: Reply audio is sent in deltas of this length.
CHUNK_MS = 100
#: Bound on the input buffer and on the per-connection recording (tests only need a few MB).
MAX_AUDIO_BYTES = 64 * 1024 * 1024


class Dropped(Exception):
    """A scripted drop closed the connection; the current task ends quietly."""


@dataclass
class Active:
    """The response in progress on a connection."""

    id: str
    cause: str | None = None  # the client event that asked for it (None: the server's VAD)
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


def usage(in_audio_ms: float, out_audio_ms: float, out_text: str) -> dict[str, Any]:
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


def _word_text(token: str) -> str:
    """A word of the reply as its timestamp names it: without the punctuation around it."""
    return re.sub(r"^[^\w']+|[^\w']+$", "", token.strip())


def scripted_usage(parts: dict[str, int]) -> dict[str, Any]:
    """A usage block from a script's ``usage`` table (missing parts 0, totals the sums)."""
    t_in, a_in = parts.get("input_text_tokens", 0), parts.get("input_audio_tokens", 0)
    t_out, a_out = parts.get("output_text_tokens", 0), parts.get("output_audio_tokens", 0)
    inp, out = t_in + a_in, t_out + a_out
    return {
        "total_tokens": inp + out, "input_tokens": inp, "output_tokens": out,
        "input_token_details": {"cached_tokens": parts.get("cached_tokens", 0),
                                "text_tokens": t_in, "audio_tokens": a_in},
        "output_token_details": {"text_tokens": t_out, "audio_tokens": a_out},
    }


def _line_text(message: Any) -> str | None:
    """The text of a ``pre_generated_assistant_message`` (None when there is none)."""
    if not isinstance(message, dict):
        return None
    parts = message.get("content")
    texts = [p.get("text") for p in parts if isinstance(p, dict)] if isinstance(parts, list) \
        else []
    return " ".join(t for t in texts if isinstance(t, str) and t) or None


class Connection:
    """Protocol state of one connection. Events are handled in arrival order by :meth:`run`;
    a response runs as its own task so cancels and audio keep flowing meanwhile. Ids, the
    script's progress and the voice belong to the :class:`Simulator` (shared by all of its
    connections)."""

    def __init__(
        self, sim: Simulator, ws: ServerConnection, record: ConnectionRecord,
        fault: ConnectionFault,
    ) -> None:
        self.sim = sim
        self.ws = ws
        self.rec = record
        self.fault = fault
        model = record.query.get("model") or None
        self.config = default_session(model)
        self.items: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.item_audio_ms: dict[str, float] = {}
        self.audio_produced = False
        self.buffer = bytearray()
        self.buffer_ms = 0.0
        self.last_input_ms = 0.0
        self.timeline_ms = 0.0
        self.frame_rest = b""
        self.vad = Vad()
        self.active: Active | None = None
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
        """Serve the connection until it ends (the fault was applied by the server)."""
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
        except (ConnectionClosed, Dropped):
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
        raise Dropped

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
        cause: str | None = None,
        scripted: bool = False,
    ) -> None:
        """Send an ``error`` event and record it with ``cause`` (the type of the client
        event it answers) and ``scripted`` (the script's own error, not the client's)."""
        error = {"type": type_, "code": code, "message": message, "param": param,
                 "event_id": event_id}
        await self.send({"type": "error", "error": error})
        self.rec.add_error(copy.deepcopy(error), cause, scripted)

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
        raw_type = event.get("type")
        etype = raw_type if isinstance(raw_type, str) else None
        handler = self.handlers.get(etype) if etype is not None else None
        if handler is None:
            await self.error(
                f"Invalid value: {raw_type!r}. Unsupported or unknown client event type.",
                param="type",
                code="invalid_value",
                event_id=event_id,
                cause=etype,
            )
            return
        if self.sim.strict:
            problems = check_client_event(event)
            if problems:
                first = problems[0]
                await self.error(first.message, param=first.param, code=first.code,
                                 event_id=event_id, cause=etype)
                return
        try:
            await handler(event, event_id)
        except ProtocolError as exc:
            await self.error(exc.message, param=exc.param, code=exc.code, event_id=event_id,
                             cause=etype)
        except (ConnectionClosed, Dropped, asyncio.CancelledError):
            raise
        except Exception:
            # A simulator bug must not end the session: report it like the service would.
            log.exception("simulator failed on %s", etype)
            await self.error("The server had an error while processing your request.",
                             type_="server_error", event_id=event_id, cause=etype)

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
        self.config = merge_session(self.config, event.get("session"), self.audio_produced)
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
            raise ProtocolError("audio must be a base64 string", "audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("Invalid base64 in audio", "audio", "invalid_base64") from None
        pcm = decode(raw, self.config["input_audio_format"])
        if len(self.buffer) + len(pcm) > MAX_AUDIO_BYTES:
            raise ProtocolError("Input audio buffer is full; commit or clear it", "audio")
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
            failed = turn.transcription_failed if turn is not None else None
            if failed is not None:
                await self.send({
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": item_id, "content_index": 0,
                    "error": {"type": failed.type, "code": failed.code,
                              "message": failed.message, "param": None}})
                return
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
            raise ProtocolError(
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
            raise ProtocolError(f"Item with id {item_id!r} not found", "item_id",
                                 "item_not_found")
        return item_id, self.items[item_id]

    async def on_item_create(self, event: dict[str, Any], event_id: str | None) -> None:
        req = event.get("item")
        if not isinstance(req, dict):
            raise ProtocolError("item must be an object", "item")
        prev = event.get("previous_item_id")
        if prev is not None and not isinstance(prev, str):
            raise ProtocolError("previous_item_id must be a string", "previous_item_id")
        if prev is not None and prev != "root" and prev not in self.items:
            raise ProtocolError(f"Previous item with id {prev!r} not found",
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
                raise ProtocolError("item.id must be a string", "item.id")
            if item_id in self.items:
                raise ProtocolError(f"Item with id {item_id!r} already exists", "item.id",
                                     "duplicate_item_id")
        base = {"id": item_id or self.sim._new_id("item"), "object": "realtime.item"}
        kind = req.get("type")
        if kind == "message":
            role = req.get("role")
            if role not in ("system", "user", "assistant"):
                raise ProtocolError(f"Invalid role {role!r}", "item.role")
            content = req.get("content")
            if not isinstance(content, list):
                raise ProtocolError("content must be a list", "item.content")
            allowed = {"system": ("input_text",), "user": ("input_text", "input_audio"),
                       "assistant": ("text",)}[role]
            parts = []
            for i, part in enumerate(content):
                ptype = part.get("type") if isinstance(part, dict) else None
                if ptype not in allowed:
                    raise ProtocolError(
                        f"Content type {ptype!r} is not allowed in a {role} message",
                        f"item.content[{i}].type",
                    )
                if ptype == "input_audio":
                    # Audio bytes are never echoed in items.
                    parts.append({"type": "input_audio", "transcript": part.get("transcript")})
                else:
                    if not isinstance(part.get("text"), str):
                        raise ProtocolError("text must be a string", f"item.content[{i}].text")
                    parts.append({"type": ptype, "text": part["text"]})
            status = req.get("status", "completed")
            return {**base, "type": "message", "role": role, "status": status, "content": parts}
        if kind == "function_call":
            for key in ("name", "call_id", "arguments"):
                if not isinstance(req.get(key), str):
                    raise ProtocolError(f"{key} must be a string", f"item.{key}")
            return {**base, "type": "function_call", "name": req["name"],
                    "call_id": req["call_id"], "arguments": req["arguments"],
                    "status": req.get("status", "completed")}
        if kind == "function_call_output":
            if not isinstance(req.get("call_id"), str):
                raise ProtocolError("call_id must be a string", "item.call_id")
            if not isinstance(req.get("output"), str):
                raise ProtocolError("output must be a string", "item.output")
            return {**base, "type": "function_call_output", "call_id": req["call_id"],
                    "output": req["output"]}
        raise ProtocolError(f"Invalid item type {kind!r}", "item.type")

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
            raise ProtocolError("Only assistant messages with audio can be truncated", "item_id")
        content_index = event.get("content_index", 0)
        if content_index != 0:
            raise ProtocolError("content_index must be 0", "content_index")
        end = event.get("audio_end_ms")
        duration = self.item_audio_ms.get(item_id, 0.0)
        if not is_int(end) or end < 0:
            raise ProtocolError("audio_end_ms must be a non-negative integer", "audio_end_ms")
        if end > duration:
            raise ProtocolError(
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

    async def auto_truncate(self, active: Active) -> None:
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
            raise ProtocolError("response must be an object", "response")
        if "modalities" in params:
            check_modalities(params["modalities"], "response.modalities")
        if "output_audio_format" in params:
            check_output_format(params["output_audio_format"], "response.output_audio_format")
        await self.start_response(params, event_id, trigger="client")

    async def on_response_cancel(self, event: dict[str, Any], event_id: str | None) -> None:
        active = self.active
        if active is None:
            raise ProtocolError("Cancellation failed: no active response",
                                 code="response_cancel_not_active")
        rid = event.get("response_id")
        if rid is not None and rid != active.id:
            raise ProtocolError(f"Cancellation failed: response {rid!r} is not active",
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
                raise ProtocolError("Conversation already has an active response",
                                     code="conversation_already_has_active_response")
            await self.cancel_active("turn_detected" if trigger == "vad" else "client_cancelled")
        line = _line_text(params.get("pre_generated_assistant_message"))
        if line is not None:
            plan = self.sim._line_plan(line)
        else:
            follow_up = trigger == "client" and self.tool_outputs_pending
            self.tool_outputs_pending = False
            plan = self.sim._plan(follow_up)
        active = Active(id=self.sim._new_id("resp"),
                        cause="response.create" if trigger == "client" else None)
        self.active = active
        active.task = asyncio.create_task(self.respond(active, plan, params, event_id))

    async def respond(self, active: Active, plan: Plan, params: dict[str, Any],
                      event_id: str | None) -> None:
        try:
            await self._respond(active, plan, params, event_id)
        except (ConnectionClosed, Dropped):
            pass
        except Exception:
            log.exception("simulator response failed")
        finally:
            if self.active is active:
                self.active = None

    async def _respond(self, active: Active, plan: Plan, params: dict[str, Any],
                       event_id: str | None) -> None:
        if plan.error is not None:
            self.active = None
            await self.error(plan.error.message, type_=plan.error.type, code=plan.error.code,
                             event_id=event_id, cause=active.cause, scripted=True)
            return
        await active.pause(plan.delay_ms / 1000)
        modalities = params.get("modalities") or self.config["modalities"]
        fmt = params.get("output_audio_format") or self.config["output_audio_format"]
        response: dict[str, Any] = {
            "id": active.id, "object": "realtime.response", "status": "in_progress",
            "status_details": None, "output": [], "usage": None,
        }
        await self.send({"type": "response.created", "response": copy.deepcopy(response)})
        turn = plan.turn
        if turn is not None and turn.rate_limits:
            await self.send({"type": "rate_limits.updated", "rate_limits": [
                {"name": r.name, "limit": r.limit, "remaining": r.remaining,
                 "reset_seconds": r.reset_seconds} for r in turn.rate_limits]})
        if turn is not None and turn.warning is not None:
            await self.send({"type": "warning", "warning": dict(turn.warning)})
        outcome = turn.outcome if turn is not None else None
        output: list[dict[str, Any]] = []
        text_out = ""
        if plan.say and active.cancel_reason is None and outcome != "failed":
            item = await self.speak(active, len(output), plan, "audio" in modalities, fmt,
                                    cut=outcome == "incomplete")
            output.append(item)
            text_out = plan.say
        for call in plan.calls:
            if active.cancel_reason is not None or outcome == "failed":
                break
            output.append(await self.call(active, len(output), call))
        if plan.calls and active.cancel_reason is None and outcome != "failed":
            self.sim._pending_tools = plan.turn
        cancelled = active.cancel_reason is not None
        status, details = "completed", None
        if cancelled:
            status, details = "cancelled", {"type": "cancelled", "reason": active.cancel_reason}
        elif outcome == "incomplete" and turn is not None:
            status, details = "incomplete", {"type": "incomplete", "reason": turn.reason}
        elif outcome == "failed" and turn is not None and turn.failure is not None:
            f = turn.failure
            status, details = "failed", {"type": "failed", "error": {
                "type": f.type, "code": f.code, "message": f.message}}
        spent = usage(self.last_input_ms, active.audio_ms_sent, text_out)
        if turn is not None and turn.usage is not None:
            spent = scripted_usage(dict(turn.usage))
        response.update(status=status, status_details=details, output=output, usage=spent)
        self.active = None  # before sending: a cancel racing response.done must fail
        await self.send({"type": "response.done", "response": response})
        if plan.drop in ("after-function-call", "after-response-done") and not cancelled:
            if plan.drop == "after-response-done" or plan.calls:
                if self.sim._fire(plan.drop, plan.turn_index):
                    await self.drop(plan.close_code)

    async def speak(self, active: Active, output_index: int, plan: Plan, audio: bool,
                    fmt: str, cut: bool = False) -> dict[str, Any]:
        """The reply's message item; ``cut``: it stops after about half (an incomplete
        reply: the item ends "incomplete" with the transcript of what was sent)."""
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
            stamps: list[tuple[int, int, str]] = []  # word timestamps, not yet sent
            if self.word_timestamps():
                spoken_words = [w for w in (_word_text(t) for t in words) if w]
                pcm, spans = await self.sim._tts.words_pcm(spoken_words, rate)
                stamps = [(o, d, w) for (o, d), w in zip(spans, spoken_words, strict=True)]
            else:
                pcm = await self.sim._tts.pcm(text, rate)
            timestamps = bool(stamps)
            chunk = rate * CHUNK_MS // 1000 * 2
            n = max(1, math.ceil(len(pcm) / chunk))
            drop_at = max(1, n // 2) if plan.drop == "mid-audio" else None
            stop_at = max(1, n // 2) if cut else n
            spoken = 0
            started = time.monotonic()
            for i in range(n):
                if active.cancel_reason is not None or i >= stop_at:
                    break
                target = math.ceil((i + 1) * len(words) / n)
                if target > spoken:
                    await self.send({"type": "response.audio_transcript.delta", **ids,
                                     "delta": "".join(words[spoken:target])})
                    spoken = target
                piece = pcm[i * chunk:(i + 1) * chunk]
                chunk_end_ms = (i + 1) * CHUNK_MS
                while stamps and stamps[0][0] < chunk_end_ms:
                    # A word's timestamp comes with the audio chunk where the word begins.
                    offset, duration, word = stamps.pop(0)
                    await self.send({"type": "response.audio_timestamp.delta", **ids,
                                     "audio_offset_ms": offset, "audio_duration_ms": duration,
                                     "text": word, "timestamp_type": "word"})
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
            stopped = active.cancel_reason is not None or cut
            transcript = text if not stopped else "".join(words[:spoken]).strip()
            await self.send({"type": "response.audio.done", **ids})
            if timestamps:
                await self.send({"type": "response.audio_timestamp.done", **ids})
            await self.send({"type": "response.audio_transcript.done", **ids,
                             "transcript": transcript})
            part: dict[str, Any] = {"type": "audio", "transcript": transcript}
        else:
            await self.send({"type": "response.content_part.added", **ids,
                             "part": {"type": "text", "text": ""}})
            sent = 0
            for i, word in enumerate(words):
                if active.cancel_reason is not None or (cut and i >= max(1, len(words) // 2)):
                    break
                await self.send({"type": "response.text.delta", **ids, "delta": word})
                sent = i + 1
                await asyncio.sleep(0)
            stopped = active.cancel_reason is not None or cut
            transcript = text if not stopped else "".join(words[:sent]).strip()
            await self.send({"type": "response.text.done", **ids, "text": transcript})
            part = {"type": "text", "text": transcript}
        await self.send({"type": "response.content_part.done", **ids, "part": part})
        item["status"] = ("incomplete" if active.cancel_reason is not None or cut
                          else "completed")
        item["content"] = [part]
        return await self._finish_item(active.id, output_index, item)

    def word_timestamps(self) -> bool:
        """The session asked for word timestamps and has an Azure voice (the service sends
        them for Azure voices only)."""
        voice = self.config.get("voice")
        azure = isinstance(voice, dict) and str(voice.get("type", "")).startswith("azure")
        return azure and "word" in (self.config.get("output_audio_timestamp_types") or [])

    async def call(self, active: Active, output_index: int, call: Call) -> dict[str, Any]:
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
