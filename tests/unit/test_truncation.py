"""Where a barge-in cuts the stored copy of a reply: at the last word that finished playing
(word timestamps), else at the estimate; through the link's protocol object with exact
frames, and on the conversation log itself."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from edgevoice.config import Config, VoiceLiveConfig
from edgevoice.link.context import ConversationLog, cut_at_words, estimate_cut, played_words
from edgevoice.link.protocol import VoiceLiveProtocol
from edgevoice.wire import events as ev

TEXT = "Sunny and warm, then rain."
# (offset ms, duration ms, word): 60 ms gaps, as the simulator speaks them.
WORDS = [(0, 400, "Sunny"), (460, 200, "and"), (720, 380, "warm"), (1160, 300, "then"),
         (1520, 350, "rain")]


def stamped(log: ConversationLog, item: str = "item_a") -> None:
    log.add_assistant_audio(item, 1900.0)
    for offset, duration, word in WORDS:
        log.add_assistant_word(item, offset, duration, word)


@pytest.mark.parametrize(("end_ms", "kept"), [
    (0, ""), (399, ""), (400, "Sunny"), (700, "Sunny and"), (1099, "Sunny and"),
    (1100, "Sunny and warm,"), (1500, "Sunny and warm, then"), (1870, TEXT), (5000, TEXT)])
def test_the_cut_ends_after_the_last_word_that_finished_playing(end_ms: int, kept: str) -> None:
    log = ConversationLog()
    stamped(log)
    log.set_assistant_text("item_a", TEXT)
    log.truncate_assistant("item_a", end_ms)
    entry = log.entries[0]
    assert entry.text == kept and entry.extra["cut_by"] == "words"


def test_a_transcript_after_the_truncation_is_cut_at_the_words_too() -> None:
    """The barge-in comes mid-reply, before the transcript is done: the played words are
    kept at once, and the transcript that follows (whole or cut by the service) is cut to
    the same words, with its own spelling and punctuation."""
    log = ConversationLog()
    stamped(log)
    log.truncate_assistant("item_a", 1200.0)
    assert log.entries[0].text == "Sunny and warm"
    log.set_assistant_text("item_a", TEXT)
    assert log.entries[0].text == "Sunny and warm,"
    log.set_assistant_text("item_a", "Sunny")  # shorter than what was heard: not taken
    assert log.entries[0].text == "Sunny and warm,"
    assert log.replay_items()[0]["content"] == [{"type": "text", "text": "Sunny and warm,"}]


def test_without_timestamps_the_estimate_is_kept() -> None:
    log = ConversationLog()
    log.add_assistant_audio("item_a", 2000.0)
    log.set_assistant_text("item_a", "one two three four five six seven eight")
    log.truncate_assistant("item_a", 1000.0)
    assert log.entries[0].text == "one two three four"
    assert log.entries[0].extra["cut_by"] == "estimate"
    log.set_assistant_text("item_a", "one two three four five six seven eight")
    assert log.entries[0].text == "one two three four"  # the cut made at the truncation stays
    # A transcript that only comes after the truncation is estimated then.
    log.add_assistant_audio("item_b", 2000.0)
    log.truncate_assistant("item_b", 500.0)
    log.set_assistant_text("item_b", "one two three four five six seven eight")
    assert log.entries[1].text == "one two"


def test_timestamps_that_do_not_match_the_text_keep_the_words_heard() -> None:
    """"21" in the transcript, "twenty one" in the timestamps: what was heard is kept as
    the timestamps spell it, not estimated."""
    log = ConversationLog()
    log.add_assistant_audio("item_a", 2000.0)
    for i, word in enumerate(["It", "is", "twenty", "one", "degrees"]):
        log.add_assistant_word("item_a", 300 * i, 250, word)
    log.set_assistant_text("item_a", "It is 21 degrees.")
    log.truncate_assistant("item_a", 1150.0)  # "one" ran 900–1150 ms
    assert log.entries[0].extra["cut_by"] == "words"
    assert log.entries[0].text == "It is twenty one"
    log.truncate_assistant("item_a", 400.0)  # a text that holds the words: cut in it
    assert log.entries[0].text == "It"


def test_word_timestamps_are_bounded_and_a_cut_beyond_them_is_estimated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevoice.link import context
    monkeypatch.setattr(context, "MAX_WORDS", 2)
    log = ConversationLog()
    stamped(log)
    log.set_assistant_text("item_a", TEXT)
    assert len(log.entries[0].words) == 2
    log.truncate_assistant("item_a", 600.0)  # within the words kept: exact
    assert log.entries[0].text == "Sunny" and log.entries[0].extra["cut_by"] == "words"
    stamped(log, "item_b")
    log.set_assistant_text("item_b", TEXT)
    log.truncate_assistant("item_b", 1500.0)  # beyond them: the estimate
    assert log.entries[1].extra["cut_by"] == "estimate"


def test_helpers() -> None:
    assert played_words([(0, 100, "a"), (100, 100, "b")], 199) == 1
    assert cut_at_words("This is it, really.", ["this", "is", "it"]) == "This is it,"
    assert cut_at_words("This is it.", ["is"]) == "This is"  # not inside "This"
    assert cut_at_words("abc", []) == "" and cut_at_words("abc", ["x"]) is None
    assert estimate_cut("abc def", 10, 0) == "abc def"


# ------------------------------------------------------------------ through the protocol


def frame(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def test_the_protocol_keeps_timestamps_and_a_truncate_cuts_the_replay_at_a_word() -> None:
    session = Config.model_validate(
        {"voice": {"type": "azure-standard", "name": "en-US-AvaNeural"}}).request_session()
    assert session.wire()["output_audio_timestamp_types"] == ["word"]
    p = VoiceLiveProtocol(VoiceLiveConfig(), session)
    p.connection_opened()
    p.receive_text(frame("session.created", session={"id": "s"}), 0.0)
    p.receive_text(frame("session.updated", session={"id": "s"}), 0.0)
    ids = {"response_id": "resp_1", "item_id": "item_a", "output_index": 0,
           "content_index": 0}
    p.receive_text(frame("response.created", response={"id": "resp_1",
                                                       "status": "in_progress"}), 0.1)
    pcm = bytes(2 * 24000 * 19 // 10)  # 1.9 s of 24 kHz PCM16
    p.receive_text(frame("response.audio.delta", **ids,
                         delta=base64.b64encode(pcm).decode()), 0.2)
    for offset, duration, word in WORDS:
        p.receive_text(frame("response.audio_timestamp.delta", **ids, audio_offset_ms=offset,
                             audio_duration_ms=duration, text=word, timestamp_type="word"), 0.2)
    delivered = p.events_received()
    assert sum(isinstance(e, ev.ResponseAudioTimestampDelta) for e in delivered) == len(WORDS)
    p.send(ev.ConversationItemTruncate(item_id="item_a", audio_end_ms=1300), 0.5)
    p.receive_text(frame("response.audio_transcript.done", **ids, transcript=TEXT), 0.6)
    p.receive_text(frame("response.done", response={"id": "resp_1", "status": "cancelled"}),
                   0.7)
    p.connection_closed(1.0)
    p.connection_opened()
    p.receive_text(frame("session.created", session={"id": "s2"}), 1.1)
    p.receive_text(frame("session.updated", session={"id": "s2"}), 1.1)
    replay = [json.loads(o.text) for o in p.data_to_send()]
    items = [f["item"] for f in replay if f["type"] == "conversation.item.create"]
    assert items == [{"type": "message", "role": "assistant",
                      "content": [{"type": "text", "text": "Sunny and warm,"}]}]


def test_word_timestamps_config() -> None:
    azure = {"type": "azure-standard", "name": "en-US-AvaNeural"}
    assert Config.model_validate({"voice": azure}).word_timestamps()
    off = Config.model_validate({"voice": azure,
                                 "session": {"output_audio_timestamp_types": []}})
    assert not off.word_timestamps()
    assert "output_audio_timestamp_types" not in off.request_session().wire()
    assert not Config().word_timestamps()  # OpenAI voices have none
    assert "output_audio_timestamp_types" not in Config().request_session().wire()
