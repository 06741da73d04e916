"""The token budget: tokens used in the last hour and the last day, against the limits of
``[limits]``.

Pure: the time is an argument (epoch seconds, so that the counts mean the same after a
restart), and :meth:`TokenBudget.dump` / :meth:`TokenBudget.load` give and take a JSON-able
dict: the caller decides where it is kept.

Guarantees:
- Bounded: tokens are kept in one-minute buckets of the last 24 hours (at most 1440).
- The windows are exact to the minute: :meth:`TokenBudget.used` counts the buckets whose
  minute started within the window.
- :meth:`TokenBudget.load` never raises for what it is given: bad entries are skipped (the
  caller logs what :meth:`load` returns), entries older than a day are dropped.
"""

from __future__ import annotations

from typing import Any

HOUR_S = 3600
DAY_S = 86400
BUCKET_S = 60


class TokenBudget:
    """See the module docstring. ``per_hour`` / ``per_day``: the limits (None: none)."""

    def __init__(self, per_hour: int | None = None, per_day: int | None = None) -> None:
        self.per_hour = per_hour
        self.per_day = per_day
        self._buckets: dict[int, int] = {}  # minute (epoch // 60) -> tokens

    @property
    def limited(self) -> bool:
        return self.per_hour is not None or self.per_day is not None

    def add(self, tokens: int, now: float) -> None:
        """``tokens`` were used at ``now``."""
        if tokens <= 0:
            return
        minute = int(now // BUCKET_S)
        self._buckets[minute] = self._buckets.get(minute, 0) + tokens
        self._forget(now)

    def _forget(self, now: float) -> None:
        oldest = int((now - DAY_S) // BUCKET_S) + 1
        for minute in [m for m in self._buckets if m < oldest]:
            del self._buckets[minute]

    def used(self, window_s: float, now: float) -> int:
        """Tokens used within ``window_s`` before ``now`` (to the minute)."""
        oldest = int((now - window_s) // BUCKET_S) + 1
        return sum(n for m, n in self._buckets.items() if m >= oldest)

    def reached(self, now: float) -> str | None:
        """Why no new conversation may start now (``"tokens_per_hour 5000 reached (5210 in
        the last hour)"``), or None while within the limits."""
        for name, limit, window, what in (("tokens_per_day", self.per_day, DAY_S, "day"),
                                          ("tokens_per_hour", self.per_hour, HOUR_S, "hour")):
            if limit is not None:
                used = self.used(window, now)
                if used >= limit:
                    return f"{name} {limit} reached ({used} in the last {what})"
        return None

    def status(self, now: float) -> dict[str, Any]:
        """The ``budget`` of the status snapshot."""
        return {"tokens_per_hour": self.per_hour, "tokens_per_day": self.per_day,
                "last_hour": self.used(HOUR_S, now), "last_day": self.used(DAY_S, now),
                "reached": self.reached(now)}

    def dump(self) -> dict[str, Any]:
        return {"version": 1, "minutes": {str(m): n for m, n in sorted(self._buckets.items())}}

    def load(self, data: Any, now: float) -> list[str]:
        """Take the counts of a :meth:`dump` (added to what is here); returns the problems
        found (skipped entries), empty when all was well."""
        problems: list[str] = []
        minutes = data.get("minutes") if isinstance(data, dict) else None
        if not isinstance(minutes, dict):
            return ["no 'minutes' table"]
        for key, value in minutes.items():
            try:
                minute = int(key)
            except ValueError:
                problems.append(f"bad minute {key!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"bad count at minute {key}")
                continue
            if minute * BUCKET_S > now + BUCKET_S:
                problems.append(f"minute {key} is in the future")
                continue
            self._buckets[minute] = self._buckets.get(minute, 0) + value
        self._forget(now)
        return problems
