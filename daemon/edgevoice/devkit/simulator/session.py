"""The simulated session: the defaults of a new connection and how ``session.update`` merges
into them (partial updates, ``null`` disables, every value checked; all-or-nothing)."""

from __future__ import annotations

import copy
import secrets
from typing import Any

from edgevoice.audio.convert import OUTPUT_FORMAT_RATES

INPUT_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
INPUT_RATES = (8000, 16000, 24000, 44100, 48000)
TURN_DETECTION_TYPES = (
    "server_vad",
    "semantic_vad",
    "azure_semantic_vad",
    "azure_semantic_vad_en",
    "azure_semantic_vad_multilingual",
)
MODALITIES = ("text", "audio", "animation", "avatar")


class ProtocolError(Exception):
    """A client mistake, reported as an ``error`` event (the connection stays open)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def default_session(model: str | None) -> dict[str, Any]:
    """The effective session of a new connection (protocol reference §10.1)."""
    return {
        "id": f"sess_{secrets.token_hex(10)}",
        "object": "realtime.session",
        "model": model,
        "modalities": ["text", "audio"],
        "instructions": "",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_sampling_rate": 24000,
        "input_audio_transcription": None,
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
        },
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
    }


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_modalities(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise ProtocolError("modalities must be a list of strings", param)
    bad = [m for m in value if m not in MODALITIES]
    if bad:
        raise ProtocolError(f"Invalid modality {bad[0]!r}", param)
    if "text" not in value:
        raise ProtocolError("modalities must include 'text'", param)
    return list(value)


def check_output_format(value: Any, param: str) -> str:
    if not isinstance(value, str) or value not in OUTPUT_FORMAT_RATES:
        raise ProtocolError(
            f"Invalid output_audio_format {value!r}; expected one of "
            f"{', '.join(OUTPUT_FORMAT_RATES)}",
            param,
        )
    return str(value)


def _check_optional_typed(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ProtocolError(f"{param.split('.')[-1]} must be null or an object with 'type'", param)
    return value


def _check_turn_detection(value: Any) -> dict[str, Any] | None:
    param = "session.turn_detection"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError("turn_detection must be null or an object", param)
    if value.get("type") not in TURN_DETECTION_TYPES:
        raise ProtocolError(
            f"Invalid turn_detection.type {value.get('type')!r}", f"{param}.type"
        )
    td = dict(value)
    if "threshold" in td and not (_is_number(td["threshold"]) and 0 <= td["threshold"] <= 1):
        raise ProtocolError("threshold must be a number between 0 and 1", f"{param}.threshold")
    for key in ("prefix_padding_ms", "silence_duration_ms", "speech_duration_ms"):
        if key in td and not (is_int(td[key]) and 0 <= td[key] <= 60_000):
            raise ProtocolError(f"{key} must be an integer between 0 and 60000", f"{param}.{key}")
    for key in ("create_response", "interrupt_response", "auto_truncate", "remove_filler_words"):
        if key in td and not isinstance(td[key], bool):
            raise ProtocolError(f"{key} must be a boolean", f"{param}.{key}")
    if td["type"] != "semantic_vad":
        # The effective config shows the defaults the VAD really uses.
        td.setdefault("threshold", 0.5)
        td.setdefault("prefix_padding_ms", 300)
        td.setdefault("silence_duration_ms", 500)
    return td


def _check_tools(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError("tools must be a list", "session.tools")
    for i, tool in enumerate(value):
        param = f"session.tools[{i}]"
        if not isinstance(tool, dict):
            raise ProtocolError("tool must be an object", param)
        if tool.get("type") == "function":
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise ProtocolError("function tool needs a name", f"{param}.name")
            params = tool.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise ProtocolError(
                    "parameters must be a JSON schema object", f"{param}.parameters"
                )
        elif tool.get("type") != "mcp":
            raise ProtocolError(f"Invalid tool type {tool.get('type')!r}", f"{param}.type")
    return value


def merge_session(current: dict[str, Any], update: Any, audio_produced: bool) -> dict[str, Any]:
    """Apply a partial ``session.update``: only present fields change, ``null`` disables the
    nullable objects. All-or-nothing: any invalid field rejects the whole update."""
    if not isinstance(update, dict):
        raise ProtocolError("session must be an object", "session")
    new = copy.deepcopy(current)
    for key, value in update.items():
        param = f"session.{key}"
        if key in ("id", "object"):
            continue  # read-only; echoing them back is harmless
        if key == "model":
            if value is not None and value != current.get("model"):
                raise ProtocolError("The model of a session cannot be changed", param)
            continue
        if key == "modalities":
            value = check_modalities(value, param)
        elif key == "instructions":
            if not isinstance(value, str):
                raise ProtocolError("instructions must be a string", param)
        elif key == "voice":
            if not (isinstance(value, str) and value) and not (
                isinstance(value, dict) and isinstance(value.get("type"), str)
            ):
                raise ProtocolError("voice must be a name or an object with 'type'", param)
            if audio_produced and value != current.get("voice"):
                raise ProtocolError(
                    "Cannot update a session's voice after the model has produced audio",
                    param,
                    "cannot_update_voice",
                )
        elif key == "input_audio_format":
            if value not in INPUT_FORMATS:
                raise ProtocolError(
                    f"Invalid input_audio_format {value!r}; expected one of "
                    f"{', '.join(INPUT_FORMATS)}",
                    param,
                )
        elif key == "input_audio_sampling_rate":
            if value not in INPUT_RATES or not is_int(value):
                raise ProtocolError(
                    f"Invalid input_audio_sampling_rate {value!r}; expected one of "
                    f"{', '.join(map(str, INPUT_RATES))}",
                    param,
                )
        elif key == "output_audio_format":
            value = check_output_format(value, param)
        elif key == "turn_detection":
            value = _check_turn_detection(value)
        elif key in (
            "input_audio_transcription",
            "input_audio_noise_reduction",
            "input_audio_echo_cancellation",
        ):
            if key == "input_audio_transcription":
                if value is not None and not (
                    isinstance(value, dict) and isinstance(value.get("model"), str)
                ):
                    raise ProtocolError("input_audio_transcription needs a model", param)
            else:
                value = _check_optional_typed(value, param)
        elif key == "tools":
            value = _check_tools(value)
        elif key == "tool_choice":
            ok = value in ("auto", "none", "required") or (
                isinstance(value, dict)
                and value.get("type") == "function"
                and isinstance(value.get("name"), str)
            )
            if not ok:
                raise ProtocolError(f"Invalid tool_choice {value!r}", param)
        elif key == "temperature":
            if not (_is_number(value) and 0 <= value <= 2):
                raise ProtocolError("temperature must be a number between 0 and 2", param)
        elif key == "max_response_output_tokens":
            if value != "inf" and not (is_int(value) and 1 <= value <= 4096):
                raise ProtocolError("must be an integer 1..4096 or 'inf'", param)
        new[key] = value  # unknown fields are kept: the real service knows more than we check
    if new["input_audio_format"] != "pcm16":
        if "input_audio_sampling_rate" in update and new["input_audio_sampling_rate"] != 8000:
            raise ProtocolError(
                "G.711 input is 8000 Hz", "session.input_audio_sampling_rate"
            )
        new["input_audio_sampling_rate"] = 8000
    return new

