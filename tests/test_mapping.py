"""Tests for hamcast.mapping: pinned vectors, the mapping rules, and NameTable."""

from __future__ import annotations

import hashlib
import ipaddress
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hamcast.errors import InvalidURIError
from hamcast.mapping import (
    DEFAULT_PORT_RANGE,
    IPV4_SCOPE,
    IPV6_PREFIX,
    GroupMapping,
    NameTable,
    map_group,
)
from hamcast.uri import URI

# The same table is printed in docs/mapping.md. These values are part of the
# protocol: hosts that disagree on them cannot meet in a group. Never change one
# without a protocol version bump.
VECTORS = [
    # name, overlay key (hex), ipv4, ipv6, port
    (
        "ham:ip:224.1.2.3:5000",
        "72347b7fe9ce57222513f49ce4cf43cd",
        "224.1.2.3",
        "ff15::f3f0:8790",
        5000,
    ),
    (
        "ham:ip:[ff02::3]:6000",
        "042dc477172e3f34d5d58ffda9143aa2",
        "239.195.79.113",
        "ff02::3",
        6000,
    ),
    (
        "ham:ip:232.1.1.1@10.0.0.1:5000",
        "5b577c33c5549f2a13e42f251d03d306",
        "232.1.1.1",
        "ff15::c89a:b391",
        5000,
    ),
    (
        "ham:ip:224.1.2.3",
        "472e431c4ad0743e27f1ba4aeab5ffb6",
        "224.1.2.3",
        "ff15::dcdd:717",
        55907,
    ),
    (
        "ham:sip:news@cnn.com",
        "0a4e7222b5b5c9fff8745326946f194c",
        "239.194.203.233",
        "ff15::d520:3e63",
        63873,
    ),
    (
        "ham:opaque:news@cnn.com",
        "a4d8a3cec95a55ee633408f680974784",
        "239.192.231.107",
        "ff15::f78e:b395",
        58975,
    ),
    (
        "ham:opaque:*",
        "fc46f30277f805f0fa29a9251cbd1ce7",
        "239.194.27.125",
        "ff15::c0fc:5d61",
        59197,
    ),
    (
        "ham:reload:chat.example.org:7000",
        "43d7bc845b32703564d596363973bd20",
        "239.195.185.147",
        "ff15::bcc2:74ad",
        7000,
    ),
    (
        "ham:opaque:caf%C3%A9",
        "dcedf50aa258ebe59dfff99a615268be",
        "239.195.33.65",
        "ff15::97ca:2873",
        63054,
    ),
]


@pytest.mark.parametrize(("name", "key", "ipv4", "ipv6", "port"), VECTORS)
def test_pinned_vectors(name: str, key: str, ipv4: str, ipv6: str, port: int) -> None:
    m = map_group(URI.parse(name))
    assert f"{m.overlay_key:032x}" == key
    assert m.ipv4 == IPv4Address(ipv4)
    assert m.ipv6 == IPv6Address(ipv6)
    assert m.port == port
    assert str(m.uri) == name


def _spec(name: str) -> tuple[int, IPv4Address, IPv6Address, int]:
    """The hash rule exactly as docs/mapping.md states it, written out independently."""
    h = hashlib.sha256(name.encode("utf-8")).digest()
    key = int.from_bytes(h[0:16], "big")
    v4 = IPv4Address((239 << 24) | (192 << 16) | (int.from_bytes(h[16:20], "big") % 2**18))
    v6 = IPv6Address((0xFF15 << 112) | 0x80000000 | (int.from_bytes(h[20:24], "big") % 2**31))
    port = 49152 + int.from_bytes(h[24:26], "big") % 2**14
    return key, v4, v6, port


namespaces = st.from_regex(r"[a-z][a-z0-9.\-]{0,11}", fullmatch=True).filter(lambda n: n != "ip")
names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=16)
hashed_uris = st.builds(
    URI, namespaces, st.just("*") | names, st.none() | names, st.none() | st.integers(0, 65535)
)


@given(hashed_uris)
def test_hash_rule_matches_the_documented_rule(uri: URI) -> None:
    m = map_group(uri)
    key, v4, v6, port = _spec(uri.name)
    assert (m.overlay_key, m.ipv4, m.ipv6) == (key, v4, v6)
    assert m.port == (uri.port if uri.port is not None else port)
    assert m.source is None
    assert m.family is None


