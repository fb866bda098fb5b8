"""Time from the end of the install to the first 200 on /recommend (each path), to /readyz,
and to the full model set, as a newcomer gets them from the quick start.

  python benchmarks/first_answer.py --fresh            # clone this repo's HEAD, set up, serve
  python benchmarks/first_answer.py --repo /path/clone  # a checkout already set up

--fresh clones HEAD into a temporary folder and runs `scripts/setup.sh` there (its time is
reported as the install); then, in either mode, the clock starts and `scripts/serve.sh` runs
(its setup step is then a no-op check, counted against us) with an empty artifacts directory
of its own, so the progressive build starts from nothing. Every 0.25 s the script asks
/recommend for a known user with each path forced, and /readyz; it stops once /readyz lists
nothing still training (the complete version is serving) or at --timeout-s.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("cascade", "generative")


def fresh_clone(into: Path) -> tuple[Path, float]:
    """Clone HEAD and run scripts/setup.sh there; -> (clone, install seconds)."""
    repo = into / "genrec"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    t = time.monotonic()
    subprocess.run(["scripts/setup.sh"], cwd=repo, check=True, stdout=subprocess.DEVNULL)
    return repo, time.monotonic() - t


def poll(url: str, user: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> dict:
    """-> seconds from start to each milestone, and what the versions said on the way."""
    t0, got = time.monotonic(), {}
    versions: list[dict] = []
    with httpx.Client(base_url=url, timeout=5.0) as c:
        while time.monotonic() - t0 < timeout_s and proc.poll() is None:
            now = round(time.monotonic() - t0, 1)
            for path in PATHS:
                if f"first_200_{path}" in got:
                    continue
                try:
                    r = c.post("/recommend", json={"user_id": user, "k": 10, "path": path})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    body = r.json()
                    got[f"first_200_{path}"] = now
                    got[f"first_{path}_sources"] = [s["source"] for s in body["stages"]]
                elif r.status_code >= 500 and r.status_code != 503:
                    got.setdefault("5xx", []).append((now, r.status_code))
            try:
                ready = c.get("/readyz")
            except httpx.HTTPError:
                ready = None
            if ready is not None and ready.status_code == 200:
                body = ready.json()
                got.setdefault("readyz_200", now)
                if not versions or versions[-1]["version"] != body["version"]:
                    versions.append({"t": now, "version": body["version"],
                                     "training": body.get("training", [])})
                if not body.get("training"):
                    got["full_model_set"] = now
                    break
            time.sleep(0.25)
    got["versions"] = versions
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", action="store_true", help="clone HEAD and set it up first")
    ap.add_argument("--repo", type=Path, default=None, help="a set-up checkout to serve from")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--user", default="1", help="a known user id of the dataset")
    ap.add_argument("--timeout-s", type=float, default=1800.0)
    ap.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = ap.parse_args()
    if args.fresh == (args.repo is not None):
        sys.exit("give exactly one of --fresh and --repo")
    with tempfile.TemporaryDirectory(prefix="genrec-first-") as tmp:
        result: dict = {}
        if args.fresh:
            repo, result["install_s"] = fresh_clone(Path(tmp))
        else:
            repo = args.repo.resolve()
        # A first start: an empty artifacts directory of its own (the checkout's are kept).
        art = Path(tmp) / "artifacts" / "ml-100k"
        env = {**os.environ, "GENREC_PORT": str(args.port)}
        log = (Path(tmp) / "serve.log").open("wb")
        proc = subprocess.Popen(["scripts/serve.sh", "--artifacts", str(art)], cwd=repo,
                                env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            result.update(poll(f"http://127.0.0.1:{args.port}", args.user, args.timeout_s,
                               proc))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the service and its background build
            proc.wait(timeout=60)
    result["config"] = {"fresh": args.fresh, "repo": str(args.repo), "nproc": os.cpu_count()}
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "first_answer.json").write_text(text)
    ok = all(f"first_200_{p}" in result for p in PATHS) and not result.get("5xx")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
