"""The grant service as its own process (``storage-core s3 serve``), as it runs in production.

    with GrantServiceProcess(bucket=..., endpoint_url=store.endpoint_url, access_key=store.access_key,
                             secret_key=store.secret_key, service_hotkey=..., miners=[...]) as service:
        print(service.url)

It binds 127.0.0.1 on a free port, runs in its own process group, is waited for until ``/healthz?deep=1``
answers, and is stopped by its process id (SIGTERM to the group, then SIGKILL). Its JSON-lines log is in
``log_path``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from storage_core_s3.testing.seaweed import free_ports


class GrantServiceProcess:
    """``python -m storage_core s3 serve`` with a static allow-list, for demos and benchmarks."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        service_hotkey: str,
        miners: Iterable[str] = (),
        validators: Iterable[str] = (),
        extra_args: Iterable[str] = (),
        log_path: Path | str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.port = free_ports(1)[0]
        self.args = [
            sys.executable, "-m", "storage_core", "s3", "serve",
            "--bucket", bucket, "--endpoint-url", endpoint_url, "--service-hotkey", service_hotkey,
            "--host", "127.0.0.1", "--port", str(self.port),
        ]
        for hotkey in miners:
            self.args += ["--allow-miner", hotkey]
        for hotkey in validators:
            self.args += ["--allow-validator", hotkey]
        self.args += list(extra_args)
        self.env = {**os.environ, "STORAGE_CORE_S3_ACCESS_KEY": access_key, "STORAGE_CORE_S3_SECRET_KEY": secret_key}
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="grant-service-", suffix=".log")[1])
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> GrantServiceProcess:
        self._log = open(self.log_path, "ab")
        self._process = subprocess.Popen(self.args, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                log = self.log_path.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"the grant service exited with code {code}:\n{log}")
            try:
                if httpx.get(self.url + "/healthz?deep=1", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the grant service did not answer within {self.startup_timeout:g}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> GrantServiceProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
