"""asyncio flavour of the hamcast API: ``hamcast.aio.MulticastSocket``."""

from __future__ import annotations

from hamcast.client.aio import MulticastSocket

__all__ = ["MulticastSocket"]
