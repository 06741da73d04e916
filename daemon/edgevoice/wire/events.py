"""Typed Voice Live events (api-version 2025-10-01), parsed once at the connection boundary.

Server events (service → daemon) are lenient pydantic models: unknown extra fields are kept
(the service adds fields over time), enumerations the service may extend (statuses, reasons,
error types) are plain ``str``, and only the fields the daemon relies on (ids, payloads, VAD
timings) are required. :func:`parse_server_event` turns one WebSocket frame into exactly one of:

* an instance of the class registered for its ``type`` in :data:`SERVER_EVENT_TYPES`;
* an :class:`UnknownServerEvent` when the ``type`` is not one we know (log it, ignore it);
* a raised :class:`MalformedEvent` for anything else (not JSON, not an object, no string
  ``type``, a known type with missing or wrongly typed fields).

It never raises anything but :class:`MalformedEvent`. Validation is pydantic's lax mode (a
tolerant reader): ``820``, ``820.0`` and ``"820"`` are all the integer 820, but ``"abc"`` for
a number or ``5`` for a string is malformed.

Client events (daemon → service) are strict models (unknown fields and type coercions are
errors, like the session config of :mod:`edgevoice.wire.session`); ``to_json()`` gives
the exact wire text. Class names are the CamelCase of the wire ``type`` (``response.audio.delta``
→ :class:`ResponseAudioDelta`), except ``error`` → :class:`ErrorEvent` and ``warning`` →
:class:`WarningEvent`, which would otherwise shadow builtins.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)

from edgevoice.wire.session import (
    FunctionTool,
    OutputAudioFormat,
    RequestSession,
    Strict,
    ToolChoiceFunction,
    Voice,
)

# The service accepts at most 15 MiB of audio per input_audio_buffer.append (protocol doc §2).
MAX_APPEND_BYTES = 15 * 1024 * 1024

_SHORT = 80  # longest value quoted in an error message

_M = TypeVar("_M", bound=BaseModel)


class MalformedEvent(ValueError):
    """A frame that cannot be turned into an event.

    The message is one short line naming the event type (when known), the field path and the
    reason; quoted values are cut to ~80 characters, so base64 audio never reaches a log.
    The parts are also attributes: ``event_type`` and ``path`` (``None`` when unknown) and
    ``reason``. Raised ``from None``: no chained pydantic error carries the frame into logs.
    """

    def __init__(
        self, reason: str, *, event_type: str | None = None, path: str | None = None
    ) -> None:
        self.event_type = event_type
        self.path = path
        self.reason = reason
        where = f"{event_type!r} event" if event_type is not None else "event"
        if path:
            where += f", field {path}"
        super().__init__(_one_line(f"malformed {where}: {reason}", 300))


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    """A log-safe rendering of an offending value: scalars quoted and cut, containers named."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    if len(text) > _SHORT:
        size = f" ({len(value)} chars)" if isinstance(value, str) else ""
        text = text[: _SHORT - 20] + "…" + size
    return _one_line(text, _SHORT + 20)


# ---------------------------------------------------------------------------------------------
# Server side: nested objects
# ---------------------------------------------------------------------------------------------


