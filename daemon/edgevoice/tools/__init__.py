"""Tools: the model's function calls turned into declared, validated hardware actions.

A tool is declared in ``[[tools]]`` (:class:`~edgevoice.config.tools.ToolSpec`): a name, a
description, a JSON Schema of its parameters and one action — ``command`` (an argv, no
shell), ``gpio`` (gpiozero), ``mqtt`` (aiomqtt) or ``builtin`` (``set_volume``,
``stop_conversation``, ``get_time``) — with ``timeout_s``, ``rate_limit`` and ``confirm``.
Only name, description and parameters are sent to the service (:func:`declared`).

:meth:`ToolBox.call` runs one call. In order, each step either passes or ends the call with
an output, and nothing is run unless every step passed:

1. a ``call_id`` seen before returns its stored output (exactly once, below);
2. an unknown tool name fails;
3. the arguments must be JSON and valid under the tool's schema (jsonschema: types, enums,
   ranges, required, formats); the error names the field;
4. the rate limit (``max_calls`` runs in any ``per_s`` seconds; only runs count);
5. ``confirm = true``: the spoken confirmation flow (below);
6. the action runs, bounded by ``timeout_s`` (a command's whole process group is killed).

Output format (every call, success or not, is one JSON object as a string)::

    {"ok": true, ...action fields...}
    {"ok": false, "error": "what went wrong, for the model to tell or fix", ...}

Action fields: command ``exit_status``, ``stdout`` (trimmed, capped at
``max_output_bytes``; ``truncated: true`` when cut) — a non-zero exit is ``ok: false`` with
the same fields and stderr's last line in ``error``; gpio ``pin`` and ``value`` (``pulsed_s``
for a pulse); mqtt ``published`` (the topic) and ``reply``; ``get_time`` ``time`` (local ISO
8601) and ``weekday``; ``set_volume`` ``volume_percent``; ``stop_conversation`` nothing.
Failures may add ``field`` (the invalid argument).

Spoken confirmation (``confirm = true``), owned by the daemon so that the model can neither
confirm on the user's behalf nor choose the question: the call waits while the daemon speaks
the tool's fixed ``confirm_prompt`` (with the validated arguments) and listens for the next user
turn that starts after it played; only a short whole "yes" runs it, anything else answers
"declined by the user". See :mod:`edgevoice.tools.confirm`.

Exactly once: a ``call_id`` runs at most once. A repeated call with the same id — also one
that arrives while the first still runs — returns the first one's output. The last 256 ids
are kept, and with a ``state_dir`` also in a file written atomically before each run and after
it, so that a restart does not run a call again (one cut short by the restart answers
"interrupted").

Audit: every call is logged on ``edgevoice.tools`` with the fields ``tool``, ``call_id``,
``arguments`` (the validated ones; None when invalid), ``outcome`` (``ok``, ``failed``,
``timeout``, ``invalid``, ``unknown_tool``, ``rate_limited``,
``declined``, ``duplicate``, ``interrupted``, ``error``), ``duration_ms`` and ``error``.
Never logged: the command's environment, the MQTT password.
"""

from edgevoice.config.tools import ToolSpec, check_tool_set, declared
from edgevoice.tools.toolbox import ToolBox, failed, ok

__all__ = ["ToolBox", "ToolSpec", "check_tool_set", "declared", "failed", "ok"]
