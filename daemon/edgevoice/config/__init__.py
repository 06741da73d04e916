"""The configuration file: one TOML file, validated against a typed schema.

Lookup order (first hit wins): ``--config PATH``, ``$EDGEVOICE_CONFIG``,
``/etc/edgevoice/config.toml``, then the built-in defaults (every key has one).

Guarantees:
- :func:`load_config` either returns a fully validated :class:`Config` or raises
  :class:`ConfigError` carrying *every* problem of the file at once, each phrased as
  ``FILE: key.path: reason`` (for example
  ``edgevoice.toml: session.turn_detection.threshold: must be between 0 and 1, got 1.7``).
  A missing file or a TOML syntax error is one error naming the file (and the line).
- No secret lives in the file: the API key comes from the environment, a key file or systemd
  credentials (see :mod:`edgevoice.secrets`); a key-like entry in the file is rejected.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import wave
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from edgevoice.config.hands import (
    FeedbackConfig,
    PushToTalkConfig,
    TriggerConfig,
    check_pins,
)
from edgevoice.config.sentences import check_grammar_size
from edgevoice.config.tools import (
    ConfirmationConfig,
    MqttBroker,
    RateLimit,
    ToolSpec,
    check_tool_set,
    declared,
)
from edgevoice.util import between, is_loopback_host
from edgevoice.wire.session import (
    AzureSemanticVad,
    EchoCancellation,
    EndOfUtteranceDetection,
    InputAudioFormat,
    InputTranscription,
    NoiseReduction,
    OpenAIVoice,
    OutputAudioFormat,
    RequestSession,
    ServerVad,
    Strict,
    Voice,
)

SYSTEM_CONFIG = Path("/etc/edgevoice/config.toml")
ENV_CONFIG = "EDGEVOICE_CONFIG"


class ConfigError(Exception):
    """One or more problems with a config file. ``errors`` holds one line per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------- sections


class AudioConfig(Strict):
    input_device: str = Field(default="default", min_length=1)
    output_device: str = Field(default="default", min_length=1)
    frame_ms: Literal[10, 20, 30] = 20
    input_rate: Annotated[int, Field(ge=0, le=192000)] = 0
    output_rate: Annotated[int, Field(ge=0, le=192000)] = 0
    output_period_ms: Annotated[int, Field(ge=5, le=200)] = 20
    output_prebuffer_ms: Annotated[int, Field(ge=0, le=1000)] = 0
    output_rebuffer_ms: Annotated[int, Field(ge=0, le=2000)] = 100
    reopen_backoff_s: list[Annotated[float, Field(gt=0, le=600)]] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0, 5.0], min_length=1
    )


class WakeModel(Strict):
    """One wake word (or stop word). ``name``: a built-in model of the engine or a path (an
    openWakeWord ``.tflite``, a microWakeWord ``.json``); the files themselves are checked
    by the listening layer (``edgevoice check-config`` runs that check too)."""

    name: str = Field(min_length=1)
    engine: Literal["openwakeword", "micro"] = "openwakeword"
    # None: 0.5 for openWakeWord, the model's probability_cutoff for microWakeWord.
    threshold: Annotated[float, between(0.0, 1.0)] | None = None
    trigger_level: Annotated[int, Field(ge=1, le=50)] = 1
    refractory_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    # microWakeWord only; None: the model's sliding_window_size.
    sliding_window: Annotated[int, Field(ge=1, le=100)] | None = None

    @model_validator(mode="after")
    def _micro_only(self) -> WakeModel:
        if self.sliding_window is not None and self.engine != "micro":
            raise ValueError('sliding_window is a setting of engine = "micro" only')
        return self


class WakeConfig(Strict):
    models: list[WakeModel] = Field(
        default_factory=lambda: [WakeModel(name="hey_jarvis")], min_length=1
    )
    vad_gate: bool = True
    # None: the engines' context (1.98 s openWakeWord, 1.5 s microWakeWord).
    preroll_ms: Annotated[int, Field(ge=1500, le=10000)] | None = None
    # Threads per TFLite interpreter: 1 keeps each inference on one core.
    threads: Annotated[int, Field(ge=1, le=8)] = 1


