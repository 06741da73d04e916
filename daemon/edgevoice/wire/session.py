"""The Voice Live session object (api-version 2025-10-01), request side.

These models serve twice: as the schema of the ``[session]`` and ``[voice]`` sections of the
config file (strict: unknown keys and wrong types are errors) and as the ``session`` of the
``session.update`` client event. :meth:`RequestSession.wire` gives the JSON object sent on the
wire: only the fields that were set, with an explicit ``None`` kept where it means "off"
(``turn_detection: null`` switches to manual commits).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from edgevoice.util import between


class Strict(BaseModel):
    """Base of every config/request model: unknown keys and type coercions are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)

    def model_post_init(self, context: Any, /) -> None:
        # A discriminator must reach the wire even when it was left at its default.
        if "type" in type(self).model_fields:
            self.model_fields_set.add("type")

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict of the fields set on this model (an explicit ``None`` is kept:
        it means "off" on the wire); nested objects are sent whole, without ``None`` fields."""
        full = self.model_dump(mode="json", exclude_none=True)
        fields = self.model_fields_set
        return {name: full.get(name) for name in type(self).model_fields if name in fields}


Unit = Annotated[float, between(0.0, 1.0)]

OpenAIVoiceName = Literal[
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"
]


class OpenAIVoice(Strict):
    type: Literal["openai"] = "openai"
    name: OpenAIVoiceName = "alloy"


class _AzureVoiceBase(Strict):
    name: str = Field(min_length=1)
    temperature: Unit | None = None
    custom_lexicon_url: str | None = None
    custom_text_normalization_url: str | None = None
    prefer_locales: list[str] | None = None
    locale: str | None = None
    style: str | None = None
    pitch: str | None = None
    rate: str | None = None
    volume: str | None = None


class AzureStandardVoice(_AzureVoiceBase):
    type: Literal["azure-standard"] = "azure-standard"


class AzureCustomVoice(_AzureVoiceBase):
    type: Literal["azure-custom"] = "azure-custom"
    endpoint_id: str = Field(min_length=1)


class AzurePersonalVoice(_AzureVoiceBase):
    type: Literal["azure-personal"] = "azure-personal"
    model: Literal[
        "DragonLatestNeural",
        "DragonHDOmniLatestNeural",
        "MAI-Voice-1",
        "PhoenixLatestNeural",
        "PhoenixV2Neural",
    ]


def _voice_tag(value: Any) -> str | None:
    # A voice without a type is an OpenAI voice: `[voice] name = "coral"` just works.
    if isinstance(value, dict):
        return value.get("type", "openai")
    return getattr(value, "type", None)


Voice = Annotated[
    Annotated[OpenAIVoice, Tag("openai")]
    | Annotated[AzureStandardVoice, Tag("azure-standard")]
    | Annotated[AzureCustomVoice, Tag("azure-custom")]
    | Annotated[AzurePersonalVoice, Tag("azure-personal")],
    Discriminator(_voice_tag),
]


class EndOfUtteranceDetection(Strict):
    model: Literal[
        "semantic_detection_v1", "semantic_detection_v1_en", "semantic_detection_v1_multilingual"
    ] = "semantic_detection_v1"
    threshold_level: Literal["low", "medium", "high", "default"] = "default"
    timeout_ms: int = Field(default=1000, ge=0, le=10000)


class _TurnDetectionBase(Strict):
    create_response: bool = True
    interrupt_response: bool = True
    auto_truncate: bool = False


class ServerVad(_TurnDetectionBase):
    type: Literal["server_vad"] = "server_vad"
    threshold: Unit = 0.5
    prefix_padding_ms: int = Field(default=300, ge=0, le=5000)
    silence_duration_ms: int = Field(default=500, ge=0, le=10000)
    end_of_utterance_detection: EndOfUtteranceDetection | None = None


class AzureSemanticVad(_TurnDetectionBase):
    type: Literal[
        "azure_semantic_vad", "azure_semantic_vad_en", "azure_semantic_vad_multilingual"
    ] = "azure_semantic_vad"
    threshold: Unit = 0.5
    prefix_padding_ms: int = Field(default=300, ge=0, le=5000)
    silence_duration_ms: int = Field(default=500, ge=0, le=10000)
    speech_duration_ms: int | None = Field(default=None, ge=80, le=10000)
    remove_filler_words: bool | None = None
    languages: list[str] | None = None
    end_of_utterance_detection: EndOfUtteranceDetection | None = None

    @model_validator(mode="after")
    def _languages(self) -> AzureSemanticVad:
        # The English-only variant has no languages field on the wire (protocol doc §4.4).
        if self.type == "azure_semantic_vad_en" and self.languages is not None:
            raise ValueError("languages is not allowed with azure_semantic_vad_en (English "
                             "only); use azure_semantic_vad_multilingual")
        return self


TurnDetection = Annotated[ServerVad | AzureSemanticVad, Field(discriminator="type")]


class NoiseReduction(Strict):
    type: Literal["azure_deep_noise_suppression", "near_field", "far_field"] = (
        "azure_deep_noise_suppression"
    )


class EchoCancellation(Strict):
    type: Literal["server_echo_cancellation"] = "server_echo_cancellation"


class InputTranscription(Strict):
    model: Literal[
        "azure-speech",
        "mai-transcribe-1",
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
        "gpt-4o-transcribe-diarize",
    ] = "azure-speech"
    language: str | None = None
    phrase_list: list[str] | None = None
    custom_speech: dict[str, str] | None = None
    prompt: str | None = None


class FunctionTool(Strict):
    type: Literal["function"] = "function"
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoiceFunction(Strict):
    type: Literal["function"] = "function"
    name: str


InputAudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
OutputAudioFormat = Literal["pcm16", "pcm16_16000hz", "pcm16_8000hz", "g711_ulaw", "g711_alaw"]


class RequestSession(Strict):
    """``session`` of ``session.update``. Every field is optional on the wire."""

    modalities: list[Literal["text", "audio", "animation", "avatar"]] | None = None
    instructions: str | None = None
    voice: Voice | None = None
    input_audio_format: InputAudioFormat | None = None
    input_audio_sampling_rate: Literal[8000, 16000, 24000] | None = None
    output_audio_format: OutputAudioFormat | None = None
    turn_detection: TurnDetection | None = None
    input_audio_noise_reduction: NoiseReduction | None = None
    input_audio_echo_cancellation: EchoCancellation | None = None
    input_audio_transcription: InputTranscription | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    temperature: Annotated[float, between(0.6, 1.2)] | None = None
    max_response_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] | None = None
    output_audio_timestamp_types: list[Literal["word"]] | None = None
