"""Shared fixtures. ``redis_url`` gives the store tests a real Redis: the one named by
``GENREC_TEST_REDIS_URL``, or a throwaway ``redis-server`` started for the session."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

# The repo isn't necessarily pip-installed into the test venv and pytest only puts tests/ on
# sys.path, so make `import service...` work from a plain checkout.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

REDIS_START_TIMEOUT_S = 10.0
INSTALL_HINT = (
    "redis-server not found on PATH; the Redis store tests need it. Install it "
    "(Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`) or point "
    "GENREC_TEST_REDIS_URL at a Redis you can write to (keys are namespaced per test)."
)


def _free_port() -> int:
    # The port is released before redis-server binds it; the small race is handled by retrying.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(binary: str, workdir: Path, port: int | None = None,
                 extra: tuple[str, ...] = ("--save", "", "--appendonly", "no"),
                 ) -> tuple[subprocess.Popen[bytes], int]:
    port = port or _free_port()
    log = workdir / f"redis-{port}.log"
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", *extra, "--dir", str(workdir),
           "--logfile", str(log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {proc.returncode}:\n{detail}")
            try:
                if client.ping():
                    return proc, port
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
            except redis.exceptions.BusyLoadingError:  # replaying its AOF
                time.sleep(0.05)
    finally:
        client.close()
    proc.kill()
    proc.wait()
    raise RuntimeError(
        f"redis-server on port {port} did not answer PING within {REDIS_START_TIMEOUT_S:.0f}s"
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env_url = os.environ.get("GENREC_TEST_REDIS_URL")
    if env_url:
        yield env_url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        # Fail, never skip: a skipped store suite would hide a broken Redis backend.
        pytest.fail(INSTALL_HINT, pytrace=False)
    workdir = tmp_path_factory.mktemp("redis")
    errors: list[str] = []
    for _ in range(3):  # another process may grab the free port before redis-server does
        try:
            proc, port = _start_redis(binary, workdir)
            break
        except RuntimeError as exc:
            errors.append(str(exc))
    else:
        pytest.fail("could not start redis-server:\n" + "\n---\n".join(errors), pytrace=False)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisProcess:
    """A private redis-server that a test may kill (SIGKILL), hang (SIGSTOP / SIGCONT) and
    restart on the same port, empty or from its AOF. ``appendfsync everysec``, as production
    is advised to run: a killed process loses nothing it acknowledged (the AOF write precedes
    the reply; only the fsync is deferred, which matters for a host crash, not a kill)."""

    PERSIST = ("--save", "", "--appendonly", "yes", "--appendfsync", "everysec")

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir = binary, workdir
        self.proc, self.port = _start_redis(binary, workdir, extra=self.PERSIST)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.stopped = False

    def kill(self) -> None:
        self.cont()  # a stopped process can't be reaped until it runs again
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """Hang it: the port still accepts connections, nothing answers."""
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        if self.stopped:
            self.proc.send_signal(signal.SIGCONT)
            self.stopped = False

    def restart(self, *, empty: bool = False) -> None:
        """Start again on the same port: from the AOF, or ``empty`` (its files removed)."""
        if self.proc.poll() is None:
            self.kill()
        if empty:
            for path in self.workdir.iterdir():
                if path.name.startswith(("appendonly", "dump")):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.proc, _ = _start_redis(self.binary, self.workdir, self.port, extra=self.PERSIST)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A function-scoped redis-server of the test's own (never the session ``redis_url``),
    with an AOF in the test's tmp dir."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    workdir = tmp_path / "redis"
    workdir.mkdir()
    proc = RedisProcess(binary, workdir)
    try:
        yield proc
    finally:
        proc.cont()
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


@pytest.fixture
def key_prefix() -> str:
    """A fresh key namespace per test, so tests (and parallel runs on a shared Redis) never
    see each other's keys."""
    return f"genrec-test:{uuid.uuid4().hex}:"


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artifacts built from the bundled ml-100k with the tiny profile, once per session: the
    version directory the build published (its artifacts root is ``.parent.parent``, whose
    ``current`` link points to it)."""
    from models.artifacts.versions import resolve_artifacts
    from models.build.main import build

    # GENREC_TEST_TINY_ARTIFACTS: an artifacts root built the same way, reused to save the
    # build's minutes when iterating on service tests (never set in CI).
    reuse = os.environ.get("GENREC_TEST_TINY_ARTIFACTS")
    if reuse:
        return resolve_artifacts(Path(reuse))
    out = tmp_path_factory.mktemp("artifacts") / "ml-100k"
    # Progressive, every step kept: the same models, and tests/test_partial_versions.py
    # checks the partial versions it published on the way. Two workers: the service tests run
    # on a parallel build, as `genrec build` makes by default (tests/test_build_parallel.py).
    build("ml-100k", out, profile="tiny", seed=0, progress=False, keep=50, progressive=True,
          workers=2)
    return resolve_artifacts(out)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for a module (restored after): on tiny tensors extra threads
    only add sync cost, 50x slower on a busy 2-core box. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