class VadConfig(Strict):
    aggressiveness: Annotated[int, Field(ge=0, le=3)] = 3
    frame_ms: Literal[10, 20, 30] = 20
    prefix_padding_ms: Annotated[int, Field(ge=0, le=5000)] = 300
    tail_ms: Annotated[int, Field(ge=0, le=10000)] = 800
    local_end_of_utterance_ms: Annotated[int, Field(ge=100, le=10000)] = 700


class AgentConfig(Strict):
    """A Foundry Agent Service agent instead of a model (query parameters of 2025-10-01)."""

    id: str | None = Field(default=None, min_length=1)
    name: str | None = Field(default=None, min_length=1)
    project_name: str = Field(min_length=1)
    version: str | None = None
    access_token_scope: str = "https://ai.azure.com/.default"

    @model_validator(mode="after")
    def _one_identity(self) -> AgentConfig:
        if (self.id is None) == (self.name is None):
            raise ValueError("set exactly one of id (classic agents) or name (agents v2)")
        return self


_SECRET_QUERY_WORDS = ("key", "token", "secret", "password", "passwd", "signature", "sig",
                       "auth", "authorization", "credential", "sas", "bearer")


def is_secret_query_name(name: str) -> bool:
    """True for a query parameter name that carries a credential: any of its words
    (split at ``-``, ``_`` and ``.``) is key, token, secret, password, signature, sig, auth,
    credential, sas or bearer (``api-key``, ``agent_access_token``, ``sig``,
    ``X-Auth-Token``…). Shared by the config check and the URL redaction of logs."""
    words = [w for w in re.split(r"[-_.\s]+", name.lower()) if w]
    return any(w in _SECRET_QUERY_WORDS or w.endswith(("key", "token", "secret", "password"))
               for w in words)


