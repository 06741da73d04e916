"""Scripts for the loopback Voice Live simulator (TOML).

A script says what the simulated assistant replies, turn by turn, and which faults to inject.
Turns and connection entries are consumed in order across *all* connections of one
:class:`~edgevoice.devkit.simulator.Simulator`, so a reconnecting client continues where it
left off. Every fault fires once. Example (every key optional)::

    default_say = "I have nothing scripted to say."   # reply when the turns run out
    default_after_tools = "Done."                      # after tool outputs, no after_tools

    [[turn]]
    user = "what's the weather"        # transcript reported for the user's audio ("(speech)")
    say = "It is sunny."               # spoken reply: audio + transcript (text-only: text)
    calls = [{ name = "open_window", arguments = { side = "left" } }]
                                       # function calls in the same response, after `say`;
                                       # `arguments` is a table (sent as JSON) or a raw string
                                       # (sent verbatim, may be malformed on purpose);
                                       # optional `call_id`
    after_tools = "The window is open."  # spoken in the response that follows the tool outputs
    error = { type = "server_error", message = "boom", code = "x" }
                                       # send this `error` event instead of a response
    delay_ms = 200                     # wait before `response.created`
    drop = "mid-audio"                 # close the socket at a point of this turn, see below
    close_code = 1011                  # drop with a close frame of this code (default: abort
                                       # the TCP connection, the client sees 1006)
    outcome = "incomplete"             # response.done status: "incomplete" (the reply stops
                                       # after about half of its audio, item "incomplete") or
                                       # "failed" (nothing is said, no calls)
    reason = "content_filter"          # status_details.reason of an incomplete reply
                                       # (default "max_output_tokens")
    failure = { type = "server_error", code = "x", message = "boom" }
                                       # status_details.error of a failed reply (every key
                                       # optional; default type "server_error")
    usage = { input_text_tokens = 120, input_audio_tokens = 40, cached_tokens = 0,
              output_text_tokens = 20, output_audio_tokens = 70 }
                                       # the response's usage block (every key optional, 0;
                                       # totals are the sums); default: estimated from audio
    rate_limits = [{ name = "tokens", limit = 120000, remaining = 118000, reset_seconds = 1.2 }]
                                       # rate_limits.updated right after response.created
    warning = { message = "voice fallback", code = "x", param = "voice" }
                                       # a `warning` event right after response.created
    transcription_failed = { message = "audio unclear", type = "transcription_error",
                             code = "x" }
                                       # input_audio_transcription.failed instead of
                                       # .completed for the user's audio of this turn

    [[connection]]                     # per upgrade attempt (right path, valid credentials);
                                       # after the last entry connections are normal
    drop = "before-session-created"    # accept the upgrade, then drop before session.created
    # or: http_status = 429, retry_after = 2   reject the upgrade (Retry-After header if given)
    # or: silent = true                        accept, never send anything
    # no_pong = true                           stop answering WebSocket pings (combinable with
    #                                          silent); an empty table is a normal connection

A *turn* is one response triggered by a committed user utterance (server VAD) or by a client
``response.create`` that is not a tool follow-up. A turn with none of ``say``/``calls``/``error``
speaks ``default_say``. Turn drop points:

* ``after-session-updated`` — right after the next ``session.updated`` (turn not consumed);
* ``mid-user-audio`` — once user speech started: after ``speech_started`` with server VAD, after
  300 ms of buffered audio without it (turn not consumed);
* ``mid-audio`` — after about half of the reply's audio deltas (turn not consumed: the next
  response, on any connection, speaks it again in full);
* ``after-function-call`` — after ``response.done`` of the response with the calls (turn
  consumed; tool outputs + ``response.create`` on the next connection speak ``after_tools``);
* ``after-response-done`` — after the turn's ``response.done`` (turn consumed).

Guarantees: :meth:`Script.load`, :meth:`Script.from_toml` and :meth:`Script.from_dict` either
return a fully validated immutable script or raise ``ValueError`` whose message names the
source, the key path (``turn[1].calls[0].name``) and the reason. Unknown keys are errors.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Turn-level drop points, in the order they can happen within a turn.
TURN_DROPS: tuple[str, ...] = (
    "after-session-updated",
    "mid-user-audio",
    "mid-audio",
    "after-function-call",
    "after-response-done",
)
#: Connection-level drop points.
CONNECTION_DROPS: tuple[str, ...] = ("before-session-created",)

DEFAULT_SAY = "I have nothing scripted to say."
DEFAULT_AFTER_TOOLS = "Done."


@dataclass(frozen=True)
class Call:
    """One function call the assistant makes. ``arguments`` is the JSON string sent on the wire."""

    name: str
    arguments: str = "{}"
    call_id: str | None = None


@dataclass(frozen=True)
class ScriptedError:
    """An ``error`` event sent instead of a response."""

    message: str
    type: str = "server_error"
    code: str | None = None


USAGE_KEYS = ("input_text_tokens", "input_audio_tokens", "cached_tokens",
              "output_text_tokens", "output_audio_tokens")
OUTCOMES = ("failed", "incomplete")


@dataclass(frozen=True)
class Failure:
    """``status_details.error`` of a failed reply (absent keys are null on the wire)."""

    type: str = "server_error"
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class RateLimitEntry:
    name: str
    limit: int
    remaining: int
    reset_seconds: float


@dataclass(frozen=True)
class Turn:
    """One scripted user turn and the assistant's reply to it."""

    user: str | None = None
    say: str | None = None
    calls: tuple[Call, ...] = ()
    after_tools: str | None = None
    error: ScriptedError | None = None
    delay_ms: int = 0
    drop: str | None = None
    close_code: int | None = None
    speech_started_at_ms: int | None = None
    outcome: str | None = None
    reason: str | None = None
    failure: Failure | None = None
    usage: tuple[tuple[str, int], ...] | None = None  # (USAGE_KEYS name, tokens)
    rate_limits: tuple[RateLimitEntry, ...] = ()
    warning: tuple[tuple[str, str], ...] | None = None  # (message|code|param, text)
    transcription_failed: ScriptedError | None = None