class Lenient(BaseModel):
    """Base of every server-side model: extra fields kept, instances immutable."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _tagger(known: Iterable[str]) -> Callable[[Any], str]:
    """A discriminator that maps unknown ``type`` values to the ``"unknown"`` fallback member.

    Never raises: it sees raw input, which may be any JSON value.
    """
    tags = frozenset(known)

    def tag(value: Any) -> str:
        t = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return t if isinstance(t, str) and t in tags else "unknown"

    return tag


class ErrorDetails(Lenient):
    """``error`` of the ``error`` event and of a failed transcription."""

    message: str
    type: str | None = None  # e.g. "invalid_request_error", "server_error"; open-ended
    code: str | int | None = None  # documented as a string; a numeric code must not lose the error
    param: str | None = None
    event_id: str | None = None  # the client event that caused it


class WarningDetails(Lenient):
    message: str
    code: str | None = None
    param: str | None = None


class RateLimit(Lenient):
    name: str | None = None
    limit: int | float | None = None
    remaining: int | float | None = None
    reset_seconds: float | None = None


class LogProb(Lenient):
    token: str | None = None
    logprob: float | None = None
    bytes: list[int] | None = None


# Content parts of response-side message items (and the `part` of content_part events).
class ResponseInputTextPart(Lenient):
    type: Literal["input_text"] = "input_text"
    text: str | None = None


class ResponseInputAudioPart(Lenient):
    type: Literal["input_audio"] = "input_audio"
    audio: str | None = Field(default=None, repr=False)
    transcript: str | None = None


class ResponseTextPart(Lenient):
    type: Literal["text"] = "text"
    text: str | None = None


class ResponseAudioPart(Lenient):
    type: Literal["audio"] = "audio"
    transcript: str | None = None


class UnknownContentPart(Lenient):
    """A content part of a type this module does not know (e.g. a later ``input_image``)."""

    type: str


ResponseContentPart = Annotated[
    Annotated[ResponseInputTextPart, Tag("input_text")]
    | Annotated[ResponseInputAudioPart, Tag("input_audio")]
    | Annotated[ResponseTextPart, Tag("text")]
    | Annotated[ResponseAudioPart, Tag("audio")]
    | Annotated[UnknownContentPart, Tag("unknown")],
    Discriminator(_tagger(["input_text", "input_audio", "text", "audio"])),
]


# Conversation items as the service reports them (object "realtime.item").
class _ResponseItemBase(Lenient):
    id: str | None = None
    object: str | None = None


class ResponseMessageItem(_ResponseItemBase):
    type: Literal["message"] = "message"
    role: str  # system | user | assistant
    status: str | None = None  # in_progress | completed | incomplete
    content: list[ResponseContentPart] = Field(default_factory=list)


class ResponseFunctionCallItem(_ResponseItemBase):
    type: Literal["function_call"] = "function_call"
    name: str
    call_id: str
    arguments: str  # JSON text; "" while the call is still streaming
    status: str | None = None


class ResponseFunctionCallOutputItem(_ResponseItemBase):
    type: Literal["function_call_output"] = "function_call_output"
    call_id: str
    output: str


class McpToolInfo(Lenient):
    name: str
    description: str | None = None
    input_schema: Any = None
    annotations: Any = None


class ResponseMcpListToolsItem(_ResponseItemBase):
    type: Literal["mcp_list_tools"] = "mcp_list_tools"
    server_label: str
    tools: list[McpToolInfo] = Field(default_factory=list)


class ResponseMcpCallItem(_ResponseItemBase):
    type: Literal["mcp_call"] = "mcp_call"
    server_label: str
    name: str
    arguments: str = ""
    approval_request_id: str | None = None
    output: str | None = None
    error: Any = None


class ResponseMcpApprovalRequestItem(_ResponseItemBase):
    type: Literal["mcp_approval_request"] = "mcp_approval_request"
    server_label: str
    name: str
    arguments: str | None = None


class ResponseMcpApprovalResponseItem(_ResponseItemBase):
    type: Literal["mcp_approval_response"] = "mcp_approval_response"
    approval_request_id: str
    approve: bool
    reason: str | None = None


class UnknownResponseItem(_ResponseItemBase):
    """An item of a type this module does not know (e.g. a later ``web_search_call``)."""

    type: str


ResponseItem = Annotated[
    Annotated[ResponseMessageItem, Tag("message")]
    | Annotated[ResponseFunctionCallItem, Tag("function_call")]
    | Annotated[ResponseFunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ResponseMcpListToolsItem, Tag("mcp_list_tools")]
    | Annotated[ResponseMcpCallItem, Tag("mcp_call")]
    | Annotated[ResponseMcpApprovalRequestItem, Tag("mcp_approval_request")]
    | Annotated[ResponseMcpApprovalResponseItem, Tag("mcp_approval_response")]
    | Annotated[UnknownResponseItem, Tag("unknown")],
    Discriminator(
        _tagger(
            [
                "message",
                "function_call",
                "function_call_output",
                "mcp_list_tools",
                "mcp_call",
                "mcp_approval_request",
                "mcp_approval_response",
            ]
        )
    ),
]


class ResponseError(Lenient):
    """``status_details.error`` of a failed response; every field optional so that an odd
    failure report never makes the (essential) ``response.done`` unparseable."""

    type: str | None = None
    code: str | None = None
    message: str | None = None


class ResponseStatusDetails(Lenient):
    type: str  # cancelled | incomplete | failed
    reason: str | None = None  # turn_detected | client_cancelled | max_output_tokens | ...
    error: ResponseError | None = None


class CachedTokenDetails(Lenient):
    text_tokens: int | None = None
    audio_tokens: int | None = None
    image_tokens: int | None = None


class InputTokenDetails(Lenient):
    cached_tokens: int | None = None
    text_tokens: int | None = None
    audio_tokens: int | None = None
    image_tokens: int | None = None
    cached_tokens_details: CachedTokenDetails | None = None


class OutputTokenDetails(Lenient):
    text_tokens: int | None = None
    audio_tokens: int | None = None
    reasoning_tokens: int | None = None


class Usage(Lenient):
    total_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_token_details: InputTokenDetails | None = None
    output_token_details: OutputTokenDetails | None = None


class ResponseVoice(Lenient):
    type: str | None = None
    name: str | None = None


class Response(Lenient):
    """The response object of ``response.created`` / ``response.done``."""

    id: str
    object: str | None = None
    # in_progress | completed | cancelled | failed | incomplete; the reference also spells
    # "canceled", so compare with RESPONSE_CANCELLED_STATUSES rather than one literal.
    status: str
    status_details: ResponseStatusDetails | None = None
    output: list[ResponseItem] = Field(default_factory=list)
    usage: Usage | None = None
    conversation_id: str | None = None
    voice: str | ResponseVoice | None = None
    modalities: list[str] | None = None
    output_audio_format: str | None = None
    temperature: float | None = None
    max_output_tokens: int | str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def cancelled(self) -> bool:
        """True for either spelling of the cancelled status."""
        return self.status in RESPONSE_CANCELLED_STATUSES


RESPONSE_CANCELLED_STATUSES = frozenset({"cancelled", "canceled"})


# The session as the service echoes it: everything optional, shapes loose, extras kept, so
# that a surprising echo never makes session.created/updated (which gate the session) unusable.
class ResponseTurnDetection(Lenient):
    type: str | None = None
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    auto_truncate: bool | None = None


class ResponseTypedOption(Lenient):
    """``input_audio_noise_reduction`` / ``input_audio_echo_cancellation``."""

    type: str | None = None


class ResponseTranscription(Lenient):
    model: str | None = None
    language: str | None = None


class ResponseTool(Lenient):
    type: str | None = None
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ResponseSession(Lenient):
    """``session`` of ``session.created`` / ``session.updated``: the effective configuration."""

    id: str | None = None
    object: str | None = None
    model: str | None = None
    expires_at: int | None = None  # unix seconds
    modalities: list[str] | None = None
    instructions: str | None = None
    voice: str | ResponseVoice | None = None
    input_audio_format: str | None = None
    input_audio_sampling_rate: int | None = None
    output_audio_format: str | None = None
    turn_detection: ResponseTurnDetection | None = None
    input_audio_noise_reduction: ResponseTypedOption | None = None
    input_audio_echo_cancellation: ResponseTypedOption | None = None
    input_audio_transcription: ResponseTranscription | None = None
    tools: list[ResponseTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    max_response_output_tokens: int | str | None = None
    output_audio_timestamp_types: list[str] | None = None
    animation: dict[str, Any] | None = None
    avatar: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------
# Server events
# ---------------------------------------------------------------------------------------------


class ServerEvent(Lenient):
    """Base of every server event. ``event_id`` is server-generated."""

    type: str
    event_id: str | None = None


class UnknownServerEvent(ServerEvent):
    """An event whose ``type`` this module does not know; ``raw`` is the whole frame.

    Never produced for a known type (a known type that fails validation is a
    :class:`MalformedEvent`)."""

    raw: dict[str, Any] = Field(repr=False)


# 3.1 Session and errors


class SessionCreated(ServerEvent):
    """First event after the socket opens, before any client message."""

    type: Literal["session.created"] = "session.created"
    session: ResponseSession


class SessionUpdated(ServerEvent):
    """Reply to ``session.update``: the full effective configuration."""

    type: Literal["session.updated"] = "session.updated"
    session: ResponseSession


class ErrorEvent(ServerEvent):
    """``error``: usually recoverable; the socket stays open."""

    type: Literal["error"] = "error"
    error: ErrorDetails


class WarningEvent(ServerEvent):
    type: Literal["warning"] = "warning"
    warning: WarningDetails


class RateLimitsUpdated(ServerEvent):
    type: Literal["rate_limits.updated"] = "rate_limits.updated"
    rate_limits: list[RateLimit] = Field(default_factory=list)


class SessionAvatarConnecting(ServerEvent):
    type: Literal["session.avatar.connecting"] = "session.avatar.connecting"
    server_sdp: str


# 3.2 Input audio buffer (VAD)


class InputAudioBufferSpeechStarted(ServerEvent):
    """VAD heard speech (barge-in trigger). ``audio_start_ms`` is on the input timeline."""

    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class InputAudioBufferSpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class InputAudioBufferCommitted(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class InputAudioBufferCleared(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


# 3.3 Conversation items


class ConversationItemCreated(ServerEvent):
    type: Literal["conversation.item.created"] = "conversation.item.created"
    item: ResponseItem
    previous_item_id: str | None = None


class ConversationItemRetrieved(ServerEvent):
    type: Literal["conversation.item.retrieved"] = "conversation.item.retrieved"
    item: ResponseItem


class ConversationItemTruncated(ServerEvent):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    audio_end_ms: int
    content_index: int | None = None


class ConversationItemDeleted(ServerEvent):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class ConversationItemInputAudioTranscriptionDelta(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int | None = None
    delta: str | None = None
    logprobs: list[LogProb] | None = None


class ConversationItemInputAudioTranscriptionCompleted(ServerEvent):
    """The user's words; asynchronous, may come before or after the response events."""

    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    transcript: str
    content_index: int | None = None
    logprobs: list[LogProb] | None = None
    phrases: list[Any] | None = None


