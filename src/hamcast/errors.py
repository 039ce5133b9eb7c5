"""The one exception hierarchy of hamcast, split by whose fault it is.

* :class:`UsageError` — the caller misused the API (a bad URI, an oversize
  message, an unknown interface). Fix the call.
* :class:`RemoteError` — a peer misbehaved (garbage on the IPC socket, a
  malformed datagram). Nothing the caller did wrong.
* :class:`ResourceError` — something the call needs is closed, gone or busy
  (the daemon is not running, the socket was deleted, a receive timed out).

Every class carries a stable numeric ``code``; the IPC protocol sends that code
in error responses (docs/ipc.md) so a client re-raises the same class the
daemon raised. Codes are part of the protocol: never renumber one.
"""

from __future__ import annotations

import errno
from typing import ClassVar

__all__ = [
    "ClosedError",
    "DaemonUnavailableError",
    "HamcastError",
    "InvalidURIError",
    "MessageTooLongError",
    "NotJoinedError",
    "ProtocolError",
    "ReceiveTimeoutError",
    "RemoteError",
    "ResourceError",
    "UnknownInterfaceError",
    "UnknownSocketError",
    "UnsupportedGroupError",
    "UnsupportedOperationError",
    "UsageError",
    "WouldBlockError",
    "error_class_for_code",
]


class HamcastError(Exception):
    """Root of every error hamcast raises on purpose."""

    code: ClassVar[int] = 1
    #: The closest POSIX errno, for programs that think in those terms.
    errno: int | None = None


# --- the caller's fault ----------------------------------------------------


class UsageError(HamcastError):
    """The API was called wrongly; the message says what to change."""

    code = 100
    errno = errno.EINVAL


class InvalidURIError(UsageError, ValueError):
    """A ``ham:`` URI does not follow the grammar (RFC 7046 §4.2.1).

    ``text`` is the URI as given and ``position`` the 0-based index of the
    first offending character (``len(text)`` when something is missing at
    the end).
    """

    code = 101
    # Class-level defaults: an error re-raised from the IPC wire carries only its message.
    reason: str = ""
    text: str = ""
    position: int | None = None

    def __init__(self, reason: str, text: str = "", position: int = 0) -> None:
        self.reason = reason
        self.text = text
        self.position = position
        where = f" at position {position}" if text else ""
        shown = f" in {text!r}" if text else ""
        super().__init__(f"invalid ham: URI{shown}{where}: {reason}")


class MessageTooLongError(UsageError):
    """A message is larger than the group's maximum message size (EMSGSIZE)."""

    code = 102
    errno = errno.EMSGSIZE
    size: int | None = None
    limit: int | None = None

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"message of {size} bytes is longer than the maximum of {limit} bytes (EMSGSIZE)"
        )


class UnknownInterfaceError(UsageError):
    """An interface index that this host (or this socket) does not have."""

    code = 103
    errno = errno.ENODEV


class UnknownSocketError(UsageError):
    """A socket id that this session never created or already deleted."""

    code = 104
    errno = errno.EBADF


class NotJoinedError(UsageError):
    """Leave or deregister of a group the socket has not joined/registered."""

    code = 105
    errno = errno.EADDRNOTAVAIL


class UnsupportedGroupError(UsageError):
    """No technology on the socket's interfaces can serve this group."""

    code = 106
    errno = errno.EPROTONOSUPPORT


class UnsupportedOperationError(UsageError):
    """The daemon does not know the requested operation (it is older than the client)."""

    code = 107
    errno = errno.EOPNOTSUPP


# --- a peer's fault --------------------------------------------------------


class RemoteError(HamcastError):
    """A peer (daemon, client, network node) sent something it must not."""

    code = 200
    errno = errno.EPROTO


class ProtocolError(RemoteError):
    """Malformed, truncated, oversize or out-of-order protocol input."""

    code = 201


# --- closed, gone or busy ----------------------------------------------------


class ResourceError(HamcastError):
    """Something the call needs is closed, broken or busy."""

    code = 300
    errno = errno.EIO


class DaemonUnavailableError(ResourceError, ConnectionError):
    """No daemon answers on the IPC socket, or it went away mid-session."""

    code = 301
    errno = errno.ECONNREFUSED


class ClosedError(ResourceError):
    """The multicast socket (or its session) was closed."""

    code = 302
    errno = errno.EBADF


class ReceiveTimeoutError(ResourceError, TimeoutError):
    """A receive with a timeout saw no message in time."""

    code = 303
    errno = errno.ETIMEDOUT


class WouldBlockError(ResourceError, BlockingIOError):
    """A non-blocking receive found no message waiting."""

    code = 304
    errno = errno.EAGAIN


def _all_subclasses(cls: type[HamcastError]) -> list[type[HamcastError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


_BY_CODE: dict[int, type[HamcastError]] = {c.code: c for c in _all_subclasses(HamcastError)}


def error_class_for_code(code: int) -> type[HamcastError]:
    """The class for an IPC error code; unknown codes map to the family root."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    family = (code // 100) * 100
    return _BY_CODE.get(family, HamcastError)
