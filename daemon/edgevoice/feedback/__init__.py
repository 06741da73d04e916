"""State feedback: the daemon's state (idle, listening, thinking, speaking, muted, offline,
error) shown by hook commands and a light.

:class:`Feedback` takes each state change (:meth:`Feedback.show`, on the loop, returns at
once) and hands it to :class:`~edgevoice.feedback.hooks.Hooks` and
:class:`~edgevoice.feedback.lights.Light`. Neither ever blocks or slows the conversation:
hooks run as child processes from one task, lights change on a worker thread of their own.
"""

from __future__ import annotations

from typing import Any

from edgevoice.config.hands import FeedbackConfig
from edgevoice.feedback.hooks import Hooks
from edgevoice.feedback.lights import Light


def feedback_state(activity: str, *, offline: bool, error: bool) -> str:
    """The one state shown: ``muted`` first (the user's own choice, and a privacy promise),
    then ``error`` (a device is missing), ``offline`` (the service cannot be reached), then
    what the conversation does (``activity``: idle, listening, thinking, speaking)."""
    if activity == "muted":
        return "muted"
    if error:
        return "error"
    if offline:
        return "offline"
    return activity


class Feedback:
    """Hooks and the light of ``cfg`` (either may be absent)."""

    def __init__(self, cfg: FeedbackConfig, *, pin_factory: Any = None) -> None:
        self.hooks = Hooks(cfg.hooks(), timeout_s=cfg.hook_timeout_s, env=cfg.hook_env)
        self.light = Light(cfg.light, pin_factory=pin_factory) if cfg.light else None
        self.state: str | None = None

    def start(self) -> None:
        self.hooks.start()
        if self.light is not None:
            self.light.start()

    def show(self, state: str) -> None:
        """The daemon is in ``state`` now; quick (nothing waits here)."""
        if state == self.state:
            return
        previous, self.state = self.state, state
        self.hooks.show(state, previous)
        if self.light is not None:
            self.light.show(state)

    async def aclose(self) -> None:
        await self.hooks.aclose()
        if self.light is not None:
            await self.light.aclose()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "hooks": self.hooks.status()}
        if self.light is not None:
            out["light"] = self.light.status()
        return out
