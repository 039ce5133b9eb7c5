"""Tests for hamcast.uri: the RFC 7046 examples, canonical form, errors and positions."""

from __future__ import annotations

import ipaddress
import pickle
import string
from typing import Literal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hamcast.errors import InvalidURIError, UsageError
from hamcast.uri import MAX_URI_LENGTH, URI, parse_uri

# --- the RFC's examples and other valid names ---------------------------------


def test_rfc_example_ipv4_asm() -> None:
    u = URI.parse("ham:ip:224.1.2.3:5000")
    assert u == URI("ip", "224.1.2.3", None, 5000)
    assert str(u) == u.name == "ham:ip:224.1.2.3:5000"
    assert u.is_ip and not u.is_ssm and not u.is_wildcard


def test_rfc_example_ipv6_is_compressed() -> None:
    u = URI.parse("ham:ip:[ff02:0:0:0:0:0:0:3]:6000")
    assert u.group == "ff02::3"
    assert u.port == 6000
    assert str(u) == "ham:ip:[ff02::3]:6000"


@pytest.mark.parametrize("namespace", ["sip", "opaque"])
def test_rfc_example_instantiation(namespace: str) -> None:
    u = URI.parse(f"ham:{namespace}:news@cnn.com")
    assert (u.namespace, u.group, u.instantiation, u.port) == (namespace, "news", "cnn.com", None)
    assert str(u) == f"ham:{namespace}:news@cnn.com"
    assert not u.is_ip and not u.is_ssm


def test_ssm_channel() -> None:
    u = URI.parse("ham:ip:232.1.1.1@10.0.0.1:5000")
    assert (u.group, u.instantiation, u.port) == ("232.1.1.1", "10.0.0.1", 5000)
    assert u.is_ssm


def test_ipv6_ssm_channel() -> None:
    u = URI.parse("ham:ip:[FF3E::1234]@[2001:DB8:0:0::1]:9")
    assert str(u) == "ham:ip:[ff3e::1234]@[2001:db8::1]:9"
    assert u.is_ssm


def test_credentials_are_not_part_of_the_name() -> None:
    u = URI.parse("ham:opaque:news/hmac-sha256;c2VjcmV0+/=")
    assert u.credentials == "hmac-sha256;c2VjcmV0+/="
    assert u.name == "ham:opaque:news"
    assert str(u) == "ham:opaque:news/hmac-sha256;c2VjcmV0+/="
    assert u.without_credentials() == URI("opaque", "news")
    assert u != u.without_credentials()


def test_credentials_percent_encoding_is_normalised_not_decoded() -> None:
    u = URI.parse("ham:opaque:news/%68mac;a%2fb%7E%3b")
    # %68 and %7E are unreserved ("h", "~"): decoded; the rest keeps its meaning, upper-cased.
    assert u.credentials == "hmac;a%2Fb~%3B"


def test_credentials_value_may_hold_any_octet() -> None:
    # The value is an opaque token kept encoded, so it need not be UTF-8.
    assert URI.parse("ham:opaque:g/sig;%FF%00").credentials == "sig;%FF%00"


def test_credentials_keep_later_semicolons_in_the_value() -> None:
    assert URI.parse("ham:opaque:g/a;b;c=d").credentials == "a;b;c=d"
    assert URI.parse("ham:opaque:g/a;;").credentials == "a;;"


@pytest.mark.parametrize(
    ("text", "port"), [("ham:opaque:*", None), ("ham:ip:*:5000", 5000), ("ham:sip:*@cnn.com", None)]
)
def test_wildcard_group(text: str, port: int | None) -> None:
    u = URI.parse(text)
    assert u.group == "*"
    assert u.is_wildcard
    assert u.port == port
    assert str(u) == text


def test_ip_wildcard_with_source() -> None:
    u = URI.parse("ham:ip:*@10.0.0.1")
    assert u.is_wildcard and u.is_ssm


def test_percent_encoding_is_decoded_and_canonicalised() -> None:
    u = URI.parse("ham:opaque:caf%c3%a9%20bar%41%7e%21@x%2fy")
    assert u.group == "café barA~!"
    assert u.instantiation == "x/y"
    # Unreserved and allowed sub-delims come out raw, everything else upper-case %XX.
    assert str(u) == "ham:opaque:caf%C3%A9%20barA~!@x%2Fy"


