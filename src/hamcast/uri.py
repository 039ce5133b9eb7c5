"""``ham:`` group names (RFC 7046 §4.2): one strict parser and one canonical form.

A group name is ``ham:<namespace>:<group>[@<instantiation>][:<port>][/<alg>;<val>]``.
:meth:`URI.parse` accepts exactly the grammar in docs/uri.md and raises
:class:`~hamcast.errors.InvalidURIError` naming what is wrong and where. ``str(uri)``
is the canonical form, and it is a fixed point: ``str(URI.parse(str(u))) == str(u)``.

The canonical form matters beyond looks: :attr:`URI.name` (the canonical form
without credentials) is what hosts hash to find overlay keys and native groups
(docs/mapping.md) and what the IPC protocol carries, so two hosts that spell one
group differently must still agree on it byte for byte.
"""

from __future__ import annotations

import functools
import ipaddress
import string
from dataclasses import dataclass, field
from typing import Final, NoReturn

from hamcast.errors import InvalidURIError

__all__ = ["MAX_URI_LENGTH", "URI", "parse_uri"]

#: Longest URI text accepted, in characters. Names travel in IPC frames and
#: overlay messages, so they are bounded; 1024 leaves room for any sane name.
MAX_URI_LENGTH: Final = 1024

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_ALPHA: Final = frozenset(string.ascii_letters)
_DIGIT: Final = frozenset(string.digits)
_HEXDIG: Final = frozenset(string.hexdigits)
# RFC 3986 §2.3 and §2.2.
_UNRESERVED: Final = _ALPHA | _DIGIT | frozenset("-._~")
_SUB_DELIMS: Final = frozenset("!$&'()*+,;=")
# Group and instantiation characters. The gen-delims ":" "@" "/" separate the
# parts of a ham: URI, "?" "#" "[" "]" would confuse generic URI parsers, and a
# raw "*" is kept for the wildcard group alone so "a*" can never look like a pattern.
_NAME_CHARS: Final = _UNRESERVED | (_SUB_DELIMS - {"*"})
_SCHEME_CHARS: Final = _ALPHA | _DIGIT | frozenset("+-.")
_NAMESPACE_CHARS: Final = _ALPHA | _DIGIT | frozenset("-.")
_NAMESPACE_LOWER: Final = frozenset(string.ascii_lowercase) | _DIGIT | frozenset("-.")
_ALG_CHARS: Final = _UNRESERVED
# A credential value is an opaque token (often base64, which needs "+", "/" and
# "="), so it may use everything an RFC 3986 path may: pchar and "/".
_VAL_CHARS: Final = _UNRESERVED | _SUB_DELIMS | frozenset(":@/")
_IPV6_LITERAL_CHARS: Final = _HEXDIG | frozenset(":.")

_IPV4_MULTICAST: Final = ipaddress.IPv4Network("224.0.0.0/4")
_IPV6_MULTICAST: Final = ipaddress.IPv6Network("ff00::/8")
_IPV4_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")

# (namespace, group, instantiation, port, credentials)
_Fields = tuple[str, str, str | None, int | None, str | None]


