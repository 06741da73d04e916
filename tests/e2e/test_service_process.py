"""``edgevoice run`` as systemd runs it, all real: a child process on the demo's virtual sound
card (ALSA ``file`` PCMs on FIFOs paced in real time), the loopback simulator on 127.0.0.1, and
a notify socket bound by the test in place of the service manager (``$NOTIFY_SOCKET``, an
``AF_UNIX``/``SOCK_DGRAM`` socket, see docs/test-environment.md).

What systemd relies on: ``READY=1`` only once the microphone delivers and the wake word
listens, ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``, ``STATUS=`` following the conversation,
``RELOADING=1``/``READY=1`` around SIGHUP (also when the new file is invalid), ``STOPPING=1``
and exit code 0 on SIGTERM. ``edgevoice status`` is queried as a real subprocess too.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from harness import LISTENING, START_TIMEOUT, Service, service, silence, wake_word

from support import espeak, until

# A child daemon on the real-time rig; the watchdog is counted in wall-clock windows.
pytestmark = [pytest.mark.timeout(120), pytest.mark.realtime]


def watchdog_pings(svc: Service) -> int:
    return sum(1 for _, fields in svc.notify.messages if "WATCHDOG" in fields)


@pytest.mark.slow
async def test_ready_only_once_listening_then_watchdog_status_and_clean_stop():
    script = {"turn": [{"user": "what's the weather", "say": "Sunny and warm."}]}
    async with service(script, mic_paused=True) as svc:
        # Up and pinging the watchdog (the daemon is built and running), but the
        # microphone delivers nothing: no READY=1, however long that lasts.
        await svc.message("WATCHDOG", "1", timeout=START_TIMEOUT)
        snap = await svc.status()
        assert snap["state"] == "starting", snap
        assert snap["pid"] == svc.proc.pid
        # However long: 15 more watchdog rounds (3 s at one every 0.2 s), the daemon's loop
        # turning all the while, and still no READY=1.
        pinged = watchdog_pings(svc)
        await until(lambda: watchdog_pings(svc) >= pinged + 15, 10,
                    what="15 more watchdog pings")
        assert svc.notify.find("READY") is None, svc.explain()
        assert "listening for" not in svc.stderr(), svc.explain()

        resumed = time.monotonic()
        svc.rig.mic.resume()
        ready = await svc.message("READY", "1", timeout=10)
        t_ready, fields = svc.notify.messages[ready]
        assert t_ready > resumed
        assert fields.get("STATUS") == LISTENING, svc.explain()
        assert svc.notify.find("READY", start=ready + 1) is None  # once only

        # WATCHDOG_USEC=400000 (and no WATCHDOG_PID): one ping every 0.2 s.
        t0 = time.monotonic()
        await asyncio.sleep(2.0)  # the window the pings are counted in
        # The listener stamps a datagram, then records it: once a ping stamped after the
        # window is recorded, every ping stamped within it is too.
        await until(lambda: svc.notify.count("WATCHDOG", t0 + 2.0, float("inf")), 2,
                    what="a ping after the window")
        pings = svc.notify.count("WATCHDOG", t0, t0 + 2.0)
        assert 6 <= pings <= 14, f"{pings} WATCHDOG=1 in 2 s"

        snap = await svc.status()
        assert snap["state"] == "idle", snap
        assert snap["wake_words"] == ["hey_jarvis"], snap
        assert snap["turns"] == []
        # The wake word's worker gets the frames and keeps up: none dropped.
        assert snap["wake"]["frames"] > 0 and snap["wake"]["frames_dropped"] == 0, snap

        # A conversation: STATUS follows it and comes back to listening for the wake word.
        mark = len(svc.notify)
        svc.rig.mic.feed(wake_word() + silence(0.3) + espeak("what's the weather like today")
                         + silence(1.5))
        talking = await svc.message("STATUS", "in conversation", start=mark, timeout=20)
        back = await svc.message("STATUS", LISTENING, start=talking + 1, timeout=40)
        assert svc.sim.sent("response.audio.delta"), "the simulator never replied"
        statuses = [f["STATUS"] for _, f in svc.notify.messages[mark:back + 1] if "STATUS" in f]
        assert statuses == ["in conversation", LISTENING], statuses  # deduplicated

        snap = await svc.status()
        assert snap["state"] == "idle", snap
        assert len(snap["turns"]) == 1, snap
        turn = snap["turns"][0]
        assert turn["wake_word"] == "hey_jarvis"
        assert isinstance(turn["wake_to_send_ms"], int | float), turn
        assert 0 <= turn["wake_to_send_ms"] < 5000, turn

        await svc.stop_with_sigterm()


async def test_sighup_reloads_a_valid_config_and_keeps_running_on_an_invalid_one():
    async with service({"turn": [{"say": "Okay."}]}) as svc:
        await svc.message("READY", "1", timeout=START_TIMEOUT)
        assert " DEBUG " not in svc.stderr()

        # A valid new file: RELOADING=1, then READY=1 once it is in effect (debug logging).
        svc.write_config(log_level="debug")
        mark = len(svc.notify)
        svc.proc.send_signal(signal.SIGHUP)
        reloading = await svc.message("RELOADING", "1", start=mark)
        assert int(svc.fields(reloading)["MONOTONIC_USEC"]) > 0
        ready = await svc.message("READY", "1", start=reloading + 1, timeout=20)
        assert svc.fields(ready).get("STATUS") == LISTENING, svc.explain()
        await until(lambda: " DEBUG " in svc.stderr(), 5, what="debug logging after reload")
        snap = await svc.status()
        assert snap["state"] == "idle", snap
        assert snap["wake_words"] == ["hey_jarvis"], snap

        # An invalid file: RELOADING=1 and READY=1 again, the running config is kept, the log
        # names the offending key, and the daemon goes on answering.
        svc.write_config(log_level="debug", follow_up_s=-3)
        mark = len(svc.notify)
        refused_before = svc.stderr().count("reload refused")
        svc.proc.send_signal(signal.SIGHUP)
        reloading = await svc.message("RELOADING", "1", start=mark)
        ready = await svc.message("READY", "1", start=reloading + 1, timeout=10)
        assert svc.fields(ready).get("STATUS") == LISTENING, svc.explain()
        await until(lambda: svc.stderr().count("reload refused") > refused_before, 5,
                    what="the refused reload in the log")
        refused = [ln for ln in svc.lines if "reload refused" in ln]
        assert any("follow_up_s" in ln for ln in refused), svc.explain()
        snap = await svc.status()
        assert snap["state"] == "idle", snap
        assert snap["pid"] == svc.proc.pid
        assert svc.proc.poll() is None

        # A file that is valid TOML and schema but names a wake word model that does not
        # exist: refused before the running daemon is touched.
        svc.write_config(log_level="debug", extra='[wake]\nmodels = [{ name = "hey_nobody" }]\n')
        mark = len(svc.notify)
        svc.proc.send_signal(signal.SIGHUP)
        reloading = await svc.message("RELOADING", "1", start=mark)
        ready = await svc.message("READY", "1", start=reloading + 1, timeout=10)
        await until(lambda: any("reload refused" in ln and "hey_nobody" in ln
                                for ln in svc.lines), 5, what="the refused model")
        assert (await svc.status())["wake_words"] == ["hey_jarvis"]

        await svc.stop_with_sigterm()
