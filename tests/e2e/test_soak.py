"""A short soak run through ``scripts/soak`` (the launcher and :mod:`edgevoice.soak`): the whole
daemon as a child process, accelerated turns with random faults, and its report.

The full run (2,000 turns) is a manual or CI job; this one proves the soak itself works: it
produces one JSON report whose criteria all hold, and every turn was checked, not counted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# The soak's rig runs its clocks faster than real time, but paced all the same.
pytestmark = [pytest.mark.timeout(90), pytest.mark.realtime, pytest.mark.slow]

SOAK = Path(__file__).resolve().parents[2] / "scripts" / "soak"
TURNS = 16
SEED = 20261122  # its plan: wake-word and follow-up turns, a tool call, a drop, a silent connection


def test_short_soak_serves_every_turn_and_meets_its_criteria():
    out = subprocess.run([sys.executable, str(SOAK), "--turns", str(TURNS), "--seed", str(SEED),
                          "--max-minutes", "1.5", "--json"],
                         capture_output=True, text=True, timeout=80)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, f"not one JSON object on stdout:\n{out.stdout}\n{out.stderr}"
    report = json.loads(lines[0])
    failed = {k: c for k, c in report["criteria"].items() if not c["met"]}
    assert out.returncode == 0 and report["passed"] and not failed, (
        f"soak failed: {failed}\n{report['failures']}\n{out.stderr}")
    assert report["seed"] == SEED
    assert report["turns_completed"] >= TURNS and report["turns_failed"] == 0
    assert report["wake_turns"] >= 1 and report["follow_up_turns"] >= 1
    assert report["faults_injected"] >= 1
    assert report["recoveries"] == report["faults_injected"]
    assert report["unhandled_exceptions"] == 0 and report["daemon_errors"] == 0
    assert report["rss_mb"]["end"] - report["rss_mb"]["start"] <= 5.0
    assert report["fds"]["end"] <= report["fds"]["start"]
    assert report["exit_code"] == 0 and not report["time_bound_hit"]
    assert report["wall_s"] < 60
