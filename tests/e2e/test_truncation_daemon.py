"""Exact truncation through the whole daemon: an Azure voice with word timestamps, a
barge-in, and the stored copy of the interrupted reply (what a reconnect would replay) ends
at the last word whose audio had finished playing when the speaker stopped."""

from __future__ import annotations

import pytest
from harness import LONG_REPLY, running, silence, wake_word

from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.link.context import cut_at_words
from support import espeak, until

pytestmark = [pytest.mark.timeout(90), pytest.mark.realtime, pytest.mark.slow]

AZURE = {"type": "azure-standard", "name": "en-US-AvaNeural"}


async def test_barge_in_cuts_the_stored_reply_at_the_last_word_played(tmp_path):
    script = {"turn": [{"say": LONG_REPLY}, {"say": "Okay."}]}
    async with running(tmp_path, script, voice=AZURE) as h:
        h.say(wake_word() + espeak("tell me about the weather") + silence(1.5))
        first = await h.event(TelemetryName.FIRST_REPLY_AUDIO, timeout=30)
        item = first.fields["item"]
        await until(lambda: h.daemon.playback.played_ms(item) >= 2500, timeout=15,
                    what="2.5 s of the reply played")
        h.say(espeak("no wait, stop, I have another question") + silence(1.5))
        await h.event(TelemetryName.BARGE_IN)
        await until(lambda: h.sim.received("conversation.item.truncate"), what="truncate")
        end_ms = h.sim.received("conversation.item.truncate")[0]["audio_end_ms"]
        # What the playback reported is what the truncate says (and what the speaker got:
        # test_daemon checks that against the speaker's output).
        stopped = h.entries(TelemetryName.PLAYBACK_STOPPED)[-1]
        assert stopped.fields["item"] == item and abs(stopped.fields["played_ms"] - end_ms) <= 1
        await h.event(TelemetryName.REPLY_DONE, count=2, timeout=25)

        stamps = [e for e in h.sim.sent("response.audio_timestamp.delta")
                  if e["item_id"] == item]
        assert stamps, "the simulator sent no word timestamps for the Azure voice"
        played = [s for s in stamps if s["audio_offset_ms"] + s["audio_duration_ms"] <= end_ms]
        unplayed = stamps[len(played):]
        assert played and unplayed, (end_ms, stamps)
        entry = next(e for e in h.daemon.link.protocol.context.entries if e.item_id == item)
        expected = cut_at_words(LONG_REPLY, [s["text"] for s in played])
        print(f"truncated at {end_ms} ms; kept {entry.text!r}; the next word "
              f"{unplayed[0]['text']!r} ran {unplayed[0]['audio_offset_ms']}–"
              f"{unplayed[0]['audio_offset_ms'] + unplayed[0]['audio_duration_ms']} ms")
        assert entry.extra["cut_by"] == "words"
        assert entry.text == expected
        assert entry.text.rstrip(".,").endswith(played[-1]["text"])
        # Every word that had played, and none of the one cut off.
        assert len(entry.text.split()) == len(played)