class ConversationItemInputAudioTranscriptionFailed(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    error: ErrorDetails
    content_index: int | None = None


# 3.4 Response lifecycle


class ResponseCreated(ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: Response


class ResponseDone(ServerEvent):
    """Always the last event of a response, whatever its final status."""

    type: Literal["response.done"] = "response.done"
    response: Response


class ResponseOutputItemAdded(ServerEvent):
    type: Literal["response.output_item.added"] = "response.output_item.added"
    response_id: str
    item: ResponseItem
    output_index: int | None = None


class ResponseOutputItemDone(ServerEvent):
    type: Literal["response.output_item.done"] = "response.output_item.done"
    response_id: str
    item: ResponseItem
    output_index: int | None = None


class _ContentEvent(ServerEvent):
    """Fields shared by the per-content-part streams of a response."""

    response_id: str
    item_id: str
    output_index: int | None = None
    content_index: int | None = None


class ResponseContentPartAdded(_ContentEvent):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    part: ResponseContentPart


class ResponseContentPartDone(_ContentEvent):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    part: ResponseContentPart


class ResponseTextDelta(_ContentEvent):
    type: Literal["response.text.delta"] = "response.text.delta"
    delta: str


class ResponseTextDone(_ContentEvent):
    type: Literal["response.text.done"] = "response.text.done"
    text: str


class ResponseAudioTranscriptDelta(_ContentEvent):
    type: Literal["response.audio_transcript.delta"] = "response.audio_transcript.delta"
    delta: str


class ResponseAudioTranscriptDone(_ContentEvent):
    type: Literal["response.audio_transcript.done"] = "response.audio_transcript.done"
    transcript: str


class ResponseAudioDelta(_ContentEvent):
    """One chunk of reply audio, base64 in the session's ``output_audio_format``.

    ``delta`` is kept out of ``repr`` so logging an event never dumps audio."""

    type: Literal["response.audio.delta"] = "response.audio.delta"
    delta: str = Field(repr=False)

    def audio_bytes(self) -> bytes:
        """The decoded audio. Raises :class:`MalformedEvent` if ``delta`` is not valid
        base64 (the message gives only its length, never the payload)."""
        return _b64decode(self.delta, event_type=self.type, path="delta")


class ResponseAudioDone(_ContentEvent):
    type: Literal["response.audio.done"] = "response.audio.done"


class ResponseFunctionCallArgumentsDelta(ServerEvent):
    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    response_id: str
    item_id: str
    call_id: str
    delta: str
    output_index: int | None = None


class ResponseFunctionCallArgumentsDone(ServerEvent):
    """The complete call: ``arguments`` is JSON text (not yet parsed)."""

    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str
    output_index: int | None = None


# 3.5 Azure-only output streams


class ResponseAudioTimestampDelta(_ContentEvent):
    type: Literal["response.audio_timestamp.delta"] = "response.audio_timestamp.delta"
    audio_offset_ms: int
    audio_duration_ms: int
    text: str
    timestamp_type: str | None = None  # "word"


class ResponseAudioTimestampDone(_ContentEvent):
    type: Literal["response.audio_timestamp.done"] = "response.audio_timestamp.done"


class ResponseAnimationVisemeDelta(_ContentEvent):
    type: Literal["response.animation_viseme.delta"] = "response.animation_viseme.delta"
    audio_offset_ms: int
    viseme_id: int


class ResponseAnimationVisemeDone(_ContentEvent):
    type: Literal["response.animation_viseme.done"] = "response.animation_viseme.done"


class ResponseAnimationBlendshapesDelta(_ContentEvent):
    type: Literal["response.animation_blendshapes.delta"] = "response.animation_blendshapes.delta"
    frame_index: int
    # A batch of frames (each a list of weights) or, per the SDK, an encoded string.
    frames: list[list[float]] | str = Field(repr=False)


class ResponseAnimationBlendshapesDone(ServerEvent):
    type: Literal["response.animation_blendshapes.done"] = "response.animation_blendshapes.done"
    response_id: str
    item_id: str
    output_index: int | None = None


# 3.6 MCP (documented for 2025-10-01 in the API reference, not in its swagger enum)


class McpListToolsInProgress(ServerEvent):
    type: Literal["mcp_list_tools.in_progress"] = "mcp_list_tools.in_progress"
    item_id: str


class McpListToolsCompleted(ServerEvent):
    type: Literal["mcp_list_tools.completed"] = "mcp_list_tools.completed"
    item_id: str


class McpListToolsFailed(ServerEvent):
    type: Literal["mcp_list_tools.failed"] = "mcp_list_tools.failed"
    item_id: str


class ResponseMcpCallArgumentsDelta(ServerEvent):
    type: Literal["response.mcp_call_arguments.delta"] = "response.mcp_call_arguments.delta"
    response_id: str
    item_id: str
    delta: str
    output_index: int | None = None


class ResponseMcpCallArgumentsDone(ServerEvent):
    type: Literal["response.mcp_call_arguments.done"] = "response.mcp_call_arguments.done"
    response_id: str
    item_id: str
    arguments: str | None = None
    output_index: int | None = None


class ResponseMcpCallInProgress(ServerEvent):
    type: Literal["response.mcp_call.in_progress"] = "response.mcp_call.in_progress"
    item_id: str
    output_index: int | None = None


class ResponseMcpCallCompleted(ServerEvent):
    type: Literal["response.mcp_call.completed"] = "response.mcp_call.completed"
    item_id: str
    output_index: int | None = None


class ResponseMcpCallFailed(ServerEvent):
    type: Literal["response.mcp_call.failed"] = "response.mcp_call.failed"
    item_id: str
    output_index: int | None = None


_SERVER_EVENT_CLASSES: tuple[type[ServerEvent], ...] = (
    SessionCreated,
    SessionUpdated,
    ErrorEvent,
    WarningEvent,
    RateLimitsUpdated,
    SessionAvatarConnecting,
    InputAudioBufferSpeechStarted,
    InputAudioBufferSpeechStopped,
    InputAudioBufferCommitted,
    InputAudioBufferCleared,
    ConversationItemCreated,
    ConversationItemRetrieved,
    ConversationItemTruncated,
    ConversationItemDeleted,
    ConversationItemInputAudioTranscriptionDelta,
    ConversationItemInputAudioTranscriptionCompleted,
    ConversationItemInputAudioTranscriptionFailed,
    ResponseCreated,
    ResponseDone,
    ResponseOutputItemAdded,
    ResponseOutputItemDone,
    ResponseContentPartAdded,
    ResponseContentPartDone,
    ResponseTextDelta,
    ResponseTextDone,
    ResponseAudioTranscriptDelta,
    ResponseAudioTranscriptDone,
    ResponseAudioDelta,
    ResponseAudioDone,
    ResponseFunctionCallArgumentsDelta,
    ResponseFunctionCallArgumentsDone,
    ResponseAudioTimestampDelta,
    ResponseAudioTimestampDone,
    ResponseAnimationVisemeDelta,
    ResponseAnimationVisemeDone,
    ResponseAnimationBlendshapesDelta,
    ResponseAnimationBlendshapesDone,
    McpListToolsInProgress,
    McpListToolsCompleted,
    McpListToolsFailed,
    ResponseMcpCallArgumentsDelta,
    ResponseMcpCallArgumentsDone,
    ResponseMcpCallInProgress,
    ResponseMcpCallCompleted,
    ResponseMcpCallFailed,
)


def _type_of(cls: type[BaseModel]) -> str:
    (tag,) = get_args(cls.model_fields["type"].annotation)
    return tag


SERVER_EVENT_TYPES: dict[str, type[ServerEvent]] = {
    _type_of(cls): cls for cls in _SERVER_EVENT_CLASSES
}
"""Wire ``type`` → class, for every server event of api-version 2025-10-01."""

# One validator over the union, dispatched on `type` by pydantic-core (a dict lookup), so a
# frame is parsed and validated in a single pass without building an intermediate dict.
_SERVER_ADAPTER: TypeAdapter[ServerEvent] = TypeAdapter(
    Annotated[Union[_SERVER_EVENT_CLASSES], Field(discriminator="type")]  # noqa: UP007
)


def parse_server_event(frame: str | bytes) -> ServerEvent:
    """Parse one WebSocket frame (text, or binary holding UTF-8 JSON) from the service.

    Returns the registered class for the frame's ``type``, or :class:`UnknownServerEvent`
    for a ``type`` not in :data:`SERVER_EVENT_TYPES`. Raises :class:`MalformedEvent` (and
    nothing else) when the frame is not a JSON object with a string ``type``, or a known
    event lacks a required field or has a wrongly typed one.
    """
    try:
        return _SERVER_ADAPTER.validate_json(frame)
    except (ValidationError, ValueError, TypeError):
        pass  # rare: work out what is wrong (or unknown) on the slow path below
    data, event_type = _load_object(frame)
    cls = SERVER_EVENT_TYPES.get(event_type)
    if cls is None:
        event_id = data.get("event_id")
        return UnknownServerEvent(
            type=event_type,
            event_id=event_id if isinstance(event_id, str) else None,
            raw=data,
        )
    return _validate(cls, data, event_type)


def _load_object(frame: str | bytes) -> tuple[dict[str, Any], str]:
    """The frame as a JSON object and its ``type``; :class:`MalformedEvent` otherwise."""
    if isinstance(frame, bytes | bytearray | memoryview):
        try:
            frame = bytes(frame).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedEvent("binary frame is not UTF-8 text") from None
    if not isinstance(frame, str):
        raise MalformedEvent(f"frame is {type(frame).__name__}, not text or bytes")
    try:
        frame.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates; impossible from a real WebSocket
        raise MalformedEvent("text frame is not valid Unicode") from None
    try:
        data = pydantic_core.from_json(frame)
    except ValueError as exc:
        # jiter's message names the position only, never the content
        raise MalformedEvent(f"not JSON ({_one_line(str(exc), 100)})") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"frame is {_kind(data)}, not a JSON object")
    if "type" not in data:
        raise MalformedEvent("no 'type' field")
    event_type = data["type"]
    if not isinstance(event_type, str):
        raise MalformedEvent(f"'type' must be a string, got {_short(event_type)}")
    return data, event_type


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _validate(cls: type[_M], data: dict[str, Any], event_type: str) -> _M:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _malformed(exc, data, event_type) from None


def _malformed(exc: ValidationError, data: Any, event_type: str | None) -> MalformedEvent:
    """A one-line :class:`MalformedEvent` for the first error of ``exc``."""
    errors = exc.errors(include_url=False, include_context=False)
    first = errors[0]
    path = _data_path(first["loc"], data)
    reason = first["msg"]
    if first["type"] != "missing" and "input" in first:
        reason += f" (got {_short(first['input'])})"
    if len(errors) > 1:
        reason += f" (+{len(errors) - 1} more)"
    return MalformedEvent(_one_line(reason, 200), event_type=event_type, path=path)


def _data_path(loc: tuple[int | str, ...], data: Any) -> str:
    """``loc`` as a path in the frame (``response.output[0].content[1].type``).

    pydantic puts union tags (``'message'``) into ``loc``; walking the data tells them apart
    from real keys, so they are dropped.
    """
    parts: list[str] = []
    node = data
    for i, key in enumerate(loc):
        if isinstance(node, dict) and isinstance(key, str) and key in node:
            node = node[key]
            parts.append(key)
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
            parts.append(f"[{key}]")
        elif i == len(loc) - 1 and isinstance(node, dict):
            parts.append(str(key))  # a missing field
        # else: a union tag, not part of the frame
    return _short_path(".".join(parts).replace(".[", "["))


def _short_path(path: str) -> str:
    return path if len(path) <= _SHORT else path[: _SHORT - 1] + "…"


def _b64decode(text: str, *, event_type: str, path: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEvent(
            f"not valid base64 ({len(text)} chars)", event_type=event_type, path=path
        ) from None


# ---------------------------------------------------------------------------------------------
# Client side: request items (§2.1) and response.create parameters (§2.2)
# ---------------------------------------------------------------------------------------------


class InputTextContent(Strict):
    type: Literal["input_text"] = "input_text"
    text: str


class InputAudioContent(Strict):
    type: Literal["input_audio"] = "input_audio"
    audio: str = Field(repr=False)  # base64 in the session's input_audio_format
    transcript: str | None = None


class TextContent(Strict):
    """Assistant text (assistant messages cannot carry audio)."""

    type: Literal["text"] = "text"
    text: str


ItemStatus = Literal["completed", "incomplete"]


class SystemMessage(Strict):
    type: Literal["message"] = "message"
    role: Literal["system"] = "system"
    content: list[InputTextContent]
    id: str | None = None
    status: ItemStatus | None = None

    @classmethod
    def from_text(cls, text: str) -> SystemMessage:
        return cls(content=[InputTextContent(text=text)])


class UserMessage(Strict):
    type: Literal["message"] = "message"
    role: Literal["user"] = "user"
    content: list[Annotated[InputTextContent | InputAudioContent, Field(discriminator="type")]]
    id: str | None = None
    status: ItemStatus | None = None

    @classmethod
    def from_text(cls, text: str) -> UserMessage:
        return cls(content=[InputTextContent(text=text)])


class AssistantMessage(Strict):
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[TextContent]
    id: str | None = None
    status: ItemStatus | None = None

    @classmethod
    def from_text(cls, text: str) -> AssistantMessage:
        return cls(content=[TextContent(text=text)])


class FunctionCall(Strict):
    type: Literal["function_call"] = "function_call"
    name: str
    call_id: str
    arguments: str  # JSON text
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallOutput(Strict):
    """The result of a function call. ``output`` is a string: serialise JSON yourself."""

    type: Literal["function_call_output"] = "function_call_output"
    call_id: str
    output: str
    id: str | None = None


class MCPApprovalResponse(Strict):
    type: Literal["mcp_approval_response"] = "mcp_approval_response"
    approval_request_id: str
    approve: bool
    id: str | None = None


def _request_item_tag(value: Any) -> str | None:
    # Messages share type "message"; the role picks the model.
    if isinstance(value, dict):
        t, role = value.get("type"), value.get("role")
    else:
        t, role = getattr(value, "type", None), getattr(value, "role", None)
    if t == "message":
        return f"message.{role}" if isinstance(role, str) else None
    return t if isinstance(t, str) else None


RequestItem = Annotated[
    Annotated[SystemMessage, Tag("message.system")]
    | Annotated[UserMessage, Tag("message.user")]
    | Annotated[AssistantMessage, Tag("message.assistant")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[MCPApprovalResponse, Tag("mcp_approval_response")],
    Discriminator(_request_item_tag),
]


class ResponseCreateParams(Strict):
    """``response`` of ``response.create``: per-response overrides (§2.2)."""

    commit: bool | None = None
    cancel_previous: bool | None = None
    append_input_items: list[RequestItem] | None = None
    input_items: list[RequestItem] | None = None  # [] clears the context for this response
    # Per response: text, audio, animation; avatar output is a session setting (§2.2).
    modalities: list[Literal["text", "audio", "animation"]] | None = None
    instructions: str | None = None
    voice: Voice | None = None
    output_audio_format: OutputAudioFormat | None = None
    tools: list[FunctionTool] | None = None
    # The SDK types this as a string, the reference shows a bare function name and the swagger
    # a function object; accept both forms.
    tool_choice: str | ToolChoiceFunction | None = None
    temperature: float | None = None
    # SDK/swagger name vs API-reference (OpenAI beta) name; which one the service honours is
    # unconfirmed, so both exist and the caller picks.
    max_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] | None = None
    max_response_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] | None = None
    pre_generated_assistant_message: AssistantMessage | None = None
    metadata: dict[str, str] | None = None
    conversation: Literal["auto", "none"] | None = None  # API reference only (unconfirmed)


# ---------------------------------------------------------------------------------------------
# Client events
# ---------------------------------------------------------------------------------------------


class ClientEvent(Strict):
    """Base of every client event: strict (unknown fields and coercions are errors).

    ``to_json()`` never raises for a constructed event: the model was validated already.
    """

    type: ClassVar[str]  # overridden by a Literal field in every subclass
    event_id: str | None = None

    def wire(self) -> dict[str, Any]:
        """The JSON-ready wire object: ``type`` first, ``None`` fields omitted (at event level
        ``None`` only means "not given"), the session via :meth:`RequestSession.wire` (where
        an explicit ``None`` does mean "off"), other nested models without ``None`` fields."""
        out: dict[str, Any] = {"type": self.type}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name != "type" and value is not None:
                out[name] = _wire_value(value)
        return out

    def to_json(self) -> str:
        """The exact text of the WebSocket frame."""
        return json.dumps(self.wire(), separators=(",", ":"), ensure_ascii=False)


def _wire_value(value: Any) -> Any:
    if isinstance(value, RequestSession):
        return value.wire()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_wire_value(v) for v in value]
    return value


