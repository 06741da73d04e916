"""Ducking against real parts: a PulseAudio server started per test (null sink, private
runtime dir) with other streams playing into it (``pacat``), real ALSA mixer controls
through the ALSA ``pulse`` ctl plugin on that server (no sound card needed), real argv hook
scripts, and real SIGTERM delivered to a child process that ducked.

Volumes are read with ``pactl --format=json`` (independent of pulsectl, which the code uses)
and with ``amixer``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from edgevoice.ducking import (
    AlsaDucker,
    CommandDucker,
    NoneDucker,
    PulseDucker,
    ducking_guard,
    make_ducker,
)
from edgevoice.ducking.alsa import parse_sget
from support import PulseServer, missing, need_tool, quiet, stop_process, until

pytestmark = pytest.mark.timeout(30)

DUCK_DB = 15.0
PA_NORM = 65536


# -- helpers ----------------------------------------------------------------------------


def lowered(raw: int, db: float = DUCK_DB) -> int:
    """What PulseAudio's cubic volume scale gives for ``raw`` lowered by ``db``."""
    return round(raw * 10 ** (-db / 60))


def ducking_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "edgevoice.ducking" and r.levelno >= logging.WARNING]


# -- pulse ------------------------------------------------------------------------------


async def test_pulse_lowers_others_and_restores_exactly(pulse, players, caplog):
    pulse.play("music", players)
    pulse.play("navigation", players)
    pulse.play("our-own", players)
    pulse.set_volume("music", 50000, 31000)  # per-channel values that are not round numbers
    before = {app: pulse.volume(app) for app in ("music", "navigation", "our-own")}

    ducker = make_ducker("pulse", server=pulse.server, duck_db=DUCK_DB,
                         exclude_apps=["our-own"])
    assert isinstance(ducker, PulseDucker)
    await ducker.duck()
    assert ducker.ducked
    assert pulse.volume("music") == tuple(lowered(v) for v in before["music"])
    assert pulse.volume("navigation") == tuple(lowered(v) for v in before["navigation"])
    for was, now in zip(pulse.volume_db("navigation"), (0.0, 0.0), strict=True):
        assert was == pytest.approx(now - DUCK_DB, abs=0.01)  # pactl agrees: -15.00 dB
    assert pulse.volume("our-own") == before["our-own"]  # excluded by application.name

    await ducker.duck()  # idempotent: not lowered twice
    assert pulse.volume("music") == tuple(lowered(v) for v in before["music"])

    await ducker.unduck()
    assert not ducker.ducked
    assert {app: pulse.volume(app) for app in before} == before  # exact, per channel
    await ducker.unduck()  # idempotent: nothing to do
    assert {app: pulse.volume(app) for app in before} == before
    await ducker.close()
    assert ducking_warnings(caplog) == []


async def test_pulse_excludes_our_own_process_by_pid(pulse, players):
    pulse.play("music", players)
    pulse.play("assistant-voice", players)
    own_pid = players[-1].pid  # stands in for the daemon's own playback stream
    ducker = PulseDucker(server=pulse.server, exclude_pids=[own_pid])
    async with ducking_guard(ducker):
        await ducker.duck()
        assert pulse.volume("music") == (lowered(PA_NORM),) * 2
        assert pulse.volume("assistant-voice") == (PA_NORM, PA_NORM)
    assert pulse.volume("music") == (PA_NORM, PA_NORM)


@pytest.mark.realtime  # a quiet period: nothing may duck the stream that starts last
async def test_pulse_ducks_streams_that_appear_and_skips_vanished(pulse, players, caplog):
    pulse.play("music", players)
    pulse.play("podcast", players)
    ducker = PulseDucker(server=pulse.server)
    async with ducking_guard(ducker):
        await ducker.duck()
        # A stream that starts while ducked is lowered too, within a moment.
        await asyncio.to_thread(pulse.play, "notification", players)
        await until(lambda: pulse.volume("notification") == (lowered(PA_NORM),) * 2,
                    what="the new stream to be ducked")
        # A stream that ends while ducked is skipped on restore.
        stop_process(players[1])
        await until(lambda: "podcast" not in pulse.sink_inputs(), what="podcast to end")
        await ducker.unduck()
        assert pulse.volume("music") == (PA_NORM, PA_NORM)
        assert pulse.volume("notification") == (PA_NORM, PA_NORM)
        assert not ducker.ducked
        # After unduck, new streams are left alone.
        await asyncio.to_thread(pulse.play, "after", players)
        # A (wrongly) still-running watcher ducks a new stream within a few tens of ms (the
        # "notification" above): its volume must stay where it is for longer than that.
        volume = await quiet(lambda: pulse.volume("after"), 0.5, what="the new stream's volume")
        assert volume == (PA_NORM, PA_NORM)
    assert ducking_warnings(caplog) == []


