"""The SeaweedFS runner never leaves a server behind, even when its parent dies without calling stop()."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import os, sys
from storage_core_s3.testing import SeaweedFS
server = SeaweedFS(sys.argv[1]).start()
print(server.pid, flush=True)
os._exit(0)  # die like an OOM-killed test run: no stop(), no atexit
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie waiting for its reaper is as good as gone
        return handle.read().split(")")[-1].split()[0] != "Z"


def test_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    pid = int(run.stdout.split()[-1])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), f"weed {pid} outlived its parent"
