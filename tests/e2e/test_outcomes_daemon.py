"""Reply outcomes, usage and limits, replies the daemon drives and clean buffers: the whole
daemon on the virtual sound card against the simulator (strict), all real."""

from __future__ import annotations

import io
import json
import logging

import pytest
from harness import Harness, nonzero, running, silence, wake_word

from edgevoice.conversation.core import State
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.devkit.demo import Timeline
from edgevoice.service.logs import extra_fields
from edgevoice.service.status import format_status, status_line
from support import espeak, quiet, until

pytestmark = [pytest.mark.timeout(90), pytest.mark.realtime]

FILTERED = {"user": "tell me a story", "say": "Once upon a time there was a story that the "
            "filter did not let me finish, because it went somewhere it should not go.",
            "outcome": "incomplete", "reason": "content_filter",
            "usage": {"input_text_tokens": 120, "input_audio_tokens": 40, "cached_tokens": 64,
                      "output_text_tokens": 20, "output_audio_tokens": 70},
            "rate_limits": [{"name": "tokens", "limit": 120000, "remaining": 119750,
                             "reset_seconds": 1.5}],
            "warning": {"message": "The voice fell back to the default", "code": "voice_fallback"}}
FAILED = {"outcome": "failed",
          "failure": {"type": "server_error", "code": "engine_overloaded",
                      "message": "The engine is overloaded"},
          "transcription_failed": {"message": "Audio could not be transcribed",
                                   "code": "audio_unclear"},
          "usage": {"input_text_tokens": 150, "input_audio_tokens": 30}}


