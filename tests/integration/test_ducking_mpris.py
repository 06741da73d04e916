"""The ``mpris`` ducking backend against a real ``dbus-daemon`` (private, per test) with
small MPRIS players running as their own processes (tests/mpris_player.py). Player states
are read with ``dbus-send``, independent of dbus-fast, which the code uses; each player also
prints the calls it got, so "never touched" is checked, not only the end state."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edgevoice.ducking import MprisDucker, ducking_guard, make_ducker
from support import DBusDaemon, stop_process

pytestmark = pytest.mark.timeout(30)


def calls(bus: DBusDaemon, name: str) -> list[str]:
    """The calls a player got (it prints one line per call); stops the player."""
    proc = bus.players[name]
    stop_process(proc)
    assert proc.stdout is not None
    return [line.split()[1] for line in proc.stdout.read().splitlines()
            if line.startswith("called ")]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "edgevoice.ducking" and r.levelno >= logging.WARNING]


async def test_pauses_playing_players_and_resumes_exactly_those(dbus, caplog):
    dbus.player("music", "Playing")
    dbus.player("podcast", "Playing")
    dbus.player("radio", "Paused")  # paused by the user: must stay paused
    dbus.player("video", "Stopped")
    ducker = make_ducker("mpris", address=dbus.address, timeout=3.0)
    assert isinstance(ducker, MprisDucker)
    async with ducking_guard(ducker):
        await ducker.duck()
        await ducker.duck()  # idempotent
        assert ducker.ducked
        assert ducker.paused_players == ["org.mpris.MediaPlayer2.music",
                                         "org.mpris.MediaPlayer2.podcast"]
        assert [dbus.status(n) for n in ("music", "podcast", "radio", "video")] == \
            ["Paused", "Paused", "Paused", "Stopped"]
        await ducker.unduck()
        assert not ducker.ducked and ducker.paused_players == []
        assert [dbus.status(n) for n in ("music", "podcast", "radio", "video")] == \
            ["Playing", "Playing", "Paused", "Stopped"]
        await ducker.unduck()  # idempotent: nothing more is sent
    assert calls(dbus, "music") == ["Pause", "Play"]
    assert calls(dbus, "podcast") == ["Pause", "Play"]
    assert calls(dbus, "radio") == []
    assert calls(dbus, "video") == []
    assert warnings(caplog) == []


async def test_a_player_that_vanishes_or_is_changed_meanwhile_is_left_alone(dbus, caplog):
    dbus.player("music", "Playing")
    dbus.player("gone", "Playing")
    dbus.player("stopped", "Playing")
    ducker = MprisDucker(address=dbus.address, timeout=3.0)
    async with ducking_guard(ducker):
        await ducker.duck()
        assert dbus.status("gone") == "Paused"
        stop_process(dbus.players["gone"])  # quits while paused
        # The user stopped this one while the assistant listened: their choice stays.
        subprocess.run(["dbus-send", f"--bus={dbus.address}", "--print-reply",
                        "--dest=org.mpris.MediaPlayer2.stopped", "/org/mpris/MediaPlayer2",
                        "org.mpris.MediaPlayer2.Player.Stop"], check=True, timeout=5,
                       capture_output=True)
        # A new player took the name of the one that quit: it was never paused by us.
        dbus.players.pop("gone")
        dbus.player("gone", "Paused")
        await ducker.unduck()
        assert not ducker.ducked
        assert dbus.status("music") == "Playing"
        assert dbus.status("stopped") == "Stopped"
        assert dbus.status("gone") == "Paused"
    assert calls(dbus, "gone") == []
    assert calls(dbus, "stopped") == ["Pause", "Stop"]
    assert warnings(caplog) == []


async def test_a_player_that_refuses_to_pause_is_reported_and_never_resumed(dbus, caplog):
    dbus.player("music", "Playing")
    dbus.player("live", "Playing", "refuse")
    ducker = MprisDucker(address=dbus.address, timeout=3.0)
    await ducker.duck()
    assert ducker.paused_players == ["org.mpris.MediaPlayer2.music"]
    await ducker.unduck()
    await ducker.close()
    assert dbus.status("music") == "Playing"
    assert calls(dbus, "live") == ["Pause"]  # asked once, never told to Play
    lines = warnings(caplog)
    assert len(lines) == 1 and "pausing org.mpris.MediaPlayer2.live failed: MprisError: " \
        "org.mpris.MediaPlayer2.Error.NotSupported: cannot pause" in lines[0], lines


async def test_without_a_bus_it_logs_and_never_raises(tmp_path, caplog):
    ducker = MprisDucker(address=f"unix:path={tmp_path}/nobus", timeout=1.0)
    await ducker.duck()
    assert ducker.ducked  # a duck was attempted
    await ducker.unduck()  # nothing was paused: nothing to restore
    assert not ducker.ducked
    await ducker.close()
    lines = warnings(caplog)
    assert len(lines) == 1 and lines[0].startswith("ducking (mpris): duck failed: "), lines


async def test_a_hung_player_is_bounded_and_does_not_stop_the_others(dbus, caplog):
    dbus.player("music", "Playing")
    hung = dbus.player("hung", "Playing")
    hung.send_signal(signal.SIGSTOP)  # owns its name but never answers
    try:
        ducker = MprisDucker(address=dbus.address, timeout=0.5)
        await ducker.duck()
        assert dbus.status("music") == "Paused"
        await ducker.unduck()
        assert dbus.status("music") == "Playing"
        assert any("pausing org.mpris.MediaPlayer2.hung failed: no answer within 0.4 s" in w
                   for w in warnings(caplog)), warnings(caplog)
        await ducker.close()
    finally:
        hung.send_signal(signal.SIGCONT)


def test_bad_options_are_refused_naming_the_backend():
    with pytest.raises(ValueError, match=r"ducking \(mpris\): bus must be"):
        make_ducker("mpris", bus="user")


CHILD = textwrap.dedent("""
    import asyncio, signal, sys
    from edgevoice.ducking import MprisDucker, ducking_guard

    async def main(mode, address):
        ducker = MprisDucker(address=address)
        if mode == "asyncio":  # how the daemon handles SIGTERM: cancel the main task
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, asyncio.current_task().cancel)
        if mode == "atexit":  # leaves the guard open: only the atexit hook can restore
            await ducking_guard(ducker).__aenter__()
            await ducker.duck()
            print("ducked", flush=True)
            sys.stdin.readline()
            return
        async with ducking_guard(ducker):
            await ducker.duck()
            print("ducked", flush=True)
            if mode == "crash":
                sys.stdin.readline()
                raise RuntimeError("boom")
            await asyncio.Event().wait()

    try:
        asyncio.run(main(*sys.argv[1:3]))
    except asyncio.CancelledError:
        sys.exit(0)
""")


@pytest.mark.parametrize("mode", ["default", "asyncio", "atexit", "crash"])
def test_players_resume_when_the_process_is_terminated_or_crashes(dbus, mode):
    """default: nobody handles SIGTERM (the guard's handler restores, then the process still
    dies of SIGTERM); asyncio: SIGTERM cancels the main task; atexit: the process exits with
    the guard open; crash: an unhandled exception leaves the guarded block."""
    dbus.player("music", "Playing")
    dbus.player("radio", "Paused")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode, dbus.address], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "ducked\n", child.stderr.read() if child.stderr else ""
        assert dbus.status("music") == "Paused"
        if mode in ("atexit", "crash"):
            child.stdin.close()
        else:
            child.send_signal(signal.SIGTERM)
        code = child.wait(10)
    finally:
        stop_process(child)
    assert code == {"default": -signal.SIGTERM, "asyncio": 0, "atexit": 0, "crash": 1}[mode]
    assert dbus.status("music") == "Playing"
    assert dbus.status("radio") == "Paused"
    assert calls(dbus, "radio") == []
