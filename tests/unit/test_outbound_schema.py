"""What the daemon sends, checked against the protocol document rather than against itself.

Every client event type of the wire models is built with every optional field set (across the
examples, every field of every model reachable from a client event), the session is also built
from the default config and the example configs, the replayed context from a real
conversation log, and each event is serialised exactly as the link does (``to_json()``). Each
frame is then compared key by key with the simulator's field tables
(:mod:`edgevoice.devkit.simulator.protocol`), which were written from the protocol reference
and not from the models: every key known, every value of the right JSON type and within its
enumeration. Every value the models' enumerations accept is tried too.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from edgevoice.config import Config, load_config
from edgevoice.devkit.simulator.protocol import CLIENT_EVENTS, check_client_event
from edgevoice.link.context import ConversationLog
from edgevoice.wire import events as ev
from edgevoice.wire.session import (
    AzureCustomVoice,
    AzurePersonalVoice,
    AzureSemanticVad,
    AzureStandardVoice,
    EchoCancellation,
    EndOfUtteranceDetection,
    FunctionTool,
    InputTranscription,
    NoiseReduction,
    OpenAIVoice,
    RequestSession,
    ServerVad,
    ToolChoiceFunction,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
CONFIGS = sorted(p.name for p in EXAMPLES.glob("*.toml") if not p.name.startswith("simulator-script"))

# -- full examples ----------------------------------------------------------------------------

AZURE_OPTIONS: dict[str, Any] = {
    "temperature": 0.7,
    "custom_lexicon_url": "https://example.invalid/lexicon.xml",
    "custom_text_normalization_url": "https://example.invalid/normalization.txt",
    "prefer_locales": ["en-US", "en-GB"],
    "locale": "en-US",
    "style": "cheerful",
    "pitch": "+5%",
    "rate": "1.1",
    "volume": "soft",
}
VOICES = [
    OpenAIVoice(name="coral"),
    AzureStandardVoice(name="en-US-Ava:DragonHDLatestNeural", **AZURE_OPTIONS),
    AzureCustomVoice(name="house-voice", endpoint_id="8f1e6c2a-0000-4000-8000-000000000001",
                     **AZURE_OPTIONS),
    AzurePersonalVoice(name="speaker-profile-1", model="DragonLatestNeural", **AZURE_OPTIONS),
]
EOU = EndOfUtteranceDetection(model="semantic_detection_v1_multilingual", threshold_level="high",
                              timeout_ms=800)
TIMING: dict[str, Any] = {"threshold": 0.6, "prefix_padding_ms": 200, "silence_duration_ms": 400,
                          "create_response": True, "interrupt_response": False,
                          "auto_truncate": True, "end_of_utterance_detection": EOU}
TURN_DETECTIONS = [
    ServerVad(**TIMING),
    AzureSemanticVad(type="azure_semantic_vad", speech_duration_ms=120, remove_filler_words=True,
                     languages=["en"], **TIMING),
    AzureSemanticVad(type="azure_semantic_vad_multilingual", speech_duration_ms=80,
                     remove_filler_words=False, languages=["en", "de", "fr"], **TIMING),
    AzureSemanticVad(type="azure_semantic_vad_en", speech_duration_ms=200,
                     remove_filler_words=True, **TIMING),
]
TOOL = FunctionTool(name="set_light", description="Switch a light.", parameters={
    "type": "object", "properties": {"room": {"type": "string", "enum": ["hall", "kitchen"]}},
    "required": ["room"]})
TOOL_CHOICES: list[Any] = ["auto", "none", "required", ToolChoiceFunction(name="set_light")]


def full_session(voice: Any, turn_detection: Any, tool_choice: Any) -> RequestSession:
    return RequestSession(
        modalities=["text", "audio"],
        instructions="Answer briefly.",
        voice=voice,
        input_audio_format="pcm16",
        input_audio_sampling_rate=16000,
        output_audio_format="pcm16_16000hz",
        turn_detection=turn_detection,
        input_audio_noise_reduction=NoiseReduction(type="far_field"),
        input_audio_echo_cancellation=EchoCancellation(),
        input_audio_transcription=InputTranscription(
            model="azure-speech", language="en-US", phrase_list=["edgevoice", "Jarvis"],
            custom_speech={"en-US": "0d4f0000-0000-4000-8000-000000000002"},
            prompt="Names of rooms."),
        tools=[TOOL],
        tool_choice=tool_choice,
        temperature=0.9,
        max_response_output_tokens=512,
        output_audio_timestamp_types=["word"],
    )


AUDIO = base64.b64encode(b"\x01\x00\xff\xff" * 80).decode("ascii")
ITEMS: list[Any] = [
    ev.SystemMessage(content=[ev.InputTextContent(text="The user is in the kitchen.")],
                     id="item_sys", status="completed"),
    ev.UserMessage(content=[ev.InputTextContent(text="Hello."),
                            ev.InputAudioContent(audio=AUDIO, transcript="Hello again.")],
                   id="item_user", status="incomplete"),
    ev.AssistantMessage(content=[ev.TextContent(text="Hi.")], id="item_asst",
                        status="completed"),
    ev.FunctionCall(name="set_light", call_id="call_1", arguments='{"room":"hall"}',
                    id="item_call", status="completed"),
    ev.FunctionCallOutput(call_id="call_1", output='{"ok":true}', id="item_out"),
    ev.MCPApprovalResponse(approval_request_id="mcp_req_1", approve=True, id="item_mcp"),
]


def full_response(tool_choice: Any) -> ev.ResponseCreateParams:
    return ev.ResponseCreateParams(
        commit=True,
        cancel_previous=False,
        append_input_items=ITEMS,
        input_items=ITEMS,
        modalities=["text", "audio"],
        instructions="Say it in French.",
        voice=VOICES[1],
        output_audio_format="g711_ulaw",
        tools=[TOOL],
        tool_choice=tool_choice,
        temperature=0.7,
        max_output_tokens=200,
        max_response_output_tokens="inf",
        pre_generated_assistant_message=ev.AssistantMessage.from_text("One moment."),
        metadata={"turn": "3"},
        conversation="none",
    )


def replayed_items() -> list[dict[str, Any]]:
    """The link's replay of a conversation with every kind of entry it keeps."""
    log = ConversationLog()
    log.add_system_text("The user is in the kitchen.")
    log.add_user_audio("item_u1", b"\x01\x00" * 160)  # not transcribed: replayed as audio
    log.add_user_audio("item_u2", b"\x01\x00" * 160)
    log.set_user_transcript("item_u2", "Turn on the light.")
    log.add_user_text("And the fan.")
    log.add_assistant_audio("item_a1", 1200.0)
    log.set_assistant_text("item_a1", "One moment, switching it on.")
    log.truncate_assistant("item_a1", 600.0)
    log.add_function_call("call_1", "set_light", '{"room":"kitchen"}', "item_c1")
    log.add_function_output("call_1", '{"ok":true}')
    items = log.replay_items()
    assert {(i["type"], i.get("role")) for i in items} == {
        ("message", "system"), ("message", "user"), ("message", "assistant"),
        ("function_call", None), ("function_call_output", None)}
    return items


