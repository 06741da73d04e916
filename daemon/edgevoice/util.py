"""Small shared helpers."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError


def between(lo: float, hi: float) -> AfterValidator:
    """A validator that accepts ``lo <= value <= hi`` and otherwise raises an error whose
    message reads "must be between LO and HI, got V" (the config error format)."""

    def check(value: Any) -> Any:
        if not lo <= value <= hi:
            raise PydanticCustomError(
                "range", "must be between {lo} and {hi}, got {value}",
                {"lo": _num(lo), "hi": _num(hi), "value": _num(value)},
            )
        return value

    return AfterValidator(check)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and not isinstance(x, bool) else str(x)


def data_path(name: str) -> Path:
    """A file bundled in the package's ``data/`` folder (earcons, the demo's recording)."""
    return Path(str(resources.files("edgevoice") / "data" / name))
