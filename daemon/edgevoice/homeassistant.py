"""Home Assistant through MQTT: the device announces itself by MQTT discovery, publishes its
state and takes mute commands (``[homeassistant]``).

What Home Assistant sees: one device (``edgevoice_<device_id>``) with

- a **State** sensor (an enum: idle, listening, thinking, speaking, muted, offline, error);
- a **Mute** switch: a command on ``<base>/mute/set`` (``ON``/``OFF``) calls ``on_mute``;
  its state topic ``<base>/mute`` only ever shows what :meth:`HomeAssistant.set_muted` was
  told (the daemon's real mute state), never the command;
- a **Last wake word** sensor;
- a **Last transcript** sensor only with ``publish_transcript = true`` (off by default: what
  the user says then leaves the device). While it is off, a transcript entity announced
  earlier is removed and its retained text deleted from the broker.

All state messages and discovery configs are retained; availability is
``<base>/availability`` = ``online``/``offline``, with ``offline`` also as the connection's
last will, so a crash or a lost network shows the device unavailable. When Home Assistant
restarts (``<discovery_prefix>/status`` = ``online``) everything is announced again.

Guarantees:

- **Never blocks, never crashes the daemon.** The setters only record the newest value and
  wake the publisher; they never wait and never raise. Everything MQTT runs in one task that
  catches every failure.
- **Reconnects with backoff** (``backoff_s``, the last step repeating; the first step again
  after a connection that came up). Each connection starts with the full announcement and
  the newest values, so nothing set while disconnected is lost (only superseded).
- **Bounded.** The incoming queue is bounded; a retained or malformed mute command is
  ignored (logged at most once a minute); values are cut to 255 characters (Home Assistant's
  limit for a state).
- **Secrets:** the broker password is handled by :mod:`edgevoice.mqtt` (never logged).
- :meth:`HomeAssistant.aclose` publishes ``offline`` (bounded) before disconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import aiomqtt

from edgevoice import __version__
from edgevoice.config import HomeAssistantConfig
from edgevoice.mqtt import BrokerSetupError, broker_label, client_options

log = logging.getLogger("edgevoice.homeassistant")

#: The daemon's states as the State sensor shows them (the feedback states).
STATES = ("idle", "listening", "thinking", "speaking", "muted", "offline", "error")
MAX_STATE_CHARS = 255
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
INCOMING_QUEUE = 64
_BAD_COMMAND_LOG_S = 60.0


class Connection(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    CLOSED = "closed"


def default_device_id(hostname: str | None = None) -> str:
    """The host name as an MQTT- and Home-Assistant-safe id (``[A-Za-z0-9_-]``, ≤ 64)."""
    name = hostname if hostname is not None else socket.gethostname()
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "edgevoice"


class HomeAssistant:
    """The Home Assistant link (see module docs). ``on_mute(muted)`` is called on the loop
    for each valid mute command; ``clock`` is for ``status()``'s ``retry_in``."""

    def __init__(
        self,
        cfg: HomeAssistantConfig,
        *,
        on_mute: Callable[[bool], None],
        state: str = "idle",
        muted: bool = False,
        hostname: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.on_mute = on_mute
        self.clock = clock
        self.device_id = cfg.device_id or default_device_id(hostname)
        self.device_name = cfg.device_name or f"edgevoice {self.device_id}"
        self.base = cfg.base_topic or f"edgevoice/{self.device_id}"
        self.availability_topic = f"{self.base}/availability"
        self.state_topic = f"{self.base}/state"
        self.mute_topic = f"{self.base}/mute"
        self.mute_command_topic = f"{self.base}/mute/set"
        self.wake_word_topic = f"{self.base}/wake_word"
        self.transcript_topic = f"{self.base}/transcript"
        self.ha_status_topic = f"{cfg.discovery_prefix}/status"
        self.client_id = f"edgevoice-{self.device_id}"
        self.label = broker_label(cfg)
        self.connection = Connection.CONNECTING
        self.detail = ""  # why the last connection failed (no secrets: see mqtt.py)
        self.retry_at: float | None = None
        self.connects = 0
        self._values: dict[str, str] = {}  # topic -> newest payload (all retained)
        self._dirty: set[str] = set()
        self._changed = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._bad_command_logged = float("-inf")
        self.set_state(state)
        self.set_muted(muted)

    # ------------------------------------------------------------------ setters (never block)

    def set_state(self, state: str) -> None:
        """The daemon's state, one of :data:`STATES` (anything else is shown as error)."""
        self._set(self.state_topic, state if state in STATES else "error")

    def set_muted(self, muted: bool) -> None:
        """The daemon's real mute state (what the switch shows)."""
        self._set(self.mute_topic, "ON" if muted else "OFF")

    def set_wake_word(self, word: str) -> None:
        self._set(self.wake_word_topic, word)

    def set_transcript(self, text: str) -> None:
        """What the user said; dropped here unless ``publish_transcript`` is on."""
        if self.cfg.publish_transcript:
            self._set(self.transcript_topic, text)

    def _set(self, topic: str, payload: str) -> None:
        payload = payload[:MAX_STATE_CHARS]
        if self._values.get(topic) != payload:
            self._values[topic] = payload
            self._dirty.add(topic)
            self._changed.set()

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """For the status snapshot: connection state, broker, device, last failure."""
        retry_in = None
        if self.connection is Connection.BACKOFF and self.retry_at is not None:
            retry_in = max(0.0, self.retry_at - self.clock())
        return {"state": self.connection.value, "broker": self.label.removeprefix("MQTT broker "),
                "device_id": self.device_id, "detail": self.detail, "retry_in": retry_in,
                "transcript": self.cfg.publish_transcript}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the MQTT task (on the running loop)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())
            self._task.set_name("homeassistant")

    async def aclose(self) -> None:
        """Publish ``offline`` (bounded by :data:`CLOSE_TIMEOUT_S`), then disconnect."""
        client = self._client
        if client is not None and self.connection is Connection.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await client.publish(self.availability_topic, "offline", qos=1, retain=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.connection = Connection.CLOSED

    async def run(self) -> None:
        """Connect, announce, publish and listen; reconnect with backoff. Returns only when
        cancelled; never raises anything else."""
        attempt = 0
        last_reason = None
        while True:
            self.connection = Connection.CONNECTING
            self.retry_at = None
            try:
                await self._connect_and_serve()
                reason = "the broker closed the connection"
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, BrokerSetupError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug here must not end the daemon
                log.exception("Home Assistant: unexpected failure")
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._client = None
            if self.connection is Connection.CONNECTED:
                attempt = 0  # it was up: start the backoff afresh
            delay = self.cfg.backoff_s[min(attempt, len(self.cfg.backoff_s) - 1)]
            attempt += 1
            self.connection = Connection.BACKOFF
            self.detail = reason
            self.retry_at = self.clock() + delay
            level = logging.WARNING if reason != last_reason else logging.DEBUG
            log.log(level, "Home Assistant: %s: %s; retrying in %g s", self.label, reason, delay)
            last_reason = reason
            await asyncio.sleep(delay)

    async def _connect_and_serve(self) -> None:
        options = await client_options(self.cfg)
        will = aiomqtt.Will(self.availability_topic, "offline", qos=1, retain=True)
        async with aiomqtt.Client(**options, identifier=self.client_id, will=will,
                                  keepalive=self.cfg.keepalive_s, timeout=CONNECT_TIMEOUT_S,
                                  max_queued_incoming_messages=INCOMING_QUEUE) as client:
            self._client = client
            await client.subscribe(self.mute_command_topic, qos=1)
            await client.subscribe(self.ha_status_topic, qos=1)
            await self._announce(client)
            self.connection = Connection.CONNECTED
            self.detail = ""
            self.connects += 1
            log.info("Home Assistant: connected to %s as device %s", self.label, self.device_id)
            reader = asyncio.ensure_future(self._read(client))
            writer = asyncio.ensure_future(self._write(client))
            try:
                done, _ = await asyncio.wait((reader, writer),
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # raises the failure that ended it
            finally:
                for task in (reader, writer):
                    task.cancel()
                for task in (reader, writer):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    # ------------------------------------------------------------------ publishing

    def discovery(self) -> dict[str, dict[str, Any] | None]:
        """Discovery topic -> config (None: remove that entity)."""
        device = {"identifiers": [f"edgevoice_{self.device_id}"], "name": self.device_name,
                  "manufacturer": "edgevoice", "model": "edgevoice voice assistant",
                  "sw_version": __version__}
        common = {"availability_topic": self.availability_topic,
                  "payload_available": "online", "payload_not_available": "offline",
                  "device": device, "origin": {"name": "edgevoice", "sw": __version__},
                  "qos": 1}
        prefix, node = self.cfg.discovery_prefix, self.device_id

        def entity(component: str, key: str, **fields: Any) -> tuple[str, dict[str, Any]]:
            return (f"{prefix}/{component}/{node}/{key}/config",
                    {**common, "unique_id": f"edgevoice_{node}_{key}", **fields})

        configs: dict[str, dict[str, Any] | None] = dict([
            entity("sensor", "state", name="State", state_topic=self.state_topic,
                   device_class="enum", options=list(STATES), icon="mdi:account-voice"),
            entity("switch", "mute", name="Mute", state_topic=self.mute_topic,
                   command_topic=self.mute_command_topic, payload_on="ON",
                   payload_off="OFF", state_on="ON", state_off="OFF", optimistic=False,
                   icon="mdi:microphone-off"),
            entity("sensor", "wake_word", name="Last wake word",
                   state_topic=self.wake_word_topic, icon="mdi:bullhorn"),
        ])
        topic, config = entity("sensor", "transcript", name="Last transcript",
                               state_topic=self.transcript_topic, icon="mdi:text")
        configs[topic] = config if self.cfg.publish_transcript else None
        return configs

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Discovery configs, then ``online``, then every value (all retained)."""
        for topic, config in self.discovery().items():
            payload = "" if config is None else json.dumps(config, separators=(",", ":"))
            await client.publish(topic, payload, qos=1, retain=True)
        if not self.cfg.publish_transcript:
            # An empty retained message deletes an old transcript from the broker.
            await client.publish(self.transcript_topic, "", qos=1, retain=True)
        await client.publish(self.availability_topic, "online", qos=1, retain=True)
        self._dirty.clear()
        for topic, payload in list(self._values.items()):
            await client.publish(topic, payload, qos=1, retain=True)

    async def _write(self, client: aiomqtt.Client) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            while self._dirty:
                topic = self._dirty.pop()
                await client.publish(topic, self._values[topic], qos=1, retain=True)

    # ------------------------------------------------------------------ receiving

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                if message.topic.matches(self.mute_command_topic):
                    self._on_mute_command(message)
                elif message.topic.matches(self.ha_status_topic) and \
                        _text(message.payload) == "online":
                    log.info("Home Assistant came online: announcing the device again")
                    await self._announce(client)
            except aiomqtt.MqttError:
                raise
            except Exception:  # a bad message or a failing callback must not end the link
                log.exception("Home Assistant: handling a message on %s failed", message.topic)

    def _on_mute_command(self, message: aiomqtt.Message) -> None:
        text = _text(message.payload).strip().upper()
        if message.retain or text not in ("ON", "OFF"):
            # A retained command is an old one (it would mute again at every reconnect).
            now = self.clock()
            if now - self._bad_command_logged >= _BAD_COMMAND_LOG_S:
                self._bad_command_logged = now
                what = "a retained command" if message.retain else \
                    f"{text[:40]!r} (expected ON or OFF)"
                log.warning("Home Assistant: ignored %s on %s", what, message.topic)
            return
        log.info("Home Assistant: mute %s requested", text.lower())
        self.on_mute(text == "ON")


def _text(payload: Any) -> str:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload[:256]).decode(errors="replace")
    return str(payload)[:256]