@dataclass(frozen=True, slots=True, eq=False)
class URI:
    """A parsed ``ham:`` group name (RFC 7046 §4.2.1), always in canonical form.

    Build one with :meth:`parse` (or :func:`parse_uri`) from text, with
    :meth:`for_ip` from addresses, or directly from fields that are already
    canonical (anything else raises :class:`~hamcast.errors.InvalidURIError`).
    Equality and hashing compare all fields, credentials included; compare
    :attr:`name` to ask "is this the same group?".
    """

    #: Lower-case namespace, e.g. ``"ip"``, ``"sha-2"``, ``"opaque"``, ``"sip"``.
    namespace: str
    #: Decoded group name; ``"*"`` means all groups of the namespace. For the ip
    #: namespace the canonical address text (IPv6 compressed, without brackets).
    group: str
    #: Decoded instantiation (e.g. a SIP domain); for ip, the canonical SSM source.
    instantiation: str | None = None
    #: UDP port, 0..65535, or ``None`` when the name gives none.
    port: int | None = None
    #: The ``alg;val`` text after ``/``, percent-encoding normalised. Not part of the name.
    credentials: str | None = None
    # Canonical text without credentials, computed once: every map, IPC frame
    # and hash of a group needs it, and the fields never change.
    _name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_types(self.namespace, self.group, self.instantiation, self.port, self.credentials)
        if (
            not self.namespace
            or self.namespace[0] not in _ALPHA
            or not all(c in _NAMESPACE_LOWER for c in self.namespace)
        ):
            raise InvalidURIError(
                f"namespace {self.namespace!r} must be lower-case letters, digits, '-' and '.',"
                " starting with a letter"
            )
        try:
            name = _format_name(self.namespace, self.group, self.instantiation, self.port)
        except UnicodeEncodeError as exc:
            raise InvalidURIError(
                f"text contains {exc.object[exc.start : exc.end]!r}, which has no UTF-8 encoding"
            ) from None
        text = name if self.credentials is None else f"{name}/{self.credentials}"
        # Formatting then parsing is the one definition of canonical; a field
        # that does not survive it was not canonical (or not valid) to begin with.
        parsed, _ = _parse_fields(text)
        given = (self.namespace, self.group, self.instantiation, self.port, self.credentials)
        if parsed != given:
            labels = ("namespace", "group", "instantiation", "port", "credentials")
            for label, have, want in zip(labels, given, parsed, strict=True):
                if have != want:
                    raise InvalidURIError(
                        f"{label} {have!r} is not in canonical form; use {want!r}"
                        f" (the fields format as {text!r})"
                    )
        object.__setattr__(self, "_name", name)

    # Equality and hash by the cached canonical text: URIs are dictionary keys
    # on the data path, and a str caches its own hash.
    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not URI:
            return NotImplemented
        return self._name == other._name and self.credentials == other.credentials

    def __hash__(self) -> int:
        return hash(self._name)

    @classmethod
    def _make(cls, fields: _Fields, name: str) -> URI:
        # The parser and for_ip produce fields that are canonical by
        # construction, so they skip __post_init__'s format-and-reparse check.
        self = object.__new__(cls)
        for slot, value in zip(
            ("namespace", "group", "instantiation", "port", "credentials"), fields, strict=True
        ):
            object.__setattr__(self, slot, value)
        object.__setattr__(self, "_name", name)
        return self

    @classmethod
    def parse(cls, text: str) -> URI:
        """Parse ``text`` strictly; raise :class:`~hamcast.errors.InvalidURIError` if invalid.

        The error's ``position`` is the 0-based index of the first offending
        character, or ``len(text)`` when something is missing at the end.
        """
        if not isinstance(text, str):
            raise InvalidURIError(f"a URI must be a str, not {type(text).__name__}")
        fields, name = _parse_fields(text)
        return cls._make(fields, name)

    @classmethod
    def for_ip(
        cls,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
        port: int | None,
        source: ipaddress.IPv4Address | ipaddress.IPv6Address | str | None = None,
    ) -> URI:
        """The canonical ``ham:ip:`` name of a multicast ``address`` (and SSM ``source``).

        Used for traffic whose name was never seen, so it is lenient about how
        addresses are given (objects or any text :mod:`ipaddress` reads) and
        drops IPv6 zone ids: the interface is chosen per socket, not by name.
        """
        group = _plain_address(address, "group")
        if not group.is_multicast:
            raise InvalidURIError(f"{group} is not a multicast address")
        instantiation = None
        if source is not None:
            src = _plain_address(source, "source")
            problem = _source_problem(group, src)
            if problem:
                raise InvalidURIError(problem)
            instantiation = _address_text(src)
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
        ):
            raise InvalidURIError(f"port {port!r} is not an integer in 0..65535")
        fields: _Fields = ("ip", _address_text(group), instantiation, port, None)
        return cls._make(fields, _format_name(*fields[:4]))

    def __str__(self) -> str:
        """The canonical text, credentials included."""
        if self.credentials is None:
            return self._name
        return f"{self._name}/{self.credentials}"

    @property
    def name(self) -> str:
        """Canonical text without credentials: the group's identity."""
        return self._name

    @property
    def is_ip(self) -> bool:
        """True for the ``ip`` namespace, whose names are native addresses."""
        return self.namespace == "ip"

    @property
    def is_ssm(self) -> bool:
        """True for an ip name with a source: a source-specific (S,G) channel."""
        return self.namespace == "ip" and self.instantiation is not None

    @property
    def is_wildcard(self) -> bool:
        """True when the group is ``*`` (all groups of the namespace)."""
        return self.group == "*"

    def without_credentials(self) -> URI:
        """This name with the credentials removed (``self`` if there are none)."""
        if self.credentials is None:
            return self
        return type(self)._make(
            (self.namespace, self.group, self.instantiation, self.port, None), self._name
        )


