"""Hook commands for state changes (``[feedback] on_listening = [argv…]``, …).

Guarantees:
- :meth:`Hooks.show` returns at once; the commands run one at a time from one task, in the
  order of the changes. When changes come faster than the hooks finish, the newest change
  waits in one slot and replaces an older one still waiting there (a light must show the
  state now, not replay the past): the conversation never waits for a hook.
- No shell: ``argv`` runs as given, in a session of its own, with stdin and stdout on
  /dev/null and an environment of only PATH, the ``hook_env`` variables that are set and
  ``EDGEVOICE_STATE`` / ``EDGEVOICE_PREVIOUS_STATE`` (as tools, see
  :func:`edgevoice.util.child_environ`: no credential of the daemon reaches it).
- Bounded: a hook still running after ``timeout_s`` is killed with its whole process group.
- A failing hook (cannot start, non-zero exit, killed, timed out) is logged once per change
  of its outcome: the first failure, a different failure, and then "works again"; the same
  failure repeated is counted, not logged again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

from edgevoice.util import child_environ

log = logging.getLogger("edgevoice.feedback")

STDERR_TAIL = 300


class Hooks:
    """state → argv; see the module docstring."""

    def __init__(self, hooks: dict[str, list[str]], *, timeout_s: float = 5.0,
                 env: Sequence[str] = ()) -> None:
        self.hooks = hooks
        self.timeout_s = timeout_s
        self.env_names = list(env)
        self.runs = 0
        self.failures = 0
        self._pending: tuple[str, str | None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing: dict[str, str] = {}  # state → its hook's last failure (logged)
        self._closing = False
        self._busy = False  # a hook runs now

    def start(self) -> None:
        if self.hooks and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hooks")

    def show(self, state: str, previous: str | None) -> None:
        if state not in self.hooks or self._task is None:
            return
        self._pending = (state, previous)
        self._wake.set()

    async def idle(self) -> None:
        """Until no change waits and no hook runs (tests)."""
        while self._pending is not None or self._wake.is_set() or self._busy:
            await asyncio.sleep(0.01)

    async def _run(self) -> None:
        # The flag, not only the cancellation, ends the loop: a cancel that lands as a child
        # exits can be lost inside the subprocess calls.
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, None
            if pending is None or self._closing:
                continue
            self._busy = True
            try:
                await self._one(*pending)
            except Exception:
                log.exception("feedback hook for %s failed", pending[0])
            finally:
                self._busy = False

    async def _one(self, state: str, previous: str | None) -> None:
        argv = self.hooks[state]
        env = child_environ(self.env_names)
        env["EDGEVOICE_STATE"] = state
        env["EDGEVOICE_PREVIOUS_STATE"] = previous or ""
        self.runs += 1
        failure: str | None = None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as exc:
            failure = f"cannot run {argv[0]}: {exc.strerror or exc}"
        else:
            try:
                async with asyncio.timeout(self.timeout_s):
                    _, err = await proc.communicate()
            except TimeoutError:
                failure = f"still running after {self.timeout_s:g} s: killed"
                _kill(proc)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 2.0)
            except asyncio.CancelledError:
                _kill(proc)
                raise
            else:
                _kill(proc)  # what it left running in its group
                if proc.returncode:
                    tail = err.decode("utf-8", "replace").strip()[-STDERR_TAIL:]
                    failure = f"exit status {proc.returncode}" + (f": {tail}" if tail else "")
        self._report(state, argv[0], failure)

    def _report(self, state: str, program: str, failure: str | None) -> None:
        if failure is None:
            if self._failing.pop(state, None) is not None:
                log.info("feedback hook on_%s (%s) works again", state, program)
            return
        self.failures += 1
        if self._failing.get(state) != failure:
            self._failing[state] = failure
            log.warning("feedback hook on_%s (%s) failed: %s", state, program, failure)

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def status(self) -> dict[str, Any]:
        return {"runs": self.runs, "failures": self.failures,
                "failing": dict(self._failing)}


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
