"""Config loading and validation: every section, every kind of mistake, exact messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgevoice import config as config_mod
from edgevoice.config import Config, ConfigError, find_config_path, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = ROOT / "config" / "edgevoice.toml"


def errors_of(text: str, label: str = "edgevoice.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, label)
    return info.value.errors


def test_documented_defaults_equal_builtin_defaults() -> None:
    assert load_config(DEFAULTS) == Config()


def test_every_key_of_the_schema_is_documented() -> None:
    text = DEFAULTS.read_text()

    for section in ("audio", "wake", "vad", "voicelive", "session", "ducking", "push_to_talk",
                    "feedback", "service", "metrics", "cues", "limits", "context"):
        model = Config.model_fields[section].annotation
        for key in model.model_fields:  # type: ignore[union-attr]
            assert f"{key} =" in text or f"{key}]" in text or f"# {key} =" in text, \
                f"{section}.{key} is not in config/edgevoice.toml"


def test_threshold_message_matches_the_documented_format() -> None:
    assert errors_of("[session.turn_detection]\nthreshold = 1.7\n") == [
        "edgevoice.toml: session.turn_detection.threshold: must be between 0 and 1, got 1.7"
    ]


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[audio]\nframe_ms = 25\n", "audio.frame_ms: must be one of 10, 20 or 30, got 25"),
        ("[audio]\ninput_device = \"\"\n", "audio.input_device: must not be empty"),
        ("[audio]\nbogus = 1\n", "audio.bogus: unknown key"),
        ("[[wake.models]]\nname = \"hey_jarvis\"\ntrigger_level = 0\n",
         "wake.models[0].trigger_level: must be >= 1, got 0"),
        ("[wake]\npreroll_ms = 500\n", "wake.preroll_ms: must be >= 1500, got 500"),
        ("[wake]\nthreads = 0\n", "wake.threads: must be >= 1, got 0"),
        ("[[wake.models]]\nname = \"hey_jarvis\"\nengine = \"pico\"\n",
         "wake.models[0].engine: must be one of 'openwakeword' or 'micro', got 'pico'"),
        ("[[wake.models]]\nname = \"hey_jarvis\"\nsliding_window = 3\n",
         "wake.models[0]: sliding_window is a setting of engine = \"micro\" only"),
        ("[bargein]\nstop_words = [{ name = \"stop\", engine = \"snowboy\" }]\n",
         "bargein.stop_words[0].engine: must be one of 'openwakeword' or 'micro', got 'snowboy'"),
        ("[vad]\naggressiveness = 4\n", "vad.aggressiveness: must be <= 3, got 4"),
        ("[vad]\nframe_ms = \"20\"\n", "vad.frame_ms: must be one of 10, 20 or 30, got '20'"),
        ("[voicelive]\nendpoint = \"ws://voice.example.com\"\n",
         "voicelive.endpoint: plain ws:// is only allowed for loopback hosts, use wss://"),
        ("[voicelive]\nendpoint = \"ftp://x\"\n", "voicelive.endpoint: must be a wss:// or https:// URL"),
        ("[voicelive]\nauth = \"password\"\n",
         "voicelive.auth: must be one of 'api-key' or 'entra', got 'password'"),
        ("[voicelive]\nbackoff_s = []\n", "voicelive.backoff_s: must not be empty"),
        ("[voicelive]\nsession_max_s = 7200.0\n", "voicelive.session_max_s: must be <= 3600"),
        ("[voicelive.agent]\nproject_name = \"p\"\n",
         "voicelive.agent: set exactly one of id (classic agents) or name (agents v2)"),
        ("[voicelive]\nextra_query = { api-key = \"x\" }\n",
         "voicelive.extra_query: 'api-key' is a secret and must not be in the config file"),
        ("[voice]\ntype = \"azure-standard\"\n", "voice.name: required key is missing"),
        ("[voice]\ntype = \"azure-custom\"\nname = \"v\"\n", "voice.endpoint_id: required key is missing"),
        ("[voice]\ntype = \"robot\"\n", "voice: type must be one of"),
        ("[voice]\nname = \"bob\"\n", "voice.name: must be one of 'alloy'"),
        ("[voice]\ntype = \"azure-standard\"\nname = \"x\"\ntemperature = 2.0\n",
         "voice.temperature: must be between 0 and 1, got 2"),
        ("[session]\ninput_audio_format = \"mp3\"\n", "session.input_audio_format: must be one of"),
        ("[session]\ninput_audio_format = \"g711_ulaw\"\n",
         "session: input_audio_format g711_ulaw needs input_audio_sampling_rate 8000, got 16000"),
        ("[session]\noutput_audio_format = \"pcm16_44100hz\"\n", "session.output_audio_format"),
        ("[session]\ntemperature = 2.0\n", "session.temperature: must be between 0.6 and 1.2, got 2"),
        ("[session]\nmax_response_output_tokens = 5000\n", "session.max_response_output_tokens"),
        ("[session]\nmodalities = [\"audio\"]\n", "session: modalities: audio alone is not allowed"),
        ("[session.turn_detection]\ntype = \"server_vad\"\nspeech_duration_ms = 100\n",
         "session.turn_detection: speech_duration_ms needs an azure_semantic_vad type"),
        ("[session.turn_detection]\ncreate_response = \"yes\"\n",
         "session.turn_detection.create_response: must be true or false, got 'yes'"),
        ("[session.turn_detection.end_of_utterance_detection]\nthreshold_level = \"max\"\n",
         "session.turn_detection.end_of_utterance_detection.threshold_level: must be one of"),
        ("[session.input_transcription]\nmodel = \"siri\"\n", "session.input_transcription.model"),
        ("[ducking]\nbackend = \"loud\"\n", "ducking.backend: must be one of"),
        ("[ducking.mpris]\nbus = \"user\"\n", "ducking.mpris.bus: must be one of"),
        ("[ducking.mpris]\naddress = \"/run/bus\"\n",
         "ducking.mpris.address: must be a D-Bus address"),
        ("[service]\nlog_level = \"trace\"\n", "service.log_level: must be one of"),
        ("[[tools]]\nname = \"bad name\"\n", "tools[0].name: must match"),
        ("[[tools]]\nname = \"a\"\nbuiltin = \"get_time\"\n"
         "[[tools]]\nname = \"a\"\nbuiltin = \"get_time\"\n",
         "(top level): tool names must be unique, repeated: a"),
        ("audio = 3\n", "audio: must be a table, got 3"),
    ],
)
def test_invalid_values_name_the_key_and_the_reason(toml: str, expected: str) -> None:
    errors = errors_of(toml)
    assert any(e.startswith("edgevoice.toml: ") and expected in e for e in errors), errors


def test_all_errors_reported_at_once() -> None:
    errors = errors_of(
        "[audio]\nframe_ms = 7\n[vad]\naggressiveness = 9\n[session.turn_detection]\n"
        "threshold = -1\nextra = true\n"
    )
    assert len(errors) == 4, errors


def test_syntax_error_names_the_line() -> None:
    (error,) = errors_of("[audio]\ninput_device = \"x\"\nframe_ms = = 3\n", "my.toml")
    assert error.startswith("my.toml: TOML syntax error") and "line 3" in error


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.errors == [f"{tmp_path / 'nope.toml'}: file not found"]


def test_secrets_in_the_file_are_refused_without_echoing_them() -> None:
    errors = errors_of("[voicelive]\napi_key = \"sk-very-secret-value\"\n")
    assert errors == ["edgevoice.toml: voicelive.api_key: secrets must not be in the config file"]
    assert not any("sk-very-secret-value" in e for e in errors)


def test_valid_full_configuration_builds_the_session() -> None:
    cfg = parse_config(
        """
        [voicelive]
        endpoint = "https://myres.services.ai.azure.com"
        model = "gpt-4.1"
        auth = "entra"
        credential_scope = "https://cognitiveservices.azure.com/.default"
        extra_query = { region = "westeurope" }
        [voice]
        type = "azure-personal"
        name = "me"
        model = "DragonLatestNeural"
        [session]
        modalities = ["text"]
        input_audio_format = "g711_alaw"
        input_audio_sampling_rate = 8000
        output_audio_format = "g711_ulaw"
        noise_reduction = "none"
        echo_cancellation = false
        max_response_output_tokens = 200
        [session.turn_detection]
        type = "azure_semantic_vad_multilingual"
        languages = ["en", "de"]
        remove_filler_words = true
        speech_duration_ms = 120
        auto_truncate = true
        [session.turn_detection.end_of_utterance_detection]
        model = "semantic_detection_v1_multilingual"
        threshold_level = "high"
        timeout_ms = 800
        [session.input_transcription]
        model = "azure-speech"
        language = "en-US,de-DE"
        phrase_list = ["edgevoice"]
        [[tools]]
        name = "get_time"
        description = "Current time"
        parameters = { type = "object", properties = {} }
        builtin = "get_time"
        """,
        "full.toml",
    )
    wire = cfg.request_session().wire()
    assert wire["voice"] == {"type": "azure-personal", "name": "me", "model": "DragonLatestNeural"}
    assert wire["turn_detection"]["type"] == "azure_semantic_vad_multilingual"
    assert wire["turn_detection"]["end_of_utterance_detection"]["timeout_ms"] == 800
    assert wire["turn_detection"]["auto_truncate"] is True
    assert wire["input_audio_noise_reduction"] is None
    assert wire["input_audio_echo_cancellation"] is None
    assert wire["input_audio_transcription"]["phrase_list"] == ["edgevoice"]
    assert wire["tools"][0]["name"] == "get_time" and wire["tool_choice"] == "auto"
    assert wire["max_response_output_tokens"] == 200


def test_turn_detection_none_is_sent_as_null_and_agents_drop_instructions() -> None:
    cfg = parse_config(
        '[session.turn_detection]\ntype = "none"\n[session.input_transcription]\nenabled = false\n'
        '[voicelive]\nauth = "entra"\n[voicelive.agent]\nid = "asst_1"\nproject_name = "p"\n',
        "x.toml",
    )
    wire = cfg.request_session().wire()
    assert wire["turn_detection"] is None and wire["input_audio_transcription"] is None
    assert "instructions" not in wire
    assert cfg.voicelive.model is None


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc.toml"
    monkeypatch.setattr(config_mod, "SYSTEM_CONFIG", system)
    assert find_config_path(None, {}) is None  # built-in defaults
    system.write_text("")
    assert find_config_path(None, {}) == system
    assert find_config_path(None, {"EDGEVOICE_CONFIG": "env.toml"}) == Path("env.toml")
    assert find_config_path("cli.toml", {"EDGEVOICE_CONFIG": "env.toml"}) == Path("cli.toml")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgevoice", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_check_config_command(tmp_path: Path) -> None:
    ok = run_cli("check-config", "--config", str(DEFAULTS))
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = tmp_path / "edgevoice.toml"
    bad.write_text("[session.turn_detection]\nthreshold = 1.7\n[audio]\nframe_ms = 1\n")
    res = run_cli("check-config", "--config", str(bad))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert f"{bad}: session.turn_detection.threshold: must be between 0 and 1, got 1.7" in lines
    assert len(lines) == 2
    missing = run_cli("check-config", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "file not found" in missing.stderr


@pytest.mark.parametrize(("listen", "reason"), [
    ("9464", 'must be host:port (e.g. "127.0.0.1:9464"), got \'9464\''),
    ("localhost", 'must be host:port (e.g. "127.0.0.1:9464"), got \'localhost\''),
    (":9464", 'must be host:port (e.g. "127.0.0.1:9464"), got \':9464\''),
    ("127.0.0.1:0", "the port must be 1..65535, got '0'"),
    ("127.0.0.1:65536", "the port must be 1..65535, got '65536'"),
    ("127.0.0.1:http", "the port must be 1..65535, got 'http'"),
    ("::1:9464", "an IPv6 address needs brackets: [::1]:9464"),
    ("[::g]:9464", "[::g] is not an IPv6 address"),
    ("my host:9464", "'my host' is not a host name or address"),
])
def test_bad_metrics_listen_is_refused_naming_the_key(listen: str, reason: str) -> None:
    assert errors_of(f'[metrics]\nlisten = "{listen}"\n') == [
        f"edgevoice.toml: metrics.listen: {reason}"]


def test_metrics_listen_forms_and_the_non_loopback_warning(tmp_path: Path) -> None:
    assert Config().metrics.address() is None  # off by default
    for listen, address in [("127.0.0.1:9464", ("127.0.0.1", 9464)),
                            ("[::1]:9464", ("::1", 9464)), ("pi.local:80", ("pi.local", 80))]:
        cfg = parse_config(f'[metrics]\nlisten = "{listen}"\n', "x")
        assert cfg.metrics.address() == address
    assert errors_of("[metrics]\nlisten = 9464\n") == [
        "edgevoice.toml: metrics.listen: must be a string, got 9464"]
    assert errors_of("[metrics]\nport = 9464\n") == [
        "edgevoice.toml: metrics.port: unknown key"]
    wide = tmp_path / "edgevoice.toml"
    wide.write_text('[metrics]\nlisten = "0.0.0.0:9464"\n')
    res = run_cli("check-config", "--config", str(wide))
    assert res.returncode == 0 and "valid" in res.stdout
    assert "warning: metrics.listen 0.0.0.0:9464 is reachable from the network" in res.stderr
    local = tmp_path / "local.toml"
    local.write_text('[metrics]\nlisten = "127.0.0.1:9464"\n')
    res = run_cli("check-config", "--config", str(local))
    assert res.returncode == 0 and res.stderr == ""


def test_word_timestamps_need_an_azure_voice() -> None:
    assert errors_of('[session]\noutput_audio_timestamp_types = ["word"]\n') == [
        "edgevoice.toml: (top level): session.output_audio_timestamp_types: word timestamps "
        "need an Azure voice ([voice] type = \"azure-standard\", …); OpenAI voices have none "
        "(leave the key out or set [])"]
    assert errors_of('[session]\noutput_audio_timestamp_types = ["viseme"]\n') == [
        "edgevoice.toml: session.output_audio_timestamp_types[0]: must be one of 'word', "
        "got 'viseme'"]
    cfg = parse_config('[voice]\ntype = "azure-standard"\nname = "en-US-AvaNeural"\n'
                       '[session]\noutput_audio_timestamp_types = ["word"]\n', "x")
    assert cfg.request_session().wire()["output_audio_timestamp_types"] == ["word"]
