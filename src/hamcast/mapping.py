"""Where a group name goes: overlay key, native IPv4/IPv6 group and UDP port.

RFC 7046 leaves the mapping from names to technologies open; this module
defines it, and docs/mapping.md specifies it precisely enough to reimplement
(with the test vectors that pin it). In short: ``ham:ip:`` names are their own
addresses; every other name, and the overlay key of every name, comes from
SHA-256 over the UTF-8 of :attr:`URI.name <hamcast.uri.URI.name>`.

Mapping is one-way, so :class:`NameTable` remembers the names this host has
mapped, to hand a datagram that arrives on a native group up under the name
its sender used.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

from hamcast.uri import URI

__all__ = [
    "DEFAULT_PORT_RANGE",
    "IPV4_SCOPE",
    "IPV6_PREFIX",
    "GroupMapping",
    "NameTable",
    "map_group",
]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Where hashed names land on IPv4: the organization-local scope (RFC 2365 §6.2).
#: Its 18 free bits all lie within the 23 bits IPv4 multicast copies into the
#: Ethernet address (RFC 1112 §6.4), so two hashed groups never share a MAC filter.
IPV4_SCOPE: Final = ipaddress.IPv4Network("239.192.0.0/14")
#: Where hashed names land on IPv6: transient (T=1), site-local scope (5) groups,
#: ff15::/16 (RFC 4291 §2.7), with a dynamic 32-bit group id (RFC 3307 §4.3).
IPV6_PREFIX: Final = ipaddress.IPv6Network("ff15::/96")
#: Ports for names that give none: the dynamic/private range (RFC 6335 §6).
DEFAULT_PORT_RANGE: Final = range(49152, 65536)

_IPV4_BITS: Final = 0x3FFFF  # 18 bits: the host part of IPV4_SCOPE
_IPV6_DYNAMIC: Final = 0x80000000  # RFC 3307 §4.3: group ids 0x80000000-0xFFFFFFFF are dynamic
_IPV6_BITS: Final = 0x7FFFFFFF
_PORT_BITS: Final = 0x3FFF  # 14 bits: len(DEFAULT_PORT_RANGE) == 2**14


@dataclass(frozen=True, slots=True)
class GroupMapping:
    """Everything a technology needs to carry one group name (see docs/mapping.md)."""

    #: The name, canonical and without credentials.
    uri: URI
    #: 128-bit unsigned overlay key: the first 16 bytes of SHA-256(name), big-endian.
    overlay_key: int
    #: Group to join and send to on IPv4 native multicast.
    ipv4: ipaddress.IPv4Address
    #: Group to join and send to on IPv6 native multicast.
    ipv6: ipaddress.IPv6Address
    #: UDP port to use natively (the name's port, else one from DEFAULT_PORT_RANGE).
    port: int
    #: SSM source of an ip name with an instantiation; applies to the group of
    #: its own family only (the other family's group is a hashed ASM group).
    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    @property
    def family(self) -> Literal[4, 6] | None:
        """IP version of the address an ip name was written with; None otherwise."""
        if not self.uri.is_ip or self.uri.is_wildcard:
            return None
        # Canonical ip group text: IPv6 always has a ":", IPv4 never.
        return 6 if ":" in self.uri.group else 4


def map_group(uri: URI) -> GroupMapping:
    """Map a name to its overlay key, native groups and port (docs/mapping.md).

    Credentials never change the result: only the name is hashed.
    """
    return _map_name(uri.without_credentials())


@functools.lru_cache(maxsize=4096)
def _map_name(uri: URI) -> GroupMapping:
    # Cached because the daemon maps on every join, leave and send, and the
    # mapping of a name never changes; bounded like everything a client can grow.
    digest = hashlib.sha256(uri.name.encode("utf-8")).digest()
    overlay_key = int.from_bytes(digest[0:16], "big")
    ipv4 = IPV4_SCOPE[int.from_bytes(digest[16:20], "big") & _IPV4_BITS]
    ipv6 = IPV6_PREFIX[_IPV6_DYNAMIC | (int.from_bytes(digest[20:24], "big") & _IPV6_BITS)]
    port = DEFAULT_PORT_RANGE[int.from_bytes(digest[24:26], "big") & _PORT_BITS]
    if uri.port is not None:
        port = uri.port
    source: _IPAddress | None = None
    if uri.is_ip:
        if not uri.is_wildcard:
            written = ipaddress.ip_address(uri.group)
            if isinstance(written, ipaddress.IPv4Address):
                ipv4 = written
            else:
                ipv6 = written
        if uri.instantiation is not None:
            source = ipaddress.ip_address(uri.instantiation)
    return GroupMapping(uri, overlay_key, ipv4, ipv6, port, source)


# (group, port, SSM source or None)
_Key = tuple[_IPAddress, int, _IPAddress | None]


class NameTable:
    """Bounded memory of names seen, to name the datagrams that arrive natively.

    A datagram arriving on (address, port[, source]) is handed up with the
    name the sender used. Native multicast carries no name, and hashed groups cannot be inverted, so
    the core calls :meth:`remember` for every mapping it joins or sends on and
    :meth:`lookup` for every datagram it receives. At most ``capacity`` names
    are kept; the least recently remembered or looked-up name goes first,
    because a group still carrying traffic should keep its name.

    Two remembered names can share a native (group, port): natively they are
    one group and a receiver cannot tell them apart, so the name remembered
    last answers for it.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        # name -> the keys it answers for, in least-recently-used order.
        self._names: OrderedDict[URI, tuple[_Key, ...]] = OrderedDict()
        self._by_key: dict[_Key, URI] = {}

    def remember(self, mapping: GroupMapping) -> None:
        """Remember ``mapping.uri`` as the name of its IPv4 and IPv6 (group, port)."""
        uri = mapping.uri
        keys = _keys(mapping)
        self._names.pop(uri, None)
        self._names[uri] = keys
        for key in keys:
            self._by_key[key] = uri
        while len(self._names) > self._capacity:
            old_uri, old_keys = self._names.popitem(last=False)
            for key in old_keys:
                # A key another name has taken over since stays with that name.
                if self._by_key.get(key) == old_uri:
                    del self._by_key[key]

    def lookup(
        self,
        group: ipaddress.IPv4Address | ipaddress.IPv6Address,
        port: int,
        source: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
    ) -> URI:
        """The name for a datagram sent to ``group``:``port`` (by ``source``).

        A remembered SSM name answers only when the datagram's ``source`` is
        given and matches; otherwise a remembered ASM name; otherwise
        ``URI.for_ip(group, port)``, the name a plain multicast sender
        implicitly used. Raises :class:`~hamcast.errors.InvalidURIError` if
        ``group`` is not a multicast address and no name was remembered for it.
        """
        group = _without_zone(group)
        uri = None
        if source is not None:
            uri = self._by_key.get((group, port, _without_zone(source)))
        if uri is None:
            uri = self._by_key.get((group, port, None))
        if uri is None:
            return URI.for_ip(group, port)
        self._names.move_to_end(uri)
        return uri

    def __len__(self) -> int:
        """Number of names remembered."""
        return len(self._names)


def _keys(mapping: GroupMapping) -> tuple[_Key, ...]:
    source = mapping.source
    v4_source = source if isinstance(source, ipaddress.IPv4Address) else None
    v6_source = source if isinstance(source, ipaddress.IPv6Address) else None
    return (
        (mapping.ipv4, mapping.port, v4_source),
        (_without_zone(mapping.ipv6), mapping.port, v6_source),
    )


def _without_zone(address: _IPAddress) -> _IPAddress:
    # Sockets report link-local addresses with a zone id, and IPv6Address
    # equality compares it; names and keys never carry one.
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(int(address))
    return address
