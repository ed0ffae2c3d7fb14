"""A real S3 endpoint for the sync tests: moto's HTTP server in its own process on 127.0.0.1.

boto3 talks to it over TCP exactly as it talks to AWS or SeaweedFS (no patched clients, no
in-process mock). It is started per test module with a private TMPDIR and killed at the end
(SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a `cachewatch` subprocess that should use this server."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env.update(extra)
        return env

    def client(self) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        ).client("s3", endpoint_url=self.endpoint)


def start_moto(tmp: Path, **env: str) -> S3Server:
    import moto.server  # noqa: F401  -- in the dev extra; a missing one fails here, loudly, rather than skipping
    port = _free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    full = dict(os.environ, TMPDIR=str(tmp), **env)
    log = open(tmp / "moto.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)],
        env=full, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start: {(tmp / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.1)
    return S3Server(f"http://127.0.0.1:{port}", proc)


def stop_moto(server: S3Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        stop_moto(server)


_buckets = iter(range(10_000))


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """A fresh bucket per test (names must be 3+ characters)."""
    name = f"bucket-{os.getpid()}-{next(_buckets)}"
    s3_server.client().create_bucket(Bucket=name)
    return f"s3://{name}/team/cache"


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The same variables in this process too (for in-process push/pull)."""
    env = s3_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env
