"""Call-time checks of a tool's arguments, after the JSON Schema: what a schema cannot say.

:func:`parse_arguments` reads the model's JSON: ``NaN``, ``Infinity`` and numbers that
overflow to them are refused (Python's ``json`` accepts them), as are numbers too long to
convert and nesting too deep to parse. :func:`refusal` then looks at the validated values:

- every string, anywhere in the arguments (keys too), must be encodable text: no NUL byte,
  no lone surrogate (neither can be passed to a program, a broker or the journal);
- a value that fills an ``argv`` placeholder must not start with ``-`` (it would read as an
  option) unless the tool lists the parameter in ``allow_dash``, and must not hold ``/`` or
  be ``.``/``..`` (any argument may name a file: ``notes/{name}.txt`` must stay in
  ``notes``) unless it is listed in ``allow_slash``; no control characters;
- a value that fills an MQTT topic must not be empty or hold ``/``, ``+``, ``#`` or control
  characters (it would add levels or wildcards).

A refusal is one ``(parameter, reason)``; the ToolBox turns it into an error output and one
log line, before anything is recorded or run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from edgevoice.config.tools import ToolSpec, as_text, placeholders

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_TOPIC_FORBIDDEN = ("/", "+", "#")


class ArgumentError(ValueError):
    """Arguments that cannot be used: ``field`` names the parameter when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _no_constant(name: str) -> Any:
    raise ArgumentError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ArgumentError(f"{text[:20]} is too large a number")
    return value


def parse_arguments(text: str) -> Any:
    """The model's arguments string as JSON. Raises :class:`ArgumentError` for anything but
    strict, finite JSON."""
    text = text.strip()
    if not text:
        return {}  # models send "" for a function without parameters
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except ArgumentError:
        raise
    except json.JSONDecodeError as exc:
        raise ArgumentError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    except RecursionError:
        raise ArgumentError("nested too deeply") from None
    except ValueError as exc:  # an integer too long to convert
        raise ArgumentError(f"not usable JSON: {str(exc)[:80]}") from None


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield path, str(k)
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}.{i}" if path else str(i))


def refusal(spec: ToolSpec, args: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why ``args`` (valid under the schema, defaults filled in) must not reach ``spec``'s
    action: ``(parameter, reason)``; None when they may."""
    for path, text in _strings(dict(args)):
        if "\0" in text:
            return path, "contains a NUL character"
        if _SURROGATE.search(text):
            return path, "contains a lone surrogate (not valid Unicode text)"
    for where, template in spec.sites():
        for name in placeholders(template):
            text = as_text(args[name])
            why = _site_problem(spec, where, name, text)
            if why:
                return name, f"{text[:40]!r} {why}"
    return None


def _site_problem(spec: ToolSpec, where: str, name: str, text: str) -> str | None:
    if where in ("topic", "reply_topic"):
        if not text or any(c in text for c in _TOPIC_FORBIDDEN) or _CONTROL.search(text):
            return "cannot be part of an MQTT topic (empty, or holds /, +, # or a control " \
                   "character)"
        return None
    if where != "argv":
        return None  # payload: sent as JSON values or as one whole value
    if _CONTROL.search(text):
        return "contains a control character"
    if text.startswith("-") and name not in spec.allow_dash:
        return "starts with '-' (it would read as an option)"
    if name not in spec.allow_slash:
        if "/" in text:
            return "contains '/' (a path is not allowed here)"
        if text in (".", ".."):
            return "is a path component ('.' or '..')"
    return None