def test_literal_star_is_encoded() -> None:
    u = URI("opaque", "a*b")
    assert str(u) == "ham:opaque:a%2Ab"
    assert URI.parse("ham:opaque:a%2ab") == u
    assert not u.is_wildcard


def test_sub_delims_are_allowed_raw_in_names() -> None:
    u = URI.parse("ham:opaque:a!$&'()+,;=b@c;d")
    assert u.group == "a!$&'()+,;=b"
    assert u.instantiation == "c;d"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("HAM:IP:224.1.2.3", "ham:ip:224.1.2.3"),
        ("Ham:SHA-2:abc", "ham:sha-2:abc"),
        ("ham:opaque:News", "ham:opaque:News"),  # group names keep their case
        ("ham:ip:224.1.2.3:00080", "ham:ip:224.1.2.3:80"),
        ("ham:ip:224.1.2.3:0", "ham:ip:224.1.2.3:0"),
        ("ham:ip:239.255.255.255:65535", "ham:ip:239.255.255.255:65535"),
        ("ham:ip:[FF02::0001]", "ham:ip:[ff02::1]"),
        ("ham:ip:[ff02:0:0:1:0:0:0:1]", "ham:ip:[ff02:0:0:1::1]"),  # longest zero run
        ("ham:ip:[ff02:0:0:1:0:0:1:1]", "ham:ip:[ff02::1:0:0:1:1]"),  # first of equal runs
        ("ham:ip:[ff02:1:1:1:1:1:0:1]", "ham:ip:[ff02:1:1:1:1:1:0:1]"),  # no "::" for one zero
        ("ham:ip:[ff02::1]@[::ffff:a00:1]", "ham:ip:[ff02::1]@[::ffff:10.0.0.1]"),
        ("ham:reload:a.b-c_d~e", "ham:reload:a.b-c_d~e"),
        ("ham:x.y-z:g", "ham:x.y-z:g"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    u = URI.parse(text)
    assert str(u) == canonical
    assert URI.parse(canonical) == u


def test_parse_uri_is_uri_parse() -> None:
    assert parse_uri("ham:opaque:x") == URI.parse("ham:opaque:x")


def test_equality_hash_and_pickle() -> None:
    a = URI.parse("ham:ip:[ff02:0::3]:6000")
    b = URI("ip", "ff02::3", port=6000)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert pickle.loads(pickle.dumps(a)) == a
    assert str(pickle.loads(pickle.dumps(a))) == str(a)


def test_without_credentials_of_a_plain_name_is_itself() -> None:
    u = URI.parse("ham:opaque:x")
    assert u.without_credentials() is u


def test_longest_allowed_uri() -> None:
    text = "ham:opaque:" + "a" * (MAX_URI_LENGTH - len("ham:opaque:"))
    assert str(URI.parse(text)) == text


# --- direct construction and for_ip ------------------------------------------------


def test_direct_construction_encodes_decoded_text() -> None:
    u = URI("opaque", "news feed", "x y", 7, "a;b")
    assert str(u) == "ham:opaque:news%20feed@x%20y:7/a;b"
    assert URI.parse(str(u)) == u


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"namespace": "IP", "group": "x"}, "namespace 'IP'"),
        ({"namespace": "", "group": "x"}, "namespace ''"),
        ({"namespace": "a:b", "group": "x"}, "namespace 'a:b'"),
        ({"namespace": "ip", "group": "FF02::1"}, "use 'ff02::1'"),
        ({"namespace": "ip", "group": "10.0.0.1"}, "not a multicast address"),
        ({"namespace": "o", "group": ""}, "missing group"),
        ({"namespace": "o", "group": "\ud800"}, "no UTF-8 encoding"),
        ({"namespace": "o", "group": "a", "credentials": "a;%7e"}, "use 'a;~'"),
        ({"namespace": "o", "group": "a", "credentials": "ab"}, "missing ';'"),
        ({"namespace": "o", "group": "a", "port": 70000}, "out of range"),
        ({"namespace": "o", "group": "a", "port": -1}, "without a sign"),
        ({"namespace": "o", "group": "a", "port": True}, "port must be an int"),
        ({"namespace": "o", "group": 5}, "group must be a str"),
    ],
)
def test_direct_construction_rejects_non_canonical_fields(
    fields: dict[str, object], reason: str
) -> None:
    with pytest.raises(InvalidURIError, match=reason):
        URI(**fields)  # type: ignore[arg-type]


