"""Home Assistant through MQTT against a real mosquitto broker on 127.0.0.1 (started per
test), observed with an independent aiomqtt subscriber: discovery, availability and the
last will, the mute switch both ways, the transcript's privacy default, reconnecting after
the broker restarts, authentication, and a broker that is not there."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edgevoice.config import HomeAssistantConfig
from edgevoice.homeassistant import STATES, HomeAssistant
from support import Broker, Watcher, free_port, stop_process, until, watching

pytestmark = pytest.mark.timeout(30)

BASE = "edgevoice/kitchen"
DISCOVERY = "homeassistant/+/kitchen/+/config"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    yield b
    b.stop()


def config(port: int, **fields: Any) -> HomeAssistantConfig:
    return HomeAssistantConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "device_id": "kitchen", "backoff_s": [0.2]}
        | fields)


@asynccontextmanager
async def running(cfg: HomeAssistantConfig, mutes: list[bool] | None = None
                  ) -> AsyncIterator[HomeAssistant]:
    ha = HomeAssistant(cfg, on_mute=(mutes if mutes is not None else []).append)
    ha.start()
    try:
        yield ha
    finally:
        await ha.aclose()


def retained(seen: Watcher) -> dict[str, bytes]:
    """topic -> newest payload seen (what a new subscriber would get, roughly)."""
    out: dict[str, bytes] = {}
    for topic, payload, _ in seen.messages:
        out[topic] = payload
    return out


def latest(seen: Watcher, topic: str) -> bytes | None:
    return retained(seen).get(topic)


async def publish(broker: Broker, topic: str, payload: str, retain: bool = False) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.publish(topic, payload, qos=1, retain=retain)


async def test_discovery_announces_one_device_with_its_entities(broker):
    async with running(config(broker.port)) as ha:
        await until(lambda: ha.status()["state"] == "connected", what="the connection")
        async with watching(broker) as seen:  # joins later: sees the retained messages
            await until(lambda: latest(seen, f"{BASE}/mute") is not None, what="retained")
            configs = {t: json.loads(p) for t, p in retained(seen).items()
                       if t.endswith("/config") and p}
            assert set(configs) == {"homeassistant/sensor/kitchen/state/config",
                                    "homeassistant/switch/kitchen/mute/config",
                                    "homeassistant/sensor/kitchen/wake_word/config"}
            devices = {json.dumps(c["device"], sort_keys=True) for c in configs.values()}
            assert len(devices) == 1 and '"identifiers": ["edgevoice_kitchen"]' in devices.pop()
            state = configs["homeassistant/sensor/kitchen/state/config"]
            assert state["options"] == list(STATES) and state["device_class"] == "enum"
            assert state["state_topic"] == f"{BASE}/state"
            mute = configs["homeassistant/switch/kitchen/mute/config"]
            assert (mute["command_topic"], mute["state_topic"]) == \
                (f"{BASE}/mute/set", f"{BASE}/mute")
            for c in configs.values():
                assert c["availability_topic"] == f"{BASE}/availability"
                assert c["unique_id"].startswith("edgevoice_kitchen_")
            assert latest(seen, f"{BASE}/availability") == b"online"
            assert latest(seen, f"{BASE}/state") == b"idle"
            assert latest(seen, f"{BASE}/mute") == b"OFF"

            ha.set_state("listening")
            ha.set_wake_word("hey_jarvis")
            ha.set_transcript("unlock the front door")  # off by default: never published
            await until(lambda: latest(seen, f"{BASE}/state") == b"listening", what="state")
            assert latest(seen, f"{BASE}/wake_word") == b"hey_jarvis"
            ha.set_state("no such state")
            await until(lambda: latest(seen, f"{BASE}/state") == b"error", what="error")
            assert not any(b"front door" in p for _, p, _ in seen.messages)
        assert ha.status()["transcript"] is False
    # aclose() said goodbye
    async with watching(broker, f"{BASE}/availability") as seen:
        await until(lambda: seen.messages, what="the retained availability")
        assert seen.messages[-1][1] == b"offline"


async def test_the_transcript_is_published_only_when_turned_on_and_removed_after(broker):
    async with running(config(broker.port, publish_transcript=True)) as ha, \
            watching(broker) as seen:
        ha.set_transcript("what's the weather")
        await until(lambda: latest(seen, f"{BASE}/transcript") == b"what's the weather",
                    what="the transcript")
        topic = "homeassistant/sensor/kitchen/transcript/config"
        assert json.loads(latest(seen, topic) or b"{}")["state_topic"] == f"{BASE}/transcript"
    # Turned off again: the entity and the retained text are removed from the broker.
    async with running(config(broker.port)) as ha:
        await until(lambda: ha.status()["state"] == "connected", what="the connection")
        async with watching(broker) as seen:
            await until(lambda: latest(seen, f"{BASE}/mute") is not None, what="retained")
            assert f"{BASE}/transcript" not in retained(seen)
            assert "homeassistant/sensor/kitchen/transcript/config" not in retained(seen)


async def test_the_mute_switch_calls_back_and_shows_the_real_state(broker, caplog):
    mutes: list[bool] = []
    async with running(config(broker.port), mutes) as ha, watching(broker) as seen:
        await until(lambda: latest(seen, f"{BASE}/mute") == b"OFF", what="the mute state")
        await publish(broker, f"{BASE}/mute/set", "ON")
        await until(lambda: mutes == [True], what="the mute callback")
        # The command alone changes nothing: the switch shows what the daemon reports.
        assert latest(seen, f"{BASE}/mute") == b"OFF"
        ha.set_muted(True)
        await until(lambda: latest(seen, f"{BASE}/mute") == b"ON", what="muted")
        await publish(broker, f"{BASE}/mute/set", "maybe")
        await publish(broker, f"{BASE}/mute/set", "off")
        await until(lambda: mutes == [True, False], what="the unmute callback")
        assert any("ignored 'MAYBE' (expected ON or OFF)" in r.getMessage()
                   for r in caplog.records), caplog.text
    # A retained command (an old one) never mutes on connecting.
    await publish(broker, f"{BASE}/mute/set", "ON", retain=True)
    mutes.clear()
    async with running(config(broker.port), mutes) as ha:
        await until(lambda: ha.status()["state"] == "connected", what="the connection")
        await asyncio.sleep(0.3)
        assert mutes == []


async def test_a_failing_mute_callback_does_not_end_the_link(broker, caplog):
    def boom(muted: bool) -> None:
        raise RuntimeError("mute broke")

    ha = HomeAssistant(config(broker.port), on_mute=boom)
    ha.start()
    try:
        await until(lambda: ha.status()["state"] == "connected", what="the connection")
        await publish(broker, f"{BASE}/mute/set", "ON")
        await until(lambda: "mute broke" in caplog.text, what="the logged failure")
        async with watching(broker) as seen:
            ha.set_state("speaking")
            await until(lambda: latest(seen, f"{BASE}/state") == b"speaking", what="state")
        assert ha.connects == 1
    finally:
        await ha.aclose()


async def test_home_assistant_restarting_gets_the_device_announced_again(broker):
    async with running(config(broker.port)) as ha, watching(broker) as seen:
        await until(lambda: ha.status()["state"] == "connected", what="the connection")
        await until(lambda: latest(seen, f"{BASE}/mute"), what="retained")
        before = len(seen.messages)
        await publish(broker, "homeassistant/status", "online")
        await until(lambda: any(t == "homeassistant/switch/kitchen/mute/config"
                                for t, _, _ in seen.messages[before:]), what="re-announce")


async def test_it_reconnects_after_the_broker_restarts_and_publishes_the_newest(broker, caplog):
    async with running(config(broker.port)) as ha:
        await until(lambda: ha.status()["state"] == "connected", what="the connection")
        broker.stop()
        await until(lambda: ha.status()["state"] == "backoff", what="the backoff")
        status = ha.status()
        assert status["broker"] == f"127.0.0.1:{broker.port}" and status["detail"]
        ha.set_state("thinking")  # while down: never blocks, sent after reconnecting
        ha.set_muted(True)
        await asyncio.sleep(0.5)  # a few failed attempts
        broker.start()  # persistence false: nothing retained survived
        await until(lambda: ha.status()["state"] == "connected", timeout=10, what="reconnect")
        assert ha.connects == 2
        async with watching(broker) as seen:
            await until(lambda: latest(seen, f"{BASE}/mute") == b"ON", what="the mute state")
            assert latest(seen, f"{BASE}/state") == b"thinking"
            assert latest(seen, "homeassistant/sensor/kitchen/state/config")
            assert latest(seen, f"{BASE}/availability") == b"online"
    # One warning per distinct reason, not one per attempt.
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "edgevoice.homeassistant" and r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= 2, warnings


async def test_a_broker_that_is_not_there_is_retried_quietly(caplog):
    port = free_port()
    async with running(config(port, backoff_s=[0.1, 0.2])) as ha:
        await until(lambda: ha.status()["state"] == "backoff", what="the backoff")
        await asyncio.sleep(0.5)
        assert ha.status()["retry_in"] is not None
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "edgevoice.homeassistant" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"Home Assistant: MQTT broker 127.0.0.1:{port}: ")


async def test_credentials_come_from_the_password_file_and_are_never_logged(tmp_path, caplog):
    b = Broker(tmp_path, users={"edgevoice": "pa55-word-xyz"})
    try:
        good = tmp_path / "good"
        good.write_text("pa55-word-xyz\n")
        good.chmod(0o600)
        bad = tmp_path / "bad"
        bad.write_text("wrong-pa55\n")
        bad.chmod(0o600)
        caplog.set_level(logging.DEBUG)
        cfg = config(b.port, username="edgevoice", password_file=str(bad))
        async with running(cfg) as ha:
            await until(lambda: ha.status()["state"] == "backoff", what="the refusal")
            assert "authori" in ha.status()["detail"].lower(), ha.status()
        cfg = config(b.port, username="edgevoice", password_file=str(good))
        async with running(cfg) as ha:
            await until(lambda: ha.status()["state"] == "connected", what="the connection")
        assert "pa55" not in caplog.text
    finally:
        b.stop()


def test_bad_config_names_the_key():
    from edgevoice.config import ConfigError, parse_config

    cases = {
        '[homeassistant]\ndevice_id = "my kitchen"\n': "homeassistant.device_id: must match",
        '[homeassistant]\ndiscovery_prefix = "ha/#"\n':
            "homeassistant.discovery_prefix: must be an MQTT topic",
        '[homeassistant]\nhost = "ha.lan"\npassword_file = "/etc/edgevoice/mqtt"\n':
            "homeassistant: password_file with tls = false to ha.lan",
        '[homeassistant]\nca_file = "/x.pem"\n':
            "homeassistant: ca_file, cert_file and key_file need tls = true",
        '[homeassistant]\nport = 0\n': "homeassistant.port: must be >= 1",
        '[homeassistant]\npublish_transcripts = true\n':
            "homeassistant.publish_transcripts: unknown key",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config(text, "edgevoice.toml")
        assert any(e.startswith("edgevoice.toml: ") and expected in e
                   for e in info.value.errors), (text, info.value.errors)
    assert parse_config("", "x").homeassistant is None
    assert parse_config("[homeassistant]\n", "x").homeassistant is not None


CHILD = textwrap.dedent("""
    import asyncio, sys
    from edgevoice.config import HomeAssistantConfig
    from edgevoice.homeassistant import HomeAssistant

    async def main(port):
        cfg = HomeAssistantConfig(host="127.0.0.1", port=port, device_id="kitchen")
        ha = HomeAssistant(cfg, on_mute=print)
        ha.start()
        while ha.status()["state"] != "connected":
            await asyncio.sleep(0.05)
        print("connected", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main(int(sys.argv[1])))
""")


async def test_the_last_will_marks_the_device_offline_when_the_process_dies(broker):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(broker.port)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async with watching(broker, f"{BASE}/availability") as seen:
            assert child.stdout is not None
            line = await asyncio.to_thread(child.stdout.readline)
            assert line == "connected\n", child.stderr.read() if child.stderr else line
            await until(lambda: latest(seen, f"{BASE}/availability") == b"online",
                        what="online")
            child.send_signal(signal.SIGKILL)  # no goodbye: only the broker's will is left
            await until(lambda: latest(seen, f"{BASE}/availability") == b"offline",
                        what="the last will")
    finally:
        stop_process(child)


def test_check_config_names_the_key(tmp_path, capsys):
    from edgevoice.cli import main

    path = tmp_path / "edgevoice.toml"
    path.write_text('[homeassistant]\nhost = "ha.lan"\nbackoff_s = []\n')
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: homeassistant.backoff_s: must not be empty" in err, err
    path.write_text('[homeassistant]\nhost = "ha.lan"\ntls = true\n')
    assert main(["check-config", "--config", str(path)]) == 0