@dataclass(frozen=True)
class ConnectionFault:
    """What happens to one connection attempt."""

    drop: str | None = None
    http_status: int | None = None
    retry_after: float | None = None
    silent: bool = False
    no_pong: bool = False
    close_code: int | None = None


@dataclass(frozen=True)
class Script:
    """A validated simulator script (see the module docstring for the format)."""

    turns: tuple[Turn, ...] = ()
    connections: tuple[ConnectionFault, ...] = ()
    default_say: str = DEFAULT_SAY
    default_after_tools: str = DEFAULT_AFTER_TOOLS
    source: str = field(default="<dict>", compare=False)

    @classmethod
    def load(cls, path: str | Path) -> Script:
        """Read and validate a TOML script file; errors name the file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{p}: cannot read script: {exc.strerror or exc}") from exc
        return cls.from_toml(text, source=str(p))

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> Script:
        """Parse and validate TOML text."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{source}: invalid TOML: {exc}") from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Script:
        """Validate a dict shaped like the TOML document."""
        return _Parser(source).script(data)


class _Parser:
    """Validation with key paths; every failure is a ValueError ``source: path: reason``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, reason: str) -> ValueError:
        return ValueError(f"{self.source}: {path}: {reason}")

    def table(self, value: Any, path: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a table, got {type(value).__name__}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(
                self.join(path, unknown[0]),
                f"unknown key (allowed: {', '.join(sorted(allowed))})",
            )
        return value

    def string(self, value: Any, path: str, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, got {type(value).__name__}")
        if not empty and not value.strip():
            raise self.fail(path, "must not be empty")
        return value

    def integer(self, value: Any, path: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be an integer, got {type(value).__name__}")
        if not lo <= value <= hi:
            raise self.fail(path, f"must be between {lo} and {hi}, got {value}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, got {type(value).__name__}")
        return value

    def array(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be an array, got {type(value).__name__}")
        return value

    def join(self, path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def script(self, data: Mapping[str, Any]) -> Script:
        top = self.table(data, "", {"turn", "connection", "default_say", "default_after_tools"})
        turns = tuple(
            self.turn(t, f"turn[{i}]")
            for i, t in enumerate(self.array(top.get("turn", []), "turn"))
        )
        conns = tuple(
            self.connection(c, f"connection[{i}]")
            for i, c in enumerate(self.array(top.get("connection", []), "connection"))
        )
        return Script(
            turns=turns,
            connections=conns,
            default_say=self.string(top.get("default_say", DEFAULT_SAY), "default_say"),
            default_after_tools=self.string(
                top.get("default_after_tools", DEFAULT_AFTER_TOOLS), "default_after_tools"
            ),
            source=self.source,
        )

    def turn(self, value: Any, path: str) -> Turn:
        t = self.table(
            value,
            path,
            {"user", "say", "calls", "after_tools", "error", "delay_ms", "drop", "close_code",
             "speech_started_at_ms", "outcome", "reason", "failure", "usage", "rate_limits",
             "warning", "transcription_failed"},
        )
        calls = tuple(
            self.call(c, f"{path}.calls[{i}]")
            for i, c in enumerate(self.array(t.get("calls", []), f"{path}.calls"))
        )
        drop = t.get("drop")
        if drop is not None and self.string(drop, f"{path}.drop") not in TURN_DROPS:
            raise self.fail(f"{path}.drop", f"unknown drop point {drop!r} (one of: "
                            f"{', '.join(TURN_DROPS)})")
        if drop == "after-function-call" and not calls:
            raise self.fail(f"{path}.drop", "after-function-call needs `calls` in the same turn")
        if "after_tools" in t and not calls:
            raise self.fail(f"{path}.after_tools", "needs `calls` in the same turn")
        error = None
        if "error" in t:
            e = self.table(t["error"], f"{path}.error", {"type", "message", "code"})
            if "message" not in e:
                raise self.fail(f"{path}.error.message", "is required")
            error = ScriptedError(
                message=self.string(e["message"], f"{path}.error.message"),
                type=self.string(e.get("type", "server_error"), f"{path}.error.type"),
                code=self.string(e["code"], f"{path}.error.code") if "code" in e else None,
            )
            if drop in ("mid-audio", "after-function-call", "after-response-done"):
                raise self.fail(f"{path}.drop", f"{drop} cannot happen in a turn with `error`")
        outcome = self.outcome(t, path, error is not None, drop)
        return Turn(
            outcome=outcome,
            reason=(self.string(t["reason"], f"{path}.reason") if "reason" in t
                    else "max_output_tokens" if outcome == "incomplete" else None),
            failure=self.failure(t["failure"], f"{path}.failure") if "failure" in t
            else Failure() if outcome == "failed" else None,
            usage=self.usage(t["usage"], f"{path}.usage") if "usage" in t else None,
            rate_limits=tuple(self.rate_limit(r, f"{path}.rate_limits[{i}]") for i, r in
                              enumerate(self.array(t.get("rate_limits", []),
                                                   f"{path}.rate_limits"))),
            warning=self.warning(t["warning"], f"{path}.warning") if "warning" in t else None,
            transcription_failed=self.transcription_failed(t, path),
            user=self.string(t["user"], f"{path}.user") if "user" in t else None,
            say=self.string(t["say"], f"{path}.say") if "say" in t else None,
            calls=calls,
            after_tools=(
                self.string(t["after_tools"], f"{path}.after_tools") if "after_tools" in t else None
            ),
            error=error,
            delay_ms=self.integer(t.get("delay_ms", 0), f"{path}.delay_ms", 0, 600_000),
            drop=drop,
            close_code=self.close_code(t, path),
            speech_started_at_ms=self.integer(t["speech_started_at_ms"],
                                              f"{path}.speech_started_at_ms", 0, 600_000)
            if "speech_started_at_ms" in t else None,
        )

    def outcome(self, t: Mapping[str, Any], path: str, has_error: bool,
                drop: str | None) -> str | None:
        outcome = t.get("outcome")
        if outcome is not None and self.string(outcome, f"{path}.outcome") not in OUTCOMES:
            raise self.fail(f"{path}.outcome", f"must be one of {', '.join(OUTCOMES)}, got "
                            f"{outcome!r}")
        if outcome is not None and has_error:
            raise self.fail(f"{path}.outcome", "cannot be combined with `error` (no response "
                            "is made)")
        if "reason" in t and outcome != "incomplete":
            raise self.fail(f"{path}.reason", 'needs outcome = "incomplete"')
        if "failure" in t and outcome != "failed":
            raise self.fail(f"{path}.failure", 'needs outcome = "failed"')
        if outcome == "failed" and (t.get("calls") or drop in ("mid-audio",
                                                                 "after-function-call")):
            raise self.fail(f"{path}.outcome", "a failed reply says nothing and calls nothing")
        return outcome

    def failure(self, value: Any, path: str) -> Failure:
        f = self.table(value, path, {"type", "code", "message"})
        return Failure(
            type=self.string(f.get("type", "server_error"), f"{path}.type"),
            code=self.string(f["code"], f"{path}.code") if "code" in f else None,
            message=self.string(f["message"], f"{path}.message") if "message" in f else None,
        )

    def usage(self, value: Any, path: str) -> tuple[tuple[str, int], ...]:
        u = self.table(value, path, set(USAGE_KEYS))
        return tuple((k, self.integer(u[k], f"{path}.{k}", 0, 10_000_000))
                     for k in USAGE_KEYS if k in u)

    def rate_limit(self, value: Any, path: str) -> RateLimitEntry:
        r = self.table(value, path, {"name", "limit", "remaining", "reset_seconds"})
        for key in ("name", "limit", "remaining"):
            if key not in r:
                raise self.fail(f"{path}.{key}", "is required")
        reset = r.get("reset_seconds", 0.0)
        if isinstance(reset, bool) or not isinstance(reset, int | float) or reset < 0:
            raise self.fail(f"{path}.reset_seconds", "must be a number of seconds >= 0")
        return RateLimitEntry(
            name=self.string(r["name"], f"{path}.name"),
            limit=self.integer(r["limit"], f"{path}.limit", 0, 10**12),
            remaining=self.integer(r["remaining"], f"{path}.remaining", 0, 10**12),
            reset_seconds=float(reset),
        )

    def warning(self, value: Any, path: str) -> tuple[tuple[str, str], ...]:
        w = self.table(value, path, {"message", "code", "param"})
        if "message" not in w:
            raise self.fail(f"{path}.message", "is required")
        return tuple((k, self.string(w[k], f"{path}.{k}")) for k in ("message", "code", "param")
                     if k in w)

    def transcription_failed(self, t: Mapping[str, Any], path: str) -> ScriptedError | None:
        if "transcription_failed" not in t:
            return None
        p = f"{path}.transcription_failed"
        e = self.table(t["transcription_failed"], p, {"type", "message", "code"})
        if "message" not in e:
            raise self.fail(f"{p}.message", "is required")
        if "user" in t:
            raise self.fail(p, "cannot be combined with `user` (no transcript is made)")
        return ScriptedError(
            message=self.string(e["message"], f"{p}.message"),
            type=self.string(e.get("type", "transcription_error"), f"{p}.type"),
            code=self.string(e["code"], f"{p}.code") if "code" in e else None,
        )

    def call(self, value: Any, path: str) -> Call:
        c = self.table(value, path, {"name", "arguments", "call_id"})
        if "name" not in c:
            raise self.fail(f"{path}.name", "is required")
        args = c.get("arguments", {})
        if isinstance(args, Mapping):
            arguments = json.dumps(args, separators=(",", ":"), default=str)
        elif isinstance(args, str):
            arguments = args  # verbatim on purpose: lets a script send malformed JSON
        else:
            raise self.fail(f"{path}.arguments", "must be a table or a string")
        return Call(
            name=self.string(c["name"], f"{path}.name"),
            arguments=arguments,
            call_id=self.string(c["call_id"], f"{path}.call_id") if "call_id" in c else None,
        )

    def connection(self, value: Any, path: str) -> ConnectionFault:
        c = self.table(
            value, path, {"drop", "http_status", "retry_after", "silent", "no_pong", "close_code"}
        )
        drop = c.get("drop")
        if drop is not None and self.string(drop, f"{path}.drop") not in CONNECTION_DROPS:
            raise self.fail(f"{path}.drop", f"unknown drop point {drop!r} (one of: "
                            f"{', '.join(CONNECTION_DROPS)})")
        status = c.get("http_status")
        if status is not None:
            status = self.integer(status, f"{path}.http_status", 400, 599)
        retry_after = c.get("retry_after")
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
                raise self.fail(f"{path}.retry_after", "must be a number of seconds")
            if retry_after < 0:
                raise self.fail(f"{path}.retry_after", "must not be negative")
            if status is None:
                raise self.fail(f"{path}.retry_after", "needs http_status")
        silent = self.boolean(c.get("silent", False), f"{path}.silent")
        no_pong = self.boolean(c.get("no_pong", False), f"{path}.no_pong")
        kinds = [k for k, on in (("drop", drop), ("http_status", status), ("silent", silent)) if on]
        if len(kinds) > 1:
            raise self.fail(path, f"{' and '.join(kinds)} are exclusive")
        if no_pong and (drop or status):
            raise self.fail(f"{path}.no_pong", "only combines with `silent` or a normal connection")
        return ConnectionFault(
            drop=drop,
            http_status=status,
            retry_after=float(retry_after) if retry_after is not None else None,
            silent=silent,
            no_pong=no_pong,
            close_code=self.close_code(c, path),
        )

    def close_code(self, t: Mapping[str, Any], path: str) -> int | None:
        if "close_code" not in t:
            return None
        if t.get("drop") is None:
            raise self.fail(f"{path}.close_code", "needs `drop`")
        code = self.integer(t["close_code"], f"{path}.close_code", 1000, 4999)
        if code in (1004, 1005, 1006, 1015):
            raise self.fail(f"{path}.close_code", f"{code} cannot be sent in a close frame")
        return code
