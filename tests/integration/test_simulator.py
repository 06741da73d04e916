"""The loopback Voice Live simulator, driven by a plain ``websockets`` client over 127.0.0.1.

No mocks and no fixed sleeps: every step awaits a concrete event with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from edgevoice.audio import g711
from edgevoice.devkit.simulator import Simulator
from edgevoice.devkit.simulator.script import Script
from support import espeak

API = "/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime"
EXAMPLE_SCRIPT = Path(__file__).resolve().parents[2] / "config/examples/simulator-script.toml"
TIMEOUT = 5.0


def silence(ms: int, rate: int = 24000) -> bytes:
    return b"\x00\x00" * (rate * ms // 1000)


def speech_bounds_ms(pcm: bytes, rate: int = 24000, dbfs: float = -45.0) -> tuple[int, int]:
    """First and last 10 ms frame above ``dbfs``: where the speech really is."""
    n = rate // 100
    frames = np.frombuffer(pcm[: len(pcm) // (2 * n) * 2 * n], dtype="<i2").reshape(-1, n)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loud = np.nonzero(20 * np.log10(np.maximum(rms, 1e-3) / 32768) > dbfs)[0]
    return int(loud[0]) * 10, (int(loud[-1]) + 1) * 10


class Client:
    """A raw WebSocket client that keeps every server event it read."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, **event: Any) -> None:
        await self.ws.send(json.dumps(event))

    async def next(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(event)
        return event

    async def until(self, type_: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Events up to and including the next one of ``type_``."""
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                got.append(await self.next())
                if got[-1]["type"] == type_:
                    return got

    async def append(self, pcm: bytes, chunk_ms: int = 100, rate: int = 24000) -> None:
        step = rate * chunk_ms // 1000 * 2
        for i in range(0, len(pcm), step):
            await self.send(type="input_audio_buffer.append",
                            audio=base64.b64encode(pcm[i:i + step]).decode())

    async def update(self, **session: Any) -> dict[str, Any]:
        await self.send(type="session.update", session=session)
        return (await self.until("session.updated"))[-1]["session"]

    async def respond(self, **kwargs: Any) -> list[dict[str, Any]]:
        await self.send(type="response.create", **kwargs)
        return await self.until("response.done")


@asynccontextmanager
async def connect(sim: Simulator, path: str = API, **kwargs: Any) -> AsyncIterator[Client]:
    async with websockets.connect(sim.url + path, **kwargs) as ws:
        client = Client(ws)
        assert (await client.next())["type"] == "session.created"
        yield client


def of(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_]


def audio_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in of(events, "response.audio.delta"))


def transcript_of(events: list[dict[str, Any]]) -> str:
    return of(events, "response.audio_transcript.done")[-1]["transcript"]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as s:
        yield s


def scripted(turns: list[dict[str, Any]] | None = None,
             connections: list[dict[str, Any]] | None = None, **kw: Any) -> Simulator:
    return Simulator(script=Script.from_dict({"turn": turns or [],
                                              "connection": connections or []}), **kw)


# ------------------------------------------------------------------------------------------
# session


async def test_session_created_update_merge_and_validation(sim: Simulator) -> None:
    async with connect(sim) as c:
        created = c.events[0]
        s0 = created["session"]
        assert created["event_id"]
        assert s0["id"].startswith("sess_") and s0["object"] == "realtime.session"
        assert s0["model"] == "gpt-realtime" and s0["voice"] == "alloy"
        assert s0["turn_detection"]["type"] == "server_vad"

        s1 = await c.update(instructions="Be brief.", turn_detection=None,
                            output_audio_format="g711_ulaw")
        assert s1["id"] == s0["id"] and s1["instructions"] == "Be brief."
        assert s1["turn_detection"] is None and s1["output_audio_format"] == "g711_ulaw"
        assert s1["voice"] == "alloy" and s1["input_audio_format"] == "pcm16"  # untouched

        s2 = await c.update(voice={"type": "azure-standard", "name": "en-US-AvaNeural"})
        assert s2["instructions"] == "Be brief." and s2["voice"]["name"] == "en-US-AvaNeural"

        for bad, param in (
            ({"input_audio_format": "mp3"}, "session.input_audio_format"),
            ({"turn_detection": {"type": "server_vad", "threshold": 1.5}},
             "session.turn_detection.threshold"),
            ({"output_audio_format": "pcm16_44khz"}, "session.output_audio_format"),
        ):
            await c.send(type="session.update", event_id="cli_bad", session=bad)
            err = (await c.until("error"))[-1]["error"]
            assert err["type"] == "invalid_request_error"
            assert err["param"] == param and err["event_id"] == "cli_bad"
        # Rejected updates changed nothing.
        s3 = await c.update(temperature=0.7)
        assert s3["input_audio_format"] == "pcm16" and s3["turn_detection"] is None
    rec = sim.connections[0]
    assert rec.path == "/voice-live/realtime"
    assert rec.query == {"api-version": "2025-10-01", "model": "gpt-realtime"}
    assert len(rec.received("session.update")) == 6
    event_ids = [e["event_id"] for e in rec.sent_events]
    assert len(event_ids) == len(set(event_ids))
    await sim.wait_closed(0)


async def test_bad_frames_get_errors_and_the_connection_stays_open(sim: Simulator) -> None:
    async with connect(sim) as c:
        await c.ws.send("this is not json")
        assert (await c.next())["error"]["type"] == "invalid_request_error"
        await c.send(type="no.such.event", event_id="cli_x")
        err = (await c.next())["error"]
        assert err["event_id"] == "cli_x" and err["param"] == "type"
        await c.send(type="input_audio_buffer.append", event_id="cli_b64", audio="***")
        err = (await c.next())["error"]
        assert err["event_id"] == "cli_b64" and err["param"] == "audio"
        await c.send(type="input_audio_buffer.commit", event_id="cli_empty")
        err = (await c.next())["error"]
        assert err["event_id"] == "cli_empty" and "empty" in err["message"]
        await c.send(type="input_audio_buffer.append", audio=base64.b64encode(b"\0" * 960).decode())
        await c.send(type="input_audio_buffer.clear")
        assert (await c.next())["type"] == "input_audio_buffer.cleared"
        assert (await c.update(instructions="still here"))["instructions"] == "still here"


# ------------------------------------------------------------------------------------------
# VAD and responses


async def test_server_vad_timing_commit_transcript_and_reply_audio() -> None:
    said = "It is sunny today."
    utterance = espeak("what is the weather like", 24000)
    pcm = silence(1000) + utterance + silence(1000)
    onset, end = speech_bounds_ms(pcm)
    async with scripted([{"user": "what's the weather", "say": said}]) as sim:
        async with connect(sim) as c:
            await c.update(input_audio_transcription={"model": "whisper-1"},
                           turn_detection={"type": "server_vad", "threshold": 0.5,
                                           "prefix_padding_ms": 300, "silence_duration_ms": 500})
            await c.append(pcm)
            events = await c.until("response.done")
        types = [e["type"] for e in events]
        started = of(events, "input_audio_buffer.speech_started")[0]
        stopped = of(events, "input_audio_buffer.speech_stopped")[0]
        assert abs(started["audio_start_ms"] - (onset - 300)) <= 150
        assert abs(stopped["audio_end_ms"] - end) <= 150
        assert started["item_id"] == stopped["item_id"]
        committed = of(events, "input_audio_buffer.committed")[0]
        assert committed["item_id"] == started["item_id"]
        user_item = of(events, "conversation.item.created")[0]["item"]
        assert user_item["role"] == "user"
        assert user_item["content"] == [{"type": "input_audio", "transcript": None}]
        transcription = of(events, "conversation.item.input_audio_transcription.completed")[0]
        assert transcription["transcript"] == "what's the weather"
        assert types.index("input_audio_buffer.speech_stopped") < types.index("response.created")
        # The lifecycle of §10.1, in order.
        lifecycle = [t for t in types if t.startswith("response.") and "delta" not in t]
        assert lifecycle == [
            "response.created", "response.output_item.added", "response.content_part.added",
            "response.audio.done", "response.audio_transcript.done",
            "response.content_part.done", "response.output_item.done", "response.done",
        ]
        audio = audio_of(events)
        assert abs(len(audio) - len(espeak(said, 24000))) <= 48  # same duration (24 kHz PCM16)
        assert np.abs(np.frombuffer(audio, dtype="<i2")).max() > 1000
        deltas = of(events, "response.audio.delta")
        assert all(len(base64.b64decode(d["delta"])) <= 4800 for d in deltas)
        assert "".join(d["delta"] for d in of(events, "response.audio_transcript.delta")) == said
        done = events[-1]["response"]
        assert done["status"] == "completed" and done["usage"]["total_tokens"] > 0
        assert done["output"][0]["content"] == [{"type": "audio", "transcript": said}]
        assert len(sim.connections[0].appended_audio) == len(pcm)


async def test_manual_mode_commit_then_response_create(sim: Simulator) -> None:
    async with connect(sim) as c:
        await c.update(turn_detection=None)
        await c.append(silence(300) + espeak("hello", 24000) + silence(300))
        await c.send(type="input_audio_buffer.commit", event_id="cli_commit")
        committed = await c.next()
        assert committed["type"] == "input_audio_buffer.committed"
        created = await c.next()
        assert created["type"] == "conversation.item.created"
        assert created["item"]["id"] == committed["item_id"]
        events = await c.respond(event_id="cli_rc")
        assert transcript_of(events) == Script().default_say
        assert not any("speech_" in e["type"] for e in c.events)
        # Items: retrieve, insert at root, unknown previous_item_id, delete.
        await c.send(type="conversation.item.retrieve", item_id=committed["item_id"])
        assert (await c.next())["item"]["role"] == "user"
        await c.send(type="conversation.item.create", previous_item_id="root",
                     item={"type": "message", "role": "system",
                           "content": [{"type": "input_text", "text": "Be nice."}]})
        root = await c.next()
        assert root["type"] == "conversation.item.created" and root["previous_item_id"] is None
        await c.send(type="conversation.item.create", event_id="cli_prev",
                     previous_item_id="item_nope",
                     item={"type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": "hi"}]})
        err = (await c.next())["error"]
        assert err["event_id"] == "cli_prev" and err["param"] == "previous_item_id"
        await c.send(type="conversation.item.delete", item_id=root["item"]["id"])
        assert (await c.next())["type"] == "conversation.item.deleted"
        await c.send(type="conversation.item.delete", event_id="cli_del",
                     item_id=root["item"]["id"])
        assert (await c.next())["error"]["event_id"] == "cli_del"


async def test_text_only_and_g711_ulaw_output() -> None:
    async with scripted([{"say": "Plain text."}, {"say": "Mu law audio."}], tts=False) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None, modalities=["text"])
            events = await c.respond()
            assert not of(events, "response.audio.delta")
            assert "".join(e["delta"] for e in of(events, "response.text.delta")) == "Plain text."
            assert of(events, "response.text.done")[0]["text"] == "Plain text."
            assert of(events, "response.content_part.done")[0]["part"] == {
                "type": "text", "text": "Plain text."}

            await c.update(modalities=["text", "audio"], output_audio_format="g711_ulaw")
            events = await c.respond()
            ulaw = audio_of(events)
            pcm = g711.ulaw_decode(ulaw)
            # Tone fallback: ~65 ms per character at 8 kHz, one byte per sample.
            assert len(ulaw) == int(min(max(len("Mu law audio.") * 0.065, 0.3), 20) * 8000)
            assert np.abs(pcm.astype(np.int32)).max() > 5000
            assert all(len(base64.b64decode(e["delta"])) <= 800
                       for e in of(events, "response.audio.delta"))


@pytest.mark.realtime  # the simulator paces its replies in real time
async def test_cancel_active_and_inactive() -> None:
    long = "This is a rather long answer that keeps going for quite a while, " * 3
    async with scripted([{"say": long}], tts=False, pace=4.0) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            await c.send(type="response.create")
            await c.until("response.audio.delta")
            await c.send(type="response.cancel", event_id="cli_cancel")
            events = await c.until("response.done")
            done = events[-1]["response"]
            assert done["status"] == "cancelled"
            assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
            assert done["output"][0]["status"] == "incomplete"
            types = [e["type"] for e in events]
            for closing in ("response.audio.done", "response.audio_transcript.done",
                            "response.content_part.done", "response.output_item.done"):
                assert closing in types
            assert of(events, "response.output_item.done")[0]["item"]["status"] == "incomplete"
            assert len(transcript_of(events)) < len(long.strip())
            assert not of(events, "error")

            await c.send(type="response.cancel", event_id="cli_cancel2")
            err = (await c.next())["error"]
            assert err["message"] == "Cancellation failed: no active response"
            assert err["event_id"] == "cli_cancel2"


async def test_truncate_valid_past_end_and_wrong_item() -> None:
    async with scripted([{"say": "A short reply to truncate."}], tts=False) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            events = await c.respond()
            item_id = of(events, "response.output_item.done")[0]["item"]["id"]
            audio_ms = len(audio_of(events)) / 48
            await c.send(type="conversation.item.truncate", item_id=item_id, content_index=0,
                         audio_end_ms=500)
            ev = await c.next()
            assert ev == {"type": "conversation.item.truncated", "event_id": ev["event_id"],
                          "item_id": item_id, "content_index": 0, "audio_end_ms": 500}
            await c.send(type="conversation.item.truncate", event_id="cli_past", item_id=item_id,
                         content_index=0, audio_end_ms=int(audio_ms) + 1000)
            err = (await c.next())["error"]
            assert err["event_id"] == "cli_past" and err["param"] == "audio_end_ms"
            await c.send(type="conversation.item.create",
                         item={"type": "message", "role": "user",
                               "content": [{"type": "input_text", "text": "hi"}]})
            user_id = (await c.next())["item"]["id"]
            await c.send(type="conversation.item.truncate", event_id="cli_user", item_id=user_id,
                         content_index=0, audio_end_ms=0)
            assert (await c.next())["error"]["event_id"] == "cli_user"


@pytest.mark.realtime  # the simulator paces its replies in real time
async def test_barge_in_cancels_with_turn_detected_and_auto_truncates() -> None:
    long = "Let me explain this in great detail, step by step, from the very beginning. " * 2
    async with scripted([{"say": long}, {"say": "Okay."}], tts=False, pace=2.0) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection={"type": "server_vad", "interrupt_response": True,
                                           "auto_truncate": True, "silence_duration_ms": 300})
            await c.send(type="response.create")
            first = (await c.until("response.audio.delta"))[-1]
            await c.append(espeak("stop", 24000) + silence(500))
            events = await c.until("input_audio_buffer.committed")
            types = [e["type"] for e in events]
            assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
            done = of(events, "response.done")[0]["response"]
            assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
            truncated = of(events, "conversation.item.truncated")[0]
            assert truncated["item_id"] == first["item_id"]
            sent_ms = len(audio_of(events) + base64.b64decode(first["delta"])) / 16
            assert 0 <= truncated["audio_end_ms"] <= sent_ms
            # The user's turn continues: a new response follows (create_response default).
            assert (await c.until("response.created"))[-1]["type"] == "response.created"


# ------------------------------------------------------------------------------------------
# function calls


async def test_function_call_round_trip() -> None:
    turn = {"say": "Sure.", "calls": [{"name": "open_window", "arguments": {"side": "left"}}],
            "after_tools": "The window is open."}
    async with scripted([turn], tts=False) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None, tools=[{
                "type": "function", "name": "open_window", "description": "Open a window",
                "parameters": {"type": "object", "properties": {"side": {"type": "string"}}}}])
            events = await c.respond()
            added = [e for e in of(events, "response.output_item.added")
                     if e["item"]["type"] == "function_call"][0]
            assert added["item"]["arguments"] == "" and added["item"]["status"] == "in_progress"
            assert added["output_index"] == 1
            fc_created = [e for e in of(events, "conversation.item.created")
                          if e["item"]["type"] == "function_call"][0]
            assert fc_created["item"]["call_id"] == added["item"]["call_id"]
            deltas = of(events, "response.function_call_arguments.delta")
            assert len(deltas) >= 2 and "name" not in deltas[0]
            args_done = of(events, "response.function_call_arguments.done")[0]
            assert args_done["name"] == "open_window"
            assert args_done["arguments"] == '{"side":"left"}'
            assert "".join(d["delta"] for d in deltas) == args_done["arguments"]
            assert args_done["call_id"] == added["item"]["call_id"]
            item_done = of(events, "response.output_item.done")[-1]["item"]
            assert item_done["status"] == "completed"
            assert item_done["arguments"] == args_done["arguments"]
            assert [o["type"] for o in events[-1]["response"]["output"]] == [
                "message", "function_call"]

            await c.send(type="conversation.item.create", previous_item_id=added["item"]["id"],
                         item={"type": "function_call_output", "call_id": args_done["call_id"],
                               "output": json.dumps({"ok": True})})
            created = await c.next()
            assert created["item"]["type"] == "function_call_output"
            assert created["previous_item_id"] == added["item"]["id"]
            assert transcript_of(await c.respond()) == "The window is open."
            assert sim.turn_index == 1


async def test_two_calls_in_one_response() -> None:
    turn = {"calls": [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "call_id": "call_b"}]}
    async with scripted([turn], tts=False) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            events = await c.respond()
            done = of(events, "response.function_call_arguments.done")
            assert [d["name"] for d in done] == ["a", "b"]
            assert [d["output_index"] for d in done] == [0, 1]
            assert done[1]["call_id"] == "call_b" and done[1]["arguments"] == "{}"
            assert len({d["call_id"] for d in done}) == 2
            assert not of(events, "response.audio.delta")
            assert len(events[-1]["response"]["output"]) == 2
            for d in done:
                await c.send(type="conversation.item.create",
                             item={"type": "function_call_output", "call_id": d["call_id"],
                                   "output": "ok"})
                await c.until("conversation.item.created")
            assert transcript_of(await c.respond()) == Script().default_after_tools


# ------------------------------------------------------------------------------------------
# handshake: auth, paths, scripted HTTP status


async def test_auth_api_key_and_bearer() -> None:
    async with Simulator(api_key="secret", accept_token=lambda t: t == "good") as sim:
        for headers in ({}, {"api-key": "wrong"}, {"Authorization": "Bearer bad"}):
            with pytest.raises(InvalidStatus) as exc:
                async with websockets.connect(sim.url + API, additional_headers=headers):
                    pass
            assert exc.value.response.status_code == 401
        async with connect(sim, additional_headers={"api-key": "secret"}):
            pass
        async with connect(sim, additional_headers={"Authorization": "Bearer good"}):
            pass
        assert [a.status for a in sim.attempts] == [401, 401, 401, 101, 101]
        rec = sim.connections[0]
        assert "api-key" in rec.header_names and rec.headers["api-key"] == "<redacted>"


async def test_paths_404_and_prefix(sim: Simulator) -> None:
    with pytest.raises(InvalidStatus) as exc:
        async with websockets.connect(sim.url + "/openai/realtime?api-version=2025-10-01"):
            pass
    assert exc.value.response.status_code == 404
    async with connect(sim, "/some/prefix/voice-live/realtime?api-version=2025-10-01&model=m"):
        pass
    assert sim.connections[0].path == "/some/prefix/voice-live/realtime"
    assert sim.connections[0].query["model"] == "m"


async def test_scripted_429_with_retry_after() -> None:
    async with scripted(connections=[{"http_status": 429, "retry_after": 2}]) as sim:
        with pytest.raises(InvalidStatus) as exc:
            async with websockets.connect(sim.url + API):
                pass
        assert exc.value.response.status_code == 429
        assert exc.value.response.headers["Retry-After"] == "2"
        async with connect(sim):
            pass
        assert [a.status for a in sim.attempts] == [429, 101]


@pytest.mark.realtime  # the simulator paces its replies in real time
async def test_silent_and_no_pong_connections() -> None:
    async with scripted(connections=[{"silent": True}, {"no_pong": True}]) as sim:
        async with websockets.connect(sim.url + API) as ws:
            await asyncio.wait_for(await ws.ping(), TIMEOUT)  # pings still answered
            await ws.send(json.dumps({"type": "session.update", "session": {}}))
            await sim.wait_for_event("session.update")
            assert sim.connections[0].sent_events == []
        async with connect(sim) as c:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(await c.ws.ping(), 0.5)
            assert (await c.update(instructions="x"))["instructions"] == "x"


@pytest.mark.realtime  # the simulator paces its replies in real time
async def test_inject_sends_frames_verbatim_on_the_newest_connection(sim: Simulator) -> None:
    assert await sim.inject(["{}"]) == 0  # no connection yet
    async with connect(sim) as old, connect(sim) as new:
        frames = ['{"type": "response.audio.delta", "delta": "%%%"}', b"\xff\x00", "[1, 2"]
        assert await sim.inject(frames) == 3
        got = [await asyncio.wait_for(new.ws.recv(), TIMEOUT) for _ in frames]
        assert got == frames
        # Frames on one connection arrive in order: once the old connection's pong is in,
        # anything the server had sent on it before is buffered, so a short recv proves it.
        await asyncio.wait_for(await old.ws.ping(), TIMEOUT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(old.ws.recv(), 0.05)
        assert sim.injected == 3
        assert all(e["type"] == "session.created" for e in sim.connections[1].sent_events)


async def test_restart_serves_the_same_url_and_keeps_script_progress() -> None:
    sim = scripted([{"say": "One."}, {"say": "Two."}], tts=False)
    async with sim:
        url = sim.url
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            assert transcript_of(await c.respond()) == "One."
    with pytest.raises(OSError):
        async with websockets.connect(url + API, open_timeout=TIMEOUT):
            pass
    async with sim:
        assert sim.url == url
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            assert transcript_of(await c.respond()) == "Two."


# ------------------------------------------------------------------------------------------
# scripted drops


async def assert_dropped(c: Client) -> list[dict[str, Any]]:
    """Read until the socket closes; returns what arrived before."""
    before = len(c.events)
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            while True:
                await c.next()
    return c.events[before:]


async def test_drop_before_session_created_then_normal() -> None:
    async with scripted(connections=[{"drop": "before-session-created"}]) as sim:
        async with websockets.connect(sim.url + API) as ws:
            with pytest.raises(ConnectionClosed) as exc:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert exc.value.rcvd is None  # abrupt: no close frame
        async with connect(sim):
            pass
        assert sim.connection_count == 2


async def test_drop_after_session_updated_keeps_the_turn() -> None:
    async with scripted([{"say": "First.", "drop": "after-session-updated",
                          "close_code": 1011}], tts=False) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            assert await assert_dropped(c) == []
            assert c.ws.close_code == 1011
        async with connect(sim) as c:
            await c.update(turn_detection=None)  # fired once: no second drop
            assert transcript_of(await c.respond()) == "First."


async def test_drop_mid_audio_replays_the_turn_on_the_next_connection() -> None:
    said = "One two three four five six seven eight nine ten."
    async with scripted([{"say": said, "drop": "mid-audio"}], tts=False) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            await c.send(type="response.create")
            events = await assert_dropped(c)
            cut = len(of(events, "response.audio.delta"))
            assert not of(events, "response.done")
        await sim.wait_closed(0)
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            events = await c.respond()
            assert transcript_of(events) == said and events[-1]["response"]["status"] == "completed"
        # The drop came after about half of the deltas of the full reply.
        assert cut == max(1, len(of(events, "response.audio.delta")) // 2)


async def test_drop_after_function_call_continues_with_after_tools() -> None:
    turn = {"calls": [{"name": "get_time"}], "after_tools": "It is noon.",
            "drop": "after-function-call"}
    async with scripted([turn, {"say": "Next turn."}], tts=False) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            await c.send(type="response.create")
            events = await assert_dropped(c)
            assert events[-1]["type"] == "response.done"
            call_id = of(events, "response.function_call_arguments.done")[0]["call_id"]
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            await c.send(type="conversation.item.create",
                         item={"type": "function_call_output", "call_id": call_id,
                               "output": "12:00"})
            await c.until("conversation.item.created")
            assert transcript_of(await c.respond()) == "It is noon."
            assert transcript_of(await c.respond()) == "Next turn."


async def test_drop_after_response_done() -> None:
    async with scripted([{"say": "Bye.", "drop": "after-response-done"}], tts=False) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None)
            await c.send(type="response.create")
            events = await assert_dropped(c)
            assert events[-1]["type"] == "response.done"
        await sim.wait_closed(0)
        assert sim.connections[0].closed


async def test_drop_mid_user_audio() -> None:
    async with scripted([{"say": "Hi.", "drop": "mid-user-audio"}]) as sim:
        async with connect(sim) as c:
            await c.append(silence(200) + espeak("hello there", 24000) + silence(700))
            events = await assert_dropped(c)
            assert events[-1]["type"] == "input_audio_buffer.speech_started"
        assert sim.turn_index == 0


# ------------------------------------------------------------------------------------------
# script files


def test_script_errors_name_file_key_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[turn]]\nsay = "ok"\n\n[[turn]]\ndrop = "sideways"\n')
    with pytest.raises(ValueError) as exc:
        Script.load(bad)
    msg = str(exc.value)
    assert str(bad) in msg and "turn[1].drop" in msg and "unknown drop point" in msg

    bad.write_text('[[turn]]\ncalls = [{ name = "x", argz = {} }]\n')
    with pytest.raises(ValueError, match=r"turn\[0\]\.calls\[0\]\.argz: unknown key"):
        Script.load(bad)
    bad.write_text("[[turn]\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        Script.load(bad)
    with pytest.raises(ValueError, match=r"connection\[0\]: drop and http_status are exclusive"):
        Script.from_dict({"connection": [{"drop": "before-session-created",
                                          "http_status": 503}]})
    with pytest.raises(ValueError, match="missing.toml: cannot read"):
        Script.load(tmp_path / "missing.toml")


def test_example_script_loads_and_shows_every_feature() -> None:
    script = Script.load(EXAMPLE_SCRIPT)
    drops = {t.drop for t in script.turns}
    assert {"mid-audio", "after-function-call"} <= drops
    assert any(t.error for t in script.turns) and any(len(t.calls) > 1 for t in script.turns)
    kinds = {(c.http_status is not None, c.drop, c.silent, c.no_pong) for c in script.connections}
    assert len(kinds) == len(script.connections)


async def test_word_timestamps_for_azure_voices_match_the_audio() -> None:
    """With an Azure voice and output_audio_timestamp_types = ["word"] every spoken word
    comes with its offset and duration in the reply audio: the audio is loud inside each
    word's span and silent between the words; an OpenAI voice gets none."""
    say = "Sunny and warm, then rain."
    async with scripted([{"say": say}, {"say": say}], pace=0) as sim:
        async with connect(sim) as c:
            await c.update(turn_detection=None, output_audio_timestamp_types=["word"],
                           voice={"type": "azure-standard", "name": "en-US-AvaNeural"})
            events = await c.respond()
            stamps = of(events, "response.audio_timestamp.delta")
            assert [s["text"] for s in stamps] == ["Sunny", "and", "warm", "then", "rain"]
            assert all(s["timestamp_type"] == "word" and s["content_index"] == 0
                       and s["item_id"] == stamps[0]["item_id"] for s in stamps)
            assert of(events, "response.audio_timestamp.done")
            # Each timestamp comes no later than the audio chunk its word begins in.
            sent_ms = 0.0
            for e in events:
                if e["type"] == "response.audio.delta":
                    sent_ms += len(base64.b64decode(e["delta"])) / 48
                elif e["type"] == "response.audio_timestamp.delta":
                    assert e["audio_offset_ms"] < sent_ms + 100
            x = np.abs(np.frombuffer(audio_of(events), "<i2").astype(np.int32))
            ends = 0
            for s in stamps:
                start, end = s["audio_offset_ms"], s["audio_offset_ms"] + s["audio_duration_ms"]
                assert start >= ends and s["audio_duration_ms"] > 0
                assert x[start * 24:(start + 5) * 24].max() > 200, s  # the word begins here
                assert x[(end - 5) * 24:end * 24].max() > 200, s  # and is still on here
                assert x[end * 24 + 24:end * 24 + 48 * 24].max() <= 200, s  # then silence
                ends = end
            assert len(x) >= ends * 24

        async with connect(sim) as c:
            await c.update(turn_detection=None)  # the default OpenAI voice
            events = await c.respond()
            assert audio_of(events) and not of(events, "response.audio_timestamp.delta")
