"""Outputs by ``call_id``: what makes a call run at most once.

:class:`CallStore` keeps the output of the last ``size`` call ids in memory and, when given a
file, on disk as well; :meth:`CallStore.claim` lets one caller run a call id and gives the
others its output, also while it still runs. A call that starts an action is recorded
*before* the action runs (``started``), so a restart in the middle never runs it again:
after a restart such a call answers :data:`INTERRUPTED` instead. The file is replaced
atomically (temporary file, fsync, rename, fsync of the directory); a missing file is an
empty store.

Fails closed: a file that cannot be read as a record (corrupt, nested too deep, larger than
:data:`MAX_FILE_BYTES`, of another version) raises :class:`CallRecordError`, one line naming
the file and saying what to do. The daemon then does not start (exit status 2, which systemd
does not retry) and a reload is refused: starting with an empty record could run a call a
second time, which is what the record is there to prevent. The operator moves the file aside
(its calls are then forgotten) and starts the daemon again.

Bounded: at most ``size`` call ids, and an output longer than :data:`MAX_OUTPUT_CHARS` is kept
as a short stand-in (a repeat still runs nothing), so the file stays below
:data:`MAX_FILE_BYTES`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger("edgevoice.tools")

INTERRUPTED = json.dumps({
    "ok": False,
    "error": "interrupted before it finished (the daemon stopped); it may or may not have "
             "taken effect and was not run again",
})

_VERSION = 1
MAX_OUTPUT_CHARS = 16384  # one stored output; larger ones are kept as TOO_LARGE
MAX_FILE_BYTES = 8 * 1024 * 1024  # 256 calls of MAX_OUTPUT_CHARS (JSON-escaped) fit easily

TOO_LARGE = json.dumps({
    "ok": False,
    "error": "this call already ran; its output was too large to keep and is not repeated",
})


class CallRecordError(ValueError):
    """The call record file cannot be used (one line: the file, the problem, what to do)."""


class CallStore:
    """Bounded map ``call_id -> output`` (``None``: started, not finished), and the claimed
    calls of this process that still run (one entry per call id in flight)."""

    def __init__(self, size: int = 256, path: Path | None = None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self.path = path
        self._calls: OrderedDict[str, str | None] = OrderedDict()
        self._running: dict[str, asyncio.Future[str]] = {}
        self._lock = asyncio.Lock()
        if path is not None:
            self._load(path)

    def get(self, call_id: str) -> str | None:
        """The stored output; :data:`INTERRUPTED` for a call that started but never finished
        (only possible after a restart); None for an unknown call id."""
        if call_id not in self._calls:
            return None
        output = self._calls[call_id]
        return INTERRUPTED if output is None else output

    async def claim(self, call_id: str) -> str | None:
        """Take ``call_id`` to run it: None when it is new — the caller runs it and must
        :meth:`settle` it once, whatever happens. Otherwise the output of the call that took
        it first: stored (:data:`INTERRUPTED` for one cut short by a restart), or awaited
        while that call still runs (cancelling this wait leaves that call alone)."""
        running = self._running.get(call_id)
        if running is not None:
            return await asyncio.shield(running)
        stored = self.get(call_id)
        if stored is None:  # taken before any await: two claims cannot both get None
            self._running[call_id] = asyncio.get_running_loop().create_future()
        return stored

    def settle(self, call_id: str, output: str) -> None:
        """The run of a claimed ``call_id`` ended with ``output``: the calls waiting in
        :meth:`claim` get it (record it with :meth:`finished` or :meth:`remember`)."""
        self._running.pop(call_id).set_result(output)

    async def started(self, call_id: str) -> None:
        """Record that ``call_id``'s action is about to run (on disk before returning)."""
        self.remember(call_id, None)
        await self.save()

    async def finished(self, call_id: str, output: str) -> None:
        """Record the final output of ``call_id``."""
        self.remember(call_id, output)
        await self.save()

    def remember(self, call_id: str, output: str | None) -> None:
        """Record in memory only (:meth:`save` writes the file)."""
        if output is not None and len(output) > MAX_OUTPUT_CHARS:
            output = TOO_LARGE
        self._calls[call_id] = output
        self._calls.move_to_end(call_id)
        while len(self._calls) > self.size:
            self._calls.popitem(last=False)

    # ------------------------------------------------------------------ file

    def _load(self, path: Path) -> None:
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(path, exc.strerror or str(exc)) from None
        if len(raw) > MAX_FILE_BYTES:
            raise self._error(path, f"larger than {MAX_FILE_BYTES} bytes")
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or data.get("version") != _VERSION:
                raise ValueError("unknown version" if isinstance(data, dict) else "not a record")
            calls = data["calls"]
            if not isinstance(calls, list):
                raise ValueError("calls is not a list")
            for entry in calls:
                call_id, output = entry["call_id"], entry["output"]
                if not isinstance(call_id, str) or not isinstance(output, str | None):
                    raise ValueError(f"bad entry {str(entry)[:60]!r}")
                self.remember(call_id, output)
        except RecursionError:
            raise self._error(path, "nested too deeply") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise self._error(path, f"{type(exc).__name__}: {str(exc)[:80]}") from None

    @staticmethod
    def _error(path: Path, problem: str) -> CallRecordError:
        return CallRecordError(
            f"tool call record {path} cannot be read ({problem}); no tool runs until it is "
            f"fixed: move it aside (mv {path} {path}.bad; the calls it remembers may then run "
            f"again if repeated) and start again")

    async def save(self) -> None:
        """Write the file (if any). Raises OSError when it cannot."""
        if self.path is None:
            return
        async with self._lock:  # writes in call order; a snapshot per write
            text = json.dumps({"version": _VERSION, "calls": [
                {"call_id": c, "output": o} for c, o in self._calls.items()]})
            await asyncio.to_thread(_write_atomically, self.path, text)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
