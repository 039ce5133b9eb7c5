"""The Scribe core: multicast trees on key-based routing, sans-I/O.

Scribe (Castro, Druschel, Kermarrec and Rowstron, "SCRIBE: A large-scale and
decentralized application-level multicast infrastructure", IEEE JSAC 20(8),
2002) gives each group a tree rooted at the overlay node closest to the group's
key. A JOIN routed toward the key builds the tree by reverse path: every node
it passes adopts the previous one as a child and passes the JOIN on only if it
was not on the tree yet. Messages go to the root and down the tree. Parents
send heartbeats, and a child that stops hearing its parent joins again.
docs/technologies/overlay-scribe.md describes what this implementation adds
(loop checks, fan-out bound, tree flooding by senders on the tree) and why.
"""

from __future__ import annotations

import enum
import functools
import heapq
import logging
import struct
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, fields

from hamcast.errors import (
    HamcastError,
    MessageTooLongError,
    NotJoinedError,
    ProtocolError,
    ResourceError,
)
from hamcast.overlay.api import (
    Delivered,
    DirectReceived,
    Joined,
    KbrEvent,
    KeyBasedRouting,
    NeighborsChanged,
    NodeFailed,
    RouteStep,
)
from hamcast.overlay.ids import NodeHandle, read_handle, ring_distance
from hamcast.overlay.scribe.config import ScribeConfig
from hamcast.overlay.scribe.events import (
    BecameRoot,
    ChildAdded,
    ChildRemoved,
    MessageReceived,
    ParentChanged,
    RootLost,
    ScribeEvent,
    SourceSeen,
)
from hamcast.overlay.scribe.messages import (
    MAGIC,
    MULTICAST_OVERHEAD,
    VERSION,
    Accept,
    Data,
    Heartbeat,
    Join,
    Leave,
    MalformedMessage,
    Message,
    Multicast,
    Redirect,
    Refresh,
    data_overhead,
    decode,
    encode_accept,
    encode_data,
    encode_heartbeat,
    encode_join,
    encode_leave,
    encode_multicast,
    encode_redirect,
    encode_refresh,
    path_contains,
    restamp,
    unpack_path,
)
from hamcast.overlay.scribe.names import canonical_group, group_key

__all__ = ["GroupInfo", "MessageUpcall", "Role", "ScribeNode", "ScribeStats", "TreeState"]

logger = logging.getLogger(__name__)

# Remote faults are logged loudly this many times, then once per this many.
_WARN_FIRST = 5
_WARN_EVERY = 1000
# Hop counts travel in one byte; a message this many hops out is not passed on.
_MAX_HOPS = 255
# The first bytes of a DATA and of a MULTICAST message; what follows a DATA's header.
_DATA_PREFIX = bytes((MAGIC, VERSION, 8))
_MULTICAST_PREFIX = bytes((MAGIC, VERSION, 7))
_DATA_FIXED = struct.Struct("!BQ")  # hops, sequence
_SEQUENCE = struct.Struct("!Q")
_DATA_SOURCE_AT = 28  # header 19, hops 1, sequence 8

#: A delivery as queued: ``(group, payload, source, sequence, hops)``, the
#: fields of :class:`MessageReceived` (see :meth:`ScribeNode.next_upcall`).
MessageUpcall = tuple[str, bytes, NodeHandle, int, int]


class TreeState(enum.Enum):
    """Where a node with state for a group stands in the group's tree."""

    #: No parent and not the root: a JOIN is outstanding (retried with backoff).
    DETACHED = "detached"
    #: Has a parent.
    ATTACHED = "attached"
    #: The root (rendezvous point): by KBR, the live node closest to the key.
    ROOT = "root"


_DETACHED = TreeState.DETACHED
_ATTACHED = TreeState.ATTACHED
_ROOT = TreeState.ROOT

#: The allowed transitions and what causes each; anything else is a bug.
_TRANSITIONS: dict[tuple[TreeState, TreeState], str] = {
    (_DETACHED, _ATTACHED): "ACCEPT or HEARTBEAT from a parent",
    (_DETACHED, _ROOT): "KBR says this node is the key's root",
    (_ATTACHED, _DETACHED): "parent failed, timed out, left us, or a loop was seen",
    (_ATTACHED, _ROOT): "KBR says this node is the key's root now",
    (_ROOT, _DETACHED): "KBR says another node is the key's root now",
}


class Role(enum.Flag):
    """What this node is for a group (RFC 7046 service calls read it)."""

    #: The application joined the group here.
    MEMBER = enum.auto()
    #: At least one child: data for the group passes through here.
    FORWARDER = enum.auto()
    #: The root of the group's tree.
    ROOT = enum.auto()


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A snapshot of this node's state for one group."""

    #: Canonical group name.
    name: str
    #: The group's 128-bit overlay key.
    key: int
    role: Role
    state: TreeState
    parent: NodeHandle | None
    children: tuple[NodeHandle, ...]
    #: Node ids from the root down to the parent, as the parent last said
    #: (empty at the root; possibly stale while DETACHED).
    path: tuple[int, ...]
    #: Whether that path reaches a root (the tree above is connected).
    rooted: bool


