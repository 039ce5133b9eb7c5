"""Tests for the ``hamcast`` command line and the demo, as real processes.

Every command runs as ``python -m hamcast.cli`` in a subprocess; the client
commands talk to a real daemon process started on a socket in a temporary
directory. Nothing sleeps: readiness is polled with a bounded deadline (the
daemon's socket accepting connections) or read from the status line
``recv`` and ``events`` print once they listen.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hamcast.cli.daemon import build_config
from hamcast.cli.parser import build_parser
from hamcast.mapping import map_group
from hamcast.uri import URI

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "hamcast.cli"]
#: Seconds any one step may take before the test fails instead of hanging.
DEADLINE = 10.0


def _env() -> dict[str, str]:
    # Each test names its socket; a HAMCAST_SOCKET of the person running the
    # tests must not leak in.
    env = dict(os.environ)
    env.pop("HAMCAST_SOCKET", None)
    return env


def hamcast(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command to completion."""
    result = subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        timeout=DEADLINE,
        env=_env(),
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8"),
        result.stderr.decode("utf-8"),
    )


def at(socket_path: str, command: str, *more: str) -> list[str]:
    """Arguments for ``command`` (words separated by spaces) on the daemon at ``socket_path``."""
    return ["--socket", socket_path, *command.split(), *more]


def start(*args: str) -> subprocess.Popen[bytes]:
    """Start a command in the background, with its output piped."""
    return subprocess.Popen(
        [*CLI, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )


def read_status_line(proc: subprocess.Popen[bytes]) -> str:
    """The first line ``proc`` writes to standard error, within the deadline."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    data = b""
    deadline = time.monotonic() + DEADLINE
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no status line from {proc.args!r}; got {data!r}"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 4096)
            assert chunk, f"{proc.args!r} exited early: {data!r}"
            data += chunk
    return data.decode("utf-8")


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    """Wait for ``proc``; its exit code, standard output and the rest of its standard error."""
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out.decode("utf-8"), err.decode("utf-8")


def assert_clean_error(stderr: str, text: str) -> None:
    """One ``hamcast: error:`` line mentioning ``text``, and no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("hamcast: error: ")]
    assert len(errors) == 1, stderr
    assert text in errors[0]


