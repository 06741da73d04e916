"""What the daemon is doing, for people: the systemd STATUS line and the status socket.

The daemon describes itself in one JSON-able **snapshot** (a plain dict built by the app on
request). Every key is optional for the readers here; enums may be given as enums or their
values::

    {
      "version": "0.1.0",            # filled in by StatusServer when missing
      "pid": 1234,                   # filled in by StatusServer when missing
      "state": "idle",               # starting | idle | listening | responding | follow_up
                                     #   | reloading | stopping
      "since": 1732200000.5,         # epoch seconds (time.time()) when `state` was entered
      "started": 1732190000.0,       # epoch seconds the daemon started
      "link": {
        "state": "ready",            # LinkState: idle | connecting | configuring | ready
                                     #   | backoff | auth_failed | closed
        "retry_in": null,            # seconds to the next connection attempt (backoff only)
        "endpoint": "wss://x.services.ai.azure.com",  # never a query string or credentials
        "detail": "Voice Live: connected",             # the link's own status text
        "reason": null               # why it is down: "HTTP 500 on connect", "connection
                                     #   lost (code 1006)", …; null while connected
      },
      "devices": {
        "microphone": {"device": "default", "state": "ok"},  # DeviceState: starting | ok
        "speaker":    {"device": "default", "state": "ok"}   #   | missing | stopped
      },
      "homeassistant": {             # only with [homeassistant]
        "state": "connected",        # connecting | connected | backoff | closed
        "broker": "127.0.0.1:1883",  # host:port, never the user or password
        "device_id": "kitchen",
        "detail": "",                # why the last connection failed
        "retry_in": null,            # seconds to the next attempt (backoff only)
        "transcript": false          # whether the last transcript is published
      },
      "wake_words": ["hey_jarvis"],
      "feedback_state": "idle",      # idle | listening | thinking | speaking | muted | offline
                                     #   | error: what hooks and the light show
      "muted": false,                # the privacy mute (edgevoice mute on|off|toggle)
      "push_to_talk": "press",       # press | hold
      "triggers": [                  # the [[triggers]]: buttons, switches, input keys
        {"name": "push-to-talk GPIO 17", "source": "gpio", "action": "talk", "pin": "17",
         "state": "ok", "pressed": false},
        {"name": "wheel", "source": "input", "action": "talk", "device": "Wheel",
         "key": "KEY_VOICECOMMAND", "state": "missing", "reason": "no input device named …"}
      ],
      "feedback": {"state": "idle", "hooks": {"runs": 3, "failures": 0, "failing": {}},
                   "light": {"kind": "rgb", "state": "idle", "error": null}},
      "wake": {                      # the wake word's worker thread (WakeWorkerStats)
        "frames": 90000,             # microphone frames handed to it
        "frames_dropped": 0,         # dropped because its backlog was full (never processed)
        "drop_episodes": 0,          # runs of such drops
        "backlog_max": 4,            # the most frames that waited for it at once
        "detections": 3, "discarded": 0,  # detections delivered / dropped (mic lost since)
        "late_ms_max": 0.0,          # newest frame − a detection's stream time, at delivery
        "errors": 0
      },
      "turns": [                     # the last few conversation turns, oldest first
        {"turn": 3,                  # running number since start
         "started": 1732200001.2,    # epoch seconds of the wake word (or follow-up speech)
         "wake_word": "hey_jarvis",  # null for a follow-up turn
         "button": null,             # the push-to-talk trigger that started it, if one did
         "wake_to_send_ms": 12.5,    # wake word (or button press) → first audio sent upstream
         "first_audio_ms": 850.0,    # end of the user's speech → first reply audio played
         "bargein": false,           # the user interrupted the reply
         "tools": ["set_light"],     # functions called in this turn
         "upstream_bytes": 96000,    # audio sent upstream in this turn (input format)
         "ungated_bytes": 224000,    # what streaming every frame to response.done would send
         "tokens": {"input_tokens": 330, "output_tokens": 90, "input_text_tokens": 290,
                    "input_audio_tokens": 40, "output_text_tokens": 20,
                    "output_audio_tokens": 70, "cached_tokens": 256},  # {} without usage
         "outcome": null}            # "incomplete (content_filter)", "failed (server_error)"
      ],
      "usage": {                     # since the daemon started
        "tokens": {"input_tokens": 990, "output_tokens": 270, …},   # the same keys
        "replies": {"completed": 3, "incomplete": 1}                # replies by status
      },
      "rate_limits": {"at": 1732200001.9,  # the last rate_limits.updated, as sent (or null)
                      "limits": [{"name": "tokens", "limit": 120000, "remaining": 118000,
                                  "reset_seconds": 1.2}]},
      "budget": {"tokens_per_hour": 50000, "tokens_per_day": null,   # [limits] (null: none)
                 "last_hour": 1260, "last_day": 1260,  # tokens used (kept across restarts)
                 "reached": null},           # why a wake is refused now, e.g.
                                             #   "tokens_per_hour 50000 reached (50210 …)"
      "offline": {"mode": "auto",    # [conversation] offline (off without sentences)
                  "recogniser": "ready",     # loading | ready | off | failed: <why>
                  "active": false},          # the conversation now is understood locally
      "tool_calls": [                # the last few function calls, oldest first
        {"turn": 3, "name": "set_light", "call_id": "call_7", "ok": true, "ms": 14.2,
         "at": 1732200002.0, "error": null,
         "arguments": "{\"room\":\"hall\"}",  # compact JSON, cut at 512 chars
         "outcome": "ok",            # ok | failed | timeout | invalid | busy | declined | …
         "confirmed_by": "user",     # confirm = true tools: who said yes, and when
         "confirmed_at": "2024-11-21T15:40:01.200"}
      ]
    }

:func:`status_line` maps a snapshot to the one-line STATUS= text (``systemctl status``);
:func:`format_status` renders it for ``edgevoice status``.

:class:`StatusServer` serves the snapshot on a unix stream socket: a client connects, sends
one line (``status``, or nothing and EOF) and reads one JSON object and a newline; the server
then closes the connection. The same socket takes the daemon's few commands (``mute on``,
``mute off``, ``mute toggle``): whoever may read the status may mute the microphone, nobody
else (the socket's permissions). A command's reply is its result (``{"ok": true, "muted":
true}``) or ``{"error": …}``. Guarantees: the socket is mode 0660 (owner and group only; the
group of the service may query it) and is created under its final name already with that
mode; a directory it has to create is 0750; a stale socket is replaced, a live one (another
daemon) is an error; requests are bounded (1 KiB, 2 s, 8 clients at once); the provider runs
on the event loop and must be quick; nothing blocks the loop; :meth:`StatusServer.close`
stops, cancels open connections and removes the socket. :func:`query_status` is the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import math
import os
import socket
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edgevoice import __version__
from edgevoice.config import SUN_PATH_MAX
from edgevoice.util import escape_controls

log = logging.getLogger("edgevoice.service")

STATUS_ARGUMENTS_CHARS = 60  # a tool call's arguments in `edgevoice status` (--json: all kept)


def shorten(text: str, limit: int) -> str:
    """``text`` on one line (control characters escaped), cut to ``limit`` chars with ``…``."""
    text = escape_controls(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"

SOCKET_MODE = 0o660
DIRECTORY_MODE = 0o750
MAX_REQUEST = 1024
MAX_REPLY = 4 * 1024 * 1024

Snapshot = Mapping[str, Any]

CONVERSATION_STATES = frozenset({"listening", "responding", "follow_up"})


class StatusError(Exception):
    """The status socket cannot be served; the message names the path and the reason."""


class StatusUnavailable(Exception):
    """The daemon's status cannot be read (not running, no permission, bad reply)."""