def test_for_ip_builds_canonical_names() -> None:
    assert str(URI.for_ip("224.1.2.3", 5000)) == "ham:ip:224.1.2.3:5000"
    assert str(URI.for_ip(ipaddress.ip_address("ff02:0::3"), 6000)) == "ham:ip:[ff02::3]:6000"
    assert str(URI.for_ip("232.1.1.1", None, "10.0.0.1")) == "ham:ip:232.1.1.1@10.0.0.1"


def test_for_ip_drops_zone_ids() -> None:
    u = URI.for_ip(ipaddress.IPv6Address("ff02::1%eth0"), 5, "fe80::1%lo")
    assert str(u) == "ham:ip:[ff02::1]@[fe80::1]:5"


@pytest.mark.parametrize(
    ("address", "port", "source", "reason"),
    [
        ("10.0.0.1", 5, None, "not a multicast address"),
        ("news", 5, None, "not an IP address"),
        ("224.1.2.3", 70000, None, "0..65535"),
        ("224.1.2.3", 5, "224.0.0.1", "must be a unicast address"),
        ("224.1.2.3", 5, "::1", "one address family"),
    ],
)
def test_for_ip_rejects(address: str, port: int, source: str | None, reason: str) -> None:
    with pytest.raises(InvalidURIError, match=reason):
        URI.for_ip(address, port, source)


