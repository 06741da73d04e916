"""The Prometheus endpoint of the whole daemon, scraped with a real HTTP client while the
daemon runs a conversation on the virtual sound card against the simulator: a question that
calls a tool, a reply the user interrupts, the answer to the interruption. Every counter is
checked against the timeline of the same run."""

from __future__ import annotations

import asyncio
import signal
import socket
import urllib.error
import urllib.request
from collections import Counter

import pytest
from harness import LISTENING, LONG_REPLY, START_TIMEOUT, running, service, silence, wake_word
from prometheus_client.parser import text_string_to_metric_families

from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.exporter import TOKEN_FIELDS
from support import espeak, until

pytestmark = [pytest.mark.timeout(120), pytest.mark.realtime, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """GET the endpoint (urllib, in a thread: the server runs on this loop); returns the text
    and {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=5) as res:
        assert res.status == 200
        assert res.headers["Content-Type"].startswith("text/plain")
        text = res.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


async def test_a_scrape_during_a_run_matches_the_timeline(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    script = {"turn": [{"user": "what time is it", "say": "One moment.",
                        "calls": [{"name": "get_time", "arguments": {}}],
                        "after_tools": LONG_REPLY},
                       {"say": "Okay."}]}
    tools = [{"name": "get_time", "description": "The time", "builtin": "get_time"}]
    async with running(tmp_path, script, metrics={"listen": f"127.0.0.1:{port}"},
                       tools=tools) as h:
        _, before = await asyncio.to_thread(scrape, url)
        assert before[("edgevoice_turns_total", ())] == 0
        assert before[("edgevoice_device_missing", (("device", "microphone"),))] == 0

        h.say(wake_word() + espeak("what time is it") + silence(1.5))
        await h.event(TelemetryName.TOOL_OUTPUT, timeout=30)
        await h.event(TelemetryName.FIRST_REPLY_AUDIO, count=2, timeout=30)
        item = h.entries(TelemetryName.FIRST_REPLY_AUDIO)[-1].fields["item"]
        await until(lambda: h.daemon.playback.played_ms(item) >= 1500, timeout=15,
                    what="1.5 s of the reply played")
        h.say(espeak("no wait, stop, I have another question") + silence(1.5))
        await h.event(TelemetryName.BARGE_IN)
        await h.event(TelemetryName.REPLY_DONE, count=3, timeout=30)  # the interruption's
        await h.event(TelemetryName.FIRST_AUDIO_AT_SPEAKER, count=3, timeout=10)
        text, got = await asyncio.to_thread(scrape, url)

        names = Counter(e.name for e in h.timeline)
        barge = h.entries(TelemetryName.BARGE_IN)
        assert [b.fields["by"] for b in barge] == ["local speech"]
        turns = names[TelemetryName.WAKE] + names[TelemetryName.FOLLOW_UP_SPEECH] + len(barge)
        assert got[("edgevoice_turns_total", ())] == turns == h.daemon.core.turn == 2
        assert got[("edgevoice_wake_detections_total", (("word", "hey_jarvis"),))] \
            == names[TelemetryName.WAKE] == 1
        statuses = Counter(e.fields["status"] for e in h.entries(TelemetryName.REPLY_DONE))
        assert statuses == {"completed": 2, "cancelled": 1}, statuses
        for status, n in statuses.items():
            assert got[("edgevoice_replies_total", (("status", status),))] == n
        for kind, key in TOKEN_FIELDS.items():
            total = sum(e.fields.get(key, 0) for e in h.entries(TelemetryName.REPLY_DONE))
            assert got[("edgevoice_tokens_total", (("kind", kind),))] == total, kind
        assert got[("edgevoice_tokens_total", (("kind", "output_audio"),))] > 0
        assert got[("edgevoice_tool_calls_total", (("outcome", "ok"), ("tool", "get_time")))] \
            == names[TelemetryName.TOOL_CALL] == 1
        assert got[("edgevoice_wake_to_send_seconds_count", ())] == 1
        assert 0 < got[("edgevoice_wake_to_send_seconds_sum", ())] \
            == pytest.approx(h.daemon.turns[0].wake_to_send_ms / 1000)
        figures = [t.first_audio_ms for t in h.daemon.turns if t.first_audio_ms is not None]
        assert got[("edgevoice_speech_end_to_reply_audio_seconds_count", ())] == len(figures) > 0
        assert got[("edgevoice_bargein_seconds_count", ())] == 1
        bargein_s = got[("edgevoice_bargein_seconds_sum", ())]
        # At least the speech needed to pause the speaker, at most the decision plus slack.
        speech_ms = barge[0].fields["speech_ms"]
        assert 0.02 <= bargein_s <= speech_ms / 1000 + 0.5, (bargein_s, speech_ms)
        assert got[("edgevoice_device_missing", (("device", "speaker"),))] == 0
        assert not any(k[0] == "edgevoice_reconnects_total" for k in got)
        print("\n".join(line for line in text.splitlines()
                        if line.startswith("edgevoice_") and "_bucket" not in line))
    # Closed with the daemon: nothing listens any more.
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(urllib.request.urlopen, url, None, 2)


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.URLError:
        return True
    return False


async def test_the_endpoint_follows_the_config_across_sighup_and_closes_at_stop():
    """``edgevoice run`` as a child: the endpoint is the daemon's, so a reload that moves it
    closes the old port and opens the new one; one that removes it closes it; SIGTERM too."""
    first, second = free_port(), free_port()
    url1, url2 = (f"http://127.0.0.1:{p}/metrics" for p in (first, second))
    async with service({"turn": [{"say": "Okay."}]},
                       extra=f'[metrics]\nlisten = "127.0.0.1:{first}"\n') as svc:
        await svc.message("READY", "1", timeout=START_TIMEOUT)
        _, got = await asyncio.to_thread(scrape, url1)
        assert got[("edgevoice_turns_total", ())] == 0

        async def reload(extra: str) -> None:
            svc.write_config(extra=extra)
            mark = len(svc.notify)
            svc.proc.send_signal(signal.SIGHUP)
            reloading = await svc.message("RELOADING", "1", start=mark)
            ready = await svc.message("READY", "1", start=reloading + 1, timeout=30)
            assert svc.fields(ready).get("STATUS") == LISTENING, svc.explain()

        await reload(f'[metrics]\nlisten = "127.0.0.1:{second}"\n')
        assert await asyncio.to_thread(refused, url1), svc.explain()
        _, got = await asyncio.to_thread(scrape, url2)
        assert got[("edgevoice_device_missing", (("device", "microphone"),))] == 0
        await reload("")
        assert await asyncio.to_thread(refused, url2), svc.explain()
        await reload(f'[metrics]\nlisten = "127.0.0.1:{second}"\n')
        await asyncio.to_thread(scrape, url2)
        await svc.stop_with_sigterm()
        assert await asyncio.to_thread(refused, url2)
