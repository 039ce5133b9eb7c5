"""Configuration of service discovery: one typed, documented dataclass (no I/O).

Every time is in seconds. The protocol defaults are the RFCs' (RFC 2236 §8,
RFC 3376 §8, RFC 2710 §7, RFC 3810 §9, RFC 7761 §4.11); tests shrink them to
run fast instead of patching constants.
"""

from __future__ import annotations

from dataclasses import dataclass

from hamcast.errors import UsageError

__all__ = ["DiscoveryConfig"]


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """How long to believe what was heard, and how much to remember.

    Attributes:
        robustness: Robustness Variable assumed until a query tells another
            (RFC 3376 §8.1, RFC 3810 §9.1; default 2).
        query_interval: Query Interval assumed until a query tells another,
            seconds (RFC 3376 §8.2, RFC 3810 §9.2; default 125).
        query_response_interval: Query Response Interval, seconds, when a query
            carries none (IGMPv1) (RFC 3376 §8.3, RFC 3810 §9.3; default 10).
        last_member_query_interval: Last Member Query Interval, seconds
            (RFC 3376 §8.8, RFC 3810 §9.8; default 1).
        learn_query_parameters: Adopt the robustness (QRV) and query interval
            (QQIC) that IGMPv3 / MLDv2 queries carry, as non-queriers do
            (RFC 3376 §4.1.6-4.1.7, RFC 3810 §5.1.8-5.1.9). Tests turn it off
            to keep their short timeouts whatever the querier says.
        settle_time: Seconds to listen before declaring a silent link
            :attr:`~hamcast.discovery.Verdict.NONE`; ``None`` means one query
            interval plus one query response interval, long enough to hear a
            querier that is present.
        pim_default_holdtime: Holdtime, seconds, of a PIM neighbour whose Hello
            has no Holdtime option (RFC 7761 §4.11: 3.5 * Hello_Period = 105).
        querier_implies_router: Count a querier with a real (non-zero,
            non-``::``) source address as a multicast router even without PIM.
            Off by default: a snooping switch with an address queries too.
            Turn it on where routers run IGMP/MLD without PIM (an IGMP/MLD
            proxy, static multicast routes).
        track_link_local_groups: Also report groups of link-local scope
            (224.0.0.0/24, ff02::/16 and narrower). Off by default: every host
            reports its solicited-node groups, and no router forwards them.
        max_groups: Most groups remembered per link; reports for more are
            counted and ignored.
        max_reporters_per_group: Most reporting hosts remembered per group.
        max_sources_per_reporter: Most include-mode sources remembered per
            reporting host and group.
        max_neighbours: Most PIM neighbours remembered per link.
        max_queriers: Most query senders remembered per link.
        max_events: Most undelivered events a core keeps; the driver drains
            them after every input, so only a caller that never drains hits it.
        max_packet_size: Larger captured packets are dropped before parsing
            (bytes).
        allmulti: Put Ethernet interfaces into all-multicast mode (driver) so
            IGMPv1/v2 and MLDv1 reports, which go to the group's own MAC
            address, reach the host on hardware with a multicast filter. Costs
            the kernel every multicast frame on the link; off by default.
    """

    robustness: int = 2
    query_interval: float = 125.0
    query_response_interval: float = 10.0
    last_member_query_interval: float = 1.0
    learn_query_parameters: bool = True
    settle_time: float | None = None
    pim_default_holdtime: float = 105.0
    querier_implies_router: bool = False
    track_link_local_groups: bool = False
    max_groups: int = 1024
    max_reporters_per_group: int = 32
    max_sources_per_reporter: int = 64
    max_neighbours: int = 32
    max_queriers: int = 8
    max_events: int = 4096
    max_packet_size: int = 16384
    allmulti: bool = False

    def __post_init__(self) -> None:
        if self.robustness < 1:
            raise UsageError("robustness must be at least 1")
        for name in (
            "query_interval",
            "query_response_interval",
            "last_member_query_interval",
            "pim_default_holdtime",
        ):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be positive")
        if self.settle_time is not None and self.settle_time < 0:
            raise UsageError("settle_time must not be negative")
        for name in (
            "max_groups",
            "max_reporters_per_group",
            "max_sources_per_reporter",
            "max_neighbours",
            "max_queriers",
            "max_events",
        ):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1")
        if self.max_packet_size < 64:
            raise UsageError("max_packet_size must be at least 64 bytes")

    @property
    def effective_settle_time(self) -> float:
        """:attr:`settle_time`, or its default when ``None``."""
        if self.settle_time is not None:
            return self.settle_time
        return self.query_interval + self.query_response_interval