@dataclass(slots=True)
class ScribeStats:
    """Counters of one node, for tests, logs and the dashboard (all counts)."""

    #: Inputs longer than ``max_message_size`` dropped before parsing.
    oversize: int = 0
    #: Inputs that are not valid Scribe messages.
    malformed: int = 0
    #: Messages whose key is not the hash of their group name (or whose name is not canonical).
    key_mismatch: int = 0
    #: Valid messages that make no sense where they arrived (e.g. a routed DATA).
    unexpected: int = 0
    #: Multicast copies suppressed as already seen.
    duplicates: int = 0
    #: Multicasts for a group this node has no tree state for.
    no_tree: int = 0
    #: Multicasts delivered to the application (MessageReceived).
    delivered: int = 0
    #: Copies sent along tree edges.
    forwarded: int = 0
    #: Multicasts this node originated.
    sent: int = 0
    #: Routed JOINs passed on, not adopted, because the joiner is an ancestor here.
    joins_passed_on: int = 0
    #: Pushed-down JOINs refused because the joiner is an ancestor here.
    joins_refused_loop: int = 0
    #: JOINs not accepted because this node was full and the push-down budget was spent.
    joins_refused_full: int = 0
    #: JOINs pushed down to a child (REDIRECT sent).
    joins_redirected: int = 0
    #: Direct JOINs for a group this node is not on (the joiner will route again).
    joins_no_tree: int = 0
    #: Own JOINs that KBR routed back to this node.
    joins_looped: int = 0
    #: Transit JOINs passed on without becoming a forwarder (``max_groups`` reached).
    transit_full: int = 0
    #: JOINs sent (routed or direct), retries included.
    joins_sent: int = 0
    #: Paths from a parent that contained this node or were too long.
    loops_detected: int = 0
    #: Parents declared failed for lack of heartbeats.
    parent_timeouts: int = 0
    #: Children dropped for lack of refreshes.
    child_timeouts: int = 0
    #: LEAVEs sent to peers that claimed a tree edge this node does not have.
    stale_edges: int = 0
    #: Events dropped because the queue was full.
    events_dropped: int = 0
    #: Sends KBR refused (not joined yet, left, payload beyond its limit).
    kbr_refused: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Child:
    """One child in a group's child table."""

    __slots__ = ("handle", "load", "seen")

    def __init__(self, handle: NodeHandle, seen: float) -> None:
        self.handle = handle
        #: When it was last heard (refresh, join or data), seconds.
        self.seen = seen
        #: Its own number of children, as its last REFRESH said.
        self.load = 0


class _Group:
    """This node's state for one group.

    Compact on purpose: a simulated overlay holds millions of these. The name
    is interned (shared by every group state of the process), the child table
    is one dict, and the path to the root stays packed as it came.
    """

    __slots__ = (
        "ancestors",
        "children",
        "join_attempts",
        "join_deadline",
        "join_sent",
        "key",
        "member",
        "name",
        "parent",
        "parent_seen",
        "rooted",
        "sources",
        "state",
    )

    def __init__(self, name: str, key: int, member: bool) -> None:
        self.name = sys.intern(name)
        self.key = key
        self.member = member
        self.state = _DETACHED
        self.parent: NodeHandle | None = None
        #: When the parent was last heard (heartbeat, accept or data), seconds.
        self.parent_seen = 0.0
        self.children: dict[int, _Child] = {}
        #: Packed ids (16 bytes each) from the root down to the parent, as the
        #: parent last said. Kept while DETACHED because the old subtree still
        #: lists this node under them, which is what the loop checks need.
        self.ancestors = b""
        self.rooted = False
        self.join_deadline: float | None = None
        self.join_attempts = 0
        #: When the last JOIN went out, seconds.
        self.join_sent = float("-inf")
        #: Sources seen (member groups only), oldest first, for SourceSeen.
        self.sources: dict[int, None] | None = {} if member else None

    @property
    def name_bytes(self) -> bytes:
        return _utf8(self.name)


@functools.lru_cache(maxsize=4096)
def _utf8(name: str) -> bytes:
    # One encoded copy per group name for the whole process.
    return name.encode("utf-8")


class _Dedup:
    """Recent message ids per (source, group) stream: a sliding bit window each.

    Much smaller than a set of ids when streams are long: two ints per stream.
    A message ``window`` or more behind its stream's newest counts as seen.
    """

    __slots__ = ("_full", "_size", "_streams", "_window")

    def __init__(self, size: int, window: int) -> None:
        self._size = size
        self._window = window
        self._full = (1 << window) - 1
        # stream -> [newest sequence, bit i set = newest - i seen]
        self._streams: OrderedDict[int, list[int]] = OrderedDict()

    def first_time(self, stream: int, sequence: int) -> bool:
        """Record ``sequence`` of ``stream``; whether it was new."""
        state = self._streams.get(stream)
        if state is None:
            self._streams[stream] = [sequence, 1]
            if len(self._streams) > self._size:
                self._streams.popitem(last=False)
            return True
        self._streams.move_to_end(stream)
        newest, seen = state
        if sequence > newest:
            shift = sequence - newest
            state[0] = sequence
            state[1] = ((seen << shift) | 1) & self._full if shift < self._window else 1
            return True
        bit = newest - sequence
        if bit >= self._window or seen >> bit & 1:
            return False
        state[1] = seen | (1 << bit)
        return True

    def __len__(self) -> int:
        return len(self._streams)


