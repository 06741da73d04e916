"""``Simulator.drop_connections``: the server-side drop the reconnect benchmark measures, seen
by the real link over a real WebSocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import pytest

from edgevoice.config import Config, VoiceLiveConfig
from edgevoice.devkit.simulator import Simulator
from edgevoice.link.auth import ApiKeyAuth
from edgevoice.link.client import LinkDown, LinkUp, VoiceLiveLink
from edgevoice.secrets import Secret

pytestmark = pytest.mark.timeout(30)

KEY = "test-key-0123456789"
_T = TypeVar("_T")


async def next_of(link: VoiceLiveLink, kind: type[_T]) -> _T:
    async with asyncio.timeout(5):
        while True:
            event = await link.events.get()
            if isinstance(event, kind):
                return event


@pytest.mark.parametrize(("close_code", "seen_code"), [(None, 1006), (1011, 1011)])
async def test_drop_connections_ends_the_session_and_the_link_comes_back(
    close_code: int | None, seen_code: int
) -> None:
    async with Simulator(api_key=KEY) as sim:
        assert await sim.drop_connections() == 0  # nothing open: nothing to drop
        cfg = VoiceLiveConfig.model_validate({"endpoint": sim.url, "backoff_s": [0.05],
                                              "backoff_jitter": 0.0})
        link = VoiceLiveLink(cfg, Config().request_session(), ApiKeyAuth(Secret(KEY)))
        link.start()
        try:
            assert (await next_of(link, LinkUp)).reconnected is False
            assert await sim.drop_connections(close_code) == 1
            down = await next_of(link, LinkDown)
            assert f"code {seen_code}" in down.reason
            assert down.retry_in == pytest.approx(0.05)
            assert (await next_of(link, LinkUp)).reconnected is True
            assert sim.connection_count == 2 and sim.connections[0].closed
            assert not sim.connections[1].closed  # the server goes on accepting
        finally:
            await link.close()
