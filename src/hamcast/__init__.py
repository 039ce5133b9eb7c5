"""hamcast: transparent hybrid multicast with the RFC 7046 Common Multicast API.

Applications name groups with ``ham:`` URIs and use one API; the middleware
binds each group to the best technology this host's networks offer::

    import hamcast

    with hamcast.MulticastSocket() as s:
        s.join("ham:opaque:news")
        s.send("ham:opaque:news", b"hello")
        print(s.receive(timeout=1.0))

The asyncio flavour is :mod:`hamcast.aio`.
"""

from __future__ import annotations

from hamcast.client.sync import MulticastSocket
from hamcast.errors import (
    ClosedError,
    DaemonUnavailableError,
    HamcastError,
    InvalidURIError,
    MessageTooLongError,
    NotJoinedError,
    ProtocolError,
    ReceiveTimeoutError,
    RemoteError,
    ResourceError,
    UnknownInterfaceError,
    UnknownSocketError,
    UnsupportedGroupError,
    UnsupportedOperationError,
    UsageError,
    WouldBlockError,
)
from hamcast.events import (
    BindingChanged,
    Event,
    InterfaceChanged,
    MemberJoined,
    MemberLeft,
    MembershipEvent,
    SourceAppeared,
)
from hamcast.model import GroupRole, GroupSetEntry, Interface, Message, SocketStats
from hamcast.uri import URI, parse_uri

__version__ = "0.1.0"

__all__ = [
    "URI",
    "BindingChanged",
    "ClosedError",
    "DaemonUnavailableError",
    "Event",
    "GroupRole",
    "GroupSetEntry",
    "HamcastError",
    "Interface",
    "InterfaceChanged",
    "InvalidURIError",
    "MemberJoined",
    "MemberLeft",
    "MembershipEvent",
    "Message",
    "MessageTooLongError",
    "MulticastSocket",
    "NotJoinedError",
    "ProtocolError",
    "ReceiveTimeoutError",
    "RemoteError",
    "ResourceError",
    "SocketStats",
    "SourceAppeared",
    "UnknownInterfaceError",
    "UnknownSocketError",
    "UnsupportedGroupError",
    "UnsupportedOperationError",
    "UsageError",
    "WouldBlockError",
    "__version__",
    "parse_uri",
]
