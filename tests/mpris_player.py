"""A tiny MPRIS media player for the ducking tests, run as its own process:
``python mpris_player.py ADDRESS NAME STATUS [refuse]``.

It owns ``org.mpris.MediaPlayer2.NAME`` on the bus at ADDRESS and implements
``org.mpris.MediaPlayer2.Player``'s ``PlaybackStatus`` (starting as STATUS: Playing, Paused
or Stopped) with ``Play``, ``Pause``, ``PlayPause`` and ``Stop``. It prints ``ready`` once
the name is owned and then one line per method call (``called Pause``), so a test can see
what was sent as well as the resulting state. With ``refuse`` it answers ``Pause`` with a
D-Bus error (as a live stream that cannot pause does). It plays nothing.
"""

# No "from __future__ import annotations": dbus-fast reads the signatures from them.
import asyncio
import sys

from dbus_fast import DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method


class Player(ServiceInterface):
    def __init__(self, status: str, refuse: bool) -> None:
        super().__init__("org.mpris.MediaPlayer2.Player")
        self.status = status
        self.refuse = refuse

    def _set(self, call: str, status: str) -> None:
        print(f"called {call}", flush=True)
        if status != self.status:
            self.status = status
            self.emit_properties_changed({"PlaybackStatus": status})

    @method()
    def Play(self) -> None:
        self._set("Play", "Playing")

    @method()
    def Pause(self) -> None:
        if self.refuse:
            print("called Pause", flush=True)
            raise DBusError("org.mpris.MediaPlayer2.Error.NotSupported", "cannot pause")
        self._set("Pause", "Paused")

    @method()
    def PlayPause(self) -> None:
        self._set("PlayPause", "Paused" if self.status == "Playing" else "Playing")

    @method()
    def Stop(self) -> None:
        self._set("Stop", "Stopped")

    @dbus_property(access=PropertyAccess.READ)
    def PlaybackStatus(self) -> "s":  # noqa: F821 - a D-Bus signature
        return self.status


async def main(address: str, name: str, status: str, *options: str) -> None:
    bus = await MessageBus(bus_address=address).connect()
    bus.export("/org/mpris/MediaPlayer2", Player(status, "refuse" in options))
    await bus.request_name(f"org.mpris.MediaPlayer2.{name}")
    print("ready", flush=True)
    await bus.wait_for_disconnect()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
