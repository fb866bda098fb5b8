"""Schemathesis against the live API: every operation of the OpenAPI document, generated
inputs (positive and negative), ``--checks all``; prints cases and failures per check.

    python benchmarks/fuzz_api.py --artifacts artifacts/ml-100k --max-examples 100

The app runs under uvicorn in a subprocess on a free loopback port with the embedded store
and an admin token (so the admin operations are exercised past their auth check); the
schemathesis CLI (``st``) drives it, and its summary is counted here.
Exit status: 0 when no check failed."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "fuzz-token"
# Schema-valid requests the service must refuse by rules no JSON Schema states: item ids must
# be in the catalog, arm names the experiment's, shares must sum to 1. Their 422 is the
# contract, so positive_data_acceptance takes it (every other check runs unchanged).
CONFIG = """[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(artifacts: Path, port: int) -> subprocess.Popen[bytes]:
    code = ("import uvicorn\nfrom service.app import create_app\n"
            "from service.config import Settings\n"
            f"uvicorn.run(create_app(Settings(artifacts_dir={str(artifacts)!r}, "
            f"admin_token={TOKEN!r}, reload_poll_s=0)), host='127.0.0.1', port={port}, "
            "log_level='error')\n")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def wait_ready(port: int, timeout_s: float = 300) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            if json.loads(e.read()).get("status") == "failed":
                return e.code  # no artifacts: the model routes will answer 503
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not come up")


def summarise(stdout: str) -> tuple[int, int, list[str]]:
    """(test cases generated, failures found, the failure lines) from st's summary."""
    cases = re.search(r"(\d+) generated", stdout)
    found = re.search(r"(\d+) found", stdout)
    lines = re.findall(r"^\s+\S+ (ST\d+ .+: \d+)$", stdout, re.M)
    return (int(cases[1]) if cases else 0, int(found[1]) if found else 0, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path(os.environ.get(
        "GENREC_ARTIFACTS_DIR", ROOT / "artifacts" / "ml-100k")))
    parser.add_argument("--max-examples", type=int, default=100, help="per operation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    port = free_port()
    server = start_server(args.artifacts, port)
    try:
        ready = wait_ready(port)
        print(f"server on :{port}, /readyz {ready}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            log, config = Path(tmp) / "events.ndjson", Path(tmp) / "schemathesis.toml"
            config.write_text(CONFIG)
            st = [str(Path(sys.executable).parent / "st"), "--config-file", str(config), "run",
                  f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
                  "--max-examples", str(args.max_examples), "--seed", str(args.seed),
                  "-H", f"Authorization: Bearer {TOKEN}", "--workers", "1",
                  "--report", "ndjson", "--report-ndjson-path", str(log), "--no-color"]
            t0 = time.perf_counter()
            proc = subprocess.run(st, cwd=ROOT, capture_output=True, text=True)
            took = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(proc.stdout[-6000:])
    cases, found, lines = summarise(proc.stdout)
    print(f"schemathesis --checks all: {cases} cases in {took:.0f} s, {found} failures")
    for line in lines:
        print("  ", line)
    sys.exit(1 if found or proc.returncode else 0)


if __name__ == "__main__":
    main()