@given(hashed_uris)
def test_hashed_groups_are_inside_their_ranges(uri: URI) -> None:
    m = map_group(uri)
    assert 0 <= m.overlay_key < 2**128
    assert m.ipv4 in ipaddress.IPv4Network("239.192.0.0/14") and m.ipv4 in IPV4_SCOPE
    assert m.ipv6 in ipaddress.IPv6Network("ff15::/16") and m.ipv6 in IPV6_PREFIX
    assert int(m.ipv6) & 0xFFFFFFFF >= 0x80000000  # RFC 3307 dynamic group id
    assert m.ipv4.is_multicast and m.ipv6.is_multicast
    if uri.port is None:
        assert m.port in DEFAULT_PORT_RANGE


@given(hashed_uris, st.text("abc-", min_size=1), st.text("xyz=+/", min_size=1))
def test_credentials_do_not_change_the_mapping(uri: URI, alg: str, val: str) -> None:
    with_credentials = URI(uri.namespace, uri.group, uri.instantiation, uri.port, f"{alg};{val}")
    assert map_group(with_credentials) == map_group(uri)
    assert map_group(with_credentials).uri.credentials is None


def test_mapping_is_deterministic_and_spelling_independent() -> None:
    a = map_group(URI.parse("HAM:Opaque:caf%c3%a9"))
    b = map_group(URI("opaque", "café"))
    assert a == b
    assert a.uri.name == "ham:opaque:caf%C3%A9"


def test_ipv4_name_is_its_own_address() -> None:
    m = map_group(URI.parse("ham:ip:224.1.2.3:5000"))
    assert (m.ipv4, m.port, m.source, m.family) == (IPv4Address("224.1.2.3"), 5000, None, 4)
    # The other family takes the hash rule.
    assert m.ipv6 == _spec("ham:ip:224.1.2.3:5000")[2]


def test_ipv6_name_is_its_own_address() -> None:
    m = map_group(URI.parse("ham:ip:[ff3e::8000:1]@[2001:db8::1]:9"))
    assert m.ipv6 == IPv6Address("ff3e::8000:1")
    assert m.source == IPv6Address("2001:db8::1")
    assert m.family == 6
    assert m.ipv4 == _spec("ham:ip:[ff3e::8000:1]@[2001:db8::1]:9")[1]


def test_ip_name_without_port_gets_the_default_port() -> None:
    m = map_group(URI.parse("ham:ip:232.1.1.1@10.0.0.1"))
    assert m.port == _spec("ham:ip:232.1.1.1@10.0.0.1")[3]
    assert m.source == IPv4Address("10.0.0.1")


def test_ip_wildcard_is_hashed() -> None:
    m = map_group(URI.parse("ham:ip:*"))
    key, v4, v6, port = _spec("ham:ip:*")
    assert (m.overlay_key, m.ipv4, m.ipv6, m.port, m.family) == (key, v4, v6, port, None)


def test_ip_overlay_key_is_hashed_too() -> None:
    m = map_group(URI.parse("ham:ip:224.1.2.3:5000"))
    assert m.overlay_key == _spec("ham:ip:224.1.2.3:5000")[0]


# --- NameTable -------------------------------------------------------------------------


def _m(text: str) -> GroupMapping:
    return map_group(URI.parse(text))


def test_lookup_returns_remembered_names_on_both_families() -> None:
    table = NameTable()
    m = _m("ham:opaque:news@cnn.com")
    table.remember(m)
    assert table.lookup(m.ipv4, m.port) == m.uri
    assert table.lookup(m.ipv6, m.port) == m.uri
    assert len(table) == 1


def test_lookup_of_unseen_ip_group_round_trips_the_ip_name() -> None:
    table = NameTable()
    assert str(table.lookup(IPv4Address("224.1.2.3"), 5000)) == "ham:ip:224.1.2.3:5000"
    assert str(table.lookup(IPv6Address("ff02::3"), 6000)) == "ham:ip:[ff02::3]:6000"
    # An unseen hashed group is named by its address; the table stays empty.
    m = _m("ham:opaque:x")
    assert table.lookup(m.ipv4, m.port) == URI.for_ip(m.ipv4, m.port)
    assert len(table) == 0