class SessionUpdate(ClientEvent):
    """Partial update: only the fields set on ``session`` change."""

    type: Literal["session.update"] = "session.update"
    session: RequestSession


class InputAudioBufferAppend(ClientEvent):
    """Audio for the input buffer; no reply. ``audio`` is kept out of ``repr``."""

    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: str = Field(repr=False)

    @classmethod
    def from_pcm(cls, data: bytes) -> InputAudioBufferAppend:
        """Base64-encode raw audio. Raises ``ValueError`` above the service's 15 MiB limit."""
        if len(data) > MAX_APPEND_BYTES:
            raise ValueError(f"{len(data)} bytes of audio in one append; the limit is 15 MiB")
        return cls(audio=base64.b64encode(data).decode("ascii"))

    def pcm(self) -> bytes:
        """The decoded audio; raises :class:`MalformedEvent` on bad base64."""
        return _b64decode(self.audio, event_type=self.type, path="audio")


class InputAudioBufferCommit(ClientEvent):
    type: Literal["input_audio_buffer.commit"] = "input_audio_buffer.commit"


class InputAudioBufferClear(ClientEvent):
    type: Literal["input_audio_buffer.clear"] = "input_audio_buffer.clear"


# input_audio.turn.* / input_audio.clear are in the 2025-10-01 swagger and SDK but not in the
# API reference; modelled for completeness, the daemon uses the input_audio_buffer instead.
class InputAudioTurnStart(ClientEvent):
    type: Literal["input_audio.turn.start"] = "input_audio.turn.start"
    turn_id: str


