"""Embedded mode ("HAMcast lite"): the middleware inside the application process.

The first socket that asks for it starts a :class:`~hamcast.daemon.server.Daemon`
without a listening socket on an event loop in a background thread. Each
client then talks to it over its own ``socketpair`` with the ordinary IPC
protocol, so embedded and daemon mode behave the same in every respect
except that only this process's sockets share the groups.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import socket
import threading

from hamcast.config import DaemonConfig
from hamcast.daemon.server import Daemon, new_event_loop

__all__ = ["EmbeddedRuntime", "embedded_runtime"]

logger = logging.getLogger(__name__)


class EmbeddedRuntime:
    """A daemon on a private event-loop thread of this process."""

    def __init__(self, config: DaemonConfig | None = None) -> None:
        self.config = config or DaemonConfig()
        self._loop = new_event_loop()
        self._daemon: Daemon | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hamcast-embedded", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._daemon = Daemon(self.config)
            self._loop.run_until_complete(self._daemon.start(listen=False))
        except BaseException as exc:
            self._failure = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_until_complete(self._daemon.run_until_stopped())
        self._loop.close()

    def connect(self) -> socket.socket:
        """A new stream socket connected to the embedded middleware."""
        assert self._daemon is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        future = asyncio.run_coroutine_threadsafe(self._daemon.attach(theirs), self._loop)
        future.result()
        return ours

    def shutdown(self) -> None:
        """Stop the middleware (all sessions closed); used at interpreter exit."""
        if self._daemon is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._daemon.stop)
            self._thread.join(timeout=5)


_runtime: EmbeddedRuntime | None = None
_runtime_lock = threading.Lock()


def embedded_runtime() -> EmbeddedRuntime:
    """The process's embedded middleware, started on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            logger.info("running the hamcast middleware embedded in this process")
            _runtime = EmbeddedRuntime()
            atexit.register(_runtime.shutdown)
        return _runtime