async def test_pulse_keeps_a_volume_the_user_changed_while_ducked(pulse, players):
    pulse.play("music", players)
    pulse.play("radio", players)
    ducker = PulseDucker(server=pulse.server, duck_db=20)
    async with ducking_guard(ducker):
        await ducker.duck()
        pulse.set_volume("radio", 12345, 23456)  # the user turns the radio to their liking
        await ducker.unduck()
    assert pulse.volume("music") == (PA_NORM, PA_NORM)
    assert pulse.volume("radio") == (12345, 23456)  # the user's choice wins


async def test_pulse_survives_a_server_restart_while_ducked(pulse, players, caplog):
    pulse.play("music", players)
    ducker = PulseDucker(server=pulse.server)
    async with ducking_guard(ducker):
        await ducker.duck()
        pulse.stop()  # e.g. PipeWire restarted: its streams and our connections are gone
        pulse.start()
        pulse.play("radio", players)  # gets the old stream's index on the new server
        # The watcher reconnects and ducks streams of the new server too.
        await until(lambda: pulse.volume("radio") == (lowered(PA_NORM),) * 2,
                    what="the watcher to duck a stream on the restarted server")
        await ducker.unduck()
        assert not ducker.ducked
        assert pulse.volume("radio") == (PA_NORM, PA_NORM)
    assert all("watching for new streams failed, retrying" in line
               for line in ducking_warnings(caplog))


@pytest.mark.realtime  # a 1 s connect timeout, bounded in wall-clock time
async def test_pulse_without_a_server_logs_and_never_raises(tmp_path, caplog):
    ducker = PulseDucker(server=f"unix:{tmp_path}/no-such-socket", timeout=1.0)
    started = time.monotonic()
    async with ducking_guard(ducker):
        await ducker.duck()
        await ducker.unduck()
    assert time.monotonic() - started < 2.0
    assert not ducker.ducked  # nothing was lowered, so nothing is left to restore
    (line,) = ducking_warnings(caplog)
    assert line.startswith("ducking (pulse): duck failed:") and "connect" in line


@pytest.mark.realtime  # 0.5 s timeouts, bounded in wall-clock time
async def test_pulse_with_a_hung_server_is_bounded(tmp_path, caplog):
    """A server that accepts connections but never answers (a listening socket nobody
    serves): every call gives up after the timeout, logs one line, and does not raise."""
    path = Path(tempfile.mkdtemp(prefix="ev-hung-")) / "native"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    try:
        ducker = PulseDucker(server=f"unix:{path}", timeout=0.5)
        started = time.monotonic()
        async with ducking_guard(ducker):
            await ducker.duck()
            await ducker.unduck()
        assert time.monotonic() - started < 3.0
        lines = ducking_warnings(caplog)
        assert lines[0] == "ducking (pulse): duck failed: no answer within 0.5 s"
        assert set(lines[1:]) == {"ducking (pulse): restore failed: no answer within 0.5 s"}
    finally:
        listener.close()  # the stuck connect fails and the worker thread ends
        shutil.rmtree(path.parent, ignore_errors=True)


CHILD = textwrap.dedent("""
    import asyncio, signal, sys
    from edgevoice.ducking import PulseDucker, ducking_guard

    async def main(mode):
        ducker = PulseDucker(duck_db=15)  # server from $PULSE_SERVER
        if mode == "asyncio":  # how a daemon handles SIGTERM: cancel the main task
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
            await asyncio.Event().wait()

    try:
        asyncio.run(main(sys.argv[1]))
    except asyncio.CancelledError:
        sys.exit(0)
""")


