"""The STATUS line, the readable status and the [service] config."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest

from edgevoice.config import ConfigError, ServiceConfig, parse_config
from edgevoice.service.status import format_status, public_endpoint, status_line

IDLE = {
    "state": "idle",
    "link": {"state": "idle", "retry_in": None},
    "devices": {"microphone": {"device": "default", "state": "ok"},
                "speaker": {"device": "default", "state": "ok"}},
    "wake_words": ["hey_jarvis"],
}


def snap(**changes: object) -> dict[str, object]:
    out: dict[str, object] = {**IDLE}
    for key, value in changes.items():
        if key in ("link", "devices"):
            out[key] = {**IDLE[key], **value}  # type: ignore[dict-item]
        else:
            out[key] = value
    return out


class LinkState(enum.Enum):  # the link's enum is a plain Enum: given as such
    BACKOFF = "backoff"


@pytest.mark.parametrize(("snapshot", "text"), [
    (IDLE, "listening for 'hey jarvis'"),
    (snap(wake_words=["hey_jarvis", "alexa"]), "listening for 'hey jarvis' or 'alexa'"),
    (snap(wake_words=["/etc/edgevoice/ok-robot.tflite".rsplit("/", 1)[1][:-7]]),
     "listening for 'ok robot'"),
    (snap(wake_words=[]), "listening for the wake word"),
    (snap(state="listening"), "in conversation"),
    (snap(state="responding"), "in conversation"),
    (snap(state="follow_up", link={"state": "ready"}), "in conversation"),
    (snap(link={"state": "backoff", "retry_in": 4.2}), "reconnecting in 5 s"),
    (snap(link={"state": "backoff", "retry_in": 5.0}), "reconnecting in 5 s"),
    (snap(link={"state": "backoff", "retry_in": 0.25}), "reconnecting in 1 s"),
    (snap(link={"state": LinkState.BACKOFF, "retry_in": 20}), "reconnecting in 20 s"),
    (snap(state="responding", link={"state": "backoff", "retry_in": None}), "reconnecting"),
    (snap(link={"state": "backoff", "retry_in": 2.5, "reason": "throttled, HTTP 429"}),
     "reconnecting in 3 s (throttled, HTTP 429)"),
    (snap(link={"state": "backoff", "retry_in": None, "reason": "x" * 500}),
     "reconnecting (" + "x" * 80 + ")"),
    (snap(link={"state": "auth_failed", "retry_in": 300}),
     "Voice Live: authentication failed, retrying in 300 s"),
    (snap(link={"state": "auth_failed"}), "Voice Live: authentication failed"),
    (snap(devices={"microphone": {"device": "usb", "state": "missing"}}),
     "microphone missing"),
    (snap(devices={"microphone": "missing"}, link={"state": "auth_failed"}),
     "microphone missing"),
    (snap(devices={"speaker": {"state": "missing"}}), "speaker missing"),
    (snap(state="starting"), "starting"),
    (snap(state="reloading"), "reloading the configuration"),
    (snap(state="stopping", devices={"microphone": "missing"}), "stopping"),
    ({}, "listening for the wake word"),
])
def test_status_line(snapshot: dict[str, object], text: str) -> None:
    assert status_line(snapshot) == text


def test_format_status_shows_state_link_devices_turns_and_tools() -> None:
    now = 1_700_000_000.0
    snapshot = {
        **IDLE, "version": "0.1.0", "pid": 42, "since": now - 200, "started": now - 7200,
        "link": {"state": "ready", "retry_in": None, "endpoint": "wss://res.services.ai.azure.com",
                 "detail": "Voice Live: connected"},
        "turns": [{"turn": 3, "started": now - 60, "wake_word": "hey_jarvis",
                   "wake_to_send_ms": 12.4, "first_audio_ms": 851.2, "bargein": True,
                   "tools": ["set_light"]},
                  {"turn": 4, "started": now - 30, "wake_word": None, "wake_to_send_ms": None,
                   "first_audio_ms": None, "bargein": False, "tools": []}],
        "tool_calls": [{"turn": 3, "name": "set_light", "ok": True, "ms": 14.2, "at": now - 58},
                       {"turn": 3, "name": "open_door", "ok": False, "ms": 3, "at": now - 57,
                        "error": "not allowed"}],
    }
    text = format_status(snapshot, now=now)
    lines = text.splitlines()
    assert lines[0] == "edgevoice 0.1.0 (pid 42): idle for 3 min"
    assert "status:      listening for 'hey jarvis'" in text
    assert "up:          2 h 0 min" in text
    assert "Voice Live:  ready  wss://res.services.ai.azure.com  (Voice Live: connected)" in text
    assert "microphone:  ok  (default)" in text and "speaker:     ok  (default)" in text
    turn3 = next(x for x in lines if "#3" in x)
    assert "wake→send 12 ms" in turn3 and "first audio 851 ms" in turn3
    assert "barge-in" in turn3 and "tools: set_light" in turn3 and "[hey_jarvis]" in turn3
    turn4 = next(x for x in lines if "#4" in x)
    assert "wake→send -" in turn4 and "barge-in" not in turn4
    assert any("set_light  ok  14 ms  (turn 3)" in x for x in lines)
    assert any("open_door  failed  3 ms  (turn 3)  not allowed" in x for x in lines)


def test_format_status_shows_wake_frames_dropped_only_when_there_are_some() -> None:
    fine = {**IDLE, "wake": {"frames": 500, "frames_dropped": 0, "drop_episodes": 0}}
    assert "dropped" not in format_status(fine, now=0)
    behind = {**IDLE, "wake": {"frames": 500, "frames_dropped": 92, "drop_episodes": 2}}
    assert ("  wake word:   92 frames dropped (the worker fell behind, 2 times)"
            in format_status(behind, now=0).splitlines())


def test_format_status_copes_with_a_sparse_snapshot() -> None:
    assert format_status({"state": "starting"}, now=0).splitlines() == [
        "edgevoice ?: starting", "  status:      starting"]
    assert "error:" in format_status({"error": "status provider failed: KeyError"})


@pytest.mark.parametrize(("url", "shown"), [
    ("wss://res.services.ai.azure.com", "wss://res.services.ai.azure.com"),
    ("wss://user:pw@res.example.com:8443/voice?api-key=abc#x", "wss://res.example.com:8443/voice"),
    ("ws://[::1]:8765/", "ws://[::1]:8765/"),
])
def test_public_endpoint_drops_credentials_and_query(url: str, shown: str) -> None:
    assert public_endpoint(url) == shown


def test_service_config_defaults_and_socket_path() -> None:
    s = ServiceConfig()
    assert s.status_socket == "/run/edgevoice/status.sock" and s.log_target == "auto"
    assert s.journal() is None
    assert s.status_socket_path({}) == Path("/run/edgevoice/status.sock")
    assert s.status_socket_path({"RUNTIME_DIRECTORY": "/run/ev2:/run/other"}) == \
        Path("/run/ev2/status.sock")
    custom = ServiceConfig(status_socket="/tmp/ev/s.sock", log_target="stderr")
    assert custom.status_socket_path({"RUNTIME_DIRECTORY": "/run/ev2"}) == Path("/tmp/ev/s.sock")
    assert custom.journal() is False
    assert ServiceConfig(status_socket="").status_socket_path({}) is None


@pytest.mark.parametrize(("toml", "error"), [
    ('[service]\nstatus_socket = "run/x.sock"\n',
     "edgevoice.toml: service.status_socket: must be an absolute path (or \"\" for none), "
     "got 'run/x.sock'"),
    ('[service]\nstatus_socket = "/' + "x" * 120 + '"\n',
     "edgevoice.toml: service.status_socket: must be at most 107 bytes long (a unix socket path)"),
    ('[service]\nlog_target = "syslog"\n',
     "edgevoice.toml: service.log_target: must be one of 'auto', 'journal' or 'stderr', "
     "got 'syslog'"),
])
def test_service_config_errors(toml: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(toml, "edgevoice.toml")
    assert info.value.errors == [error]


def test_format_status_shows_the_home_assistant_connection() -> None:
    up = {**IDLE, "homeassistant": {"state": "connected", "broker": "127.0.0.1:1883",
                                    "device_id": "kitchen", "detail": "", "retry_in": None}}
    assert "  Home Assistant: connected  mqtt://127.0.0.1:1883  device kitchen" in \
        format_status(up, now=0).splitlines()
    down = {**IDLE, "homeassistant": {"state": "backoff", "broker": "ha.lan:8883",
                                      "device_id": "kitchen", "retry_in": 4.6,
                                      "detail": "[code:135] Not authorized"}}
    assert ("  Home Assistant: backoff, retry in 5 s  mqtt://ha.lan:8883  device kitchen  "
            "([code:135] Not authorized)") in format_status(down, now=0).splitlines()
    assert "Home Assistant" not in format_status(IDLE, now=0)


def test_mute_triggers_and_failing_hooks_in_the_status() -> None:
    s = snap(muted=True, feedback_state="muted",
             triggers=[{"name": "hat", "source": "gpio", "action": "talk", "pin": "17",
                        "state": "ok"},
                       {"name": "remote", "source": "input", "action": "mute",
                        "device": "BT Remote", "key": "KEY_MICMUTE", "state": "missing",
                        "reason": "no input device named 'BT Remote'"}],
             feedback={"hooks": {"failing": {"listening": "exit status 1"}}})
    assert status_line(s) == "muted"
    text = format_status(s, now=0)
    assert "  feedback:    muted  (MUTED: no wake word, no audio leaves)" in text
    assert "  trigger:     hat: push-to-talk, GPIO 17, ok" in text
    assert ("  trigger:     remote: mute, BT Remote KEY_MICMUTE, missing "
            "(no input device named 'BT Remote')") in text
    assert "  hooks:       failing: on_listening: exit status 1" in text


def test_format_status_shows_offline_commands_only_when_on() -> None:
    base = {"state": "listening", "link": {"state": "backoff"}}
    text = format_status({**base, "offline": {"mode": "auto", "recogniser": "ready",
                                              "active": True}})
    assert "offline:     auto, recogniser ready  (this conversation)" in text
    text = format_status({**base, "offline": {"mode": "auto", "recogniser": "failed: no model",
                                              "active": False}})
    assert "recogniser failed: no model" in text and "this conversation" not in text
    assert "offline:" not in format_status({**base, "offline": {"mode": "off"}})