class ScribeNode:
    """One node's Scribe layer, stacked on one KBR node.

    Driving contract (the aioquic style; every ``now`` is the caller's
    monotonic clock in seconds and never goes backwards):

    * every event taken from the KBR node's ``next_event`` goes to
      :meth:`handle_kbr_event` (or every upcall from its ``next_upcall`` to
      :meth:`handle_kbr_upcall`: the same, without an event object per data
      message; :meth:`next_upcall` is the same offer upward);
    * :meth:`handle_timer` when ``now`` reaches :meth:`get_timer` (early or
      late calls are harmless: it does what is due by ``now``);
    * :meth:`join`, :meth:`leave` and :meth:`multicast` for the application;
    * after each of those calls: drain the KBR node's events again (Scribe's
      calls make KBR emit some, e.g. the first :class:`RouteStep` of a JOIN),
      then :meth:`next_event` until ``None``, then re-arm the one timer.

    Scribe sends nothing itself: it calls the KBR node's ``route``,
    ``forward`` and ``send_direct``. Peers' garbage is counted in
    :attr:`stats` and logged (rate-limited), never raised.

    How a tree is kept (Castro et al. 2002; the doc has the details):

    * ``join`` routes a JOIN toward the group's key with ``intercept=True``.
      At each hop a node not on the tree becomes a forwarder, adopts the
      joiner as child (ACCEPT) and passes the JOIN on naming itself as the
      joiner; a node on the tree adopts the joiner and stops the JOIN. At the
      root (``next_hop`` ``None``) the tree ends.
    * A node with ``max_children`` children pushes a new joiner down: it
      REDIRECTs it to its least loaded child (children report their own
      child count in REFRESH), which the joiner asks directly. This stands in
      for the paper's bottleneck remover, which needs a proximity metric the
      KBR API does not expose.
    * Parents carry their path to the root in ACCEPT and HEARTBEAT. A node
      never adopts a joiner that is its own ancestor (a routed JOIN goes on
      toward the root instead), and leaves a parent whose path contains
      itself: reverse-path trees cannot loop while routes are consistent,
      but push-downs and overlay repair break that.
    * Parents send HEARTBEAT, children REFRESH, every ``heartbeat_interval``;
      data counts as both. A child that misses its parent for
      ``parent_timeout`` (or gets :class:`NodeFailed` for it) joins again; a
      parent drops a child silent for ``child_timeout``. A node that is on
      no tree path any more (not a member, no children) sends LEAVE upward.
    * Whenever KBR's leaf set changes, and every heartbeat interval, each
      group's root asks KBR whether it still is the root (else it joins the
      new one, keeping its children), and a node KBR now calls root takes
      the role (leaving its parent). Root failure thus heals by re-joins
      converging on the next closest node.
    * Multicast: a sender with tree edges floods the message over them (each
      node passes it to all tree neighbours but the one it came from); a
      sender off the tree, or on a part cut off from the root, routes it to
      the root, which floods it down. Per-(source, group) sequence numbers
      and a bounded window per stream make each node handle each message
      once, so each member delivers it once.
    """

    def __init__(self, kbr: KeyBasedRouting, config: ScribeConfig | None = None) -> None:
        self._kbr = kbr
        #: This node's id (a KBR node's handle never changes).
        self._my_id = kbr.handle.id
        self.config = config or ScribeConfig()
        self.stats = ScribeStats()
        self._groups: dict[int, _Group] = {}
        self._events: deque[ScribeEvent | MessageUpcall] = deque()
        self._dedup = _Dedup(self.config.dedup_size, self.config.dedup_window)
        # group key -> last sequence number sent, least recently used first.
        self._sequences: OrderedDict[int, int] = OrderedDict()
        # Every new stream starts above every sequence number ever used, so a
        # stream forgotten here and started again is still new to receivers.
        self._sequence_floor = 0
        # (deadline, tie-breaker, key) of JOIN retries; an entry is live only
        # while the group is DETACHED with that join_deadline.
        self._join_heap: list[tuple[float, int, int]] = []
        self._heap_counter = 0
        self._next_tick: float | None = None
        self._faults = 0

    # --- reading -------------------------------------------------------------

    @property
    def handle(self) -> NodeHandle:
        """This node."""
        return self._kbr.handle

    def groups(self) -> dict[str, Role]:
        """Every group this node has tree state for, with its role."""
        return {g.name: _role(g) for g in self._groups.values()}

    def children(self, group: str) -> list[NodeHandle]:
        """This node's children in ``group``'s tree (RFC 7046 childrenSet)."""
        g = self._lookup(group)
        return [c.handle for c in g.children.values()] if g is not None else []

    def parent(self, group: str) -> NodeHandle | None:
        """This node's parent in ``group``'s tree, if it has one (parentSet)."""
        g = self._lookup(group)
        return g.parent if g is not None else None

    def is_root(self, group: str) -> bool:
        """Whether this node is the root of ``group``'s tree."""
        g = self._lookup(group)
        return g is not None and g.state is _ROOT

    def is_member(self, group: str) -> bool:
        """Whether the application joined ``group`` here."""
        g = self._lookup(group)
        return g is not None and g.member

    def info(self, group: str) -> GroupInfo | None:
        """A snapshot of this node's state for ``group`` (``None``: not on its tree)."""
        g = self._lookup(group)
        if g is None:
            return None
        return GroupInfo(
            g.name,
            g.key,
            _role(g),
            g.state,
            g.parent,
            tuple(c.handle for c in g.children.values()),
            unpack_path(g.ancestors),
            g.rooted,
        )

    def max_payload(self, group: str) -> int:
        """Largest payload :meth:`multicast` takes for ``group``, in bytes.

        ``max_message_size`` less what a DATA message adds (header, source);
        the same for every group, as data messages do not carry the name.
        """
        canonical_group(group)  # InvalidURIError for a bad name
        return max(self.config.max_message_size - data_overhead(self._kbr.handle), 0)

    def _lookup(self, group: str) -> _Group | None:
        _, key = canonical_group(group)
        return self._groups.get(key)

    # --- application calls ---------------------------------------------------

    def join(self, group: str, now: float) -> None:
        """Become a member of ``group`` (a canonical ``ham:`` name); idempotent.

        Raises :class:`~hamcast.errors.InvalidURIError` for a bad name and
        :class:`~hamcast.errors.ResourceError` when ``max_groups`` groups are
        held already.
        """
        name, key = canonical_group(group)
        g = self._groups.get(key)
        if g is not None:
            if not g.member:
                # Already a forwarder (or root): membership needs no message.
                g.member = True
                g.sources = {}
            return
        if len(self._groups) >= self.config.max_groups:
            raise ResourceError(
                f"cannot join {name}: this node already holds {len(self._groups)} groups "
                f"(ScribeConfig.max_groups)"
            )
        g = self._new_group(name, key, True, now)
        self._start_join(g, now)

    def leave(self, group: str, now: float) -> None:
        """Stop being a member of ``group``; the node stays on as forwarder while it has children.

        Raises :class:`~hamcast.errors.NotJoinedError` if it is not a member.
        """
        name, key = canonical_group(group)
        g = self._groups.get(key)
        if g is None or not g.member:
            raise NotJoinedError(f"not a member of {name}")
        g.member = False
        g.sources = None
        self._maybe_prune(g, now)

    def multicast(self, group: str, payload: bytes, now: float) -> None:
        """Send ``payload`` to every member of ``group``; this node need not be one.

        Raises :class:`~hamcast.errors.MessageTooLongError` if the message would
        exceed ``max_message_size``.
        """
        _, key = canonical_group(group)
        g = self._groups.get(key)
        me = self._kbr.handle
        limit = max(self.config.max_message_size - data_overhead(me), 0)
        if len(payload) > limit:
            raise MessageTooLongError(len(payload), limit)
        sequence = self._next_sequence(key)
        # Our own copies may come back (routed to the root while we hang below
        # it): they are duplicates here.
        self._dedup.first_time(me.id << 128 | key, sequence)
        self.stats.sent += 1
        # KBR is called directly here, not through the counting helpers: the
        # application should hear that the overlay is not joined or closed.
        if g is not None and (g.state is not _DETACHED or g.children):
            raw = encode_data(key, me, sequence, payload, hops=1)
            targets = self._tree_neighbours(g, None)
            send_direct = self._kbr.send_direct
            for target in targets:
                send_direct(target, raw, now, compact=True)
            self.stats.forwarded += len(targets)
        if g is None or not (g.state is _ROOT or (g.state is _ATTACHED and g.rooted)):
            # Off the tree, or on a part not (known to be) connected to the
            # root: the root must see it to reach the rest of the tree.
            self._kbr.route(key, encode_multicast(sequence, payload), now)
        if g is not None and g.member and self.config.loopback:
            self._deliver(g, me, sequence, payload, 0)

    def _next_sequence(self, key: int) -> int:
        sequences = self._sequences
        sequence = sequences.pop(key, self._sequence_floor) + 1
        sequences[key] = sequence
        self._sequence_floor = max(self._sequence_floor, sequence)
        if len(sequences) > self.config.max_groups:
            sequences.popitem(last=False)
        return sequence

    # --- events and timers ---------------------------------------------------

    def next_event(self) -> ScribeEvent | None:
        """The next event, or ``None``."""
        if not self._events:
            return None
        item = self._events.popleft()
        if type(item) is tuple:
            return MessageReceived(*item)
        return item  # type: ignore[return-value]

    def next_upcall(self) -> ScribeEvent | MessageUpcall | None:
        """The next event as queued: deliveries as plain :data:`MessageUpcall` tuples.

        The same events in the same order as :meth:`next_event`, without a
        :class:`MessageReceived` object per message (~1 µs each on Python 3.11).
        """
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (seconds), or ``None``."""
        heap = self._join_heap
        while heap and not self._join_entry_live(heap[0]):
            heapq.heappop(heap)
        due = heap[0][0] if heap else None
        if self._groups and self._next_tick is not None:
            due = self._next_tick if due is None else min(due, self._next_tick)
        return due

    def handle_timer(self, now: float) -> None:
        """Do what is due by ``now``: JOIN retries and the periodic tree upkeep."""
        heap = self._join_heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._join_entry_live(entry):
                g = self._groups[entry[2]]
                g.join_attempts += 1
                self._start_join(g, now)
        if self._next_tick is not None and now >= self._next_tick:
            self._next_tick = now + self.config.heartbeat_interval
            for g in list(self._groups.values()):
                if self._groups.get(g.key) is g:
                    self._upkeep(g, now)

    def _join_entry_live(self, entry: tuple[float, int, int]) -> bool:
        g = self._groups.get(entry[2])
        return g is not None and g.state is _DETACHED and g.join_deadline == entry[0]

    def _upkeep(self, g: _Group, now: float) -> None:
        config = self.config
        self._check_root(g, now)
        if g.state is _ATTACHED:
            assert g.parent is not None
            if now - g.parent_seen > config.parent_timeout:
                self.stats.parent_timeouts += 1
                logger.debug("%s %s: parent %s timed out", self.handle, g.name, g.parent)
                self._detach(g, now)
            else:
                refresh = encode_refresh(g.key, len(g.children))
                self._send(g.parent, refresh, now)
        limit = now - config.child_timeout
        expired = [i for i, c in g.children.items() if c.seen < limit]
        for child_id in expired:
            self.stats.child_timeouts += 1
            # It may be alive with its refreshes lost: tell it, so it joins again.
            self._send(g.children[child_id].handle, encode_leave(g.key), now)
            self._drop_child(g, child_id)
        if self._maybe_prune(g, now):
            return
        if g.children:
            beat = encode_heartbeat(g.key, g.rooted, g.ancestors + self._id_bytes())
            for child in g.children.values():
                self._send(child.handle, beat, now)

    # --- KBR events ----------------------------------------------------------

    def handle_kbr_upcall(self, item: object, now: float) -> None:
        """Consume one upcall of a KBR node's ``next_upcall``: a data tuple or an event.

        ``(payload, sender)`` is a direct message, ``(key, payload, origin,
        hops)`` a plain route that ended here; anything else goes to
        :meth:`handle_kbr_event`.
        """
        if type(item) is tuple:
            if len(item) == 2:
                self._on_direct(item[0], item[1], now)
            else:
                self._on_delivered(item[0], item[1], item[2], item[3], now)
        else:
            self.handle_kbr_event(item, now)  # type: ignore[arg-type]

    def handle_kbr_event(self, event: KbrEvent, now: float) -> None:
        """Consume one event of the KBR node below."""
        if isinstance(event, DirectReceived):
            self._on_direct(event.payload, event.sender, now)
        elif isinstance(event, RouteStep):
            self._on_route_step(event, now)
        elif isinstance(event, Delivered):
            self._on_delivered(event.key, event.payload, event.origin, event.hops, now)
        elif isinstance(event, NodeFailed):
            self._on_node_failed(event.node, now)
        elif isinstance(event, NeighborsChanged):
            self._check_roots(now)
            self._retry_joins(now)
        elif isinstance(event, Joined):
            self._on_overlay_joined(now)

    def _decode(self, payload: bytes) -> Message | None:
        if len(payload) > self.config.max_message_size:
            self.stats.oversize += 1
            self._remote_fault("dropped a %d-byte message (too long)", len(payload))
            return None
        try:
            message = decode(payload)
        except MalformedMessage as exc:
            self.stats.malformed += 1
            self._remote_fault("dropped a malformed message: %s", exc)
            return None
        if isinstance(message, Join) and group_key(message.name) != message.key:
            self.stats.key_mismatch += 1
            self._remote_fault("dropped a message whose key is not its name's: %r", message.name)
            return None
        return message

    def _remote_fault(self, text: str, *args: object) -> None:
        self._faults += 1
        if self._faults <= _WARN_FIRST or self._faults % _WARN_EVERY == 0:
            logger.warning("%s: " + text + " (%d faults so far)", self.handle, *args, self._faults)
        else:
            logger.debug(text, *args)

    def _on_route_step(self, step: RouteStep, now: float) -> None:
        message = self._decode(step.payload)
        if message is None:
            return
        if not isinstance(message, Join) or message.key != step.key:
            # Scribe intercepts only its JOINs; pass anything else on untouched.
            if step.next_hop is not None:
                self._forward(step.key, step.payload, step.next_hop, now, step=step)
            else:
                self.stats.unexpected += 1  # a MULTICAST is routed plain, never intercepted
            return
        me = self._kbr.handle
        g = self._groups.get(message.key)
        if step.origin.id == me.id and step.previous is not None:
            # Our own JOIN came back: routes loop while the overlay repairs.
            self.stats.joins_looped += 1
            return
        if message.joiner.id == me.id:
            if g is None or g.state is not _DETACHED:
                return  # left or attached meanwhile
            if step.next_hop is None:
                self._become_root(g, now)
            else:
                self._forward(message.key, step.payload, step.next_hop, now, step=step)
            return
        if g is not None:
            if step.next_hop is None and g.state is not _ROOT:
                self._become_root(g, now)
            ancestors = g.ancestors
            if path_contains(ancestors, message.joiner.id) or path_contains(
                ancestors, step.origin.id
            ):
                # We hang below the joiner (push-downs and re-joins can make a
                # route pass through the joiner's own subtree): adopting it
                # would close a loop, so let the JOIN go on toward the root,
                # which is no one's descendant.
                self.stats.joins_passed_on += 1
                if step.next_hop is not None:
                    self._forward(message.key, step.payload, step.next_hop, now, step=step)
                return
            self._admit(g, message.joiner, message.redirects, now)
            return
        if len(self._groups) >= self.config.max_groups:
            # Cannot hold one more tree: let the JOIN pass, naming the same
            # joiner, so the next node adopts it directly.
            self.stats.transit_full += 1
            if step.next_hop is not None:
                self._forward(message.key, step.payload, step.next_hop, now, step=step)
            return
        g = self._new_group(message.name, message.key, False, now)
        if step.next_hop is None:
            self._become_root(g, now)
        else:
            self._start_join(g, now, via=step)
        self._admit(g, message.joiner, message.redirects, now)

    def _on_delivered(
        self, key: int, payload: bytes, origin: NodeHandle, hops: int, now: float
    ) -> None:
        # A plain route ended here: only a MULTICAST may (read in place).
        if payload[:3] == _MULTICAST_PREFIX and len(payload) >= MULTICAST_OVERHEAD:
            if len(payload) > self.config.max_message_size:
                self.stats.oversize += 1
                self._remote_fault("dropped a %d-byte message (too long)", len(payload))
                return
            (sequence,) = _SEQUENCE.unpack_from(payload, 3)
            self._on_multicast(
                key, origin, sequence, payload[MULTICAST_OVERHEAD:], hops=hops, now=now
            )
            return
        if self._decode(payload) is not None:
            self.stats.unexpected += 1

    def _on_direct(self, payload: bytes, sender: NodeHandle, now: float) -> None:
        if payload[:3] == _DATA_PREFIX:
            self._on_data(payload, sender, now)
            return
        message = self._decode(payload)
        if message is None:
            return
        if sender.id == self._kbr.handle.id or isinstance(message, Multicast | Data):
            # A MULTICAST is routed, never direct (a Data is taken above).
            self.stats.unexpected += 1
            return
        g = self._groups.get(message.key)
        if isinstance(message, Heartbeat | Accept):
            self._on_parent_says(g, message, sender, now)
        elif isinstance(message, Refresh):
            child = g.children.get(sender.id) if g is not None else None
            if child is not None:
                child.seen = now
                child.load = message.children
            else:
                self._stale_edge(message.key, sender, now)
        elif isinstance(message, Leave):
            self._on_leave(g, sender, now)
        elif isinstance(message, Redirect):
            self._on_redirect(g, message, now)
        elif message.joiner.id != sender.id:
            self.stats.unexpected += 1
        elif g is None:
            self.stats.joins_no_tree += 1
        elif path_contains(g.ancestors, message.joiner.id):
            # A pushed-down joiner that is our ancestor: adopting it would
            # close a loop. It joins by routing again after its timeout.
            self.stats.joins_refused_loop += 1
        else:
            self._admit(g, message.joiner, message.redirects, now)

    def _on_parent_says(
        self, g: _Group | None, message: Accept | Heartbeat, sender: NodeHandle, now: float
    ) -> None:
        # ACCEPT and HEARTBEAT say the same: "I am your parent, here is my
        # path". A DETACHED node takes a HEARTBEAT as a lost ACCEPT.
        if g is None or g.state is _ROOT:
            self._stale_edge(message.key, sender, now)
            return
        path = message.path
        if g.state is _ATTACHED:
            assert g.parent is not None
            if g.parent.id != sender.id:
                self._stale_edge(message.key, sender, now)
                return
        if path[-16:] != sender.id.to_bytes(16, "big"):
            self.stats.malformed += 1
            self._remote_fault("%s sent a path that does not end with itself", sender)
            return
        if path_contains(path, self._kbr.handle.id) or len(path) > 16 * self.config.max_depth:
            # Not a fault: loops form while routes are repaired (docs §6).
            self.stats.loops_detected += 1
            logger.debug("%s %s: loop through %s, leaving it", self.handle, g.name, sender)
            self._send(sender, encode_leave(g.key), now)
            if g.state is _ATTACHED:
                self._detach(g, now, backoff=True)
            return
        if g.state is _DETACHED:
            g.parent = sender
            g.join_deadline = None
            g.join_attempts = 0
            self._set_state(g, _ATTACHED)
            self._emit(ParentChanged(g.name, sender))
        g.parent_seen = now
        self._set_path(g, path, message.rooted, now)

    def _on_leave(self, g: _Group | None, sender: NodeHandle, now: float) -> None:
        if g is None:
            return
        if sender.id in g.children:
            self._drop_child(g, sender.id)
            self._maybe_prune(g, now)
        elif g.state is _ATTACHED and g.parent is not None and g.parent.id == sender.id:
            self._detach(g, now)

    def _on_redirect(self, g: _Group | None, redirect: Redirect, now: float) -> None:
        me = self._kbr.handle
        if (
            g is None
            or g.state is not _DETACHED
            or redirect.target.id == me.id
            or redirect.redirects > self.config.max_redirects
        ):
            self.stats.unexpected += 1
            return
        join = encode_join(g.key, g.name_bytes, me, redirect.redirects)
        self._send(redirect.target, join, now)
        self.stats.joins_sent += 1
        # Give the redirected JOIN a full timeout of its own.
        self._arm_join(g, now + self.config.join_timeout)

    def _on_node_failed(self, node: NodeHandle, now: float) -> None:
        for g in list(self._groups.values()):
            if node.id in g.children:
                self._drop_child(g, node.id)
                if self._maybe_prune(g, now):
                    continue
            if g.state is _ATTACHED and g.parent is not None and g.parent.id == node.id:
                self._detach(g, now)
        self._retry_joins(now)

    def _retry_joins(self, now: float) -> None:
        # KBR's tables changed, so routes may now lead somewhere: an
        # outstanding JOIN (likely lost on the way to a dead node) is sent
        # again at once rather than after its backed-off timeout.
        soon = now - self.config.join_timeout / 4
        for g in list(self._groups.values()):
            if g.state is _DETACHED and g.join_sent < soon:
                g.join_attempts = 0
                self._start_join(g, now)

    def _on_overlay_joined(self, now: float) -> None:
        # JOINs sent before the overlay was ready may have gone nowhere.
        for g in list(self._groups.values()):
            if g.state is _DETACHED:
                g.join_attempts = 0
                self._start_join(g, now)
        self._check_roots(now)

    def _check_roots(self, now: float) -> None:
        for g in list(self._groups.values()):
            if self._groups.get(g.key) is g:
                self._check_root(g, now)

    def _check_root(self, g: _Group, now: float) -> None:
        is_root = self._kbr.is_root(g.key)
        if g.state is _ROOT and not is_root:
            self._detach(g, now)
        elif g.state is not _ROOT and is_root:
            self._become_root(g, now)

    # --- multicast -----------------------------------------------------------

    def _on_multicast(
        self, key: int, source: NodeHandle, sequence: int, payload: bytes, *, hops: int, now: float
    ) -> None:
        # A routed multicast reached this node as the key's root.
        g = self._groups.get(key)
        if g is None:
            self.stats.no_tree += 1
            return
        if not self._dedup.first_time(source.id << 128 | key, sequence):
            self.stats.duplicates += 1
            return
        hops = min(hops, _MAX_HOPS)
        self._deliver(g, source, sequence, payload, hops)
        targets = self._tree_neighbours(g, None)
        if not targets:
            return
        if hops >= _MAX_HOPS:
            self._remote_fault("%s: dropped a message after %d hops", g.name, hops)
            return
        out = encode_data(key, source, sequence, payload, hops=hops + 1)
        for target in targets:
            self._send(target, out, now, compact=True)
        self.stats.forwarded += len(targets)

    def _on_data(self, raw: bytes, sender: NodeHandle, now: float) -> None:
        # A DATA along a tree edge (the data path): the fixed fields are read
        # in place, no message object.
        size = len(raw)
        if size > self.config.max_message_size:
            self.stats.oversize += 1
            self._remote_fault("dropped a %d-byte message (too long)", size)
            return
        try:
            if size < _DATA_SOURCE_AT:
                raise ProtocolError("truncated data header")
            source, payload_at = read_handle(raw, _DATA_SOURCE_AT)
        except ProtocolError as exc:
            self.stats.malformed += 1
            self._remote_fault("dropped a malformed message: %s", exc)
            return
        sender_id = sender.id
        if sender_id == self._my_id:
            self.stats.unexpected += 1
            return
        key = int.from_bytes(raw[3:19], "big")
        hops, sequence = _DATA_FIXED.unpack_from(raw, 19)
        g = self._groups.get(key)
        if g is None:
            self.stats.no_tree += 1
            self._stale_edge(key, sender, now)
            return
        neighbour = True
        if g.state is _ATTACHED and g.parent is not None and g.parent.id == sender_id:
            g.parent_seen = now
        elif (child := g.children.get(sender_id)) is not None:
            child.seen = now
        else:
            neighbour = False
            if g.state is not _DETACHED:
                # The sender has an edge to us we do not have. (While
                # DETACHED the ACCEPT may just be late: keep quiet.)
                self._stale_edge(g.key, sender, now)
        if not self._dedup.first_time(source.id << 128 | key, sequence):
            self.stats.duplicates += 1
            return
        if g.member:
            self._deliver(g, source, sequence, raw[payload_at:], hops)
        self._disseminate(g, raw, hops, sender_id if neighbour else None, now)

    def _disseminate(
        self, g: _Group, raw: bytes, hops: int, exclude: int | None, now: float
    ) -> None:
        # Flood over the tree: to every tree neighbour but the one it came from.
        targets = self._tree_neighbours(g, exclude)
        if not targets:
            return
        if hops >= _MAX_HOPS:
            self._remote_fault("%s: dropped a message after %d hops", g.name, hops)
            return
        out = restamp(raw, hops + 1)
        for target in targets:
            self._send(target, out, now, compact=True)
        self.stats.forwarded += len(targets)

    @staticmethod
    def _tree_neighbours(g: _Group, exclude: int | None) -> list[NodeHandle]:
        children = g.children
        targets = [c.handle for i, c in children.items() if i != exclude] if children else []
        parent = g.parent if g.state is _ATTACHED else None
        if parent is not None and parent.id != exclude:
            targets.append(parent)
        return targets

    def _deliver(
        self, g: _Group, source: NodeHandle, sequence: int, payload: bytes, hops: int
    ) -> None:
        sources = g.sources
        if not g.member or sources is None:
            return
        name = g.name
        if source.id not in sources:
            sources[source.id] = None
            if len(sources) > self.config.max_sources:
                del sources[next(iter(sources))]
            self._emit(SourceSeen(name, source))
        self.stats.delivered += 1
        # Queued as a tuple; next_event() makes the MessageReceived.
        self._emit((name, payload, source, sequence, hops))

    # --- tree state ----------------------------------------------------------

    def _new_group(self, name: str, key: int, member: bool, now: float) -> _Group:
        g = _Group(name, key, member)
        if not self._groups:
            self._next_tick = now + self.config.heartbeat_interval
        self._groups[key] = g
        return g

    def _set_state(self, g: _Group, new: TreeState) -> None:
        old = g.state
        why = _TRANSITIONS.get((old, new))
        if why is None:
            raise AssertionError(f"Scribe bug: {g.name} cannot go from {old.name} to {new.name}")
        logger.debug("%s %s: %s -> %s (%s)", self._kbr.handle, g.name, old.name, new.name, why)
        g.state = new

    def _start_join(self, g: _Group, now: float, via: RouteStep | None = None) -> None:
        """Send a JOIN naming this node: routed from here, or passing on ``via``'s route."""
        payload = encode_join(g.key, g.name_bytes, self._kbr.handle, 0)
        wait = min(
            self.config.join_timeout * 2 ** min(g.join_attempts, 30), self.config.join_backoff_max
        )
        self._arm_join(g, now + wait)
        g.join_sent = now
        self.stats.joins_sent += 1
        if via is None or via.next_hop is None:
            self._route_join(g.key, payload, now)
        else:
            # Continue the joiner's route (its origin matters to loop checks).
            self._forward(g.key, payload, via.next_hop, now, step=via)

    def _arm_join(self, g: _Group, deadline: float) -> None:
        g.join_deadline = deadline
        self._heap_counter += 1
        heap = self._join_heap
        heapq.heappush(heap, (deadline, self._heap_counter, g.key))
        if len(heap) > 4 * self.config.max_groups:
            # Superseded entries pile up when redirects re-arm often: rebuild.
            self._join_heap = [e for e in heap if self._join_entry_live(e)]
            heapq.heapify(self._join_heap)

    def _become_root(self, g: _Group, now: float) -> None:
        if g.state is _ATTACHED:
            assert g.parent is not None
            # The old parent belongs to a tree hanging off a node that is not
            # the root any more; it will join us in turn.
            self._send(g.parent, encode_leave(g.key), now)
            g.parent = None
            self._emit(ParentChanged(g.name, None))
        self._set_state(g, _ROOT)
        g.join_deadline = None
        g.join_attempts = 0
        self._emit(BecameRoot(g.name))
        self._set_path(g, b"", True, now)

    def _detach(self, g: _Group, now: float, *, backoff: bool = False) -> None:
        """Lose the parent (or the root role) and join again, keeping the children."""
        if g.state is _ATTACHED:
            g.parent = None
            self._set_state(g, _DETACHED)
            self._emit(ParentChanged(g.name, None))
        elif g.state is _ROOT:
            self._set_state(g, _DETACHED)
            self._emit(RootLost(g.name))
        # Keep the old ancestors: the subtree below still lists this node
        # under them, which is what the loop checks need.
        self._set_path(g, g.ancestors, False, now)
        if backoff:
            # After a loop, wait before routing into the same loop again.
            g.join_attempts += 1
            self._arm_join(g, now + self.config.join_timeout)
        else:
            g.join_attempts = 0
            self._start_join(g, now)

    def _set_path(self, g: _Group, ancestors: bytes, rooted: bool, now: float) -> None:
        if g.ancestors == ancestors and g.rooted == rooted:
            return
        g.ancestors = ancestors
        g.rooted = rooted
        if g.children:
            # Tell the subtree at once: loop checks and the senders' choice
            # (flood only, or also route to the root) depend on it.
            beat = encode_heartbeat(g.key, rooted, ancestors + self._id_bytes())
            for child in g.children.values():
                self._send(child.handle, beat, now)

    def _admit(self, g: _Group, joiner: NodeHandle, redirects: int, now: float) -> None:
        """Take ``joiner`` as a child, or push it down if this node is full."""
        joiner_id = joiner.id
        if joiner_id == self._kbr.handle.id:
            return
        children = g.children
        child = children.get(joiner_id)
        if child is not None:
            child.handle = joiner
            child.seen = now
        elif len(children) >= self.config.max_children:
            if redirects >= self.config.max_redirects:
                self.stats.joins_refused_full += 1
                return
            # Push down to the least loaded child, so the tree fills level by
            # level and a push-down chain stays about log(size) long; among
            # equals the one whose id is nearest the joiner's.
            target = min(
                children.values(), key=lambda c: (c.load, ring_distance(c.handle.id, joiner_id))
            )
            # Count the joiner there already, so a burst of joiners spreads.
            target.load += 1
            redirect = encode_redirect(g.key, redirects + 1, target.handle)
            self._send(joiner, redirect, now)
            self.stats.joins_redirected += 1
            return
        else:
            children[joiner_id] = _Child(joiner, now)
            self._emit(ChildAdded(g.name, joiner))
        accept = encode_accept(g.key, g.rooted, g.ancestors + self._id_bytes())
        self._send(joiner, accept, now)

    def _drop_child(self, g: _Group, child_id: int) -> None:
        child = g.children.pop(child_id)
        self._emit(ChildRemoved(g.name, child.handle))

    def _maybe_prune(self, g: _Group, now: float) -> bool:
        """Forget ``g`` if this node is neither a member nor has children; whether it did."""
        if g.member or g.children:
            return False
        del self._groups[g.key]
        if g.state is _ATTACHED:
            assert g.parent is not None
            self._send(g.parent, encode_leave(g.key), now)
            self._emit(ParentChanged(g.name, None))
        elif g.state is _ROOT:
            self._emit(RootLost(g.name))
        g.join_deadline = None
        return True

    def _stale_edge(self, key: int, sender: NodeHandle, now: float) -> None:
        # The sender believes in a tree edge to us that we do not have: tell it
        # to drop it (a child joins again; a parent forgets it). Never answered
        # in turn, so two nodes cannot ping-pong LEAVEs.
        self.stats.stale_edges += 1
        self._send(sender, encode_leave(key), now)

    # KBR refuses sends when its node has not joined the overlay yet, has
    # left it, or gets a payload beyond its own limit. Sends caused by peers
    # and timers must not raise out of Scribe: count, log, and let timers retry.

    def _send(self, node: NodeHandle, payload: bytes, now: float, *, compact: bool = False) -> None:
        try:
            self._kbr.send_direct(node, payload, now, compact=compact)
        except HamcastError as exc:
            self._kbr_refused(exc)

    def _forward(
        self, key: int, payload: bytes, next_hop: NodeHandle, now: float, *, step: RouteStep
    ) -> None:
        try:
            self._kbr.forward(key, payload, next_hop, now, step=step)
        except HamcastError as exc:
            self._kbr_refused(exc)

    def _route_join(self, key: int, payload: bytes, now: float) -> None:
        try:
            self._kbr.route(key, payload, now, intercept=True)
        except HamcastError as exc:
            self._kbr_refused(exc)

    def _kbr_refused(self, exc: HamcastError) -> None:
        self.stats.kbr_refused += 1
        if self.stats.kbr_refused <= _WARN_FIRST or self.stats.kbr_refused % _WARN_EVERY == 0:
            logger.warning("%s: KBR refused a send: %s", self.handle, exc)
        else:
            logger.debug("KBR refused a send: %s", exc)

    def _id_bytes(self) -> bytes:
        # This node's id as it appears in packed paths.
        return self._kbr.handle.id.to_bytes(16, "big")

    def _emit(self, event: ScribeEvent | MessageUpcall) -> None:
        if len(self._events) >= self.config.max_events:
            self.stats.events_dropped += 1
            return
        self._events.append(event)


def _role(g: _Group) -> Role:
    role = Role(0)
    if g.member:
        role |= Role.MEMBER
    if g.children:
        role |= Role.FORWARDER
    if g.state is _ROOT:
        role |= Role.ROOT
    return role