def examples() -> list[tuple[str, ev.ClientEvent]]:
    """(name, event) for every client event type, with every optional field set somewhere."""
    out: list[tuple[str, ev.ClientEvent]] = []
    for i, (voice, td) in enumerate(itertools.product(VOICES, TURN_DETECTIONS)):
        session = full_session(voice, td, TOOL_CHOICES[i % len(TOOL_CHOICES)])
        out.append((f"session.update/{voice.type}/{td.type}",
                    ev.SessionUpdate(session=session, event_id=f"evc_s{i}")))
    out += [
        ("input_audio_buffer.append", ev.InputAudioBufferAppend(audio=AUDIO, event_id="evc_a")),
        ("input_audio_buffer.append/pcm", ev.InputAudioBufferAppend.from_pcm(b"\x01\x00" * 320)),
        ("input_audio_buffer.commit", ev.InputAudioBufferCommit(event_id="evc_c")),
        ("input_audio_buffer.clear", ev.InputAudioBufferClear(event_id="evc_x")),
        ("input_audio.turn.start", ev.InputAudioTurnStart(turn_id="turn_1", event_id="evc_t1")),
        ("input_audio.turn.append",
         ev.InputAudioTurnAppend(turn_id="turn_1", audio=AUDIO, event_id="evc_t2")),
        ("input_audio.turn.end", ev.InputAudioTurnEnd(turn_id="turn_1", event_id="evc_t3")),
        ("input_audio.turn.cancel", ev.InputAudioTurnCancel(turn_id="turn_1", event_id="evc_t4")),
        ("input_audio.clear", ev.InputAudioClear(event_id="evc_t5")),
        ("conversation.item.retrieve",
         ev.ConversationItemRetrieve(item_id="item_user", event_id="evc_r")),
        ("conversation.item.truncate",
         ev.ConversationItemTruncate(item_id="item_asst", audio_end_ms=1840, content_index=0,
                                     event_id="evc_tr")),
        ("conversation.item.delete", ev.ConversationItemDelete(item_id="item_out", event_id="evc_d")),
        ("response.cancel", ev.ResponseCancel(response_id="resp_1", event_id="evc_rc")),
        ("response.cancel/bare", ev.ResponseCancel()),
        ("response.create/bare", ev.ResponseCreate()),
        ("session.avatar.connect", ev.SessionAvatarConnect(client_sdp="djA9MA==", event_id="e")),
        ("function call output", ev.ConversationItemCreate.function_call_output(
            "call_1", '{"ok":true}', previous_item_id="item_call", event_id="evc_fo")),
    ]
    for choice in TOOL_CHOICES:
        out.append((f"response.create/{getattr(choice, 'type', choice)}",
                    ev.ResponseCreate(response=full_response(choice),
                                      additional_instructions="Mention the time.",
                                      event_id="evc_rr")))
    for item in ITEMS:
        name = f"conversation.item.create/{item.type}/{getattr(item, 'role', '')}"
        out.append((name, ev.ConversationItemCreate(item=item, previous_item_id="root",
                                                    event_id="evc_i")))
    for n, item in enumerate(replayed_items()):
        # As the link replays its context after a reconnect.
        out.append((f"replay/{n}/{item['type']}",
                    ev.ConversationItemCreate.model_validate({"item": item})))
    return out


