"""Strict parsers and small builders for the messages discovery observes (no I/O).

Covered:

* IGMP (IPv4, protocol 2): membership queries of versions 1, 2 and 3, version 1
  and 2 reports, version 2 leaves (RFC 1112 Appendix I, RFC 2236 §2, RFC 3376 §4);
* MLD (ICMPv6 types 130, 131, 132, 143): version 1 and 2 queries, version 1
  reports and dones, version 2 reports (RFC 2710 §3, RFC 3810 §5);
* PIM version 2 Hello (IPv4 protocol 103 / IPv6 next header 103), with the
  Holdtime, DR Priority and Generation ID options; other options are skipped by
  their length (RFC 7761 §4.9.2);
* the IPv4 / IPv6 header around them, as a packet socket delivers it.

The contract of every ``parse_*`` function:

* it returns a message object for the messages above;
* it returns ``None`` for well-formed input that discovery does not use
  (another IGMP type such as mtrace, a PIM Join/Prune, an ICMPv6 echo, ...);
* it raises :class:`MalformedPacketError` — and nothing else — for input that
  is truncated, inconsistent or fails its checksum. Random bytes never raise
  ``IndexError`` or ``struct.error``.

Checksums are verified wherever the input allows: IGMP and IPv4 PIM always,
MLD and IPv6 PIM when the caller passes the source and destination address
(their checksum covers an IPv6 pseudo-header), and every message reached
through :func:`parse_packet`, which has the addresses from the IP header.

The builders produce wire-correct messages with valid checksums. Tests use
them; an active prober could, but discovery sends nothing (docs/discovery.md).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hamcast.errors import ProtocolError

__all__ = [
    "GroupRecord",
    "MalformedPacketError",
    "MembershipLeave",
    "MembershipQuery",
    "MembershipReport",
    "MembershipReportV3",
    "Message",
    "Packet",
    "PimHello",
    "Protocol",
    "RecordType",
    "build_igmp_leave",
    "build_igmp_query",
    "build_igmp_report",
    "build_igmpv3_report",
    "build_ipv4_packet",
    "build_ipv6_packet",
    "build_mld_done",
    "build_mld_query",
    "build_mld_report",
    "build_mldv2_report",
    "build_pim_hello",
    "checksum",
    "decode_code8",
    "decode_code16",
    "encode_code8",
    "encode_code16",
    "parse_igmp",
    "parse_ipv4_packet",
    "parse_ipv6_packet",
    "parse_mld",
    "parse_packet",
    "parse_pim",
]

IPPROTO_IGMP = 2
IPPROTO_ICMPV6 = 58
IPPROTO_PIM = 103

# IGMP message types (RFC 3376 §4, RFC 2236 §2.1).
IGMP_QUERY = 0x11
IGMP_V1_REPORT = 0x12
IGMP_V2_REPORT = 0x16
IGMP_V2_LEAVE = 0x17
IGMP_V3_REPORT = 0x22

# ICMPv6 types of MLD (RFC 2710 §3, RFC 3810 §5).
MLD_QUERY = 130
MLD_V1_REPORT = 131
MLD_V1_DONE = 132
MLD_V2_REPORT = 143

PIM_HELLO = 0
# PIM Hello option types (RFC 7761 §4.9.2).
PIM_OPT_HOLDTIME = 1
PIM_OPT_DR_PRIORITY = 19
PIM_OPT_GENERATION_ID = 20

_IPV4_ALL_ZERO = "0.0.0.0"
_IPV6_UNSPECIFIED = "::"
# At most this many IPv6 extension headers are walked; real MLD has exactly one.
_MAX_EXTENSION_HEADERS = 8


class MalformedPacketError(ProtocolError):
    """The bytes are not a well-formed message; ``str()`` says what was wrong.

    The only exception the ``parse_*`` functions raise.
    """


class Protocol(enum.Enum):
    """Which protocol carried a message."""

    IGMP = "igmp"
    MLD = "mld"
    PIM = "pim"


class RecordType(enum.IntEnum):
    """Group record types of IGMPv3 / MLDv2 reports (RFC 3376 §4.2.12, RFC 3810 §5.2.12)."""

    MODE_IS_INCLUDE = 1
    MODE_IS_EXCLUDE = 2
    CHANGE_TO_INCLUDE_MODE = 3
    CHANGE_TO_EXCLUDE_MODE = 4
    ALLOW_NEW_SOURCES = 5
    BLOCK_OLD_SOURCES = 6


@dataclass(frozen=True, slots=True)
class MembershipQuery:
    """An IGMP or MLD membership query.

    ``version`` is the IGMP (1, 2, 3) or MLD (1, 2) version the message format
    belongs to. ``group`` is ``None`` for a general query. ``max_response_time``
    is in seconds (0.0 for an IGMPv1 query, which carries none).
    ``robustness`` (QRV) and ``query_interval`` (QQI, seconds) are carried by
    IGMPv3 / MLDv2 queries only; 0 means "not carried".
    """

    protocol: Protocol
    version: int
    group: str | None
    max_response_time: float
    sources: tuple[str, ...] = ()
    suppress_router_processing: bool = False
    robustness: int = 0
    query_interval: float = 0.0


@dataclass(frozen=True, slots=True)
class MembershipReport:
    """An IGMPv1/v2 or MLDv1 report: the sender listens to ``group`` (any source)."""

    protocol: Protocol
    version: int
    group: str


@dataclass(frozen=True, slots=True)
class MembershipLeave:
    """An IGMPv2 Leave Group or MLDv1 Done: the sender stopped listening to ``group``."""

    protocol: Protocol
    version: int
    group: str


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """One record of an IGMPv3 / MLDv2 report.

    ``record_type`` is an int so that unknown types survive parsing (receivers
    ignore them, RFC 3376 §4.2.12); compare it with :class:`RecordType`.
    """

    record_type: int
    group: str
    sources: tuple[str, ...] = ()
    aux_data: bytes = b""


@dataclass(frozen=True, slots=True)
class MembershipReportV3:
    """An IGMPv3 (``version`` 3) or MLDv2 (``version`` 2) report."""

    protocol: Protocol
    version: int
    records: tuple[GroupRecord, ...]


@dataclass(frozen=True, slots=True)
class PimHello:
    """A PIMv2 Hello (RFC 7761 §4.9.2).

    ``holdtime`` is in seconds; ``None`` when the option is absent (the
    receiver then applies the default), ``0`` means "forget me now" and
    ``0xFFFF`` "never time out". ``option_types`` lists every option type seen,
    in order, including the skipped ones.
    """

    holdtime: int | None
    dr_priority: int | None = None
    generation_id: int | None = None
    option_types: tuple[int, ...] = ()


Message = MembershipQuery | MembershipReport | MembershipLeave | MembershipReportV3 | PimHello


@dataclass(frozen=True, slots=True)
class Packet:
    """A discovery message with the IP header facts around it.

    ``ttl`` is the IPv4 TTL or IPv6 hop limit; ``router_alert`` whether the IP
    Router Alert option was present (RFC 2113 / RFC 2711).
    """

    source: str
    destination: str
    ttl: int
    router_alert: bool
    message: Message


# --- helpers -----------------------------------------------------------------


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of ``data``: 0 when data includes a valid one."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv6_pseudo_header(source: str, destination: str, length: int, next_header: int) -> bytes:
    """The pseudo-header of RFC 8200 §8.1 that ICMPv6 and PIM checksums cover."""
    try:
        src = ipaddress.IPv6Address(source).packed
        dst = ipaddress.IPv6Address(destination).packed
    except ValueError as exc:
        raise MalformedPacketError(
            f"not an IPv6 address pair: {source!r}, {destination!r}"
        ) from exc
    return src + dst + struct.pack("!IxxxB", length, next_header)


# IGMPv3 and MLDv2 share one floating-point format for codes past a
# threshold: 1 | exponent (3 bits) | mantissa, value = (1 mantissa) << (exponent + 3).
# Only the mantissa width differs (4 bits in 8-bit codes, 12 in 16-bit ones).


def _decode_float(code: int, mantissa_bits: int) -> int:
    if code < 1 << (mantissa_bits + 3):
        return code
    mantissa = code & ((1 << mantissa_bits) - 1)
    exponent = (code >> mantissa_bits) & 0x07
    return (mantissa | 1 << mantissa_bits) << (exponent + 3)


def _encode_float(value: int, mantissa_bits: int) -> int:
    if value < 0:
        raise ValueError("code values are not negative")
    if value < 1 << (mantissa_bits + 3):
        return value
    for exponent in range(8):
        mantissa = value >> (exponent + 3)
        if mantissa < 1 << (mantissa_bits + 1):
            return (
                1 << (mantissa_bits + 3)
                | exponent << mantissa_bits
                | (mantissa & ((1 << mantissa_bits) - 1))
            )
    return (1 << (mantissa_bits + 4)) - 1


def decode_code8(code: int) -> int:
    """Decode an 8-bit Max Resp Code / QQIC (RFC 3376 §4.1.1, §4.1.7; RFC 3810 §5.1.9)."""
    return _decode_float(code, 4)


def encode_code8(value: int) -> int:
    """The 8-bit code for ``value`` (rounded down; saturates at 31744)."""
    return _encode_float(value, 4)


def decode_code16(code: int) -> int:
    """Decode MLDv2's 16-bit Maximum Response Code (RFC 3810 §5.1.3), in milliseconds."""
    return _decode_float(code, 12)


