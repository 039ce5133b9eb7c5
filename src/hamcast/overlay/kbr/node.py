"""The Pastry-style routing node: datagrams, time and calls in; datagrams, a timer, events out.

Sans-I/O (STYLE.md 1): no sockets, no clock, no asyncio. The protocol is
Pastry (Rowstron & Druschel, "Pastry: Scalable, decentralized object
location and routing for large-scale peer-to-peer systems", Middleware 2001),
with the keep-alive, repair and verification habits of MSPastry (Castro et
al., "Performance and dependability of structured peer-to-peer overlays",
DSN 2004). docs/technologies/overlay-kbr.md explains the choices.
"""

from __future__ import annotations

import enum
import heapq
import logging
import random
from collections import deque
from collections.abc import Sequence
from typing import Final

from hamcast.errors import ClosedError, MessageTooLongError, ProtocolError, UsageError
from hamcast.overlay.api import (
    Delivered,
    DirectReceived,
    Joined,
    KbrEvent,
    NeighborsChanged,
    NodeFailed,
    RouteStep,
)
from hamcast.overlay.ids import ID_BITS, ID_SPACE, Address, NodeHandle
from hamcast.overlay.kbr import stats as _stats
from hamcast.overlay.kbr.config import KbrConfig
from hamcast.overlay.kbr.leaf_set import LeafSet
from hamcast.overlay.kbr.messages import (
    DATA_HEADER_SIZE,
    FLAG_MEMBER,
    ROUTE_DATA_HEAD_SIZE,
    VERSION,
    Announce,
    CompactDatagram,
    Datagram,
    Direct,
    Join,
    JoinReply,
    LeafSetRequest,
    Leave,
    Message,
    MessageType,
    Ping,
    Pong,
    Route,
    RowRequest,
    Rows,
    UnsupportedVersion,
    WireCodec,
    encode_handle,
    read_compact,
)
from hamcast.overlay.kbr.messages import LeafSet as LeafSetMessage
from hamcast.overlay.kbr.routing_table import RoutingTable
from hamcast.overlay.kbr.stats import KbrStats

__all__ = ["DataUpcall", "KbrNode", "NodeState"]

logger = logging.getLogger(__name__)

_MASK: Final = ID_SPACE - 1
_HALF_SPACE: Final = ID_SPACE >> 1
# Remote faults are logged as warnings this many times, then once per this many.
_WARN_FIRST: Final = 5
_WARN_EVERY: Final = 1000
# Weight of a new round-trip sample in the smoothed estimate (RFC 6298's alpha).
_RTT_GAIN: Final = 0.125

# Timer kinds; the argument says which peer, request or round it is for.
_ROUND: Final = 0
_PROBE: Final = 1
_CANDIDATE: Final = 2
_JOIN: Final = 3
_SETTLE: Final = 4
_REQUEST: Final = 5
_MAINTAIN: Final = 6


class NodeState(enum.Enum):
    """Where a node is in its life."""

    IDLE = "idle"  # constructed, bootstrap() not called yet
    JOINING = "joining"  # JOIN sent, waiting for the root's answer and its leaves' pongs
    JOINED = "joined"  # a member: routes, answers, probes
    LEFT = "left"  # leave() was called; inert


# A module constant: reading a member through the Enum class costs more on the data path.
_JOINED: Final = NodeState.JOINED

_TRANSITIONS: Final[dict[NodeState, frozenset[NodeState]]] = {
    NodeState.IDLE: frozenset({NodeState.JOINING, NodeState.JOINED, NodeState.LEFT}),
    NodeState.JOINING: frozenset({NodeState.JOINED, NodeState.LEFT}),
    NodeState.JOINED: frozenset({NodeState.LEFT}),
    NodeState.LEFT: frozenset(),
}

# What each state accepts from the network; anything else is counted as dropped.
_ACCEPTS: Final[dict[NodeState, frozenset[MessageType]]] = {
    NodeState.IDLE: frozenset(),
    NodeState.JOINING: frozenset({MessageType.ROWS, MessageType.JOIN_REPLY, MessageType.PONG}),
    NodeState.JOINED: frozenset(MessageType),
    NodeState.LEFT: frozenset(),
}


_CODECS: dict[KbrConfig, WireCodec] = {}


# Kinds whose sender is not simply learned on receipt: a PONG carries a
# round-trip time to learn it with, an ANNOUNCE may readmit a departed node,
# and the sender of a LEAVE is going away.
_LEARNS_ITSELF: Final = frozenset({MessageType.PONG, MessageType.ANNOUNCE, MessageType.LEAVE})

# The same sets as plain ints for the per-datagram checks: an enum member's hash
# is Python code (Enum.__hash__), an int's is not.
_ACCEPTS_INT: Final[dict[NodeState, frozenset[int]]] = {
    state: frozenset(int(kind) for kind in kinds) for state, kinds in _ACCEPTS.items()
}
_LEARNS_ITSELF_INT: Final = frozenset(int(kind) for kind in _LEARNS_ITSELF)

_DATA: Final = int(MessageType.DATA)
_ROUTE_DATA: Final = int(MessageType.ROUTE_DATA)
_DIRECT_INT: Final = int(MessageType.DIRECT)
_HOP_BYTES: Final = tuple(bytes((i,)) for i in range(256))
# Handles made for compact senders not in the tables: (id, address) -> handle.
_MAX_STRANGERS: Final = 1024
# Keys whose next hop is remembered for the data path.
_MAX_HOPS_CACHED: Final = 1024
# Encoded key and origin of ROUTE_DATA per key, for this node's own routes.
_MAX_ROUTE_TAILS: Final = 256

#: A data upcall as queued: ``(payload, sender)`` for a direct message,
#: ``(key, payload, origin, hops)`` for a plain route that ended here.
DataUpcall = tuple[bytes, NodeHandle] | tuple[int, bytes, NodeHandle, int]


def _codec_for(config: KbrConfig) -> WireCodec:
    """One codec per configuration, shared by every node that uses it."""
    codec = _CODECS.get(config)
    if codec is None:
        if len(_CODECS) >= 64:
            _CODECS.clear()
        codec = _CODECS[config] = WireCodec(
            rows=config.rows,
            columns=config.columns,
            leaf_set_size=config.leaf_set_size,
            max_payload=config.max_payload,
            max_hops=config.max_hops,
            max_rows_per_message=config.max_rows_per_message,
        )
    return codec