def json_timeline(h: Harness) -> list[dict]:
    """The timeline as ``edgevoice demo --json`` prints it."""
    out = io.StringIO()
    timeline = Timeline(out, as_json=True, t0=h.timeline[0].t)
    for entry in h.timeline:
        timeline.telemetry(entry)
    usage = h.daemon.metrics.status()["usage"]
    timeline.mark("usage", h.timeline[-1].t, **usage["tokens"], replies=usage["replies"])
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_filtered_and_failed_replies_are_said_logged_and_counted(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edgevoice.daemon")
    async with running(tmp_path, {"turn": [FILTERED, FAILED]},
                       conversation={"follow_up_s": 6.0}) as h:
        h.say(wake_word() + espeak("tell me a story") + silence(1.5))
        done = await h.event(TelemetryName.REPLY_DONE, timeout=25)
        # Cut off by the content filter: never taken for a finished reply.
        assert done.fields == {"status": "incomplete", "reason": "content_filter",
                               "input_tokens": 160, "output_tokens": 90,
                               "input_text_tokens": 120, "input_audio_tokens": 40,
                               "output_text_tokens": 20, "output_audio_tokens": 70,
                               "cached_tokens": 64}
        cue = await h.event(TelemetryName.CUE)
        assert cue.fields == {"cue": "filtered", "reason": "content_filter", "then": "earcon"}
        warning = h.entries(TelemetryName.SERVICE_WARNING)[0]
        assert warning.fields == {"reason": "voice_fallback",
                                  "message": "The voice fell back to the default"}
        # The earcon is heard after what was said of the reply, bit for bit.
        await until(lambda: h.daemon.core.state is State.FOLLOW_UP, what="follow-up")
        await quiet(lambda: len(nonzero(h.rig.speaker_pcm())), 0.3, what="the speaker")
        speaker = nonzero(h.rig.speaker_pcm())
        earcon = nonzero(h.daemon.cue_earcons["filtered"])
        reply = h.reply_audio(h.entries(TelemetryName.FIRST_REPLY_AUDIO)[0].fields["item"])
        assert earcon in speaker and speaker.index(earcon) >= len(nonzero(reply)) - 1

        # A follow-up on the warm connection: its buffer is cleared first; the service fails
        # to transcribe it and then fails the reply.
        appended_before = len(h.sim.appended_audio)
        h.say(espeak("and then what happened") + silence(1.5))
        failed = await h.event(TelemetryName.REPLY_DONE, count=2, timeout=25)
        assert failed.fields["status"] == "failed" and failed.fields["reason"] == "server_error"
        assert failed.fields["message"] == "The engine is overloaded"
        assert h.entries(TelemetryName.TRANSCRIPTION_FAILED)[0].fields["reason"] == "audio_unclear"
        cues = [e.fields["cue"] for e in h.entries(TelemetryName.CUE)]
        assert cues == ["filtered", "not_understood", "failed"]
        events = [e["type"] for e in h.sim.connections[0].received_events]
        clear = events.index("input_audio_buffer.clear")
        assert "input_audio_buffer.append" in events[clear + 1:]
        assert len(h.sim.appended_audio) > appended_before
        await until(lambda: h.daemon.core.state is State.FOLLOW_UP, what="follow-up")

        # Usage per turn and since start in the status; the rate limits as sent.
        snap = h.daemon.snapshot()
        assert snap["usage"]["tokens"]["input_tokens"] == 160 + 180
        assert snap["usage"]["tokens"]["output_tokens"] == 90
        assert snap["usage"]["replies"] == {"incomplete": 1, "failed": 1}
        assert [t["tokens"].get("input_tokens") for t in snap["turns"]] == [160, 180]
        assert snap["turns"][0]["outcome"] == "incomplete (content_filter)"
        assert snap["rate_limits"]["limits"][0]["remaining"] == 119750
        text = format_status(snap)
        assert "tokens:      in 340 (audio 70, cached 64) out 90 (audio 70)" in text, text
        assert "rate limits: tokens 119750/120000 remaining" in text, text
        lines = json_timeline(h)

    # One log line per outcome with the reason as its journal field.
    warned = [(r.getMessage().split(" reason=")[0], extra_fields(r).get("EDGEVOICE_REASON"))
              for r in caplog.records if r.levelno == logging.WARNING]
    for line in (("reply done status=incomplete", "content_filter"),
                 ("cue cue=filtered", "content_filter"), ("service warning", "voice_fallback"),
                 ("transcription failed item=", "audio_unclear"),
                 ("reply done status=failed", "server_error")):
        assert any(m.startswith(line[0]) and why == line[1] for m, why in warned), warned
    reply_done = [r for r in caplog.records if r.getMessage().startswith("reply done")]
    assert extra_fields(reply_done[0])["EDGEVOICE_INPUT_TOKENS"] == "160"
    # The demo's JSON lines carry the reason as sent, the cue and the token totals.
    names = [e["event"] for e in lines]
    filtered = lines[names.index("reply done")]
    assert filtered["reason"] == "content_filter" and filtered["output_audio_tokens"] == 70
    assert lines[-1]["event"] == "usage" and lines[-1]["input_tokens"] == 340
    print("\n".join(json.dumps(e) for e in lines if e["event"] in (
        "reply done", "cue", "service warning", "transcription failed", "rate limits",
        "usage")))


@pytest.mark.parametrize("create_response", [True, False])
async def test_replies_come_with_either_create_response_setting(tmp_path, create_response):
    turn_detection = {"create_response": create_response}
    context = {} if create_response else {"command": ["/bin/echo", "The car is in Lyon."]}
    async with running(tmp_path, {"turn": [{"say": "It is sunny in Lyon."}]},
                       session={"turn_detection": turn_detection}, context=context) as h:
        h.say(wake_word() + espeak("what is the weather here") + silence(1.5))
        await h.event(TelemetryName.REPLY_DONE, timeout=25)
        assert h.entries(TelemetryName.ASSISTANT_SAID)[0].fields["text"] == "It is sunny in Lyon."
        asked = h.sim.received("response.create")
        if create_response:  # the service answers the committed turn by itself
            assert asked == [] and not h.entries(TelemetryName.REPLY_REQUESTED)
        else:  # the simulator made none: the daemon asked, once, with the context
            assert [a.get("additional_instructions") for a in asked] == ["The car is in Lyon."]
            events = [e["type"] for e in h.sim.connections[0].received_events]
            assert events.index("response.create") > events.index("input_audio_buffer.append")


async def test_a_spent_budget_answers_the_wake_with_a_cue_and_survives_a_restart(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    script = {"turn": [{"say": "Okay.", "usage": {"input_text_tokens": 400,
                                                   "output_audio_tokens": 200}}]}
    async with running(tmp_path, script, state_dir=state, limits={"tokens_per_hour": 500},
                       conversation={"follow_up_s": 0.0}) as h:
        h.say(wake_word() + espeak("turn on the radio") + silence(1.5))
        await h.event(TelemetryName.REPLY_DONE, timeout=25)
        await until(lambda: h.daemon.core.state is State.IDLE, what="idle")
        assert h.daemon.snapshot()["budget"]["last_hour"] == 600
        appended = len(h.sim.appended_audio)
        h.say(wake_word() + espeak("and the heating") + silence(1.0))
        refused = await h.event(TelemetryName.LIMIT_REACHED, timeout=15)
        assert refused.fields["reason"] == "tokens_per_hour 500 reached (600 in the last hour)"
        assert h.names().count(TelemetryName.WAKE) == 1
        await until(lambda: h.daemon.earcon_count >= 2, what="the limit earcon")
        assert len(h.sim.appended_audio) == appended  # nothing of the request left
        assert h.sim.connection_count == 1
    assert json.loads((state / "usage.json").read_text())["minutes"]
    async with running(tmp_path, script, state_dir=state, limits={"tokens_per_hour": 500}) as h:
        budget = h.daemon.snapshot()["budget"]
        assert budget["last_hour"] == 600 and budget["reached"] is not None
        assert "REACHED: tokens_per_hour 500" in format_status(h.daemon.snapshot())
        assert status_line(h.daemon.snapshot()).startswith("token budget reached")



async def test_a_service_error_instead_of_the_reply_is_said_at_once_with_a_spoken_line(tmp_path):
    script = {"turn": [{"error": {"type": "server_error", "code": "overloaded",
                                  "message": "The server is overloaded"}},
                       {"say": "Second try worked."}]}
    async with running(tmp_path, script, cues={"speak": True},
                       conversation={"follow_up_s": 6.0, "service_timeout_s": 20.0}) as h:
        h.say(wake_word() + espeak("what time is it") + silence(1.5))
        error = await h.event(TelemetryName.SERVICE_ERROR, timeout=25)
        assert error.fields == {"message": "The server is overloaded", "reason": "overloaded",
                                "ends_turn": True}
        cue = await h.event(TelemetryName.CUE)
        assert cue.fields == {"cue": "failed", "reason": "overloaded", "then": "spoken line"}
        # The line is spoken in the service's voice at once (not after service_timeout_s),
        # and costs no script turn: the next question gets the next scripted reply.
        line = "Sorry, something went wrong. Please try again."
        said = await h.event(TelemetryName.ASSISTANT_SAID, timeout=10)
        assert said.fields["text"] == line and said.t - error.t < 5.0
        [create] = h.sim.received("response.create")
        assert create["response"]["pre_generated_assistant_message"]["content"][0]["text"] == line
        await until(lambda: h.daemon.core.state is State.FOLLOW_UP, what="follow-up")
        h.say(espeak("what time is it now") + silence(1.5))
        await h.event(TelemetryName.REPLY_DONE, count=2, timeout=25)
        assert h.entries(TelemetryName.ASSISTANT_SAID)[-1].fields["text"] == "Second try worked."


async def test_an_abandoned_manual_turn_clears_the_service_buffer(tmp_path):
    async with running(tmp_path, {"turn": [{"say": "Unused."}]},
                       session={"turn_detection": {"type": "none"}},
                       conversation={"listen_timeout_s": 2.0}) as h:
        h.say(wake_word() + silence(3.0))  # the wake word, then nothing
        idle = await h.event(TelemetryName.IDLE, timeout=20)
        assert idle.fields["why"] == "no speech after the wake word"
        await until(lambda: h.sim.received("input_audio_buffer.clear"), what="the clear")
        assert h.sim.received("input_audio_buffer.commit") == []
        assert h.sim.received("response.create") == []