def encode_code16(value: int) -> int:
    """The 16-bit code for ``value`` milliseconds (rounded down; saturates)."""
    return _encode_float(value, 12)


def _ipv4(data: bytes, offset: int) -> str:
    return str(ipaddress.IPv4Address(data[offset : offset + 4]))


def _ipv6(data: bytes, offset: int) -> str:
    return str(ipaddress.IPv6Address(data[offset : offset + 16]))


def _ipv4_group(data: bytes, offset: int, what: str) -> str:
    group = ipaddress.IPv4Address(data[offset : offset + 4])
    if not group.is_multicast:
        raise MalformedPacketError(f"{what}: {group} is not a multicast address")
    return str(group)


def _ipv6_group(data: bytes, offset: int, what: str) -> str:
    group = ipaddress.IPv6Address(data[offset : offset + 16])
    if not group.is_multicast:
        raise MalformedPacketError(f"{what}: {group} is not a multicast address")
    return str(group)


def _need(data: bytes, length: int, what: str) -> None:
    if len(data) < length:
        raise MalformedPacketError(f"{what}: {len(data)} bytes, need at least {length}")


# --- IGMP --------------------------------------------------------------------


def parse_igmp(data: bytes) -> Message | None:
    """Parse one IGMP message (the IPv4 payload); see the module docstring for the contract."""
    data = bytes(data)
    _need(data, 8, "IGMP message")
    kind = data[0]
    if kind not in (IGMP_QUERY, IGMP_V1_REPORT, IGMP_V2_REPORT, IGMP_V2_LEAVE, IGMP_V3_REPORT):
        # mtrace, DVMRP, MRD, PIMv1...: not ours. RFC 3376 §4: ignore unknown types.
        return None
    # The checksum covers the whole IP payload, not just the first 8 bytes (RFC 2236 §2.3).
    if checksum(data) != 0:
        raise MalformedPacketError(f"IGMP type {kind:#04x}: bad checksum")
    if kind == IGMP_QUERY:
        return _parse_igmp_query(data)
    if kind == IGMP_V3_REPORT:
        return _parse_igmpv3_report(data)
    group = _ipv4_group(data, 4, f"IGMP type {kind:#04x}")
    if kind == IGMP_V2_LEAVE:
        return MembershipLeave(Protocol.IGMP, 2, group)
    return MembershipReport(Protocol.IGMP, 1 if kind == IGMP_V1_REPORT else 2, group)


