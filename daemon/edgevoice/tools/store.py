"""Outputs by ``call_id``: what makes a call run at most once.

:class:`CallStore` keeps the output of the last ``size`` call ids in memory and, when given a
file, on disk as well; :meth:`CallStore.claim` lets one caller run a call id and gives the
others its output, also while it still runs. A call that starts an action is recorded
*before* the action runs (``started``), so a restart in the middle never runs it again:
after a restart such a call answers :data:`INTERRUPTED` instead. The file is replaced
atomically (temporary file, fsync, rename, fsync of the directory); a missing file is an
empty store, an unreadable one is logged and set aside as ``NAME.bad`` so that the daemon
still starts.
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
        self._calls[call_id] = output
        self._calls.move_to_end(call_id)
        while len(self._calls) > self.size:
            self._calls.popitem(last=False)

    # ------------------------------------------------------------------ file

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != _VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            for entry in data["calls"]:
                call_id, output = entry["call_id"], entry["output"]
                if not isinstance(call_id, str) or not isinstance(output, str | None):
                    raise ValueError(f"bad entry {entry!r:.80}")
                self.remember(call_id, output)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            bad = path.with_name(path.name + ".bad")
            log.warning("tools: cannot read %s (%s); set aside as %s, starting empty",
                        path, exc, bad)
            self._calls.clear()
            try:
                path.replace(bad)
            except OSError:
                pass

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
