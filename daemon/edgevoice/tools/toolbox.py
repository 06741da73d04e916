"""The :class:`ToolBox`: one call of the model in, one output string out.

See :mod:`edgevoice.tools` for the output format, the confirmation flow and the guarantees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import relevance
from jsonschema.validators import validator_for

from edgevoice.config.tools import RateLimit, ToolSpec, check_tool_set
from edgevoice.tools import builtins
from edgevoice.tools.actions import GpioPins, ToolFailure, run_command, run_mqtt
from edgevoice.tools.arguments import ArgumentError, parse_arguments, refusal
from edgevoice.tools.confirm import DECLINED, Answer, Asker, YesRule, prompt_text
from edgevoice.tools.store import INTERRUPTED, CallStore

log = logging.getLogger("edgevoice.tools")

STATE_FILE = "tool-calls.json"
_MAX_ERRORS = 3  # argument errors reported per call: enough to fix, short enough to speak
#: The rate limit of a tool that declares none: a model in a loop cannot run it without end.
DEFAULT_RATE_LIMIT = RateLimit(max_calls=30, per_s=60)
AUDIT_ARGUMENTS_CHARS = 512  # the arguments in a log line; the status shows fewer
_AUDITS_KEPT = 64


def compact_arguments(args: Any, limit: int = AUDIT_ARGUMENTS_CHARS) -> str:
    """``args`` as compact JSON (text as it is, not \\u-escaped), cut to ``limit`` chars
    with a trailing ``…`` when longer."""
    text = args if isinstance(args, str) else json.dumps(
        args, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
    confirmed: tuple[float, str] | None = None  # the confirming user turn: (start, words)
    answer: Answer | None = None  # the user's answer to a confirmation prompt


_QUIET = {"ok", "duplicate", "declined"}
_PROCESS_BUILTINS = {"set_volume"}  # built-ins that start a process (amixer)


class ToolBox:
    """Runs the declared tools for the model (see :mod:`edgevoice.tools`).

    ``tools``: the validated ``[[tools]]`` entries. ``stop_conversation``: called by the
    ``stop_conversation`` built-in (a function or a coroutine function). ``state_dir``: where
    the record of recent call ids is kept across restarts (None: memory only).
    ``clock``: monotonic seconds (the asker's clock too); it times rate limits.
    ``pin_factory``: a gpiozero pin factory (None: the board's default).
    ``remember``: how many call ids are kept for exactly-once. ``ask``: asks the user to
    confirm a ``confirm = true`` call (the daemon's spoken prompt; None: such calls are
    declined, nobody can answer); ``yes``: which answers confirm. ``max_processes``: tool
    processes (commands, amixer) that run at once; a call
    beyond that waits in a queue of at most ``max_queued`` (for up to its ``timeout_s``) and
    is refused as busy when the queue is full or the wait too long. ``default_rate_limit``:
    the rate limit of tools that declare none (None: no limit). ``runner_socket``: the tool
    runner of ``run_as = "user"`` commands (see :mod:`edgevoice.tools.runner`).

    Raises ValueError for a tool set that the config check rejects (repeated names, a pin
    used both as input and output) and for a call record that cannot be read (see
    :class:`~edgevoice.tools.store.CallRecordError`); nothing else is opened until a call.
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
        ask: Asker | None = None,
        yes: YesRule | None = None,
        max_processes: int = 4,
        max_queued: int = 8,
        default_rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        runner_socket: Path | None = None,
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
        self._ask = ask
        self._yes = yes or YesRule()
        self._stop_conversation = stop_conversation
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()
        if max_processes < 1 or max_queued < 0:
            raise ValueError("max_processes must be >= 1 and max_queued >= 0")
        self.max_processes = max_processes
        self.max_queued = max_queued
        self._slots = asyncio.Semaphore(max_processes)
        self._queued = 0
        self._default_rate_limit = default_rate_limit
        self._runner_socket = runner_socket
        self._audits: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def audit(self, call_id: str) -> dict[str, Any] | None:
        """The audit record of a recent call (the fields of its log line), or None."""
        return self._audits.get(call_id)

    def spec(self, name: str) -> ToolSpec | None:
        """The declared tool ``name`` (None: no such tool)."""
        return self._tools.get(name)

    async def call(self, call_id: str, name: str, arguments: str, *,
                   source: str = "model") -> str:
        """Run one function call and return its output (a JSON object as a string).
        ``source`` says who asked (``model``, or ``offline``: a command recognised on the
        device); it goes to the audit record and log line, nothing else differs.

        Never raises, except :class:`asyncio.CancelledError` when the caller is cancelled
        (then the action is stopped and the call id answers "interrupted" from then on). A
        ``call_id`` runs at most once: a repeated or concurrent call with the same id returns
        the first one's output without running anything."""
        t0 = time.monotonic()
        stored = await self._store.claim(call_id)
        if stored is not None:
            self._audit(call_id, name, _Result(stored, "duplicate"), t0, arguments, source)
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
            self._audit(call_id, name, result, t0, arguments, source)
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
        except ArgumentError as exc:
            msg = f"invalid arguments: {exc}"
            extra = {"field": exc.field} if exc.field else {}
            return _Result(failed(msg, **extra), "invalid", error=msg)
        now = self._clock()
        limit = spec.rate_limit or self._default_rate_limit
        wait = self._rate_limited(spec.name, limit, now)
        if wait is not None:
            assert limit is not None
            msg = (f"rate limit: at most {limit.max_calls} call(s) per "
                   f"{limit.per_s:g} s; try again in {wait:.0f} s")
            return _Result(failed(msg), "rate_limited", args, msg)
        confirmed: tuple[float, str] | None = None
        if spec.confirm:
            answer = await self._confirmation(call_id, spec, args)
            if answer.transcript is None or not self._yes.accepts(answer.transcript):
                self._unrate(spec.name, now)  # it did not run: it does not count
                why = answer.why or f"the answer was not a yes: {answer.transcript!r}"
                return _Result(failed(f"not done: {DECLINED}"), "declined", args,
                               f"{DECLINED} ({why})", answer=answer)
            confirmed = (answer.began if answer.began is not None else self._clock(),
                         answer.transcript)
        process = spec.command is not None or spec.builtin in _PROCESS_BUILTINS
        if process:
            busy = await self._take_slot(spec)
            if busy is not None:
                self._unrate(spec.name, now)  # it did not run: it does not count
                return _Result(failed(busy), "busy", args, busy, confirmed)
        try:
            await self._started(call_id)
            timeout = asyncio.timeout(spec.timeout_s)
            try:
                async with timeout:
                    fields = await self._run(spec, args)
            except TimeoutError as exc:
                if not timeout.expired():
                    msg = f"timed out: {exc}"  # a library's own timeout, not ours
                    return _Result(failed(msg), "failed", args, msg, confirmed)
                msg = f"timed out after {spec.timeout_s:g} s and was stopped"
                return _Result(failed(msg), "timeout", args, msg, confirmed)
            except ToolFailure as exc:
                return _Result(failed(exc.message, **exc.fields), "failed", args, exc.message,
                               confirmed)
        finally:
            if process:
                self._slots.release()
        return _Result(ok(**fields), "ok", args, confirmed=confirmed)

    async def _confirmation(self, call_id: str, spec: ToolSpec,
                            args: dict[str, Any]) -> Answer:
        """Ask the user (see :mod:`edgevoice.tools.confirm`); no asker: no answer."""
        if self._ask is None:
            return Answer(None, why="nobody can be asked")
        prompt = prompt_text(spec.name, spec.confirm_prompt, args)
        log.info("tools: %s [%s] waits for the user's confirmation", spec.name, call_id)
        return await self._ask(call_id, prompt, spec.confirm_window_s)

    async def _take_slot(self, spec: ToolSpec) -> str | None:
        """A process slot (None), or why the call is refused: the queue is full, or no slot
        came free within the tool's timeout."""
        if not self._slots.locked():
            await self._slots.acquire()
            return None
        why = (f"busy: {self.max_processes} tool processes are running"
               f"{f' and {self._queued} waiting' if self._queued else ''}; try again shortly")
        if self._queued >= self.max_queued:
            return why
        self._queued += 1
        try:
            async with asyncio.timeout(spec.timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            return why
        finally:
            self._queued -= 1
        return None

    def _arguments(self, spec: ToolSpec, arguments: str) -> dict[str, Any]:
        args = parse_arguments(arguments if isinstance(arguments, str) else "")
        errors = sorted(self._validators[spec.name].iter_errors(args), key=relevance,
                        reverse=True)
        if errors:
            raise ArgumentError("; ".join(_describe(e) for e in errors[:_MAX_ERRORS]),
                                _field(errors[0]))
        args = complete_arguments(spec.parameters, args)
        problem = refusal(spec, args)
        if problem is not None:
            field, why = problem
            raise ArgumentError(f"{field}: {why}", field)
        return args

    def _rate_limited(self, name: str, limit: RateLimit | None, now: float) -> float | None:
        """None and count this run, or the seconds until a run is allowed again."""
        if limit is None:
            return None
        runs = self._runs.setdefault(name, deque())
        while runs and now - runs[0] >= limit.per_s:
            runs.popleft()
        if len(runs) >= limit.max_calls:
            return max(0.0, runs[0] + limit.per_s - now)
        runs.append(now)
        return None

    def _unrate(self, name: str, now: float) -> None:
        runs = self._runs.get(name)
        if runs and now in runs:
            runs.remove(now)

    async def _run(self, spec: ToolSpec, args: dict[str, Any]) -> dict[str, Any]:
        if spec.command is not None:
            return await run_command(spec.command, args, os.environ, self._runner_socket)
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

    def _audit(self, call_id: str, name: str, result: _Result, t0: float,
               raw: str, source: str = "model") -> None:
        ms = round((time.monotonic() - t0) * 1000)
        args: Any = result.arguments
        if args is None and isinstance(raw, str):
            try:
                args = parse_arguments(raw)
            except ArgumentError:
                args = raw  # kept as sent (cut, and escaped in the log line)
        fields: dict[str, Any] = {
            "tool": name, "call_id": call_id,
            "arguments": compact_arguments(args) if args is not None else None,
            "outcome": result.outcome, "duration_ms": ms, "source": source}
        if result.confirmed is not None:
            began, words = result.confirmed
            fields["confirmed_by"] = "user"
            fields["confirmed_at"] = _wall(began - self._clock() + time.time())
            fields["confirmation"] = compact_arguments(words, 120)
        elif result.answer is not None:
            heard = result.answer.transcript
            fields["confirmation"] = compact_arguments(
                heard if heard is not None else f"({result.answer.why})", 120)
        if result.error:
            fields["error"] = result.error
        self._audits[call_id] = fields
        self._audits.move_to_end(call_id)
        while len(self._audits) > _AUDITS_KEPT:
            self._audits.popitem(last=False)
        level = logging.INFO if result.outcome in _QUIET else logging.WARNING
        confirmed = f", confirmed by the user at {fields['confirmed_at']}" \
            if result.confirmed else ""
        log.log(level, "tool %s [%s]%s %s: %s in %d ms%s%s", name, call_id,
                " (offline)" if source == "offline" else "",
                fields["arguments"] or "{}", result.outcome, ms, confirmed,
                f": {result.error}" if result.error else "", extra=fields)


def _wall(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch)) + \
        f".{int(epoch * 1000) % 1000:03d}"


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


def complete_arguments(schema: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
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
