"""The ``command`` backend: run an argv hook to duck and another to unduck.

Hooks run with :func:`asyncio.create_subprocess_exec`, never through a shell: every argument
reaches the program literally (``"; touch x"`` is one argument, not a second command). Each
hook runs in its own session and its whole process group is killed if it outlives
``timeout``. A hook that exits non-zero counts as failed. The unduck hook runs after any
duck attempt, even a failed one (it may have changed something), and may run again at exit
if it failed — so hooks should be idempotent. A hook sees only the daemon's audio and locale
variables (:data:`edgevoice.util.AUDIO_ENV`) and a system PATH, never a credential.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Sequence

from edgevoice.ducking.base import BaseDucker
from edgevoice.util import child_environ

DEFAULT_HOOK_TIMEOUT = 5.0


class CommandDucker(BaseDucker):
    """Duck with external programs (see module docs)."""

    backend = "command"

    def __init__(
        self,
        *,
        duck: Sequence[str],
        unduck: Sequence[str],
        timeout: float = DEFAULT_HOOK_TIMEOUT,
    ) -> None:
        super().__init__(timeout=timeout)
        for name, argv in (("duck", duck), ("unduck", unduck)):
            if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
                raise ValueError(f"ducking (command): {name} must be a non-empty list of "
                                 f"strings (an argv, no shell), got {argv!r}")
        self.duck_argv = list(duck)
        self.unduck_argv = list(unduck)

    async def _duck(self) -> None:
        await self._run(self.duck_argv)

    async def _unduck(self) -> None:
        await self._run(self.unduck_argv)

    async def _run(self, argv: list[str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True, env=child_environ())
        try:
            _, err = await proc.communicate()
        finally:
            if proc.returncode is None:  # cancelled by the timeout
                _kill_group(proc.pid)
                await proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(_failure(argv, proc.returncode, err))

    def _restore_blocking(self, timeout: float) -> None:
        with subprocess.Popen(self.unduck_argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True, env=child_environ()) as proc:
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                raise
        if proc.returncode != 0:
            raise RuntimeError(_failure(self.unduck_argv, proc.returncode, err))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _failure(argv: list[str], code: int | None, err: bytes) -> str:
    lines = err.decode(errors="replace").strip().splitlines()
    tail = f": {lines[-1]}" if lines else ""
    return f"{argv[0]} exited with status {code}{tail}"