class VoiceLiveConfig(Strict):
    endpoint: str = "ws://127.0.0.1:8765"
    api_version: str = "2025-10-01"
    model: str | None = "gpt-realtime"
    agent: AgentConfig | None = None
    auth: Literal["api-key", "entra"] = "api-key"
    api_key_file: str | None = None
    credential_scope: Literal[
        "https://ai.azure.com/.default", "https://cognitiveservices.azure.com/.default"
    ] = "https://ai.azure.com/.default"
    extra_query: dict[str, str] = Field(default_factory=dict)
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    ping_interval_s: Annotated[float, Field(gt=0, le=300)] = 20.0
    ping_timeout_s: Annotated[float, Field(gt=0, le=300)] = 20.0
    backoff_s: list[Annotated[float, Field(gt=0, le=3600)]] = Field(
        default_factory=lambda: [0.25, 1.0, 3.0, 5.0, 10.0, 20.0], min_length=1
    )
    backoff_jitter: Annotated[float, between(0.0, 1.0)] = 0.5
    stable_after_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    auth_failure_backoff_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    session_max_s: Annotated[float, Field(gt=0, le=3600)] = 3300.0
    offline_buffer_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    replay_max_items: Annotated[int, Field(ge=0, le=1000)] = 60
    max_message_mib: Annotated[int, Field(ge=1, le=64)] = 10

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("wss", "https", "ws", "http") or not parts.hostname:
            raise ValueError(f"must be a wss:// or https:// URL, got {value!r}")
        if parts.scheme in ("ws", "http") and not is_loopback_host(parts.hostname):
            raise ValueError(f"plain {parts.scheme}:// is only allowed for loopback hosts, use wss://")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials")
        return value

    @field_validator("extra_query")
    @classmethod
    def _no_secret_query(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if is_secret_query_name(key):
                raise ValueError(f"{key!r} is a secret and must not be in the config file "
                                 f"(a key, token, signature or password)")
        return value

    @model_validator(mode="after")
    def _model_or_agent(self) -> VoiceLiveConfig:
        if self.agent is not None:
            if self.auth == "api-key":
                raise ValueError('an agent ([voicelive.agent]) needs auth = "entra": the agent '
                                 "service takes Microsoft Entra tokens, not an API key")
            self.model = None
        elif not self.model:
            raise ValueError("set model (or an [voicelive.agent] section)")
        return self


class TurnDetectionConfig(Strict):
    type: Literal[
        "server_vad",
        "azure_semantic_vad",
        "azure_semantic_vad_en",
        "azure_semantic_vad_multilingual",
        "none",
    ] = "server_vad"
    threshold: Annotated[float, between(0.0, 1.0)] = 0.5
    prefix_padding_ms: Annotated[int, Field(ge=0, le=5000)] = 300
    silence_duration_ms: Annotated[int, Field(ge=0, le=10000)] = 500
    speech_duration_ms: Annotated[int, Field(ge=80, le=10000)] | None = None
    remove_filler_words: bool | None = None
    languages: list[str] | None = None
    create_response: bool = True
    interrupt_response: bool = True
    auto_truncate: bool = False
    end_of_utterance_detection: EndOfUtteranceDetection | None = None

    @model_validator(mode="after")
    def _semantic_only(self) -> TurnDetectionConfig:
        if self.type == "server_vad":
            for key in ("speech_duration_ms", "remove_filler_words", "languages"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} needs an azure_semantic_vad type")
        if self.type == "azure_semantic_vad_en" and self.languages is not None:
            raise ValueError("languages needs azure_semantic_vad or "
                             "azure_semantic_vad_multilingual (azure_semantic_vad_en is English "
                             "only)")
        return self


class TranscriptionConfig(InputTranscription):
    enabled: bool = True


class SessionConfig(Strict):
    instructions: str = (
        "You are a helpful voice assistant on a small device. Answer briefly, in one or two "
        "spoken sentences."
    )
    modalities: list[Literal["text", "audio"]] = Field(default_factory=lambda: ["text", "audio"])
    input_audio_format: InputAudioFormat = "pcm16"
    input_audio_sampling_rate: Literal[8000, 16000, 24000] = 16000
    output_audio_format: OutputAudioFormat = "pcm16"
    turn_detection: TurnDetectionConfig = Field(default_factory=TurnDetectionConfig)
    noise_reduction: Literal["azure_deep_noise_suppression", "near_field", "far_field", "none"] = (
        "azure_deep_noise_suppression"
    )
    echo_cancellation: bool = True
    input_transcription: TranscriptionConfig = Field(
        default_factory=lambda: TranscriptionConfig(language="en-US")
    )
    temperature: Annotated[float, between(0.6, 1.2)] = 0.8
    max_response_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] = "inf"
    tool_choice: Literal["auto", "none", "required"] = "auto"
    # Word timestamps of the reply audio: where a barge-in cut the reply, to the word. None:
    # asked for with an Azure voice (the only ones that have them); [] never.
    output_audio_timestamp_types: list[Literal["word"]] | None = None

    @model_validator(mode="after")
    def _formats(self) -> SessionConfig:
        if self.input_audio_format != "pcm16" and self.input_audio_sampling_rate != 8000:
            raise ValueError(
                f"input_audio_format {self.input_audio_format} needs input_audio_sampling_rate "
                f"8000, got {self.input_audio_sampling_rate}"
            )
        if "audio" in self.modalities and "text" not in self.modalities:
            raise ValueError("modalities: audio alone is not allowed, use ['text', 'audio']")
        return self


class ConversationConfig(Strict):
    follow_up_s: Annotated[float, Field(ge=0, le=120)] = 6.0
    listen_timeout_s: Annotated[float, Field(ge=0, le=120)] = 8.0
    # No server event for this long while waiting on the service ends the conversation.
    service_timeout_s: Annotated[float, Field(ge=0, le=600)] = 20.0
    idle_disconnect_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    connect_on_start: bool = False
    earcon: bool = True
    earcon_file: str | None = Field(default=None, min_length=1)
    earcon_volume_db: Annotated[float, Field(ge=-60, le=0)] = -12.0
    # Offline commands (the tools' sentences, recognised on the device): "auto" when the
    # service is unreachable or not connected offline_after_s after the wake word, "always",
    # or "off". The local answers are spoken by espeak-ng with offline_voice.
    offline: Literal["off", "auto", "always"] = "auto"
    offline_after_s: Annotated[float, Field(ge=0.5, le=30)] = 3.0
    offline_voice: str = Field(default="en-us", pattern=r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,39}$")

    @field_validator("earcon_file")
    @classmethod
    def _earcon_is_a_wav(cls, value: str | None) -> str | None:
        if value is not None:
            problem = wav_problem(Path(value))
            if problem:
                raise ValueError(problem)
        return value