def test_lookup_strips_zone_ids() -> None:
    table = NameTable()
    m = _m("ham:opaque:x")
    table.remember(m)
    scoped = IPv6Address(f"{m.ipv6}%eth0")
    assert table.lookup(scoped, m.port) == m.uri
    assert str(table.lookup(IPv6Address("ff02::1%eth0"), 5)) == "ham:ip:[ff02::1]:5"


def test_lookup_of_unseen_unicast_group_is_an_error() -> None:
    with pytest.raises(InvalidURIError, match="not a multicast address"):
        NameTable().lookup(IPv4Address("10.0.0.1"), 5000)


def test_ip_name_without_port_is_found_under_its_default_port() -> None:
    table = NameTable()
    m = _m("ham:ip:224.1.2.3")
    table.remember(m)
    assert table.lookup(IPv4Address("224.1.2.3"), m.port) == m.uri
    assert str(table.lookup(IPv4Address("224.1.2.3"), 5000)) == "ham:ip:224.1.2.3:5000"


def test_ssm_name_answers_only_for_its_source() -> None:
    table = NameTable()
    m = _m("ham:ip:232.1.1.1@10.0.0.1:5000")
    table.remember(m)
    group = IPv4Address("232.1.1.1")
    assert table.lookup(group, 5000, IPv4Address("10.0.0.1")) == m.uri
    assert str(table.lookup(group, 5000, IPv4Address("10.0.0.2"))) == "ham:ip:232.1.1.1:5000"
    assert str(table.lookup(group, 5000)) == "ham:ip:232.1.1.1:5000"
    # On the other family the hashed group is any-source.
    assert table.lookup(m.ipv6, 5000, IPv6Address("2001:db8::1")) == m.uri


def test_asm_name_answers_for_any_source() -> None:
    table = NameTable()
    m = _m("ham:sip:news@cnn.com")
    table.remember(m)
    assert table.lookup(m.ipv4, m.port, IPv4Address("192.0.2.7")) == m.uri


def test_table_is_bounded_and_forgets_the_least_recently_used() -> None:
    table = NameTable(capacity=3)
    maps = [_m(f"ham:opaque:g{i}") for i in range(4)]
    for m in maps[:3]:
        table.remember(m)
    # Traffic on g0 makes it recent, so g1 is the one to go.
    assert table.lookup(maps[0].ipv4, maps[0].port) == maps[0].uri
    table.remember(maps[3])
    assert len(table) == 3
    assert table.lookup(maps[1].ipv4, maps[1].port) == URI.for_ip(maps[1].ipv4, maps[1].port)
    for m in (maps[0], maps[2], maps[3]):
        assert table.lookup(m.ipv6, m.port) == m.uri


def test_remembering_again_refreshes_without_growing() -> None:
    table = NameTable(capacity=2)
    a, b, c = _m("ham:opaque:a"), _m("ham:opaque:b"), _m("ham:opaque:c")
    table.remember(a)
    table.remember(b)
    table.remember(a)
    assert len(table) == 2
    table.remember(c)
    assert table.lookup(a.ipv4, a.port) == a.uri
    assert table.lookup(b.ipv4, b.port) != b.uri


@given(st.lists(st.integers(0, 50), max_size=200), st.integers(1, 8))
def test_table_never_exceeds_capacity(indexes: list[int], capacity: int) -> None:
    table = NameTable(capacity)
    for i in indexes:
        table.remember(_m(f"ham:opaque:n{i}"))
        assert len(table) <= capacity
    recent = list(dict.fromkeys(reversed(indexes)))[:capacity]
    for i in recent:
        m = _m(f"ham:opaque:n{i}")
        assert table.lookup(m.ipv4, m.port) == m.uri


def test_colliding_names_the_last_remembered_answers() -> None:
    table = NameTable(capacity=2)
    a = _m("ham:opaque:a")
    other = _m("ham:opaque:b")
    # A second name on the same native group, as a hash collision would give.
    b = GroupMapping(other.uri, other.overlay_key, a.ipv4, other.ipv6, a.port, None)
    table.remember(a)
    table.remember(b)
    assert table.lookup(a.ipv6, a.port) == a.uri
    assert table.lookup(a.ipv4, a.port) == b.uri
    # Evicting a (now the least recent) must not take b's entry with it.
    table.remember(_m("ham:opaque:c"))
    assert table.lookup(a.ipv4, a.port) == b.uri
    assert table.lookup(a.ipv6, a.port) == URI.for_ip(a.ipv6, a.port)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        NameTable(0)
