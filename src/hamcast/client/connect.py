"""Finding the middleware: the daemon's Unix socket, or the embedded runtime."""

from __future__ import annotations

import errno
import logging
import socket

from hamcast.config import default_socket_path
from hamcast.errors import DaemonUnavailableError

__all__ = ["open_stream"]

logger = logging.getLogger(__name__)

_ABSENT = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR)


def open_stream(socket_path: str | None, embedded: bool | None) -> tuple[socket.socket, str]:
    """A connected stream to a middleware, and which kind (``daemon`` / ``embedded``).

    ``embedded=True`` always runs the middleware in this process; ``False``
    requires a daemon; ``None`` (the default) uses the daemon when one
    answers on the socket path and falls back to embedded otherwise.
    """
    if embedded:
        from hamcast.client.embedded import embedded_runtime

        return embedded_runtime().connect(), "embedded"
    path = socket_path or default_socket_path(client=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        if embedded is None and exc.errno in _ABSENT:
            logger.info("no hamcast daemon at %s; using the embedded middleware", path)
            from hamcast.client.embedded import embedded_runtime

            return embedded_runtime().connect(), "embedded"
        if exc.errno == errno.EACCES:
            raise DaemonUnavailableError(
                f"no permission to use the hamcast daemon socket {path}: "
                "join the socket's group or run the daemon with another --socket"
            ) from None
        raise DaemonUnavailableError(
            f"no hamcast daemon answers on {path} ({exc.strerror}): "
            "start one with `hamcast daemon`, or pass embedded=True"
        ) from None
    return sock, "daemon"
