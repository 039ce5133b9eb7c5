"""The ``local`` technology: delivery between the sockets of all applications on this host.

Every message sent on the ``local`` interface is handed straight back to the
core, which fans it out to the host's sockets that joined the group. There is
no network, so there are no neighbours and no distribution tree: the service
calls answer with empty sets and this host is always the designated host.

Options (``[technology.local]`` in the daemon config):

``max_msg_size``
    largest message in bytes (default 65507, the largest UDP payload, so an
    application written against ``local`` also fits native IPv4).
"""

from __future__ import annotations

from typing import Any

from hamcast.errors import UsageError
from hamcast.technologies.base import Assessment, Technology, TechnologyInterface
from hamcast.uri import URI

__all__ = ["LocalTechnology"]

_IFACE = TechnologyInterface(key="local", name="local", address="localhost")


class LocalTechnology(Technology):
    """Host-local group communication through the daemon."""

    name = "local"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        unknown = sorted(set(self.options) - {"max_msg_size"})
        if unknown:
            raise UsageError(f"[technology.local] unknown option(s): {', '.join(unknown)}")
        self._max_msg_size = int(self.options.get("max_msg_size", 65507))
        if not 1 <= self._max_msg_size <= 1 << 20:
            raise UsageError("[technology.local] max_msg_size must be 1 to 1048576 bytes")

    def interfaces(self) -> list[TechnologyInterface]:
        return [_IFACE]

    def can_serve(self, iface: str, group: URI) -> bool:
        return True

    def assess(self, iface: str, group: URI) -> Assessment:
        """Never "usable" in selection's sense: it reaches no other host.

        So it is chosen only when it comes first in the preference among the
        technologies that can serve a group, or is the only one; a network
        interface that shows no multicast yet still reaches this host's own
        sockets (multicast loopback), and possibly the link.
        """
        return Assessment(False, "this host only")

    def join(self, iface: str, group: URI) -> None:
        # Membership lives in the core's group table; nothing to tell a network.
        pass

    def leave(self, iface: str, group: URI) -> None:
        pass

    def send(
        self, iface: str, group: URI, payload: bytes | memoryview, ttl: int, origin: str
    ) -> None:
        self.upcalls.deliver(self, iface, group, origin, payload)

    def max_msg_size(self, iface: str) -> int:
        return self._max_msg_size
