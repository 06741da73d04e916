"""The tool runner: runs ``run_as = "user"`` commands as a separate system user.

Why a separate process: the daemon holds the Voice Live key (in memory, and in systemd's
credentials directory) and must not share a user with the programs the model can start, or
those programs could read ``/proc/<daemon>/environ``, its memory or its credentials. The
runner (``edgevoice tool-runner``) runs as its own user (``edgevoice-tools``, created by
``scripts/install-service``, started by ``systemd/edgevoice-tools.service``) with no
capability at all; the daemon connects to its unix socket and hands it one command at a
time. Neither process needs privileges: nothing switches users at run time.

Protocol, one connection per command: the daemon sends one JSON line
``{"argv": [...], "env": {...}, "cwd": null, "max_output_bytes": 4096}``; the runner runs it
exactly as the daemon would (:func:`edgevoice.tools.actions.execute`: no shell, a new process
group, only that environment) and answers one JSON line ``{"code": 0, "stdout": "<base64>",
"truncated": false, "stderr": "<base64>"}`` or ``{"error": "..."}``. When the daemon closes
the connection first (the tool's timeout), the runner kills the command's whole group.

Guarantees of the runner: the socket is mode 0660 (the runner's user and group; the daemon's
user is a member of that group); requests are bounded (64 KiB); with ``--config`` only the
programs (``argv[0]``) of ``run_as = "user"`` tools of that config are run, the file being
read again when it changes; at most ``--max-processes`` commands run at once (others wait).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgevoice.tools.actions import Completed, ToolFailure, execute

log = logging.getLogger("edgevoice.tools.runner")

MAX_REQUEST = 65536
_RESPONSE_MAX = 4 * 1024 * 1024


# --------------------------------------------------------------------------- client


async def run_remote(socket_path: Path | None, argv: list[str], env: Mapping[str, str],
                     cwd: str | None, cap: int) -> Completed:
    """Run ``argv`` through the runner at ``socket_path``. Raises :class:`ToolFailure` when
    there is no runner; cancelling closes the connection, which kills the command."""
    if socket_path is None:
        raise ToolFailure('run_as = "user" needs the tool runner (service.tool_runner_socket)')
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket_path),
                                                            limit=_RESPONSE_MAX)
    except OSError as exc:
        raise ToolFailure(f"the tool runner ({socket_path}) is not available: "
                          f"{exc.strerror or exc}") from None
    try:
        request = {"argv": argv, "env": dict(env), "cwd": cwd, "max_output_bytes": cap}
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.shield(writer.wait_closed())
    try:
        answer = json.loads(line)
    except ValueError:
        raise ToolFailure("the tool runner closed the connection without an answer") from None
    if "error" in answer:
        raise ToolFailure(str(answer["error"]))
    return Completed(answer["code"], base64.b64decode(answer["stdout"]),
                     bool(answer["truncated"]), base64.b64decode(answer["stderr"]))


# --------------------------------------------------------------------------- server


class _Allowed:
    """The programs of ``run_as = "user"`` tools in a config file, read again on change.
    None as path: any program (for tests and setups without a config)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._programs: frozenset[str] = frozenset()

    def programs(self) -> frozenset[str] | None:
        if self.path is None:
            return None
        from edgevoice.config import ConfigError, load_config

        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                cfg = load_config(self.path)
                self._programs = frozenset(
                    t.command.argv[0] for t in cfg.tools
                    if t.command is not None and t.command.run_as == "user")
                self._stamp = stamp
        except (OSError, ConfigError) as exc:
            log.warning("tool runner: cannot read %s (%s); keeping %d program(s)",
                        self.path, exc, len(self._programs))
        return self._programs


def _request(line: bytes) -> tuple[list[str], dict[str, str], str | None, int]:
    data = json.loads(line)
    argv, env, cwd, cap = data["argv"], data["env"], data.get("cwd"), data["max_output_bytes"]
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings")
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in env.items())):
        raise ValueError("env must map strings to strings")
    if cwd is not None and not isinstance(cwd, str):
        raise ValueError("cwd must be a string")
    if not isinstance(cap, int) or not 1 <= cap <= 1048576:
        raise ValueError("max_output_bytes must be 1 to 1048576")
    return argv, env, cwd, cap


class Runner:
    """The runner's server (see the module docs)."""

    def __init__(self, socket_path: Path, config: Path | None = None,
                 max_processes: int = 4) -> None:
        self.socket_path = socket_path
        self._allowed = _Allowed(config)
        self._slots = asyncio.Semaphore(max_processes)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                self.socket_path.unlink()  # stale: the unit's runtime directory is fresh anyway
        old = os.umask(0o117)  # created 0660 under its final name
        try:
            self._server = await asyncio.start_unix_server(self._serve, str(self.socket_path),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            answer = await self._answer(reader)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            argv, env, cwd, cap = _request(line)
        except (ValueError, KeyError, TypeError, TimeoutError, asyncio.LimitOverrunError) as exc:
            return {"error": f"tool runner: bad request: {exc}"}
        allowed = self._allowed.programs()
        if allowed is not None and argv[0] not in allowed:
            log.warning("tool runner: refused %s: not the program of a run_as = \"user\" tool",
                        argv[0])
            return {"error": f"tool runner: {argv[0]} is not the program of a "
                             f"run_as = \"user\" tool"}
        async with self._slots:
            run = asyncio.ensure_future(execute(argv, env, cwd, cap))
            gone = asyncio.ensure_future(reader.read(1))  # EOF: the daemon gave up
            try:
                await asyncio.wait([run, gone], return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not run.done():
                    run.cancel()  # kills and reaps the whole group
                    with contextlib.suppress(asyncio.CancelledError, ToolFailure):
                        await run
                gone.cancel()
            if run.cancelled():
                return {"error": "cancelled"}
            try:
                done = run.result()
            except ToolFailure as exc:
                return {"error": exc.message}
        return {"code": done.code, "stdout": base64.b64encode(done.stdout).decode(),
                "truncated": done.truncated, "stderr": base64.b64encode(done.stderr).decode()}


async def serve_runner(socket_path: Path, config: Path | None = None,
                       max_processes: int = 4) -> None:
    """``edgevoice tool-runner``: serve until SIGTERM/SIGINT."""
    import signal

    runner = Runner(socket_path, config, max_processes)
    await runner.start()
    log.info("tool runner listening on %s", socket_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.close()
