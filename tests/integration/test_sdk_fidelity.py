"""Protocol fidelity: the official Azure SDK (azure-ai-voicelive) as reference client.

The SDK connects to the simulator exactly as it connects to Azure (api-version 2025-10-01,
``api-key`` header), runs a spoken turn with a function call round trip, and every server event
it receives must parse into the SDK's own specific typed class for that event type, with every
nested polymorphic object (items, content parts, turn detection, status details) resolved to a
concrete subclass too: a base-class fallback means the simulator sent a shape the SDK does not
know.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from edgevoice.devkit.simulator import Simulator
from edgevoice.devkit.simulator.script import Script
from support import espeak, need_module

VOICELIVE_SDK = "pip install 'azure-ai-voicelive[aiohttp]' (or run scripts/setup)"
# A missing SDK skips on a developer's machine and fails under CI (scripts/setup installs it).
voicelive = need_module("azure.ai.voicelive.aio", VOICELIVE_SDK)
models = need_module("azure.ai.voicelive.models", VOICELIVE_SDK)
from azure.core.credentials import AzureKeyCredential  # noqa: E402

KEY = "fidelity-key"
TIMEOUT = 5.0
SCRIPT = {
    "turn": [{
        "user": "open the left window",
        "say": "Sure, opening it.",
        "calls": [{"name": "open_window", "arguments": {"side": "left"}}],
        "after_tools": "The left window is open.",
    }],
}


def base_fallbacks(obj: Any, path: str = "event") -> list[str]:
    """Paths of every SDK model object that stayed a polymorphic base class (one that owns a
    discriminator ``__mapping__``) instead of resolving to a concrete subclass."""
    found: list[str] = []
    if isinstance(obj, models.ServerEvent.__mro__[1]):  # the SDK's generated Model base
        cls = type(obj)
        if "__mapping__" in cls.__dict__:
            found.append(f"{path}: {cls.__name__}")
        for name in getattr(cls, "_attr_to_rest_field", {}):
            found += base_fallbacks(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += base_fallbacks(v, f"{path}[{i}]")
    return found


class Recorder:
    """Receives through the SDK and checks every event as it arrives."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.events: list[Any] = []

    async def until(self, type_: str) -> list[Any]:
        got: list[Any] = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                event = await self.conn.recv()
                expected = models.ServerEvent.__mapping__.get(event.type)
                assert expected is not None, f"SDK has no class for {event.type!r}"
                assert type(event) is expected, f"{event.type} parsed as {type(event).__name__}"
                assert base_fallbacks(event) == [], base_fallbacks(event)
                got.append(event)
                self.events.append(event)
                if event.type == type_:
                    return got


