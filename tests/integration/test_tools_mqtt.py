"""MQTT tools against a real mosquitto broker on 127.0.0.1 (started per test, on a free port),
observed with a real aiomqtt subscriber: payloads, replies, reply timeouts, topic and JSON
injection, authentication, and a broker that is not there."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edgevoice.tools import ToolBox, ToolSpec
from support import Broker, free_port, until

pytestmark = pytest.mark.timeout(30)

LIGHT = {
    "type": "object",
    "properties": {
        # Wide on purpose: the call-time topic checks are what is tested here.
        "room": {"type": "string", "pattern": "^.*$", "maxLength": 64},
        "state": {"type": "string", "enum": ["ON", "OFF"]},
        "brightness": {"type": "integer", "minimum": 1, "maximum": 254, "default": 254},
    },
    "required": ["room", "state"],
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    yield b
    b.stop()


class Watcher:
    """An independent subscriber: what really went over the broker."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []


@asynccontextmanager
async def watching(broker: Broker, topic: str = "#") -> AsyncIterator[Watcher]:
    watcher = Watcher()
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(topic, qos=1)

        async def pump() -> None:
            async for m in client.messages:
                watcher.messages.append((str(m.topic), bytes(m.payload), m.retain))

        task = asyncio.create_task(pump())
        try:
            yield watcher
        finally:
            task.cancel()


def tool(broker_port: int, **mqtt: Any) -> ToolSpec:
    fields: dict[str, Any] = {"host": "127.0.0.1", "port": broker_port} | mqtt
    timeout = max(3.0, fields.get("reply_timeout_s", 0))
    return ToolSpec.model_validate({"name": "light", "parameters": LIGHT, "timeout_s": timeout,
                                    "mqtt": fields})


async def test_a_table_payload_arrives_as_json_with_typed_values(broker: Broker) -> None:
    box = ToolBox([tool(broker.port, topic="zigbee2mqtt/{room}_light/set",
                        payload={"state": "{state}", "brightness": "{brightness}",
                                 "source": "voice {room}"}, qos=1)])
    async with watching(broker) as seen:
        output = json.loads(await box.call("c1", "light", '{"room": "hall", "state": "ON"}'))
        await until(lambda: seen.messages, timeout=5, what="the publish")
    assert output == {"ok": True, "published": "zigbee2mqtt/hall_light/set"}
    topic, payload, _ = seen.messages[0]
    assert topic == "zigbee2mqtt/hall_light/set"
    assert json.loads(payload) == {"state": "ON", "brightness": 254, "source": "voice hall"}


async def test_a_string_payload_is_sent_as_text_and_retained(broker: Broker) -> None:
    box = ToolBox([tool(broker.port, topic="home/{room}/light", payload="{state}", retain=True)])
    await box.call("c1", "light", '{"room": "hall", "state": "OFF"}')
    # A subscriber that comes later still gets it: the broker retained it.
    async with watching(broker, "home/#") as seen:
        await until(lambda: seen.messages, timeout=5, what="the retained message")
    assert seen.messages == [("home/hall/light", b"OFF", True)]


async def test_the_reply_is_returned_and_stale_retained_state_is_not(broker: Broker) -> None:
    box = ToolBox([tool(broker.port, topic="z/{room}/set", payload={"state": "{state}"},
                        reply_topic="z/{room}", reply_timeout_s=3)])
    async with aiomqtt.Client("127.0.0.1", broker.port) as device:
        # The device's last state, retained: it must not be taken for the answer.
        await device.publish("z/hall", '{"state": "OFF"}', qos=1, retain=True)
        await device.subscribe("z/+/set", qos=1)

        async def answer() -> None:
            async for m in device.messages:
                state = json.loads(bytes(m.payload))["state"]
                await device.publish("z/hall", json.dumps({"state": state, "linkquality": 90}),
                                     qos=1, retain=True)
                return

        responder = asyncio.create_task(answer())
        output = json.loads(await box.call("c1", "light", '{"room": "hall", "state": "ON"}'))
        await asyncio.wait_for(responder, 5)
    assert output == {"ok": True, "published": "z/hall/set",
                      "reply": '{"state": "ON", "linkquality": 90}'}