def _earcon_setting(value: str | None) -> str | None:
    if value:
        problem = wav_problem(Path(value))
        if problem:
            raise ValueError(problem)
    return value


class CuesConfig(Strict):
    """What the user hears when a reply does not come as asked: an earcon per class (None:
    the built-in one, "" off, else a 16-bit PCM WAV) and, with ``speak``, a line spoken by
    the service's voice while the link is up (``pre_generated_assistant_message``) after a
    failed or filtered reply."""

    failed_earcon: str | None = None
    filtered_earcon: str | None = None
    not_understood_earcon: str | None = None
    limit_earcon: str | None = None
    speak: bool = False
    failed_line: str = Field(default="Sorry, something went wrong. Please try again.",
                             min_length=1, max_length=500)
    filtered_line: str = Field(default="Sorry, I can't help with that.", min_length=1,
                               max_length=500)

    _check_wavs = field_validator("failed_earcon", "filtered_earcon", "not_understood_earcon",
                                  "limit_earcon")(_earcon_setting)

    def earcon(self, cue: str) -> str | None:
        value: str | None = getattr(self, f"{cue}_earcon")
        return value

    def lines(self) -> tuple[tuple[str, str], ...]:
        """(cue, text) for the core; empty without ``speak``. ``limit`` has no line (the link
        is not opened for it), nor has ``not_understood``: the model hears the audio itself
        and may still answer, and a line would cancel that answer."""
        if not self.speak:
            return ()
        return (("failed", self.failed_line), ("filtered", self.filtered_line))


class LimitsConfig(Strict):
    """A token budget (input + output tokens of every response): when reached, a wake word is
    answered with the limit earcon instead of opening the link. Off by default."""

    tokens_per_hour: Annotated[int, Field(ge=1)] | None = None
    tokens_per_day: Annotated[int, Field(ge=1)] | None = None


class ContextConfig(Strict):
    """Per-turn context for the replies the daemon asks for: the stdout of ``command`` (argv,
    no shell) goes with each ``response.create`` as ``additional_instructions``."""

    command: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    max_bytes: Annotated[int, Field(ge=1, le=16384)] = 2048
    env: list[str] = Field(default_factory=list)  # variables passed through (PATH always)

    @field_validator("command")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        if value and not value[0].startswith("/"):
            raise ValueError(f"the program must be an absolute path, got {value[0]!r}")
        return value


EARCON_MAX_BYTES = 4 * 1024 * 1024  # a chime of a few seconds is far below this


