"""``hamcastd``: the middleware core served on a Unix socket.

:class:`Daemon` owns the core, the technology modules and every client
session. :meth:`Daemon.serve` runs until :meth:`Daemon.stop` (or SIGTERM /
SIGINT through :func:`run`); then every session is closed, every group left,
and the socket file removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from hamcast.config import DaemonConfig
from hamcast.core.middleware import Middleware
from hamcast.daemon.session import ClientSession
from hamcast.errors import ResourceError, UsageError
from hamcast.technologies.base import Technology, load_technology

if TYPE_CHECKING:
    from hamcast.monitor.endpoint import MonitorEndpoint

__all__ = ["Daemon", "run"]

logger = logging.getLogger(__name__)


class Daemon:
    """The middleware of one host, reachable over IPC."""

    def __init__(self, config: DaemonConfig, technologies: list[Technology] | None = None):
        self.config = config
        if technologies is None:
            technologies = [
                load_technology(name, config.technology_options.get(name))
                for name in config.technologies
            ]
        self.middleware = Middleware(technologies, config.core)
        self._sessions: set[ClientSession] = set()
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self.ready = asyncio.Event()
        #: The read-only HTTP monitoring endpoint, when ``[monitor] listen`` is set.
        self.monitor: MonitorEndpoint | None = None

    # --- sessions ----------------------------------------------------------------

    def _new_session(self) -> ClientSession:
        session = ClientSession(self.middleware, self.config.session, self._sessions.discard)
        self._sessions.add(session)
        return session

    async def attach(self, sock: socket.socket) -> None:
        """Serve one already-connected stream socket (the embedded runtime's half)."""
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(self._new_session, sock)

    # --- lifecycle ---------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Start the technologies and, with ``listen``, the IPC socket."""
        self._stopping = asyncio.Event()
        await self.middleware.start()
        if self.config.monitor.listen:
            # Imported only when enabled: aiohttp costs a daemon that does not monitor.
            from hamcast.monitor.endpoint import MonitorEndpoint

            endpoint = MonitorEndpoint(self.middleware, self.config.monitor)
            try:
                await endpoint.start()
            except BaseException:
                await self.middleware.stop()
                raise
            self.monitor = endpoint
            where = endpoint.url.removeprefix("http://")
            if endpoint.url.startswith("http://") and not where.startswith(("127.", "[::1]")):
                # Other hosts' collectors learn it from the link announcements.
                self.middleware.offer("monitor", where)
        if listen:
            path = self.config.socket
            _prepare_socket_path(path)
            # The socket must never exist with looser permissions than configured.
            old_umask = os.umask(0o777 & ~self.config.socket_mode)
            try:
                self._server = await asyncio.get_running_loop().create_unix_server(
                    self._new_session, path=path
                )
            finally:
                os.umask(old_umask)
            os.chmod(path, self.config.socket_mode)
            logger.info(
                "hamcastd listening on %s with %s",
                path,
                ", ".join(t.name for t in self.middleware.technologies),
            )
        self.ready.set()

    def stop(self) -> None:
        """Ask :meth:`serve` to shut down (safe to call from a signal handler)."""
        if self._stopping is not None:
            self._stopping.set()

    async def close(self) -> None:
        """Close every session, leave every group, remove the socket file."""
        if self.monitor is not None:
            await self.monitor.stop()
            self.monitor = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.socket)
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await asyncio.sleep(0)  # let connection_lost run for the closed sessions
        await self.middleware.stop()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def run_until_stopped(self) -> None:
        """After :meth:`start`: wait for :meth:`stop`, then :meth:`close`."""
        assert self._stopping is not None, "start() first"
        try:
            await self._stopping.wait()
        finally:
            await self.close()

    async def serve(self, *, listen: bool = True) -> None:
        """Start, run until :meth:`stop`, then :meth:`close`."""
        await self.start(listen=listen)
        await self.run_until_stopped()


def _prepare_socket_path(path: str) -> None:
    """Make the socket's folder; refuse if a live daemon owns the path, remove a stale one."""
    parent = Path(path).parent
    try:
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        owner = parent.stat().st_uid
    except OSError as exc:
        raise UsageError(f"cannot create {parent} for the IPC socket: {exc.strerror}") from None
    if owner not in (os.geteuid(), 0):
        # Someone else made the folder first (e.g. /tmp/hamcast-UID): they could swap the socket.
        raise UsageError(f"{parent} belongs to user {owner}, not to us; choose another --socket")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"{path} exists and is not a socket; remove it or choose --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ResourceError(f"cannot check {path}: {exc.strerror}") from None
        os.unlink(path)  # stale: its daemon died without cleaning up
    else:
        raise ResourceError(f"another hamcastd is already running on {path}")
    finally:
        probe.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An event loop for the data path: uvloop when installed (DESIGN.md §11)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(config: DaemonConfig) -> int:
    """Run a daemon in the foreground until SIGTERM or SIGINT; returns the exit code."""

    async def main() -> None:
        daemon = Daemon(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop)
        await daemon.serve()
        logger.info("hamcastd stopped")

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
    return 0
