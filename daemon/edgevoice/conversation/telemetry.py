"""The conversation's timeline: typed telemetry entries.

Each step of a turn is one :class:`Telemetry` entry — a :class:`TelemetryName`, a time and a
few details — that the core (and, for what only the devices know, the daemon) emits as it
happens. The same entries feed the log, the demo's timeline and the latency figures of
:mod:`edgevoice.metrics`, so what is measured is what is shown.

Guarantees: the values of :class:`TelemetryName` are the names printed by ``edgevoice demo``
(and its ``--json`` ``event`` keys) and written to the log; a member compares equal to its
value, and formats and serialises as it (a ``StrEnum``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class TelemetryName(enum.StrEnum):
    """What a :class:`Telemetry` entry reports; its ``fields`` are listed per member."""

    # The wake word and the user's speech.
    WAKE = "wake"  # word, score: a turn starts from IDLE or the follow-up window
    WAKE_IGNORED_ECHO = "wake ignored (echo)"  # word: the assistant's own voice, likely
    SPEECH_START_LOCAL = "speech start (local)"  # the upstream VAD gate opened
    SPEECH_START_SERVER = "speech start (server)"  # audio_start_ms
    SPEECH_END_SERVER = "speech end (server)"  # audio_end_ms: the server committed the turn
    END_OF_UTTERANCE_LOCAL = "end of utterance (local)"  # turn_detection "none": committed here
    SPEECH_IGNORED_ECHO = "speech ignored (echo)"  # in the follow-up window
    FOLLOW_UP_SPEECH = "follow-up speech"  # a turn starts without the wake word
    USER_SAID = "user said"  # text: the service's transcript of the user's turn
    # The reply.
    FIRST_REPLY_AUDIO = "first reply audio"  # item: the reply's first audio delta arrived
    FIRST_AUDIO_AT_SPEAKER = "first audio at speaker"  # item, after_delta_ms (the daemon's)
    ASSISTANT_SAID = "assistant said"  # text
    # status, and reason (status_details' reason, else its error's type, else its type, as
    # sent; absent when completed), message (a failed reply's error message), and with a
    # usage block the token counts: input_tokens, output_tokens, input_text_tokens,
    # input_audio_tokens, output_text_tokens, output_audio_tokens, cached_tokens (ints).
    REPLY_DONE = "reply done"
    # cue (failed | filtered | not_understood | limit), reason, then: the user is told a
    # reply failed, was filtered, was not understood, or the token budget is spent.
    CUE = "cue"
    SPOKEN_LINE = "spoken line"  # cue, text: the cue's line is asked for (pre-generated)
    TRANSCRIPTION_FAILED = "transcription failed"  # item, reason, message
    SERVICE_WARNING = "service warning"  # reason, message
    RATE_LIMITS = "rate limits"  # limits: [{name, limit, remaining, reset_seconds}]
    LIMIT_REACHED = "limit reached"  # word, reason: a wake refused, the token budget is spent
    REPLY_REQUESTED = "reply requested"  # the daemon asks for the reply (response.create)
    SPEAKER_PAUSED = "speaker paused"  # voiced_ms: the user may be barging in
    SPEAKER_RESUMED = "speaker resumed"  # it was not a barge-in
    # by: "local speech", "server speech", "wake word", "stop word" or "button"; speech_ms
    # (local speech): from the first frame of the user's speech to the one that decided
    BARGE_IN = "barge-in"
    # Push-to-talk, the privacy mute and the feedback state.
    PUSH_TO_TALK = "push to talk"  # source: a press starts a turn from IDLE or the follow-up
    PUSH_TO_TALK_RELEASED = "push to talk released"  # source, committed (hold mode)
    MUTED = "muted"  # source: no wake word runs and no audio leaves until unmuted
    UNMUTED = "unmuted"  # source
    STATE = "state"  # state: the feedback state (idle, listening, thinking, speaking, muted,
    #   offline, error), emitted by the daemon when it changes
    PLAYBACK_STOPPED = "playback stopped"  # item, played_ms
    TRUNCATE = "truncate"  # item, audio_end_ms: conversation.item.truncate sent
    # Tools.
    TOOL_CALL = "tool call"  # name, call_id (offline also arguments, source): it runs now
    TOOL_OUTPUT = "tool output"  # call_id (offline also ok): its output went back
    CONFIRM_ASKED = "confirmation asked"  # call_id, prompt: the fixed question is spoken
    CONFIRM_LISTENING = "confirmation listening"  # call_id, window_s: it played; the answer?
    CONFIRM_ANSWER = "confirmation answer"  # call_id, text (None: none), why
    # Offline: the conversation is understood on the device.
    OFFLINE = "offline"  # why: the service is unreachable, too slow to connect, or "always"
    OFFLINE_COMMAND = "offline command"  # text, tool, arguments, confidence: recognised
    OFFLINE_NOT_UNDERSTOOD = "offline not understood"  # text, reason, confidence
    LOCAL_REPLY = "local reply"  # text, earcon: said on the device
    # The end of a conversation.
    IDLE = "idle"  # why
    # The link and the devices.
    SESSION_READY = "session ready"  # reconnected
    LINK_DOWN = "link down"  # reason
    TURN_ABANDONED = "turn abandoned"  # reason: the link gave up on the turn
    SERVICE_ERROR = "service error"  # message, reason (the error's code or type), ends_turn
    MICROPHONE_LOST = "microphone lost"  # state, then
    MICROPHONE_BACK = "microphone back"
    SPEAKER_LOST = "speaker lost"  # state, item
    SPEAKER_BACK = "speaker back"


@dataclass(frozen=True)
class Telemetry:
    """A timeline entry: what happened, when (the time of the input that produced it, on the
    caller's clock), with details (the demo prints these)."""

    name: TelemetryName
    t: float
    fields: dict[str, Any] = field(default_factory=dict)
