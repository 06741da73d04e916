"""The actions a tool can take: run a command, drive a GPIO pin, publish over MQTT.

Each ``run_*`` coroutine takes the action's settings and the validated arguments and returns
the success fields of the output, or raises :class:`ToolFailure` with a message meant for the
model. None of them bounds its own time: the :class:`~edgevoice.tools.toolbox.ToolBox`
cancels them at the tool's ``timeout_s``, and each one cleans up when cancelled (a command's
whole process group is killed, an MQTT connection is closed).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from gpiozero import DigitalInputDevice, DigitalOutputDevice, PWMOutputDevice

from edgevoice.config.tools import (
    CommandAction,
    GpioAction,
    MqttAction,
    as_text,
    gpio_pin_key,
    placeholders,
    render,
    whole_placeholder,
)
from edgevoice.mqtt import BrokerSetupError, broker_label, client_options
from edgevoice.util import DEFAULT_PATH, child_environ

__all__ = ["DEFAULT_PATH", "Completed", "GpioPins", "ToolFailure", "execute", "outcome",
           "run_command", "run_mqtt"]

_STDERR_TAIL = 2048


class ToolFailure(Exception):
    """An expected failure: ``message`` (and ``fields``) go to the model as the output."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


# --------------------------------------------------------------------------- command


class _Capture(asyncio.SubprocessProtocol):
    """Collects at most ``cap`` bytes of stdout (the rest is read and dropped, so the child
    never blocks on a full pipe) and the last bytes of stderr."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cap: int) -> None:
        self.cap = cap
        self.stdout = bytearray()
        self.truncated = False
        self.stderr = bytearray()
        self.exited = loop.create_future()
        self.closed = loop.create_future()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            room = self.cap - len(self.stdout)
            self.stdout += data[:max(room, 0)]
            self.truncated |= len(data) > room
        else:
            self.stderr += data
            del self.stderr[:-_STDERR_TAIL]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid``; quiet when it is already gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def command_argv(action: CommandAction, args: Mapping[str, Any]) -> list[str]:
    """The argv to run: each template element becomes exactly one argument."""
    return [action.argv[0], *(render(a, args) for a in action.argv[1:])]


def command_env(action: CommandAction, environ: Mapping[str, str]) -> dict[str, str]:
    """The child's whole environment: the allowlisted variables that are set, and PATH."""
    return child_environ(action.env, environ)


@dataclass
class Completed:
    """What a finished (or killed) command left: its exit status (negative: the signal),
    at most ``cap`` bytes of stdout, whether more came, and the tail of stderr."""

    code: int | None
    stdout: bytes
    truncated: bool
    stderr: bytes


