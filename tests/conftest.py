"""Shared fixtures: real Redis and PostgreSQL servers for integration tests.

Each service is found, in order, through ``POSTROOM_TEST_REDIS_URL`` /
``POSTROOM_TEST_POSTGRES_URL``, else a throw-away server started from the binaries on PATH (bound
to 127.0.0.1, stopped at the end of the session). When neither works the test is skipped with the
reason, except under ``CI=true``, where a missing service is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if _ci():
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class RedisServer:
    """A throw-away ``redis-server`` on its own port, with nothing kept on disk."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not _wait_for_port(self.port, 10):
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """URL of a real Redis server for the whole test session."""
    url = os.environ.get("POSTROOM_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer()
    try:
        server.start()
    except RuntimeError as exc:
        _unavailable(f"no Redis: set POSTROOM_TEST_REDIS_URL or put redis-server on PATH ({exc})")
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """A Redis URL plus a cleanup of every key this test created under its own prefix.

    Tests name their keys with the ``redis_prefix`` fixture so they never see each other's data.
    """
    yield redis_server_url


@pytest.fixture
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    """A unique key/queue name for one test; every key starting with it is deleted afterwards."""
    redis = pytest.importorskip("redis")
    prefix = f"postroom-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_server_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _start_throwaway_postgres(workdir: Path) -> tuple[str, subprocess.Popen[bytes] | None]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("initdb/pg_ctl are not on PATH")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        raise RuntimeError("initdb refuses to run as root")
    data = workdir / "pgdata"
    subprocess.run(
        [initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    subprocess.run(
        [
            pg_ctl,
            "-D",
            str(data),
            "-o",
            f"-p {port} -k {workdir} -h 127.0.0.1",
            "-w",
            "start",
            "-l",
            str(workdir / "pg.log"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", None


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a real PostgreSQL server (an admin database) for the whole test session."""
    url = os.environ.get("POSTROOM_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    workdir = Path(tempfile.mkdtemp(prefix="postroom-pg-"))
    try:
        url, _ = _start_throwaway_postgres(workdir)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        _unavailable(f"no PostgreSQL: set POSTROOM_TEST_POSTGRES_URL ({exc})")
    yield url
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        subprocess.run(
            [pg_ctl, "-D", str(workdir / "pgdata"), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"postroom_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_server_url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