EXAMPLE_EVENTS = examples()


def config_sessions() -> list[tuple[str, Config]]:
    configs = [("default", Config())]
    configs += [(name, load_config(EXAMPLES / name)) for name in CONFIGS]
    configs.append(("manual mode, options off", Config.model_validate({"session": {
        "turn_detection": {"type": "none"}, "noise_reduction": "none",
        "echo_cancellation": False, "input_transcription": {"enabled": False}}})))
    for td in ("azure_semantic_vad", "azure_semantic_vad_multilingual"):
        configs.append((td, Config.model_validate({"session": {"turn_detection": {
            "type": td, "speech_duration_ms": 100, "remove_filler_words": True,
            "languages": ["en", "de"],
            "end_of_utterance_detection": {"model": "semantic_detection_v1"}}}})))
    configs.append(("azure voice, g711", Config.model_validate({
        "voice": {"type": "azure-standard", "name": "en-US-AvaNeural", "style": "calm"},
        "session": {"input_audio_format": "g711_alaw", "input_audio_sampling_rate": 8000,
                    "output_audio_format": "g711_alaw", "max_response_output_tokens": 300,
                    "tool_choice": "required"}})))
    configs.append(("agent", Config.model_validate({
        "voicelive": {"auth": "entra", "agent": {"id": "asst_1", "project_name": "home"}}})))
    return configs


CONFIG_SESSIONS = config_sessions()


def frame(event: ev.ClientEvent) -> Any:
    """The event as the service receives it: the link's exact text, decoded."""
    return json.loads(event.to_json())


# -- the same client events on both sides ------------------------------------------------------


def test_the_tables_and_the_models_name_the_same_client_events() -> None:
    assert set(CLIENT_EVENTS) == set(ev.CLIENT_EVENT_TYPES)


def test_the_examples_cover_every_client_event_type() -> None:
    assert {e.type for _, e in EXAMPLE_EVENTS} == set(ev.CLIENT_EVENT_TYPES)


