"""Opening the multicast socket a client command works with, as the global options say.

``--embedded`` runs the middleware in the command's own process,
``--daemon-only`` requires a daemon, and neither (the default) uses the daemon
when one answers and falls back to the embedded middleware otherwise, with a
note on standard error: an embedded middleware shares groups only with the
command's own sockets, so ``recv`` there would wait for nothing.
"""

from __future__ import annotations

import argparse
import errno
from collections.abc import Iterator
from contextlib import contextmanager

from hamcast.cli.render import Output
from hamcast.client.sync import MulticastSocket
from hamcast.config import default_socket_path
from hamcast.errors import DaemonUnavailableError

__all__ = ["describe_mode", "open_socket", "socket_path"]


def socket_path(args: argparse.Namespace) -> str:
    """The daemon's IPC socket: ``--socket``, else ``$HAMCAST_SOCKET`` or the default."""
    path: str | None = args.socket
    return path or default_socket_path()


def describe_mode(sock: MulticastSocket, path: str) -> str:
    """Where the socket's middleware runs, for status lines."""
    if sock.mode == "daemon":
        return f"the daemon at {path}"
    return "the embedded middleware"


@contextmanager
def open_socket(args: argparse.Namespace, out: Output, command: str) -> Iterator[MulticastSocket]:
    """A socket on every interface, closed (every group left) when the block ends."""
    path = socket_path(args)
    embedded: bool | None = args.embedded
    try:
        sock = MulticastSocket(socket_path=path, embedded=embedded, name=f"hamcast {command}")
    except DaemonUnavailableError as exc:
        raise _for_the_command_line(exc, path) from None
    with sock:
        if embedded is None and sock.mode == "embedded":
            out.note(
                f"no daemon answers on {path}; using an embedded middleware that only this"
                " command's own sockets share (start one with `hamcast daemon`, or pass"
                " --embedded to silence this note)"
            )
        yield sock


def _for_the_command_line(exc: DaemonUnavailableError, path: str) -> DaemonUnavailableError:
    # The library's message suggests the API's embedded=True; say what to
    # type instead. Permission problems keep their own, already precise, message.
    cause = exc.__context__
    if isinstance(cause, OSError):
        if cause.errno == errno.EACCES:
            return exc
        reason = f" ({cause.strerror})" if cause.strerror else ""
    else:
        return exc
    return DaemonUnavailableError(
        f"no hamcast daemon answers on {path}{reason}: start one with"
        f" `hamcast daemon --socket {path}`, or leave out --daemon-only"
    )