async def execute(argv: list[str], env: Mapping[str, str], cwd: str | None,
                  cap: int) -> Completed:
    """Run ``argv`` without a shell, in a new session (its own process group), with exactly
    ``env`` as its environment.

    When the program exits, anything it left running in its group is killed too, so a tool
    never leaves processes behind and its pipes close. When cancelled (the timeout), the
    whole group is killed and reaped before this returns. Raises :class:`ToolFailure` when
    the program cannot be started."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.subprocess_exec(
            lambda: _Capture(loop, cap), *argv,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=dict(env), start_new_session=True)
    except OSError as exc:
        raise ToolFailure(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    pid = transport.get_pid()
    try:
        await asyncio.shield(proto.exited)  # shielded: the finally below still waits on it
        kill_group(pid)  # leftovers in its group: they would hold the pipes open
        await asyncio.wait_for(asyncio.shield(proto.closed), 2.0)
    except TimeoutError:
        pass  # a grandchild that left the group keeps a pipe: take what we have
    finally:
        if transport.get_returncode() is None:  # cancelled: the timeout
            kill_group(pid)
            # Reap it before reporting, so "timed out" means "gone"; SIGKILL is quick.
            await asyncio.wait([proto.exited], timeout=2.0)
        transport.close()
    return Completed(transport.get_returncode(), bytes(proto.stdout), proto.truncated,
                     bytes(proto.stderr))


def outcome(program: str, done: Completed) -> dict[str, Any]:
    """The success fields of a finished command; a non-zero exit is a :class:`ToolFailure`
    carrying the exit status and the stdout."""
    code = done.code
    stdout = done.stdout.decode(errors="replace").strip()
    result: dict[str, Any] = {"exit_status": code, "stdout": stdout}
    if done.truncated:
        result["truncated"] = True
    if code != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        why = (f"killed by signal {-code}" if code is not None and code < 0
               else f"exited with status {code}")
        raise ToolFailure(f"{program} {why}" + (f": {lines[-1][:300]}" if lines else ""),
                          **result)
    return result


async def run_command(action: CommandAction, args: Mapping[str, Any],
                      environ: Mapping[str, str], runner: Path | None = None) -> dict[str, Any]:
    """Run the command (see :func:`execute`) with only its declared environment; with
    ``run_as = "user"`` through the tool runner at ``runner`` (as the tool user, see
    :mod:`edgevoice.tools.runner`)."""
    argv = command_argv(action, args)
    env = command_env(action, environ)
    if action.run_as == "user":
        from edgevoice.tools.runner import run_remote

        done = await run_remote(runner, argv, env, action.cwd, action.max_output_bytes)
    else:
        done = await execute(argv, env, action.cwd, action.max_output_bytes)
    return outcome(argv[0], done)


# --------------------------------------------------------------------------- GPIO


class GpioPins:
    """The gpiozero devices of all GPIO tools, created on first use, one per pin.

    All gpiozero calls run on one worker thread of their own: they never block the event
    loop and never run concurrently. A pin used by several tools is one device: a PWM device
    if any tool sets its PWM value (it also does on/off/toggle/pulse), else an output or an
    input device. ``pin_factory`` None means gpiozero's default (the Pi's GPIO).

    ``actions`` must pass :func:`~edgevoice.config.tools.check_tool_set` (no pin is both an
    input and an output); :meth:`run` takes only these actions."""

    def __init__(self, actions: list[GpioAction], pin_factory: Any = None) -> None:
        self.pin_factory = pin_factory
        by_pin: dict[str, list[GpioAction]] = {}
        for a in actions:
            by_pin.setdefault(gpio_pin_key(a.pin), []).append(a)
        # The device of each pin, made with the settings of the first tool of its kind.
        self._settings: dict[str, GpioAction] = {}
        for key, group in by_pin.items():
            kinds = {a.kind for a in group}
            kind = "pwm" if "pwm" in kinds else kinds.pop()
            self._settings[key] = next(a for a in group if a.kind == kind)
        self._devices: dict[str, Any] = {}
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, action: GpioAction, args: Mapping[str, Any]) -> dict[str, Any]:
        op = action.do
        name = whole_placeholder(op)
        if name is not None:
            value = args[name]
            op = ("on" if value else "off") if isinstance(value, bool) else str(value)
        duty: float | None = None
        if op == "pwm":
            name = whole_placeholder(action.value) if isinstance(action.value, str) else None
            level = args[name] if name is not None else action.value
            duty = float(level) / action.value_max
            if not 0.0 <= duty <= 1.0:
                raise ToolFailure(f"value {as_text(level)} is outside 0 to "
                                  f"{action.value_max:g}")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="edgevoice-gpio")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._apply, action, op, duty)

    def _device(self, action: GpioAction) -> Any:
        key = gpio_pin_key(action.pin)
        device = self._devices.get(key)
        if device is None:
            s = self._settings[key]
            if s.kind == "input":
                device = DigitalInputDevice(s.pin, pull_up=s.pull_up,
                                            pin_factory=self.pin_factory)
            elif s.kind == "pwm":
                device = PWMOutputDevice(s.pin, active_high=s.active_high,
                                         frequency=s.frequency_hz, pin_factory=self.pin_factory)
            else:
                device = DigitalOutputDevice(s.pin, active_high=s.active_high,
                                             pin_factory=self.pin_factory)
            self._devices[key] = device
        return device

    def _apply(self, action: GpioAction, op: str, duty: float | None) -> dict[str, Any]:
        try:
            device = self._device(action)
            pin = str(device.pin)
            if op == "read":
                return {"pin": pin, "value": int(device.value)}
            if op == "pwm":
                device.value = duty
                return {"pin": pin, "value": round(float(device.value), 4)}
            if op == "pulse":
                device.blink(on_time=action.pulse_s, off_time=0, n=1, background=True)
                return {"pin": pin, "pulsed_s": action.pulse_s}
            {"on": device.on, "off": device.off, "toggle": device.toggle}[op]()
            value = device.value
            return {"pin": pin, "value": int(value) if value in (0, 1) else round(value, 4)}
        except ToolFailure:
            raise
        except Exception as exc:  # gpiozero's errors: no pin factory, pin in use, …
            raise ToolFailure(f"GPIO {action.pin}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        """Release every pin (blocking; call from a thread or at exit)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def close_all() -> None:
            for device in self._devices.values():
                device.close()
            self._devices.clear()

        executor.submit(close_all).result()
        executor.shutdown()