# --- errors and their positions ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("", 0, "empty URI"),
        ("http://x", 0, "scheme must be 'ham'"),
        (":ip:x", 0, "starts with 'ham:'"),
        ("ham", 3, "missing ':'"),
        ("ham/x", 3, "'/' is not allowed in the scheme"),
        ("ham:", 4, "missing namespace"),
        ("ham::x", 4, "empty namespace"),
        ("ham:1ip:x", 4, "must start with a letter"),
        ("ham:i_p:x", 5, "'_' is not allowed in the namespace"),
        ("ham:ip", 6, "missing ':' and group"),
        ("ham:ip:", 7, "missing group"),
        ("ham:opaque::5", 11, "empty group"),
        ("ham:ip:224.1.2.3:", 17, "empty port"),
        ("ham:ip:224.1.2.3:/a;b", 17, "empty port"),
        ("ham:ip:224.1.2.3:70000", 17, "out of range"),
        ("ham:ip:224.1.2.3:123456", 22, "more than 5 digits"),
        ("ham:ip:224.1.2.3:-1", 17, "without a sign"),
        ("ham:ip:224.1.2.3:+1", 17, "without a sign"),
        ("ham:ip:224.1.2.3:50x0", 19, "'x' is not allowed in the port"),
        ("ham:ip:224.1.2.3:5:6", 18, "':' is not allowed in the port"),
        ("ham:ip:10.0.0.1:5000", 7, "not a multicast address"),
        ("ham:ip:255.255.255.255", 7, "not a multicast address"),
        ("ham:ip:224.01.2.3", 11, "leading zero"),
        ("ham:ip:224.1.2.300", 15, "larger than 255"),
        ("ham:ip:224.1..3", 13, "empty number"),
        ("ham:ip:224.1.2", 7, "four dot-separated numbers"),
        ("ham:ip:224.1.2.3.4", 7, "four dot-separated numbers"),
        ("ham:ip:news", 7, "not an IP address"),
        ("ham:ip:ff02::3:6000", 7, "must be enclosed in brackets"),
        ("ham:ip:::1", 7, "must be enclosed in brackets"),
        ("ham:ip:[ff02::3", 15, "missing ']'"),
        ("ham:ip:[ff02::3/a;b", 15, "missing ']'"),
        ("ham:ip:[]", 8, "empty IPv6 address"),
        ("ham:ip:[ff02::g]", 14, "'g' is not allowed in the IPv6 address"),
        ("ham:ip:[ff02:::1]", 8, "not an IPv6 address"),
        ("ham:ip:[fe80::1]:5000", 8, "not a multicast address"),
        ("ham:ip:[ff02::1%25eth0]", 15, "zone ids are not supported"),
        ("ham:ip:[ff02::1]x", 16, "'x' is not allowed in the URI"),
        ("ham:ip:*x", 8, "must stand alone"),
        ("ham:ip:232.1.1.1@", 17, "empty instantiation"),
        ("ham:ip:232.1.1.1@224.0.0.1", 17, "must be a unicast address"),
        ("ham:ip:232.1.1.1@0.0.0.0", 17, "must be a unicast address"),
        ("ham:ip:232.1.1.1@255.255.255.255", 17, "must be a unicast address"),
        ("ham:ip:232.1.1.1@[2001:db8::1]", 18, "one address family"),
        ("ham:ip:[ff3e::1]@[::]", 18, "must be a unicast address"),
        ("ham:ip:232.1.1.1@10.0.0.1@x", 25, "only one '@'"),
        ("ham:opaque:news feed", 15, "whitespace"),
        ("ham:opaque:a\tb", 12, "whitespace"),
        ("ham:opaque:a\x00b", 12, "control character U+0000"),
        ("ham:opaque:a\x7fb", 12, "control character U+007F"),
        ("ham:opaque:caf\u00e9", 14, "non-ASCII character"),
        ("ham:\u00e9:x", 4, "non-ASCII character"),
        ("ham:opaque:a%zz", 12, "two hexadecimal digits"),
        ("ham:opaque:a%2", 12, "two hexadecimal digits"),
        ("ham:opaque:a%", 12, "two hexadecimal digits"),
        ("ham:opaque:%FF", 11, "not valid UTF-8"),
        ("ham:opaque:ab%C3", 13, "not valid UTF-8"),
        ("ham:opaque:x@a%ED%A0%80", 14, "not valid UTF-8"),  # an encoded surrogate
        ("ham:opaque:news@", 16, "empty instantiation"),
        ("ham:opaque:news@:5", 16, "empty instantiation"),
        ("ham:opaque:a@b@c", 14, "only one '@'"),
        ("ham:opaque:a@b*", 14, "'*' is only allowed alone"),
        ("ham:opaque:a*b", 12, "'*' is only allowed alone"),
        ("ham:opaque:%2A", 11, "would be the wildcard"),
        ("ham:opaque:[x]", 11, "brackets only enclose IPv6"),
        ("ham:opaque:a?x", 12, "no query or fragment"),
        ("ham:opaque:a#x", 12, "no query or fragment"),
        ("ham:opaque:a/", 13, "missing credentials"),
        ("ham:opaque:a/hmac", 17, "missing ';'"),
        ("ham:opaque:a/;x", 13, "empty credential algorithm"),
        ("ham:opaque:a/hmac;", 18, "empty credential value"),
        ("ham:opaque:a/hm+ac;x", 15, "'+' is not allowed in the credential algorithm"),
        ("ham:opaque:a/hmac;x?y", 19, "no query or fragment"),
        ("ham:opaque:a/hmac;x y", 19, "whitespace"),
        ("ham:opaque:a/hmac;%g0", 18, "two hexadecimal digits"),
        ("ham:opaque:a\n", 12, "whitespace"),
    ],
)
def test_error_positions(text: str, position: int, reason: str) -> None:
    with pytest.raises(InvalidURIError) as info:
        URI.parse(text)
    assert info.value.position == position
    assert reason in info.value.reason
    assert info.value.text == text


def test_overlong_uri() -> None:
    text = "ham:opaque:" + "a" * MAX_URI_LENGTH
    with pytest.raises(InvalidURIError) as info:
        URI.parse(text)
    assert info.value.position == MAX_URI_LENGTH
    assert "limit is 1024" in info.value.reason
    # The message quotes only the head of the text, so it stays readable.
    assert len(str(info.value)) < 2 * MAX_URI_LENGTH
    with pytest.raises(InvalidURIError):
        URI.parse("x" * 1_000_000)


def test_errors_are_usage_errors_and_value_errors() -> None:
    with pytest.raises(UsageError):
        URI.parse("ham:")
    with pytest.raises(ValueError, match="position 4"):
        URI.parse("ham:")


def test_non_str_input() -> None:
    with pytest.raises(InvalidURIError, match="must be a str, not bytes"):
        URI.parse(b"ham:opaque:x")  # type: ignore[arg-type]


# --- properties ----------------------------------------------------------------------

_NAME_RAW = string.ascii_letters + string.digits + "-._~!$&'()+,;="
_VAL_RAW = _NAME_RAW + "*:@/"

