"""`make demo` in miniature: it completes, catches the cheater, and Ctrl-C stops every server it started."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import process_alive

ROOT = Path(__file__).resolve().parents[1]


def _demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "demo", *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.slow
def test_small_demo_runs_to_its_verdict() -> None:
    process = _demo("--miners", "3", "--rows", "2000")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert "demo finished" in output and "the cheating miner fails" in output
    assert "the copier is caught by the audit" in output and "byte" in output
    assert output.count("[") >= 8 and "[8/8]" in output


@pytest.mark.slow
def test_ctrl_c_stops_every_server() -> None:
    process = _demo("--miners", "3", "--rows", "20000")
    assert process.stdout is not None
    seaweed_pid = None
    deadline = time.monotonic() + 120
    for line in process.stdout:  # wait until the servers are up and the databases are being made
        match = re.search(r"SeaweedFS at \S+ \(pid (\d+)\)", line)
        if match:
            seaweed_pid = int(match.group(1))
        if "[2/8]" in line or time.monotonic() > deadline:
            break
    assert seaweed_pid is not None and process_alive(seaweed_pid)
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 130, rest[-2000:]
    assert "every server this demo started has been stopped" in rest
    assert not process_alive(seaweed_pid)
