"""The per-turn context command: a real subprocess, bounded in time and size, with only the
environment it is given; a failure is logged once and the reply goes on without context."""

from __future__ import annotations

import logging
import time

import pytest

from edgevoice.config import Config
from edgevoice.daemon import _Context

pytestmark = pytest.mark.timeout(30)


def context(command: list[str], **over: object) -> _Context:
    return _Context(Config.model_validate({
        "session": {"turn_detection": {"create_response": False}},
        "context": {"command": command, **over}}))


async def test_the_stdout_is_the_context_and_only_the_given_environment_reaches_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICELIVE_API_KEY", "secret-key")
    monkeypatch.setenv("TZ", "Europe/Paris")
    text = await context(["/usr/bin/env"], env=["TZ"]).get()
    assert text is not None
    names = sorted(line.split("=", 1)[0] for line in text.splitlines())
    assert names == ["PATH", "TZ"] and "secret-key" not in text
    assert await context(["/bin/echo", "The car is in Lyon."]).get() == "The car is in Lyon."


async def test_failures_are_logged_once_and_give_no_context(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgevoice.daemon")
    slow = context(["/bin/sleep", "5"], timeout_s=0.3)
    started = time.monotonic()
    assert await slow.get() is None and await slow.get() is None
    assert time.monotonic() - started < 3.0  # killed at the timeout, both times
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gave no answer within 0.3 s" in warnings[0].getMessage()
    assert await context(["/bin/false"]).get() is None
    assert await context(["/usr/bin/seq", "1", "1000"], max_bytes=64).get() is None
    assert await context(["/nonexistent/program"]).get() is None
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("exited with status 1" in m for m in messages)
    assert any("wrote more than 64 bytes" in m for m in messages)
    assert any("cannot run /nonexistent/program" in m for m in messages)