def _parse_igmp_query(data: bytes) -> MembershipQuery:
    # RFC 3376 §7.1: the version of a query follows from its length and code.
    code = data[1]
    if len(data) == 8:
        if code == 0:
            # IGMPv1 (RFC 1112): no group-specific queries, the group field is ignored.
            return MembershipQuery(Protocol.IGMP, 1, None, 0.0)
        group = _query_group_v4(data)
        return MembershipQuery(Protocol.IGMP, 2, group, code / 10)
    if len(data) < 12:
        raise MalformedPacketError(f"IGMP query of {len(data)} bytes (8 or at least 12)")
    group = _query_group_v4(data)
    flags = data[8]
    count = struct.unpack_from("!H", data, 10)[0]
    _need(data, 12 + 4 * count, f"IGMPv3 query with {count} sources")
    # Anything after the sources is covered by the checksum and otherwise
    # ignored (RFC 3376 §4.1.10).
    sources = tuple(_ipv4(data, 12 + 4 * i) for i in range(count))
    return MembershipQuery(
        Protocol.IGMP,
        3,
        group,
        decode_code8(code) / 10,
        sources,
        suppress_router_processing=bool(flags & 0x08),
        robustness=flags & 0x07,
        query_interval=float(decode_code8(data[9])),
    )


def _query_group_v4(data: bytes) -> str | None:
    if data[4:8] == b"\x00\x00\x00\x00":
        return None
    return _ipv4_group(data, 4, "IGMP query")


