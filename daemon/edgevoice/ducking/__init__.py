"""Ducking: lower other audio while the assistant listens and speaks, and always restore it.

Backends (pick with :func:`make_ducker`):

- ``alsa`` — lower one ALSA mixer control by ``duck_db`` (:class:`AlsaDucker`, via amixer);
- ``pulse`` — lower every other stream on PulseAudio / PipeWire-pulse and restore exactly
  what was changed (:class:`PulseDucker`, via pulsectl);
- ``mpris`` — pause every MPRIS media player that is playing and resume exactly those
  (:class:`MprisDucker`, D-Bus through dbus-fast);
- ``command`` — argv hooks for duck and unduck (:class:`CommandDucker`, never a shell);
- ``none`` — do nothing (:class:`NoneDucker`).

Every ducker is idempotent, bounded by its timeout and never raises (see
:mod:`edgevoice.ducking.base`); :func:`ducking_guard` makes sure nothing stays ducked when the
conversation, the task or the process ends (see :mod:`edgevoice.ducking.guard`)::

    ducker = make_ducker("pulse", duck_db=15)
    async with ducking_guard(ducker):
        ...
        await ducker.duck()    # on wake
        ...
        await ducker.unduck()  # follow-up over, error
"""

from __future__ import annotations

from typing import Any

from edgevoice.ducking.alsa import AlsaDucker
from edgevoice.ducking.base import BaseDucker, Ducker, NoneDucker
from edgevoice.ducking.command import CommandDucker
from edgevoice.ducking.guard import ducking_guard, restore_all
from edgevoice.ducking.mpris import MprisDucker  # imports dbus-fast only when constructed
from edgevoice.ducking.pulse import PulseDucker  # imports pulsectl only when constructed

__all__ = [
    "BACKENDS",
    "AlsaDucker",
    "BaseDucker",
    "CommandDucker",
    "Ducker",
    "MprisDucker",
    "NoneDucker",
    "PulseDucker",
    "ducking_guard",
    "make_ducker",
    "restore_all",
]

BACKENDS = ("none", "alsa", "pulse", "mpris", "command")


def make_ducker(backend: str, **options: Any) -> Ducker:
    """Build the ducker for ``backend`` from plain keyword options (those of the backend's
    class). Raises ValueError naming the backend for an unknown backend or a bad option,
    and RuntimeError if the backend's library cannot load (pulse without libpulse) — found
    at start-up rather than on the first wake word."""
    classes: dict[str, type[BaseDucker]] = {
        "none": NoneDucker, "alsa": AlsaDucker, "pulse": PulseDucker, "mpris": MprisDucker,
        "command": CommandDucker}
    cls = classes.get(backend)
    if cls is None:
        raise ValueError(f"ducking: unknown backend {backend!r}, expected one of "
                         f"{', '.join(BACKENDS)}")
    try:
        return cls(**options)
    except TypeError as exc:  # an unknown or missing keyword
        raise ValueError(f"ducking ({backend}): bad options: {exc}") from exc

