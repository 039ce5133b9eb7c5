"""Configuration of the Scribe layer: one typed, documented dataclass (no I/O).

Every time is in seconds on the caller's clock, every size in bytes, every
other bound a count. Tests shrink the times to run fast instead of patching
constants (STYLE.md 9).
"""

from __future__ import annotations

from dataclasses import dataclass

from hamcast.errors import UsageError

__all__ = ["ScribeConfig"]

#: A path to the root travels with a one-byte count (docs/technologies/overlay-scribe.md).
_WIRE_MAX_PATH = 255


@dataclass(frozen=True, slots=True)
class ScribeConfig:
    """Timers and bounds of one :class:`~hamcast.overlay.scribe.ScribeNode`.

    Attributes:
        heartbeat_interval: Seconds between two rounds of tree upkeep: a parent
            sends HEARTBEAT to each child, a child sends REFRESH to its parent,
            timeouts are checked and a root asks KBR whether it still is one.
        parent_timeout: Seconds without HEARTBEAT or data from the parent after
            which a child declares it failed and joins again. Should be a few
            heartbeat intervals so one lost heartbeat is not a failure.
        child_timeout: Seconds without REFRESH or data from a child after which
            a parent drops it (soft state: dead children are forgotten).
        join_timeout: Seconds to wait for ACCEPT after sending a JOIN before
            sending it again; each retry doubles the wait. A JOIN still
            outstanding when KBR reports a changed leaf set or a failed node
            is sent again at once (routes may lead somewhere now).
        join_backoff_max: Upper bound, seconds, of the doubled retry wait. It
            bounds how long a re-join may lag behind KBR's own repair.
        max_children: Most children one node keeps per group (bounded fan-out).
            A JOIN beyond it is pushed down: the joiner is redirected to one of
            the existing children.
        max_redirects: Most push-downs one JOIN may take before a full node
            refuses it (the joiner then retries by routing, after its timeout).
            Each push-down goes one level down the tree, so this should be
            about the depth of the deepest full subtree: log base
            ``max_children`` of the group's tree size, and at most
            ``max_depth`` (0..255).
        max_groups: Most groups this node keeps tree state for, as member,
            forwarder or root. Beyond it :meth:`join` raises and a transit JOIN
            is passed on without this node becoming a forwarder.
        max_depth: Longest path to the root accepted, in nodes (1..254). A
            longer path means a loop (or a pathological tree); the node leaves
            its parent and joins again.
        dedup_size: Most (source, group) streams whose recent sequence numbers a
            node remembers to suppress duplicates; the least recently used
            stream is forgotten first.
        dedup_window: Sequence numbers remembered per stream: a message this
            far behind the newest seen from its stream counts as a duplicate.
        max_sources: Most sources remembered per member group for
            :class:`~hamcast.overlay.scribe.SourceSeen`; beyond it the oldest is
            forgotten (and may be reported again).
        max_events: Most undelivered events kept; the driver drains them after
            every call, so only a caller that never drains hits it. Newer
            events are dropped and counted.
        max_message_size: Longest Scribe message, bytes, sent or accepted;
            longer inputs are dropped before parsing and longer multicasts
            refused with :class:`~hamcast.errors.MessageTooLongError`.
        loopback: Hand a member its own multicasts as
            :class:`~hamcast.overlay.scribe.MessageReceived` (``hops`` 0), as
            a native multicast socket loops them back.
    """

    heartbeat_interval: float = 2.0
    parent_timeout: float = 6.5
    child_timeout: float = 6.5
    join_timeout: float = 2.0
    join_backoff_max: float = 8.0
    max_children: int = 64
    max_redirects: int = 32
    max_groups: int = 1024
    max_depth: int = 32
    dedup_size: int = 1024
    dedup_window: int = 256
    max_sources: int = 256
    max_events: int = 4096
    max_message_size: int = 65000
    loopback: bool = True

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_interval",
            "parent_timeout",
            "child_timeout",
            "join_timeout",
            "join_backoff_max",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise UsageError(f"ScribeConfig.{name} must be a positive number of seconds")
        for name in (
            "max_children",
            "max_groups",
            "dedup_size",
            "dedup_window",
            "max_sources",
            "max_events",
        ):
            if getattr(self, name) < 1:
                raise UsageError(f"ScribeConfig.{name} must be at least 1")
        if not 0 <= self.max_redirects <= 255:
            raise UsageError("ScribeConfig.max_redirects must be in 0..255")
        if not 1 <= self.max_depth < _WIRE_MAX_PATH:
            raise UsageError(f"ScribeConfig.max_depth must be in 1..{_WIRE_MAX_PATH - 1}")
        if self.max_message_size < 512:
            raise UsageError("ScribeConfig.max_message_size must be at least 512 bytes")