# --------------------------------------------------------------------------- MQTT

_TOPIC_FORBIDDEN = ("/", "+", "#", "\0")


def mqtt_topic(template: str, args: Mapping[str, Any]) -> str:
    """The topic with its placeholders filled; an argument may not add levels or wildcards."""
    for name in placeholders(template):
        text = as_text(args[name])
        if any(c in text for c in _TOPIC_FORBIDDEN) or not text:
            raise ToolFailure(f"{name}: {text!r} cannot be part of an MQTT topic "
                              f"(empty, or contains /, + or #)", field=name)
    return render(template, args)


def mqtt_payload(template: Any, args: Mapping[str, Any]) -> Any:
    """A string template is fixed text or one whole placeholder (the argument's text: never
    text glued around an argument); a table or list keeps its structure and a string leaf that
    is one whole placeholder takes the argument's own value (then sent as JSON)."""
    if isinstance(template, str):
        name = whole_placeholder(template)
        return as_text(args[name]) if name is not None else template
    if isinstance(template, dict):
        return {render(k, args): _leaf(v, args) for k, v in template.items()}
    return [_leaf(v, args) for v in template]


def _leaf(value: Any, args: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        name = whole_placeholder(value)
        return args[name] if name is not None else render(value, args)
    if isinstance(value, dict | list):
        return mqtt_payload(value, args)
    return value


async def run_mqtt(action: MqttAction, args: Mapping[str, Any]) -> dict[str, Any]:
    """Connect, (subscribe to the reply topic,) publish, (wait for one fresh reply,)
    disconnect. A retained message delivered on subscribing is old state, not a reply, and is
    skipped. A missing reply fails with a message saying the publish did happen."""

    topic = mqtt_topic(action.topic, args)
    reply_topic = mqtt_topic(action.reply_topic, args) if action.reply_topic else None
    body = mqtt_payload(action.payload, args)
    payload = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    try:
        options = await client_options(action)
    except BrokerSetupError as exc:
        raise ToolFailure(str(exc)) from None
    where = broker_label(action)
    result: dict[str, Any] = {"published": topic}
    try:
        async with aiomqtt.Client(**options) as client:
            if reply_topic:
                await client.subscribe(reply_topic, qos=action.qos)
            await client.publish(topic, payload, qos=action.qos, retain=action.retain)
            if reply_topic:
                try:
                    async with asyncio.timeout(action.reply_timeout_s):
                        async for message in client.messages:
                            if message.retain:
                                continue
                            data = message.payload
                            raw = data if isinstance(data, bytes | bytearray) else \
                                str(data).encode()
                            result["reply"] = bytes(raw[:action.max_reply_bytes]).decode(
                                errors="replace")
                            if len(raw) > action.max_reply_bytes:
                                result["truncated"] = True
                            break
                except TimeoutError:
                    raise ToolFailure(
                        f"published to {topic}, but no reply on {reply_topic} within "
                        f"{action.reply_timeout_s:g} s", published=topic) from None
    except aiomqtt.MqttError as exc:
        raise ToolFailure(f"{where}: {exc}") from None
    return result
