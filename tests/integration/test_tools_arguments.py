"""Call-time refusals with real commands, the process cap and the environment of children.

Every refusal is an error output to the model and one log line; nothing runs (the recording
command never writes) and nothing is recorded as started (the call record holds the refusal
itself, never the "started" mark that a restart would answer with "interrupted").
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from edgevoice.tools import ToolBox, ToolSpec
from edgevoice.tools.store import INTERRUPTED

pytestmark = pytest.mark.timeout(60)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tools"
RECORD = FIXTURES / "record.py"
SPAN = FIXTURES / "span.py"

WORD = {"type": "string", "pattern": "^[^\\n]*$", "maxLength": 64}


def tool(name: str, argv: list[str], properties: dict[str, Any], **fields: Any) -> ToolSpec:
    return ToolSpec.model_validate({
        "name": name, "command": {"argv": argv},
        "parameters": {"type": "object", "properties": properties,
                       "required": list(properties)}, **fields})


def runs(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []


async def test_option_injection_through_sort_is_refused(tmp_path: Path) -> None:
    # The case: "-o/tmp/x" given to sort wrote a file.
    data, target = tmp_path / "notes.txt", tmp_path / "written"
    data.write_text("b\na\n")
    box = ToolBox([tool("sort_notes", ["/usr/bin/sort", "{how}", str(data)],
                        {"how": {"type": "string", "pattern": "^.*$", "maxLength": 256}})])
    out = json.loads(await box.call("c1", "sort_notes", json.dumps({"how": f"-o{target}"})))
    assert out["ok"] is False and out["field"] == "how"
    assert "starts with '-'" in out["error"]
    assert not target.exists()


async def test_path_traversal_and_bad_text_are_refused_before_anything_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out, state = tmp_path / "runs.jsonl", tmp_path / "state"
    box = ToolBox([tool("note", [sys.executable, str(RECORD), str(out), "notes/{name}.txt"],
                        {"name": WORD}),
                   tool("dash", [sys.executable, str(RECORD), str(out), "{n}"],
                        {"n": {"type": "integer"}}, allow_dash=["n"])],
                  state_dir=state)
    caplog.set_level(logging.INFO, "edgevoice.tools")
    cases = [
        ('{"name": "../secret"}', "name", "contains '/'"),
        ('{"name": ".."}', "name", "is a path component"),
        ('{"name": "/etc/passwd"}', "name", "contains '/'"),
        ('{"name": "a\\u0000b"}', "name", "NUL"),
        ('{"name": "a\\ud800b"}', "name", "lone surrogate"),
        ('{"name": "a\\u001b[2Jb"}', "name", "control character"),
        ('{"name": "a", "extra": 1}', None, "Additional properties"),
        ('{"name": NaN}', None, "NaN is not a number JSON allows"),
        ('{"name": Infinity}', None, "Infinity is not a number JSON allows"),
    ]
    for i, (arguments, field, why) in enumerate(cases):
        caplog.clear()
        output = json.loads(await box.call(f"c{i}", "note", arguments))
        assert output["ok"] is False and why in output["error"], output
        assert output.get("field") == field
        lines = [r for r in caplog.records if r.name == "edgevoice.tools"]
        assert len(lines) == 1 and lines[0].outcome == "invalid"  # type: ignore[attr-defined]
        recorded = json.loads((state / "tool-calls.json").read_text())["calls"]
        assert {"call_id": f"c{i}", "output": json.dumps(output, ensure_ascii=False)} in \
            recorded
    assert runs(out) == []
    # A fresh ToolBox on the same record (a restart) answers the refusals, not "interrupted".
    again = ToolBox([tool("note", ["/bin/true"], {"name": WORD})], state_dir=state)
    assert await again.call("c0", "note", "{}") != INTERRUPTED
    # Opted in, a negative number may start with "-"; an ordinary name runs.
    assert json.loads(await box.call("d", "dash", '{"n": -3}'))["ok"] is True
    assert json.loads(await box.call("e", "note", '{"name": "shopping"}'))["ok"] is True
    assert [r["argv"] for r in runs(out)] == [["-3"], ["notes/shopping.txt"]]


async def test_at_most_max_processes_run_at_once_then_a_queue_then_busy(
        tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    box = ToolBox([tool("slow", [sys.executable, str(SPAN), str(out), "{s}"],
                        {"s": {"type": "number", "minimum": 0, "maximum": 5}}, timeout_s=20)],
                  max_processes=4, max_queued=4, default_rate_limit=None)
    calls = [box.call(f"c{i}", "slow", '{"s": 0.6}') for i in range(12)]
    outputs = [json.loads(o) for o in await asyncio.gather(*calls)]
    ran = [o for o in outputs if o["ok"]]
    busy = [o for o in outputs if not o["ok"]]
    assert len(ran) == 8 and len(busy) == 4  # 4 running + 4 queued; the rest refused
    assert all(o["error"].startswith("busy: 4 tool processes are running") for o in busy)
    spans = runs(out)
    events = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    level = peak = 0
    for _t, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 4, f"{peak} processes ran at once"


async def test_a_default_rate_limit_applies_to_tools_without_one(tmp_path: Path) -> None:
    box = ToolBox([ToolSpec.model_validate({"name": "now", "builtin": "get_time"})])
    outputs = [json.loads(await box.call(f"c{i}", "now", "{}")) for i in range(31)]
    assert all(o["ok"] for o in outputs[:30])
    assert outputs[30]["error"].startswith("rate limit: at most 30 call(s) per 60 s")