# --- a real daemon -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A daemon process on a socket of its own; yields the socket path.

    At the end it is stopped with SIGTERM and must exit 0 and remove its socket.
    """
    folder = tmp_path_factory.mktemp("daemon")
    path = str(folder / "hamcastd.sock")
    log_path = folder / "hamcastd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*CLI, "daemon", "--socket", path, "--log-level", "warning"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=_env(),
        )
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            assert proc.poll() is None, f"daemon exited: {log_path.read_text()}"
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                break
            except OSError:
                assert time.monotonic() < deadline, "daemon did not start listening"
                # Polling the socket is the only readiness signal the daemon
                # process gives; the pause bounds how often we look.
                time.sleep(0.02)
            finally:
                probe.close()
        yield path
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0, log_path.read_text()
        assert not os.path.exists(path), "the daemon left its socket behind"
        assert "Traceback" not in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- map: no middleware needed -------------------------------------------------------------


def test_map_json_gives_parts_and_every_mapped_address() -> None:
    result = hamcast("map", "ham:ip:[FF3E::1234]@[2001:db8::1]:5000", "--json")
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)
    uri = URI.parse("ham:ip:[ff3e::1234]@[2001:db8::1]:5000")
    mapping = map_group(uri)
    assert value["uri"] == str(uri)
    assert value["parts"] == {
        "namespace": "ip",
        "group": "ff3e::1234",
        "instantiation": "2001:db8::1",
        "port": 5000,
        "credentials": None,
        "wildcard": False,
        "ssm": True,
    }
    assert value["mapping"] == {
        "overlay_key": f"{mapping.overlay_key:032x}",
        "ipv4": str(mapping.ipv4),
        "ipv6": "ff3e::1234",
        "port": 5000,
        "source": "2001:db8::1",
    }


def test_map_table_shows_the_addresses() -> None:
    result = hamcast("map", "ham:opaque:news")
    assert result.returncode == 0, result.stderr
    mapping = map_group(URI.parse("ham:opaque:news"))
    for shown in (f"{mapping.overlay_key:032x}", str(mapping.ipv4), str(mapping.ipv6)):
        assert shown in result.stdout


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("ham:ip:10.0.0.1", "not a multicast address"),
        ("http:opaque:news", "scheme must be 'ham'"),
        ("", "empty URI"),
    ],
)
def test_map_bad_uri_is_a_usage_error_without_traceback(uri: str, reason: str) -> None:
    result = hamcast("map", uri)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_clean_error(result.stderr, reason)


def test_bad_option_value_is_a_usage_error() -> None:
    result = hamcast("--embedded", "recv", "ham:opaque:x", "--count", "0")
    assert result.returncode == 2
    assert "--count" in result.stderr and "Traceback" not in result.stderr


# --- send and receive through a daemon --------------------------------------------------


def test_send_and_recv_exchange_messages_through_the_daemon(daemon_socket: str) -> None:
    receiver = start(
        *at(daemon_socket, "--daemon-only recv ham:opaque:cli-test --count 3 --json --timeout 10")
    )
    assert "receiving ham:opaque:cli-test via the daemon" in read_status_line(receiver)

    # Global options after the command name work as well as before it.
    groups = hamcast("groups", "--json", "--socket", daemon_socket, "--daemon-only")
    assert groups.returncode == 0, groups.stderr
    [row] = [r for r in json.loads(groups.stdout) if r["group"] == "ham:opaque:cli-test"]
    assert row == {
        "group": "ham:opaque:cli-test",
        "technology": "local",
        "interface": 1,
        "listeners": 1,
        "senders": 0,
        "reason": "local: this host only (no other technology is usable)",
        "gateway": False,
        "messages_in": 0,
        "bytes_in": 0,
        "messages_out": 0,
        "bytes_out": 0,
        "drops": 0,
        "direct_senders": 0,
        "direct_listeners": 0,
    }

    sent = hamcast(*at(daemon_socket, "--daemon-only send ham:opaque:cli-test hello --count 3"))
    assert sent.returncode == 0, sent.stderr
    assert "sent 3 messages (15 bytes) to ham:opaque:cli-test" in sent.stdout

    code, out, err = finish(receiver)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line["source"].startswith("local:")
        del line["source"]
        assert line == {
            "group": "ham:opaque:cli-test",
            "interface": 1,
            "technology": "local",
            "size": 5,
            "encoding": "utf-8",
            "payload": "hello",
        }


def test_send_lines_padding_and_binary_payloads(daemon_socket: str) -> None:
    receiver = start(*at(daemon_socket, "recv ham:opaque:cli-lines --count 3 --json --timeout 10"))
    read_status_line(receiver)
    sent = hamcast(
        *at(daemon_socket, "--json send ham:opaque:cli-lines --lines --count 3 --size 4"),
        stdin=b"text\r\n\xff\xfe\n\nnot sent, past --count\n",
    )
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["sent"] == 3 and summary["bytes"] == 12 and summary["send_failed"] == 0

    code, out, err = finish(receiver)
    assert code == 0, err
    payloads = [(m["encoding"], m["payload"], m["size"]) for m in map(json.loads, out.splitlines())]
    binary = base64.b64encode(b"\xff\xfe..").decode()
    assert payloads == [("utf-8", "text", 4), ("base64", binary, 4), ("utf-8", "....", 4)]


def test_message_longer_than_size_is_a_usage_error() -> None:
    result = hamcast("--embedded", "send", "ham:opaque:x", "too long", "--size", "4")
    assert result.returncode == 2
    assert_clean_error(result.stderr, "MESSAGE is 8 bytes, longer than --size 4")


def test_recv_timeout_exits_1_with_a_message(daemon_socket: str) -> None:
    result = hamcast(*at(daemon_socket, "recv ham:opaque:silence --timeout 0.2"))
    assert result.returncode == 1
    assert_clean_error(result.stderr, "timed out after 0.2 s waiting for messages")


def test_recv_interrupted_exits_130_quietly(daemon_socket: str) -> None:
    receiver = start(*at(daemon_socket, "recv ham:opaque:interrupt"))
    read_status_line(receiver)
    receiver.send_signal(signal.SIGINT)
    code, out, err = finish(receiver)
    assert code == 130
    assert out == "" and err == ""


def test_events_report_join_and_leave(daemon_socket: str) -> None:
    watcher = start(*at(daemon_socket, "events --count 2 --json --timeout 10"))
    assert "watching membership events" in read_status_line(watcher)
    # A receiver that joins, times out at once and leaves on exit.
    hamcast(*at(daemon_socket, "recv ham:opaque:cli-events --timeout 0"))
    code, out, err = finish(watcher)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["event"], e["group"], e["technology"]) for e in events] == [
        ("join", "ham:opaque:cli-events", "local"),
        ("leave", "ham:opaque:cli-events", "local"),
    ]


# --- inspecting commands ---------------------------------------------------------------------


def test_interfaces_json(daemon_socket: str) -> None:
    result = hamcast(*at(daemon_socket, "--daemon-only interfaces --json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"index": 1, "name": "local", "address": "localhost", "technology": "local", "status": {}}
    ]
    assert result.stderr == ""


def test_info_names_the_daemon(daemon_socket: str) -> None:
    result = hamcast(*at(daemon_socket, "info --json"))
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)
    assert value["mode"] == "daemon" and value["socket"] == daemon_socket
    assert value["technologies"] == ["local"]


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ("neighbors", []),
        ("children ham:opaque:x", []),
        ("parents ham:opaque:x --interface 1", []),
        ("designated ham:opaque:x", True),
    ],
)
def test_service_calls_json(daemon_socket: str, command: str, answer: object) -> None:
    result = hamcast(*at(daemon_socket, command, "--json"))
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["interface"] == 1 and row["technology"] == "local"
    assert row[command.split(maxsplit=1)[0]] == answer


def test_unknown_interface_is_a_usage_error(daemon_socket: str) -> None:
    result = hamcast(*at(daemon_socket, "neighbors --interface 99"))
    assert result.returncode == 2
    assert_clean_error(result.stderr, "no interface with index 99")


# --- without a daemon ---------------------------------------------------------------------


def test_daemon_required_but_none_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody-here.sock")
    result = hamcast(*at(path, "--daemon-only interfaces"))
    assert result.returncode == 1
    assert_clean_error(result.stderr, f"no hamcast daemon answers on {path}")
    assert "hamcast daemon --socket" in result.stderr


def test_without_daemon_falls_back_to_embedded_with_a_note(tmp_path: Path) -> None:
    result = hamcast(*at(str(tmp_path / "absent.sock"), "info --json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mode"] == "embedded"
    assert "note: no daemon answers" in result.stderr


def test_message_too_long_is_a_usage_error() -> None:
    result = hamcast("--embedded", "send", "ham:opaque:big", "--size", "70000")
    assert result.returncode == 2
    assert_clean_error(result.stderr, "EMSGSIZE")


def test_daemon_refuses_a_second_daemon_on_its_socket(daemon_socket: str) -> None:
    result = hamcast("daemon", "--socket", daemon_socket)
    assert result.returncode == 1
    assert_clean_error(result.stderr, "already running")


def test_daemon_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "hamcastd.toml"
    config.write_text('technologies = ["local"]\nbogus = 1\n')
    result = hamcast("daemon", "--config", str(config), "--socket", str(tmp_path / "d.sock"))
    assert result.returncode == 2
    assert_clean_error(result.stderr, "'bogus'")


def test_daemon_socket_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --socket, then $HAMCAST_SOCKET, then the config file: clients read only
    # the variable, so it must win over the file to point both at one place.
    config = tmp_path / "hamcastd.toml"
    config.write_text('socket = "/from/file.sock"\ntechnologies = ["local"]\n')

    def socket_for(*argv: str) -> str:
        return build_config(build_parser().parse_args(argv)).socket

    monkeypatch.delenv("HAMCAST_SOCKET", raising=False)
    assert socket_for("daemon", "--config", str(config)) == "/from/file.sock"
    monkeypatch.setenv("HAMCAST_SOCKET", "/from/env.sock")
    assert socket_for("daemon", "--config", str(config)) == "/from/env.sock"
    assert socket_for("daemon", "--config", str(config), "--socket", "/flag.sock") == "/flag.sock"
    assert socket_for("--socket", "/before.sock", "daemon") == "/before.sock"


# --- the demo ---------------------------------------------------------------------------


def test_demo_tour_runs_and_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hamcast.demo", "--tour"],
        capture_output=True,
        timeout=30,
        env=_env(),
        check=False,
    )
    output = result.stdout.decode("utf-8") + result.stderr.decode("utf-8")
    assert result.returncode == 0, output
    assert "all 20 messages arrived" in output
    assert "Traceback" not in output