def wav_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the earcon (not a file, not a 16-bit PCM WAV, empty, too big),
    in one line; None when it can. Reads only the header."""
    if not path.is_file():
        return f"no such file: {path}"
    try:
        if path.stat().st_size > EARCON_MAX_BYTES:
            return f"{path}: larger than {EARCON_MAX_BYTES // (1024 * 1024)} MiB"
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                return f"{path}: must be 16-bit PCM WAV, got {8 * w.getsampwidth()}-bit"
            if w.getnframes() == 0 or w.getframerate() <= 0:
                return f"{path}: has no audio"
    except (wave.Error, EOFError) as exc:
        return f"{path}: not a PCM WAV file ({exc or 'truncated'})"
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror}"
    return None


class BargeInConfig(Strict):
    local_vad: bool = True
    server_vad: bool = True
    min_speech_ms: Annotated[int, Field(ge=60, le=2000)] = 200
    wake_word: Literal["listen", "stop", "off"] = "listen"
    stop_words: list[WakeModel] = Field(default_factory=list)
    echo_margin_db: Annotated[float, Field(ge=0, le=40)] = 10.0
    echo_delay_ms: Annotated[int, Field(ge=0, le=1000)] = 100
    echo_spread_ms: Annotated[int, Field(ge=0, le=1000)] = 150
    echo_coupling_db: Annotated[float, Field(ge=-60, le=20)] = -6.0


class AlsaDuckingConfig(Strict):
    device: str = Field(default="default", min_length=1)
    control: str = Field(default="Master", min_length=1)


class PulseDuckingConfig(Strict):
    server: str | None = Field(default=None, min_length=1)
    exclude_apps: list[str] = Field(default_factory=list)


class MprisDuckingConfig(Strict):
    bus: Literal["session", "system"] = "session"
    # A D-Bus address (unix:path=...) instead of the bus's usual lookup.
    address: str | None = Field(default=None, min_length=1)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z][a-z0-9-]*:", value):
            raise ValueError(f"must be a D-Bus address such as unix:path=/run/user/1000/bus, "
                             f"got {value!r}")
        return value


class CommandDuckingConfig(Strict):
    duck: list[str] = Field(default_factory=list)
    unduck: list[str] = Field(default_factory=list)


class DuckingConfig(Strict):
    backend: Literal["none", "alsa", "pulse", "mpris", "command"] = "none"
    duck_db: Annotated[float, Field(ge=0, le=60)] = 15.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    alsa: AlsaDuckingConfig = Field(default_factory=AlsaDuckingConfig)
    pulse: PulseDuckingConfig = Field(default_factory=PulseDuckingConfig)
    mpris: MprisDuckingConfig = Field(default_factory=MprisDuckingConfig)
    command: CommandDuckingConfig = Field(default_factory=CommandDuckingConfig)

    @model_validator(mode="after")
    def _command_hooks(self) -> DuckingConfig:
        if self.backend == "command" and not (self.command.duck and self.command.unduck):
            raise ValueError("backend \"command\" needs ducking.command.duck and "
                             "ducking.command.unduck (argv lists)")
        return self

    def options(self) -> dict[str, Any]:
        """Keyword options for :func:`edgevoice.ducking.make_ducker`."""
        opts: dict[str, Any] = {"timeout": self.timeout_s}
        if self.backend == "alsa":
            opts |= {"duck_db": self.duck_db, "device": self.alsa.device,
                     "control": self.alsa.control}
        elif self.backend == "pulse":
            opts |= {"duck_db": self.duck_db, "server": self.pulse.server,
                     "exclude_apps": list(self.pulse.exclude_apps)}
        elif self.backend == "mpris":
            opts |= {"bus": self.mpris.bus, "address": self.mpris.address}
        elif self.backend == "command":
            opts |= {"duck": list(self.command.duck), "unduck": list(self.command.unduck)}
        else:
            opts = {}
        return opts


_MQTT_ID = r"^[A-Za-z0-9_-]{1,64}$"


def _topic_prefix(value: str) -> str:
    if not value or any(c in value for c in "+#\0") or value.startswith("/") or \
            value.endswith("/") or "//" in value:
        raise ValueError(f"must be an MQTT topic without wildcards (+, #) and without a "
                         f"leading, trailing or double /, got {value!r}")
    return value


class HomeAssistantConfig(MqttBroker):
    """``[homeassistant]``: announce the device to Home Assistant through MQTT discovery
    (see :mod:`edgevoice.homeassistant`). The broker keys (host, port, tls, ca_file,
    cert_file, key_file, username, password_file) are those of an MQTT tool."""

    discovery_prefix: str = "homeassistant"
    # Default: the host name (letters, digits, _ and - kept, the rest as _).
    device_id: str | None = Field(default=None, pattern=_MQTT_ID)
    device_name: str | None = Field(default=None, min_length=1, max_length=100)
    # Default: edgevoice/<device_id>.
    base_topic: str | None = None
    publish_transcript: bool = False  # what the user said leaves the device only if true
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 60
    backoff_s: list[Annotated[float, Field(gt=0, le=3600)]] = Field(
        default_factory=lambda: [1.0, 2.0, 5.0, 10.0, 30.0, 60.0], min_length=1)

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _topic_prefix(value)

    @field_validator("base_topic")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        return None if value is None else _topic_prefix(value)


class ToolConfig(ToolSpec):
    """A tool the model may call: its schema and action (see :mod:`edgevoice.tools`)."""


DEFAULT_STATUS_SOCKET = "/run/edgevoice/status.sock"
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the terminating NUL


DEFAULT_TOOL_RUNNER_SOCKET = "/run/edgevoice-tools/runner.sock"


class ServiceConfig(Strict):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_target: Literal["auto", "journal", "stderr"] = "auto"
    # False: what the user and the assistant said is left out of the log (its length stays).
    log_transcripts: bool = True
    status_socket: str = DEFAULT_STATUS_SOCKET
    # The tool runner that runs run_as = "user" commands as their own user ("" for none).
    tool_runner_socket: str = DEFAULT_TOOL_RUNNER_SOCKET
    tool_processes: Annotated[int, Field(ge=1, le=64)] = 4
    tool_queue: Annotated[int, Field(ge=0, le=256)] = 8
    tool_rate_limit: RateLimit = Field(
        default_factory=lambda: RateLimit(max_calls=30, per_s=60))

    @field_validator("status_socket", "tool_runner_socket")
    @classmethod
    def _socket_path(cls, value: str) -> str:
        if value == "":
            return value
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path (or \"\" for none), got {value!r}")
        if len(os.fsencode(value)) > SUN_PATH_MAX:
            raise ValueError(f"must be at most {SUN_PATH_MAX} bytes long (a unix socket path)")
        return value

    def tool_runner_path(self) -> Path | None:
        """The tool runner's socket; None when turned off (``""``)."""
        return Path(self.tool_runner_socket) if self.tool_runner_socket else None

    def journal(self) -> bool | None:
        """``setup_logging(journal=…)``: None lets it detect systemd's journal stream."""
        return {"auto": None, "journal": True, "stderr": False}[self.log_target]

    def status_socket_path(self, env: Mapping[str, str] | None = None) -> Path | None:
        """Where the status socket lives: None when turned off (``""``); the default path
        moves into ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=``) when that is set
        (it is ``/run/edgevoice`` under the shipped unit, the same place)."""
        env = os.environ if env is None else env
        if not self.status_socket:
            return None
        runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
        if self.status_socket == DEFAULT_STATUS_SOCKET and runtime.startswith("/"):
            return Path(runtime) / Path(DEFAULT_STATUS_SOCKET).name
        return Path(self.status_socket)


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for an IPv6 address) as (host, port). Raises ValueError
    saying what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be host:port (e.g. \"127.0.0.1:9464\"), got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host} is not an IPv6 address") from None
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address needs brackets: [{host}]:{port_text}")
    elif not _HOSTNAME.match(host):
        raise ValueError(f"{host!r} is not a host name or address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the port must be 1..65535, got {port_text!r}")
    return host, int(port_text)


