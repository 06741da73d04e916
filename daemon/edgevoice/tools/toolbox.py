"""The :class:`ToolBox`: one call of the model in, one output string out.

See :mod:`edgevoice.tools` for the output format, the confirmation flow and the guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import relevance
from jsonschema.validators import validator_for

from edgevoice.config.tools import ToolSpec, check_tool_set
from edgevoice.tools import builtins
from edgevoice.tools.actions import GpioPins, ToolFailure, run_command, run_mqtt
from edgevoice.tools.confirm import Confirmations, Decision
from edgevoice.tools.store import INTERRUPTED, CallStore

log = logging.getLogger("edgevoice.tools")

STATE_FILE = "tool-calls.json"
_MAX_ERRORS = 3  # argument errors reported per call: enough to fix, short enough to speak


def ok(**fields: Any) -> str:
    """A success output: ``{"ok": true, ...}``."""
    return json.dumps({"ok": True, **fields}, ensure_ascii=False)


def failed(error: str, **fields: Any) -> str:
    """A failure output: ``{"ok": false, "error": "...", ...}``."""
    return json.dumps({"ok": False, "error": error, **fields}, ensure_ascii=False)


@dataclass(frozen=True)
class _Result:
    output: str
    outcome: str
    arguments: dict[str, Any] | None = None
    error: str | None = None


class _Invalid(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


_QUIET = {"ok", "duplicate", "confirmation_needed", "declined"}


class ToolBox:
    """Runs the declared tools for the model (see :mod:`edgevoice.tools`).

    ``tools``: the validated ``[[tools]]`` entries. ``stop_conversation``: called by the
    ``stop_conversation`` built-in (a function or a coroutine function). ``state_dir``: where
    the record of recent call ids is kept across restarts (None: memory only).
    ``clock``: monotonic seconds, the clock of :meth:`user_said`'s ``t``; it times rate
    limits and confirmation windows. ``pin_factory``: a gpiozero pin factory (None: the
    board's default). ``remember``: how many call ids are kept for exactly-once.
    ``confirm_wait_s``: how long a repeated confirm call waits for a user transcript still on
    its way.

    Raises ValueError for a tool set that the config check rejects (repeated names, a pin
    used both as input and output); nothing else is checked or opened until a call.
    """

    def __init__(
        self,
        tools: Sequence[ToolSpec],
        *,
        stop_conversation: Callable[[], object] | None = None,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        pin_factory: Any = None,
        remember: int = 256,
        confirm_wait_s: float = 2.0,
    ) -> None:
        problems = check_tool_set(tools)
        if problems:
            raise ValueError("; ".join(problems))
        self._tools = {t.name: t for t in tools}
        self._validators: dict[str, Any] = {}
        for t in tools:
            cls = validator_for(t.parameters)
            self._validators[t.name] = cls(t.parameters, format_checker=cls.FORMAT_CHECKER)
        self._gpio = GpioPins([t.gpio for t in tools if t.gpio is not None], pin_factory)
        self._store = CallStore(remember, state_dir / STATE_FILE if state_dir else None)
        self._runs: dict[str, deque[float]] = {}
        self._confirm = Confirmations()
        self._confirm_wait_s = confirm_wait_s
        self._heard = asyncio.Event()
        self._stop_conversation = stop_conversation
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()

    def user_said(self, transcript: str, t: float) -> None:
        """Tell the ToolBox about a user turn: ``transcript`` is the service's transcription
        of the user's microphone audio (never text from the model), ``t`` the time on
        ``clock`` at which the user began speaking that turn (the ``speech_started`` of its
        item; the transcript's own arrival time if that is not known)."""
        verdict = self._confirm.heard(transcript, t)
        log.debug("tools: user turn at %.2f classified %s", t, verdict.value)
        heard, self._heard = self._heard, asyncio.Event()
        heard.set()  # wakes the calls waiting for an answer

    async def call(self, call_id: str, name: str, arguments: str) -> str:
        """Run one function call and return its output (a JSON object as a string).

        Never raises, except :class:`asyncio.CancelledError` when the caller is cancelled
        (then the action is stopped and the call id answers "interrupted" from then on). A
        ``call_id`` runs at most once: a repeated or concurrent call with the same id returns
        the first one's output without running anything."""
        t0 = time.monotonic()
        stored = await self._store.claim(call_id)
        if stored is not None:
            self._audit(call_id, name, _Result(stored, "duplicate"), t0)
            return stored
        result = _Result(INTERRUPTED, "interrupted")
        try:
            result = await self._handle(call_id, name, arguments)
        except asyncio.CancelledError:
            self._store.remember(call_id, result.output)
            task = asyncio.get_running_loop().create_task(self._save())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise
        except Exception as exc:  # a bug of ours: the model gets a message, not a traceback
            log.exception("tools: %s failed unexpectedly", name)
            result = _Result(failed(f"internal error: {type(exc).__name__}"), "error",
                             error=str(exc))
        finally:
            self._store.settle(call_id, result.output)
            self._audit(call_id, name, result, t0)
        await self._finished(call_id, result.output)
        return result.output

    async def aclose(self) -> None:
        """Release the GPIO pins and finish writing the call record."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.to_thread(self._gpio.close)

    # ------------------------------------------------------------------ one call

    async def _handle(self, call_id: str, name: str, arguments: str) -> _Result:
        spec = self._tools.get(name)
        if spec is None:
            known = ", ".join(sorted(self._tools)) or "none"
            msg = f"unknown tool {name!r} (known: {known})"
            return _Result(failed(msg), "unknown_tool", error=msg)
        try:
            args = self._arguments(spec, arguments)
        except _Invalid as exc:
            msg = f"invalid arguments: {exc}"
            extra = {"field": exc.field} if exc.field else {}
            return _Result(failed(msg, **extra), "invalid", error=msg)
        now = self._clock()
        if spec.confirm:
            key = json.dumps([name, args], sort_keys=True, separators=(",", ":"))
            decision = self._confirm.decide(key, now, spec.confirm_window_s)
            if decision is Decision.WAITING and self._confirm_wait_s > 0:
                # The service may send the model's call before the transcript of the user's
                # answer: give that transcript a moment to arrive.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._heard.wait(), self._confirm_wait_s)
                now = self._clock()
                decision = self._confirm.decide(key, now, spec.confirm_window_s)
            if decision in (Decision.ASK, Decision.WAITING):
                return _Result(failed(
                    f"not done: {name} needs the user's spoken confirmation. Ask the user to "
                    f"confirm; if they agree, call {name} again with the same arguments",
                    needs_confirmation=True), "confirmation_needed", args)
            if decision is Decision.DECLINED:
                msg = "not done: the user declined"
                return _Result(failed(msg), "declined", args, msg)
        wait = self._rate_limited(spec, now)
        if wait is not None:
            assert spec.rate_limit is not None
            msg = (f"rate limit: at most {spec.rate_limit.max_calls} call(s) per "
                   f"{spec.rate_limit.per_s:g} s; try again in {wait:.0f} s")
            return _Result(failed(msg), "rate_limited", args, msg)
        await self._started(call_id)
        timeout = asyncio.timeout(spec.timeout_s)
        try:
            async with timeout:
                fields = await self._run(spec, args)
        except TimeoutError as exc:
            if not timeout.expired():
                msg = f"timed out: {exc}"  # a library's own timeout, not ours
                return _Result(failed(msg), "failed", args, msg)
            msg = f"timed out after {spec.timeout_s:g} s and was stopped"
            return _Result(failed(msg), "timeout", args, msg)
        except ToolFailure as exc:
            return _Result(failed(exc.message, **exc.fields), "failed", args, exc.message)
        return _Result(ok(**fields), "ok", args)

    def _arguments(self, spec: ToolSpec, arguments: str) -> dict[str, Any]:
        text = arguments.strip() if isinstance(arguments, str) else ""
        try:
            # Models send "" for a function without parameters.
            args = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise _Invalid(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
        errors = sorted(self._validators[spec.name].iter_errors(args), key=relevance,
                        reverse=True)
        if errors:
            raise _Invalid("; ".join(_describe(e) for e in errors[:_MAX_ERRORS]),
                           _field(errors[0]))
        return _complete(spec.parameters, args)

    def _rate_limited(self, spec: ToolSpec, now: float) -> float | None:
        """None and count this run, or the seconds until a run is allowed again."""
        if spec.rate_limit is None:
            return None
        runs = self._runs.setdefault(spec.name, deque())
        while runs and now - runs[0] >= spec.rate_limit.per_s:
            runs.popleft()
        if len(runs) >= spec.rate_limit.max_calls:
            return max(0.0, runs[0] + spec.rate_limit.per_s - now)
        runs.append(now)
        return None

    async def _run(self, spec: ToolSpec, args: dict[str, Any]) -> dict[str, Any]:
        if spec.command is not None:
            return await run_command(spec.command, args, os.environ)
        if spec.gpio is not None:
            return await self._gpio.run(spec.gpio, args)
        if spec.mqtt is not None:
            return await run_mqtt(spec.mqtt, args)
        if spec.builtin == "get_time":
            return builtins.get_time()
        if spec.builtin == "set_volume":
            assert spec.mixer is not None
            return await builtins.set_volume(spec.mixer, args["percent"])
        if spec.builtin == "stop_conversation":
            return await builtins.stop_conversation(self._stop_conversation)
        raise AssertionError(f"no action for {spec.name}")  # ToolSpec guarantees one

    # ------------------------------------------------------------------ record, audit

    async def _started(self, call_id: str) -> None:
        # Once per process still holds (memory); only a restart could repeat it.
        await self._record(self._store.started(call_id), f"record call {call_id} in")

    async def _finished(self, call_id: str, output: str) -> None:
        await self._record(self._store.finished(call_id, output), f"record call {call_id} in")

    async def _save(self) -> None:
        await self._record(self._store.save(), "write")

    async def _record(self, write: Awaitable[None], what: str) -> None:
        """Await a write of the call record; a failing disk is a warning, never the call's
        failure (the record in memory still holds for this process)."""
        try:
            await write
        except OSError as exc:
            log.warning("tools: cannot %s %s: %s", what, self._store.path, exc)

    def _audit(self, call_id: str, name: str, result: _Result, t0: float) -> None:
        ms = round((time.monotonic() - t0) * 1000)
        fields = {"tool": name, "call_id": call_id, "arguments": result.arguments,
                  "outcome": result.outcome, "duration_ms": ms}
        if result.error:
            fields["error"] = result.error
        level = logging.INFO if result.outcome in _QUIET else logging.WARNING
        log.log(level, "tool %s [%s]: %s in %d ms%s", name, call_id, result.outcome, ms,
                f": {result.error}" if result.error else "", extra=fields)


def _describe(error: ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return f"{where}: {message}" if where else message


def _field(error: ValidationError) -> str | None:
    if error.absolute_path:
        return ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [p for p in error.validator_value if p not in error.instance]
        return missing[0] if missing else None
    return None


def _complete(schema: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Fill in the declared defaults of absent top-level parameters, and give whole numbers
    of integer parameters as ints (JSON Schema counts 5.0 as an integer; a command should see
    ``5``)."""
    props = schema.get("properties") or {}
    out = dict(args)
    for name, sub in props.items():
        if not isinstance(sub, dict):
            continue
        if name not in out and "default" in sub:
            out[name] = sub["default"]
        if sub.get("type") == "integer" and isinstance(out.get(name), float):
            out[name] = int(out[name])
    return out
