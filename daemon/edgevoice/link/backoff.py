"""Reconnect delays: a fixed schedule with jitter, reset after a stable connection."""

from __future__ import annotations

import random
from collections.abc import Sequence


class Backoff:
    """Yields ``schedule[i] * uniform(1 - jitter, 1 + jitter)``, holding at the last step.

    :meth:`connected` / :meth:`disconnected` reset the schedule once a connection has stayed
    up for ``stable_after_s``, so a link that drops once a day starts again at the shortest
    delay, while a link that flaps keeps backing off."""

    def __init__(
        self,
        schedule: Sequence[float],
        jitter: float = 0.5,
        stable_after_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if not schedule:
            raise ValueError("backoff schedule must not be empty")
        self.schedule = list(schedule)
        self.jitter = jitter
        self.stable_after_s = stable_after_s
        self._rng = rng or random.Random()
        self._step = 0
        self._up_since: float | None = None

    def next_delay(self) -> float:
        base = self.schedule[min(self._step, len(self.schedule) - 1)]
        self._step += 1
        return base * self._rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def connected(self, now: float) -> None:
        self._up_since = now

    def disconnected(self, now: float) -> None:
        if self._up_since is not None and now - self._up_since >= self.stable_after_s:
            self._step = 0
        self._up_since = None
