"""The simulator's strict mode over real WebSockets on 127.0.0.1: what the protocol's field
tables do not know is answered with an ``error`` naming the key path and the event, the event
is not applied, the connection stays open, and every error sent is recorded for the harness."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets

from edgevoice.devkit.simulator import Simulator
from edgevoice.devkit.simulator.script import Script
from support import stop_process

API = "/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime"
TIMEOUT = 5.0


class Client:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws

    async def send(self, **event: Any) -> None:
        await self.ws.send(json.dumps(event))

    async def next(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[Client]:
    async with websockets.connect(url + API) as ws:
        client = Client(ws)
        assert (await client.next())["type"] == "session.created"
        yield client


async def test_an_unknown_session_key_at_depth_is_refused_and_nothing_changes() -> None:
    async with Simulator(strict=True) as sim, connect(sim.url) as c:
        await c.send(type="session.update", event_id="cli_1", session={
            "instructions": "Be brief.",
            "turn_detection": {"type": "server_vad", "silence_duration": 300},
        })
        err = await c.next()
        assert err["type"] == "error", err
        assert err["error"]["type"] == "invalid_request_error"
        assert err["error"]["param"] == "session.turn_detection.silence_duration"
        assert err["error"]["event_id"] == "cli_1"
        # Not applied, not even the valid part; the connection goes on.
        await c.send(type="session.update", session={"temperature": 0.7})
        updated = await c.next()
        assert updated["type"] == "session.updated", updated
        assert updated["session"]["instructions"] == "" and updated["session"]["temperature"] == 0.7
        assert updated["session"]["turn_detection"]["silence_duration_ms"] == 500

        for session, param in [
            ({"voice": {"type": "azure-standard", "name": "en-US-AvaNeural", "pich": "+5%"}},
             "session.voice.pich"),
            ({"input_audio_transcription": {"model": "azure-speech", "langauge": "en-US"}},
             "session.input_audio_transcription.langauge"),
            ({"tools": [{"type": "function", "name": "f", "parameter": {}}]},
             "session.tools[0].parameter"),
            ({"id": "sess_1"}, "session.id"),  # the response's field, not the request's
            ({"temperature": "warm"}, "session.temperature"),
        ]:
            await c.send(type="session.update", event_id="cli_x", session=session)
            err = await c.next()
            assert err["type"] == "error" and err["error"]["param"] == param, (session, err)
        errors = sim.errors
        assert len(errors) == 6 and {e.cause for e in errors} == {"session.update"}
        assert not any(e.scripted for e in errors)
        assert errors[0].error["param"] == "session.turn_detection.silence_duration"


async def test_an_unknown_event_field_is_refused_and_the_event_not_applied() -> None:
    async with Simulator(strict=True) as sim, connect(sim.url) as c:
        item = {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "hello"}]}
        await c.send(type="conversation.item.create", event_id="cli_2", item=item,
                     previous_itemid="root")
        err = await c.next()
        assert err["type"] == "error" and err["error"]["param"] == "previous_itemid", err
        assert err["error"]["event_id"] == "cli_2"
        bad_part = {**item, "content": [{"type": "input_text", "txt": "hello"}]}
        await c.send(type="conversation.item.create", event_id="cli_3", item=bad_part)
        err = await c.next()
        assert err["error"]["param"] == "item.content[0].txt", err
        await c.send(type="response.cancel", event_id="cli_4", reponse_id="resp_1")
        err = await c.next()
        assert err["error"]["param"] == "reponse_id", err
        # The valid event goes through; none of the refused ones created an item.
        await c.send(type="conversation.item.create", item=item)
        created = await c.next()
        assert created["type"] == "conversation.item.created"
        assert created["previous_item_id"] is None
        assert len(sim.sent("conversation.item.created")) == 1


async def test_without_strict_the_same_fields_are_ignored() -> None:
    async with Simulator() as sim, connect(sim.url) as c:
        await c.send(type="session.update", session={
            "turn_detection": {"type": "server_vad", "silence_duration": 300}})
        assert (await c.next())["type"] == "session.updated"
        await c.send(type="response.cancel", reponse_id="resp_1")
        err = await c.next()  # nothing to cancel: the usual error, not the unknown field's
        assert err["error"]["message"] == "Cancellation failed: no active response"
        assert sim.errors[0].cause == "response.cancel" and sim.errors[0].error["param"] is None


async def test_scripted_errors_are_recorded_as_scripted() -> None:
    script = Script.from_dict({"turn": [{"error": {"type": "server_error", "message": "boom"}}]})
    async with Simulator(script=script, strict=True) as sim, connect(sim.url) as c:
        await c.send(type="response.create", event_id="cli_5")
        err = await c.next()
        assert err["error"]["message"] == "boom" and err["error"]["event_id"] == "cli_5"
        assert [(e.cause, e.scripted) for e in sim.errors] == [("response.create", True)]


async def test_the_cli_flag_turns_strict_mode_on() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgevoice", "simulator", "--port", "0", "--no-tts", "--strict"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        url = line.split(" on ", 1)[1].split("/voice-live", 1)[0]
        async with connect(url) as c:
            await c.send(type="input_audio_buffer.clear", event_id="cli_6", force=True)
            err = await c.next()
            assert err["type"] == "error" and err["error"]["param"] == "force", err
    finally:
        stop_process(proc)
