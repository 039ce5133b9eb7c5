"""The discovery core on a virtual clock: verdicts, members, timeouts, bounds. No sleeps."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.discovery import (
    DiscoveryConfig,
    LinkDiscovery,
    MemberExpired,
    MemberReported,
    RouterAppeared,
    RouterLost,
    Verdict,
    VerdictChanged,
)
from hamcast.discovery import packets as p
from hamcast.discovery.events import DiscoveryEvent
from hamcast.discovery.packets import (
    GroupRecord,
    MembershipLeave,
    MembershipQuery,
    MembershipReport,
    MembershipReportV3,
    PimHello,
    Protocol,
    RecordType,
)
from hamcast.errors import UsageError

IFINDEX = 7
ROUTER = "10.0.0.1"
HOST_A = "10.0.0.10"
HOST_B = "10.0.0.11"
GROUP = "239.1.2.3"
# RFC defaults: Other Querier Present Interval 2 * 125 + 10 / 2, Group Membership
# Interval 2 * 125 + 10, Last Member Query Time 2 * 1.
OQPI = 255.0
GMI = 260.0
LMQT = 2.0

V2_QUERY = MembershipQuery(Protocol.IGMP, 2, None, 10.0)
V3_QUERY = MembershipQuery(Protocol.IGMP, 3, None, 10.0, robustness=2, query_interval=125.0)


class Link:
    """A core plus a virtual clock and an event log."""

    def __init__(self, family: int = 4, config: DiscoveryConfig | None = None) -> None:
        self.now = 0.0
        self.core = LinkDiscovery(IFINDEX, family, config, now=self.now)
        self.events: list[DiscoveryEvent] = []

    def feed(
        self, message: p.Message, source: str, at: float | None = None
    ) -> list[DiscoveryEvent]:
        if at is not None:
            self.now = at
        self.core.receive(message, source, self.now)
        return self._drain()

    def feed_bytes(self, data: bytes, at: float | None = None) -> list[DiscoveryEvent]:
        if at is not None:
            self.now = at
        self.core.receive_packet(data, self.now)
        return self._drain()

    def advance(self, until: float) -> list[DiscoveryEvent]:
        """Run every timer up to ``until``, exactly as a driver would."""
        out: list[DiscoveryEvent] = []
        while (when := self.core.get_timer()) is not None and when <= until:
            assert when >= self.now, "a timer in the past"
            self.now = when
            self.core.handle_timer(when)
            out += self._drain()
        self.now = until
        return out

    def _drain(self) -> list[DiscoveryEvent]:
        out = []
        while (event := self.core.next_event()) is not None:
            out.append(event)
        self.events += out
        return out

    @property
    def verdict(self) -> Verdict:
        return self.core.verdict


def verdicts(events: list[DiscoveryEvent]) -> list[tuple[Verdict, Verdict]]:
    return [(e.old, e.new) for e in events if isinstance(e, VerdictChanged)]


# --- verdicts -------------------------------------------------------------------------


def test_silent_link_is_unknown_until_settled_then_none() -> None:
    link = Link()
    assert link.verdict is Verdict.UNKNOWN
    assert link.core.get_timer() == 135.0  # query interval + query response interval
    assert link.advance(134.0) == []
    events = link.advance(135.0)
    assert verdicts(events) == [(Verdict.UNKNOWN, Verdict.NONE)]
    assert link.core.get_timer() is None
    evidence = events[0].evidence  # type: ignore[union-attr]
    assert evidence.settled
    assert evidence.querier is None


def test_bridge_querier_gives_link_local_then_times_out() -> None:
    link = Link()
    events = link.feed(V3_QUERY, "0.0.0.0", at=3.0)
    assert verdicts(events) == [(Verdict.UNKNOWN, Verdict.LINK_LOCAL)]
    querier = link.core.evidence.querier
    assert querier is not None
    assert (querier.address, querier.version, querier.last_seen) == ("0.0.0.0", 3, 3.0)
    assert querier.expires == 3.0 + OQPI
    assert not querier.is_router
    assert link.core.get_timer() == 3.0 + OQPI
    # A later query refreshes it.
    link.feed(V3_QUERY, "0.0.0.0", at=100.0)
    assert link.advance(3.0 + OQPI) == []
    assert verdicts(link.advance(100.0 + OQPI)) == [(Verdict.LINK_LOCAL, Verdict.NONE)]


def test_pim_hello_gives_routed_and_goodbye_falls_back() -> None:
    link = Link()
    link.feed(V2_QUERY, ROUTER, at=1.0)
    events = link.feed(PimHello(105, 1, 99), ROUTER, at=2.0)
    assert RouterAppeared(IFINDEX, ROUTER, 105.0) in events
    assert verdicts(events) == [(Verdict.LINK_LOCAL, Verdict.ROUTED)]
    evidence = link.core.evidence
    assert evidence.querier is not None
    assert evidence.querier.is_router
    (neighbour,) = evidence.neighbours
    assert (neighbour.address, neighbour.holdtime, neighbour.expires) == (ROUTER, 105.0, 107.0)
    assert (neighbour.dr_priority, neighbour.generation_id) == (1, 99)
    # Holdtime 0 (RFC 7761 §4.3.1): the router leaves at once; its querier stays.
    events = link.feed(PimHello(0), ROUTER, at=10.0)
    assert events[0] == RouterLost(IFINDEX, ROUTER)
    assert verdicts(events) == [(Verdict.ROUTED, Verdict.LINK_LOCAL)]
    assert verdicts(link.advance(1.0 + OQPI)) == [(Verdict.LINK_LOCAL, Verdict.NONE)]


def test_pim_neighbour_expires_after_its_holdtime() -> None:
    link = Link()
    link.feed(PimHello(30), ROUTER, at=0.0)
    link.feed(PimHello(30), ROUTER, at=20.0)  # refresh
    assert link.advance(49.9) == []
    events = link.advance(50.0)
    assert events[0] == RouterLost(IFINDEX, ROUTER)
    assert verdicts(events) == [(Verdict.ROUTED, Verdict.NONE)]


def test_pim_holdtime_defaults_and_forever() -> None:
    link = Link(config=DiscoveryConfig(pim_default_holdtime=50.0))
    link.feed(PimHello(None), ROUTER, at=0.0)
    assert link.core.evidence.neighbours[0].expires == 50.0
    link.feed(PimHello(0xFFFF), "10.0.0.2", at=1.0)
    forever = link.core.evidence.neighbours[1]
    assert (forever.holdtime, forever.expires) == (None, None)
    link.advance(10_000.0)
    assert [n.address for n in link.core.evidence.neighbours] == ["10.0.0.2"]
    assert link.verdict is Verdict.ROUTED
    assert link.core.get_timer() is None


def test_learned_query_parameters() -> None:
    query = MembershipQuery(Protocol.IGMP, 3, None, 20.0, robustness=3, query_interval=60.0)
    link = Link()
    link.feed(query, ROUTER, at=0.0)
    querier = link.core.evidence.querier
    assert querier is not None
    # RFC 3376 §8.5: 3 * 60 + 20 / 2.
    assert (querier.robustness, querier.query_interval, querier.expires) == (3, 60.0, 190.0)
    # A group-specific query carries the last member interval, not the response interval.
    link.feed(dataclasses.replace(query, group=GROUP, max_response_time=1.0), ROUTER, at=10.0)
    assert link.core.evidence.querier.expires == 200.0  # type: ignore[union-attr]
    # Reports then live for the learned Group Membership Interval: 3 * 60 + 20.
    link.feed(MembershipReport(Protocol.IGMP, 2, GROUP), HOST_A, at=10.0)
    assert link.core.evidence.groups[0].expires == 210.0


def test_learning_can_be_switched_off() -> None:
    config = DiscoveryConfig(
        learn_query_parameters=False, robustness=1, query_interval=1.0, query_response_interval=1.0
    )
    link = Link(config=config)
    link.feed(V3_QUERY, ROUTER, at=0.0)
    assert link.core.evidence.querier.expires == 1.5  # type: ignore[union-attr]


def test_igmpv1_query_uses_configured_response_interval() -> None:
    link = Link()
    link.feed(MembershipQuery(Protocol.IGMP, 1, None, 0.0), ROUTER, at=0.0)
    assert link.core.evidence.querier.expires == OQPI  # type: ignore[union-attr]


def test_querier_implies_router_option() -> None:
    link = Link(config=DiscoveryConfig(querier_implies_router=True))
    assert verdicts(link.feed(V2_QUERY, "0.0.0.0")) == [(Verdict.UNKNOWN, Verdict.LINK_LOCAL)]
    assert verdicts(link.feed(V2_QUERY, ROUTER)) == [(Verdict.LINK_LOCAL, Verdict.ROUTED)]


def test_querier_election_prefers_lowest_real_address() -> None:
    link = Link()
    for address in ("0.0.0.0", "10.0.0.5", "10.0.0.2"):
        link.feed(V2_QUERY, address)
    evidence = link.core.evidence
    assert [q.address for q in evidence.queriers] == ["0.0.0.0", "10.0.0.2", "10.0.0.5"]
    assert evidence.querier is not None
    assert evidence.querier.address == "10.0.0.2"


def test_ipv6_link() -> None:
    link = Link(family=6)
    query = MembershipQuery(Protocol.MLD, 2, None, 10.0, robustness=2, query_interval=125.0)
    assert verdicts(link.feed(query, "fe80::1")) == [(Verdict.UNKNOWN, Verdict.LINK_LOCAL)]
    assert verdicts(link.feed(PimHello(105), "fe80::1")) == [(Verdict.LINK_LOCAL, Verdict.ROUTED)]
    events = link.feed(MembershipReport(Protocol.MLD, 1, "ff3e::7"), "fe80::9")
    assert events == [MemberReported(IFINDEX, "ff3e::7", "fe80::9")]
    # The querier is live, so a done waits for the Last Member Query Time.
    assert link.feed(MembershipLeave(Protocol.MLD, 1, "ff3e::7"), "fe80::9", at=5.0) == []
    assert link.advance(5.0 + LMQT) == [MemberExpired(IFINDEX, "ff3e::7")]
    # Solicited-node and other link-scope groups are noise.
    report = MembershipReportV3(
        Protocol.MLD, 2, (GroupRecord(RecordType.MODE_IS_EXCLUDE, "ff02::1:ff00:9"),)
    )
    assert link.feed(report, "fe80::9") == []


# --- members ---------------------------------------------------------------------------


def test_member_reported_once_per_group_and_expires_after_gmi() -> None:
    link = Link()
    report = MembershipReport(Protocol.IGMP, 2, GROUP)
    assert link.feed(report, HOST_A, at=1.0) == [MemberReported(IFINDEX, GROUP, HOST_A)]
    assert link.feed(report, HOST_B, at=2.0) == []
    (group,) = link.core.evidence.groups
    assert (group.group, group.reporters, group.expires) == (GROUP, (HOST_A, HOST_B), 2.0 + GMI)
    link.advance(135.0)  # settles: UNKNOWN -> NONE
    assert link.advance(2.0 + GMI - 0.5) == []
    assert link.advance(2.0 + GMI) == [MemberExpired(IFINDEX, GROUP)]


def test_leave_without_querier_expires_at_once_unless_others_listen() -> None:
    link = Link()
    link.feed(MembershipReport(Protocol.IGMP, 2, GROUP), HOST_A)
    link.feed(MembershipReport(Protocol.IGMP, 2, GROUP), HOST_B)
    assert link.feed(MembershipLeave(Protocol.IGMP, 2, GROUP), HOST_A) == []
    assert link.feed(MembershipLeave(Protocol.IGMP, 2, GROUP), HOST_B) == [
        MemberExpired(IFINDEX, GROUP)
    ]
    # A leave for a group nobody reported is harmless.
    assert link.feed(MembershipLeave(Protocol.IGMP, 2, "239.9.9.9"), HOST_B) == []


def test_leave_with_querier_waits_for_answers_to_group_specific_queries() -> None:
    link = Link()
    link.feed(V2_QUERY, ROUTER, at=0.0)
    link.feed(MembershipReport(Protocol.IGMP, 2, GROUP), HOST_A, at=1.0)
    assert link.feed(MembershipLeave(Protocol.IGMP, 2, GROUP), HOST_A, at=10.0) == []
    assert link.core.get_timer() == 10.0 + LMQT
    # HOST_B had suppressed its report (IGMPv2) and answers the querier now.
    link.feed(MembershipReport(Protocol.IGMP, 2, GROUP), HOST_B, at=11.0)
    assert link.advance(20.0) == []
    assert link.feed(MembershipLeave(Protocol.IGMP, 2, GROUP), HOST_B, at=30.0) == []
    assert link.advance(30.0 + LMQT) == [MemberExpired(IFINDEX, GROUP)]


def _v3(*records: tuple[int, str, tuple[str, ...]]) -> MembershipReportV3:
    return MembershipReportV3(
        Protocol.IGMP,
        3,
        tuple(GroupRecord(kind, group, sources) for kind, group, sources in records),
    )


def test_igmpv3_record_types() -> None:
    link = Link()
    asm, ssm = "239.5.5.5", "232.1.1.1"
    events = link.feed(
        _v3(
            (RecordType.CHANGE_TO_EXCLUDE_MODE, asm, ()),
            (RecordType.ALLOW_NEW_SOURCES, ssm, ("10.9.0.1",)),
            (99, "239.7.7.7", ()),  # unknown record type: ignored
        ),
        HOST_A,
    )
    assert events == [MemberReported(IFINDEX, asm, HOST_A), MemberReported(IFINDEX, ssm, HOST_A)]
    # More sources, then blocking some of them: still listening.
    link.feed(_v3((RecordType.ALLOW_NEW_SOURCES, ssm, ("10.9.0.2",))), HOST_A)
    assert link.feed(_v3((RecordType.BLOCK_OLD_SOURCES, ssm, ("10.9.0.1",))), HOST_A) == []
    # Blocking sources in EXCLUDE mode is still listening.
    assert link.feed(_v3((RecordType.BLOCK_OLD_SOURCES, asm, ("10.9.0.1",))), HOST_A) == []
    # The last source blocked: gone (no querier, so at once).
    assert link.feed(_v3((RecordType.BLOCK_OLD_SOURCES, ssm, ("10.9.0.2",))), HOST_A) == [
        MemberExpired(IFINDEX, ssm)
    ]
    # TO_IN {} is the IGMPv3 leave.
    assert link.feed(_v3((RecordType.CHANGE_TO_INCLUDE_MODE, asm, ())), HOST_A) == [
        MemberExpired(IFINDEX, asm)
    ]
    # IS_IN {S} replaces the source list; BLOCK of an unknown reporter is ignored.
    link.feed(_v3((RecordType.MODE_IS_INCLUDE, ssm, ("10.9.0.3",))), HOST_A)
    assert link.feed(_v3((RecordType.BLOCK_OLD_SOURCES, ssm, ("10.9.0.3",))), HOST_B) == []
    assert link.feed(_v3((RecordType.MODE_IS_INCLUDE, ssm, ())), HOST_A) == [
        MemberExpired(IFINDEX, ssm)
    ]


def test_link_local_groups_ignored_unless_asked() -> None:
    report = _v3((RecordType.MODE_IS_EXCLUDE, "224.0.0.251", ()))
    assert Link().feed(report, HOST_A) == []
    tracked = Link(config=DiscoveryConfig(track_link_local_groups=True))
    assert tracked.feed(report, HOST_A) == [MemberReported(IFINDEX, "224.0.0.251", HOST_A)]


def test_reports_from_the_unspecified_address() -> None:
    link = Link()
    events = link.feed(MembershipReport(Protocol.IGMP, 2, GROUP), "0.0.0.0")
    assert events == [MemberReported(IFINDEX, GROUP, "0.0.0.0")]


# --- raw packets in -------------------------------------------------------------------


def test_packets_in_and_malformed_ones_counted() -> None:
    link = Link()
    query = p.build_ipv4_packet(ROUTER, "224.0.0.1", 2, p.build_igmp_query(3))
    assert verdicts(link.feed_bytes(query)) == [(Verdict.UNKNOWN, Verdict.LINK_LOCAL)]
    bad = bytearray(query)
    bad[-1] ^= 1
    assert link.feed_bytes(bytes(bad)) == []
    assert link.feed_bytes(b"\x45garbage") == []
    assert link.feed_bytes(bytes(20_000)) == []  # oversized: dropped before parsing
    v6 = p.build_ipv6_packet("fe80::1", "ff02::1", 58, p.build_mld_query("fe80::1"))
    assert link.feed_bytes(v6) == []  # wrong family for this link
    udp = p.build_ipv4_packet(HOST_A, GROUP, 17, b"data", ttl=8)
    assert link.feed_bytes(udp) == []  # not discovery traffic: not even counted
    assert link.core.evidence.malformed == 4


def test_wiring_mistakes_raise_usage_errors() -> None:
    link = Link()
    with pytest.raises(UsageError, match="mld message fed to an IPv4 link"):
        link.feed(MembershipReport(Protocol.MLD, 1, "ff3e::1"), HOST_A)
    with pytest.raises(UsageError, match="IPv6 source"):
        link.feed(PimHello(105), "fe80::1")
    with pytest.raises(UsageError, match="not an IP address"):
        link.feed(PimHello(105), "router")
    with pytest.raises(UsageError, match="address family"):
        LinkDiscovery(1, 5, now=0.0)
    with pytest.raises(UsageError, match="robustness"):
        DiscoveryConfig(robustness=0)


def test_families_given_as_socket_constants() -> None:
    import socket

    assert LinkDiscovery(1, socket.AF_INET6, now=0.0).family == 6
    assert LinkDiscovery(1, socket.AF_INET, now=0.0).family == 4


# --- bounds -----------------------------------------------------------------------------


def test_group_bound() -> None:
    link = Link(config=DiscoveryConfig(max_groups=2))
    for n in range(3):
        link.feed(MembershipReport(Protocol.IGMP, 2, f"239.0.0.{n + 1}"), HOST_A)
    evidence = link.core.evidence
    assert [g.group for g in evidence.groups] == ["239.0.0.1", "239.0.0.2"]
    assert evidence.dropped == 1


def test_neighbour_and_querier_bounds() -> None:
    link = Link(config=DiscoveryConfig(max_neighbours=2, max_queriers=1))
    for n in range(3):
        link.feed(PimHello(105), f"10.0.0.{n + 1}")
        link.feed(V2_QUERY, f"10.0.0.{n + 1}")
    evidence = link.core.evidence
    assert len(evidence.neighbours) == 2
    assert len(evidence.queriers) == 1
    assert evidence.dropped == 3
    assert [e for e in link.events if isinstance(e, RouterAppeared)] == [
        RouterAppeared(IFINDEX, "10.0.0.1", 105.0),
        RouterAppeared(IFINDEX, "10.0.0.2", 105.0),
    ]


def test_reporter_bound_keeps_the_group_after_a_tracked_leave() -> None:
    link = Link(config=DiscoveryConfig(max_reporters_per_group=1))
    link.feed(MembershipReport(Protocol.IGMP, 2, GROUP), HOST_A, at=1.0)
    link.feed(MembershipReport(Protocol.IGMP, 2, GROUP), HOST_B, at=1.0)  # not remembered
    assert link.core.evidence.groups[0].reporters == (HOST_A,)
    # HOST_B may still listen, so HOST_A's leave cannot end the group...
    assert link.feed(MembershipLeave(Protocol.IGMP, 2, GROUP), HOST_A, at=2.0) == []
    # ...only the membership interval does.
    assert MemberExpired(IFINDEX, GROUP) in link.advance(1.0 + GMI)


def test_source_bound() -> None:
    link = Link(config=DiscoveryConfig(max_sources_per_reporter=2))
    many = tuple(f"10.9.0.{n}" for n in range(1, 5))
    link.feed(_v3((RecordType.MODE_IS_INCLUDE, "232.1.1.1", many)), HOST_A)
    # Blocking every remembered source cannot prove the host stopped listening.
    assert link.feed(_v3((RecordType.BLOCK_OLD_SOURCES, "232.1.1.1", many[:2])), HOST_A) == []
    assert len(link.core.evidence.groups) == 1


def test_event_queue_bound_keeps_the_newest() -> None:
    link = LinkDiscovery(IFINDEX, 4, DiscoveryConfig(max_events=2), now=0.0)
    for n in range(5):
        link.receive(MembershipReport(Protocol.IGMP, 2, f"239.0.0.{n + 1}"), HOST_A, 0.0)
    first = link.next_event()
    second = link.next_event()
    assert link.next_event() is None
    assert first == MemberReported(IFINDEX, "239.0.0.4", HOST_A)
    assert second == MemberReported(IFINDEX, "239.0.0.5", HOST_A)


def test_refreshes_do_not_grow_the_timer_heap() -> None:
    link = Link()
    for n in range(5000):
        link.feed(PimHello(105), ROUTER, at=float(n))
    assert len(link.core._heap) < 200


# --- properties ---------------------------------------------------------------------------

_SOURCES_V4 = [ROUTER, HOST_A, HOST_B, "0.0.0.0"]
_GROUPS = ["239.1.1.1", "239.1.1.2", "232.1.1.1"]

_messages = st.one_of(
    st.builds(
        MembershipQuery,
        st.just(Protocol.IGMP),
        st.integers(1, 3),
        st.sampled_from([None, *_GROUPS]),
        st.sampled_from([0.0, 1.0, 10.0]),
        robustness=st.integers(0, 7),
        query_interval=st.sampled_from([0.0, 5.0, 125.0]),
    ),
    st.builds(
        MembershipReport, st.just(Protocol.IGMP), st.integers(1, 2), st.sampled_from(_GROUPS)
    ),
    st.builds(MembershipLeave, st.just(Protocol.IGMP), st.just(2), st.sampled_from(_GROUPS)),
    st.builds(
        MembershipReportV3,
        st.just(Protocol.IGMP),
        st.just(3),
        st.lists(
            st.builds(
                GroupRecord,
                st.integers(1, 7),
                st.sampled_from(_GROUPS),
                st.lists(st.sampled_from(["10.9.0.1", "10.9.0.2"]), max_size=2).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(PimHello, st.sampled_from([None, 0, 3, 105, 0xFFFF])),
)
_steps = st.lists(
    st.tuples(st.floats(0.0, 100.0), _messages, st.sampled_from(_SOURCES_V4)), max_size=40
)


@settings(max_examples=200, deadline=None)
@given(_steps)
def test_any_input_sequence_keeps_the_invariants(steps: list[tuple[float, p.Message, str]]) -> None:
    config = DiscoveryConfig(max_groups=2, max_reporters_per_group=2, max_neighbours=2)
    link = Link(config=config)
    for delay, message, source in steps:
        link.advance(link.now + delay)
        link.feed(message, source)
        timer = link.core.get_timer()
        assert timer is None or timer > link.now or timer == link.now
        evidence = link.core.evidence
        assert len(evidence.groups) <= 2
        assert len(evidence.neighbours) <= 2
        expected = (
            Verdict.ROUTED
            if evidence.neighbours
            else Verdict.LINK_LOCAL
            if evidence.queriers
            else Verdict.NONE
            if evidence.settled
            else Verdict.UNKNOWN
        )
        assert link.verdict is expected
    link.advance(link.now + 100_000.0)
    final = link.core.evidence
    assert final.groups == ()
    assert final.queriers == ()
    assert all(n.expires is None for n in final.neighbours)
    # Per group, reported and expired alternate, starting with reported.
    listening: set[str] = set()
    for event in link.events:
        if isinstance(event, MemberReported):
            assert event.group not in listening
            listening.add(event.group)
        elif isinstance(event, MemberExpired):
            assert event.group in listening
            listening.remove(event.group)
    assert not listening
    # Verdict changes chain.
    chain = verdicts(link.events)
    for (_, new), (old, _) in itertools.pairwise(chain):
        assert new is old
