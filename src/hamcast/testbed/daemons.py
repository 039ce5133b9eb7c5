"""hamcast daemons in test-bed nodes (or on this host), for the hybrid demo and tests.

Each daemon is a real ``hamcast daemon`` process started in a node's network
namespace; its IPC socket is a file in ``folder``, which belongs to no
namespace, so this process talks to every daemon with the ordinary client
library. Without a network (``net=None``) the daemons run on this host, for
the loopback variant of the demo.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hamcast.client.sync import MulticastSocket
from hamcast.errors import DaemonUnavailableError
from hamcast.testbed.network import Network

__all__ = ["DaemonSet", "answers"]

#: Seconds a daemon may take until its socket answers.
START_TIMEOUT = 20.0


def answers(path: str) -> bool:
    """Whether a daemon accepts connections on the Unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class DaemonSet:
    """Daemons by host name, all with the config file ``folder/hamcastd.toml``."""

    def __init__(self, net: Network | None, folder: Path, config: str) -> None:
        self.net = net
        self.folder = folder
        self.config = folder / "hamcastd.toml"
        self.config.write_text(config)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def path(self, host: str) -> str:
        return str(self.folder / f"{host}.sock")

    def log(self, host: str) -> str:
        return (self.folder / f"{host}.log").read_text(errors="replace")

    def start(
        self,
        host: str,
        *,
        overlay_listen: str | None = None,
        bootstrap: str | None = None,
        log_level: str = "info",
        wait: bool = True,
        options: Sequence[str] = (),
    ) -> None:
        """Start ``host``'s daemon and (unless ``wait`` is false) wait until its socket answers.

        ``options`` are more ``hamcast daemon`` options (e.g. ``--monitor unix:PATH``).
        """
        argv = [
            sys.executable, "-m", "hamcast.cli", "daemon",
            "--socket", self.path(host),
            "--config", str(self.config),
            "--log-level", log_level,
        ]  # fmt: skip
        if overlay_listen is not None:
            argv += ["--overlay-listen", overlay_listen]
        if bootstrap is not None:
            argv += ["--overlay-bootstrap", bootstrap]
        argv += options
        with (self.folder / f"{host}.log").open("wb") as log:
            if self.net is not None:
                process = self.net.popen(host, argv, stdout=subprocess.DEVNULL, stderr=log)
            else:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
                )
        self.processes[host] = process
        if wait:
            self.wait_ready(host)

    def wait_ready(self, host: str) -> None:
        """Wait until ``host``'s daemon answers on its socket (raise if it died or is late)."""
        process = self.processes[host]
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(self.path(host)):
            if process.poll() is not None:
                raise DaemonUnavailableError(
                    f"the daemon on {host} exited with {process.returncode}: {self.log(host)}"
                )
            if time.monotonic() > deadline:
                raise DaemonUnavailableError(f"the daemon on {host} did not answer in time")
            time.sleep(0.02)

    def socket(self, host: str, *interfaces: int) -> MulticastSocket:
        """A socket of ``host``'s daemon (on all its interfaces unless some are given)."""
        return MulticastSocket(interfaces, socket_path=self.path(host), embedded=False)

    def kill(self, host: str) -> None:
        """End ``host``'s daemon at once (SIGKILL), as a crash would."""
        process = self.processes[host]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> dict[str, int]:
        """SIGTERM to every daemon still running; their exit codes (killed ones: -9)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for host, process in self.processes.items():
            try:
                codes[host] = process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[host] = process.wait()
        return codes

    def __enter__(self) -> DaemonSet:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.stop()
