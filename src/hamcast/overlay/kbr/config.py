"""Configuration of the key-based routing core: one typed, documented dataclass (no I/O).

Every time is in seconds on the caller's clock. Tests build small configs
instead of patching constants (STYLE.md 9). All nodes of one overlay must
use the same ``b`` and ``leaf_set_size``: the wire format carries row indices
and list lengths that only make sense under the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hamcast.errors import UsageError
from hamcast.overlay.ids import ID_BITS

__all__ = ["KbrConfig"]

#: Bytes of the largest node handle on the wire (IPv6): id, family, address, port.
_MAX_HANDLE_BYTES = 16 + 1 + 16 + 2
#: Bytes of the common header: version, type, flags, sender handle.
_MAX_HEADER_BYTES = 3 + _MAX_HANDLE_BYTES
#: Bytes a ROUTE adds around its payload: flags, hops, key, origin, length.
_ROUTE_OVERHEAD = 1 + 1 + 16 + _MAX_HANDLE_BYTES + 4


@dataclass(frozen=True, slots=True)
class KbrConfig:
    """How a Pastry-style node routes, probes and repairs, and how much it keeps.

    Attributes:
        b: Bits per digit of an id; the routing table has ``128 / b`` rows of
            ``2**b`` columns (Rowstron & Druschel 2001, §2.1). One of 1, 2, 4, 8.
        leaf_set_size: ``L``, the number of numerically closest nodes kept,
            ``L / 2`` on each side (even, 2..128).
        keepalive_interval: Seconds between keep-alive rounds. In each round
            every leaf-set member not heard from for this long is pinged.
        keepalive_jitter: Each round is delayed by this fraction of the
            interval, up or down at random, so that nodes do not synchronise.
        probe_timeout: Seconds to wait for the answer to one ping.
        probe_count: Unanswered pings in a row after which a node is declared
            failed (each is re-sent after ``probe_timeout``).
        routing_probe_interval: Routing-table entries (that are not leaves)
            are probed lazily: only when silent for this many seconds.
        leafset_exchange_rounds: Every this many rounds the keep-alive pings
            carry the leaf set even if it did not change (it is carried in the
            first round after any change anyway); this heals leaf sets that
            concurrent joins or lost messages left inconsistent.
        rt_maintenance_interval: Seconds between routing-table maintenance
            requests: a random entry of one row (rows taken in turn) is asked
            for its row, and closer nodes (by measured round-trip time) replace
            ours (Pastry §2.5 locality, MSPastry's periodic maintenance).
            ``0`` turns it off.
        join_timeout: Seconds to wait for the root's answer to a JOIN before
            sending it again, through the next bootstrap address.
        request_timeout: Seconds to wait for the answer to a leaf-set or row
            request before forgetting it.
        failed_memory: Seconds a failed or departed node is kept out of the
            tables: lists from other nodes that still name it are ignored;
            a datagram from the node itself lets it back in.
        max_hops: A route that has taken this many hops is dropped (a safety
            net; routing never loops by construction).
        max_payload: Largest application payload (bytes) of ``route``,
            ``forward`` and ``send_direct``.
        max_rows_per_message: Most routing-table rows sent in one message
            (a JOIN answer); deeper rows come from routing-table maintenance.
        max_pending_probes: Most candidate nodes being verified by a ping at
            once (names learned from other nodes' lists); more are ignored.
        max_pending_requests: Most leaf-set and row requests outstanding.
        max_failed_remembered: Most failed node ids remembered.
        max_bootstrap: Most bootstrap addresses kept.
        max_events: Most undelivered events; the driver drains them after
            every call, so only a caller that never drains reaches it.
        max_send_queue: Most datagrams waiting in :meth:`datagrams_to_send`.
    """

    b: int = 4
    leaf_set_size: int = 16
    keepalive_interval: float = 5.0
    keepalive_jitter: float = 0.1
    probe_timeout: float = 1.0
    probe_count: int = 3
    routing_probe_interval: float = 30.0
    leafset_exchange_rounds: int = 6
    rt_maintenance_interval: float = 60.0
    join_timeout: float = 5.0
    request_timeout: float = 2.0
    failed_memory: float = 60.0
    max_hops: int = 64
    max_payload: int = 65536
    max_rows_per_message: int = 8
    max_pending_probes: int = 128
    max_pending_requests: int = 16
    max_failed_remembered: int = 256
    max_bootstrap: int = 16
    max_events: int = 4096
    max_send_queue: int = 4096

    def __post_init__(self) -> None:
        if self.b not in (1, 2, 4, 8):
            raise UsageError(f"b must be 1, 2, 4 or 8 bits per digit, not {self.b!r}")
        if self.leaf_set_size % 2 or not 2 <= self.leaf_set_size <= 128:
            raise UsageError("leaf_set_size must be even and between 2 and 128")
        for name in (
            "keepalive_interval",
            "probe_timeout",
            "routing_probe_interval",
            "join_timeout",
            "request_timeout",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a positive number of seconds")
        if not 0 <= self.keepalive_jitter < 1:
            raise UsageError("keepalive_jitter must be in [0, 1)")
        if not (math.isfinite(self.rt_maintenance_interval) and self.rt_maintenance_interval >= 0):
            raise UsageError("rt_maintenance_interval must be 0 (off) or positive seconds")
        if not (math.isfinite(self.failed_memory) and self.failed_memory >= 0):
            raise UsageError("failed_memory must not be negative")
        if not 1 <= self.max_hops <= 255:
            raise UsageError("max_hops must be between 1 and 255 (one byte on the wire)")
        if not 0 < self.max_payload <= 1 << 24:
            raise UsageError("max_payload must be between 1 byte and 16 MiB")
        if not 1 <= self.max_rows_per_message <= self.rows:
            raise UsageError(f"max_rows_per_message must be between 1 and {self.rows}")
        for name in (
            "probe_count",
            "leafset_exchange_rounds",
            "max_pending_probes",
            "max_pending_requests",
            "max_failed_remembered",
            "max_bootstrap",
            "max_events",
            "max_send_queue",
        ):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1")

    @property
    def rows(self) -> int:
        """Rows of the routing table: digits in an id (32 for ``b = 4``)."""
        return ID_BITS // self.b

    @property
    def columns(self) -> int:
        """Columns of the routing table: values of a digit (16 for ``b = 4``)."""
        return 1 << self.b

    @property
    def failure_timeout(self) -> float:
        """Worst-case seconds from a leaf's death until it is declared failed (no loss).

        The last datagram from it may have arrived just after a round; the
        next round does not ping it (it was heard within the interval), the
        one after does, and then ``probe_count`` pings go unanswered.
        """
        round_max = self.keepalive_interval * (1 + self.keepalive_jitter)
        return 2 * round_max + self.probe_count * self.probe_timeout

    @property
    def routing_failure_timeout(self) -> float:
        """Worst-case seconds until a dead routing-table entry (not a leaf) is declared failed."""
        round_max = self.keepalive_interval * (1 + self.keepalive_jitter)
        return self.routing_probe_interval + round_max + self.probe_count * self.probe_timeout

    @property
    def max_datagram_size(self) -> int:
        """Largest datagram (bytes) a node sends or accepts; larger ones are dropped unparsed."""
        handles_per_row = self.columns - 1
        rows_body = 1 + self.max_rows_per_message * (2 + handles_per_row * _MAX_HANDLE_BYTES)
        leaf_body = 1 + self.leaf_set_size * _MAX_HANDLE_BYTES
        control = _MAX_HEADER_BYTES + 8 + rows_body + leaf_body
        route = _MAX_HEADER_BYTES + _ROUTE_OVERHEAD + self.max_payload
        return max(control, route)
