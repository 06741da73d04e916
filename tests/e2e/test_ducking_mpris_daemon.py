"""The whole daemon with ``[ducking] backend = "mpris"``: a media player that plays (a small
MPRIS player on a private dbus-daemon) is paused when the wake word starts a turn and
resumed when the conversation is over; one the user had paused stays paused."""

from __future__ import annotations

import pytest
from harness import running, silence, wake_word

from edgevoice.conversation.telemetry import TelemetryName
from support import DBusDaemon, espeak, until

pytestmark = [pytest.mark.timeout(60), pytest.mark.realtime]


async def test_media_players_pause_for_the_conversation_and_resume_after(tmp_path, dbus):
    assert isinstance(dbus, DBusDaemon)
    dbus.player("music", "Playing")
    dbus.player("radio", "Paused")
    async with running(tmp_path, {"turn": [{"say": "Sunny and warm."}]},
                       ducking={"backend": "mpris", "mpris": {"address": dbus.address}},
                       conversation={"follow_up_s": 1.0}) as h:
        assert dbus.status("music") == "Playing"
        h.say(wake_word() + espeak("what's the weather like") + silence(1.5))
        await h.event(TelemetryName.WAKE)
        await until(lambda: dbus.status("music") == "Paused", what="paused")
        await h.event(TelemetryName.IDLE, timeout=30)
        await until(lambda: dbus.status("music") == "Playing", what="resumed")
        assert dbus.status("radio") == "Paused"