async def test_sdk_parses_every_event_of_a_full_scenario() -> None:
    async with Simulator(script=Script.from_dict(SCRIPT), api_key=KEY) as sim:
        endpoint = f"http://127.0.0.1:{sim.port}"
        async with voicelive.connect(endpoint=endpoint, credential=AzureKeyCredential(KEY),
                                     model="gpt-realtime", api_version="2025-10-01") as conn:
            rx = Recorder(conn)
            created = (await rx.until("session.created"))[-1]
            assert created.session.model == "gpt-realtime"
            assert isinstance(created.session.turn_detection, models.ServerVad)

            await conn.session.update(session=models.RequestSession(
                modalities=["text", "audio"],
                instructions="You open windows.",
                input_audio_format="pcm16",
                output_audio_format="pcm16",
                turn_detection=models.ServerVad(threshold=0.5, prefix_padding_ms=300,
                                                silence_duration_ms=500),
                input_audio_transcription=models.AudioInputTranscriptionOptions(
                    model="whisper-1"),
                tools=[models.FunctionTool(
                    name="open_window", description="Open a window",
                    parameters={"type": "object",
                                "properties": {"side": {"type": "string"}},
                                "required": ["side"]})],
                tool_choice="auto",
            ))
            updated = (await rx.until("session.updated"))[-1]
            assert updated.session.tools[0].name == "open_window"

            pcm = bytes(24000 * 2) + espeak("open the left window", 24000) + bytes(24000 * 2)
            for i in range(0, len(pcm), 4800):
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(pcm[i:i + 4800]).decode())
            first = await rx.until("response.done")
            args = next(e for e in first if e.type == "response.function_call_arguments.done")
            assert args.name == "open_window" and json.loads(args.arguments) == {"side": "left"}
            transcription = next(e for e in first if e.type ==
                                 "conversation.item.input_audio_transcription.completed")
            assert transcription.transcript == "open the left window"
            assert first[-1].response.status == "completed"

            await conn.conversation.item.create(
                item=models.FunctionCallOutputItem(call_id=args.call_id,
                                                   output=json.dumps({"opened": True})),
                previous_item_id=args.item_id)
            await rx.until("conversation.item.created")
            await conn.response.create()
            second = await rx.until("response.done")
            reply = next(e for e in second if e.type == "response.audio_transcript.done")
            assert reply.transcript == "The left window is open."
            audio = b"".join(e.delta if isinstance(e.delta, bytes) else base64.b64decode(e.delta)
                             for e in second if e.type == "response.audio.delta")
            assert len(audio) > 24000  # > 0.5 s of 24 kHz PCM16

            # Item management and errors parse too.
            await conn.conversation.item.truncate(item_id=reply.item_id, content_index=0,
                                                  audio_end_ms=200)
            await rx.until("conversation.item.truncated")
            await conn.conversation.item.retrieve(item_id=reply.item_id)
            retrieved = (await rx.until("conversation.item.retrieved"))[-1]
            assert isinstance(retrieved.item, models.ResponseMessageItem)
            await conn.conversation.item.delete(item_id=reply.item_id)
            await rx.until("conversation.item.deleted")
            await conn.input_audio_buffer.clear()
            await rx.until("input_audio_buffer.cleared")
            await conn.response.cancel(event_id="sdk_cancel")
            error = (await rx.until("error"))[-1]
            assert error.error.event_id == "sdk_cancel"
            assert error.error.message == "Cancellation failed: no active response"

        types = [e.type for e in rx.events]
        for expected in (
            "session.created", "session.updated",
            "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", "conversation.item.created",
            "conversation.item.input_audio_transcription.completed",
            "response.created", "response.output_item.added", "response.content_part.added",
            "response.audio_transcript.delta", "response.audio.delta", "response.audio.done",
            "response.audio_transcript.done", "response.content_part.done",
            "response.function_call_arguments.delta", "response.function_call_arguments.done",
            "response.output_item.done", "response.done",
        ):
            assert expected in types, f"missing {expected}"
        assert types.index("response.created") < types.index(
            "response.function_call_arguments.done")

        rec = sim.connections[0]
        assert rec.query["api-version"] == "2025-10-01" and rec.query["model"] == "gpt-realtime"
        assert rec.headers["api-key"] == "<redacted>"
        # The simulator sent exactly what the SDK received.
        assert [e["type"] for e in rec.sent_events] == types


@pytest.mark.realtime  # the simulator paces its replies in real time
async def test_sdk_parses_cancel_text_only_and_errors() -> None:
    script = Script.from_dict({"turn": [
        {"say": "A long answer that will be cut off before it ends, " * 4},
        {"say": "Text only."},
        {"error": {"message": "boom", "code": "scripted"}},
    ]})
    async with Simulator(script=script, api_key=KEY, tts=False, pace=4.0) as sim:
        endpoint = f"http://127.0.0.1:{sim.port}/"
        async with voicelive.connect(endpoint=endpoint, credential=AzureKeyCredential(KEY),
                                     model="gpt-realtime", api_version="2025-10-01") as conn:
            rx = Recorder(conn)
            await rx.until("session.created")
            # Raw mapping: an explicit null must reach the wire (manual turn mode).
            await conn.send({"type": "session.update", "session": {"turn_detection": None}})
            assert (await rx.until("session.updated"))[-1].session.turn_detection is None

            await conn.response.create()
            await rx.until("response.audio.delta")
            await conn.response.cancel()
            done = (await rx.until("response.done"))[-1].response
            assert done.status == "cancelled"
            assert isinstance(done.status_details, models.ResponseCancelledDetails)
            assert done.status_details.reason == "client_cancelled"
            assert done.output[0].status == "incomplete"

            await conn.send({"type": "session.update", "session": {"modalities": ["text"]}})
            await rx.until("session.updated")
            await conn.response.create()
            text = await rx.until("response.done")
            assert next(e for e in text if e.type == "response.text.done").text == "Text only."

            await conn.response.create(event_id="sdk_rc")
            scripted = (await rx.until("error"))[-1].error
            assert (scripted.type, scripted.code, scripted.message) == (
                "server_error", "scripted", "boom")
            assert scripted.event_id == "sdk_rc"
            await conn.send({"type": "session.update", "event_id": "sdk_bad",
                             "session": {"input_audio_format": "mp3"}})
            bad = (await rx.until("error"))[-1].error
            assert bad.param == "session.input_audio_format" and bad.event_id == "sdk_bad"
        types = {e.type for e in rx.events}
        assert {"response.text.delta", "response.text.done", "error"} <= types
