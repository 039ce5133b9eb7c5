"""The ``overlay`` technology module on its own: one node, alone in its overlay, on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hamcast.errors import MessageTooLongError
from hamcast.technologies.overlay import OverlayTechnology
from hamcast.uri import URI

GROUP = URI.parse("ham:opaque:overlay-technology")


class Upcalls:
    """Records what the module hands up."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str, bytes]] = []

    def deliver(self, tech: Any, iface: str, group: URI, source: str, payload: Any) -> None:
        self.delivered.append((group.name, source, bytes(payload)))

    def notify(self, *args: Any) -> None:
        pass

    def conditions_changed(self, *args: Any) -> None:
        pass


def test_send_many_delivers_a_run_in_order_and_stops_at_a_refused_message() -> None:
    async def main() -> None:
        tech = OverlayTechnology({"listen": "127.0.0.1:0"})
        upcalls = Upcalls()
        await tech.start(upcalls)
        try:
            tech.join("overlay", GROUP)
            me = tech.interfaces()[0].address
            run: list[bytes | memoryview] = [b"a", memoryview(b"bb"), b"c" * 3000]
            run += [bytes([n]) for n in range(100)]
            tech.send_many("overlay", GROUP, run, 1, "test")
            # A member's own messages come back to it (ScribeConfig.loopback).
            assert upcalls.delivered == [(GROUP.name, me, bytes(p)) for p in run]
            upcalls.delivered.clear()
            too_long = bytes(tech.max_msg_size("overlay") + 4096)
            with pytest.raises(MessageTooLongError):
                tech.send_many("overlay", GROUP, [b"before", too_long, b"after"], 1, "test")
            assert [payload for _, _, payload in upcalls.delivered] == [b"before"]
        finally:
            await tech.stop()

    asyncio.run(main())
