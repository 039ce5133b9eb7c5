"""Events of service discovery: small frozen records of past facts.

A :class:`~hamcast.discovery.state.LinkDiscovery` core queues them; the driver
hands each to its ``on_event`` callback. ``interface`` is always the kernel
interface index and ``family`` 4 or 6; addresses are strings in their
canonical form (``ipaddress``'s ``str``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hamcast.discovery.model import Evidence, Verdict

__all__ = [
    "DiscoveryEvent",
    "MemberExpired",
    "MemberReported",
    "RouterAppeared",
    "RouterLost",
    "VerdictChanged",
]


@dataclass(frozen=True, slots=True)
class VerdictChanged:
    """The link's verdict went from ``old`` to ``new``; ``evidence`` is why."""

    interface: int
    family: int
    old: Verdict
    new: Verdict
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class MemberReported:
    """Another host (``reporter``) reported ``group``, which nobody on the link had reported."""

    interface: int
    group: str
    reporter: str


@dataclass(frozen=True, slots=True)
class MemberExpired:
    """No host on the link listens to ``group`` any more (a leave, or no report in time)."""

    interface: int
    group: str


@dataclass(frozen=True, slots=True)
class RouterAppeared:
    """A PIM router (``address``) sent its first Hello; ``holdtime`` seconds, ``None`` = forever."""

    interface: int
    address: str
    holdtime: float | None


@dataclass(frozen=True, slots=True)
class RouterLost:
    """The PIM router ``address`` said goodbye (Holdtime 0) or its holdtime ran out."""

    interface: int
    address: str


DiscoveryEvent = VerdictChanged | MemberReported | MemberExpired | RouterAppeared | RouterLost
