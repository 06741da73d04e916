"""Config and simulator-script keys for reply outcomes, limits, context and agents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevoice.config import Config, ConfigError, parse_config
from edgevoice.daemon import EARCON_RATE, load_cue_earcons
from edgevoice.devkit.simulator.script import Failure, RateLimitEntry, Script


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "e.toml")
    return info.value.errors


def test_an_agent_with_an_api_key_is_refused_with_the_reason() -> None:
    assert errors('[voicelive.agent]\nid = "asst_1"\nproject_name = "p"\n') == [
        'e.toml: voicelive: an agent ([voicelive.agent]) needs auth = "entra": the agent '
        "service takes Microsoft Entra tokens, not an API key"]
    parse_config('[voicelive]\nauth = "entra"\n[voicelive.agent]\nid = "a"\nproject_name = "p"\n',
                 "e.toml")


def test_check_config_refuses_an_agent_with_an_api_key(tmp_path: Path) -> None:
    from test_config import run_cli
    config = tmp_path / "agent.toml"
    config.write_text('[voicelive]\nendpoint = "wss://x.services.ai.azure.com"\n'
                      '[voicelive.agent]\nid = "asst_1"\nproject_name = "p"\n')
    res = run_cli("check-config", "--config", str(config))
    assert res.returncode == 2
    assert f'{config}: voicelive: an agent ([voicelive.agent]) needs auth = "entra"' in res.stderr
    config.write_text(config.read_text().replace("[voicelive.agent]",
                                                 'auth = "entra"\n[voicelive.agent]'))
    assert run_cli("check-config", "--config", str(config)).returncode == 0


def test_cues_limits_and_context_keys(tmp_path: Path) -> None:
    cfg = parse_config('[cues]\nfailed_earcon = ""\nspeak = true\n'
                       '[limits]\ntokens_per_hour = 5000\n'
                       '[session.turn_detection]\ncreate_response = false\n'
                       '[context]\ncommand = ["/bin/date", "+%Z"]\ntimeout_s = 0.5\n', "e.toml")
    assert cfg.cues.earcon("failed") == "" and cfg.cues.earcon("filtered") is None
    assert dict(cfg.cues.lines())["filtered"] == "Sorry, I can't help with that."
    assert cfg.limits.tokens_per_hour == 5000 and cfg.limits.tokens_per_day is None
    assert cfg.context.command == ["/bin/date", "+%Z"]
    assert errors(f'[cues]\nfiltered_earcon = "{tmp_path}/none.wav"\n') == [
        f"e.toml: cues.filtered_earcon: no such file: {tmp_path}/none.wav"]
    assert errors("[limits]\ntokens_per_day = 0\n") == [
        "e.toml: limits.tokens_per_day: must be >= 1, got 0"]
    assert errors('[context]\ncommand = ["date"]\n') == [
        "e.toml: context.command: the program must be an absolute path, got 'date'"]
    assert errors('[context]\ncommand = ["/bin/date"]\n') == [
        'e.toml: (top level): context.command needs session.turn_detection.create_response = '
        'false (or type "none"): the context goes with the replies the daemon asks for']


def test_script_outcome_keys_are_parsed() -> None:
    script = Script.from_dict({"turn": [
        {"say": "Here is half", "outcome": "incomplete", "reason": "content_filter",
         "usage": {"input_text_tokens": 100, "output_audio_tokens": 50},
         "rate_limits": [{"name": "tokens", "limit": 100, "remaining": 40,
                          "reset_seconds": 2}],
         "warning": {"message": "fallback voice", "code": "voice"}},
        {"outcome": "failed", "failure": {"code": "x", "message": "boom"},
         "transcription_failed": {"message": "unclear"}},
        {"outcome": "incomplete"},
    ]})
    first, second, third = script.turns
    assert (first.outcome, first.reason) == ("incomplete", "content_filter")
    assert first.usage == (("input_text_tokens", 100), ("output_audio_tokens", 50))
    assert first.rate_limits == (RateLimitEntry("tokens", 100, 40, 2.0),)
    assert first.warning == (("message", "fallback voice"), ("code", "voice"))
    assert second.failure == Failure(type="server_error", code="x", message="boom")
    assert second.transcription_failed is not None
    assert second.transcription_failed.type == "transcription_error"
    assert third.reason == "max_output_tokens"


@pytest.mark.parametrize(("turn", "message"), [
    ({"outcome": "done"}, "turn[0].outcome: must be one of failed, incomplete, got 'done'"),
    ({"reason": "content_filter"}, 'turn[0].reason: needs outcome = "incomplete"'),
    ({"outcome": "incomplete", "failure": {}}, 'turn[0].failure: needs outcome = "failed"'),
    ({"outcome": "failed", "error": {"message": "x"}},
     "turn[0].outcome: cannot be combined with `error` (no response is made)"),
    ({"outcome": "failed", "calls": [{"name": "x"}]},
     "turn[0].outcome: a failed reply says nothing and calls nothing"),
    ({"usage": {"input_tokens": 3}}, "turn[0].usage.input_tokens: unknown key"),
    ({"usage": {"cached_tokens": -1}},
     "turn[0].usage.cached_tokens: must be between 0 and 10000000, got -1"),
    ({"rate_limits": [{"name": "t", "limit": 1}]}, "turn[0].rate_limits[0].remaining: is required"),
    ({"warning": {"code": "x"}}, "turn[0].warning.message: is required"),
    ({"transcription_failed": {"message": "m"}, "user": "hi"},
     "turn[0].transcription_failed: cannot be combined with `user` (no transcript is made)"),
])
def test_script_outcome_keys_are_validated_with_their_path(turn: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Script.from_dict({"turn": [turn]}, source="s.toml")
    assert str(info.value).startswith(f"s.toml: {message}"), str(info.value)


def test_earcons_of_the_cues_are_distinct_short_and_can_be_turned_off() -> None:
    sounds = load_cue_earcons(Config())
    assert set(sounds) == {"failed", "filtered", "not_understood", "limit"}
    for pcm in sounds.values():
        assert 0.2 < len(pcm) / 2 / EARCON_RATE < 0.6
        assert np.abs(np.frombuffer(pcm, "<i2")).max() > 2000
    assert len(set(sounds.values())) == 4
    off = load_cue_earcons(Config.model_validate({"cues": {"failed_earcon": ""}}))
    assert "failed" not in off and "filtered" in off


def test_the_outcomes_demo_script_loads_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    """``edgevoice demo --script``: the bundled example loads; a broken file is exit 2 with
    one line naming the file and the key, before anything starts."""
    import subprocess
    import sys

    from edgevoice.devkit.simulator.script import Script

    example = Path(__file__).resolve().parents[2] / "config/examples/simulator-script-outcomes.toml"
    script = Script.load(example)
    assert script.turns[0].outcome == "incomplete" and script.turns[0].reason == "content_filter"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[turn]]\noutcome = "exploded"\n')
    res = subprocess.run([sys.executable, "-m", "edgevoice", "demo", "--script", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"demo: {bad}: turn[0].outcome: must be one of failed, incomplete, got 'exploded'"], \
        res.stderr
    # An output whose folder cannot be made: one line too, at once.
    (tmp_path / "file").write_text("")
    res = subprocess.run([sys.executable, "-m", "edgevoice", "demo", "--output",
                          str(tmp_path / "file" / "reply.wav")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.strip().startswith("demo: --output "), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