class InputAudioTurnAppend(ClientEvent):
    type: Literal["input_audio.turn.append"] = "input_audio.turn.append"
    turn_id: str
    audio: str = Field(repr=False)


class InputAudioTurnEnd(ClientEvent):
    type: Literal["input_audio.turn.end"] = "input_audio.turn.end"
    turn_id: str


class InputAudioTurnCancel(ClientEvent):
    type: Literal["input_audio.turn.cancel"] = "input_audio.turn.cancel"
    turn_id: str


class InputAudioClear(ClientEvent):
    type: Literal["input_audio.clear"] = "input_audio.clear"


class ConversationItemCreate(ClientEvent):
    """Add an item; ``previous_item_id="root"`` inserts at the start."""

    type: Literal["conversation.item.create"] = "conversation.item.create"
    item: RequestItem
    previous_item_id: str | None = None

    @classmethod
    def function_call_output(
        cls,
        call_id: str,
        output: str,
        *,
        previous_item_id: str | None = None,
        event_id: str | None = None,
    ) -> ConversationItemCreate:
        """The reply to a function call (§5); ``output`` is the result as text."""
        return cls(
            item=FunctionCallOutput(call_id=call_id, output=output),
            previous_item_id=previous_item_id,
            event_id=event_id,
        )


class ConversationItemRetrieve(ClientEvent):
    type: Literal["conversation.item.retrieve"] = "conversation.item.retrieve"
    item_id: str


