"""``edgevoice run`` with ``[homeassistant]`` against a real mosquitto broker: the device is
announced, the State sensor and the last wake word follow a real spoken turn, a command on
the mute switch reaches the daemon, ``edgevoice status`` shows the connection, and SIGTERM
leaves the device ``offline``. All real: a child daemon on the virtual sound card, the
simulator, the broker, and an independent MQTT subscriber."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from harness import START_TIMEOUT, service, silence, wake_word

from support import Broker, espeak, until, watching

pytestmark = [pytest.mark.timeout(120), pytest.mark.realtime]

BASE = "edgevoice/e2e"


@pytest.mark.slow
async def test_the_daemon_shows_up_in_home_assistant_and_follows_a_turn(tmp_path: Path):
    broker = Broker(tmp_path)
    extra = (f'[homeassistant]\nhost = "127.0.0.1"\nport = {broker.port}\n'
             f'device_id = "e2e"\n')
    script = {"turn": [{"user": "what's the weather", "say": "Sunny and warm."}]}
    try:
        async with service(script, extra=extra) as svc, watching(broker) as seen:
            await svc.message("READY", "1", timeout=START_TIMEOUT)

            def latest(topic: str) -> bytes | None:
                found = [p for t, p, _ in seen.messages if t == topic]
                return found[-1] if found else None

            await until(lambda: latest(f"{BASE}/availability") == b"online", 10,
                        what="the device online")
            config = json.loads(latest("homeassistant/switch/e2e/mute/config") or b"{}")
            assert config["command_topic"] == f"{BASE}/mute/set", config
            await until(lambda: latest(f"{BASE}/state") == b"idle", 10, what="the state")

            snap = await svc.status()
            assert snap["homeassistant"]["state"] == "connected", snap["homeassistant"]
            text = subprocess.run(
                [sys.executable, "-m", "edgevoice", "status", "--socket",
                 str(svc.status_socket)], env=svc.env, capture_output=True, text=True,
                timeout=30).stdout
            assert f"Home Assistant: connected  mqtt://127.0.0.1:{broker.port}  device e2e" \
                in text, text

            svc.rig.mic.feed(wake_word() + silence(0.3) + espeak("what's the weather like")
                             + silence(1.5))
            await until(lambda: (f"{BASE}/state", b"listening", False) in seen.messages, 20,
                        what="listening")
            await until(lambda: latest(f"{BASE}/wake_word") == b"hey_jarvis", 5,
                        what="the wake word")
            await until(lambda: (f"{BASE}/state", b"thinking", False) in seen.messages, 20,
                        what="thinking")
            await until(lambda: latest(f"{BASE}/state") == b"idle", 40, what="idle again")
            # The transcript is off by default: what the user said never reached the broker.
            assert not any(t == f"{BASE}/transcript" and p for t, p, _ in seen.messages)

            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                await client.publish(f"{BASE}/mute/set", "ON", qos=1)
            # The switch mutes the daemon for real: the switch's state, the State sensor
            # and the daemon's own status say so.
            await until(lambda: latest(f"{BASE}/mute") == b"ON", 10, what="the switch on")
            await until(lambda: latest(f"{BASE}/state") == b"muted", 10, what="muted")
            assert (await svc.status())["muted"] is True
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                await client.publish(f"{BASE}/mute/set", "OFF", qos=1)
            await until(lambda: latest(f"{BASE}/mute") == b"OFF", 10, what="the switch off")
            await until(lambda: latest(f"{BASE}/state") == b"idle", 10, what="idle again")

            await svc.stop_with_sigterm()
            await until(lambda: latest(f"{BASE}/availability") == b"offline", 5,
                        what="offline after SIGTERM")
    finally:
        broker.stop()