namespaces = st.from_regex(r"[a-z][a-z0-9.\-]{0,11}", fullmatch=True).filter(lambda n: n != "ip")
names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=16)
ports = st.none() | st.integers(0, 65535)
credentials = st.none() | st.builds(
    lambda alg, val: f"{alg};{val}",
    st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=8),
    st.text(_VAL_RAW, min_size=1, max_size=16),
)


@st.composite
def uris(draw: st.DrawFn) -> URI:
    """Valid URIs of any namespace, built from fields."""
    if draw(st.booleans()):
        version: Literal[4, 6] = draw(st.sampled_from([4, 6]))
        network = "224.0.0.0/4" if version == 4 else "ff00::/8"
        address = draw(st.ip_addresses(v=version, network=network))
        source = draw(
            st.none()
            | st.ip_addresses(v=version).filter(
                lambda a: not (a.is_multicast or a.is_unspecified or str(a) == "255.255.255.255")
            )
        )
        u = URI.for_ip(address, draw(ports), source)
        cred = draw(credentials)
        return URI(u.namespace, u.group, u.instantiation, u.port, cred)
    group = draw(st.just("*") | names)
    return URI(draw(namespaces), group, draw(st.none() | names), draw(ports), draw(credentials))


@given(uris())
def test_parse_of_format_is_identity(u: URI) -> None:
    text = str(u)
    assert URI.parse(text) == u
    assert str(URI.parse(text)) == text
    assert u.name == str(u.without_credentials())
    assert len(text) <= MAX_URI_LENGTH


def _encode(draw: st.DrawFn, value: str, raw_ok: str) -> str:
    """Spell ``value`` as a URI part, choosing per character how to write it."""
    out = []
    for ch in value:
        if ch in raw_ok and draw(st.booleans()):
            out.append(ch)
        else:
            for byte in ch.encode("utf-8"):
                hex_text = f"{byte:02x}"
                out.append("%" + draw(st.sampled_from([hex_text, hex_text.upper()])))
    return "".join(out)


@st.composite
def spelled(draw: st.DrawFn) -> tuple[str, str, str | None]:
    """Non-canonical spellings of a name, with its decoded group and instantiation."""
    scheme = "".join(draw(st.sampled_from([c, c.upper()])) for c in "ham")
    namespace = draw(namespaces)
    group = draw(names.filter(lambda g: g != "*"))
    instantiation = draw(st.none() | names)
    text = f"{scheme}:{namespace.upper() if draw(st.booleans()) else namespace}:"
    text += _encode(draw, group, _NAME_RAW)
    if instantiation is not None:
        text += "@" + _encode(draw, instantiation, _NAME_RAW)
    port = draw(ports)
    if port is not None:
        text += f":{port:0{draw(st.integers(1, 5))}d}"
    return text, group, instantiation


@given(spelled())
def test_any_spelling_parses_to_the_decoded_name(case: tuple[str, str, str | None]) -> None:
    text, group, instantiation = case
    assume(len(text) <= MAX_URI_LENGTH)
    u = URI.parse(text)
    assert (u.group, u.instantiation) == (group, instantiation)
    canonical = str(u)
    assert str(URI.parse(canonical)) == canonical
    assert URI.parse(canonical) == u


_URI_ALPHABET = "ham:ip[]@/%;.*0123456789abcdefABCDEF-_~!?# \t\x00\u00e9xyz+=,"


@given(st.text() | st.text(_URI_ALPHABET).map(lambda t: "ham:" + t))
def test_random_text_raises_only_invalid_uri_error(text: str) -> None:
    try:
        u = URI.parse(text)
    except InvalidURIError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert str(URI.parse(str(u))) == str(u)


@given(
    st.text("0123456789abcdefABCDEF:.[]@%*/", max_size=40).map(lambda t: "ham:ip:" + t),
)
def test_random_ip_text_raises_only_invalid_uri_error(text: str) -> None:
    try:
        u = URI.parse(text)
    except InvalidURIError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert URI.parse(str(u)) == u


@given(st.ip_addresses(v=6))
def test_ipv6_text_is_rfc5952(address: ipaddress.IPv6Address) -> None:
    from hamcast.uri import _format_ipv6

    text = _format_ipv6(address)
    assert ipaddress.IPv6Address(text) == address
    if address not in ipaddress.IPv6Network("::ffff:0:0/96"):
        # Same as Python's own compressed form wherever that form is stable.
        assert text == str(address)
