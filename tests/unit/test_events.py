"""Tests of the typed Voice Live events (edgevoice.wire.events)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgevoice.wire import events as ev
from edgevoice.wire.session import (
    AzureSemanticVad,
    AzureStandardVoice,
    FunctionTool,
    RequestSession,
    ServerVad,
)
from support import need_module

# The official SDK is a test extra ([test] in pyproject.toml), installed by scripts/setup.
VOICELIVE_SDK = "pip install 'azure-ai-voicelive[aiohttp]' (or run scripts/setup)"

# ---------------------------------------------------------------------------------------------
# Protocol doc §10.1 and §10.2, one frame per line. Elided base64 ("…") replaced by valid
# base64, the elided `[…]`/`{…}` of event_108 by a real output item and usage, and the trailing
# prose annotations dropped.
# ---------------------------------------------------------------------------------------------

TRANSCRIPT = r"""
S> {"type":"session.created","event_id":"event_001","session":{"id":"sess_01","object":"realtime.session","model":"gpt-realtime","modalities":["text","audio"],"instructions":"","voice":"alloy","input_audio_format":"pcm16","output_audio_format":"pcm16","input_audio_sampling_rate":24000,"input_audio_transcription":null,"turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":500},"tools":[],"tool_choice":"auto","temperature":0.8,"max_response_output_tokens":"inf"}}
C> {"type":"session.update","event_id":"cli_1","session":{"modalities":["text","audio"],"instructions":"You are a concise assistant.","voice":{"type":"azure-standard","name":"en-US-Ava:DragonHDLatestNeural","temperature":0.8},"input_audio_format":"pcm16","input_audio_sampling_rate":24000,"output_audio_format":"pcm16","turn_detection":{"type":"azure_semantic_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":500,"create_response":true,"interrupt_response":true,"auto_truncate":false},"input_audio_noise_reduction":{"type":"azure_deep_noise_suppression"},"input_audio_echo_cancellation":{"type":"server_echo_cancellation"},"input_audio_transcription":{"model":"azure-speech","language":"en-US"},"tools":[{"type":"function","name":"get_weather","description":"Current weather for a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}],"tool_choice":"auto"}}
S> {"type":"session.updated","event_id":"event_002","session":{"id":"sess_01","object":"realtime.session","model":"gpt-realtime","modalities":["text","audio"],"instructions":"You are a concise assistant.","voice":{"type":"azure-standard","name":"en-US-Ava:DragonHDLatestNeural","temperature":0.8},"input_audio_format":"pcm16","input_audio_sampling_rate":24000,"output_audio_format":"pcm16","turn_detection":{"type":"azure_semantic_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":500,"create_response":true,"interrupt_response":true,"auto_truncate":false},"input_audio_noise_reduction":{"type":"azure_deep_noise_suppression"},"input_audio_echo_cancellation":{"type":"server_echo_cancellation"},"input_audio_transcription":{"model":"azure-speech","language":"en-US"},"tools":[{"type":"function","name":"get_weather","description":"Current weather for a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}],"tool_choice":"auto","temperature":0.8,"max_response_output_tokens":"inf"}}
C> {"type":"input_audio_buffer.append","audio":"AAAAAAEAAgD/"}
C> {"type":"input_audio_buffer.append","audio":"AQACAAMABAA="}
S> {"type":"input_audio_buffer.speech_started","event_id":"event_003","audio_start_ms":820,"item_id":"item_u1"}
C> {"type":"input_audio_buffer.append","audio":"AQACAAMABAA="}
S> {"type":"input_audio_buffer.speech_stopped","event_id":"event_004","audio_end_ms":2460,"item_id":"item_u1"}
S> {"type":"input_audio_buffer.committed","event_id":"event_005","previous_item_id":null,"item_id":"item_u1"}
S> {"type":"conversation.item.created","event_id":"event_006","previous_item_id":null,"item":{"id":"item_u1","object":"realtime.item","type":"message","role":"user","status":"completed","content":[{"type":"input_audio","transcript":null}]}}
S> {"type":"response.created","event_id":"event_007","response":{"id":"resp_1","object":"realtime.response","status":"in_progress","status_details":null,"output":[],"usage":null}}
S> {"type":"rate_limits.updated","event_id":"event_008","rate_limits":[{"name":"tokens","limit":120000,"remaining":118000,"reset_seconds":1.2}]}
S> {"type":"conversation.item.input_audio_transcription.completed","event_id":"event_009","item_id":"item_u1","content_index":0,"transcript":"What's the weather in Paris?"}
S> {"type":"response.output_item.added","event_id":"event_010","response_id":"resp_1","output_index":0,"item":{"id":"item_fc1","object":"realtime.item","type":"function_call","name":"get_weather","call_id":"call_A1","arguments":"","status":"in_progress"}}
S> {"type":"conversation.item.created","event_id":"event_011","previous_item_id":"item_u1","item":{"id":"item_fc1","object":"realtime.item","type":"function_call","name":"get_weather","call_id":"call_A1","arguments":"","status":"in_progress"}}
S> {"type":"response.function_call_arguments.delta","event_id":"event_012","response_id":"resp_1","item_id":"item_fc1","output_index":0,"call_id":"call_A1","delta":"{\"city\":"}
S> {"type":"response.function_call_arguments.delta","event_id":"event_013","response_id":"resp_1","item_id":"item_fc1","output_index":0,"call_id":"call_A1","delta":"\"Paris\"}"}
S> {"type":"response.function_call_arguments.done","event_id":"event_014","response_id":"resp_1","item_id":"item_fc1","output_index":0,"call_id":"call_A1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"}
S> {"type":"response.output_item.done","event_id":"event_015","response_id":"resp_1","output_index":0,"item":{"id":"item_fc1","object":"realtime.item","type":"function_call","name":"get_weather","call_id":"call_A1","arguments":"{\"city\":\"Paris\"}","status":"completed"}}
S> {"type":"response.done","event_id":"event_016","response":{"id":"resp_1","object":"realtime.response","status":"completed","status_details":null,"output":[{"id":"item_fc1","object":"realtime.item","type":"function_call","name":"get_weather","call_id":"call_A1","arguments":"{\"city\":\"Paris\"}","status":"completed"}],"usage":{"total_tokens":310,"input_tokens":290,"output_tokens":20,"input_token_details":{"cached_tokens":0,"text_tokens":250,"audio_tokens":40},"output_token_details":{"text_tokens":20,"audio_tokens":0}}}}
C> {"type":"conversation.item.create","event_id":"cli_2","previous_item_id":"item_fc1","item":{"type":"function_call_output","call_id":"call_A1","output":"{\"city\":\"Paris\",\"temp_c\":21,\"sky\":\"sunny\"}"}}
S> {"type":"conversation.item.created","event_id":"event_017","previous_item_id":"item_fc1","item":{"id":"item_fo1","object":"realtime.item","type":"function_call_output","call_id":"call_A1","output":"{\"city\":\"Paris\",\"temp_c\":21,\"sky\":\"sunny\"}"}}
C> {"type":"response.create","event_id":"cli_3"}
S> {"type":"response.created","event_id":"event_018","response":{"id":"resp_2","object":"realtime.response","status":"in_progress","status_details":null,"output":[],"usage":null}}
S> {"type":"response.output_item.added","event_id":"event_019","response_id":"resp_2","output_index":0,"item":{"id":"item_a2","object":"realtime.item","type":"message","role":"assistant","status":"in_progress","content":[]}}
S> {"type":"conversation.item.created","event_id":"event_020","previous_item_id":"item_fo1","item":{"id":"item_a2","object":"realtime.item","type":"message","role":"assistant","status":"in_progress","content":[]}}
S> {"type":"response.content_part.added","event_id":"event_021","response_id":"resp_2","item_id":"item_a2","output_index":0,"content_index":0,"part":{"type":"audio","transcript":""}}
S> {"type":"response.audio_transcript.delta","event_id":"event_022","response_id":"resp_2","item_id":"item_a2","output_index":0,"content_index":0,"delta":"It's sunny in Paris"}
S> {"type":"response.audio.delta","event_id":"event_023","response_id":"resp_2","item_id":"item_a2","output_index":0,"content_index":0,"delta":"/v8AAP7/AQD9/w=="}
S> {"type":"response.audio.delta","event_id":"event_024","response_id":"resp_2","item_id":"item_a2","output_index":0,"content_index":0,"delta":"AAABAAIAAwA="}
S> {"type":"response.audio_transcript.delta","event_id":"event_025","response_id":"resp_2","item_id":"item_a2","output_index":0,"content_index":0,"delta":", 21 degrees."}
S> {"type":"response.audio.delta","event_id":"event_026","response_id":"resp_2","item_id":"item_a2","output_index":0,"content_index":0,"delta":"AAABAAIAAwA="}
S> {"type":"response.audio.done","event_id":"event_027","response_id":"resp_2","item_id":"item_a2","output_index":0,"content_index":0}
S> {"type":"response.audio_transcript.done","event_id":"event_028","response_id":"resp_2","item_id":"item_a2","output_index":0,"content_index":0,"transcript":"It's sunny in Paris, 21 degrees."}
S> {"type":"response.content_part.done","event_id":"event_029","response_id":"resp_2","item_id":"item_a2","output_index":0,"content_index":0,"part":{"type":"audio","transcript":"It's sunny in Paris, 21 degrees."}}
S> {"type":"response.output_item.done","event_id":"event_030","response_id":"resp_2","output_index":0,"item":{"id":"item_a2","object":"realtime.item","type":"message","role":"assistant","status":"completed","content":[{"type":"audio","transcript":"It's sunny in Paris, 21 degrees."}]}}
S> {"type":"response.done","event_id":"event_031","response":{"id":"resp_2","object":"realtime.response","status":"completed","status_details":null,"output":[{"id":"item_a2","object":"realtime.item","type":"message","role":"assistant","status":"completed","content":[{"type":"audio","transcript":"It's sunny in Paris, 21 degrees."}]}],"usage":{"total_tokens":420,"input_tokens":330,"output_tokens":90,"input_token_details":{"cached_tokens":256,"text_tokens":290,"audio_tokens":40},"output_token_details":{"text_tokens":20,"audio_tokens":70}}}}
S> {"type":"response.audio.delta","event_id":"event_101","response_id":"resp_3","item_id":"item_a3","output_index":0,"content_index":0,"delta":"AAABAAIAAwA="}
S> {"type":"response.audio.delta","event_id":"event_102","response_id":"resp_3","item_id":"item_a3","output_index":0,"content_index":0,"delta":"AAABAAIAAwA="}
S> {"type":"input_audio_buffer.speech_started","event_id":"event_103","audio_start_ms":15320,"item_id":"item_u4"}
C> {"type":"response.cancel","event_id":"cli_10"}
S> {"type":"response.audio.done","event_id":"event_104","response_id":"resp_3","item_id":"item_a3","output_index":0,"content_index":0}
S> {"type":"response.audio_transcript.done","event_id":"event_105","response_id":"resp_3","item_id":"item_a3","output_index":0,"content_index":0,"transcript":"Sure. The first step is to open the settings page and then"}
S> {"type":"response.content_part.done","event_id":"event_106","response_id":"resp_3","item_id":"item_a3","output_index":0,"content_index":0,"part":{"type":"audio","transcript":"Sure. The first step is to open the settings page and then"}}
S> {"type":"response.output_item.done","event_id":"event_107","response_id":"resp_3","output_index":0,"item":{"id":"item_a3","object":"realtime.item","type":"message","role":"assistant","status":"incomplete","content":[{"type":"audio","transcript":"Sure. The first step is to open the settings page and then"}]}}
S> {"type":"response.done","event_id":"event_108","response":{"id":"resp_3","object":"realtime.response","status":"cancelled","status_details":{"type":"cancelled","reason":"turn_detected"},"output":[{"id":"item_a3","object":"realtime.item","type":"message","role":"assistant","status":"incomplete","content":[{"type":"audio","transcript":"Sure. The first step is to open the settings page and then"}]}],"usage":{"total_tokens":600,"input_tokens":400,"output_tokens":200,"input_token_details":{"cached_tokens":0,"text_tokens":300,"audio_tokens":100},"output_token_details":{"text_tokens":40,"audio_tokens":160}}}}
S> {"type":"error","event_id":"event_109","error":{"type":"invalid_request_error","code":null,"message":"Cancellation failed: no active response","param":null,"event_id":"cli_10"}}
C> {"type":"conversation.item.truncate","event_id":"cli_11","item_id":"item_a3","content_index":0,"audio_end_ms":1840}
S> {"type":"conversation.item.truncated","event_id":"event_110","item_id":"item_a3","content_index":0,"audio_end_ms":1840}
S> {"type":"input_audio_buffer.speech_stopped","event_id":"event_111","audio_end_ms":16900,"item_id":"item_u4"}
S> {"type":"input_audio_buffer.committed","event_id":"event_112","previous_item_id":"item_a3","item_id":"item_u4"}
S> {"type":"conversation.item.created","event_id":"event_113","previous_item_id":"item_a3","item":{"id":"item_u4","object":"realtime.item","type":"message","role":"user","status":"completed","content":[{"type":"input_audio","transcript":null}]}}
S> {"type":"response.created","event_id":"event_114","response":{"id":"resp_4","object":"realtime.response","status":"in_progress","status_details":null,"output":[],"usage":null}}
"""

# event_id -> (class, {dotted attribute path: expected value}) for every S> line above.
EXPECTED: dict[str, tuple[type[ev.ServerEvent], dict[str, Any]]] = {
    "event_001": (
        ev.SessionCreated,
        {
            "session.id": "sess_01",
            "session.voice": "alloy",
            "session.turn_detection.type": "server_vad",
            "session.input_audio_transcription": None,
            "session.max_response_output_tokens": "inf",
            "session.tools": [],
        },
    ),
    "event_002": (
        ev.SessionUpdated,
        {
            "session.voice.type": "azure-standard",
            "session.voice.name": "en-US-Ava:DragonHDLatestNeural",
            "session.turn_detection.type": "azure_semantic_vad",
            "session.turn_detection.interrupt_response": True,
            "session.input_audio_noise_reduction.type": "azure_deep_noise_suppression",
            "session.input_audio_transcription.model": "azure-speech",
            "session.tools.0.name": "get_weather",
            "session.input_audio_sampling_rate": 24000,
        },
    ),
    "event_003": (ev.InputAudioBufferSpeechStarted, {"audio_start_ms": 820, "item_id": "item_u1"}),
    "event_004": (ev.InputAudioBufferSpeechStopped, {"audio_end_ms": 2460, "item_id": "item_u1"}),
    "event_005": (ev.InputAudioBufferCommitted, {"item_id": "item_u1", "previous_item_id": None}),
    "event_006": (
        ev.ConversationItemCreated,
        {
            "item.id": "item_u1",
            "item.role": "user",
            "item.content.0.type": "input_audio",
            "item.content.0.transcript": None,
        },
    ),
    "event_007": (
        ev.ResponseCreated,
        {
            "response.id": "resp_1",
            "response.status": "in_progress",
            "response.output": [],
            "response.usage": None,
        },
    ),
    "event_008": (
        ev.RateLimitsUpdated,
        {
            "rate_limits.0.name": "tokens",
            "rate_limits.0.limit": 120000,
            "rate_limits.0.remaining": 118000,
            "rate_limits.0.reset_seconds": 1.2,
        },
    ),
    "event_009": (
        ev.ConversationItemInputAudioTranscriptionCompleted,
        {"item_id": "item_u1", "content_index": 0, "transcript": "What's the weather in Paris?"},
    ),
    "event_010": (
        ev.ResponseOutputItemAdded,
        {
            "response_id": "resp_1",
            "output_index": 0,
            "item.name": "get_weather",
            "item.call_id": "call_A1",
            "item.arguments": "",
            "item.status": "in_progress",
        },
    ),
    "event_011": (
        ev.ConversationItemCreated,
        {"previous_item_id": "item_u1", "item.id": "item_fc1", "item.call_id": "call_A1"},
    ),
    "event_012": (
        ev.ResponseFunctionCallArgumentsDelta,
        {"call_id": "call_A1", "item_id": "item_fc1", "delta": '{"city":'},
    ),
    "event_013": (ev.ResponseFunctionCallArgumentsDelta, {"delta": '"Paris"}'}),
    "event_014": (
        ev.ResponseFunctionCallArgumentsDone,
        {
            "response_id": "resp_1",
            "call_id": "call_A1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
    ),
    "event_015": (
        ev.ResponseOutputItemDone,
        {"item.arguments": '{"city":"Paris"}', "item.status": "completed"},
    ),
    "event_016": (
        ev.ResponseDone,
        {
            "response.status": "completed",
            "response.output.0.call_id": "call_A1",
            "response.usage.total_tokens": 310,
            "response.usage.input_token_details.audio_tokens": 40,
        },
    ),
    "event_017": (
        ev.ConversationItemCreated,
        {
            "item.id": "item_fo1",
            "item.call_id": "call_A1",
            "item.output": '{"city":"Paris","temp_c":21,"sky":"sunny"}',
        },
    ),
    "event_018": (ev.ResponseCreated, {"response.id": "resp_2"}),
    "event_019": (
        ev.ResponseOutputItemAdded,
        {"item.id": "item_a2", "item.role": "assistant", "item.content": []},
    ),
    "event_020": (
        ev.ConversationItemCreated,
        {"previous_item_id": "item_fo1", "item.status": "in_progress"},
    ),
    "event_021": (
        ev.ResponseContentPartAdded,
        {"item_id": "item_a2", "content_index": 0, "part.type": "audio", "part.transcript": ""},
    ),
    "event_022": (ev.ResponseAudioTranscriptDelta, {"delta": "It's sunny in Paris"}),
    "event_023": (
        ev.ResponseAudioDelta,
        {"response_id": "resp_2", "item_id": "item_a2", "delta": "/v8AAP7/AQD9/w=="},
    ),
    "event_024": (ev.ResponseAudioDelta, {"item_id": "item_a2"}),
    "event_025": (ev.ResponseAudioTranscriptDelta, {"delta": ", 21 degrees."}),
    "event_026": (ev.ResponseAudioDelta, {"output_index": 0, "content_index": 0}),
    "event_027": (ev.ResponseAudioDone, {"response_id": "resp_2", "item_id": "item_a2"}),
    "event_028": (
        ev.ResponseAudioTranscriptDone,
        {"transcript": "It's sunny in Paris, 21 degrees."},
    ),
    "event_029": (
        ev.ResponseContentPartDone,
        {"part.transcript": "It's sunny in Paris, 21 degrees."},
    ),
    "event_030": (
        ev.ResponseOutputItemDone,
        {
            "item.status": "completed",
            "item.content.0.transcript": "It's sunny in Paris, 21 degrees.",
        },
    ),
    "event_031": (
        ev.ResponseDone,
        {
            "response.id": "resp_2",
            "response.output.0.role": "assistant",
            "response.usage.input_token_details.cached_tokens": 256,
            "response.usage.output_token_details.audio_tokens": 70,
        },
    ),
    "event_101": (ev.ResponseAudioDelta, {"response_id": "resp_3", "item_id": "item_a3"}),
    "event_102": (ev.ResponseAudioDelta, {"response_id": "resp_3"}),
    "event_103": (
        ev.InputAudioBufferSpeechStarted,
        {"audio_start_ms": 15320, "item_id": "item_u4"},
    ),
    "event_104": (ev.ResponseAudioDone, {"item_id": "item_a3"}),
    "event_105": (
        ev.ResponseAudioTranscriptDone,
        {"transcript": "Sure. The first step is to open the settings page and then"},
    ),
    "event_106": (ev.ResponseContentPartDone, {"part.type": "audio"}),
    "event_107": (ev.ResponseOutputItemDone, {"item.status": "incomplete"}),
    "event_108": (
        ev.ResponseDone,
        {
            "response.status": "cancelled",
            "response.cancelled": True,
            "response.status_details.type": "cancelled",
            "response.status_details.reason": "turn_detected",
            "response.output.0.id": "item_a3",
        },
    ),
    "event_109": (
        ev.ErrorEvent,
        {
            "error.type": "invalid_request_error",
            "error.code": None,
            "error.message": "Cancellation failed: no active response",
            "error.param": None,
            "error.event_id": "cli_10",
        },
    ),
    "event_110": (
        ev.ConversationItemTruncated,
        {"item_id": "item_a3", "content_index": 0, "audio_end_ms": 1840},
    ),
    "event_111": (ev.InputAudioBufferSpeechStopped, {"audio_end_ms": 16900}),
    "event_112": (
        ev.InputAudioBufferCommitted,
        {"previous_item_id": "item_a3", "item_id": "item_u4"},
    ),
    "event_113": (ev.ConversationItemCreated, {"item.id": "item_u4", "item.role": "user"}),
    "event_114": (ev.ResponseCreated, {"response.id": "resp_4", "response.status": "in_progress"}),
}


def _frames(direction: str) -> list[str]:
    prefix = f"{direction}> "
    return [line[len(prefix) :] for line in TRANSCRIPT.splitlines() if line.startswith(prefix)]


def _attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Transcripts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", _frames("S"), ids=lambda f: json.loads(f)["event_id"])
def test_transcript_server_frames_parse_into_their_classes(frame: str) -> None:
    event = ev.parse_server_event(frame)
    cls, checks = EXPECTED[event.event_id]
    assert type(event) is cls
    assert event.type == json.loads(frame)["type"]
    for path, value in checks.items():
        assert _attr(event, path) == value, path


def test_every_transcript_server_frame_has_expectations() -> None:
    ids = [json.loads(f)["event_id"] for f in _frames("S")]
    assert sorted(ids) == sorted(EXPECTED)


@pytest.mark.parametrize("frame", _frames("C"), ids=lambda f: json.loads(f)["type"])
def test_transcript_client_frames_round_trip_exactly(frame: str) -> None:
    event = ev.parse_client_event(frame)
    assert type(event) is ev.CLIENT_EVENT_TYPES[json.loads(frame)["type"]]
    assert json.loads(event.to_json()) == json.loads(frame)


def test_transcript_audio_delta_decodes() -> None:
    event = ev.parse_server_event(
        _frames("S")[[json.loads(f)["event_id"] for f in _frames("S")].index("event_023")]
    )
    assert isinstance(event, ev.ResponseAudioDelta)
    assert event.audio_bytes() == bytes.fromhex("feff0000feff0100fdff")


def test_transcript_items_use_specific_item_classes() -> None:
    by_id = {json.loads(f)["event_id"]: ev.parse_server_event(f) for f in _frames("S")}
    assert type(by_id["event_006"].item) is ev.ResponseMessageItem
    assert type(by_id["event_006"].item.content[0]) is ev.ResponseInputAudioPart
    assert type(by_id["event_010"].item) is ev.ResponseFunctionCallItem
    assert type(by_id["event_017"].item) is ev.ResponseFunctionCallOutputItem
    assert type(by_id["event_021"].part) is ev.ResponseAudioPart
    assert type(by_id["event_016"].response.output[0]) is ev.ResponseFunctionCallItem


# ---------------------------------------------------------------------------------------------
# Registry coverage
# ---------------------------------------------------------------------------------------------

# Every server event type the protocol doc lists for api-version 2025-10-01 (§3.1–§3.6).
DOC_SERVER_TYPES_2025_10_01 = {
    # §3.1
    "session.created",
    "session.updated",
    "error",
    "warning",
    "rate_limits.updated",
    "session.avatar.connecting",
    # §3.2
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    # §3.3
    "conversation.item.created",
    "conversation.item.retrieved",
    "conversation.item.truncated",
    "conversation.item.deleted",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    # §3.4
    "response.created",
    "response.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.text.delta",
    "response.text.done",
    "response.audio_transcript.delta",
    "response.audio_transcript.done",
    "response.audio.delta",
    "response.audio.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    # §3.5
    "response.audio_timestamp.delta",
    "response.audio_timestamp.done",
    "response.animation_viseme.delta",
    "response.animation_viseme.done",
    "response.animation_blendshapes.delta",
    "response.animation_blendshapes.done",
    # §3.6, documented for 2025-10-01
    "mcp_list_tools.in_progress",
    "mcp_list_tools.completed",
    "mcp_list_tools.failed",
    "response.mcp_call_arguments.delta",
    "response.mcp_call_arguments.done",
    "response.mcp_call.in_progress",
    "response.mcp_call.completed",
    "response.mcp_call.failed",
}

# Every client event type the protocol doc lists for api-version 2025-10-01 (§2).
DOC_CLIENT_TYPES_2025_10_01 = {
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "session.avatar.connect",
    "input_audio.turn.start",
    "input_audio.turn.append",
    "input_audio.turn.end",
    "input_audio.turn.cancel",
    "input_audio.clear",
}

# Server types the official SDK (1.3.1) knows but the doc places after 2025-10-01 (§3.6 "Later
# (SDK 1.2.0–1.3.0)"); a 2025-10-01 session never sends them, so they parse as unknown.
SDK_TYPES_LATER_THAN_2025_10_01 = {
    "output_audio_buffer.cleared",
    "session.avatar.switch_to_speaking",
    "session.avatar.switch_to_idle",
    "response.video.delta",
    "response.web_search_call.searching",
    "response.web_search_call.in_progress",
    "response.web_search_call.completed",
    "response.file_search_call.searching",
    "response.file_search_call.in_progress",
    "response.file_search_call.completed",
    "response.audio_transcript.annotation.added",
    "response.invocation.delta",
}
# Likewise for client types (§2 "Later versions only").
SDK_CLIENT_TYPES_LATER_THAN_2025_10_01 = {
    "output_audio_buffer.clear",
    "mcp_approval_response",  # sent as a conversation.item.create item instead (§2.1)
    "input_text.delta",
    "input_text.done",
}

_IDS = {"response_id": "resp_1", "item_id": "item_1"}

# A minimal valid frame (required fields only) for every registered server type.
MINIMAL_SERVER_EVENTS: dict[str, dict[str, Any]] = {
    "session.created": {"session": {}},
    "session.updated": {"session": {"voice": {"type": "azure-standard", "name": "x"}}},
    "error": {"error": {"message": "boom"}},
    "warning": {"warning": {"message": "careful"}},
    "rate_limits.updated": {"rate_limits": []},
    "session.avatar.connecting": {"server_sdp": "djA="},
    "input_audio_buffer.speech_started": {"audio_start_ms": 0, "item_id": "item_1"},
    "input_audio_buffer.speech_stopped": {"audio_end_ms": 10, "item_id": "item_1"},
    "input_audio_buffer.committed": {"item_id": "item_1"},
    "input_audio_buffer.cleared": {},
    "conversation.item.created": {"item": {"type": "message", "role": "user"}},
    "conversation.item.retrieved": {
        "item": {"type": "function_call_output", "call_id": "c", "output": ""}
    },
    "conversation.item.truncated": {"item_id": "item_1", "audio_end_ms": 0},
    "conversation.item.deleted": {"item_id": "item_1"},
    "conversation.item.input_audio_transcription.delta": {"item_id": "item_1"},
    "conversation.item.input_audio_transcription.completed": {
        "item_id": "item_1",
        "transcript": "",
    },
    "conversation.item.input_audio_transcription.failed": {
        "item_id": "item_1",
        "error": {"message": "no"},
    },
    "response.created": {"response": {"id": "resp_1", "status": "in_progress"}},
    "response.done": {"response": {"id": "resp_1", "status": "canceled"}},
    "response.output_item.added": {
        "response_id": "resp_1",
        "item": {"type": "mcp_list_tools", "server_label": "s"},
    },
    "response.output_item.done": {
        "response_id": "resp_1",
        "item": {"type": "mcp_call", "server_label": "s", "name": "n"},
    },
    "response.content_part.added": {**_IDS, "part": {"type": "text"}},
    "response.content_part.done": {**_IDS, "part": {"type": "text", "text": "hi"}},
    "response.text.delta": {**_IDS, "delta": "h"},
    "response.text.done": {**_IDS, "text": "hi"},
    "response.audio_transcript.delta": {**_IDS, "delta": "h"},
    "response.audio_transcript.done": {**_IDS, "transcript": "hi"},
    "response.audio.delta": {**_IDS, "delta": ""},
    "response.audio.done": dict(_IDS),
    "response.function_call_arguments.delta": {**_IDS, "call_id": "c", "delta": "{"},
    "response.function_call_arguments.done": {
        **_IDS,
        "call_id": "c",
        "name": "f",
        "arguments": "{}",
    },
    "response.audio_timestamp.delta": {
        **_IDS,
        "audio_offset_ms": 0,
        "audio_duration_ms": 300,
        "text": "Hi",
        "timestamp_type": "word",
    },
    "response.audio_timestamp.done": dict(_IDS),
    "response.animation_viseme.delta": {**_IDS, "audio_offset_ms": 50, "viseme_id": 7},
    "response.animation_viseme.done": dict(_IDS),
    "response.animation_blendshapes.delta": {**_IDS, "frame_index": 0, "frames": [[0.0, 0.5]]},
    "response.animation_blendshapes.done": dict(_IDS),
    "mcp_list_tools.in_progress": {"item_id": "item_1"},
    "mcp_list_tools.completed": {"item_id": "item_1"},
    "mcp_list_tools.failed": {"item_id": "item_1"},
    "response.mcp_call_arguments.delta": {**_IDS, "delta": "{"},
    "response.mcp_call_arguments.done": dict(_IDS),
    "response.mcp_call.in_progress": {"item_id": "item_1"},
    "response.mcp_call.completed": {"item_id": "item_1"},
    "response.mcp_call.failed": {"item_id": "item_1"},
}


def test_registry_is_exactly_the_documented_2025_10_01_server_types() -> None:
    assert set(ev.SERVER_EVENT_TYPES) == DOC_SERVER_TYPES_2025_10_01
    assert set(MINIMAL_SERVER_EVENTS) == set(ev.SERVER_EVENT_TYPES)


def test_registry_classes_match_their_keys() -> None:
    for registry in (ev.SERVER_EVENT_TYPES, ev.CLIENT_EVENT_TYPES):
        for wire_type, cls in registry.items():
            assert cls.model_fields["type"].default == wire_type
    assert len(set(ev.SERVER_EVENT_TYPES.values())) == len(ev.SERVER_EVENT_TYPES)
    assert all(issubclass(c, ev.ServerEvent) for c in ev.SERVER_EVENT_TYPES.values())
    assert ev.UnknownServerEvent not in ev.SERVER_EVENT_TYPES.values()


@pytest.mark.parametrize("wire_type", sorted(MINIMAL_SERVER_EVENTS))
def test_minimal_server_event_parses_into_its_class(wire_type: str) -> None:
    frame = json.dumps({"type": wire_type, **MINIMAL_SERVER_EVENTS[wire_type]})
    event = ev.parse_server_event(frame)
    assert type(event) is ev.SERVER_EVENT_TYPES[wire_type]
    assert event.event_id is None


def _has_required_fields(cls: type[ev.ServerEvent]) -> bool:
    return any(f.is_required() for name, f in cls.model_fields.items() if name != "type")


@pytest.mark.parametrize(
    "wire_type", sorted(t for t, c in ev.SERVER_EVENT_TYPES.items() if _has_required_fields(c))
)
def test_server_event_without_its_required_fields_is_malformed(wire_type: str) -> None:
    with pytest.raises(ev.MalformedEvent) as info:
        ev.parse_server_event(json.dumps({"type": wire_type}))
    assert info.value.event_type == wire_type
    assert repr(wire_type) in str(info.value)


def test_registry_covers_the_sdk_server_types_of_2025_10_01() -> None:
    models = need_module("azure.ai.voicelive.models", VOICELIVE_SDK)
    sdk = {member.value for member in models.ServerEventType}
    assert SDK_TYPES_LATER_THAN_2025_10_01 <= sdk  # the exclusions are real SDK types
    assert sdk - SDK_TYPES_LATER_THAN_2025_10_01 <= set(ev.SERVER_EVENT_TYPES)


def test_client_registry_covers_the_doc_and_sdk_client_types_of_2025_10_01() -> None:
    assert set(ev.CLIENT_EVENT_TYPES) == DOC_CLIENT_TYPES_2025_10_01
    models = need_module("azure.ai.voicelive.models", VOICELIVE_SDK)
    sdk = {member.value for member in models.ClientEventType}
    assert SDK_CLIENT_TYPES_LATER_THAN_2025_10_01 <= sdk
    assert sdk - SDK_CLIENT_TYPES_LATER_THAN_2025_10_01 == set(ev.CLIENT_EVENT_TYPES)


# ---------------------------------------------------------------------------------------------
# Server-side leniency
# ---------------------------------------------------------------------------------------------


def test_extra_fields_are_kept() -> None:
    event = ev.parse_server_event(
        json.dumps({"type": "input_audio_buffer.cleared", "new_field": [1], "event_id": "e"})
    )
    assert event.model_extra == {"new_field": [1]}


def test_unknown_item_and_content_part_types_fall_back() -> None:
    frame = {
        "type": "response.done",
        "response": {
            "id": "r",
            "status": "completed",
            "output": [
                {"type": "web_search_call", "id": "ws1", "query": "x"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "u"}],
                },
            ],
        },
    }
    event = ev.parse_server_event(json.dumps(frame))
    unknown_item, message = event.response.output
    assert type(unknown_item) is ev.UnknownResponseItem
    assert (unknown_item.type, unknown_item.id, unknown_item.model_extra) == (
        "web_search_call",
        "ws1",
        {"query": "x"},
    )
    assert type(message.content[0]) is ev.UnknownContentPart
    assert message.content[0].type == "input_image"


def test_mcp_items_and_status_details() -> None:
    frame = {
        "type": "response.done",
        "response": {
            "id": "r",
            "status": "failed",
            "status_details": {"type": "failed", "error": {"type": "server_error", "code": "x"}},
            "output": [
                {
                    "type": "mcp_list_tools",
                    "server_label": "s",
                    "tools": [{"name": "t", "input_schema": {"type": "object"}}],
                },
                {
                    "type": "mcp_call",
                    "server_label": "s",
                    "name": "t",
                    "arguments": "{}",
                    "output": "ok",
                },
                {
                    "type": "mcp_approval_request",
                    "server_label": "s",
                    "name": "t",
                    "arguments": "{}",
                },
                {"type": "mcp_approval_response", "approval_request_id": "a", "approve": True},
            ],
        },
    }
    event = ev.parse_server_event(json.dumps(frame))
    assert [type(i) for i in event.response.output] == [
        ev.ResponseMcpListToolsItem,
        ev.ResponseMcpCallItem,
        ev.ResponseMcpApprovalRequestItem,
        ev.ResponseMcpApprovalResponseItem,
    ]
    assert event.response.output[0].tools[0].name == "t"
    assert event.response.status_details.error.code == "x"
    assert event.response.status_details.error.message is None


@pytest.mark.parametrize("status", ["cancelled", "canceled"])
def test_both_cancelled_spellings(status: str) -> None:
    event = ev.parse_server_event(
        json.dumps({"type": "response.done", "response": {"id": "r", "status": status}})
    )
    assert event.response.cancelled


def test_open_enumerations_accept_new_values() -> None:
    frame = {"type": "error", "error": {"type": "brand_new_error", "message": "m"}}
    assert ev.parse_server_event(json.dumps(frame)).error.type == "brand_new_error"
    frame = {
        "type": "response.done",
        "response": {
            "id": "r",
            "status": "paused",
            "status_details": {"type": "paused", "reason": "new_reason"},
        },
    }
    event = ev.parse_server_event(json.dumps(frame))
    assert (event.response.status, event.response.status_details.reason) == ("paused", "new_reason")


def test_blendshape_frames_may_be_a_string() -> None:
    frame = {
        "type": "response.animation_blendshapes.delta",
        **_IDS,
        "frame_index": 3,
        "frames": "AAAA",
    }
    assert ev.parse_server_event(json.dumps(frame)).frames == "AAAA"


def test_audio_delta_repr_hides_the_payload() -> None:
    payload = _b64(bytes(4800))
    event = ev.parse_server_event(
        json.dumps({"type": "response.audio.delta", **_IDS, "delta": payload})
    )
    assert payload not in repr(event)
    assert event.audio_bytes() == bytes(4800)


def test_audio_delta_with_bad_base64_raises_malformed() -> None:
    event = ev.parse_server_event(
        json.dumps({"type": "response.audio.delta", **_IDS, "delta": "!!not base64!!" * 20})
    )
    with pytest.raises(ev.MalformedEvent) as info:
        event.audio_bytes()
    message = str(info.value)
    assert "response.audio.delta" in message and "delta" in message and "base64" in message
    assert "not base64" not in message


def test_binary_utf8_frame_is_accepted() -> None:
    frame = '{"type":"conversation.item.input_audio_transcription.completed","item_id":"i","transcript":"Grüße"}'
    event = ev.parse_server_event(frame.encode("utf-8"))
    assert isinstance(event, ev.ConversationItemInputAudioTranscriptionCompleted)
    assert event.transcript == "Grüße"


def test_unknown_type_gives_unknown_server_event() -> None:
    raw = {"type": "output_audio_buffer.cleared", "event_id": "e9", "x": {"y": 1}}
    event = ev.parse_server_event(json.dumps(raw))
    assert type(event) is ev.UnknownServerEvent
    assert (event.type, event.event_id, event.raw) == ("output_audio_buffer.cleared", "e9", raw)
    event = ev.parse_server_event('{"type":"brand.new","event_id":5}')
    assert type(event) is ev.UnknownServerEvent and event.event_id is None


def test_server_events_are_immutable() -> None:
    event = ev.parse_server_event(json.dumps({"type": "conversation.item.deleted", "item_id": "a"}))
    with pytest.raises(ValidationError):
        event.item_id = "b"


# ---------------------------------------------------------------------------------------------
# Malformed frames
# ---------------------------------------------------------------------------------------------

HUGE = "Q" * 1_000_000


@pytest.mark.parametrize(
    ("frame", "event_type", "path", "words"),
    [
        ("not json", None, None, ["not JSON"]),
        (b"\xff\xfe{", None, None, ["UTF-8"]),
        ("[1, 2]", None, None, ["list", "object"]),
        ('"just a string"', None, None, ["string", "object"]),
        ("{}", None, None, ["type"]),
        ('{"type": 42}', None, None, ["type", "42"]),
        ('{"type": null}', None, None, ["type", "None"]),
        (
            '{"type":"input_audio_buffer.speech_started","audio_start_ms":"abc","item_id":"i"}',
            "input_audio_buffer.speech_started",
            "audio_start_ms",
            ["integer", "'abc'"],
        ),
        (
            '{"type":"response.audio.delta","response_id":"r","item_id":"i","delta":5}',
            "response.audio.delta",
            "delta",
            ["string"],
        ),
        (
            '{"type":"response.audio.delta","response_id":"r","delta":"AAAA"}',
            "response.audio.delta",
            "item_id",
            ["required"],
        ),
        (
            '{"type":"response.function_call_arguments.done","response_id":"r","item_id":"i","call_id":"c","arguments":"{}"}',
            "response.function_call_arguments.done",
            "name",
            ["required"],
        ),
        (
            '{"type":"error","error":{"type":"server_error"}}',
            "error",
            "error.message",
            ["required"],
        ),
        (
            '{"type":"response.done","response":{"id":"r","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"audio","transcript":7}]}]}}',
            "response.done",
            "response.output[0].content[0].transcript",
            ["string"],
        ),
        (
            '{"type":"response.done","response":{"id":"r","status":"completed","output":[{"type":"function_call","name":"f","call_id":"c"}]}}',
            "response.done",
            "response.output[0].arguments",
            ["required"],
        ),
        (
            '{"type":"response.done","response":{"id":"r","status":"completed","output":[{"id":"no type"}]}}',
            "response.done",
            "response.output[0].type",
            ["required"],
        ),
        (
            '{"type":"conversation.item.created","item":5}',
            "conversation.item.created",
            "item",
            ["dictionary"],
        ),
        ('{"type":"session.created","session":[]}', "session.created", "session", ["list"]),
    ],
)
def test_malformed_frames(
    frame: str | bytes, event_type: str | None, path: str | None, words: list[str]
) -> None:
    with pytest.raises(ev.MalformedEvent) as info:
        ev.parse_server_event(frame)
    error = info.value
    message = str(error)
    assert isinstance(error, ValueError)
    assert (error.event_type, error.path) == (event_type, path)
    assert "\n" not in message and len(message) <= 300
    if event_type:
        assert event_type in message and path in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": HUGE, "item_id": "i"},
        {"type": "response.audio.delta", "response_id": "r", "item_id": ["x"], "delta": HUGE},
        {"type": "response.audio.delta", "response_id": "r", "item_id": "i"}
        | {"delta": {"audio": HUGE}},
        {
            "type": "conversation.item.created",
            "item": {"type": "message", "role": "user", "content": HUGE},
        },
        {"type": "error", "error": {"message": "m", "code": [HUGE]}},
    ],
)
def test_malformed_messages_never_carry_huge_values(frame: dict[str, Any]) -> None:
    with pytest.raises(ev.MalformedEvent) as info:
        ev.parse_server_event(json.dumps(frame))
    message = str(info.value)
    assert frame["type"] in message
    assert info.value.path and info.value.path in message
    assert "Q" * 81 not in message
    assert len(message) <= 300 and "\n" not in message
    # nor through the exception chain (which loggers print with exc_info)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_huge_value_names_the_field_and_its_length() -> None:
    frame = {"type": "input_audio_buffer.speech_started", "audio_start_ms": HUGE, "item_id": "i"}
    with pytest.raises(ev.MalformedEvent) as info:
        ev.parse_server_event(json.dumps(frame))
    assert "audio_start_ms" in str(info.value)
    assert f"{len(HUGE)} chars" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Client events
# ---------------------------------------------------------------------------------------------

SESSION_UPDATE_4_2 = r"""{"type":"session.update","session":{
 "modalities":["text","audio"],"instructions":"Be brief.",
 "voice":{"type":"azure-standard","name":"en-US-Ava:DragonHDLatestNeural","temperature":0.8},
 "input_audio_format":"pcm16","output_audio_format":"pcm16","input_audio_sampling_rate":24000,
 "turn_detection":{"type":"azure_semantic_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":500,
   "end_of_utterance_detection":{"model":"semantic_detection_v1","threshold_level":"default","timeout_ms":1000},
   "interrupt_response":true,"auto_truncate":true,"create_response":true},
 "input_audio_noise_reduction":{"type":"azure_deep_noise_suppression"},
 "input_audio_echo_cancellation":{"type":"server_echo_cancellation"},
 "input_audio_transcription":{"model":"azure-speech","language":"en-US"},
 "tools":[{"type":"function","name":"get_weather","description":"Get weather",
   "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}],
 "tool_choice":"auto","temperature":0.8,"max_response_output_tokens":"inf"}}"""

FUNCTION_OUTPUT_5 = r"""{"type":"conversation.item.create","previous_item_id":"<function_call item id>",
 "item":{"type":"function_call_output","call_id":"<same call_id>","output":"{\"temperature\":22,\"unit\":\"celsius\"}"}}"""


def test_session_update_of_section_4_2_built_in_code() -> None:
    session = RequestSession(
        modalities=["text", "audio"],
        instructions="Be brief.",
        voice=AzureStandardVoice(name="en-US-Ava:DragonHDLatestNeural", temperature=0.8),
        input_audio_format="pcm16",
        output_audio_format="pcm16",
        input_audio_sampling_rate=24000,
        turn_detection=AzureSemanticVad(
            end_of_utterance_detection={"model": "semantic_detection_v1"},
            auto_truncate=True,
        ),
        input_audio_noise_reduction={"type": "azure_deep_noise_suppression"},
        input_audio_echo_cancellation={"type": "server_echo_cancellation"},
        input_audio_transcription={"model": "azure-speech", "language": "en-US"},
        tools=[
            FunctionTool(
                name="get_weather",
                description="Get weather",
                parameters={
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            )
        ],
        tool_choice="auto",
        temperature=0.8,
        max_response_output_tokens="inf",
    )
    event = ev.SessionUpdate(session=session)
    assert json.loads(event.to_json()) == json.loads(SESSION_UPDATE_4_2)
    assert event.to_json().startswith('{"type":"session.update",')


def test_session_update_of_section_4_2_round_trips() -> None:
    event = ev.parse_client_event(SESSION_UPDATE_4_2)
    assert isinstance(event, ev.SessionUpdate)
    assert json.loads(event.to_json()) == json.loads(SESSION_UPDATE_4_2)


def test_session_update_sends_explicit_null_turn_detection() -> None:
    event = ev.SessionUpdate(session=RequestSession(turn_detection=None))
    assert event.to_json() == '{"type":"session.update","session":{"turn_detection":null}}'


def test_function_call_output_of_section_5() -> None:
    event = ev.ConversationItemCreate.function_call_output(
        "<same call_id>",
        json.dumps({"temperature": 22, "unit": "celsius"}, separators=(",", ":")),
        previous_item_id="<function_call item id>",
    )
    assert json.loads(event.to_json()) == json.loads(FUNCTION_OUTPUT_5)
    assert isinstance(event.item, ev.FunctionCallOutput)


def test_function_call_output_must_be_a_string() -> None:
    with pytest.raises(ValidationError):
        ev.FunctionCallOutput(call_id="c", output={"temp": 1})


def test_from_pcm_base64_encodes() -> None:
    pcm = bytes(range(256)) * 10
    event = ev.InputAudioBufferAppend.from_pcm(pcm)
    assert json.loads(event.to_json()) == {"type": "input_audio_buffer.append", "audio": _b64(pcm)}
    assert event.pcm() == pcm
    assert _b64(pcm) not in repr(event)


def test_from_pcm_refuses_more_than_the_service_limit() -> None:
    with pytest.raises(ValueError, match="15 MiB"):
        ev.InputAudioBufferAppend.from_pcm(bytes(ev.MAX_APPEND_BYTES + 1))


PCM_B64 = _b64(b"\x01\x00\x02\x00")

# An example of every client event type with its exact wire object.
CLIENT_EXAMPLES: list[tuple[ev.ClientEvent, dict[str, Any]]] = [
    (
        ev.SessionUpdate(session=RequestSession(instructions="", turn_detection=ServerVad())),
        {
            "type": "session.update",
            "session": {
                "instructions": "",
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "create_response": True,
                    "interrupt_response": True,
                    "auto_truncate": False,
                },
            },
        },
    ),
    (
        ev.InputAudioBufferAppend(audio=PCM_B64, event_id="a1"),
        {"type": "input_audio_buffer.append", "event_id": "a1", "audio": PCM_B64},
    ),
    (ev.InputAudioBufferCommit(), {"type": "input_audio_buffer.commit"}),
    (ev.InputAudioBufferClear(), {"type": "input_audio_buffer.clear"}),
    (ev.InputAudioTurnStart(turn_id="t1"), {"type": "input_audio.turn.start", "turn_id": "t1"}),
    (
        ev.InputAudioTurnAppend(turn_id="t1", audio=PCM_B64),
        {"type": "input_audio.turn.append", "turn_id": "t1", "audio": PCM_B64},
    ),
    (ev.InputAudioTurnEnd(turn_id="t1"), {"type": "input_audio.turn.end", "turn_id": "t1"}),
    (ev.InputAudioTurnCancel(turn_id="t1"), {"type": "input_audio.turn.cancel", "turn_id": "t1"}),
    (ev.InputAudioClear(), {"type": "input_audio.clear"}),
    (
        ev.ConversationItemCreate(item=ev.SystemMessage.from_text("Be nice.")),
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Be nice."}],
            },
        },
    ),
    (
        ev.ConversationItemCreate(
            item=ev.UserMessage(
                content=[
                    ev.InputTextContent(text="hi"),
                    ev.InputAudioContent(audio=PCM_B64, transcript="hi"),
                ]
            ),
            previous_item_id="root",
        ),
        {
            "type": "conversation.item.create",
            "previous_item_id": "root",
            "item": {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "hi"},
                    {"type": "input_audio", "audio": PCM_B64, "transcript": "hi"},
                ],
            },
        },
    ),
    (
        ev.ConversationItemCreate(item=ev.AssistantMessage.from_text("Hello.")),
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "Hello."}],
            },
        },
    ),
    (
        ev.ConversationItemCreate(
            item=ev.FunctionCall(name="get_weather", call_id="call_1", arguments='{"city":"Paris"}')
        ),
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call",
                "name": "get_weather",
                "call_id": "call_1",
                "arguments": '{"city":"Paris"}',
            },
        },
    ),
    (
        ev.ConversationItemCreate(
            item=ev.FunctionCallOutput(call_id="call_1", output='{"temp_c":21}', id="my_item")
        ),
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"temp_c":21}',
                "id": "my_item",
            },
        },
    ),
    (
        ev.ConversationItemCreate(
            item=ev.MCPApprovalResponse(approval_request_id="mcp_approval_req_1", approve=True)
        ),
        {
            "type": "conversation.item.create",
            "item": {
                "type": "mcp_approval_response",
                "approval_request_id": "mcp_approval_req_1",
                "approve": True,
            },
        },
    ),
    (
        ev.ConversationItemRetrieve(item_id="item_1"),
        {"type": "conversation.item.retrieve", "item_id": "item_1"},
    ),
    (
        ev.ConversationItemTruncate(item_id="item_a3", audio_end_ms=1840),
        {
            "type": "conversation.item.truncate",
            "item_id": "item_a3",
            "content_index": 0,
            "audio_end_ms": 1840,
        },
    ),
    (
        ev.ConversationItemDelete(item_id="item_1"),
        {"type": "conversation.item.delete", "item_id": "item_1"},
    ),
    (ev.ResponseCreate(), {"type": "response.create"}),
    (
        ev.ResponseCreate(additional_instructions="Mention the time."),
        {"type": "response.create", "additional_instructions": "Mention the time."},
    ),
    (
        ev.ResponseCreate(
            response=ev.ResponseCreateParams(
                commit=False,
                cancel_previous=True,
                modalities=["text"],
                instructions="Say hi.",
                voice=AzureStandardVoice(name="en-US-AvaNeural"),
                output_audio_format="pcm16_16000hz",
                tools=[FunctionTool(name="f")],
                tool_choice="auto",
                temperature=0.7,
                max_output_tokens="inf",
                input_items=[],
                append_input_items=[ev.UserMessage.from_text("q")],
                pre_generated_assistant_message=ev.AssistantMessage.from_text("Hi!"),
                metadata={"k": "v"},
            )
        ),
        {
            "type": "response.create",
            "response": {
                "commit": False,
                "cancel_previous": True,
                "modalities": ["text"],
                "instructions": "Say hi.",
                "voice": {"type": "azure-standard", "name": "en-US-AvaNeural"},
                "output_audio_format": "pcm16_16000hz",
                "tools": [
                    {
                        "type": "function",
                        "name": "f",
                        "description": "",
                        "parameters": {"type": "object", "properties": {}},
                    }
                ],
                "tool_choice": "auto",
                "temperature": 0.7,
                "max_output_tokens": "inf",
                "input_items": [],
                "append_input_items": [
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "q"}],
                    }
                ],
                "pre_generated_assistant_message": {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "text", "text": "Hi!"}],
                },
                "metadata": {"k": "v"},
            },
        },
    ),
    (ev.ResponseCancel(), {"type": "response.cancel"}),
    (
        ev.ResponseCancel(response_id="resp_3", event_id="cli_10"),
        {"type": "response.cancel", "event_id": "cli_10", "response_id": "resp_3"},
    ),
    (
        ev.SessionAvatarConnect(client_sdp="djA9MA=="),
        {"type": "session.avatar.connect", "client_sdp": "djA9MA=="},
    ),
]


@pytest.mark.parametrize(("event", "wire"), CLIENT_EXAMPLES, ids=lambda x: getattr(x, "type", ""))
def test_client_event_wire_json(event: ev.ClientEvent, wire: dict[str, Any]) -> None:
    text = event.to_json()
    assert json.loads(text) == wire
    assert text.startswith(f'{{"type":"{event.type}"')  # type first, compact separators
    assert " " not in text.replace("Be nice.", "").replace("Say hi.", "").replace(
        "Mention the time.", ""
    )


def test_client_examples_cover_every_client_type() -> None:
    assert {e.type for e, _ in CLIENT_EXAMPLES} == set(ev.CLIENT_EVENT_TYPES)


@pytest.mark.parametrize(("event", "wire"), CLIENT_EXAMPLES, ids=lambda x: getattr(x, "type", ""))
def test_client_event_round_trip(event: ev.ClientEvent, wire: dict[str, Any]) -> None:
    text = event.to_json()
    back = ev.parse_client_event(text)
    assert type(back) is type(event)
    assert back == event
    assert back.to_json() == text
    assert ev.parse_client_event(text.encode()) == event


@pytest.mark.parametrize("wire_type", sorted(ev.CLIENT_EVENT_TYPES))
def test_client_event_rejects_extra_fields(wire_type: str) -> None:
    cls = ev.CLIENT_EVENT_TYPES[wire_type]
    wire = next(w for e, w in CLIENT_EXAMPLES if e.type == wire_type)
    kwargs = {k: v for k, v in wire.items() if k != "type"}
    with pytest.raises(ValidationError):
        cls(**kwargs, surprise=1)
    with pytest.raises(ev.MalformedEvent, match="surprise"):
        ev.parse_client_event(json.dumps({**wire, "surprise": 1}))


def test_client_events_are_strict() -> None:
    with pytest.raises(ValidationError):
        ev.ConversationItemTruncate(item_id="i", audio_end_ms="1840")
    with pytest.raises(ValidationError):
        ev.ConversationItemTruncate(item_id="i", audio_end_ms=-1)
    with pytest.raises(ValidationError):
        ev.ConversationItemCreate(item={"type": "message", "role": "tool", "content": []})
    with pytest.raises(ValidationError):
        ev.UserMessage(content=[ev.TextContent(text="assistant-only part")])
    with pytest.raises(ev.MalformedEvent, match="unknown client event type"):
        ev.parse_client_event('{"type":"response.cancelled"}')


def test_request_items_accept_dicts() -> None:
    event = ev.ConversationItemCreate(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    )
    assert isinstance(event.item, ev.UserMessage)


# ---------------------------------------------------------------------------------------------
# Speed and robustness
# ---------------------------------------------------------------------------------------------


def test_audio_delta_parse_is_fast() -> None:
    # 100 ms of 24 kHz pcm16 = 4800 bytes; the real budget is ~10 frames/s, so this bound only
    # catches a pathological regression (e.g. a second JSON pass), not CI noise.
    frame = json.dumps(
        {
            "type": "response.audio.delta",
            "event_id": "event_1",
            **_IDS,
            "output_index": 0,
            "content_index": 0,
            "delta": _b64(bytes(4800)),
        }
    )
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        ev.parse_server_event(frame)
    per_event = (time.perf_counter() - start) / n
    assert per_event < 200e-6


_json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
# Objects whose type is a known one (and whose fields are plausible names), so validation
# paths deep inside the models are exercised, not just the "unknown type" exit.
_field_names = st.sampled_from(
    sorted(
        {n for c in ev.SERVER_EVENT_TYPES.values() for n in c.model_fields}
        | {"item", "response", "part"}
    )
)
_event_objects = st.builds(
    lambda t, fields: {**fields, "type": t},
    st.sampled_from(sorted(ev.SERVER_EVENT_TYPES)) | st.text(max_size=10) | _json_scalars,
    st.dictionaries(_field_names, _json_values, max_size=6),
)
_frames_strategy = (
    _event_objects.map(json.dumps)
    | _json_values.map(json.dumps)
    | _event_objects.map(lambda o: json.dumps(o).encode())
    | st.text(max_size=50)
    | st.binary(max_size=50)
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames_strategy)
def test_parse_server_event_returns_an_event_or_raises_malformed(frame: str | bytes) -> None:
    try:
        event = ev.parse_server_event(frame)
    except ev.MalformedEvent as error:
        message = str(error)
        assert "\n" not in message and len(message) <= 300
    else:
        assert isinstance(event, ev.ServerEvent)
        if type(event) is not ev.UnknownServerEvent:
            assert type(event) is ev.SERVER_EVENT_TYPES[event.type]
