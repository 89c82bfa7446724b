"""A real S3-protocol server on loopback for the remote tests (moto's server mode).

``s3_server`` starts one ThreadedMotoServer per test session on 127.0.0.1 and a free port,
with dummy credentials in the environment (inherited by pivotbuild subprocesses) and every AWS
config file pointed away, so nothing on the machine leaks in. ``s3_bucket`` gives each test a
fresh bucket. pivotbuild reaches the server through s3fs with ``endpoint_url``, exactly as it
would reach MinIO or AWS.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

_ENV = {
    "AWS_ACCESS_KEY_ID": "pivotbuild-test",
    "AWS_SECRET_ACCESS_KEY": "pivotbuild-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/pivotbuild-test/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/pivotbuild-test/credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_DROP = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
_counter = itertools.count()


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def filesystem(self):
        """An s3fs file system on this server, for the tests' own looks."""
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True,
                                 use_listings_cache=False)


def free_port() -> int:
    """A loopback port nothing listens on (closed again at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    saved = {k: os.environ.get(k) for k in (*_ENV, *_DROP)}
    os.environ.update(_ENV)
    for key in _DROP:
        os.environ.pop(key, None)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(),
                                           verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def dead_s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    """An endpoint URL on loopback where nothing listens, with botocore's retries off (in this
    process and the pivotbuild subprocesses) so that the failure comes at once."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket's name."""
    name = f"pivot-test-{os.getpid()}-{next(_counter)}"
    s3_server.filesystem().mkdir(name)
    return name
