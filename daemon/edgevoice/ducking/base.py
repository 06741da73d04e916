"""The ducker interface and what every backend shares: idempotence, bounded calls, never
raising, and a synchronous last-resort restore.

Guarantees of every :class:`BaseDucker` (and so of every backend):

- **Idempotent.** ``duck()`` while ducked and ``unduck()`` while not ducked do nothing. Calls
  are serialised, so concurrent duck/unduck calls take effect in call order.
- **Bounded.** Each call's own work is cut off after ``timeout`` seconds, whatever the sound
  server or hook does (a call waits for one already running, which is bounded the same way).
- **Never raises** (except :class:`asyncio.CancelledError` when the caller is cancelled). A
  failure is logged as one warning line ``ducking (<backend>): <what> failed: <reason>``.
- **Never forgets a restore.** ``ducked`` turns True as soon as a duck is attempted (a failed
  or timed-out duck may still have changed something) and turns False only after a restore
  succeeded; a failed restore is retried by the next ``unduck()``, ``close()`` or
  :meth:`BaseDucker.restore_sync`. A backend never overwrites a remembered original volume
  that was not restored yet, so ducking twice never makes "ducked" the new original.
- **Closed means closed.** After ``close()`` (which restores first) ``duck()`` is a no-op, so a
  late duck from a stray task during shutdown cannot leave audio ducked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

log = logging.getLogger("edgevoice.ducking")

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0


@runtime_checkable
class Ducker(Protocol):
    """Lowers other audio while the assistant listens and speaks, and restores it."""

    backend: str

    @property
    def ducked(self) -> bool:
        """True while other audio is (or may still be) lowered by us."""
        ...

    async def duck(self) -> None:
        """Lower other audio. Idempotent, bounded, never raises."""
        ...

    async def unduck(self) -> None:
        """Restore what :meth:`duck` changed. Idempotent, bounded, never raises."""
        ...

    async def close(self) -> None:
        """Restore if ducked and release resources; later ``duck()`` calls do nothing."""
        ...

    def restore_sync(self, timeout: float | None = None) -> None:
        """Blocking last-resort restore for signal handlers and ``atexit``: needs no event
        loop, bounded by ``timeout``, never raises."""
        ...


class BaseDucker:
    """Shared logic; a backend implements :meth:`_duck`, :meth:`_unduck` and
    :meth:`_restore_blocking` (and :meth:`_release` if it holds resources)."""

    backend = "base"

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError(f"ducking ({self.backend}): timeout must be > 0, got {timeout}")
        self.timeout = float(timeout)
        self._ducked = False
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def ducked(self) -> bool:
        return self._ducked

    async def duck(self) -> None:
        async with self._lock:
            if self._ducked or self._closed:
                return
            # Set first: a duck that fails half-way may still have lowered something.
            self._ducked = True
            await self._bounded("duck", self._duck)

    async def unduck(self) -> None:
        async with self._lock:
            if not self._ducked:
                return
            if await self._bounded("restore", self._unduck):
                self._ducked = False

    async def close(self) -> None:
        """Restore (if ducked) and release resources. A second cancellation while restoring
        falls back to :meth:`restore_sync`, so cancelling shutdown cannot skip the restore."""
        self._closed = True
        task = asyncio.ensure_future(self.unduck())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self.restore_sync()
            raise
        finally:
            self._release()

    def restore_sync(self, timeout: float | None = None) -> None:
        """Blocking restore for signal handlers, ``atexit`` and a cancelled ``close()``.
        Needs no event loop; runs the restore on a daemon thread and waits at most
        ``timeout`` (default: the ducker's) plus 0.5 s; never raises. It may overlap an
        async restore in flight: pulse and alsa compare before writing, so the result is
        the same; a command hook may then run twice."""
        if not self._ducked:
            return
        limit = self.timeout if timeout is None else timeout
        # A daemon thread, so a restore stuck in a library cannot hold up process exit.
        done: list[bool] = []

        def run() -> None:
            try:
                self._restore_blocking(limit)
                done.append(True)
            except Exception as exc:  # last resort: log, never raise
                log.warning("ducking (%s): restore at exit failed: %s", self.backend, describe(exc))

        thread = threading.Thread(target=run, name=f"edgevoice-{self.backend}-restore",
                                  daemon=True)
        thread.start()
        thread.join(limit + 0.5)
        if thread.is_alive():
            log.warning("ducking (%s): restore at exit timed out after %.1f s",
                        self.backend, limit)
        elif done:
            self._ducked = False

    # -- for backends -------------------------------------------------------------------

    async def _duck(self) -> None:
        raise NotImplementedError

    async def _unduck(self) -> None:
        raise NotImplementedError

    def _restore_blocking(self, timeout: float) -> None:
        """Restore without the event loop; runs in a helper thread. May raise."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free resources held between calls (threads, connections). Must not block."""

    async def _bounded(self, what: str, step: Callable[[], Any]) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await step()
            return True
        except TimeoutError:
            log.warning("ducking (%s): %s failed: no answer within %.1f s",
                        self.backend, what, self.timeout)
        except Exception as exc:  # a ducking failure must not stop a conversation
            log.warning("ducking (%s): %s failed: %s", self.backend, what, describe(exc))
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ducked={self._ducked}>"


class NoneDucker(BaseDucker):
    """The ``none`` backend: ducks nothing, but keeps the same state so callers need no
    special case."""

    backend = "none"

    async def _duck(self) -> None:
        return None

    async def _unduck(self) -> None:
        return None

    def _restore_blocking(self, timeout: float) -> None:
        return None


class Worker:
    """One daemon thread that runs blocking calls in submission order.

    Not ``asyncio.to_thread``: the loop's default executor is joined at interpreter exit and
    by ``asyncio.run``, so a library call stuck on a dead sound server would hang shutdown.
    Calls are serialised because library handles (a pulsectl connection) are not
    thread-safe, and so a restore queued after a slow duck also restores what it lowered.
    The thread ends after ``idle`` seconds without work and starts again on demand; there
    is never more than one.
    """

    def __init__(self, name: str, idle: float = 5.0) -> None:
        self._name = name
        self._idle = idle
        self._queue: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Queue ``fn``; safe from any thread."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            self._queue.put((future, fn))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
        return future

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker. If the awaiting task is cancelled before ``fn`` started,
        ``fn`` does not run at all."""
        return await asyncio.wrap_future(self.submit(fn))

    def _run(self) -> None:
        while True:
            try:
                future, fn = self._queue.get(timeout=self._idle)
            except queue.Empty:
                with self._lock:  # submit() holds it while queueing, so nothing is missed
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)


def describe(exc: BaseException) -> str:
    """An exception as "Type: message" for a one-line log entry."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
