"""Journal field names and compact stderr lines from ``extra=`` values."""

from __future__ import annotations

import logging

from edgevoice.service.logs import CompactFormatter, extra_fields, field_name


def test_journal_field_names() -> None:
    assert field_name("state") == "EDGEVOICE_STATE"
    assert field_name("latency_ms") == "EDGEVOICE_LATENCY_MS"
    assert field_name("wake-word.name") == "EDGEVOICE_WAKE_WORD_NAME"
    assert field_name("x" * 100) == "EDGEVOICE_" + "X" * 54


def test_extras_become_fields_and_appear_on_stderr_lines() -> None:
    record = logging.LogRecord("edgevoice.core", logging.INFO, __file__, 1, "turn %d done",
                               (3,), None)
    record.__dict__.update(state="idle", turn=3, latency_ms=412.456, flag=True, obj=object())
    assert extra_fields(record) == {"EDGEVOICE_STATE": "idle", "EDGEVOICE_TURN": "3",
                                    "EDGEVOICE_LATENCY_MS": "412.456", "EDGEVOICE_FLAG": "true"}
    line = CompactFormatter().format(record)
    assert line.endswith(" INFO edgevoice.core: turn 3 done state=idle turn=3 "
                         "latency_ms=412.456 flag=true")
    assert line[2] == ":" and line[8] == "."  # 12:01:05.123


def test_without_systemd_python_logs_to_stderr_and_says_so_once() -> None:
    # A real interpreter where `import systemd` fails, as on a machine without libsystemd.
    import subprocess
    import sys

    code = (
        "import sys, logging\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'systemd' or name.startswith('systemd.'):\n"
        "            raise ImportError('no systemd-python here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgevoice.service import logs, notify\n"
        "logs.setup_logging('info', journal=True)\n"
        "logs.setup_logging('info', journal=True)\n"
        "logging.getLogger('edgevoice.x').info('still logging')\n"
        "print(notify._sd_notify is None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "True"
    lines = done.stderr.splitlines()
    assert sum("systemd-python is not installed" in line for line in lines) == 1, lines
    assert any(line.endswith("INFO edgevoice.x: still logging") for line in lines), lines
