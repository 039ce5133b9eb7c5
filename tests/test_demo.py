"""``make demo``: the hybrid demo (root, namespaces) and its loopback variant, as processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.testbed_fixtures import require_root

pytestmark = pytest.mark.integration


def run_demo(*args: str, timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "hamcast.demo", *args],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
        check=False,
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "Traceback" not in output
    return output


def test_hybrid_demo_delivers_everything_once_and_leaves_nothing_behind() -> None:
    require_root()
    output = run_demo(timeout=120)
    assert "every receiver got every message exactly once" in output
    for host in ("h2", "h3", "h4", "h5", "d2"):
        assert any(line.split("│")[1:2] == [f" {host:<8} "] for line in output.splitlines()), host
    assert "designated gateway: h" in output, "each island has a gateway"
    assert "overlay Scribe tree" in output
    run = re.search(r"test-bed (\S+) torn down", output)
    assert run is not None, output
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert f"{run.group(1)}-" not in listed.stdout, "the demo removed its namespaces"


def test_loopback_variant() -> None:
    output = run_demo("--loopback", timeout=60)
    assert "every receiver got every message exactly once" in output
    assert "n1  " in output or "n1 " in output


def test_demo_refuses_unknown_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hamcast.demo", "--bogus"], capture_output=True, check=False
    )
    assert result.returncode == 2 and b"usage" in result.stderr
