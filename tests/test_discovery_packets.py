"""Parsers and builders of hamcast.discovery.packets: real captures, round trips, fuzz."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.discovery import packets as p
from hamcast.discovery.packets import (
    GroupRecord,
    MalformedPacketError,
    MembershipLeave,
    MembershipQuery,
    MembershipReport,
    MembershipReportV3,
    PimHello,
    Protocol,
    RecordType,
)

LL_A = "fe80::1"
LL_B = "fe80::2"

# --- real packets, captured with the discovery packet socket in namespaces ------
# (pimd 2.3.2 as router, Linux 6.x hosts, a Linux bridge as MLD querier)

PIMD_HELLO = (
    "4500002e000100000167cf0d0a4d0001e000000d20008c6900010002006900130004000000010014000472b4e045"
)
PIMD_GOODBYE = (
    "4500002e000200000167cf0c0a4d0001e000000d20008cd200010002000000130004000000010014000472b4e045"
)
PIMD_V3_GENERAL_QUERY = "46c000245ae200000102dee20a4d0001e0000001940400001164ec960000000002050000"
PIMD_V2_GROUP_QUERY = "46c00020ce00000001025ac50a4d0001ef02020294040000110afdf0ef020202"
LINUX_V3_JOIN = "46c00028000040000102f9a90a4d0003e0000016940400002200e9fb0000000104000000ef010101"
LINUX_V3_LEAVE = "46c00028000040000102f9a90a4d0003e0000016940400002200eafb0000000103000000ef010101"
LINUX_V2_REPORT = "46c00020000040000102e8c30a4d0003ef020202940400001600f8faef020202"
LINUX_V1_REPORT = "46c00020000040000102e6bf0a4d0003ef040404940400001200faf6ef040404"
LINUX_V2_LEAVE = "46c00020000040000102f9c50a4d0003e0000002940400001700f7faef020202"
BRIDGE_V3_REPORT_FROM_ZERO = (
    "46c0002800004000010203fa00000000e0000016940400002200fb930000000102000000e000006a"
)
BRIDGE_MLDV2_QUERY = (
    "6000000000240001fe80000000000000445e03fffe9ccb08ff020000000000000000000000000001"
    "3a000502000000008200450c271000000000000000000000000000000000000002050000"
)
LINUX_MLDV2_JOIN = (
    "6000000000240001fe80000000000000ec6d09fffe6ce479ff020000000000000000000000000016"
    "3a000502000001008f0096790000000104000000ff3e0000000000000000000000010001"
)
LINUX_MLDV1_REPORT = (
    "6000000000200001fe80000000000000ec6d09fffe6ce479ff3e0000000000000000000000020002"
    "3a000502000001008300a65200000000ff3e0000000000000000000000020002"
)
LINUX_MLDV1_DONE = (
    "6000000000200001fe80000000000000ec6d09fffe6ce479ff020000000000000000000000000002"
    "3a000502000001008400a59000000000ff3e0000000000000000000000020002"
)


def _packet(hexdata: str) -> p.Packet:
    packet = p.parse_packet(bytes.fromhex(hexdata))
    assert packet is not None
    return packet


def test_real_pimd_hello() -> None:
    packet = _packet(PIMD_HELLO)
    assert packet.source == "10.77.0.1"
    assert packet.destination == "224.0.0.13"
    assert packet.message == PimHello(105, 1, 0x72B4E045, (1, 19, 20))


def test_real_pimd_goodbye_has_holdtime_zero() -> None:
    message = _packet(PIMD_GOODBYE).message
    assert isinstance(message, PimHello)
    assert message.holdtime == 0


def test_real_pimd_queries() -> None:
    general = _packet(PIMD_V3_GENERAL_QUERY)
    assert general.router_alert
    assert general.message == MembershipQuery(
        Protocol.IGMP, 3, None, 10.0, (), False, robustness=2, query_interval=5.0
    )
    specific = _packet(PIMD_V2_GROUP_QUERY).message
    assert specific == MembershipQuery(Protocol.IGMP, 2, "239.2.2.2", 1.0)


def test_real_linux_igmp_reports() -> None:
    join = _packet(LINUX_V3_JOIN).message
    assert join == MembershipReportV3(
        Protocol.IGMP, 3, (GroupRecord(RecordType.CHANGE_TO_EXCLUDE_MODE, "239.1.1.1"),)
    )
    leave = _packet(LINUX_V3_LEAVE).message
    assert isinstance(leave, MembershipReportV3)
    assert leave.records[0].record_type == RecordType.CHANGE_TO_INCLUDE_MODE
    assert _packet(LINUX_V2_REPORT).message == MembershipReport(Protocol.IGMP, 2, "239.2.2.2")
    assert _packet(LINUX_V1_REPORT).message == MembershipReport(Protocol.IGMP, 1, "239.4.4.4")
    assert _packet(LINUX_V2_LEAVE).message == MembershipLeave(Protocol.IGMP, 2, "239.2.2.2")
    from_zero = _packet(BRIDGE_V3_REPORT_FROM_ZERO)
    assert from_zero.source == "0.0.0.0"


def test_real_mld() -> None:
    query = _packet(BRIDGE_MLDV2_QUERY)
    assert query.source == "fe80::445e:3ff:fe9c:cb08"
    assert query.router_alert
    assert query.message == MembershipQuery(
        Protocol.MLD, 2, None, 10.0, (), False, robustness=2, query_interval=5.0
    )
    join = _packet(LINUX_MLDV2_JOIN).message
    assert join == MembershipReportV3(
        Protocol.MLD, 2, (GroupRecord(RecordType.CHANGE_TO_EXCLUDE_MODE, "ff3e::1:1"),)
    )
    assert _packet(LINUX_MLDV1_REPORT).message == MembershipReport(Protocol.MLD, 1, "ff3e::2:2")
    assert _packet(LINUX_MLDV1_DONE).message == MembershipLeave(Protocol.MLD, 1, "ff3e::2:2")


def test_ethernet_padding_is_ignored() -> None:
    # Cooked packet sockets hand up the frame's minimum-size padding too.
    padded = bytes.fromhex(LINUX_V2_REPORT) + b"\x00" * 14
    assert _packet(padded.hex()).message == MembershipReport(Protocol.IGMP, 2, "239.2.2.2")


# --- IGMP ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (p.build_igmp_query(1), MembershipQuery(Protocol.IGMP, 1, None, 0.0)),
        (
            p.build_igmp_query(2, max_response_time=10.0),
            MembershipQuery(Protocol.IGMP, 2, None, 10.0),
        ),
        (
            p.build_igmp_query(2, group="239.1.2.3", max_response_time=1.0),
            MembershipQuery(Protocol.IGMP, 2, "239.1.2.3", 1.0),
        ),
        (
            p.build_igmp_query(
                3,
                group="232.1.1.1",
                max_response_time=25.6,
                sources=("10.0.0.1", "10.0.0.2"),
                robustness=3,
                query_interval=200,
                suppress_router_processing=True,
            ),
            MembershipQuery(
                Protocol.IGMP, 3, "232.1.1.1", 25.6, ("10.0.0.1", "10.0.0.2"), True, 3, 200.0
            ),
        ),
        (p.build_igmp_report("239.1.1.1", 1), MembershipReport(Protocol.IGMP, 1, "239.1.1.1")),
        (p.build_igmp_report("239.1.1.1"), MembershipReport(Protocol.IGMP, 2, "239.1.1.1")),
        (p.build_igmp_leave("239.1.1.1"), MembershipLeave(Protocol.IGMP, 2, "239.1.1.1")),
    ],
)
def test_igmp_round_trip(message: bytes, expected: p.Message) -> None:
    assert p.parse_igmp(message) == expected


def test_igmpv3_report_round_trip_with_aux_data_and_unknown_type() -> None:
    records = (
        GroupRecord(RecordType.MODE_IS_INCLUDE, "232.1.1.1", ("10.0.0.1",)),
        GroupRecord(RecordType.BLOCK_OLD_SOURCES, "232.1.1.2", ("10.0.0.1", "10.0.0.9")),
        GroupRecord(9, "239.9.9.9", (), b"abcdefgh"),
    )
    assert p.parse_igmp(p.build_igmpv3_report(records)) == MembershipReportV3(
        Protocol.IGMP, 3, records
    )


def test_igmp_unknown_type_is_ignored() -> None:
    mtrace = bytearray(struct.pack("!BBH4s", 0x1F, 0, 0, bytes(4)))
    struct.pack_into("!H", mtrace, 2, p.checksum(mtrace))
    assert p.parse_igmp(bytes(mtrace)) is None


def test_igmpv3_query_ignores_trailing_data_inside_checksum() -> None:
    # RFC 3376 §4.1.10: extra octets count for the checksum and are otherwise ignored.
    query = bytearray(p.build_igmp_query(3) + b"\x01\x02\x03\x04")
    struct.pack_into("!H", query, 2, 0)
    struct.pack_into("!H", query, 2, p.checksum(query))
    parsed = p.parse_igmp(bytes(query))
    assert isinstance(parsed, MembershipQuery)
    assert parsed.version == 3


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x11\x00\x00", "need at least 8"),
        (p.build_igmp_query(2)[:-1] + b"\x01", "checksum"),
        (p.build_igmp_query(3, sources=("10.0.0.1",))[:14], "checksum"),
        (p.build_igmp_report("10.0.0.1"), "not a multicast"),
        (p.build_igmp_leave("10.0.0.1"), "not a multicast"),
    ],
    ids=["short", "bad-checksum", "truncated-v3", "unicast-report", "unicast-leave"],
)
def test_igmp_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacketError, match=reason):
        p.parse_igmp(data)


def _with_igmp_checksum(data: bytes) -> bytes:
    fixed = bytearray(data)
    if len(fixed) >= 4:
        struct.pack_into("!H", fixed, 2, 0)
        struct.pack_into("!H", fixed, 2, p.checksum(fixed))
    return bytes(fixed)


@pytest.mark.parametrize("length", [9, 10, 11])
def test_igmp_query_of_9_to_11_bytes_is_malformed(length: int) -> None:
    # RFC 3376 §7.1: neither an IGMPv1/v2 nor an IGMPv3 query.
    data = _with_igmp_checksum(p.build_igmp_query(3)[:length])
    with pytest.raises(MalformedPacketError, match="IGMP query of"):
        p.parse_igmp(data)


def test_igmpv3_query_with_too_many_sources_is_malformed() -> None:
    query = bytearray(p.build_igmp_query(3, sources=("10.0.0.1",)))
    struct.pack_into("!H", query, 10, 2)  # claims two sources, carries one
    with pytest.raises(MalformedPacketError, match="2 sources"):
        p.parse_igmp(_with_igmp_checksum(bytes(query)))


def test_igmpv3_report_with_truncated_record_or_trailing_bytes() -> None:
    report = p.build_igmpv3_report([GroupRecord(2, "239.1.1.1", ("10.0.0.1",))])
    with pytest.raises(MalformedPacketError, match="record 0"):
        p.parse_igmp(_with_igmp_checksum(report[:-2]))
    with pytest.raises(MalformedPacketError, match="after the 1 records"):
        p.parse_igmp(_with_igmp_checksum(report + b"\x00\x00\x00\x00"))


# --- codes -------------------------------------------------------------------------


def test_code_encodings() -> None:
    # RFC 3376 §4.1.1 / RFC 3810 §5.1.3 floating-point codes.
    assert p.decode_code8(0x7F) == 127
    assert p.decode_code8(0x80) == 128
    assert p.decode_code8(0xFF) == 31744
    assert p.decode_code16(0x7FFF) == 32767
    assert p.decode_code16(0x8000) == 32768
    assert p.decode_code16(0xFFFF) == 8387584
    assert p.encode_code8(10**9) == 0xFF
    assert p.encode_code16(10**9) == 0xFFFF
    with pytest.raises(ValueError, match="negative"):
        p.encode_code8(-1)


@given(st.integers(0, 31744))
def test_code8_round_trip_rounds_down_within_mantissa_precision(value: int) -> None:
    decoded = p.decode_code8(p.encode_code8(value))
    assert decoded <= value
    assert value - decoded < max(1, value // 16)


@given(st.integers(0, 8387584))
def test_code16_round_trip_rounds_down_within_mantissa_precision(value: int) -> None:
    decoded = p.decode_code16(p.encode_code16(value))
    assert decoded <= value
    assert value - decoded < max(1, value // 4096)


# --- MLD -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            p.build_mld_query(LL_A, version=1, max_response_time=10.0),
            MembershipQuery(Protocol.MLD, 1, None, 10.0),
        ),
        (
            p.build_mld_query(
                LL_A,
                "ff3e::7",
                version=2,
                group="ff3e::7",
                max_response_time=40.0,
                sources=("2001:db8::1",),
                robustness=4,
                query_interval=60,
            ),
            MembershipQuery(Protocol.MLD, 2, "ff3e::7", 40.0, ("2001:db8::1",), False, 4, 60.0),
        ),
        (p.build_mld_report(LL_A, "ff3e::7"), MembershipReport(Protocol.MLD, 1, "ff3e::7")),
        (p.build_mld_done(LL_A, "ff3e::7"), MembershipLeave(Protocol.MLD, 1, "ff3e::7")),
    ],
)
def test_mld_round_trip(message: bytes, expected: p.Message) -> None:
    # Without addresses the checksum is not checked; with them it must hold.
    assert p.parse_mld(message) == expected


def test_mld_checksum_needs_the_right_pseudo_header() -> None:
    report = p.build_mld_report(LL_A, "ff3e::7")
    assert p.parse_mld(report, LL_A, "ff3e::7") is not None
    with pytest.raises(MalformedPacketError, match="checksum"):
        p.parse_mld(report, LL_B, "ff3e::7")


def test_mldv2_report_round_trip() -> None:
    records = (
        GroupRecord(RecordType.ALLOW_NEW_SOURCES, "ff3e::1", ("2001:db8::1", "2001:db8::2")),
        GroupRecord(RecordType.CHANGE_TO_EXCLUDE_MODE, "ff15::9", (), b"\x00" * 4),
    )
    data = p.build_mldv2_report(LL_A, records)
    assert p.parse_mld(data, LL_A, "ff02::16") == MembershipReportV3(Protocol.MLD, 2, records)


@pytest.mark.parametrize("length", [25, 26, 27])
def test_mld_query_of_25_to_27_bytes_is_malformed(length: int) -> None:
    data = p.build_mld_query(LL_A)[:length]
    with pytest.raises(MalformedPacketError, match="MLD query of"):
        p.parse_mld(data)


def test_mld_other_icmpv6_and_bad_groups() -> None:
    echo = struct.pack("!BBHHH", 128, 0, 0, 1, 1)
    assert p.parse_mld(echo) is None
    with pytest.raises(MalformedPacketError, match="not a multicast"):
        p.parse_mld(p.build_mld_report(LL_A, "2001:db8::1", "ff02::2"))
    with pytest.raises(MalformedPacketError, match="need at least 24"):
        p.parse_mld(p.build_mld_report(LL_A, "ff3e::1")[:20])


# --- PIM -------------------------------------------------------------------------------


def test_pim_hello_round_trip_skips_unknown_options() -> None:
    data = p.build_pim_hello(
        105,
        dr_priority=7,
        generation_id=42,
        extra_options=[(2, b"\x00\x01\x00\x02"), (65000, b"xyz"), (24, b"")],
    )
    assert p.parse_pim(data) == PimHello(105, 7, 42, (1, 19, 20, 2, 65000, 24))


def test_pim_hello_without_holdtime() -> None:
    assert p.parse_pim(p.build_pim_hello(None)) == PimHello(None)


def test_pim_ipv6_checksum_covers_pseudo_header() -> None:
    data = p.build_pim_hello(105, source=LL_A)
    assert p.parse_pim(data, LL_A, "ff02::d", ipv6=True) == PimHello(105, option_types=(1,))
    with pytest.raises(MalformedPacketError, match="checksum"):
        p.parse_pim(data, LL_B, "ff02::d", ipv6=True)
    # Without the addresses the IPv6 checksum cannot be checked.
    assert p.parse_pim(data, ipv6=True) is not None


def test_pim_other_types_and_versions_are_ignored() -> None:
    join_prune = bytearray(struct.pack("!BBH", 0x23, 0, 0) + bytes(8))
    struct.pack_into("!H", join_prune, 2, p.checksum(join_prune))
    assert p.parse_pim(bytes(join_prune)) is None
    assert p.parse_pim(b"\x10\x00\x00\x00") is None


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (struct.pack("!HH", 1, 4) + b"\x00\x00\x00\x69", "Holdtime option of 4 bytes"),
        (struct.pack("!HH", 19, 2) + b"\x00\x01", "DR Priority option of 2"),
        (struct.pack("!HH", 20, 8) + b"\x00\x01", "option 20"),
        (b"\x00\x01\x00", "option header"),
    ],
)
def test_pim_hello_malformed_options(options: bytes, reason: str) -> None:
    data = bytearray(b"\x20\x00\x00\x00" + options)
    struct.pack_into("!H", data, 2, p.checksum(data))
    with pytest.raises(MalformedPacketError, match=reason):
        p.parse_pim(bytes(data))


def test_pim_bad_checksum() -> None:
    data = bytearray(p.build_pim_hello(105))
    data[-1] ^= 0xFF
    with pytest.raises(MalformedPacketError, match="checksum"):
        p.parse_pim(bytes(data))


# --- IP headers -------------------------------------------------------------------------


def test_ipv4_packet_round_trip() -> None:
    data = p.build_ipv4_packet("10.0.0.1", "224.0.0.1", 2, p.build_igmp_query(3))
    packet = p.parse_packet(data)
    assert packet is not None
    assert (packet.source, packet.destination, packet.ttl, packet.router_alert) == (
        "10.0.0.1",
        "224.0.0.1",
        1,
        True,
    )


def test_ipv4_checks() -> None:
    query = p.build_igmp_query(3)
    with pytest.raises(MalformedPacketError, match="TTL 2"):
        p.parse_packet(p.build_ipv4_packet("10.0.0.1", "224.0.0.1", 2, query, ttl=2))
    broken = bytearray(p.build_ipv4_packet("10.0.0.1", "224.0.0.1", 2, query))
    broken[8] = 1  # TTL changed without fixing the header checksum
    broken[8] = 2
    with pytest.raises(MalformedPacketError, match="header: bad checksum"):
        p.parse_packet(bytes(broken))
    fragment = bytearray(p.build_ipv4_packet("10.0.0.1", "224.0.0.1", 2, query))
    struct.pack_into("!H", fragment, 6, 0x2000)
    struct.pack_into("!H", fragment, 10, 0)
    struct.pack_into("!H", fragment, 10, p.checksum(fragment[:24]))
    with pytest.raises(MalformedPacketError, match="fragment"):
        p.parse_packet(bytes(fragment))
    with pytest.raises(MalformedPacketError, match="not a unicast"):
        p.parse_packet(p.build_ipv4_packet("224.0.0.5", "224.0.0.1", 2, query))
    with pytest.raises(MalformedPacketError, match="lengths inconsistent"):
        p.parse_packet(p.build_ipv4_packet("10.0.0.1", "224.0.0.1", 2, query)[:-1])
    udp = p.build_ipv4_packet("10.0.0.1", "239.1.1.1", 17, b"12345678", ttl=9)
    assert p.parse_packet(udp) is None


def test_ipv6_packet_round_trip_and_checks() -> None:
    query = p.build_mld_query(LL_A)
    packet = p.parse_packet(p.build_ipv6_packet(LL_A, "ff02::1", 58, query))
    assert packet is not None
    assert packet.router_alert
    assert isinstance(packet.message, MembershipQuery)
    with pytest.raises(MalformedPacketError, match="hop limit 255"):
        p.parse_packet(p.build_ipv6_packet(LL_A, "ff02::1", 58, query, hop_limit=255))
    routable = p.build_mld_query("2001:db8::1")
    with pytest.raises(MalformedPacketError, match="not a link-local"):
        p.parse_packet(p.build_ipv6_packet("2001:db8::1", "ff02::1", 58, routable))
    unspecified = p.build_mld_query("::")
    with pytest.raises(MalformedPacketError, match="not a link-local"):
        p.parse_packet(p.build_ipv6_packet("::", "ff02::1", 58, unspecified))
    # RFC 3810 §5.2.13: a report may come from :: before a link-local address exists.
    report = p.build_mldv2_report("::", [GroupRecord(4, "ff3e::1")])
    from_nowhere = p.parse_packet(p.build_ipv6_packet("::", "ff02::16", 58, report))
    assert from_nowhere is not None
    assert from_nowhere.source == "::"
    hello = p.build_pim_hello(105, source=LL_A)
    pim = p.parse_packet(p.build_ipv6_packet(LL_A, "ff02::d", 103, hello, router_alert=False))
    assert pim is not None
    assert isinstance(pim.message, PimHello)


def test_ipv6_extension_headers() -> None:
    query = p.build_mld_query(LL_A)
    # Destination options (8 bytes of padding) between hop-by-hop and ICMPv6.
    inner = p.build_ipv6_packet(LL_A, "ff02::1", 60, struct.pack("!BB6x", 58, 0) + query)
    assert isinstance(p.parse_packet(inner).message, MembershipQuery)  # type: ignore[union-attr]
    fragment = p.build_ipv6_packet(LL_A, "ff02::1", 44, struct.pack("!BBHI", 58, 0, 0, 1) + query)
    with pytest.raises(MalformedPacketError, match="fragment"):
        p.parse_packet(fragment)
    udp = p.build_ipv6_packet(LL_A, "ff02::1", 17, b"12345678")
    assert p.parse_packet(udp) is None
    truncated_hbh = bytearray(p.build_ipv6_packet(LL_A, "ff02::1", 58, query))
    truncated_hbh[41] = 200  # hop-by-hop claims 1608 bytes
    with pytest.raises(MalformedPacketError, match="hop-by-hop"):
        p.parse_packet(bytes(truncated_hbh))


def test_unknown_ip_version() -> None:
    with pytest.raises(MalformedPacketError, match="IP version 5"):
        p.parse_packet(b"\x50" + bytes(40))
    with pytest.raises(MalformedPacketError, match="need at least 1"):
        p.parse_packet(b"")


# --- fuzz: nothing but MalformedPacketError, ever ----------------------------------------


def _quietly(parse: object, *args: object, **kwargs: object) -> None:
    assert callable(parse)
    with contextlib.suppress(MalformedPacketError):
        parse(*args, **kwargs)


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    _quietly(p.parse_igmp, data)
    _quietly(p.parse_mld, data)
    _quietly(p.parse_mld, data, LL_A, "ff02::16")
    _quietly(p.parse_pim, data)
    _quietly(p.parse_pim, data, LL_A, "ff02::d", ipv6=True)
    _quietly(p.parse_packet, data)
    _quietly(p.parse_ipv4_packet, data)
    _quietly(p.parse_ipv6_packet, data)


@settings(max_examples=400)
@given(st.sampled_from([0x11, 0x12, 0x16, 0x17, 0x22]), st.binary(max_size=120))
def test_fuzz_igmp_with_valid_checksum(kind: int, body: bytes) -> None:
    # A fixed checksum gets random bodies past the checksum to the structure checks.
    _quietly(p.parse_igmp, _with_igmp_checksum(bytes([kind]) + body))


@settings(max_examples=400)
@given(st.sampled_from([130, 131, 132, 143]), st.binary(max_size=200))
def test_fuzz_mld_structure(kind: int, body: bytes) -> None:
    _quietly(p.parse_mld, bytes([kind]) + body)


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_fuzz_pim_hello_options(body: bytes) -> None:
    data = bytearray(b"\x20\x00\x00\x00" + body)
    struct.pack_into("!H", data, 2, p.checksum(data))
    _quietly(p.parse_pim, bytes(data))


_REAL = [
    PIMD_HELLO,
    PIMD_V3_GENERAL_QUERY,
    LINUX_V3_JOIN,
    LINUX_V2_LEAVE,
    BRIDGE_MLDV2_QUERY,
    LINUX_MLDV2_JOIN,
    LINUX_MLDV1_DONE,
]


@settings(max_examples=400)
@given(
    st.sampled_from(_REAL),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    st.integers(0, 120),
)
def test_fuzz_mutated_real_packets(hexdata: str, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(bytes.fromhex(hexdata))
    for index, value in flips:
        if index < len(data):
            data[index] = value
    _quietly(p.parse_packet, bytes(data[: len(data) - cut] if cut < len(data) else data))


_addresses_v4 = st.ip_addresses(v=4).map(str)
_groups_v4 = st.integers(0xE0000100, 0xEFFFFFFF).map(
    lambda n: ".".join(str(b) for b in n.to_bytes(4, "big"))
)
_records_v4 = st.builds(
    GroupRecord,
    st.integers(1, 255),
    _groups_v4,
    st.lists(_addresses_v4, max_size=5).map(tuple),
    st.integers(0, 3).map(lambda n: bytes(4 * n)),
)


@given(st.lists(_records_v4, max_size=6).map(tuple))
def test_igmpv3_report_round_trip_property(records: tuple[GroupRecord, ...]) -> None:
    assert p.parse_igmp(p.build_igmpv3_report(records)) == MembershipReportV3(
        Protocol.IGMP, 3, records
    )