@pytest.mark.parametrize("mode", ["default", "asyncio", "atexit"])
def test_pulse_restored_when_the_process_is_terminated(pulse, players, mode):
    """default: nobody handles SIGTERM (the guard's fallback handler restores, then the
    process still dies of SIGTERM); asyncio: SIGTERM cancels the main task (the guard's exit
    restores); atexit: the process exits with the guard still open (the atexit hook)."""
    pulse.play("music", players)
    pulse.set_volume("music", 40000, 20000)
    env = {**pulse.env, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "ducked\n", child.stderr.read() if child.stderr else ""
        assert pulse.volume("music") == (lowered(40000), lowered(20000))
        if mode == "atexit":
            child.stdin.close()
        else:
            child.send_signal(signal.SIGTERM)
        code = child.wait(10)
    finally:
        stop_process(child)
    assert code == {"default": -signal.SIGTERM, "asyncio": 0, "atexit": 0}[mode]
    assert pulse.volume("music") == (40000, 20000)


# -- alsa -------------------------------------------------------------------------------


@pytest.fixture
def alsa_pulse_mixer(pulse, monkeypatch) -> PulseServer:
    """A real ALSA mixer control without a card: the ALSA ``pulse`` ctl plugin
    (libasound2-plugins) exposes the PulseAudio server's sink as control ``Master``."""
    need_tool("amixer", "apt-get install alsa-utils (or run scripts/setup)")
    monkeypatch.setenv("PULSE_SERVER", pulse.server)
    probe = subprocess.run(["amixer", "-D", "pulse", "sget", "Master"], capture_output=True,
                           text=True, timeout=5)
    if probe.returncode != 0:
        missing(f"a usable ALSA pulse plugin ({probe.stderr.strip()})",
                "apt-get install libasound2-plugins (or run scripts/setup)")
    return pulse


def amixer_raw() -> tuple[int, ...]:
    out = subprocess.run(["amixer", "-D", "pulse", "sget", "Master"], capture_output=True,
                         text=True, check=True, timeout=5).stdout
    return parse_sget(out, "Master").raw


async def test_alsa_lowers_a_mixer_control_and_restores_it_exactly(alsa_pulse_mixer, caplog):
    alsa_pulse_mixer.pactl("set-sink-volume", "duckingtest", "50000", "41000")
    assert amixer_raw() == (50000, 41000)
    ducker = make_ducker("alsa", device="pulse", control="Master", duck_db=DUCK_DB)
    assert isinstance(ducker, AlsaDucker)
    async with ducking_guard(ducker):
        await ducker.duck()
        await ducker.duck()  # idempotent
        # This control has no dB scale: the raw value is scaled by the amplitude ratio.
        ratio = 10 ** (-DUCK_DB / 20)
        assert amixer_raw() == (math.floor(50000 * ratio), math.floor(41000 * ratio))
        sink = json.loads(alsa_pulse_mixer.pactl("--format=json", "list", "sinks"))[0]
        assert sink["volume"]["front-left"]["value"] == math.floor(50000 * ratio)
        await ducker.unduck()
        assert amixer_raw() == (50000, 41000)
        await ducker.duck()
    assert amixer_raw() == (50000, 41000)  # the guard restored it
    assert ducking_warnings(caplog) == []


async def test_alsa_keeps_a_setting_the_user_changed_and_reports_a_bad_control(
        alsa_pulse_mixer, caplog):
    ducker = AlsaDucker(device="pulse", control="Master", duck_db=10)
    await ducker.duck()
    alsa_pulse_mixer.pactl("set-sink-volume", "duckingtest", "30000")
    await ducker.unduck()
    assert amixer_raw() == (30000, 30000)

    bad = AlsaDucker(device="pulse", control="NoSuchControl")
    await bad.duck()
    await bad.close()
    (line,) = ducking_warnings(caplog)
    assert line.startswith("ducking (alsa): duck failed:") and "NoSuchControl" in line


def test_alsa_parses_a_control_with_a_db_scale():
    # amixer output of a real card (Raspberry Pi bcm2835 headphones).
    text = textwrap.dedent("""\
        Simple mixer control 'PCM',0
          Capabilities: pvolume pvolume-joined pswitch pswitch-joined
          Playback channels: Mono
          Limits: Playback -10239 - 400
          Mono: Playback -2000 [77%] [-20.00dB] [on]
        """)
    state = parse_sget(text, "PCM")
    assert state.raw == (-2000,) and state.db == (-20.0,)
    assert (state.lo, state.hi) == (-10239, 400)
    assert AlsaDucker(control="PCM", duck_db=15)._target(state) == "-35.00dB"


# -- command ----------------------------------------------------------------------------

HOOK = "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')"


def hook(marker: Path, *words: str) -> list[str]:
    return [sys.executable, "-c", HOOK, str(marker), *words]


async def test_command_runs_argv_hooks_idempotently_without_a_shell(tmp_path, caplog):
    marker = tmp_path / "marker"
    evil = f"; touch {tmp_path}/pwned"
    ducker = make_ducker("command", duck=hook(marker, "duck", evil), unduck=hook(marker, "unduck"))
    assert isinstance(ducker, CommandDucker)
    async with ducking_guard(ducker):
        await ducker.duck()
        await ducker.duck()
        assert marker.read_text() == f"duck {evil}\n"  # once, the argument stayed literal
        await ducker.unduck()
        await ducker.unduck()
        await ducker.duck()
    assert marker.read_text() == f"duck {evil}\nunduck\nduck {evil}\nunduck\n"
    assert not (tmp_path / "pwned").exists()
    assert ducking_warnings(caplog) == []


@pytest.mark.realtime  # a 0.5 s hook timeout, bounded in wall-clock time
async def test_command_failures_are_logged_bounded_and_still_restored(tmp_path, caplog):
    marker = tmp_path / "marker"
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('no mixer\\n'); sys.exit(3)"]
    ducker = CommandDucker(duck=failing, unduck=hook(marker, "unduck"))
    await ducker.duck()
    assert ducker.ducked  # it may have changed something: unduck must still run
    await ducker.unduck()
    assert marker.read_text() == "unduck\n"
    assert ducking_warnings(caplog) == [
        f"ducking (command): duck failed: RuntimeError: {sys.executable} exited with "
        "status 3: no mixer"]

    # A hook that hangs (with a child of its own) is killed, group and all, at the timeout.
    pidfile = tmp_path / "grandchild"
    hang = ["sh", "-c", f'sleep 30 & echo $! > "{pidfile}"; wait']  # sh is the hook, not us
    slow = CommandDucker(duck=hang, unduck=hook(marker, "unduck"), timeout=0.5)
    started = time.monotonic()
    await slow.duck()
    assert time.monotonic() - started < 1.5
    grandchild = int(pidfile.read_text())
    await until(lambda: not Path(f"/proc/{grandchild}").exists()
                or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2],
                what="the hook's child to be killed")
    assert "no answer within 0.5 s" in ducking_warnings(caplog)[-1]

    missing = CommandDucker(duck=["/nonexistent/duck-hook"], unduck=["true"])
    await missing.duck()
    assert "No such file" in ducking_warnings(caplog)[-1]
    await slow.close()
    await missing.close()