def _parse_igmpv3_report(data: bytes) -> MembershipReportV3:
    count = struct.unpack_from("!H", data, 6)[0]
    records = []
    offset = 8
    for index in range(count):
        what = f"IGMPv3 report record {index}"
        _need(data, offset + 8, what)
        record_type, aux_words, sources = struct.unpack_from("!BBH", data, offset)
        end = offset + 8 + 4 * sources + 4 * aux_words
        _need(data, end, what)
        group = _ipv4_group(data, offset + 4, what)
        source_list = tuple(_ipv4(data, offset + 8 + 4 * i) for i in range(sources))
        aux = data[offset + 8 + 4 * sources : end]
        records.append(GroupRecord(record_type, group, source_list, aux))
        offset = end
    if offset != len(data):
        raise MalformedPacketError(
            f"IGMPv3 report: {len(data) - offset} bytes after the {count} records"
        )
    return MembershipReportV3(Protocol.IGMP, 3, tuple(records))


def _finish_igmp(message: bytearray) -> bytes:
    struct.pack_into("!H", message, 2, checksum(message))
    return bytes(message)


def build_igmp_query(
    version: int = 3,
    *,
    group: str | None = None,
    max_response_time: float = 10.0,
    sources: Sequence[str] = (),
    robustness: int = 2,
    query_interval: float = 125.0,
    suppress_router_processing: bool = False,
) -> bytes:
    """An IGMP membership query of ``version`` 1, 2 or 3 (the IPv4 payload)."""
    address = ipaddress.IPv4Address(group or _IPV4_ALL_ZERO).packed
    if version == 1:
        return _finish_igmp(bytearray(struct.pack("!BBH4s", IGMP_QUERY, 0, 0, b"\0" * 4)))
    if version == 2:
        code = max(1, min(255, round(max_response_time * 10)))
        return _finish_igmp(bytearray(struct.pack("!BBH4s", IGMP_QUERY, code, 0, address)))
    if version != 3:
        raise ValueError(f"IGMP has versions 1, 2 and 3, not {version}")
    flags = (0x08 if suppress_router_processing else 0) | (robustness if robustness <= 7 else 0)
    message = bytearray(
        struct.pack(
            "!BBH4sBBH",
            IGMP_QUERY,
            encode_code8(round(max_response_time * 10)),
            0,
            address,
            flags,
            encode_code8(round(query_interval)),
            len(sources),
        )
    )
    for source in sources:
        message += ipaddress.IPv4Address(source).packed
    return _finish_igmp(message)


def build_igmp_report(group: str, version: int = 2) -> bytes:
    """An IGMPv1 or IGMPv2 membership report for ``group``."""
    kind = {1: IGMP_V1_REPORT, 2: IGMP_V2_REPORT}[version]
    address = ipaddress.IPv4Address(group).packed
    return _finish_igmp(bytearray(struct.pack("!BBH4s", kind, 0, 0, address)))


def build_igmp_leave(group: str) -> bytes:
    """An IGMPv2 Leave Group for ``group``."""
    address = ipaddress.IPv4Address(group).packed
    return _finish_igmp(bytearray(struct.pack("!BBH4s", IGMP_V2_LEAVE, 0, 0, address)))


def build_igmpv3_report(records: Iterable[GroupRecord]) -> bytes:
    """An IGMPv3 membership report with ``records``."""
    body = bytearray()
    count = 0
    for record in records:
        body += _record_bytes(record, ipaddress.IPv4Address)
        count += 1
    message = bytearray(struct.pack("!BBHHH", IGMP_V3_REPORT, 0, 0, 0, count)) + body
    return _finish_igmp(message)