# -- every field, every value -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "event"), EXAMPLE_EVENTS, ids=[n for n, _ in EXAMPLE_EVENTS])
def test_every_example_event_matches_the_protocol(name: str, event: ev.ClientEvent) -> None:
    assert check_client_event(frame(event)) == []


@pytest.mark.parametrize(("name", "cfg"), CONFIG_SESSIONS, ids=[n for n, _ in CONFIG_SESSIONS])
def test_the_session_update_built_from_a_config_matches_the_protocol(name: str,
                                                                     cfg: Config) -> None:
    event = ev.SessionUpdate(session=cfg.request_session(), event_id="evc_1")
    assert check_client_event(frame(event)) == []


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in get_args(annotation):
        yield from _models_in(arg)


def _reachable(roots: list[type[BaseModel]]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = list(roots)
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for info in cls.model_fields.values():
            todo += _models_in(info.annotation)
    return seen


def _walk(value: Any) -> Iterator[BaseModel]:
    if isinstance(value, BaseModel):
        yield value
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name))
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def test_the_examples_set_every_field_of_every_model_a_client_event_can_carry() -> None:
    # Otherwise a field added to a wire model would never reach the comparison above.
    models = _reachable(list(ev.CLIENT_EVENT_TYPES.values()))
    assert {ev.FunctionCallOutput, ev.MCPApprovalResponse, AzurePersonalVoice, ServerVad} <= models
    set_somewhere: dict[type[BaseModel], set[str]] = {cls: set() for cls in models}
    for _, event in EXAMPLE_EVENTS:
        for model in _walk(event):
            set_somewhere[type(model)] |= {n for n in type(model).model_fields
                                           if getattr(model, n) is not None}
    missing = {cls.__name__: sorted(set(cls.model_fields) - fields)
               for cls, fields in set_somewhere.items() if set(cls.model_fields) - fields}
    assert missing == {}


def _literals(annotation: Any) -> tuple[list[Any], bool]:
    """The Literal values in ``annotation`` and whether they sit in a list."""
    origin = get_origin(annotation)
    if origin is Literal:
        return list(get_args(annotation)), False
    if origin is list:
        values, _ = _literals(get_args(annotation)[0])
        return values, True
    if origin in (Union, types.UnionType, typing.Annotated):
        values: list[Any] = []
        in_list = False
        for arg in get_args(annotation):
            found, nested = _literals(arg)
            values += found
            in_list = in_list or nested
        return values, in_list
    return [], False


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], BaseModel]]:
    """Every model inside ``value`` with its path in ``value.model_dump()``."""
    if isinstance(value, BaseModel):
        yield path, value
        for name in type(value).model_fields:
            yield from _paths(getattr(value, name), (*path, name))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def _variants() -> Iterator[tuple[str, ev.ClientEvent]]:
    """Each example with one enumerated field set to each value its model allows."""
    done: set[tuple[type[BaseModel], str, Any]] = set()
    for _, event in EXAMPLE_EVENTS:
        data = event.model_dump(exclude_none=True)  # an unset session field stays unset
        for path, model in _paths(event):
            for name, info in type(model).model_fields.items():
                values, in_list = _literals(info.annotation)
                for value in values:
                    key = (type(model), name, value)
                    if key in done:
                        continue
                    changed = copy.deepcopy(data)
                    target = changed
                    for step in path:
                        target = target[step]
                    target[name] = [value] if in_list else value
                    try:
                        variant = type(event).model_validate(changed)
                    except ValidationError:
                        continue  # the models refuse it in this context: never sent
                    done.add(key)
                    yield f"{type(model).__name__}.{name}={value!r}", variant


VARIANTS = list(_variants())


def test_the_variants_reach_the_enumerations() -> None:
    names = {n.split("=")[0] for n, _ in VARIANTS}
    assert {"RequestSession.output_audio_format", "OpenAIVoice.name", "InputTranscription.model",
            "AzurePersonalVoice.model", "EndOfUtteranceDetection.threshold_level",
            "ResponseCreateParams.modalities", "UserMessage.status"} <= names


@pytest.mark.parametrize(("name", "event"), VARIANTS, ids=[n for n, _ in VARIANTS])
def test_every_enumerated_value_the_models_accept_is_in_the_protocol(
        name: str, event: ev.ClientEvent) -> None:
    assert check_client_event(frame(event)) == []