class _Peer:
    """What a node knows about one node in its tables."""

    __slots__ = ("handle", "last_heard", "leaf", "missed", "probe_sent", "rtt")

    def __init__(self, handle: NodeHandle, now: float, rtt: float | None) -> None:
        self.handle = handle
        #: Smoothed round-trip time, seconds; ``None`` until a ping was answered.
        self.rtt = rtt
        #: When any datagram from it last arrived (``now`` of that call).
        self.last_heard = now
        #: ``now`` of the outstanding ping (its echoed timestamp), or ``None``.
        self.probe_sent: float | None = None
        #: Pings in a row that went unanswered.
        self.missed = 0
        #: Whether it is in the leaf set (kept in step with the LeafSet).
        self.leaf = False


class KbrNode:
    """A Pastry node: routes keys to the live node with the numerically closest id.

    Implements :class:`hamcast.overlay.api.KeyBasedRouting`.

    **Driving contract** (the aioquic style; every ``now`` is the caller's
    monotonic clock in seconds and never goes backwards):

    * :meth:`bootstrap` once, with the addresses of known members (an empty
      list starts a new overlay: the node is joined at once);
    * :meth:`receive_datagram` with every UDP datagram that arrives, and its
      source address (malformed or oversize ones are counted in
      :attr:`stats` and dropped; nothing a peer sends raises);
    * :meth:`handle_timer` when ``now`` reaches :meth:`get_timer` (calling
      it early or late is harmless: it does what is due by ``now``);
    * the :class:`~hamcast.overlay.api.KeyBasedRouting` calls (``route``,
      ``forward``, ``send_direct``) whenever the layer above wants;
    * after each of those calls: :meth:`datagrams_to_send` (send each to its
      address), :meth:`next_event` until it returns ``None`` (or
      :meth:`next_upcall`: the same upcalls, data ones as plain tuples), and
      :meth:`get_timer` to re-arm the one timer.

    :meth:`leave` says goodbye to the leaf set; flush :meth:`datagrams_to_send`
    once more after it. A node is not reusable after leaving.

    **Routing** (Pastry §2.2). A key within the leaf set's range goes to the
    member numerically closest to it; otherwise to the routing-table entry
    that shares one more digit with the key; otherwise to any known node that
    is closer to the key. Every hop goes to a node strictly closer to the
    key by ``(ring distance, id)`` — so no route can loop — and the node
    where no known node is closer is the root. Ties in ring distance go to
    the lower id. An intercepted route stops at every node as a
    :class:`~hamcast.overlay.api.RouteStep`; pass it on with
    ``forward(step.key, payload, step.next_hop, now, step=step)``.

    **Membership**. A node enters another's tables only on direct evidence
    that it is alive and joined: a datagram from it with the ``MEMBER`` flag.
    Names learned from others' lists (join rows, leaf sets) are verified by a
    ping first, which also measures the round-trip time that decides between
    two candidates for one routing-table slot (proximity, Pastry §2.5).
    """

    __slots__ = (
        "_bootstrap",
        "_candidates",
        "_codec",
        "_config",
        "_counts",
        "_data_head",
        "_events",
        "_failed",
        "_gossip_due",
        "_handle",
        "_hops",
        "_id",
        "_join_attempt",
        "_join_pending",
        "_join_replied",
        "_leaf",
        "_maintain_row",
        "_max_datagram",
        "_me_bytes",
        "_neighbors_changed",
        "_out",
        "_peers",
        "_requests",
        "_rng",
        "_round",
        "_route_head",
        "_route_tails",
        "_rt",
        "_seq",
        "_state",
        "_strangers",
        "_timers",
        "_warnings",
    )

    def __init__(self, handle: NodeHandle, config: KbrConfig, rng: random.Random) -> None:
        self._handle = handle
        self._id = handle.id
        self._config = config
        self._rng = rng
        # Raises UsageError for an id or address that cannot go on the wire.
        self._me_bytes = encode_handle(handle)
        self._codec = _codec_for(config)
        self._max_datagram = config.max_datagram_size
        # The fixed front of this node's compact datagrams (only a member sends them).
        my_id = handle.id.to_bytes(16, "big")
        self._data_head = bytes((VERSION, _DATA, FLAG_MEMBER)) + my_id
        self._route_head = bytes((VERSION, _ROUTE_DATA, FLAG_MEMBER)) + my_id
        self._route_tails: dict[int, bytes] = {}
        self._strangers: dict[tuple[int, Address], NodeHandle] = {}
        # key -> next hop of the data path (None: this node is the root); emptied
        # whenever a table changes (_consider, _leaf_add, _forget_if_unused,
        # _drop_peer), so it always says what _next_hop would.
        self._hops: dict[int, int | None] = {}
        self._state = NodeState.IDLE
        self._peers: dict[int, _Peer] = {}
        self._leaf = LeafSet(handle.id, config.leaf_set_size)
        self._rt = RoutingTable(handle.id, config.b)
        # Nodes named by others, being verified: id -> (handle, ping timestamp).
        self._candidates: dict[int, tuple[NodeHandle, float]] = {}
        # Outstanding requests: (peer id << 4 | request type) -> deadline.
        self._requests: dict[int, float] = {}
        # Failed or departed ids: id -> (forget at, departed gracefully), oldest first.
        self._failed: dict[int, tuple[float, bool]] = {}
        # A list, not a deque: it is almost always empty, and an empty deque
        # costs a whole block per node in a 10^5-node simulation.
        self._events: deque[KbrEvent | DataUpcall] = deque()
        self._out: list[tuple[bytes, Address]] = []
        # One heap of (deadline, sequence, kind, argument); an entry whose
        # state moved on is skipped when it comes up (see _timer_live).
        self._timers: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._counts = _stats.counter_slots()
        self._bootstrap: tuple[Address, ...] = ()
        self._join_attempt = 0
        self._join_replied = False
        # The root's leaves whose pong the join waits for (only while joining).
        self._join_pending: set[int] | None = None
        self._round = 0
        self._gossip_due = False
        self._neighbors_changed = False
        self._maintain_row = -1
        self._warnings = 0

    # --- reading -------------------------------------------------------------

    @property
    def handle(self) -> NodeHandle:
        """This node."""
        return self._handle

    @property
    def config(self) -> KbrConfig:
        """The configuration this node runs with."""
        return self._config

    @property
    def state(self) -> NodeState:
        """Where the node is in its life."""
        return self._state

    @property
    def joined(self) -> bool:
        """Whether the node is a member of the overlay (routes and answers)."""
        return self._state is NodeState.JOINED

    @property
    def stats(self) -> KbrStats:
        """A snapshot of the counters (sent, received, dropped by kind, …)."""
        return _stats.snapshot(self._counts)

    def leaf_set(self) -> list[NodeHandle]:
        """The leaf set, farthest counter-clockwise first round to farthest clockwise."""
        peers = self._peers
        return [peers[node].handle for node in self._leaf.members()]

    def leaf_set_sides(self) -> tuple[list[NodeHandle], list[NodeHandle]]:
        """The two halves: counter-clockwise and clockwise neighbours, nearest first."""
        peers = self._peers
        return (
            [peers[node].handle for node in self._leaf.left],
            [peers[node].handle for node in self._leaf.right],
        )

    def routing_table(self) -> list[NodeHandle]:
        """Every node in the routing table, row by row."""
        peers = self._peers
        return [peers[node].handle for _, _, node in self._rt.entries()]

    def routing_table_entries(self) -> list[tuple[int, int, NodeHandle]]:
        """Every routing-table entry as ``(row, column, node)``."""
        peers = self._peers
        return [(row, column, peers[node].handle) for row, column, node in self._rt.entries()]

    def neighbors(self) -> list[NodeHandle]:
        """Every node this node keeps state about: leaf set and routing table, each once."""
        return [peer.handle for peer in self._peers.values()]

    def rtt(self, node: int) -> float | None:
        """The smoothed round-trip time (seconds) to a node in the tables, if measured."""
        peer = self._peers.get(node)
        return None if peer is None else peer.rtt

    def next_hop(self, key: int) -> NodeHandle | None:
        """Where a route for ``key`` would go from here; ``None``: this node is its root."""
        node = self._next_hop(key, -1)
        return None if node is None else self._peers[node].handle

    def is_root(self, key: int) -> bool:
        """Whether this node is, by what it knows, the live node closest to ``key``."""
        return self._state is NodeState.JOINED and self._next_hop(key, -1) is None

    def table_sizes(self) -> dict[str, int]:
        """How full every table and queue is (for bound checks and dashboards)."""
        return {
            "peers": len(self._peers),
            "leaf_set": len(self._leaf),
            "routing_table": len(self._rt),
            "candidates": len(self._candidates),
            "requests": len(self._requests),
            "failed": len(self._failed),
            "events": len(self._events),
            "send_queue": len(self._out),
            "timers": len(self._timers),
            "join_pending": len(self._join_pending or ()),
        }

    # --- driving -------------------------------------------------------------

    def bootstrap(self, known: Sequence[Address], now: float) -> None:
        """Join through any of ``known`` (tried in turn); ``[]`` starts a new overlay."""
        if self._state is not NodeState.IDLE:
            raise UsageError(
                f"bootstrap() is called once, on a new node (this one is {self._state.value})"
            )
        addresses = tuple(known)[: self._config.max_bootstrap]
        for address in addresses:
            if not (
                isinstance(address, tuple)
                and len(address) == 2
                and isinstance(address[0], str)
                and isinstance(address[1], int)
            ):
                raise UsageError(f"bootstrap address {address!r} is not a (host, port) pair")
        if not addresses:
            self._become_joined(now)
        else:
            self._bootstrap = addresses
            self._set_state(NodeState.JOINING)
            self._send_join(now)
        self._flush()

    def leave(self, now: float) -> None:
        """Leave gracefully: tell every node in the tables, then go quiet."""
        if self._state is NodeState.LEFT:
            return
        if self._state is NodeState.JOINED:
            goodbye = Leave(tuple(self.leaf_set()))
            for peer in self._peers.values():
                self._send(goodbye, peer.handle.address, member=False)
        self._set_state(NodeState.LEFT)
        self._timers.clear()
        self._candidates.clear()
        self._requests.clear()
        self._join_pending = None

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """Take one datagram from the network; never raises for anything in it."""
        if not isinstance(data, bytes):
            data = bytes(data)
        size = len(data)
        if size > self._max_datagram:
            self._counts[_stats.OVERSIZE] += 1
            self._remote_fault(f"oversize datagram of {size} bytes from {source}")
            return
        if size >= DATA_HEADER_SIZE and data[0] == VERSION:
            kind_byte = data[1]
            if kind_byte in (_DATA, _ROUTE_DATA):
                # The data path: read in place, no message objects.
                self._receive_compact(data, kind_byte, source, now)
                return
        try:
            datagram = self._codec.decode(data)
        except UnsupportedVersion as exc:
            self._counts[_stats.UNSUPPORTED_VERSION] += 1
            self._remote_fault(f"dropped a datagram from {source}: {exc}")
            return
        except ProtocolError as exc:
            self._counts[_stats.MALFORMED] += 1
            self._remote_fault(f"malformed datagram from {source}: {exc}")
            return
        if isinstance(datagram, CompactDatagram):  # pragma: no cover - taken above
            return
        kind = datagram.message.TYPE
        self._counts[_stats.RECEIVED + kind] += 1
        if int(kind) not in _ACCEPTS_INT[self._state] or datagram.sender.id == self._id:
            self._counts[_stats.DROPPED + kind] += 1
            return
        self._dispatch(datagram, now)
        self._flush()

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Everything to send since the last call, as ``(datagram, address)``; forgets them."""
        out = self._out
        self._out = []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (``None``: nothing scheduled)."""
        timers = self._timers
        while timers and not self._timer_live(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def handle_timer(self, now: float) -> None:
        """Do whatever is due by ``now``."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if self._timer_live(entry):
                self._fire(entry[2], entry[3], now)
        self._flush()

    def next_event(self) -> KbrEvent | None:
        """The next upcall for the layer above, or ``None``."""
        if not self._events:
            return None
        item = self._events.popleft()
        if type(item) is tuple:
            if len(item) == 2:
                return DirectReceived(item[0], item[1])
            return Delivered(item[0], item[1], item[2], item[3])
        return item  # type: ignore[return-value]

    def next_upcall(self) -> KbrEvent | DataUpcall | None:
        """The next upcall as queued: data upcalls as plain tuples (see :data:`DataUpcall`).

        The same upcalls in the same order as :meth:`next_event`, without
        building an event object per data message (~1 µs each); for a layer
        above that takes them as they are (Scribe's ``handle_kbr_upcall``).
        """
        return self._events.popleft() if self._events else None

    # --- the KeyBasedRouting calls ---------------------------------------------

    def route(self, key: int, payload: bytes, now: float, *, intercept: bool = False) -> None:
        """Send ``payload`` towards the root of ``key``.

        Plain routes surface as :class:`~hamcast.overlay.api.Delivered` at
        the root only (here, at once, if this node is the root); intercepted
        ones as a :class:`~hamcast.overlay.api.RouteStep` at every node from
        this one on, and each must be passed on with :meth:`forward`.
        """
        self._check_sendable(payload)
        if not (isinstance(key, int) and 0 <= key < ID_SPACE):
            raise UsageError(f"key {key!r} is not a 128-bit unsigned integer")
        hop = self._cached_hop(key)
        hop_handle = None if hop is None else self._peers[hop].handle
        if intercept:
            self._emit(RouteStep(key, payload, self._handle, None, hop_handle, 0))
        elif hop_handle is None:
            self._emit((key, payload, self._handle, 0))
        else:
            tail = self._route_tails.get(key)
            if tail is None:
                tail = self._route_tail(key)
            self._send_compact(
                b"".join((self._route_head, b"\x01", tail, payload)),
                hop_handle.address,
                _ROUTE_DATA,
            )
        self._flush()

    def _route_tail(self, key: int) -> bytes:
        """ROUTE_DATA's key and origin (this node) for its own routes to ``key`` (cached)."""
        tail = key.to_bytes(16, "big") + self._me_bytes
        tails = self._route_tails
        if len(tails) >= _MAX_ROUTE_TAILS:
            tails.clear()
        tails[key] = tail
        return tail

    def forward(
        self,
        key: int,
        payload: bytes,
        next_hop: NodeHandle,
        now: float,
        *,
        step: RouteStep | None = None,
    ) -> None:
        """Pass an intercepted route on to ``next_hop`` (usually ``step.next_hop``)."""
        self._check_sendable(payload)
        if not (isinstance(key, int) and 0 <= key < ID_SPACE):
            raise UsageError(f"key {key!r} is not a 128-bit unsigned integer")
        if next_hop.id == self._id:
            raise UsageError("forward() to this node itself: consume the step instead")
        origin = self._handle if step is None else step.origin
        hops = 1 if step is None else step.hops + 1
        if hops > self._config.max_hops:
            self._counts[_stats.DROPPED + MessageType.ROUTE] += 1
            return
        self._send(Route(key, hops, True, origin, payload), next_hop.address)

    def send_direct(
        self, node: NodeHandle, payload: bytes, now: float, *, compact: bool = False
    ) -> None:
        """Send ``payload`` to ``node`` in one hop (to this node itself: an event at once).

        ``compact`` sends a DATA datagram: 19 bytes of header instead of 30, but
        the receiver learns only this node's id; it takes the handle from its
        tables, else from the datagram's source address (docs/technologies/overlay-kbr.md).
        """
        self._check_sendable(payload)
        if node.id == self._id:
            self._emit((payload, self._handle))
            return
        if compact:
            self._send_compact(self._data_head + payload, node.address, _DATA)
        else:
            self._send(Direct(payload), node.address)

    def _check_sendable(self, payload: bytes) -> None:
        state = self._state
        if state is not _JOINED:
            if state is NodeState.LEFT:
                raise ClosedError("this overlay node has left")
            raise UsageError("the node has not joined the overlay yet: wait for the Joined event")
        if len(payload) > self._config.max_payload:
            raise MessageTooLongError(len(payload), self._config.max_payload)

    # --- routing ---------------------------------------------------------------

    def _cached_hop(self, key: int) -> int | None:
        """:meth:`_next_hop` of ``key`` (no exclusion), remembered until a table changes."""
        hops = self._hops
        if key in hops:
            return hops[key]
        hop = self._next_hop(key, -1)
        if len(hops) >= _MAX_HOPS_CACHED:
            hops.clear()
        hops[key] = hop
        return hop

    def _next_hop(self, key: int, exclude: int) -> int | None:
        """The id to send ``key`` to, or ``None`` when this node is the root.

        Whatever the branch, the result is strictly closer to ``key`` than
        this node by ``(ring distance, id)``; that is what makes loops
        impossible, even while tables disagree.
        """
        me = self._id
        if key == me:
            return None
        leaf = self._leaf
        if leaf.covers(key):
            best = leaf.closest(key, exclude)
            return None if best == me else best
        my_distance = (me - key) & _MASK
        if my_distance > _HALF_SPACE:
            my_distance = ID_SPACE - my_distance
        entry = self._rt.lookup(key)
        if entry is not None and entry != exclude:
            distance = (entry - key) & _MASK
            if distance > _HALF_SPACE:
                distance = ID_SPACE - distance
            if distance < my_distance or (distance == my_distance and entry < me):
                return entry
        # Pastry's rare case: no entry shares a longer prefix; take the known
        # node closest to the key if it is closer than this one.
        best, best_distance = me, my_distance
        for node in self._peers:
            if node == exclude:
                continue
            distance = (node - key) & _MASK
            if distance > _HALF_SPACE:
                distance = ID_SPACE - distance
            if distance < best_distance or (distance == best_distance and node < best):
                best, best_distance = node, distance
        return None if best == me else best

    # --- receiving -------------------------------------------------------------

    def _dispatch(self, datagram: Datagram, now: float) -> None:
        sender = datagram.sender
        message = datagram.message
        kind = message.TYPE
        if datagram.member and int(kind) not in _LEARNS_ITSELF_INT:
            self._heard(sender, now)
        # The data path first: routed and direct messages are most of the traffic.
        if isinstance(message, Route):
            self._on_route(sender, message)
        elif isinstance(message, Direct):
            self._emit((message.payload, sender))
        elif isinstance(message, Ping):
            # A joining node probes before it is a member: answer it too.
            self._send(Pong(message.timestamp), sender.address)
            if datagram.member:
                for handle in message.leaf_set:
                    self._offer(handle, now, compete=False)
                peer = self._peers.get(sender.id)
                if message.leaf_set and (peer is None or not peer.leaf):
                    # It keeps us as a leaf, but it is not among our closest:
                    # its leaf set is wrong (a join answered by a root that
                    # did not know its neighbours yet). Pongs carry no leaf
                    # set, so without this it would not learn of the nodes
                    # between us until routing-table maintenance.
                    self._send(Announce(tuple(self.leaf_set())), sender.address)
        elif isinstance(message, Pong):
            self._on_pong(sender, datagram.member, message.timestamp, now)
        elif isinstance(message, Join):
            self._on_join(message, now)
        elif isinstance(message, Rows):
            # While joining, the rows come from nodes on the JOIN's path, which
            # the joiner cannot know; afterwards only as answers.
            if self._state is NodeState.JOINING or self._answered(sender, MessageType.ROW_REQUEST):
                for _, entries in message.rows:
                    for handle in entries:
                        self._offer(handle, now, compete=True)
            else:
                self._counts[_stats.DROPPED + kind] += 1
        elif isinstance(message, JoinReply):
            self._on_join_reply(message, now)
        elif isinstance(message, Announce):
            if datagram.member:
                self._heard(sender, now, compete=True, announce=True)
            for handle in message.leaf_set:
                self._offer(handle, now, compete=False)
        elif isinstance(message, LeafSetRequest):
            if datagram.member:
                self._send(LeafSetMessage(tuple(self.leaf_set())), sender.address)
            else:
                self._counts[_stats.DROPPED + kind] += 1
        elif isinstance(message, LeafSetMessage):
            if self._answered(sender, MessageType.LEAFSET_REQUEST):
                for handle in message.leaf_set:
                    self._offer(handle, now, compete=False)
            else:
                self._counts[_stats.DROPPED + kind] += 1
        elif isinstance(message, RowRequest):
            if datagram.member:
                peers = self._peers
                entries = tuple(peers[node].handle for node in self._rt.row(message.row))
                self._send(Rows(((message.row, entries),)), sender.address)
            else:
                self._counts[_stats.DROPPED + kind] += 1
        elif isinstance(message, Leave):
            self._drop_peer(sender.id, now, departed=True)
            for handle in message.leaf_set:
                self._offer(handle, now, compete=False)

    def _on_pong(self, sender: NodeHandle, member: bool, timestamp: float, now: float) -> None:
        node = sender.id
        rtt: float | None = None
        verified = False
        candidate = self._candidates.get(node)
        if candidate is not None and candidate[1] == timestamp:
            del self._candidates[node]
            rtt = now - timestamp
            verified = True
        peer = self._peers.get(node)
        if peer is not None and peer.probe_sent == timestamp:
            peer.probe_sent = None
            rtt = now - timestamp
        if rtt is not None and rtt < 0:
            rtt = None  # a clock that went backwards: no sample
        if member:
            self._heard(sender, now, rtt, compete=verified)
        pending = self._join_pending
        if pending is not None:
            pending.discard(node)
            if not pending:
                self._become_joined(now)

    def _on_route(self, sender: NodeHandle, message: Route) -> None:
        hop = self._next_hop(message.key, -1)
        hop_handle = None if hop is None else self._peers[hop].handle
        if message.intercept:
            self._emit(
                RouteStep(
                    message.key, message.payload, message.origin, sender, hop_handle, message.hops
                )
            )
        elif hop_handle is None:
            self._emit((message.key, message.payload, message.origin, message.hops))
        elif message.hops >= self._config.max_hops:
            self._counts[_stats.DROPPED + MessageType.ROUTE] += 1
        else:
            # A plain route goes on as ROUTE_DATA, as this node sends its own.
            rest = b"".join(
                (message.key.to_bytes(16, "big"), encode_handle(message.origin), message.payload)
            )
            self._send_compact(
                b"".join((self._route_head, _HOP_BYTES[message.hops + 1], rest)),
                hop_handle.address,
                _ROUTE_DATA,
            )

    def _receive_compact(self, data: bytes, kind: int, source: Address, now: float) -> None:
        """A DATA or ROUTE_DATA datagram (version byte checked): handled in place."""
        counts = self._counts
        config = self._config
        try:
            hops, origin, start = read_compact(data, config.max_hops, config.max_payload)
        except ProtocolError as exc:
            counts[_stats.MALFORMED] += 1
            self._remote_fault(f"malformed datagram from {source}: {exc}")
            return
        counts[_stats.RECEIVED + kind] += 1
        sender_id = int.from_bytes(data[3:DATA_HEADER_SIZE], "big")
        if self._state is not _JOINED or sender_id == self._id:
            counts[_stats.DROPPED + kind] += 1
            return
        peer = self._peers.get(sender_id)
        if peer is not None and data[2]:  # the MEMBER flag (the only one)
            peer.last_heard = now  # what _refresh does, inline on the data path
            peer.missed = 0
            if not peer.leaf:
                self._refresh(peer, now)
        if origin is None:  # DATA
            sender = peer.handle if peer is not None else self._stranger(sender_id, source)
            if len(self._events) < self._config.max_events:
                self._events.append((data[DATA_HEADER_SIZE:], sender))
            else:
                counts[_stats.EVENTS_LOST] += 1
            if self._neighbors_changed:
                self._flush()
            return
        key = int.from_bytes(data[DATA_HEADER_SIZE + 1 : ROUTE_DATA_HEAD_SIZE], "big")
        hop = self._cached_hop(key)
        if hop is None:
            self._emit((key, data[start:], origin, hops))
        elif hops >= self._config.max_hops:
            counts[_stats.DROPPED + kind] += 1
        else:
            self._send_compact(
                b"".join((self._route_head, _HOP_BYTES[hops + 1], data[DATA_HEADER_SIZE + 1 :])),
                self._peers[hop].handle.address,
                _ROUTE_DATA,
            )
        self._flush()

    def _refresh(self, peer: _Peer, now: float) -> None:
        """A compact datagram from a peer in the tables: alive (what :meth:`_heard` does for it)."""
        peer.last_heard = now
        peer.missed = 0
        node = peer.handle.id
        if not peer.leaf and self._leaf.fits(node):
            self._leaf_add(node)

    def _stranger(self, node: int, source: Address) -> NodeHandle:
        """A handle for a compact sender not in the tables: its id at the datagram's source."""
        handle = self._strangers.get((node, source))
        if handle is None:
            handle = NodeHandle(node, source)
            if len(self._strangers) >= _MAX_STRANGERS:
                self._strangers.clear()
            self._strangers[node, source] = handle
        return handle

    def _on_join(self, message: Join, now: float) -> None:
        joiner = message.joiner
        if joiner.id == self._id:
            # Someone else asks to join with this node's id: let it time out.
            self._counts[_stats.DROPPED + MessageType.JOIN] += 1
            return
        # Never route a JOIN to the joiner itself (it may be in tables from an
        # earlier life): it must reach the closest *other* node.
        hop = self._next_hop(joiner.id, joiner.id)
        config = self._config
        shared = (ID_BITS - (self._id ^ joiner.id).bit_length()) // config.b
        first = message.next_row
        last = min(shared, first + config.max_rows_per_message - 1)
        rows: list[tuple[int, tuple[NodeHandle, ...]]] = []
        next_row = max(first, last + 1)
        peers = self._peers
        for index in range(first, last + 1):
            entries = self._rt.row(index)
            if entries:
                rows.append((index, tuple(peers[node].handle for node in entries)))
            elif next_row > index:
                next_row = index  # a later node on the path may have this row
        if hop is None:
            reply = JoinReply(tuple(rows), tuple(self.leaf_set()))
            self._send(reply, joiner.address)
            return
        if rows:
            self._send(Rows(tuple(rows)), joiner.address)
        if message.hops >= config.max_hops:
            self._counts[_stats.DROPPED + MessageType.JOIN] += 1
            return
        self._send(Join(message.hops + 1, next_row, joiner), peers[hop].handle.address)

    def _on_join_reply(self, message: JoinReply, now: float) -> None:
        if self._state is not NodeState.JOINING or self._join_replied:
            self._counts[_stats.DROPPED + MessageType.JOIN_REPLY] += 1
            return
        self._join_replied = True
        # Leaves first: they decide when the join is done, and the candidate
        # table is bounded.
        pending = self._join_pending = set()
        for handle in message.leaf_set:
            if self._offer(handle, now, compete=False) or handle.id in self._candidates:
                pending.add(handle.id)
        for _, entries in message.rows:
            for handle in entries:
                self._offer(handle, now, compete=True)
        if pending:
            self._push(now + self._config.probe_timeout, _SETTLE, 0)
        else:
            self._become_joined(now)

    # --- learning and forgetting nodes ------------------------------------------

    def _heard(
        self,
        handle: NodeHandle,
        now: float,
        rtt: float | None = None,
        *,
        compete: bool = False,
        announce: bool = False,
    ) -> None:
        """A datagram from member ``handle`` arrived: it is alive."""
        node = handle.id
        peer = self._peers.get(node)
        if peer is not None:
            if peer.handle is not handle and peer.handle != handle:
                peer.handle = handle  # moved to a new address: its own word counts
            peer.last_heard = now
            peer.missed = 0
            if rtt is not None:
                peer.rtt = rtt if peer.rtt is None else peer.rtt + (rtt - peer.rtt) * _RTT_GAIN
            if not peer.leaf and self._leaf.fits(node):
                self._leaf_add(node)  # a routing-table entry that a failure brought close
            return
        record = self._failed.get(node)
        if record is not None:
            if record[1] and not announce and record[0] > now:
                # Departed: a straggler sent before its LEAVE must not bring
                # it back; only a new ANNOUNCE (it rejoined) does.
                return
            del self._failed[node]
        self._consider(handle, now, rtt, compete)

    def _consider(self, handle: NodeHandle, now: float, rtt: float | None, compete: bool) -> None:
        """Put a node known to be alive into the leaf set and/or routing table, if it belongs."""
        node = handle.id
        fits_leaf = self._leaf.fits(node)
        rt = self._rt
        row, column = rt.slot(node)
        occupant = rt.get(row, column)
        in_rt = occupant is None
        if occupant is not None and compete:
            other = self._peers[occupant]
            if rtt is None:
                if not fits_leaf:
                    # Heard directly but not measured: measure before comparing.
                    self._probe_candidate(handle, now)
            elif other.rtt is None:
                if other.probe_sent is None:
                    self._probe_peer(other, now)  # measure it for the next comparison
            elif rtt < other.rtt:
                in_rt = True
        if not (fits_leaf or in_rt):
            return
        peer = _Peer(handle, now, rtt)
        self._hops.clear()
        self._peers[node] = peer
        self._candidates.pop(node, None)
        if in_rt:
            displaced = rt.put(node)
            if displaced is not None:
                self._forget_if_unused(displaced)
        if fits_leaf and not self._leaf_add(node) and not in_rt:
            del self._peers[node]  # cannot happen (fits() said it would enter); stay consistent

    def _leaf_add(self, node: int) -> bool:
        """Put a node that is in ``_peers`` into the leaf set; whether it entered."""
        changed, gone = self._leaf.add(node)
        if not changed:
            return False
        self._hops.clear()
        self._peers[node].leaf = True
        for other in gone:
            self._peers[other].leaf = False
            self._forget_if_unused(other)
        self._neighbors_changed = True
        self._gossip_due = True
        return True

    def _forget_if_unused(self, node: int) -> None:
        peer = self._peers.get(node)
        if peer is not None and not peer.leaf and not self._rt.contains(node):
            self._hops.clear()
            del self._peers[node]

    def _offer(self, handle: NodeHandle, now: float, *, compete: bool) -> bool:
        """Another node named ``handle``: verify it if it would improve the tables.

        Returns whether a verification ping went out.
        """
        node = handle.id
        if node == self._id or node in self._peers or node in self._candidates:
            return False
        record = self._failed.get(node)
        if record is not None and record[0] > now:
            return False  # whoever named it has not noticed it is gone
        if not self._leaf.fits(node):
            row, column = self._rt.slot(node)
            if self._rt.get(row, column) is not None and not compete:
                return False
        return self._probe_candidate(handle, now)

    def _drop_peer(self, node: int, now: float, *, departed: bool) -> None:
        """``node`` failed (or left): out of every table, remembered, repaired around."""
        failed = self._failed
        if node in failed:
            del failed[node]
        elif len(failed) >= self._config.max_failed_remembered:
            del failed[next(iter(failed))]
        failed[node] = (now + self._config.failed_memory, departed)
        peer = self._peers.pop(node, None)
        if peer is None:
            return
        self._hops.clear()
        in_left, in_right = self._leaf.side_of(node)
        slot = self._rt.remove(node)
        self._emit(NodeFailed(peer.handle))
        if peer.leaf:
            self._leaf.remove(node)
            self._neighbors_changed = True
            self._gossip_due = True
            # A routing-table entry may now be among the closest. Take it at
            # once only if it spoke lately: it may have left without telling
            # us (it need not have us in its tables). Otherwise ping it; its
            # answer brings it in (_heard).
            fresh = now - self._config.keepalive_interval
            for other in list(self._peers):
                known = self._peers.get(other)  # an earlier add may have pushed it out
                if known is None or known.leaf or not self._leaf.fits(other):
                    continue
                if known.last_heard >= fresh:
                    self._leaf_add(other)
                elif known.probe_sent is None:
                    self._probe_peer(known, now)
            if not departed:
                # A departing node sent its leaf set along; a failed one did not.
                self._repair_leaf(in_left, in_right, now)
        if slot is not None:
            self._repair_row(slot[0], now)

    def _repair_leaf(self, in_left: bool, in_right: bool, now: float) -> None:
        """Ask the farthest live leaf on each affected side for its leaf set (Pastry §3.2)."""
        leaf = self._leaf
        if leaf.complete:
            return  # every node there is is already known
        for clockwise, affected in ((False, in_left), (True, in_right)):
            if not affected:
                continue
            target = leaf.farthest(clockwise)
            if target is None:
                target = leaf.farthest(not clockwise)
            if target is not None:
                self._request(target, LeafSetRequest(), now)

    def _repair_row(self, row: int, now: float) -> None:
        """Ask another entry of ``row`` (else of a deeper row) for its row ``row`` (Pastry §3.2)."""
        rt = self._rt
        pool = rt.row(row)
        deeper = row + 1
        while not pool and deeper < self._config.rows:
            pool = rt.row(deeper)
            deeper += 1
        if pool:
            self._request(self._rng.choice(pool), RowRequest(row), now)

    # --- joining -----------------------------------------------------------------

    def _send_join(self, now: float) -> None:
        address = self._bootstrap[self._join_attempt % len(self._bootstrap)]
        self._send(Join(0, 0, self._handle), address, member=False)
        self._push(now + self._config.join_timeout, _JOIN, self._join_attempt)

    def _become_joined(self, now: float) -> None:
        self._set_state(NodeState.JOINED)
        self._join_pending = None
        self._emit(Joined(self._handle))
        self._neighbors_changed = True
        hello = Announce(tuple(self.leaf_set()))
        for peer in self._peers.values():
            self._send(hello, peer.handle.address)
        self._schedule_round(now)
        config = self._config
        if config.rt_maintenance_interval > 0:
            self._push(now + self._jittered(config.rt_maintenance_interval), _MAINTAIN, 0)

    # --- timers --------------------------------------------------------------------

    def _push(self, deadline: float, kind: int, argument: int) -> None:
        heapq.heappush(self._timers, (deadline, self._seq, kind, argument))
        self._seq += 1

    def _jittered(self, interval: float) -> float:
        jitter = self._config.keepalive_jitter
        return interval * (1 + jitter * (2 * self._rng.random() - 1))

    def _schedule_round(self, now: float) -> None:
        self._round += 1
        self._push(now + self._jittered(self._config.keepalive_interval), _ROUND, self._round)

    def _timer_live(self, entry: tuple[float, int, int, int]) -> bool:
        deadline, _, kind, argument = entry
        state = self._state
        if kind == _PROBE:
            peer = self._peers.get(argument)
            return (
                peer is not None
                and peer.probe_sent is not None
                and peer.probe_sent + self._config.probe_timeout == deadline
            )
        if kind == _CANDIDATE:
            candidate = self._candidates.get(argument)
            return candidate is not None and candidate[1] + self._config.probe_timeout == deadline
        if kind == _ROUND:
            return state is NodeState.JOINED and argument == self._round
        if kind == _REQUEST:
            return self._requests.get(argument) == deadline
        if kind == _MAINTAIN:
            return state is NodeState.JOINED
        if kind == _JOIN:
            return (
                state is NodeState.JOINING
                and not self._join_replied
                and argument == self._join_attempt
            )
        # _SETTLE
        return state is NodeState.JOINING and self._join_replied

    def _fire(self, kind: int, argument: int, now: float) -> None:
        config = self._config
        if kind == _PROBE:
            self._probe_expired(self._peers[argument], now)
        elif kind == _CANDIDATE:
            del self._candidates[argument]
            pending = self._join_pending
            if pending is not None:
                pending.discard(argument)
                if not pending:
                    self._become_joined(now)
        elif kind == _ROUND:
            self._keepalive_round(now)
        elif kind == _REQUEST:
            # The peer did not answer; keep-alives decide whether it failed.
            del self._requests[argument]
        elif kind == _MAINTAIN:
            self._maintain_routing_table(now)
            self._push(now + self._jittered(config.rt_maintenance_interval), _MAINTAIN, 0)
        elif kind == _JOIN:
            self._join_attempt += 1
            logger.debug("%s: no answer to JOIN, trying again", self._handle)
            self._send_join(now)
        else:  # _SETTLE: some leaves never answered; join with those that did
            self._become_joined(now)

    def _probe_expired(self, peer: _Peer, now: float) -> None:
        sent = peer.probe_sent
        assert sent is not None
        peer.probe_sent = None
        if peer.last_heard >= sent:
            return  # it spoke since (a lost pong, or our ping crossed its datagram)
        peer.missed += 1
        if peer.missed >= self._config.probe_count:
            logger.debug("%s: %s failed", self._handle, peer.handle)
            self._drop_peer(peer.handle.id, now, departed=False)
        else:
            self._probe_peer(peer, now)

    def _keepalive_round(self, now: float) -> None:
        """Ping leaves not heard from for an interval, silent routing-table entries lazily.

        In the round after any leaf-set change, and every
        ``leafset_exchange_rounds`` rounds, every leaf gets a ping carrying
        the leaf set, so concurrent joins and lost announcements heal.
        """
        config = self._config
        share = self._gossip_due or self._round % config.leafset_exchange_rounds == 0
        self._gossip_due = False
        gossip: tuple[NodeHandle, ...] = tuple(self.leaf_set()) if share else ()
        silent_leaf = now - config.keepalive_interval
        silent_entry = now - config.routing_probe_interval
        for peer in self._peers.values():
            if peer.leaf:
                if share:
                    if peer.probe_sent is None:
                        self._probe_peer(peer, now, gossip)
                    else:
                        self._send(Ping(now, gossip), peer.handle.address)
                elif peer.probe_sent is None and peer.last_heard < silent_leaf:
                    self._probe_peer(peer, now)
            elif peer.probe_sent is None and peer.last_heard < silent_entry:
                self._probe_peer(peer, now)
        failed = self._failed
        while failed:
            oldest = next(iter(failed))
            if failed[oldest][0] > now:
                break
            del failed[oldest]
        # A dict keeps the capacity it once grew to; give the memory back
        # (it adds up over 10^5 simulated nodes).
        if not failed:
            self._failed = {}
        if not self._candidates:
            self._candidates = {}
        if not self._requests:
            self._requests = {}
        self._schedule_round(now)

    def _maintain_routing_table(self, now: float) -> None:
        """Ask a random entry of the next row for its row (proximity and holes, Pastry §2.5)."""
        rows = self._rt.nonempty_rows()
        if not rows:
            return
        later = [row for row in rows if row > self._maintain_row]
        row = later[0] if later else rows[0]
        self._maintain_row = row
        self._request(self._rng.choice(self._rt.row(row)), RowRequest(row), now)

    # --- sending ---------------------------------------------------------------------

    def _probe_peer(self, peer: _Peer, now: float, leaf_set: tuple[NodeHandle, ...] = ()) -> None:
        peer.probe_sent = now
        self._push(now + self._config.probe_timeout, _PROBE, peer.handle.id)
        self._send(Ping(now, leaf_set), peer.handle.address)

    def _probe_candidate(self, handle: NodeHandle, now: float) -> bool:
        if handle.id in self._candidates:
            return False
        if len(self._candidates) >= self._config.max_pending_probes:
            self._counts[_stats.CANDIDATES_IGNORED] += 1
            return False
        self._candidates[handle.id] = (handle, now)
        self._push(now + self._config.probe_timeout, _CANDIDATE, handle.id)
        self._send(Ping(now), handle.address)
        return True

    def _request(self, node: int, message: LeafSetRequest | RowRequest, now: float) -> None:
        key = node << 4 | message.TYPE
        if key in self._requests:
            return
        if len(self._requests) >= self._config.max_pending_requests:
            self._counts[_stats.REQUESTS_IGNORED] += 1
            return
        deadline = now + self._config.request_timeout
        self._requests[key] = deadline
        self._push(deadline, _REQUEST, key)
        self._send(message, self._peers[node].handle.address)

    def _answered(self, sender: NodeHandle, request: MessageType) -> bool:
        """Whether ``sender`` answers an outstanding request of ours (and forget it)."""
        return self._requests.pop(sender.id << 4 | request, None) is not None

    def _send_compact(self, data: bytes, address: Address, kind: int) -> None:
        if len(self._out) >= self._config.max_send_queue:
            self._counts[_stats.SEND_QUEUE_FULL] += 1
            return
        self._out.append((data, address))
        self._counts[_stats.SENT + kind] += 1

    def _send(self, message: Message, address: Address, *, member: bool | None = None) -> None:
        if len(self._out) >= self._config.max_send_queue:
            self._counts[_stats.SEND_QUEUE_FULL] += 1
            return
        if member is None:
            member = self._state is NodeState.JOINED
        self._out.append((self._codec.encode(self._me_bytes, member, message), address))
        self._counts[_stats.SENT + message.TYPE] += 1

    # --- events and state ---------------------------------------------------------------

    def _emit(self, event: KbrEvent | DataUpcall) -> None:
        if len(self._events) >= self._config.max_events:
            self._counts[_stats.EVENTS_LOST] += 1
            return
        self._events.append(event)

    def _flush(self) -> None:
        """Turn what changed during one call into at most one NeighborsChanged."""
        if self._neighbors_changed and self._state is NodeState.JOINED:
            self._neighbors_changed = False
            self._emit(NeighborsChanged(tuple(self.leaf_set())))

    def _set_state(self, new: NodeState) -> None:
        old = self._state
        if new not in _TRANSITIONS[old]:
            raise AssertionError(f"KBR node state {old.value} -> {new.value} is not allowed")
        logger.debug("%s: %s -> %s", self._handle, old.value, new.value)
        self._state = new

    def _remote_fault(self, text: str) -> None:
        self._warnings += 1
        if self._warnings <= _WARN_FIRST or self._warnings % _WARN_EVERY == 0:
            logger.warning("%s: %s (%d so far)", self._handle, text, self._warnings)
        else:
            logger.debug("%s: %s", self._handle, text)
