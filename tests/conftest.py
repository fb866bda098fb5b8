"""Shared fixtures. ``redis_url`` gives the store tests a real Redis: the one named by
``GENREC_TEST_REDIS_URL``, or a throwaway ``redis-server`` started for the session."""

from __future__ import annotations

import os
import shutil
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


def _start_redis(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    log = workdir / f"redis-{port}.log"
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--logfile",
        str(log),
    ]
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

    out = tmp_path_factory.mktemp("artifacts") / "ml-100k"
    build("ml-100k", out, profile="tiny", seed=0, progress=False)
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
