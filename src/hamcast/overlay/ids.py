"""Identifiers of the overlay: 128-bit node ids and keys, and node handles.

Node ids and keys share one circular space of ``2**128`` values. Pastry
reads them as sequences of digits of ``b`` bits (base ``2**b``), most
significant first (Rowstron & Druschel, Middleware 2001, §2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ID_BITS",
    "ID_SPACE",
    "Address",
    "NodeHandle",
    "digit",
    "format_id",
    "ring_distance",
    "shared_prefix_length",
]

ID_BITS = 128
ID_SPACE = 1 << ID_BITS

#: A UDP endpoint: (IP address text, port).
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class NodeHandle:
    """A node of the overlay: its id and where to reach it."""

    id: int
    address: Address

    def __str__(self) -> str:
        host, port = self.address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"{format_id(self.id)[:8]}@{where}"


def format_id(value: int) -> str:
    """An id as 32 lower-case hex digits."""
    return f"{value:032x}"


def digit(value: int, index: int, b: int = 4) -> int:
    """The ``index``-th digit (0 = most significant) of ``value`` in base ``2**b``."""
    shift = ID_BITS - (index + 1) * b
    return (value >> shift) & ((1 << b) - 1)


def shared_prefix_length(a: int, b_value: int, b: int = 4) -> int:
    """How many leading base-``2**b`` digits ``a`` and ``b_value`` have in common."""
    differing = a ^ b_value
    if differing == 0:
        return ID_BITS // b
    return (ID_BITS - differing.bit_length()) // b


def ring_distance(a: int, b_value: int) -> int:
    """Distance between two ids on the circular id space (the shorter way round)."""
    forward = (b_value - a) % ID_SPACE
    return min(forward, ID_SPACE - forward)