class MetricsConfig(Strict):
    """The Prometheus endpoint (off unless ``listen`` is set)."""

    # host:port to serve /metrics on; "" for none. Loopback unless the network is trusted:
    # the figures (wake words, tool names, timings) say what goes on in the house or car.
    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            parse_listen(value)
        return value

    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on; None when off."""
        return parse_listen(self.listen) if self.listen else None


class Config(Strict):
    audio: AudioConfig = Field(default_factory=AudioConfig)
    wake: WakeConfig = Field(default_factory=WakeConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    voicelive: VoiceLiveConfig = Field(default_factory=VoiceLiveConfig)
    voice: Voice = Field(default_factory=OpenAIVoice)
    session: SessionConfig = Field(default_factory=SessionConfig)
    conversation: ConversationConfig = Field(default_factory=ConversationConfig)
    bargein: BargeInConfig = Field(default_factory=BargeInConfig)
    ducking: DuckingConfig = Field(default_factory=DuckingConfig)
    tools: list[ToolConfig] = Field(default_factory=list)
    confirmation: ConfirmationConfig = Field(default_factory=ConfirmationConfig)
    homeassistant: HomeAssistantConfig | None = None
    push_to_talk: PushToTalkConfig = Field(default_factory=PushToTalkConfig)
    triggers: list[TriggerConfig] = Field(default_factory=list)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    cues: CuesConfig = Field(default_factory=CuesConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)

    def request_session(self) -> RequestSession:
        """The ``session`` of ``session.update`` built from this config. Every field is set
        explicitly (the service's defaults differ between documents); ``none`` options are
        sent as ``null``; agent sessions leave out ``instructions`` (the agent owns them)."""
        s = self.session
        td = s.turn_detection
        turn_detection: ServerVad | AzureSemanticVad | None
        if td.type == "none":
            turn_detection = None
        else:
            fields = td.model_dump(exclude_none=True)
            turn_detection = (ServerVad if td.type == "server_vad" else AzureSemanticVad)(**fields)
        transcription = None
        if s.input_transcription.enabled:
            transcription = InputTranscription(
                **s.input_transcription.model_dump(exclude={"enabled"}, exclude_none=True)
            )
        values: dict[str, Any] = {
            "modalities": list(s.modalities),
            "voice": self.voice,
            "input_audio_format": s.input_audio_format,
            "input_audio_sampling_rate": s.input_audio_sampling_rate,
            "output_audio_format": s.output_audio_format,
            "turn_detection": turn_detection,
            "input_audio_noise_reduction": None if s.noise_reduction == "none"
            else NoiseReduction(type=s.noise_reduction),
            "input_audio_echo_cancellation": EchoCancellation() if s.echo_cancellation else None,
            "input_audio_transcription": transcription,
            "tools": declared(self.tools),
            "tool_choice": s.tool_choice,
            "temperature": s.temperature,
            "max_response_output_tokens": s.max_response_output_tokens,
        }
        if self.voicelive.agent is None:
            values["instructions"] = s.instructions
        if self.word_timestamps():
            values["output_audio_timestamp_types"] = ["word"]
        return RequestSession(**values)

    def word_timestamps(self) -> bool:
        """Whether the session asks for word timestamps of the reply audio
        (``session.output_audio_timestamp_types``; by default with Azure voices)."""
        wanted = self.session.output_audio_timestamp_types
        return not isinstance(self.voice, OpenAIVoice) and (wanted is None or "word" in wanted)

    @model_validator(mode="after")
    def _timestamps_need_azure(self) -> Config:
        if self.session.output_audio_timestamp_types and isinstance(self.voice, OpenAIVoice):
            raise ValueError("session.output_audio_timestamp_types: word timestamps need an "
                             "Azure voice ([voice] type = \"azure-standard\", …); OpenAI "
                             "voices have none (leave the key out or set [])")
        return self

    @model_validator(mode="after")
    def _unique_tools(self) -> Config:
        problems = check_tool_set(self.tools)
        as_user = [t.name for t in self.tools if t.command and t.command.run_as == "user"]
        if as_user and not self.service.tool_runner_socket:
            problems.append(f'run_as = "user" (tool {", ".join(as_user)}) needs '
                            f"service.tool_runner_socket (the tool runner)")
        confirmed = [t.name for t in self.tools if t.confirm]
        if confirmed and not self.session.input_transcription.enabled:
            problems.append(f"confirm = true (tool {', '.join(confirmed)}) needs "
                            f"session.input_transcription.enabled: the user's answer is "
                            f"read from the transcript")
        td = self.session.turn_detection
        if self.context.command and td.type != "none" and td.create_response:
            problems.append("context.command needs session.turn_detection.create_response = "
                            "false (or type \"none\"): the context goes with the replies the "
                            "daemon asks for")
        if self.conversation.offline == "always" and not any(t.sentences for t in self.tools):
            problems.append('conversation.offline = "always" needs a tool that declares '
                            "sentences: nothing could be understood")
        too_large = check_grammar_size(sum(t.grammar_words for t in self.tools))
        if too_large:
            problems.append(too_large)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _pins_once(self) -> Config:
        problems = check_pins(self.triggers, self.feedback.light, self.tools)
        if problems:
            raise ValueError("; ".join(problems))
        return self


# --------------------------------------------------------------------------- loading


def find_config_path(cli_path: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The file to load by the lookup order, or None for the built-in defaults.

    An explicit path (option or environment) is returned even when missing, so that the
    caller reports it; the system path is only used when it exists."""
    env = os.environ if env is None else env
    if cli_path:
        return Path(cli_path)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    return None


def load_config(path: str | Path | None) -> Config:
    """Load and validate ``path`` (None: built-in defaults). Raises ConfigError."""
    if path is None:
        return Config()
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{label}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{label}: cannot read: {exc}"]) from None
    return parse_config(text, label)


def parse_config(text: str, label: str) -> Config:
    """Validate TOML text; ``label`` names the file in messages. Raises ConfigError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: TOML syntax error: {exc}"]) from None
    secret_locs = _secret_looking_keys(data)
    secret_errors = [
        f"{label}: {'.'.join(loc)}: secrets must not be in the config file" for loc in secret_locs
    ]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = [
            f"{label}: {line}"
            for err in exc.errors()
            # A secret-looking key is reported once, as a secret, not also as unknown.
            if not (err["type"] == "extra_forbidden" and tuple(map(str, err["loc"])) in secret_locs)
            for line in _format_error(err, data).split("\n")
        ]
        raise ConfigError(_dedupe([_in_file(e, text) for e in errors] + secret_errors)) from None
    if secret_errors:
        raise ConfigError(secret_errors)
    return config


_BAD_TEMPLATE = re.compile(r"template '((?:[^'\\]|\\.)*)' does not parse: column (\d+): ")


def _in_file(error: str, text: str) -> str:
    """A template that does not parse, placed in the file too: ``line L, column C`` where
    the template is written (when it is written as is, without escapes)."""
    m = _BAD_TEMPLATE.search(error)
    if m is None:
        return error
    template = m[1].replace("\\'", "'").replace("\\\\", "\\")
    for number, line in enumerate(text.splitlines(), 1):
        at = line.find(template)
        if at >= 0:
            column = at + int(m[2])
            return error.replace(m[0], f"{m[0][:-2]} (line {number}, column {column} of the "
                                       f"file): ", 1)
    return error


_SECRET_NAMES = {"api_key", "api-key", "apikey", "key", "password", "token", "secret"}


def _secret_looking_keys(data: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            # A tool's parameters and a trigger's key (an evdev key name) are not secrets.
            if (path[:1] != ("tools",) and not (path[:1] == ("triggers",) and k == "key")
                    and str(k).lower() in _SECRET_NAMES):
                found.append((*path, str(k)))
            found += _secret_looking_keys(v, (*path, str(k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _secret_looking_keys(v, (*path, str(i)))
    return found


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _key_path(loc: tuple[Any, ...], data: Any) -> str:
    """Turn a pydantic error location into the TOML key path, dropping union tags."""
    parts: list[str] = []
    node = data
    for i, item in enumerate(loc):
        if isinstance(node, dict) and item in node:
            parts.append(str(item))
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            parts.append(f"[{item}]")
            node = node[item]
        elif isinstance(item, str) and not isinstance(node, dict | list):
            continue
        elif isinstance(node, dict) and i == len(loc) - 1:
            parts.append(str(item))  # the key that is missing
            node = None
        # else: a union member tag (e.g. "server_vad", "function-after[...]"): not a key
    text = ".".join(parts).replace(".[", "[")
    return text or "(top level)"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_error(err: Mapping[str, Any], data: Any) -> str:
    where = _key_path(tuple(err["loc"]), data)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind in ("string_type", "int_type", "float_type", "bool_type", "list_type", "dict_type",
                  "model_type", "model_attributes_type", "int_from_float"):
        wanted = {"string_type": "a string", "int_type": "an integer", "float_type": "a number",
                  "bool_type": "true or false", "list_type": "a list", "dict_type": "a table",
                  "model_type": "a table", "model_attributes_type": "a table",
                  "int_from_float": "an integer"}[kind]
        msg = f"must be {wanted}, got {_describe(value)}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
              "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        msg = f"must be {op} {bound}, got {_describe(value)}"
    elif kind == "literal_error":
        msg = f"must be one of {ctx.get('expected')}, got {_describe(value)}"
    elif kind == "union_tag_invalid":
        msg = f"type must be one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
    elif kind == "union_tag_not_found":
        msg = f"needs a {ctx.get('discriminator', 'type')} key"
    elif kind == "too_short":
        n = ctx.get("min_length")
        msg = "must not be empty" if n == 1 else f"must have at least {n} entries"
    elif kind == "string_too_short":
        msg = "must not be empty"
    elif kind == "string_pattern_mismatch":
        msg = f"must match {ctx.get('pattern')}, got {_describe(value)}"
    elif kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
    else:
        msg = err["msg"]
    # A validator that finds several problems says them one per line: each gets the key.
    return "\n".join(f"{where}: {line}" for line in msg.split("\n"))