# -- the comparison can fail ------------------------------------------------------------------


def _rename(data: dict[str, Any], path: list[Any], new: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[new] = target.pop(path[-1])
    return out


@pytest.mark.parametrize(("path", "misspelt", "param"), [
    (["session", "turn_detection", "silence_duration_ms"], "silence_duration",
     "session.turn_detection.silence_duration"),
    (["session", "voice", "style"], "styel", "session.voice.styel"),
    (["session", "input_audio_transcription", "language"], "lang",
     "session.input_audio_transcription.lang"),
    (["session", "tools", 0, "parameters"], "params", "session.tools[0].params"),
    (["session", "turn_detection", "end_of_utterance_detection", "timeout_ms"], "timeout",
     "session.turn_detection.end_of_utterance_detection.timeout"),
    (["session", "max_response_output_tokens"], "max_output_tokens",
     "session.max_output_tokens"),
    (["event_id"], "eventid", "eventid"),
])
def test_a_misspelt_session_field_is_caught(path: list[Any], misspelt: str, param: str) -> None:
    good = frame(next(e for n, e in EXAMPLE_EVENTS
                      if n == "session.update/azure-standard/server_vad"))
    assert check_client_event(good) == []
    problems = check_client_event(_rename(good, path, misspelt))
    assert [(p.param, p.code) for p in problems if p.code == "unknown_parameter"] == [
        (param, "unknown_parameter")]


def test_misspelt_fields_of_items_and_responses_are_caught() -> None:
    fo = frame(ev.ConversationItemCreate.function_call_output("call_1", "{}"))
    problems = check_client_event(_rename(fo, ["item", "call_id"], "callid"))
    assert {(p.param, p.code) for p in problems} == {
        ("item.callid", "unknown_parameter"), ("item.call_id", "missing_required_parameter")}
    create = frame(next(e for n, e in EXAMPLE_EVENTS if n == "response.create/auto"))
    problems = check_client_event(
        _rename(create, ["response", "input_items", 1, "content", 1, "transcript"], "transcrpt"))
    assert [p.param for p in problems] == ["response.input_items[1].content[1].transcrpt"]
    truncate = frame(ev.ConversationItemTruncate(item_id="item_1", audio_end_ms=5))
    assert [p.param for p in check_client_event(_rename(truncate, ["audio_end_ms"], "end_ms"))
            ] == ["end_ms", "audio_end_ms"]


def test_wrong_types_and_values_are_caught() -> None:
    good = frame(next(e for n, e in EXAMPLE_EVENTS if n == "session.update/openai/server_vad"))
    cases: list[tuple[list[Any], Any, str, str]] = [
        (["session", "temperature"], "0.8", "session.temperature", "invalid_type"),
        (["session", "output_audio_format"], "pcm16-16000hz", "session.output_audio_format",
         "invalid_value"),
        (["session", "voice", "name"], "nova", "session.voice.name", "invalid_value"),
        (["session", "turn_detection", "type"], "semantic", "session.turn_detection.type",
         "invalid_value"),
        (["session", "turn_detection", "create_response"], 1,
         "session.turn_detection.create_response", "invalid_type"),
        (["session", "tools"], None, "session.tools", "invalid_type"),  # not nullable
        (["session", "modalities"], ["text", "speech"], "session.modalities[1]",
         "invalid_value"),
    ]
    for path, value, param, code in cases:
        bad = copy.deepcopy(good)
        target = bad
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        assert [(p.param, p.code) for p in check_client_event(bad)] == [(param, code)], path


# -- what the comparison found ----------------------------------------------------------------


def test_the_english_only_vad_takes_no_languages_in_the_models_and_the_config() -> None:
    with pytest.raises(ValidationError, match="azure_semantic_vad_en"):
        AzureSemanticVad(type="azure_semantic_vad_en", languages=["en"])
    with pytest.raises(ValidationError, match="English only"):
        Config.model_validate({"session": {"turn_detection": {
            "type": "azure_semantic_vad_en", "languages": ["en"]}}})


def test_a_response_cannot_ask_for_avatar_output() -> None:
    with pytest.raises(ValidationError):
        ev.ResponseCreateParams(modalities=["text", "avatar"])
