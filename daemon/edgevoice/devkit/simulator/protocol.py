"""The client side of Voice Live api-version 2025-10-01 as data: the fields of every client
event and of every object inside one, with their JSON types and enumerations.

The tables are written from the protocol reference (§2 client events, §2.1 request items,
§2.2 ``response.create`` parameters, §4 the session object), on purpose *not* derived from the
client's models in :mod:`edgevoice.wire`: they are a second, independent reading of the
document, so a field the client invents or misspells is caught even where its own models
accept it. Where the reference records a conflict, the table accepts every documented form
and says so; what the reference marks as a later version only is left out (unknown here).

:func:`check_client_event` checks one decoded client event against the tables and returns
every :class:`Problem`: an unknown key, a value of the wrong JSON type or outside its
enumeration, a missing required key, an unknown event ``type``. Each names the key path the
service puts in ``error.param`` (``session.turn_detection.threshold``, ``item.content[0].text``).
It never raises, whatever the input. The simulator's strict mode answers the first problem
with an ``error`` event; the unit tests compare what the daemon sends with the same tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

# --------------------------------------------------------------------------------------------
# The vocabulary of the tables


@dataclass(frozen=True)
class Json:
    """A JSON scalar: ``string``, ``integer``, ``number`` (an integer is a number too) or
    ``boolean``; a non-empty ``enum`` lists the only values allowed."""

    type: str
    enum: tuple[str | int, ...] = ()


@dataclass(frozen=True)
class Obj:
    """An object with exactly the fields of :data:`OBJECTS` ``[table]``."""

    table: str


@dataclass(frozen=True)
class MapOf:
    """An object whose keys are the caller's (a JSON Schema, metadata, HTTP headers): only
    the values are checked, against ``values`` (``None``: any JSON value)."""

    values: Spec | None = None


@dataclass(frozen=True)
class ListOf:
    items: Spec


@dataclass(frozen=True)
class Tagged:
    """An object whose shape is chosen by the string at ``key`` (``type``; ``role`` within a
    message): ``cases`` maps each allowed value to an :class:`Obj` or a further :class:`Tagged`.
    The tag keys are part of every case, so the case tables leave them out."""

    key: str
    cases: Mapping[str, Obj | Tagged]


@dataclass(frozen=True)
class AnyOf:
    """One of several shapes (e.g. a voice is a name or a voice object)."""

    options: tuple[Spec, ...]


Spec: TypeAlias = Json | Obj | MapOf | ListOf | Tagged | AnyOf


@dataclass(frozen=True)
class Field:
    spec: Spec
    required: bool = False
    #: ``null`` is a value of its own here (it switches the option off).
    nullable: bool = False


Table: TypeAlias = dict[str, Field]

STRING = Json("string")
INTEGER = Json("integer")
NUMBER = Json("number")
BOOLEAN = Json("boolean")


def enum(*values: str | int) -> Json:
    return Json("string" if all(isinstance(v, str) for v in values) else "integer", values)


def req(spec: Spec) -> Field:
    return Field(spec, required=True)


def opt(spec: Spec) -> Field:
    return Field(spec)


def nullable(spec: Spec) -> Field:
    return Field(spec, nullable=True)


# --------------------------------------------------------------------------------------------
# Shared shapes

# §4.3
OPENAI_VOICES = enum("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse",
                     "marin", "cedar")
VOICE = AnyOf((
    OPENAI_VOICES,
    Tagged("type", {
        "openai": Obj("voice.openai"),
        "azure-standard": Obj("voice.azure-standard"),
        "azure-custom": Obj("voice.azure-custom"),
        "azure-personal": Obj("voice.azure-personal"),
    }),
))
# §4.1 (the REF1001 list; pcm16_22050hz and the like are only seen in live tests)
OUTPUT_AUDIO_FORMAT = enum("pcm16", "pcm16_8000hz", "pcm16_16000hz", "g711_ulaw", "g711_alaw")
# §4.1 / §2.2: 1–4096 or "inf"
MAX_TOKENS = AnyOf((INTEGER, enum("inf")))
# §4.7
TOOL = Tagged("type", {"function": Obj("tool.function"), "mcp": Obj("tool.mcp")})
# §4.4
TURN_DETECTION = Tagged("type", {
    "server_vad": Obj("turn_detection.server_vad"),
    "azure_semantic_vad": Obj("turn_detection.azure_semantic_vad"),
    "azure_semantic_vad_en": Obj("turn_detection.azure_semantic_vad_en"),
    "azure_semantic_vad_multilingual": Obj("turn_detection.azure_semantic_vad_multilingual"),
    "semantic_vad": Obj("turn_detection.semantic_vad"),
})
# §2.1: messages are told apart by role as well
REQUEST_ITEM = Tagged("type", {
    "message": Tagged("role", {
        "system": Obj("item.message.system"),
        "user": Obj("item.message.user"),
        "assistant": Obj("item.message.assistant"),
    }),
    "function_call": Obj("item.function_call"),
    "function_call_output": Obj("item.function_call_output"),
    "mcp_approval_response": Obj("item.mcp_approval_response"),
})
ASSISTANT_MESSAGE = Tagged("type", {
    "message": Tagged("role", {"assistant": Obj("item.message.assistant")}),
})
ITEM_STATUS = enum("completed", "incomplete")

_AZURE_VOICE: Table = {
    "name": req(STRING),
    "temperature": opt(NUMBER),  # 0.0–1.0, HD voices only
    "custom_lexicon_url": opt(STRING),
    "custom_text_normalization_url": opt(STRING),
    "prefer_locales": opt(ListOf(STRING)),
    "locale": opt(STRING),
    "style": opt(STRING),
    "pitch": opt(STRING),
    "rate": opt(STRING),
    "volume": opt(STRING),
}
_VAD_TIMING: Table = {
    "threshold": opt(NUMBER),
    "prefix_padding_ms": opt(INTEGER),
    "silence_duration_ms": opt(INTEGER),
    "speech_duration_ms": opt(INTEGER),
    "end_of_utterance_detection": opt(Obj("end_of_utterance_detection")),
}
_VAD_RESPONSE: Table = {
    "create_response": opt(BOOLEAN),
    "interrupt_response": opt(BOOLEAN),
    "auto_truncate": opt(BOOLEAN),
}

# --------------------------------------------------------------------------------------------
# The objects inside client events (tag keys left out, see Tagged)

OBJECTS: dict[str, Table] = {
    # §4.1, request side: id/object/expires_at are the response's only
    "session": {
        "model": opt(STRING),  # cannot be changed, but may be repeated
        "modalities": opt(ListOf(enum("text", "audio", "animation", "avatar"))),
        "instructions": opt(STRING),
        "voice": opt(VOICE),
        "input_audio_format": opt(enum("pcm16", "g711_ulaw", "g711_alaw")),
        # CONFLICT on the allowed rates (16000/24000 vs 8000/16000/24000): the type only
        "input_audio_sampling_rate": opt(INTEGER),
        "output_audio_format": opt(OUTPUT_AUDIO_FORMAT),
        "turn_detection": nullable(TURN_DETECTION),
        "input_audio_noise_reduction": nullable(Obj("noise_reduction")),
        "input_audio_echo_cancellation": nullable(Obj("echo_cancellation")),
        "input_audio_transcription": nullable(Obj("input_audio_transcription")),
        "tools": opt(ListOf(TOOL)),
        "tool_choice": opt(AnyOf((enum("auto", "none", "required"),
                                  Obj("tool_choice.function")))),
        "temperature": opt(NUMBER),
        "max_response_output_tokens": opt(MAX_TOKENS),
        "animation": opt(Obj("animation")),
        "output_audio_timestamp_types": opt(ListOf(enum("word"))),
        "avatar": opt(Obj("avatar")),
        # listed by REF1001 already, the other "later additions" are not
        "reasoning_effort": opt(enum("none", "minimal", "low", "medium", "high", "xhigh")),
    },
    # §4.3
    "voice.openai": {"name": req(OPENAI_VOICES)},
    "voice.azure-standard": _AZURE_VOICE,
    "voice.azure-custom": {**_AZURE_VOICE, "endpoint_id": req(STRING)},
    # The row abbreviates the shared fields ("lexicon/locale/pitch/rate/volume"); its source
    # [SDK131] gives the personal voice the same optional fields as the others.
    "voice.azure-personal": {
        **_AZURE_VOICE,
        "model": req(enum("DragonLatestNeural", "DragonHDOmniLatestNeural", "MAI-Voice-1",
                          "PhoenixLatestNeural", "PhoenixV2Neural")),
    },
    # §4.4
    "turn_detection.server_vad": {**_VAD_TIMING, **_VAD_RESPONSE},
    "turn_detection.azure_semantic_vad": {
        **_VAD_TIMING,
        "remove_filler_words": opt(BOOLEAN),
        "languages": opt(ListOf(STRING)),
        **_VAD_RESPONSE,
    },
    "turn_detection.azure_semantic_vad_en": {  # no languages: English only
        **_VAD_TIMING,
        "remove_filler_words": opt(BOOLEAN),
        **_VAD_RESPONSE,
    },
    "turn_detection.azure_semantic_vad_multilingual": {
        **_VAD_TIMING,
        "remove_filler_words": opt(BOOLEAN),
        "languages": opt(ListOf(STRING)),
        **_VAD_RESPONSE,
    },
    "turn_detection.semantic_vad": {
        "eagerness": opt(enum("auto", "low", "medium", "high")),
        **_VAD_RESPONSE,
    },
    "end_of_utterance_detection": {
        "model": req(enum("semantic_detection_v1", "semantic_detection_v1_en",
                          "semantic_detection_v1_multilingual")),
        "threshold_level": opt(enum("low", "medium", "high", "default")),
        "timeout_ms": opt(INTEGER),
    },
    # §4.5
    "noise_reduction": {
        "type": req(enum("azure_deep_noise_suppression", "near_field", "far_field")),
    },
    "echo_cancellation": {"type": req(enum("server_echo_cancellation"))},
    # §4.6
    "input_audio_transcription": {
        "model": req(enum("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                          "gpt-4o-transcribe-diarize", "azure-speech", "mai-transcribe-1")),
        "language": opt(STRING),
        "phrase_list": opt(ListOf(STRING)),
        "custom_speech": opt(MapOf(STRING)),  # locale -> custom model id
        "prompt": opt(STRING),
    },
    # §4.7: the flat realtime form, no nested "function" object
    "tool.function": {
        "name": req(STRING),
        "description": opt(STRING),
        "parameters": opt(MapOf()),  # a JSON Schema
    },
    "tool.mcp": {
        "server_label": req(STRING),
        "server_url": req(STRING),
        "allowed_tools": opt(ListOf(STRING)),
        "headers": opt(MapOf(STRING)),
        "authorization": opt(STRING),
        "require_approval": opt(AnyOf((enum("never", "always"), Obj("mcp.require_approval")))),
    },
    "mcp.require_approval": {"never": opt(ListOf(STRING)), "always": opt(ListOf(STRING))},
    "tool_choice.function": {"type": req(enum("function")), "name": req(STRING)},
    # §4.1 / §3.5
    "animation": {
        "model_name": opt(STRING),
        "outputs": opt(ListOf(enum("blendshapes", "viseme_id"))),
    },
    # §4.8
    "avatar": {
        "character": req(STRING),
        "style": opt(STRING),
        "customized": opt(BOOLEAN),
        "ice_servers": opt(ListOf(Obj("avatar.ice_server"))),
        "video": opt(Obj("avatar.video")),
    },
    "avatar.ice_server": {
        "urls": req(ListOf(STRING)),
        "username": opt(STRING),
        "credential": opt(STRING),
    },
    "avatar.video": {
        "bitrate": opt(INTEGER),
        "codec": opt(STRING),
        "crop": opt(Obj("avatar.video.crop")),
        "resolution": opt(Obj("avatar.video.resolution")),
        "background": opt(Obj("avatar.video.background")),
        "gop_size": opt(INTEGER),
    },
    "avatar.video.crop": {"top_left": req(ListOf(INTEGER)), "bottom_right": req(ListOf(INTEGER))},
    "avatar.video.resolution": {"width": req(INTEGER), "height": req(INTEGER)},
    "avatar.video.background": {"color": opt(STRING), "image_url": opt(STRING)},
    # §2.1 request items; any item may carry a client-chosen id
    "item.message.system": {
        "content": req(ListOf(Tagged("type", {"input_text": Obj("content.input_text")}))),
        "id": opt(STRING),
        "status": opt(ITEM_STATUS),
    },
    "item.message.user": {
        "content": req(ListOf(Tagged("type", {
            "input_text": Obj("content.input_text"),
            "input_audio": Obj("content.input_audio"),
        }))),
        "id": opt(STRING),
        "status": opt(ITEM_STATUS),
    },
    "item.message.assistant": {  # text only: assistant audio cannot be created
        "content": req(ListOf(Tagged("type", {"text": Obj("content.text")}))),
        "id": opt(STRING),
        "status": opt(ITEM_STATUS),
    },
    "item.function_call": {
        "name": req(STRING),
        "call_id": req(STRING),
        "arguments": req(STRING),  # JSON text
        "id": opt(STRING),
        "status": opt(ITEM_STATUS),
    },
    "item.function_call_output": {
        "call_id": req(STRING),
        "output": req(STRING),  # a string, never a JSON object
        "id": opt(STRING),
    },
    "item.mcp_approval_response": {
        "approval_request_id": req(STRING),
        "approve": req(BOOLEAN),
        "id": opt(STRING),
    },
    "content.input_text": {"text": req(STRING)},
    "content.input_audio": {"audio": req(STRING), "transcript": opt(STRING)},
    "content.text": {"text": req(STRING)},
    # §2.2
    "response": {
        "commit": opt(BOOLEAN),
        "cancel_previous": opt(BOOLEAN),
        "append_input_items": opt(ListOf(REQUEST_ITEM)),
        "input_items": opt(ListOf(REQUEST_ITEM)),
        "modalities": opt(ListOf(enum("text", "audio", "animation"))),
        "instructions": opt(STRING),
        "voice": opt(VOICE),
        "output_audio_format": opt(OUTPUT_AUDIO_FORMAT),
        "tools": opt(ListOf(TOOL)),
        # CONFLICT: a string (SDK; REF1001 shows a bare function name) or a function object
        "tool_choice": opt(AnyOf((STRING, Obj("tool_choice.function")))),
        "temperature": opt(NUMBER),
        # CONFLICT: SDK/swagger name and REF1001 name; either may be sent
        "max_output_tokens": opt(MAX_TOKENS),
        "max_response_output_tokens": opt(MAX_TOKENS),
        "pre_generated_assistant_message": opt(ASSISTANT_MESSAGE),
        "metadata": opt(MapOf(STRING)),
        "conversation": opt(enum("auto", "none")),  # REF1001 table only
    },
}

# --------------------------------------------------------------------------------------------
# The client events (§2); every one also has "type" and an optional "event_id"

CLIENT_EVENTS: dict[str, Table] = {
    "session.update": {"session": req(Obj("session"))},
    "input_audio_buffer.append": {"audio": req(STRING)},
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "conversation.item.create": {"item": req(REQUEST_ITEM), "previous_item_id": opt(STRING)},
    "conversation.item.retrieve": {"item_id": req(STRING)},
    "conversation.item.truncate": {
        "item_id": req(STRING),
        "content_index": req(INTEGER),
        "audio_end_ms": req(INTEGER),
    },
    "conversation.item.delete": {"item_id": req(STRING)},
    "response.create": {
        "response": opt(Obj("response")),
        "additional_instructions": opt(STRING),
    },
    "response.cancel": {"response_id": opt(STRING)},
    "session.avatar.connect": {"client_sdp": req(STRING)},
    "input_audio.turn.start": {"turn_id": req(STRING)},
    "input_audio.turn.append": {"turn_id": req(STRING), "audio": req(STRING)},
    "input_audio.turn.end": {"turn_id": req(STRING)},
    "input_audio.turn.cancel": {"turn_id": req(STRING)},
    "input_audio.clear": {},
}
EVENT_COMMON: Table = {"event_id": opt(STRING)}

# --------------------------------------------------------------------------------------------
# Checking


@dataclass(frozen=True)
class Problem:
    """One way an event differs from the tables, as the service would report it."""

    param: str  # the key path, e.g. "session.voice.name"
    code: str  # unknown_parameter | invalid_type | invalid_value | missing_required_parameter
    message: str


def check_client_event(event: Any) -> list[Problem]:
    """Every problem of ``event`` (a decoded JSON value): in the order of its keys, missing
    required keys after the keys of their object; [] when it is a known client event whose
    every key and value the tables allow."""
    if not isinstance(event, dict):
        return [Problem("", "invalid_type", "An event must be a JSON object.")]
    kind = event.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_EVENTS:
        if "type" not in event:
            return [_missing("type")]
        return [Problem("type", "invalid_value",
                        f"Invalid value: {_show(kind)}. Unsupported or unknown client event "
                        f"type.")]
    return _fields(event, {**EVENT_COMMON, **CLIENT_EVENTS[kind]}, "", skip=frozenset({"type"}))


def check(value: Any, spec: Spec, path: str) -> list[Problem]:
    """Problems of ``value`` against one spec (``path`` names it in the problems)."""
    if isinstance(spec, Json):
        if not _is(value, spec.type):
            return [_wrong_type(path, _NAMES[spec.type], value)]
        if spec.enum and value not in spec.enum:
            supported = ", ".join(_show(v) for v in spec.enum)
            return [Problem(path, "invalid_value",
                            f"Invalid value: {_show(value)}. Supported values are: {supported}.")]
        return []
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            return [_wrong_type(path, "an array", value)]
        return [p for i, v in enumerate(value) for p in check(v, spec.items, f"{path}[{i}]")]
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            return [_wrong_type(path, "an object", value)]
        if spec.values is None:
            return []
        return [p for k, v in value.items() for p in check(v, spec.values, _join(path, k))]
    if isinstance(spec, AnyOf):
        return _any_of(value, spec, path)
    return _object(value, spec, path, frozenset())


def _object(value: Any, spec: Obj | Tagged, path: str, skip: frozenset[str]) -> list[Problem]:
    if not isinstance(value, dict):
        return [_wrong_type(path, "an object", value)]
    if isinstance(spec, Obj):
        return _fields(value, OBJECTS[spec.table], path, skip)
    where = _join(path, spec.key)
    if spec.key not in value:
        return [_missing(where)]
    tag = value[spec.key]
    if not isinstance(tag, str) or tag not in spec.cases:
        supported = ", ".join(_show(v) for v in spec.cases)
        return [Problem(where, "invalid_value",
                        f"Invalid value: {_show(tag)}. Supported values are: {supported}.")]
    return _object(value, spec.cases[tag], path, skip | {spec.key})


def _fields(value: dict[str, Any], table: Table, path: str,
            skip: frozenset[str]) -> list[Problem]:
    problems: list[Problem] = []
    for key, item in value.items():
        where = _join(path, key)
        if key in skip:
            continue
        known = table.get(key)
        if known is None:
            problems.append(Problem(where, "unknown_parameter", f"Unknown parameter: '{where}'."))
        elif item is None:
            if not known.nullable:
                problems.append(_wrong_type(where, _expected(known.spec), None))
        else:
            problems += check(item, known.spec, where)
    problems += [_missing(_join(path, k)) for k, f in table.items()
                 if f.required and k not in value]
    return problems


def _any_of(value: Any, spec: AnyOf, path: str) -> list[Problem]:
    fitting = [o for o in spec.options if _kind(value) in _kinds(o)]
    if not fitting:
        return [_wrong_type(path, _expected(spec), value)]
    first: list[Problem] | None = None
    for option in fitting:
        problems = check(value, option, path)
        if not problems:
            return []
        first = problems if first is None else first
    return first or []


# JSON kinds: what json.loads gives, with bool apart from int (Python's bool is an int).
def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "unknown"


def _kinds(spec: Spec) -> set[str]:
    if isinstance(spec, Json):
        return {"integer", "number"} if spec.type == "number" else {spec.type}
    if isinstance(spec, ListOf):
        return {"array"}
    if isinstance(spec, AnyOf):
        return set().union(*(_kinds(o) for o in spec.options))
    return {"object"}


def _is(value: Any, json_type: str) -> bool:
    return _kind(value) in _kinds(Json(json_type))


_NAMES = {"string": "a string", "integer": "an integer", "number": "a number",
          "boolean": "a boolean", "array": "an array", "object": "an object", "null": "null",
          "unknown": "an unknown value"}


def _expected(spec: Spec) -> str:
    kinds = _kinds(spec)
    if kinds == {"integer", "number"}:
        return "a number"
    return " or ".join(_NAMES[k] for k in sorted(kinds) if k in _NAMES)


def _wrong_type(path: str, expected: str, value: Any) -> Problem:
    return Problem(path, "invalid_type",
                   f"Invalid type for '{path}': expected {expected}, but got "
                   f"{_NAMES[_kind(value)]} instead.")


def _missing(path: str) -> Problem:
    return Problem(path, "missing_required_parameter", f"Missing required parameter: '{path}'.")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    """A value in a message: short, quoted like the service does."""
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 60 else text[:57] + "..."
