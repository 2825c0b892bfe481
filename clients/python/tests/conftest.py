"""The real jobstatus binary for every test: a server on a free port with
its own SQLite file, started and stopped (SIGTERM, exit 0) by the fixture.
Tokens are minted by the binary itself (`jobstatus token`), or by simplejwt
as the platform's Django backend does.

JOBSTATUS_BIN names the binary (default: target/debug/jobstatus at the
repository root; `cargo build` makes it).
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = os.environ.get("JOBSTATUS_BIN", str(REPO / "target" / "debug" / "jobstatus"))
SECRET = "python-client-test-secret-0123456789abcdef"
SERVICE = "platform"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One jobstatus process; restartable on the same port and database."""

    def __init__(self, directory: Path, extra_args=()):
        self.addr = f"127.0.0.1:{free_port()}"
        self.database_url = f"sqlite://{directory / 'jobs.db'}"
        self.extra_args = list(extra_args)
        self.process = None

    def start(self) -> None:
        if not Path(BIN).exists():
            pytest.fail(f"{BIN} not found: run `cargo build` first or set JOBSTATUS_BIN")
        self.process = subprocess.Popen(
            [BIN, "serve", "--listen", self.addr, "--database-url", self.database_url,
             "--heartbeat-secs", "1", *self.extra_args],
            env={**os.environ, "JOBSTATUS_JWT_SECRET": SECRET, "RUST_LOG": "warn"},
            stdin=subprocess.DEVNULL,
        )
        channel = grpc.insecure_channel(self.addr)
        try:
            grpc.channel_ready_future(channel).result(timeout=15)
        finally:
            channel.close()

    def stop(self) -> None:
        """SIGTERM, and the clean exit the README promises."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=15)
        self.process = None
        assert code == 0, f"jobstatus exited {code} after SIGTERM"


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def server_factory(tmp_path):
    """A server with extra flags: server_factory("--max-watches-per-user", "1")."""
    started = []

    def make(*extra_args):
        s = Server(tmp_path / f"s{len(started)}", extra_args)
        (tmp_path / f"s{len(started)}").mkdir()
        s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def token(subject: str, service: bool = False, ttl_secs: int = 3600) -> str:
    """A token minted by `jobstatus token`."""
    args = [BIN, "token", "--sub", subject, f"--ttl-secs={ttl_secs}", "--jwt-secret", SECRET]
    if service:
        args.append("--service")
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def wait_until(condition, timeout=10.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


_django_ready = False


def simplejwt():
    """simplejwt's token classes, configured the way the platform's Django
    settings must be to talk to jobstatus: HS256 with the shared secret."""
    global _django_ready
    if not _django_ready:
        from django.conf import settings

        settings.configure(
            SECRET_KEY="django-test-key",
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                            "rest_framework_simplejwt"],
            SIMPLE_JWT={"ALGORITHM": "HS256", "SIGNING_KEY": SECRET},
            DATABASES={},
        )
        import django

        django.setup()
        _django_ready = True
    from rest_framework_simplejwt import tokens

    return tokens
