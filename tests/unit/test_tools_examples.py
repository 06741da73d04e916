"""The documented tools: the examples, the commented sample of the defaults and the README's
example all pass the config check, written as a user would write them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgevoice.config import load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"


@pytest.mark.parametrize("example", ["raspberry-pi.toml", "car.toml"])
def test_examples_pass_check_config(example: str) -> None:
    path = EXAMPLES / example
    cli = Path(sys.executable).with_name("edgevoice")
    argv = [str(cli)] if cli.exists() else [sys.executable, "-m", "edgevoice"]
    res = subprocess.run([*argv, "check-config", "--config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    cfg = load_config(path)
    assert len(cfg.tools) >= 3 and f"{len(cfg.tools)} tool(s)" in res.stdout
    for tool in cfg.tools:
        # Written as a user would: every tool and every parameter says what it is.
        assert tool.description, tool.name
        for name, prop in tool.parameters.get("properties", {}).items():
            assert prop.get("description"), f"{tool.name}.{name}"


def test_examples_cover_each_kind_of_action() -> None:
    pi = load_config(EXAMPLES / "raspberry-pi.toml").tools
    car = load_config(EXAMPLES / "car.toml").tools
    assert {"gpio", "mqtt"} <= {t.action for t in pi}
    assert {t.gpio.kind for t in pi if t.gpio} >= {"output", "pwm"}  # a relay and an LED
    assert {"command", "mqtt"} <= {t.action for t in car}
    assert any(t.confirm for t in car)


def test_the_commented_sample_in_the_defaults_is_valid() -> None:
    text = (ROOT / "config" / "edgevoice.toml").read_text()
    block = text[text.index("# [[tools]]"):].splitlines()
    # Uncomment one level: the sample's own lines, not the alternatives marked "# #".
    sample = "\n".join(line[2:] for line in block if line.startswith("# ")
                       and not line.startswith("# #"))
    cfg = parse_config(sample, "sample.toml")
    assert [t.action for t in cfg.tools] == ["command"]


def test_the_readme_example_is_valid() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Tools"):]
    example = section[section.index("```toml") + 7:section.index("```\n", 1)]
    (tool,) = parse_config(example, "README.md").tools
    assert tool.confirm and tool.command is not None
