"""Service discovery: what native multicast can reach from each link (DESIGN.md §8).

Passive only: IGMP/MLD queries and reports and PIM Hellos heard on a link
decide its :class:`Verdict` (nothing / a querier on the link / a multicast
router). The pieces:

* :mod:`hamcast.discovery.packets` — strict parsers and builders (no I/O);
* :class:`LinkDiscovery` — the per-link, per-family core (no I/O);
* :class:`DiscoveryDriver` — the asyncio driver on packet sockets;
* ``python -m hamcast.discovery IFNAME...`` — watch links and print events.

docs/discovery.md explains what is observed and how the verdict is decided.
"""

from __future__ import annotations

from hamcast.discovery.config import DiscoveryConfig
from hamcast.discovery.driver import DiscoveryDriver
from hamcast.discovery.events import (
    DiscoveryEvent,
    MemberExpired,
    MemberReported,
    RouterAppeared,
    RouterLost,
    VerdictChanged,
)
from hamcast.discovery.model import Evidence, GroupInfo, NeighbourInfo, QuerierInfo, Verdict
from hamcast.discovery.packets import MalformedPacketError
from hamcast.discovery.state import LinkDiscovery

__all__ = [
    "DiscoveryConfig",
    "DiscoveryDriver",
    "DiscoveryEvent",
    "Evidence",
    "GroupInfo",
    "LinkDiscovery",
    "MalformedPacketError",
    "MemberExpired",
    "MemberReported",
    "NeighbourInfo",
    "QuerierInfo",
    "RouterAppeared",
    "RouterLost",
    "Verdict",
    "VerdictChanged",
]