def parse_uri(text: str) -> URI:
    """Parse a ``ham:`` URI; the same as :meth:`URI.parse`."""
    return URI.parse(text)


# --- formatting --------------------------------------------------------------


def _format_name(namespace: str, group: str, instantiation: str | None, port: int | None) -> str:
    parts = ["ham:", namespace, ":"]
    if group == "*":
        parts.append("*")
    else:
        parts.append(_format_part(namespace, group))
    if instantiation is not None:
        parts += ("@", _format_part(namespace, instantiation))
    if port is not None:
        parts += (":", str(port))
    return "".join(parts)


def _format_part(namespace: str, value: str) -> str:
    if namespace == "ip":
        return f"[{value}]" if ":" in value else value
    if all(c in _NAME_CHARS for c in value):
        return value
    out: list[str] = []
    for c in value:
        if c in _NAME_CHARS:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8"))
    return "".join(out)


def _address_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return _format_ipv6(address)


def _format_ipv6(address: ipaddress.IPv6Address) -> str:
    """RFC 5952 text of an IPv6 address.

    Written out here rather than taken from ``str()`` because Python 3.13
    changed how :mod:`ipaddress` prints IPv4-mapped addresses, and names must
    hash the same on every Python a host may run.
    """
    packed = address.packed
    if address in _IPV4_MAPPED:
        # RFC 5952 §5: mapped addresses keep the IPv4 part in dotted form.
        return "::ffff:" + str(ipaddress.IPv4Address(packed[12:]))
    hextets = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_len, run_start, run_len = -1, 0, -1, 0
    for i, hextet in enumerate(hextets):
        if hextet:
            run_len = 0
            continue
        if run_len == 0:
            run_start = i
        run_len += 1
        # Strictly longer: on a tie the first run is compressed (RFC 5952 §4.2.3).
        if run_len > best_len:
            best_start, best_len = run_start, run_len
    texts = [f"{h:x}" for h in hextets]
    # "::" never stands for a single zero hextet (RFC 5952 §4.2.2).
    if best_len < 2:
        return ":".join(texts)
    return ":".join(texts[:best_start]) + "::" + ":".join(texts[best_start + best_len :])


# --- parsing -----------------------------------------------------------------