@pytest.mark.realtime  # waits out a 0.5 s reply timeout, bounded in wall-clock time
async def test_no_reply_is_an_error_that_says_the_publish_happened(broker: Broker) -> None:
    box = ToolBox([tool(broker.port, topic="z/{room}/set", payload="{state}",
                        reply_topic="z/{room}", reply_timeout_s=0.5)])
    async with watching(broker, "z/#") as seen:
        t0 = time.monotonic()
        output = json.loads(await box.call("c1", "light", '{"room": "hall", "state": "ON"}'))
        elapsed = time.monotonic() - t0
        await until(lambda: seen.messages, timeout=5, what="the publish")
    assert output == {"ok": False, "published": "z/hall/set",
                      "error": "published to z/hall/set, but no reply on z/hall within 0.5 s"}
    assert 0.5 <= elapsed < 2.5
    assert seen.messages == [("z/hall/set", b"ON", False)]


async def test_arguments_cannot_change_the_topic_or_break_the_json(broker: Broker) -> None:
    box = ToolBox([tool(broker.port, topic="home/{room}/set",
                        payload={"state": "{state}", "room": "{room}"})])
    async with watching(broker) as seen:
        for i, room in enumerate(["hall/../garage", "#", "+", ""]):
            output = json.loads(await box.call(f"c{i}", "light",
                                               json.dumps({"room": room, "state": "ON"})))
            assert output["ok"] is False and output["field"] == "room", output
            assert "cannot be part of an MQTT topic" in output["error"]
        sneaky = 'hall", "admin": true, "x": "'
        # Allowed in a JSON value (not in the topic): here the topic is fixed.
        box = ToolBox([tool(broker.port, topic="home/set",
                            payload={"state": "{state}", "room": "{room}"})])
        output = json.loads(await box.call("c9", "light",
                                           json.dumps({"room": sneaky, "state": "ON"})))
        assert output["ok"] is True
        await until(lambda: seen.messages, timeout=5, what="the publish")
    assert len(seen.messages) == 1  # the refused calls published nothing
    assert json.loads(seen.messages[0][1]) == {"state": "ON", "room": sneaky}


async def test_a_broker_that_is_not_there_fails_fast(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    box = ToolBox([tool(port, topic="t")])
    t0 = time.monotonic()
    output = json.loads(await box.call("c1", "light", '{"room": "hall", "state": "ON"}'))
    assert output["ok"] is False
    assert output["error"].startswith(f"MQTT broker 127.0.0.1:{port}: ")
    assert time.monotonic() - t0 < 3


async def test_password_file_authenticates_and_is_never_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = Broker(tmp_path, users={"edgevoice": "pa55-word-xyz"})
    try:
        good, bad = tmp_path / "good", tmp_path / "bad"
        good.write_text("pa55-word-xyz\n")
        bad.write_text("wrong\n")
        good.chmod(0o600)
        bad.chmod(0o600)
        caplog.set_level(logging.DEBUG)
        box = ToolBox([
            tool(b.port, topic="t", username="edgevoice", password_file=str(good)),
            ToolSpec.model_validate({"name": "other", "mqtt": {
                "port": b.port, "topic": "t", "username": "edgevoice",
                "password_file": str(bad)}}),
            ToolSpec.model_validate({"name": "missing", "mqtt": {
                "port": b.port, "topic": "t", "password_file": str(tmp_path / "none")}}),
        ])
        ok = json.loads(await box.call("c1", "light", '{"room": "hall", "state": "ON"}'))
        refused = json.loads(await box.call("c2", "other", "{}"))
        missing = json.loads(await box.call("c3", "missing", "{}"))
    finally:
        b.stop()
    assert ok == {"ok": True, "published": "t"}
    assert refused["ok"] is False and "authori" in refused["error"].lower()
    assert missing == {"ok": False, "error": f"MQTT password: {tmp_path / 'none'}: key file "
                                             f"not found"}
    assert "pa55-word-xyz" not in caplog.text
