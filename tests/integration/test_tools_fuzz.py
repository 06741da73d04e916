"""Fuzzing tool arguments (hypothesis) through the real ToolBox and real commands.

Two tools whose schemas are as loose as check-config lets them be (anchored patterns that
still admit '/', '..', '-' and control characters), so that the call-time checks are what
is tested: ``record`` runs a script that records its argv, ``touch`` creates a file under
``notes/``. Whatever the model sends — any text (NUL, lone surrogates, control characters,
'..', options), NaN and Infinity, wrong types, extra keys, broken JSON — no value reaches
argv outside its schema, and no file outside ``notes/`` is created or changed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from edgevoice.tools import ToolBox, ToolSpec

pytestmark = pytest.mark.timeout(120)

RECORD = Path(__file__).resolve().parents[1] / "fixtures" / "tools" / "record.py"
NAME = {"type": "string", "pattern": "^[\\s\\S]{1,24}$", "maxLength": 24}
LEVEL = {"type": "integer", "minimum": -5, "maximum": 5}
MODE = {"type": "string", "enum": ["fast", "slow", "-v"]}
SCHEMA = {"type": "object", "properties": {"name": NAME, "level": LEVEL, "mode": MODE},
          "required": ["name", "level", "mode"]}

NASTY = ["..", ".", "../x", "../../etc/passwd", "-o/tmp/x", "--help", "-", "a\x00b", "\ud800",
         "/etc/passwd", "a/../../b", "x\ny", "\x1b[2J", "\u2028", "notes", "~", "$HOME",
         "*", "a b", " ", "\\", "..\\..", "\t-x"]
text = st.one_of(st.sampled_from(NASTY), st.text(max_size=30),
                 st.text(st.characters(codec=None, categories=None), max_size=10),
                 st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.text(max_size=5)))
scalar = st.one_of(text, st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.none())
value = st.one_of(scalar, st.lists(scalar, max_size=3))
# Loose shapes (mostly refused by the schema), the right shape with nasty text, and nearly
# ordinary values (so that many calls really run, with names close to the edge).
ordinary = st.text(st.sampled_from("ab.-_ /\\x0"), min_size=1, max_size=8)
arguments = st.one_of(
    st.fixed_dictionaries({"name": value, "level": value, "mode": value},
                          optional={"extra": value}),
    st.fixed_dictionaries({"name": text, "level": st.integers(-6, 6),
                           "mode": st.sampled_from(["fast", "slow", "-v", "x"])}),
    st.fixed_dictionaries({"name": ordinary, "level": st.integers(-1, 5),
                           "mode": st.sampled_from(["fast", "slow", "-v"])}),
    st.fixed_dictionaries({"name": ordinary, "level": st.integers(0, 5),
                           "mode": st.sampled_from(["fast", "slow"])}),
)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``root`` but what ``notes/`` holds and the record, with size and
    mtime."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel == "work/notes" or rel.startswith("work/notes/") or rel == "runs.jsonl":
                continue
            st_ = p.lstat()
            seen[rel] = (st_.st_size, st_.st_mtime_ns)
    return seen


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "work" / "notes").mkdir(parents=True)
    (root / "secret").write_text("do not touch\n")
    (root / "work" / "keep.txt").write_text("keep\n")
    return root


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(args=arguments, broken=st.integers(0, 7))
def test_no_value_escapes_its_schema_or_the_declared_paths(sandbox: Path, args: dict[str, Any],
                                                           broken: int) -> None:
    work, out = sandbox / "work", sandbox / "runs.jsonl"
    before = snapshot(sandbox)
    tools = [
        ToolSpec.model_validate({
            "name": "record", "parameters": SCHEMA, "allow_dash": ["level", "mode"],
            "command": {"argv": [sys.executable, str(RECORD), str(out), "notes/{name}.txt",
                                 "{level}", "--mode={mode}", "{mode}"], "cwd": str(work)}}),
        ToolSpec.model_validate({
            "name": "touch", "parameters": SCHEMA, "allow_dash": ["mode"],
            "command": {"argv": ["/usr/bin/touch", "notes/{name}", "notes/{level}"],
                        "cwd": str(work)}}),
    ]
    text = json.dumps(args)  # NaN and Infinity come out as the bare words JSON forbids
    if broken == 0:
        text = text[:-1]  # broken JSON too, now and then

    async def calls() -> list[dict[str, Any]]:
        box = ToolBox(tools, default_rate_limit=None)
        return [json.loads(await box.call(f"{name}-{id(args)}", name, text))
                for name in ("record", "touch")]

    n_before = len(out.read_text().splitlines()) if out.exists() else 0
    outputs = asyncio.run(calls())
    for output in outputs:
        assert isinstance(output.get("ok"), bool)
    recorded = out.read_text().splitlines()[n_before:] if out.exists() else []
    assert len(recorded) == int(outputs[0]["ok"])
    for line in recorded:
        argv = json.loads(line)["argv"]
        assert len(argv) == 4  # one argument per template, whatever the values held
        name = argv[0].removeprefix("notes/").removesuffix(".txt")
        mode = argv[2].removeprefix("--mode=")
        got = {"name": name, "level": int(argv[1]), "mode": mode}
        assert argv[3] == mode and argv[0] == f"notes/{name}.txt"
        assert not list(Draft202012Validator(SCHEMA).iter_errors(got)), got
        assert "/" not in name and name not in (".", "..") and not name.startswith("-")
        assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in name)
    # Files: only direct children of notes/, nothing else created or changed.
    assert snapshot(sandbox) == before
    for p in (work / "notes").rglob("*"):
        assert p.parent == work / "notes" and p.is_file()


def test_the_fuzzing_did_run_commands(sandbox: Path) -> None:
    """Guard for the test above (run after it): enough examples got past every check and
    really ran both commands, so the properties were tested on real argv and real files."""
    runs = (sandbox / "runs.jsonl").read_text().splitlines()
    notes = list((sandbox / "work" / "notes").iterdir())
    print(f"{len(runs)} recorded runs, {len(notes)} files under notes/")
    assert len(runs) >= 20 and len(notes) >= 20