async def test_command_guard_restores_on_error_and_sync_restore(tmp_path):
    marker = tmp_path / "marker"
    ducker = CommandDucker(duck=hook(marker, "duck"), unduck=hook(marker, "unduck"))
    with pytest.raises(RuntimeError, match="conversation broke"):
        async with ducking_guard(ducker):
            await ducker.duck()
            raise RuntimeError("conversation broke")
    assert marker.read_text() == "duck\nunduck\n"
    await ducker.duck()  # closed: a late duck does nothing
    assert marker.read_text() == "duck\nunduck\n"

    other = CommandDucker(duck=hook(marker, "duck2"), unduck=hook(marker, "unduck2"))
    await other.duck()
    other.restore_sync()  # the blocking path used from signal handlers and atexit
    assert not other.ducked
    assert marker.read_text().endswith("duck2\nunduck2\n")


def test_factory_rejects_unknown_backends_and_options():
    assert isinstance(make_ducker("none"), NoneDucker)
    with pytest.raises(ValueError, match="unknown backend 'jack'"):
        make_ducker("jack")
    with pytest.raises(ValueError, match=r"ducking \(alsa\): bad options"):
        make_ducker("alsa", card=0)
    with pytest.raises(ValueError, match="no shell"):
        make_ducker("command", duck="amixer set Master 50%", unduck=["true"])


async def test_none_backend_keeps_state():
    ducker = NoneDucker()
    await ducker.duck()
    assert ducker.ducked
    await ducker.close()
    assert not ducker.ducked