def _record_bytes(
    record: GroupRecord, address: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]
) -> bytes:
    if len(record.aux_data) % 4:
        raise ValueError("auxiliary data is a whole number of 32-bit words")
    out = bytearray(
        struct.pack("!BBH", record.record_type, len(record.aux_data) // 4, len(record.sources))
    )
    out += address(record.group).packed
    for source in record.sources:
        out += address(source).packed
    out += record.aux_data
    return bytes(out)


# --- MLD ---------------------------------------------------------------------


def parse_mld(
    data: bytes, source: str | None = None, destination: str | None = None
) -> Message | None:
    """Parse one ICMPv6 message as MLD; the checksum is verified when both addresses are given.

    Other ICMPv6 types return ``None``.
    """
    data = bytes(data)
    _need(data, 4, "ICMPv6 message")
    kind = data[0]
    if kind not in (MLD_QUERY, MLD_V1_REPORT, MLD_V1_DONE, MLD_V2_REPORT):
        return None
    if source is not None and destination is not None:
        pseudo = _ipv6_pseudo_header(source, destination, len(data), IPPROTO_ICMPV6)
        if checksum(pseudo + data) != 0:
            raise MalformedPacketError(f"ICMPv6 type {kind}: bad checksum")
    if kind == MLD_QUERY:
        return _parse_mld_query(data)
    if kind == MLD_V2_REPORT:
        return _parse_mldv2_report(data)
    _need(data, 24, f"MLDv1 message type {kind}")
    group = _ipv6_group(data, 8, f"MLDv1 message type {kind}")
    if kind == MLD_V1_DONE:
        return MembershipLeave(Protocol.MLD, 1, group)
    return MembershipReport(Protocol.MLD, 1, group)


def _query_group_v6(data: bytes) -> str | None:
    if data[8:24] == b"\x00" * 16:
        return None
    return _ipv6_group(data, 8, "MLD query")


def _parse_mld_query(data: bytes) -> MembershipQuery:
    # RFC 3810 §8.1: 24 bytes is MLDv1, 28 or more MLDv2, anything else is ignored.
    if len(data) == 24:
        delay = struct.unpack_from("!H", data, 4)[0]
        return MembershipQuery(Protocol.MLD, 1, _query_group_v6(data), delay / 1000)
    if len(data) < 28:
        raise MalformedPacketError(f"MLD query of {len(data)} bytes (24 or at least 28)")
    code = struct.unpack_from("!H", data, 4)[0]
    group = _query_group_v6(data)
    flags, qqic, count = struct.unpack_from("!BBH", data, 24)
    _need(data, 28 + 16 * count, f"MLDv2 query with {count} sources")
    sources = tuple(_ipv6(data, 28 + 16 * i) for i in range(count))
    return MembershipQuery(
        Protocol.MLD,
        2,
        group,
        decode_code16(code) / 1000,
        sources,
        suppress_router_processing=bool(flags & 0x08),
        robustness=flags & 0x07,
        query_interval=float(decode_code8(qqic)),
    )


def _parse_mldv2_report(data: bytes) -> MembershipReportV3:
    _need(data, 8, "MLDv2 report")
    count = struct.unpack_from("!H", data, 6)[0]
    records = []
    offset = 8
    for index in range(count):
        what = f"MLDv2 report record {index}"
        _need(data, offset + 20, what)
        record_type, aux_words, sources = struct.unpack_from("!BBH", data, offset)
        end = offset + 20 + 16 * sources + 4 * aux_words
        _need(data, end, what)
        group = _ipv6_group(data, offset + 4, what)
        source_list = tuple(_ipv6(data, offset + 20 + 16 * i) for i in range(sources))
        aux = data[offset + 20 + 16 * sources : end]
        records.append(GroupRecord(record_type, group, source_list, aux))
        offset = end
    if offset != len(data):
        raise MalformedPacketError(
            f"MLDv2 report: {len(data) - offset} bytes after the {count} records"
        )
    return MembershipReportV3(Protocol.MLD, 2, tuple(records))


def _finish_icmpv6(message: bytearray, source: str, destination: str) -> bytes:
    pseudo = _ipv6_pseudo_header(source, destination, len(message), IPPROTO_ICMPV6)
    struct.pack_into("!H", message, 2, checksum(pseudo + message))
    return bytes(message)


def build_mld_query(
    source: str,
    destination: str = "ff02::1",
    *,
    version: int = 2,
    group: str | None = None,
    max_response_time: float = 10.0,
    sources: Sequence[str] = (),
    robustness: int = 2,
    query_interval: float = 125.0,
    suppress_router_processing: bool = False,
) -> bytes:
    """An MLDv1 or MLDv2 query (the ICMPv6 message, checksummed for ``source``/``destination``)."""
    address = ipaddress.IPv6Address(group or _IPV6_UNSPECIFIED).packed
    millis = round(max_response_time * 1000)
    if version == 1:
        message = bytearray(
            struct.pack("!BBHHH16s", MLD_QUERY, 0, 0, min(millis, 0xFFFF), 0, address)
        )
        return _finish_icmpv6(message, source, destination)
    if version != 2:
        raise ValueError(f"MLD has versions 1 and 2, not {version}")
    flags = (0x08 if suppress_router_processing else 0) | (robustness if robustness <= 7 else 0)
    message = bytearray(
        struct.pack(
            "!BBHHH16sBBH",
            MLD_QUERY,
            0,
            0,
            encode_code16(millis),
            0,
            address,
            flags,
            encode_code8(round(query_interval)),
            len(sources),
        )
    )
    for item in sources:
        message += ipaddress.IPv6Address(item).packed
    return _finish_icmpv6(message, source, destination)


def build_mld_report(source: str, group: str, destination: str | None = None) -> bytes:
    """An MLDv1 report for ``group`` (sent to the group itself by default)."""
    message = bytearray(
        struct.pack("!BBHHH16s", MLD_V1_REPORT, 0, 0, 0, 0, ipaddress.IPv6Address(group).packed)
    )
    return _finish_icmpv6(message, source, destination or group)


def build_mld_done(source: str, group: str, destination: str = "ff02::2") -> bytes:
    """An MLDv1 Done for ``group`` (sent to all-routers by default)."""
    message = bytearray(
        struct.pack("!BBHHH16s", MLD_V1_DONE, 0, 0, 0, 0, ipaddress.IPv6Address(group).packed)
    )
    return _finish_icmpv6(message, source, destination)


def build_mldv2_report(
    source: str, records: Iterable[GroupRecord], destination: str = "ff02::16"
) -> bytes:
    """An MLDv2 report with ``records`` (to all-MLDv2-routers by default)."""
    body = bytearray()
    count = 0
    for record in records:
        body += _record_bytes(record, ipaddress.IPv6Address)
        count += 1
    message = bytearray(struct.pack("!BBHHH", MLD_V2_REPORT, 0, 0, 0, count)) + body
    return _finish_icmpv6(message, source, destination)


# --- PIM ---------------------------------------------------------------------


def parse_pim(
    data: bytes,
    source: str | None = None,
    destination: str | None = None,
    *,
    ipv6: bool = False,
) -> PimHello | None:
    """Parse a PIM message; only version 2 Hellos are returned, other types give ``None``.

    The IPv4 checksum covers the message alone and is always verified; the
    IPv6 one covers a pseudo-header too (RFC 7761 §4.9) and is verified when
    both addresses are given.
    """
    data = bytes(data)
    _need(data, 4, "PIM message")
    version, kind = data[0] >> 4, data[0] & 0x0F
    if version != 2 or kind != PIM_HELLO:
        return None
    if ipv6:
        if source is not None and destination is not None:
            pseudo = _ipv6_pseudo_header(source, destination, len(data), IPPROTO_PIM)
            if checksum(pseudo + data) != 0:
                raise MalformedPacketError("PIM Hello: bad checksum")
    elif checksum(data) != 0:
        raise MalformedPacketError("PIM Hello: bad checksum")
    holdtime: int | None = None
    dr_priority: int | None = None
    generation_id: int | None = None
    seen: list[int] = []
    offset = 4
    while offset < len(data):
        _need(data, offset + 4, "PIM Hello option header")
        option, length = struct.unpack_from("!HH", data, offset)
        _need(data, offset + 4 + length, f"PIM Hello option {option}")
        value = data[offset + 4 : offset + 4 + length]
        if option == PIM_OPT_HOLDTIME:
            holdtime = _fixed_option(value, 2, "Holdtime")
        elif option == PIM_OPT_DR_PRIORITY:
            dr_priority = _fixed_option(value, 4, "DR Priority")
        elif option == PIM_OPT_GENERATION_ID:
            generation_id = _fixed_option(value, 4, "Generation ID")
        # Every other option (LAN Prune Delay, Address List, vendor ones) is
        # skipped by its length, as RFC 7761 §4.9.2 asks of unknown options.
        seen.append(option)
        offset += 4 + length
    return PimHello(holdtime, dr_priority, generation_id, tuple(seen))


def _fixed_option(value: bytes, size: int, name: str) -> int:
    if len(value) != size:
        raise MalformedPacketError(f"PIM Hello {name} option of {len(value)} bytes, not {size}")
    return int.from_bytes(value, "big")


def build_pim_hello(
    holdtime: int | None = 105,
    *,
    dr_priority: int | None = None,
    generation_id: int | None = None,
    extra_options: Iterable[tuple[int, bytes]] = (),
    source: str | None = None,
    destination: str = "ff02::d",
) -> bytes:
    """A PIMv2 Hello; with an IPv6 ``source`` the checksum covers the IPv6 pseudo-header."""
    body = bytearray()
    if holdtime is not None:
        body += struct.pack("!HHH", PIM_OPT_HOLDTIME, 2, holdtime)
    if dr_priority is not None:
        body += struct.pack("!HHI", PIM_OPT_DR_PRIORITY, 4, dr_priority)
    if generation_id is not None:
        body += struct.pack("!HHI", PIM_OPT_GENERATION_ID, 4, generation_id)
    for option, value in extra_options:
        body += struct.pack("!HH", option, len(value)) + value
    message = bytearray(struct.pack("!BBH", 0x20 | PIM_HELLO, 0, 0)) + body
    if source is not None and ipaddress.ip_address(source).version == 6:
        pseudo = _ipv6_pseudo_header(source, destination, len(message), IPPROTO_PIM)
        struct.pack_into("!H", message, 2, checksum(pseudo + message))
    else:
        struct.pack_into("!H", message, 2, checksum(message))
    return bytes(message)


# --- IP headers ----------------------------------------------------------------


def parse_packet(data: bytes) -> Packet | None:
    """Parse an IPv4 or IPv6 packet (by its version nibble) carrying a discovery message."""
    data = bytes(data)
    _need(data, 1, "IP packet")
    version = data[0] >> 4
    if version == 4:
        return parse_ipv4_packet(data)
    if version == 6:
        return parse_ipv6_packet(data)
    raise MalformedPacketError(f"IP version {version}")


def parse_ipv4_packet(data: bytes) -> Packet | None:
    """Parse an IPv4 packet carrying IGMP or PIM; ``None`` for other protocols and types.

    Trailing bytes beyond the IP total length (Ethernet padding) are dropped.
    Fragments are malformed here: IGMP and PIM Hellos are never fragmented.
    IGMP and PIM Hellos must arrive with TTL 1 (RFC 2236 §2, RFC 3376 §4,
    RFC 7761 §4.9): anything else was forwarded or forged.
    """
    data = bytes(data)
    _need(data, 20, "IPv4 header")
    if data[0] >> 4 != 4:
        raise MalformedPacketError(f"IP version {data[0] >> 4} in an IPv4 packet")
    header_length = (data[0] & 0x0F) * 4
    total_length, fragment, ttl, protocol = struct.unpack_from("!H2xHBB", data, 2)
    if header_length < 20 or total_length < header_length or total_length > len(data):
        raise MalformedPacketError(
            f"IPv4 lengths inconsistent: header {header_length}, total {total_length}, "
            f"captured {len(data)}"
        )
    if checksum(data[:header_length]) != 0:
        raise MalformedPacketError("IPv4 header: bad checksum")
    if fragment & 0x3FFF:
        raise MalformedPacketError("IPv4 fragment")
    if protocol not in (IPPROTO_IGMP, IPPROTO_PIM):
        return None
    source = ipaddress.IPv4Address(data[12:16])
    destination = ipaddress.IPv4Address(data[16:20])
    if source.is_multicast or source == ipaddress.IPv4Address("255.255.255.255"):
        raise MalformedPacketError(f"IPv4 source {source} is not a unicast address")
    router_alert = _ipv4_router_alert(data[20:header_length])
    payload = data[header_length:total_length]
    message = parse_igmp(payload) if protocol == IPPROTO_IGMP else parse_pim(payload)
    if message is None:
        return None
    if ttl != 1:
        raise MalformedPacketError(f"{_name(message)} with TTL {ttl}, not 1")
    return Packet(str(source), str(destination), ttl, router_alert, message)


def _ipv4_router_alert(options: bytes) -> bool:
    offset = 0
    while offset < len(options):
        kind = options[offset]
        if kind == 0:  # end of options
            return False
        if kind == 1:  # no-op, a single byte
            offset += 1
            continue
        if offset + 1 >= len(options) or options[offset + 1] < 2:
            raise MalformedPacketError("IPv4 options truncated")
        if kind == 0x94:  # Router Alert, RFC 2113
            return True
        offset += options[offset + 1]
    return False


def parse_ipv6_packet(data: bytes) -> Packet | None:
    """Parse an IPv6 packet carrying MLD or PIM; ``None`` for anything else.

    MLD must come from a link-local source (reports also from ``::``) with hop
    limit 1 (RFC 2710 §3, RFC 3810 §5 and §5.2.13); IPv6 PIM Hellos from a
    link-local source with hop limit 1 (RFC 7761 §4.9).
    """
    data = bytes(data)
    _need(data, 40, "IPv6 header")
    if data[0] >> 4 != 6:
        raise MalformedPacketError(f"IP version {data[0] >> 4} in an IPv6 packet")
    payload_length, next_header, hop_limit = struct.unpack_from("!HBB", data, 4)
    if payload_length == 0:
        raise MalformedPacketError("IPv6 jumbogram or empty payload")
    end = 40 + payload_length
    _need(data, end, "IPv6 packet")
    source = ipaddress.IPv6Address(data[8:24])
    destination = ipaddress.IPv6Address(data[24:40])
    if source.is_multicast:
        raise MalformedPacketError(f"IPv6 source {source} is a multicast address")
    offset = 40
    router_alert = False
    for index in range(_MAX_EXTENSION_HEADERS + 1):
        if next_header in (IPPROTO_ICMPV6, IPPROTO_PIM):
            break
        if next_header == 0 and index == 0:
            _need(data[:end], offset + 8, "IPv6 hop-by-hop header")
            length = (data[offset + 1] + 1) * 8
            _need(data[:end], offset + length, "IPv6 hop-by-hop header")
            router_alert = _ipv6_router_alert(data[offset + 2 : offset + length])
        elif next_header in (43, 60):  # routing, destination options
            _need(data[:end], offset + 8, f"IPv6 extension header {next_header}")
            length = (data[offset + 1] + 1) * 8
            _need(data[:end], offset + length, f"IPv6 extension header {next_header}")
        elif next_header == 44:
            raise MalformedPacketError("IPv6 fragment")
        elif next_header == 0:
            raise MalformedPacketError("IPv6 hop-by-hop header not first")
        else:
            return None
        next_header = data[offset]
        offset += length
    else:
        raise MalformedPacketError("too many IPv6 extension headers")
    payload = data[offset:end]
    src, dst = str(source), str(destination)
    message: Message | None
    if next_header == IPPROTO_ICMPV6:
        message = parse_mld(payload, src, dst)
    else:
        message = parse_pim(payload, src, dst, ipv6=True)
    if message is None:
        return None
    if hop_limit != 1:
        raise MalformedPacketError(f"{_name(message)} with hop limit {hop_limit}, not 1")
    reports = (MembershipReport, MembershipLeave, MembershipReportV3)
    if not source.is_link_local and not (source.is_unspecified and isinstance(message, reports)):
        raise MalformedPacketError(f"{_name(message)} from {source}, not a link-local address")
    return Packet(src, dst, hop_limit, router_alert, message)


def _ipv6_router_alert(options: bytes) -> bool:
    offset = 0
    found = False
    while offset < len(options):
        kind = options[offset]
        if kind == 0:  # Pad1
            offset += 1
            continue
        if offset + 1 >= len(options) or offset + 2 + options[offset + 1] > len(options):
            raise MalformedPacketError("IPv6 hop-by-hop options truncated")
        if kind == 5:  # Router Alert, RFC 2711
            found = True
        offset += 2 + options[offset + 1]
    return found


def _name(message: Message) -> str:
    if isinstance(message, PimHello):
        return "PIM Hello"
    return f"{message.protocol.value.upper()}v{message.version} {type(message).__name__}"


def build_ipv4_packet(
    source: str,
    destination: str,
    protocol: int,
    payload: bytes,
    *,
    ttl: int = 1,
    router_alert: bool = True,
) -> bytes:
    """An IPv4 packet around ``payload`` (with the Router Alert option by default)."""
    options = b"\x94\x04\x00\x00" if router_alert else b""
    header_length = 20 + len(options)
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | header_length // 4,
            0xC0,  # precedence Internetwork Control, as RFC 3376 §4 asks
            header_length + len(payload),
            0,
            0,
            ttl,
            protocol,
            0,
            ipaddress.IPv4Address(source).packed,
            ipaddress.IPv4Address(destination).packed,
        )
    )
    header += options
    struct.pack_into("!H", header, 10, checksum(header))
    return bytes(header) + payload


def build_ipv6_packet(
    source: str,
    destination: str,
    next_header: int,
    payload: bytes,
    *,
    hop_limit: int = 1,
    router_alert: bool = True,
) -> bytes:
    """An IPv6 packet around ``payload`` (with a hop-by-hop Router Alert by default)."""
    extension = b""
    first = next_header
    if router_alert:
        # Next header, length 0 (8 bytes), Router Alert "MLD" (value 0), PadN of 2.
        extension = struct.pack("!BBBBHBB", next_header, 0, 5, 2, 0, 1, 0)
        first = 0
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(extension) + len(payload),
        first,
        hop_limit,
        ipaddress.IPv6Address(source).packed,
        ipaddress.IPv6Address(destination).packed,
    )
    return header + extension + payload