# ----------------------------------------------------------------------------- texts


def _value(x: Any) -> Any:
    return x.value if isinstance(x, enum.Enum) else x


def _number(x: Any) -> bool:
    """True for an int or float; bool is an int subclass but not a number here."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def _section(snapshot: Snapshot, key: str) -> Mapping[str, Any]:
    value = snapshot.get(key)
    return value if isinstance(value, Mapping) else {}


def device_state(snapshot: Snapshot, role: str) -> str | None:
    """The state of ``devices[role]``, given either as ``{"state": …}`` or as a bare state."""
    entry = _section(snapshot, "devices").get(role)
    if isinstance(entry, Mapping):
        entry = entry.get("state")
    entry = _value(entry)
    return str(entry) if entry is not None else None


def spoken(wake_word: str) -> str:
    """``hey_jarvis`` → ``hey jarvis``: a model name as people say it."""
    return " ".join(str(wake_word).replace("_", " ").replace("-", " ").split())


def status_line(snapshot: Snapshot) -> str:
    """The STATUS= text for a snapshot: what someone looking at ``systemctl status`` needs
    first. The most pressing condition wins, in this order: starting / reloading / stopping,
    muted, microphone missing, authentication failed, reconnecting, in conversation, speaker
    missing, token budget reached, listening for the wake word(s)."""
    state = str(_value(snapshot.get("state")) or "")
    if state == "starting":
        return "starting"
    if state == "reloading":
        return "reloading the configuration"
    if state == "stopping":
        return "stopping"
    if snapshot.get("muted"):
        return "muted"
    if device_state(snapshot, "microphone") == "missing":
        return "microphone missing"
    link = _section(snapshot, "link")
    link_state = str(_value(link.get("state")) or "")
    if link_state in ("auth_failed", "backoff"):
        text = ("Voice Live: authentication failed" if link_state == "auth_failed"
                else "reconnecting")
        retry_in = link.get("retry_in")
        if _number(retry_in) and math.isfinite(retry_in):
            text += f"{', retrying' if link_state == 'auth_failed' else ''} in " \
                    f"{max(1, math.ceil(retry_in))} s"
        reason = _value(link.get("reason"))
        if reason and link_state == "backoff":
            text += f" ({str(reason)[:80]})"
        return text
    if state in CONVERSATION_STATES:
        return "in conversation"
    if device_state(snapshot, "speaker") == "missing":
        return "speaker missing"
    if _section(snapshot, "budget").get("reached"):
        return "token budget reached (a wake word gets the limit cue)"
    words = [spoken(w) for w in snapshot.get("wake_words") or [] if str(w).strip()]
    if words:
        return "listening for " + " or ".join(f"'{w}'" for w in words)
    return "listening for the wake word"


def public_endpoint(url: str) -> str:
    """``url`` without credentials, query or fragment: safe to show and log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "(invalid endpoint)"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = int(minutes // 60)
    if hours < 48:
        return f"{hours} h {int(minutes % 60)} min"
    return f"{hours // 24} d {hours % 24} h"


def _clock(epoch: Any) -> str:
    if not _number(epoch):
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _ms(value: Any) -> str:
    if _number(value):
        return f"{value:.0f} ms"
    return "-"


def format_status(snapshot: Snapshot, now: float | None = None) -> str:
    """A readable summary of a snapshot (``edgevoice status``), several lines, no trailing
    newline."""
    now = time.time() if now is None else now
    state = str(_value(snapshot.get("state")) or "unknown")
    since = snapshot.get("since")
    head = f"edgevoice {snapshot.get('version', '?')}"
    if snapshot.get("pid"):
        head += f" (pid {snapshot['pid']})"
    head += f": {state}"
    if _number(since):
        head += f" for {_duration(now - since)}"
    lines = [head, f"  status:      {status_line(snapshot)}"]
    started = snapshot.get("started")
    if _number(started):
        lines.append(f"  up:          {_duration(now - started)}")

    link = _section(snapshot, "link")
    if link:
        text = str(_value(link.get("state")) or "unknown")
        retry_in = link.get("retry_in")
        if _number(retry_in):
            text += f", retry in {retry_in:.0f} s"
        if link.get("endpoint"):
            text += f"  {public_endpoint(str(link['endpoint']))}"
        if link.get("detail"):
            text += f"  ({link['detail']})"
        lines.append(f"  Voice Live:  {text}")

    home = _section(snapshot, "homeassistant")
    if home:
        text = str(home.get("state") or "unknown")
        retry_in = home.get("retry_in")
        if _number(retry_in):
            text += f", retry in {retry_in:.0f} s"
        text += f"  mqtt://{home.get('broker', '?')}"
        if home.get("device_id"):
            text += f"  device {home['device_id']}"
        if home.get("detail"):
            text += f"  ({shorten(str(home['detail']), 80)})"
        lines.append(f"  Home Assistant: {text}")

    for role in ("microphone", "speaker"):
        entry = _section(snapshot, "devices").get(role)
        if entry is None:
            continue
        name = entry.get("device") if isinstance(entry, Mapping) else None
        text = device_state(snapshot, role) or "unknown"
        lines.append(f"  {role + ':':<13}{text}" + (f"  ({name})" if name else ""))

    words = snapshot.get("wake_words") or []
    if words:
        lines.append(f"  wake words:  {', '.join(map(str, words))}")
    if snapshot.get("feedback_state") is not None:
        lines.append(f"  feedback:    {snapshot['feedback_state']}"
                     + ("  (MUTED: no wake word, no audio leaves)" if snapshot.get("muted")
                        else ""))
    for trig in snapshot.get("triggers") or []:
        if not isinstance(trig, Mapping):
            continue
        what = "push-to-talk" if trig.get("action") == "talk" else str(trig.get("action", "?"))
        where = (f"GPIO {trig['pin']}" if trig.get("pin") is not None
                 else f"{trig.get('device', '?')} {trig.get('key', '')}".rstrip())
        row = f"  trigger:     {trig.get('name', '?')}: {what}, {where}, {trig.get('state', '?')}"
        if trig.get("reason"):
            row += f" ({trig['reason']})"
        lines.append(row)
    hooks = _section(_section(snapshot, "feedback"), "hooks")
    if hooks.get("failing"):
        failing = ", ".join(f"on_{k}: {v}" for k, v in hooks["failing"].items())
        lines.append(f"  hooks:       failing: {shorten(failing, 120)}")
    dropped = _section(snapshot, "wake").get("frames_dropped")
    if _number(dropped) and dropped:
        episodes = _section(snapshot, "wake").get("drop_episodes")
        lines.append(f"  wake word:   {dropped} frames dropped (the worker fell behind"
                     + (f", {episodes} times)" if _number(episodes) else ")"))

    turns = [t for t in snapshot.get("turns") or [] if isinstance(t, Mapping)]
    if turns:
        lines.append("  recent turns:")
        for t in turns:
            row = (f"    #{t.get('turn', '?')}  {_clock(t.get('started'))}"
                   f"  wake→send {_ms(t.get('wake_to_send_ms'))}"
                   f"  first audio {_ms(t.get('first_audio_ms'))}")
            if t.get("wake_word"):
                row += f"  [{t['wake_word']}]"
            if t.get("bargein"):
                row += "  barge-in"
            if t.get("tools"):
                row += f"  tools: {', '.join(map(str, t['tools']))}"
            tokens = t.get("tokens")
            if isinstance(tokens, Mapping) and tokens:
                row += f"  tokens {_tokens(tokens)}"
            if t.get("outcome"):
                row += f"  {shorten(str(t['outcome']), 60)}"
            lines.append(row)

    calls = [c for c in snapshot.get("tool_calls") or [] if isinstance(c, Mapping)]
    if calls:
        lines.append("  tool calls:")
        for c in calls:
            ok = c.get("ok")
            outcome = c.get("outcome") or ("ok" if ok else ("failed" if ok is not None else "?"))
            row = f"    {_clock(c.get('at'))}  {c.get('name', '?')}"
            if c.get("arguments"):
                row += f" {shorten(str(c['arguments']), STATUS_ARGUMENTS_CHARS)}"
            row += f"  {outcome}  {_ms(c.get('ms'))}"
            if c.get("confirmed_by"):
                row += (f"  confirmed by {shorten(str(c['confirmed_by']), 20)} at "
                        f"{shorten(str(c.get('confirmed_at') or '?'), 23)[11:19]}")
            if c.get("turn") is not None:
                row += f"  (turn {c['turn']})"
            if c.get("error"):
                row += f"  {c['error']}"
            lines.append(row)
    usage = _section(snapshot, "usage")
    tokens = usage.get("tokens")
    if isinstance(tokens, Mapping) and any(_number(v) and v for v in tokens.values()):
        replies = usage.get("replies")
        text = _tokens(tokens)
        if isinstance(replies, Mapping) and replies:
            text += "  replies: " + ", ".join(f"{shorten(str(k), 20)} {v}"
                                             for k, v in replies.items())
        lines.append(f"  tokens:      {text}")
    limits = _section(snapshot, "rate_limits").get("limits")
    if isinstance(limits, list) and limits:
        parts = [f"{shorten(str(r.get('name', '?')), 20)} {r.get('remaining', '?')}/"
                 f"{r.get('limit', '?')}" for r in limits[:4] if isinstance(r, Mapping)]
        lines.append(f"  rate limits: {', '.join(parts)} remaining")
    budget = _section(snapshot, "budget")
    if budget and (budget.get("tokens_per_hour") or budget.get("tokens_per_day")):
        parts = [f"{budget.get('last_hour', '?')}/{budget['tokens_per_hour']} this hour"
                 if budget.get("tokens_per_hour") else "",
                 f"{budget.get('last_day', '?')}/{budget['tokens_per_day']} today"
                 if budget.get("tokens_per_day") else ""]
        text = ", ".join(p for p in parts if p)
        if budget.get("reached"):
            text += f"  REACHED: {shorten(str(budget['reached']), 80)}"
        lines.append(f"  budget:      {text}")
    offline = _section(snapshot, "offline")
    if offline and offline.get("mode") not in (None, "off"):
        text = f"{offline['mode']}, recogniser {shorten(str(offline.get('recogniser')), 80)}"
        if offline.get("active"):
            text += "  (this conversation)"
        lines.append(f"  offline:     {text}")
    if snapshot.get("error"):
        lines.append(f"  error:       {snapshot['error']}")
    return "\n".join(lines)


def _tokens(tokens: Mapping[str, Any]) -> str:
    """``in 330 (audio 40, cached 256) out 90 (audio 70)``."""
    def n(key: str) -> Any:
        value = tokens.get(key, 0)
        return value if _number(value) else "?"
    return (f"in {n('input_tokens')} (audio {n('input_audio_tokens')}, cached "
            f"{n('cached_tokens')}) out {n('output_tokens')} (audio {n('output_audio_tokens')})")


# ----------------------------------------------------------------------------- server


def _jsonable(value: Any) -> Any:
    """``json.dumps(default=…)``: enums, paths, dataclasses, sets; anything else as str."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):  # tuples never get here: json writes them
        return list(value)
    return str(value)


def _check_path_length(path: Path) -> None:
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise StatusError(f"{path}: socket path longer than {SUN_PATH_MAX} bytes")


def _socket_is_live(path: Path) -> bool:
    """True when something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except TimeoutError:
            return True  # a full backlog: alive, but busy
        return True


class StatusServer:
    """Serves ``provider()`` as JSON on a unix stream socket (see the module docstring).

    path: the socket path (``ServiceConfig.status_socket_path()``).
    provider: returns the snapshot; called on the event loop for each request, so it must be
        quick and not block. An exception is logged and answered with ``{"error": …}``.
    """

    def __init__(self, path: str | os.PathLike[str], provider: Callable[[], Snapshot], *,
                 request_timeout: float = 2.0, max_clients: int = 8,
                 commands: Callable[[str], Mapping[str, Any]] | None = None) -> None:
        self.path = Path(path)
        self._provider = provider
        self._commands = commands
        self._timeout = request_timeout
        self._max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._identity: tuple[int, int] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.requests = 0  #: requests answered (for tests)

    async def __aenter__(self) -> StatusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the socket and serve. Raises :class:`StatusError` naming the path when it
        cannot (no permission, path too long, another daemon serving it, not a socket)."""
        if self._server is not None:
            return
        path = self.path
        _check_path_length(path)
        try:
            sock = self._bind(path)
        except OSError as exc:
            raise StatusError(f"{path}: cannot create the status socket: "
                              f"{exc.strerror or exc}") from None
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, sock=sock, limit=MAX_REQUEST)
        except BaseException:
            sock.close()
            self._remove_socket()
            raise
        log.debug("status socket at %s", path)

    def _bind(self, path: Path) -> socket.socket:
        parent = path.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=DIRECTORY_MODE, exist_ok=True)
            os.chmod(parent, DIRECTORY_MODE)  # mkdir's mode is subject to the umask
        try:
            st = path.lstat()
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise StatusError(f"{path}: exists and is not a socket; not touching it")
            if _socket_is_live(path):
                raise StatusError(f"{path}: another process is serving this status socket "
                                  "(is edgevoice already running?)")
            path.unlink()
            log.info("removed a stale status socket at %s", path)

        # Bind under a temporary name, set the mode, then rename: the socket never exists
        # under its real name with the umask's mode, and no process-wide umask is touched.
        temp = parent / f".{path.name}.{os.getpid()}"
        if len(os.fsencode(temp)) > SUN_PATH_MAX:
            temp = path
        with contextlib.suppress(FileNotFoundError):
            if temp != path:
                temp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(os.fspath(temp))
            os.chmod(temp, SOCKET_MODE)
            sock.listen(16)
            if temp != path:
                os.rename(temp, path)
            st = path.lstat()
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        self._identity = (st.st_dev, st.st_ino)
        sock.setblocking(False)
        return sock

    async def close(self) -> None:
        """Stop serving, end open connections and remove the socket. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), self._timeout)
        self._remove_socket()

    def _remove_socket(self) -> None:
        """Remove the socket file if it is still ours (not replaced by another daemon)."""
        identity, self._identity = self._identity, None
        if identity is None:
            return
        with contextlib.suppress(OSError):
            st = self.path.lstat()
            if (st.st_dev, st.st_ino) == identity:
                self.path.unlink()

    # ------------------------------------------------------------------ requests

    def render(self) -> bytes:
        """The reply: the snapshot as one line of JSON."""
        try:
            snapshot: dict[str, Any] = dict(self._provider())
        except Exception as exc:
            log.warning("status provider failed: %s: %s", type(exc).__name__, exc)
            snapshot = {"error": f"status provider failed: {type(exc).__name__}"}
        snapshot.setdefault("version", __version__)
        snapshot.setdefault("pid", os.getpid())
        link = snapshot.get("link")
        if isinstance(link, Mapping) and link.get("endpoint"):
            snapshot["link"] = {**link, "endpoint": public_endpoint(str(link["endpoint"]))}
        try:
            text = json.dumps(_strip_nonfinite(snapshot), default=_jsonable, ensure_ascii=False)
        except (TypeError, ValueError) as exc:  # e.g. a circular reference
            log.warning("status snapshot is not serialisable: %s", exc)
            text = json.dumps({"error": "status snapshot is not serialisable",
                               "version": __version__, "pid": os.getpid()})
        return text.encode("utf-8") + b"\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._handlers) >= self._max_clients or task is None:
            writer.close()
            return
        self._handlers.add(task)
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), self._timeout)
            except ValueError:  # longer than MAX_REQUEST without a newline
                line = None
            if line is None:
                reply = json.dumps({"error": "request too long"}).encode() + b"\n"
            else:
                request = " ".join(line.decode("utf-8", "replace").strip().lower().split())
                if request in ("", "status"):
                    reply = self.render()
                elif request in COMMANDS and self._commands is not None:
                    reply = self._command(request)
                else:
                    reply = json.dumps({"error": f"unknown request {request[:40]!r}; "
                                                 "send 'status'"}).encode() + b"\n"
            writer.write(reply)
            await asyncio.wait_for(writer.drain(), self._timeout)
            self.requests += 1
        except (ConnectionError, TimeoutError):
            pass
        except Exception as exc:  # never let one client disturb the daemon
            log.debug("status request failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), self._timeout)


    def _command(self, request: str) -> bytes:
        assert self._commands is not None
        try:
            result: Any = dict(self._commands(request))
        except Exception as exc:
            log.warning("status socket: %r failed: %s: %s", request, type(exc).__name__, exc)
            result = {"error": f"{request} failed: {type(exc).__name__}"}
        return json.dumps(result, default=_jsonable).encode() + b"\n"


#: The commands the status socket takes besides ``status``.
COMMANDS = frozenset({"mute on", "mute off", "mute toggle"})


def _strip_nonfinite(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _strip_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strip_nonfinite(v) for v in value]
    return value


# ----------------------------------------------------------------------------- client


def query_status(path: str | os.PathLike[str], timeout: float = 3.0) -> dict[str, Any]:
    """Ask the daemon at ``path`` for its snapshot. Blocking; at most ``timeout`` seconds.
    Raises :class:`StatusUnavailable` with a message for people when the daemon does not
    run, cannot be reached or answers nonsense."""
    return request(path, "status", timeout)


def request(path: str | os.PathLike[str], line: str, timeout: float = 3.0) -> dict[str, Any]:
    """Send one request line (``status``, ``mute on``, …) and return the JSON reply, as
    :func:`query_status` does."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except FileNotFoundError:
            raise StatusUnavailable(
                f"not running: no status socket at {path}") from None
        except ConnectionRefusedError:
            raise StatusUnavailable(
                f"not running: {path} refuses connections (a stale socket)"
            ) from None
        except PermissionError:
            raise StatusUnavailable(
                f"{path}: permission denied; run as root or as a member of group edgevoice"
            ) from None
        except TimeoutError:
            raise StatusUnavailable(f"{path}: edgevoice does not answer") from None
        except OSError as exc:
            raise StatusUnavailable(f"{path}: {exc.strerror or exc}") from None
        chunks: list[bytes] = []
        size = 0
        try:
            sock.sendall(line.encode() + b"\n")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_REPLY:
                    raise StatusUnavailable(f"{path}: reply larger than {MAX_REPLY} bytes")
        except TimeoutError:
            raise StatusUnavailable(
                f"{path}: edgevoice did not answer within {timeout:g} s") from None
        except ConnectionError as exc:
            raise StatusUnavailable(f"{path}: connection lost: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StatusUnavailable(f"{path}: malformed reply (not JSON)") from None
    if not isinstance(reply, dict):
        raise StatusUnavailable(f"{path}: malformed reply (not a JSON object)")
    return reply