class ConversationItemTruncate(ClientEvent):
    """Cut an assistant item at what was actually played (``audio_end_ms``, inclusive)."""

    type: Literal["conversation.item.truncate"] = "conversation.item.truncate"
    item_id: str
    audio_end_ms: int = Field(ge=0)
    content_index: int = Field(default=0, ge=0)


class ConversationItemDelete(ClientEvent):
    type: Literal["conversation.item.delete"] = "conversation.item.delete"
    item_id: str


class ResponseCreate(ClientEvent):
    """Ask for a response. ``additional_instructions`` (Azure) is appended to the session
    instructions for this response only."""

    type: Literal["response.create"] = "response.create"
    response: ResponseCreateParams | None = None
    additional_instructions: str | None = None


class ResponseCancel(ClientEvent):
    """Cancel the active (or the given) response; the service errors if none is active."""

    type: Literal["response.cancel"] = "response.cancel"
    response_id: str | None = None


class SessionAvatarConnect(ClientEvent):
    type: Literal["session.avatar.connect"] = "session.avatar.connect"
    client_sdp: str


_CLIENT_EVENT_CLASSES: tuple[type[ClientEvent], ...] = (
    SessionUpdate,
    InputAudioBufferAppend,
    InputAudioBufferCommit,
    InputAudioBufferClear,
    InputAudioTurnStart,
    InputAudioTurnAppend,
    InputAudioTurnEnd,
    InputAudioTurnCancel,
    InputAudioClear,
    ConversationItemCreate,
    ConversationItemRetrieve,
    ConversationItemTruncate,
    ConversationItemDelete,
    ResponseCreate,
    ResponseCancel,
    SessionAvatarConnect,
)

