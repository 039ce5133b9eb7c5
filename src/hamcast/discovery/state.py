"""The per-link discovery core: queries, Hellos and reports in; verdict and events out.

Sans-I/O (docs/discovery.md): no sockets, no clock, no asyncio. One
:class:`LinkDiscovery` watches one interface in one address family.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
from collections import deque
from dataclasses import dataclass, field

from hamcast.discovery.config import DiscoveryConfig
from hamcast.discovery.events import (
    DiscoveryEvent,
    MemberExpired,
    MemberReported,
    RouterAppeared,
    RouterLost,
    VerdictChanged,
)
from hamcast.discovery.model import Evidence, GroupInfo, NeighbourInfo, QuerierInfo, Verdict
from hamcast.discovery.packets import (
    MalformedPacketError,
    MembershipLeave,
    MembershipQuery,
    MembershipReport,
    MembershipReportV3,
    Message,
    PimHello,
    Protocol,
    RecordType,
    parse_packet,
)
from hamcast.errors import UsageError

__all__ = ["LinkDiscovery", "normalize_family"]

logger = logging.getLogger(__name__)

#: PIM Holdtime meaning "never time out" (RFC 7761 §4.9.2).
_HOLDTIME_FOREVER = 0xFFFF
_ZERO_ADDRESSES = frozenset({"0.0.0.0", "::"})
_IPV4_LINK_LOCAL_GROUPS = ipaddress.IPv4Network("224.0.0.0/24")
# Remote faults are logged loudly this many times, then once per this many.
_WARN_FIRST = 5
_WARN_EVERY = 1000

_SETTLE = "settle"
_QUERIER = "querier"
_NEIGHBOUR = "neighbour"
_GROUP = "group"


def normalize_family(family: int) -> int:
    """4 or 6 for ``family`` given as 4 / 6 or as ``socket.AF_INET`` / ``AF_INET6``."""
    # AF_INET is 2 and AF_INET6 is 10 on Linux: neither collides with 4 or 6.
    mapping = {4: 4, 6: 6, 2: 4, 10: 6}
    if family not in mapping:
        raise UsageError(f"address family {family!r}: use 4 or 6")
    return mapping[family]


@dataclass(slots=True)
class _Querier:
    version: int
    last_seen: float
    expires: float
    robustness: int
    query_interval: float
    response_interval: float


@dataclass(slots=True)
class _Neighbour:
    holdtime: float | None
    last_seen: float
    expires: float | None
    dr_priority: int | None
    generation_id: int | None


@dataclass(slots=True)
class _Reporter:
    last_seen: float
    #: EXCLUDE mode (any source, as IGMPv1/v2 and MLDv1 reports mean) or INCLUDE.
    exclude: bool
    sources: set[str] = field(default_factory=set)
    #: More include sources than remembered: a BLOCK can never prove it empty.
    sources_overflow: bool = False


@dataclass(slots=True)
class _Group:
    version: int
    last_seen: float
    expires: float
    reporters: dict[str, _Reporter] = field(default_factory=dict)
    #: Some reporters were not remembered (bound reached): others may listen.
    reporters_overflow: bool = False
    #: After the last known listener left while a querier runs: expire then
    #: unless someone answers the querier's group-specific queries.
    leave_deadline: float | None = None

    @property
    def deadline(self) -> float:
        if self.leave_deadline is not None:
            return min(self.leave_deadline, self.expires)
        return self.expires


class LinkDiscovery:
    """What one link says about multicast, from the queries, Hellos and reports heard.

    Driving contract (the aioquic style; every ``now`` is the caller's
    monotonic clock in seconds and never goes backwards):

    * :meth:`receive_packet` with every captured IPv4/IPv6 packet of the
      link's family (malformed ones are counted and logged, never raised), or
      :meth:`receive` with an already parsed message and its source address;
    * :meth:`handle_timer` when ``now`` reaches :meth:`get_timer` (calling it
      early or late is harmless: it does what is due by ``now``);
    * after each of those, :meth:`next_event` until it returns ``None``, and
      :meth:`get_timer` again to re-arm the one timer.

    The core never sends anything. :attr:`verdict` and :attr:`evidence` can be
    read at any time.

    How the verdict is decided (docs/discovery.md has the reasoning):

    * a PIM neighbour is live -> ``ROUTED``;
    * else a querier is live -> ``LINK_LOCAL`` (``ROUTED`` when
      ``querier_implies_router`` is set and its address is not all-zero);
    * else ``NONE`` once settled, ``UNKNOWN`` before.

    A querier is live for the Other Querier Present Interval after its last
    query: robustness * query interval + query response interval / 2
    (RFC 2236 §8.5, RFC 3376 §8.5, RFC 2710 §7.5, RFC 3810 §9.5). A PIM
    neighbour for the holdtime of its last Hello (RFC 7761 §4.3.1, §4.9.2). A group
    for the Group Membership Interval after its last report: robustness *
    query interval + query response interval (RFC 2236 §8.4, RFC 3376 §8.4,
    RFC 2710 §7.4, RFC 3810 §9.4).
    """

    def __init__(
        self,
        interface: int,
        family: int,
        config: DiscoveryConfig | None = None,
        *,
        now: float,
    ) -> None:
        self.interface = interface
        self.family = normalize_family(family)
        self.config = config or DiscoveryConfig()
        self._listening_since = now
        self._settled = False
        self._verdict = Verdict.UNKNOWN
        self._queriers: dict[str, _Querier] = {}
        self._neighbours: dict[str, _Neighbour] = {}
        self._groups: dict[str, _Group] = {}
        self._events: deque[DiscoveryEvent] = deque()
        self._malformed = 0
        self._dropped = 0
        self._events_lost = 0
        # One heap of (deadline, sequence, kind, key); an entry is live only
        # while _deadlines still maps (kind, key) to its deadline, so a
        # refresh just pushes a new entry and the old one is skipped later.
        self._heap: list[tuple[float, int, str, str]] = []
        self._deadlines: dict[tuple[str, str], float] = {}
        self._sequence = 0
        self._schedule(_SETTLE, "", now + self.config.effective_settle_time)

    # --- reading -------------------------------------------------------------

    @property
    def verdict(self) -> Verdict:
        """The link's verdict now."""
        return self._verdict

    @property
    def evidence(self) -> Evidence:
        """A snapshot of everything the verdict rests on."""
        neighbours = tuple(
            NeighbourInfo(
                address,
                n.holdtime,
                n.last_seen,
                n.expires,
                n.dr_priority,
                n.generation_id,
            )
            for address, n in sorted(self._neighbours.items(), key=_by_address)
        )
        queriers = tuple(
            QuerierInfo(
                address,
                q.version,
                q.last_seen,
                q.expires,
                q.robustness,
                q.query_interval,
                address in self._neighbours,
            )
            for address, q in sorted(self._queriers.items(), key=_by_address)
        )
        groups = tuple(
            GroupInfo(
                group,
                tuple(sorted(g.reporters, key=ipaddress.ip_address)),
                g.version,
                g.last_seen,
                g.deadline,
            )
            for group, g in sorted(self._groups.items(), key=_by_address)
        )
        return Evidence(
            interface=self.interface,
            family=self.family,
            querier=_elected(queriers),
            queriers=queriers,
            neighbours=neighbours,
            groups=groups,
            listening_since=self._listening_since,
            settled=self._settled,
            malformed=self._malformed,
            dropped=self._dropped,
        )

    def next_event(self) -> DiscoveryEvent | None:
        """The oldest undelivered event, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should be called next, or ``None`` if never."""
        heap = self._heap
        while heap:
            deadline, _, kind, key = heap[0]
            if self._deadlines.get((kind, key)) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    # --- input ---------------------------------------------------------------

    def receive_packet(self, data: bytes, now: float) -> None:
        """Feed one captured IP packet (header included) of this link's family."""
        if len(data) > self.config.max_packet_size:
            self._remote_fault(
                f"dropped a {len(data)}-byte packet (limit {self.config.max_packet_size})"
            )
            return
        try:
            packet = parse_packet(data)
        except MalformedPacketError as exc:
            self._remote_fault(f"dropped a malformed packet: {exc}")
            return
        if packet is None:
            return
        if _family_of(packet.source) != self.family:
            self._remote_fault(
                f"dropped an IPv{_family_of(packet.source)} packet on an IPv{self.family} link"
            )
            return
        self.receive(packet.message, packet.source, now)

    def receive(self, message: Message, source_address: str, now: float) -> None:
        """Feed one parsed message that ``source_address`` sent on this link.

        Raises :class:`~hamcast.errors.UsageError` for a message or address of
        the other family (a wiring mistake of the caller).
        """
        source = self._canonical(source_address)
        self._expire(now)
        if isinstance(message, PimHello):
            self._hello(message, source, now)
        else:
            wanted = Protocol.IGMP if self.family == 4 else Protocol.MLD
            if message.protocol is not wanted:
                raise UsageError(
                    f"{message.protocol.value} message fed to an IPv{self.family} link"
                )
            if isinstance(message, MembershipQuery):
                self._query(message, source, now)
            elif isinstance(message, MembershipReport):
                self._reported(message.group, source, message.version, now, exclude=True)
            elif isinstance(message, MembershipLeave):
                self._reporter_left(message.group, source, now)
            else:
                self._report_v3(message, source, now)
        self._update_verdict()

    def handle_timer(self, now: float) -> None:
        """Expire whatever is due by ``now``."""
        self._expire(now)
        self._update_verdict()

    # --- queries and Hellos ---------------------------------------------------

    def _query(self, message: MembershipQuery, source: str, now: float) -> None:
        known = self._queriers.get(source)
        if known is None and len(self._queriers) >= self.config.max_queriers:
            self._bound_reached(f"more than {self.config.max_queriers} queriers; ignoring {source}")
            return
        cfg = self.config
        robustness = known.robustness if known else cfg.robustness
        interval = known.query_interval if known else cfg.query_interval
        response = known.response_interval if known else cfg.query_response_interval
        if cfg.learn_query_parameters:
            # Non-queriers adopt QRV and QQI from the queries they hear
            # (RFC 3376 §4.1.6-4.1.7, RFC 3810 §5.1.8-5.1.9); QRV 0 and QQI 0
            # mean "not carried".
            if message.robustness:
                robustness = message.robustness
            if message.query_interval:
                interval = message.query_interval
            # A general query's Max Resp Time is the querier's Query Response
            # Interval; a group-specific one carries the Last Member Query
            # Interval instead, so only general queries teach it.
            if message.group is None and message.max_response_time > 0:
                response = message.max_response_time
        expires = now + robustness * interval + response / 2
        self._queriers[source] = _Querier(
            message.version, now, expires, robustness, interval, response
        )
        self._schedule(_QUERIER, source, expires)
        self._settle()

    def _hello(self, message: PimHello, source: str, now: float) -> None:
        known = self._neighbours.get(source)
        if message.holdtime == 0:
            # RFC 7761 §4.3.1: a Hello with Holdtime 0 is a router leaving.
            if known is not None:
                self._forget_neighbour(source)
            return
        if known is None and len(self._neighbours) >= self.config.max_neighbours:
            self._bound_reached(
                f"more than {self.config.max_neighbours} PIM neighbours; ignoring {source}"
            )
            return
        holdtime: float | None
        if message.holdtime is None:
            holdtime = self.config.pim_default_holdtime
        elif message.holdtime == _HOLDTIME_FOREVER:
            holdtime = None
        else:
            holdtime = float(message.holdtime)
        expires = None if holdtime is None else now + holdtime
        self._neighbours[source] = _Neighbour(
            holdtime, now, expires, message.dr_priority, message.generation_id
        )
        if expires is None:
            self._unschedule(_NEIGHBOUR, source)
        else:
            self._schedule(_NEIGHBOUR, source, expires)
        self._settle()
        if known is None:
            logger.info("interface %d: PIM router %s appeared", self.interface, source)
            self._emit(RouterAppeared(self.interface, source, holdtime))

    def _forget_neighbour(self, source: str) -> None:
        del self._neighbours[source]
        self._unschedule(_NEIGHBOUR, source)
        logger.info("interface %d: PIM router %s lost", self.interface, source)
        self._emit(RouterLost(self.interface, source))

    def _settle(self) -> None:
        if not self._settled:
            self._settled = True
            self._unschedule(_SETTLE, "")

    # --- membership -----------------------------------------------------------

    def _report_v3(self, message: MembershipReportV3, source: str, now: float) -> None:
        for record in message.records:
            kind = record.record_type
            if kind in (RecordType.MODE_IS_INCLUDE, RecordType.CHANGE_TO_INCLUDE_MODE):
                if record.sources:
                    self._reported(
                        record.group,
                        source,
                        message.version,
                        now,
                        exclude=False,
                        sources=record.sources,
                        replace=True,
                    )
                else:
                    # INCLUDE of nothing is how IGMPv3/MLDv2 say "left" (RFC 3376 §5.1).
                    self._reporter_left(record.group, source, now)
            elif kind in (RecordType.MODE_IS_EXCLUDE, RecordType.CHANGE_TO_EXCLUDE_MODE):
                self._reported(record.group, source, message.version, now, exclude=True)
            elif kind == RecordType.ALLOW_NEW_SOURCES:
                if record.sources:
                    self._reported(
                        record.group,
                        source,
                        message.version,
                        now,
                        exclude=False,
                        sources=record.sources,
                    )
            elif kind == RecordType.BLOCK_OLD_SOURCES:
                self._blocked(
                    record.group, source, record.sources, version=message.version, now=now
                )
            # Unknown record types are ignored (RFC 3376 §4.2.12, RFC 3810 §5.2.12).

    def _reported(
        self,
        group: str,
        reporter: str,
        version: int,
        now: float,
        *,
        exclude: bool,
        sources: tuple[str, ...] = (),
        replace: bool = False,
    ) -> None:
        """``reporter`` listens to ``group``: in EXCLUDE mode, or to ``sources`` (INCLUDE)."""
        if not self._tracked_group(group):
            return
        entry = self._groups.get(group)
        new = entry is None
        if entry is None:
            if len(self._groups) >= self.config.max_groups:
                self._bound_reached(f"more than {self.config.max_groups} groups; ignoring {group}")
                return
            entry = _Group(version, now, now)
            self._groups[group] = entry
        state = entry.reporters.get(reporter)
        if state is None:
            if len(entry.reporters) >= self.config.max_reporters_per_group:
                self._prune_reporters(entry, now)
            if len(entry.reporters) >= self.config.max_reporters_per_group:
                entry.reporters_overflow = True
            else:
                state = entry.reporters[reporter] = _Reporter(now, exclude)
        if state is not None:
            state.last_seen = now
            if exclude:
                state.exclude = True
                state.sources.clear()
                state.sources_overflow = False
            elif not state.exclude or replace:
                if replace:
                    state.exclude = False
                    state.sources.clear()
                    state.sources_overflow = False
                for item in sources:
                    if len(state.sources) >= self.config.max_sources_per_reporter:
                        state.sources_overflow = True
                        break
                    state.sources.add(item)
        entry.version = version
        entry.last_seen = now
        entry.expires = now + self._membership_interval()
        entry.leave_deadline = None
        self._schedule(_GROUP, group, entry.deadline)
        if new:
            logger.debug("interface %d: %s reported %s", self.interface, reporter, group)
            self._emit(MemberReported(self.interface, group, reporter))

    def _blocked(
        self, group: str, reporter: str, sources: tuple[str, ...], *, version: int, now: float
    ) -> None:
        entry = self._groups.get(group)
        state = entry.reporters.get(reporter) if entry else None
        if entry is None or state is None:
            return
        if state.exclude:
            # Blocking sources in EXCLUDE mode still means listening.
            self._reported(group, reporter, version, now, exclude=True)
            return
        state.sources.difference_update(sources)
        if state.sources or state.sources_overflow:
            state.last_seen = now
            return
        self._reporter_left(group, reporter, now)

    def _reporter_left(self, group: str, reporter: str, now: float) -> None:
        entry = self._groups.get(group)
        if entry is None:
            return
        entry.reporters.pop(reporter, None)
        self._prune_reporters(entry, now)
        if entry.reporters:
            return  # others still listen
        if self._queriers:
            # The querier now asks for remaining listeners with group-specific
            # queries; they answer within the Last Member Query Time
            # (RFC 3376 §6.4.2 and §8.10, RFC 3810 §7.4.2 and §9.10, RFC 2236 §3).
            entry.leave_deadline = now + self._last_member_query_time()
            self._schedule(_GROUP, group, entry.deadline)
        elif not entry.reporters_overflow:
            # Nobody will ask: the last listener we know of is gone.
            self._expire_group(group)

    def _prune_reporters(self, entry: _Group, now: float) -> None:
        horizon = now - self._membership_interval()
        stale = [r for r, s in entry.reporters.items() if s.last_seen <= horizon]
        for reporter in stale:
            del entry.reporters[reporter]

    def _expire_group(self, group: str) -> None:
        del self._groups[group]
        self._unschedule(_GROUP, group)
        logger.debug("interface %d: %s expired", self.interface, group)
        self._emit(MemberExpired(self.interface, group))

    def _tracked_group(self, group: str) -> bool:
        if self.config.track_link_local_groups:
            return True
        address = ipaddress.ip_address(group)
        if isinstance(address, ipaddress.IPv4Address):
            return address not in _IPV4_LINK_LOCAL_GROUPS
        # The scope nibble of an IPv6 multicast address (RFC 4291 §2.7):
        # 0-2 never leave the link.
        return (address.packed[1] & 0x0F) > 2

    # --- timing ----------------------------------------------------------------

    def _current_parameters(self) -> tuple[int, float, float]:
        """(robustness, query interval, query response interval) now in force."""
        querier = _elected_state(self._queriers)
        if querier is not None:
            return querier.robustness, querier.query_interval, querier.response_interval
        cfg = self.config
        return cfg.robustness, cfg.query_interval, cfg.query_response_interval

    def _membership_interval(self) -> float:
        # RFC 3376 §8.4 / RFC 3810 §9.4 (and RFC 2236 §8.4, RFC 2710 §7.4).
        robustness, interval, response = self._current_parameters()
        return robustness * interval + response

    def _last_member_query_time(self) -> float:
        # Last Member Query Count (default: the robustness, RFC 3376 §8.9)
        # times the Last Member Query Interval (RFC 3376 §8.8-8.10, RFC 3810 §9.8-9.10).
        robustness, _, _ = self._current_parameters()
        return robustness * self.config.last_member_query_interval

    def _schedule(self, kind: str, key: str, deadline: float) -> None:
        if self._deadlines.get((kind, key)) == deadline:
            return
        self._deadlines[(kind, key)] = deadline
        self._sequence += 1
        heapq.heappush(self._heap, (deadline, self._sequence, kind, key))
        # Refreshes leave dead entries behind; rebuild before they pile up.
        if len(self._heap) > 2 * len(self._deadlines) + 64:
            self._heap = [
                (when, index, k, name)
                for index, ((k, name), when) in enumerate(self._deadlines.items())
            ]
            heapq.heapify(self._heap)
            self._sequence = len(self._heap)

    def _unschedule(self, kind: str, key: str) -> None:
        self._deadlines.pop((kind, key), None)

    def _expire(self, now: float) -> None:
        while True:
            when = self.get_timer()
            if when is None or when > now:
                return
            _, _, kind, key = heapq.heappop(self._heap)
            del self._deadlines[(kind, key)]
            if kind == _SETTLE:
                self._settled = True
            elif kind == _QUERIER:
                del self._queriers[key]
                logger.debug("interface %d: querier %s timed out", self.interface, key)
            elif kind == _NEIGHBOUR:
                self._forget_neighbour(key)
            else:
                self._expire_group(key)

    # --- verdict and plumbing ----------------------------------------------------

    def _compute_verdict(self) -> Verdict:
        if self._neighbours:
            return Verdict.ROUTED
        if self._queriers:
            if self.config.querier_implies_router and any(
                address not in _ZERO_ADDRESSES for address in self._queriers
            ):
                return Verdict.ROUTED
            return Verdict.LINK_LOCAL
        return Verdict.NONE if self._settled else Verdict.UNKNOWN

    def _update_verdict(self) -> None:
        new = self._compute_verdict()
        old = self._verdict
        if new is old:
            return
        self._verdict = new
        logger.info(
            "interface %d IPv%d: verdict %s -> %s",
            self.interface,
            self.family,
            old.value,
            new.value,
        )
        self._emit(VerdictChanged(self.interface, self.family, old, new, self.evidence))

    def _emit(self, event: DiscoveryEvent) -> None:
        if len(self._events) >= self.config.max_events:
            # Only a caller that never drains gets here; keep the newest facts.
            self._events.popleft()
            self._events_lost += 1
            if self._events_lost == 1 or self._events_lost % _WARN_EVERY == 0:
                logger.warning(
                    "interface %d: %d discovery events lost (nobody drains them)",
                    self.interface,
                    self._events_lost,
                )
        self._events.append(event)

    def _canonical(self, address: str) -> str:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError as exc:
            raise UsageError(f"not an IP address: {address!r}") from exc
        if parsed.version != self.family:
            raise UsageError(f"IPv{parsed.version} source {address} on an IPv{self.family} link")
        return str(parsed)

    def _remote_fault(self, text: str) -> None:
        self._malformed += 1
        self._log_limited(self._malformed, text)

    def _bound_reached(self, text: str) -> None:
        self._dropped += 1
        self._log_limited(self._dropped, text)

    def _log_limited(self, count: int, text: str) -> None:
        # Remote input must not flood the log: the first few, then a sample.
        if count <= _WARN_FIRST or count % _WARN_EVERY == 0:
            logger.warning(
                "interface %d IPv%d: %s (%d so far)", self.interface, self.family, text, count
            )
        else:
            logger.debug("interface %d IPv%d: %s", self.interface, self.family, text)


def _by_address(item: tuple[str, object]) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(item[0])


def _family_of(address: str) -> int:
    return ipaddress.ip_address(address).version


def _elected(queriers: tuple[QuerierInfo, ...]) -> QuerierInfo | None:
    """The lowest address wins the election; an all-zero (switch) querier only if alone."""
    real = [q for q in queriers if q.address not in _ZERO_ADDRESSES]
    if real:
        return real[0]
    return queriers[0] if queriers else None


def _elected_state(queriers: dict[str, _Querier]) -> _Querier | None:
    real = sorted((a for a in queriers if a not in _ZERO_ADDRESSES), key=ipaddress.ip_address)
    if real:
        return queriers[real[0]]
    return next(iter(queriers.values()), None)
