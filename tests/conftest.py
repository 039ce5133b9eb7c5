"""Shared fixtures: real daemon processes on a private Unix socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hamcast.testbed.daemons import answers

__all__ = ["answers", "start_daemon", "wait_until"]

READY_TIMEOUT = 15.0


@dataclass
class DaemonProcess:
    """A ``hamcast daemon`` child process and its socket path."""

    process: subprocess.Popen[bytes]
    socket: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def wait_until(condition: object, timeout: float, what: str) -> None:
    """Poll ``condition()`` (a real process's readiness) until a bounded deadline."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_daemon(path: str, *extra: str) -> DaemonProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A file, not a pipe: nobody reads the log while the test runs, and a full
    # pipe would stall the daemon.
    log = Path(path).with_suffix(".log")
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "hamcast.cli", "daemon", "--socket", path, *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    daemon = DaemonProcess(process, path, log)
    try:
        wait_until(lambda: answers(path) or process.poll() is not None, READY_TIMEOUT, "daemon")
    except AssertionError:
        daemon.stop(signal.SIGKILL)
        raise
    if process.poll() is not None:
        raise AssertionError(f"daemon exited with {process.returncode}: {log.read_text()}")
    return daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A fresh daemon with the ``local`` technology, stopped after the test."""
    proc = start_daemon(str(tmp_path / "hamcastd.sock"))
    yield proc
    if proc.process.poll() is None:
        proc.stop(signal.SIGKILL)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly, at the end, what this machine's kernel kept from running."""
    from hamcast.testbed import multicast_routing_missing

    missing = multicast_routing_missing()
    if missing is not None:
        terminalreporter.write_sep("*", "NO MULTICAST ROUTING IN THIS KERNEL", yellow=True)
        terminalreporter.write_line(
            f"*** {missing}: tests of routed multicast (pimd, smcroute) were SKIPPED;"
            " the standard topology, the hybrid scenario and the monitor test ran with"
            " unicast-only routers ***"
        )