CLIENT_EVENT_TYPES: dict[str, type[ClientEvent]] = {
    _type_of(cls): cls for cls in _CLIENT_EVENT_CLASSES
}
"""Wire ``type`` → class, for every client event of api-version 2025-10-01."""


def parse_client_event(frame: str | bytes) -> ClientEvent:
    """Parse a client event frame (for the loopback simulator and tests).

    Strict, like construction: raises :class:`MalformedEvent` (and nothing else) for anything
    that is not a valid client event, including an unknown ``type``.
    """
    data, event_type = _load_object(frame)
    cls = CLIENT_EVENT_TYPES.get(event_type)
    if cls is None:
        raise MalformedEvent(f"unknown client event type {_short(event_type)}")
    try:
        # JSON mode: strictness as on the wire (a JSON string is fine for a Literal field)
        return cls.model_validate_json(frame)
    except ValidationError as exc:
        raise _malformed(exc, data, event_type) from None


__all__ = [
    "CLIENT_EVENT_TYPES",
    "MAX_APPEND_BYTES",
    "RESPONSE_CANCELLED_STATUSES",
    "SERVER_EVENT_TYPES",
    "AssistantMessage",
    "CachedTokenDetails",
    "ClientEvent",
    "ConversationItemCreate",
    "ConversationItemCreated",
    "ConversationItemDelete",
    "ConversationItemDeleted",
    "ConversationItemInputAudioTranscriptionCompleted",
    "ConversationItemInputAudioTranscriptionDelta",
    "ConversationItemInputAudioTranscriptionFailed",
    "ConversationItemRetrieve",
    "ConversationItemRetrieved",
    "ConversationItemTruncate",
    "ConversationItemTruncated",
    "ErrorDetails",
    "ErrorEvent",
    "FunctionCall",
    "FunctionCallOutput",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCleared",
    "InputAudioBufferCommit",
    "InputAudioBufferCommitted",
    "InputAudioBufferSpeechStarted",
    "InputAudioBufferSpeechStopped",
    "InputAudioClear",
    "InputAudioContent",
    "InputAudioTurnAppend",
    "InputAudioTurnCancel",
    "InputAudioTurnEnd",
    "InputAudioTurnStart",
    "InputTextContent",
    "InputTokenDetails",
    "Lenient",
    "LogProb",
    "MCPApprovalResponse",
    "MalformedEvent",
    "McpListToolsCompleted",
    "McpListToolsFailed",
    "McpListToolsInProgress",
    "McpToolInfo",
    "OutputTokenDetails",
    "RateLimit",
    "RateLimitsUpdated",
    "RequestItem",
    "Response",
    "ResponseAnimationBlendshapesDelta",
    "ResponseAnimationBlendshapesDone",
    "ResponseAnimationVisemeDelta",
    "ResponseAnimationVisemeDone",
    "ResponseAudioDelta",
    "ResponseAudioDone",
    "ResponseAudioPart",
    "ResponseAudioTimestampDelta",
    "ResponseAudioTimestampDone",
    "ResponseAudioTranscriptDelta",
    "ResponseAudioTranscriptDone",
    "ResponseCancel",
    "ResponseContentPart",
    "ResponseContentPartAdded",
    "ResponseContentPartDone",
    "ResponseCreate",
    "ResponseCreateParams",
    "ResponseCreated",
    "ResponseDone",
    "ResponseError",
    "ResponseFunctionCallArgumentsDelta",
    "ResponseFunctionCallArgumentsDone",
    "ResponseFunctionCallItem",
    "ResponseFunctionCallOutputItem",
    "ResponseInputAudioPart",
    "ResponseInputTextPart",
    "ResponseItem",
    "ResponseMcpApprovalRequestItem",
    "ResponseMcpApprovalResponseItem",
    "ResponseMcpCallArgumentsDelta",
    "ResponseMcpCallArgumentsDone",
    "ResponseMcpCallCompleted",
    "ResponseMcpCallFailed",
    "ResponseMcpCallInProgress",
    "ResponseMcpCallItem",
    "ResponseMcpListToolsItem",
    "ResponseMessageItem",
    "ResponseOutputItemAdded",
    "ResponseOutputItemDone",
    "ResponseSession",
    "ResponseStatusDetails",
    "ResponseTextDelta",
    "ResponseTextDone",
    "ResponseTextPart",
    "ResponseTool",
    "ResponseTranscription",
    "ResponseTurnDetection",
    "ResponseTypedOption",
    "ResponseVoice",
    "ServerEvent",
    "SessionAvatarConnect",
    "SessionAvatarConnecting",
    "SessionCreated",
    "SessionUpdate",
    "SessionUpdated",
    "SystemMessage",
    "TextContent",
    "UnknownContentPart",
    "UnknownResponseItem",
    "UnknownServerEvent",
    "Usage",
    "UserMessage",
    "WarningDetails",
    "WarningEvent",
    "parse_client_event",
    "parse_server_event",
]