class _Scanner:
    """Cursor over the URI text that raises errors pointing into it."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, reason: str, position: int | None = None) -> NoReturn:
        raise InvalidURIError(reason, self.text, self.pos if position is None else position)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def bad_char(self, position: int, where: str) -> NoReturn:
        """Fail on a character that may not appear at ``position``."""
        ch = self.text[position]
        code = f"U+{ord(ch):04X}"
        if ch.isspace():
            self.fail(f"whitespace ({code}) is not allowed; percent-encode it", position)
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            self.fail(f"control character {code} is not allowed", position)
        if ord(ch) > 0x7F:
            self.fail(
                f"non-ASCII character {ch!r} ({code}) is not allowed; percent-encode its UTF-8",
                position,
            )
        if ch in "?#":
            self.fail(f"{ch!r} is not allowed: a ham: URI has no query or fragment", position)
        if ch in "[]":
            self.fail(
                f"{ch!r} is not allowed in the {where}: brackets only enclose IPv6 addresses"
                " in the ip namespace",
                position,
            )
        self.fail(f"character {ch!r} is not allowed in the {where}", position)


@functools.lru_cache(maxsize=1024)
def _parse_fields(text: str) -> tuple[_Fields, str]:
    # Cached because the daemon parses the same few names over and over (one
    # per IPC request); the cache is bounded and the results are immutable.
    s = _Scanner(text)
    if not text:
        raise InvalidURIError("empty URI; expected ham:<namespace>:<group>", "", 0)
    if len(text) > MAX_URI_LENGTH:
        # Quote only the head: the message must stay readable, and the
        # position still points into what is quoted.
        raise InvalidURIError(
            f"URI is {len(text)} characters long; the limit is {MAX_URI_LENGTH}",
            text[:MAX_URI_LENGTH] + "...",
            MAX_URI_LENGTH,
        )
    _parse_scheme(s)
    namespace = _parse_namespace(s)
    group, group_ip = _parse_group(s, namespace)
    instantiation = None
    if s.peek() == "@":
        s.pos += 1
        instantiation = _parse_instantiation(s, namespace, group_ip)
    port = None
    if s.peek() == ":":
        s.pos += 1
        port = _parse_port(s)
    credentials = None
    if s.peek() == "/":
        s.pos += 1
        credentials = _parse_credentials(s)
    if not s.at_end():
        # Only reachable for characters the part readers stop at but do not
        # consume, e.g. a second "@".
        if s.peek() == "@":
            s.fail("only one '@' is allowed (it starts the instantiation)")
        s.bad_char(s.pos, "URI")
    fields: _Fields = (namespace, group, instantiation, port, credentials)
    return fields, _format_name(namespace, group, instantiation, port)


def _parse_scheme(s: _Scanner) -> None:
    text = s.text
    end = 0
    while end < len(text) and text[end] in _SCHEME_CHARS:
        end += 1
    scheme = text[:end]
    if scheme.lower() != "ham":
        if not scheme:
            s.fail("a ham: URI starts with 'ham:'", 0)
        s.fail(f"scheme must be 'ham', not {scheme!r}", 0)
    if end == len(text):
        s.fail("missing ':' after 'ham'", end)
    if text[end] != ":":
        s.bad_char(end, "scheme")
    s.pos = end + 1


def _parse_namespace(s: _Scanner) -> str:
    text, start = s.text, s.pos
    if s.at_end():
        s.fail("missing namespace after 'ham:'")
    end = start
    while end < len(text) and text[end] in _NAMESPACE_CHARS:
        end += 1
    if end == start:
        if text[start] == ":":
            s.fail("empty namespace", start)
        s.bad_char(start, "namespace")
    if text[start] not in _ALPHA:
        s.fail("namespace must start with a letter", start)
    if end == len(text):
        s.fail("missing ':' and group after the namespace", end)
    if text[end] != ":":
        s.bad_char(end, "namespace")
    s.pos = end + 1
    return text[start:end].lower()


def _parse_group(s: _Scanner, namespace: str) -> tuple[str, _IPAddress | None]:
    text, start = s.text, s.pos
    if s.at_end():
        s.fail("missing group")
    if text[start] == "*":
        s.pos += 1
        if not s.at_end() and s.peek() not in "@:/":
            s.fail("'*' must stand alone as the wildcard group; write %2A for a literal '*'")
        return "*", None
    if namespace == "ip":
        address = _parse_ip(s, "group")
        # Point at the address itself, inside any brackets.
        start += text[start] == "["
        if not address.is_multicast:
            family = "224.0.0.0/4" if address.version == 4 else "ff00::/8"
            s.fail(f"{address} is not a multicast address (IPv{address.version}: {family})", start)
        return _address_text(address), address
    group = _parse_name(s, "group")
    if group == "*":
        # Decoded, "%2A" would be the wildcard; refuse rather than guess which was meant.
        s.fail("'%2A' alone would be the wildcard group; write '*' for the wildcard", start)
    return group, None


def _parse_instantiation(s: _Scanner, namespace: str, group: _IPAddress | None) -> str:
    start = s.pos
    if s.at_end() or s.peek() in ":/":
        s.fail("empty instantiation after '@'")
    if namespace != "ip":
        return _parse_name(s, "instantiation")
    source = _parse_ip(s, "source")
    problem = _source_problem(group, source)
    if problem:
        s.fail(problem, start + (s.text[start] == "["))
    return _address_text(source)


def _source_problem(group: _IPAddress | None, source: _IPAddress) -> str:
    """Why ``source`` cannot be the SSM source of ``group`` ("" if it can)."""
    if source.is_multicast or source.is_unspecified or source == _LIMITED_BROADCAST:
        return f"source {source} must be a unicast address"
    if group is not None and group.version != source.version:
        return (
            f"source {source} is IPv{source.version} but group {group} is IPv{group.version};"
            " an (S,G) channel has one address family"
        )
    return ""


_LIMITED_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")


def _parse_ip(s: _Scanner, what: str) -> _IPAddress:
    text, start = s.text, s.pos
    if text[start] == "[":
        close = start + 1
        while close < len(text) and text[close] != "]":
            ch = text[close]
            if ch == "%":
                s.fail("IPv6 zone ids are not supported: choose the interface on the socket", close)
            if ch in "@/":
                s.fail("missing ']' after the IPv6 address", close)
            if ch not in _IPV6_LITERAL_CHARS:
                s.bad_char(close, "IPv6 address")
            close += 1
        if close == len(text):
            s.fail("missing ']' after the IPv6 address", close)
        literal = text[start + 1 : close]
        if not literal:
            s.fail("empty IPv6 address", start + 1)
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            s.fail(f"{literal!r} is not an IPv6 address", start + 1)
        s.pos = close + 1
        return address
    end = start
    while end < len(text) and text[end] not in "@:/":
        if text[end] not in _NAME_CHARS and text[end] != "%":
            s.bad_char(end, what)
        end += 1
    token = text[start:end]
    if not token:
        if text.startswith("::", start):
            s.fail("an IPv6 address must be enclosed in brackets, e.g. [ff02::1]", start)
        s.fail(f"empty {what}", start)
    if not all(c in _DIGIT or c == "." for c in token):
        if all(c in _HEXDIG for c in token) and end < len(text) and text[end] == ":":
            s.fail("an IPv6 address must be enclosed in brackets, e.g. [ff02::1]", start)
        s.fail(
            f"{token!r} is not an IP address: the ip namespace takes an IPv4 address"
            " or an IPv6 address in brackets",
            start,
        )
    numbers = token.split(".")
    if len(numbers) != 4:
        s.fail(f"{token!r} is not an IPv4 address: it needs four dot-separated numbers", start)
    pos = start
    for number in numbers:
        if not number:
            s.fail("empty number in IPv4 address", pos)
        if len(number) > 1 and number[0] == "0":
            # Some parsers read a leading zero as octal; refuse the ambiguity.
            s.fail(f"leading zero in IPv4 address number {number!r}", pos)
        if int(number) > 255:
            s.fail(f"IPv4 address number {number} is larger than 255", pos)
        pos += len(number) + 1
    s.pos = end
    return ipaddress.IPv4Address(token)


def _parse_name(s: _Scanner, what: str) -> str:
    """Read a group or instantiation up to the next separator and decode it."""
    text, start = s.text, s.pos
    octets = bytearray()
    # Text position of each octet, to point decoding errors at the right "%".
    where: list[int] = []
    i = start
    while i < len(text) and text[i] not in "@:/":
        ch = text[i]
        if ch == "%":
            octets.append(_pct_octet(s, i))
            where.append(i)
            i += 3
        elif ch in _NAME_CHARS:
            octets.append(ord(ch))
            where.append(i)
            i += 1
        elif ch == "*":
            s.fail(f"'*' is only allowed alone, as the wildcard group; write %2A in the {what}", i)
        else:
            s.bad_char(i, what)
    if i == start:
        s.fail(f"empty {what}", start)
    try:
        value = octets.decode("utf-8")
    except UnicodeDecodeError as exc:
        s.fail(f"percent-encoded octets in the {what} are not valid UTF-8", where[exc.start])
    s.pos = i
    return value


def _pct_octet(s: _Scanner, i: int) -> int:
    text = s.text
    digits = text[i + 1 : i + 3]
    if len(digits) < 2 or not all(c in _HEXDIG for c in digits):
        s.fail("'%' must be followed by two hexadecimal digits", i)
    return int(digits, 16)


def _parse_port(s: _Scanner) -> int:
    text, start = s.text, s.pos
    end = start
    while end < len(text) and text[end] != "/":
        if text[end] not in _DIGIT:
            if text[end] in "+-":
                s.fail("port must be a decimal number without a sign", end)
            s.bad_char(end, "port")
        if end - start == 5:
            s.fail("port has more than 5 digits", end)
        end += 1
    if end == start:
        s.fail("empty port after ':'", start)
    port = int(text[start:end])
    if port > 65535:
        s.fail(f"port {port} is out of range 0..65535", start)
    s.pos = end
    return port


def _parse_credentials(s: _Scanner) -> str:
    text, start = s.text, s.pos
    if s.at_end():
        s.fail("missing credentials after '/'; expected <alg>;<val>")
    out: list[str] = []
    i = start
    seen_semicolon = False
    while i < len(text):
        ch = text[i]
        allowed = _VAL_CHARS if seen_semicolon else _ALG_CHARS
        if ch == "%":
            octet = _pct_octet(s, i)
            # RFC 3986 §6.2.2: decode unreserved octets, upper-case the hex of the rest.
            out.append(chr(octet) if chr(octet) in _UNRESERVED else f"%{octet:02X}")
            i += 3
            continue
        if ch == ";" and not seen_semicolon:
            if i == start:
                s.fail("empty credential algorithm before ';'", i)
            seen_semicolon = True
        elif ch not in allowed:
            s.bad_char(i, "credential value" if seen_semicolon else "credential algorithm")
        out.append(ch)
        i += 1
    if not seen_semicolon:
        s.fail("credentials must be <alg>;<val>: missing ';'", len(text))
    if text[-1] == ";" and text.index(";", start) == len(text) - 1:
        s.fail("empty credential value after ';'", len(text))
    s.pos = i
    return "".join(out)


def _check_types(
    namespace: object, group: object, instantiation: object, port: object, credentials: object
) -> None:
    # The fields come from callers' code, not only from the parser: say which
    # one has the wrong type instead of failing somewhere inside formatting.
    for label, value, optional in (
        ("namespace", namespace, False),
        ("group", group, False),
        ("instantiation", instantiation, True),
        ("credentials", credentials, True),
    ):
        if not isinstance(value, str) and not (optional and value is None):
            raise InvalidURIError(f"{label} must be a str, not {type(value).__name__}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        raise InvalidURIError(f"port must be an int or None, not {type(port).__name__}")


def _plain_address(value: object, what: str) -> _IPAddress:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    if isinstance(value, ipaddress.IPv6Address):
        # Drops a zone id: the zone belongs to the socket, not to the name.
        return ipaddress.IPv6Address(int(value)) if value.scope_id else value
    if isinstance(value, str):
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise InvalidURIError(f"{what} {value!r} is not an IP address") from None
        return _plain_address(address, what)
    raise InvalidURIError(f"{what} must be an IP address, not {type(value).__name__}")
