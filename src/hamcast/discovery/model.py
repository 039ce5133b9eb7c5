"""What discovery concludes about a link, and the evidence behind it (plain data).

Times in these records are the caller's clock (the ``now`` values the core was
fed; the asyncio driver uses ``loop.time()``), in seconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Evidence", "GroupInfo", "NeighbourInfo", "QuerierInfo", "Verdict"]


class Verdict(enum.Enum):
    """How far native multicast reaches from one link, in one address family.

    * ``UNKNOWN`` — not listened long enough yet (the settle time), or
      discovery cannot run here (no raw socket: see ``Evidence.unavailable``).
    * ``NONE`` — nothing heard: no querier and no multicast router. Multicast
      may still work between hosts on a plain link, but nobody manages it.
    * ``LINK_LOCAL`` — a querier (a snooping switch or bridge, or a router
      that runs IGMP/MLD without PIM) but no multicast router: multicast works
      on this link only.
    * ``ROUTED`` — a PIM neighbour is live on the link (or, with
      ``DiscoveryConfig.querier_implies_router``, a querier with a real
      address): multicast can leave the link.
    """

    UNKNOWN = "unknown"
    NONE = "none"
    LINK_LOCAL = "link-local"
    ROUTED = "routed"


@dataclass(frozen=True, slots=True)
class QuerierInfo:
    """A host that sent membership queries on the link.

    Attributes:
        address: Source address of its queries (``0.0.0.0`` for a switch
            querier that has no IPv4 address).
        version: IGMP (1, 2, 3) or MLD (1, 2) version of its last query.
        last_seen: When its last query arrived (seconds, caller's clock).
        expires: When it is presumed gone: last query plus the Other Querier
            Present Interval (RFC 3376 §8.5, RFC 3810 §9.5).
        robustness: Robustness Variable in use for it (learned or configured).
        query_interval: Query Interval in use for it, seconds.
        is_router: Its address is also a live PIM neighbour's.
    """

    address: str
    version: int
    last_seen: float
    expires: float
    robustness: int
    query_interval: float
    is_router: bool


@dataclass(frozen=True, slots=True)
class NeighbourInfo:
    """A PIM router heard on the link (RFC 7761 §4.3).

    Attributes:
        address: Source address of its Hellos.
        holdtime: Seconds its last Hello said to keep it; ``None`` for "never
            time out" (Holdtime 0xFFFF).
        last_seen: When its last Hello arrived (seconds, caller's clock).
        expires: ``last_seen + holdtime``; ``None`` when it never expires.
        dr_priority: DR Priority option of its last Hello, if any.
        generation_id: Generation ID option of its last Hello, if any.
    """

    address: str
    holdtime: float | None
    last_seen: float
    expires: float | None
    dr_priority: int | None
    generation_id: int | None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group other hosts on the link listen to.

    Attributes:
        group: The group address.
        reporters: Hosts whose reports are remembered (``0.0.0.0`` / ``::``
            stand for hosts that report without an address yet).
        version: Protocol version of the last report (IGMP 1-3, MLD 1-2).
        last_seen: When the last report for it arrived (seconds).
        expires: When it is forgotten without another report: the Group
            Membership Interval after the last report (RFC 3376 §8.4,
            RFC 3810 §9.4), or sooner after a leave.
    """

    group: str
    reporters: tuple[str, ...]
    version: int
    last_seen: float
    expires: float


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything one link's verdict rests on, at one moment.

    Attributes:
        interface: Interface index.
        family: 4 or 6.
        querier: The elected querier: the live query sender with the lowest
            address (RFC 3376 §6.6.2, RFC 3810 §7.6.2), preferring a real
            address over ``0.0.0.0``; ``None`` when there is none.
        queriers: Every live query sender, lowest address first.
        neighbours: Live PIM neighbours, lowest address first.
        groups: Groups other hosts reported, by address.
        listening_since: When the core was created (seconds).
        settled: Listened for the settle time, or heard a querier or router.
        malformed: Packets dropped as malformed or oversized so far.
        dropped: Reports, neighbours or queriers ignored because a bound was
            reached, so far.
        unavailable: Why discovery cannot run on this link (no permission,
            interface gone); ``None`` when it runs.
    """

    interface: int
    family: int
    querier: QuerierInfo | None
    queriers: tuple[QuerierInfo, ...]
    neighbours: tuple[NeighbourInfo, ...]
    groups: tuple[GroupInfo, ...]
    listening_since: float
    settled: bool
    malformed: int = 0
    dropped: int = 0
    unavailable: str | None = None
