"""The `genrec` command through typer's CliRunner: bad input fails cleanly (exit code 2, one
message naming the path and line, no traceback, nothing written), and `genrec eval` prints its
table and stores the metrics in manifest.json."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import orjson
import pytest
from typer.testing import CliRunner, Result

from cli.main import app

FIX = Path(__file__).parent / "fixtures" / "cli"
METRICS = ("HR@10", "NDCG@10", "HR@50", "NDCG@50")

runner = CliRunner()


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def clean_failure(result: Result) -> str:
    """The output of a clean failure. CliRunner turns an escaped exception into exit code 1
    with the exception in ``result.exception`` (a user would see a traceback); the CLI's own
    error path exits with 2."""
    out = click.unstyle(result.output)  # in case FORCE_COLOR styles the output
    assert result.exit_code == 2, (result.exit_code, out, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in out
    assert out.startswith("error: ")
    return out


@pytest.fixture
def artifacts_copy(tiny_artifacts: Path, tmp_path: Path) -> Path:
    """A private copy: eval writes into manifest.json, and the session's artifacts are shared."""
    return Path(shutil.copytree(tiny_artifacts, tmp_path / "artifacts"))


def manifest_of(directory: Path) -> dict:
    return orjson.loads((directory / "manifest.json").read_bytes())


# --- build ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("dataset", "bad_file", "line"), [
    (FIX / "sasrec-bad-id.txt", FIX / "sasrec-bad-id.txt", 3),
    # An id that reads as Rich markup: the error message must be printed, not interpreted.
    (FIX / "sasrec-markup.txt", FIX / "sasrec-markup.txt", 2),
    (FIX / "ml100k-bad-rating", FIX / "ml100k-bad-rating" / "u.data", 4),
], ids=["sasrec-bad-id", "sasrec-markup", "ml100k-bad-rating"])
def test_build_malformed_dataset_names_path_and_line(
    dataset: Path, bad_file: Path, line: int, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = invoke("build", "--dataset", dataset, "--artifacts", out, "--profile", "tiny",
                    "--no-evaluate")
    assert f"{bad_file}:{line}:" in clean_failure(result)
    assert list(tmp_path.iterdir()) == []  # neither the artifacts nor a .partial directory


def test_build_missing_dataset_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dataset"
    result = invoke("build", "--dataset", missing, "--artifacts", tmp_path / "out",
                    "--no-evaluate")
    out = clean_failure(result)
    assert str(missing) in out and "no such file or directory" in out
    assert not (tmp_path / "out").exists()


def test_build_unknown_profile_fails_cleanly(tmp_path: Path) -> None:
    result = invoke("build", "--dataset", FIX / "sasrec-bad-id.txt", "--profile", "huge",
                    "--artifacts", tmp_path / "out")
    assert "unknown profile 'huge'" in clean_failure(result)


def test_build_bad_override_fails_before_training(tmp_path: Path) -> None:
    result = invoke("build", "--dataset", "ml-100k", "--profile", "tiny", "--set",
                    "sasrec_train.epochs=ten", "--artifacts", tmp_path / "out")
    assert "sasrec_train.epochs" in clean_failure(result)
    assert not (tmp_path / "out").exists()


# --- eval ----------------------------------------------------------------------------------


def test_eval_prints_table_and_stores_metrics(artifacts_copy: Path) -> None:
    assert "test" not in manifest_of(artifacts_copy).get("metrics", {})
    result = invoke("eval", "--artifacts", artifacts_copy, "--methods",
                    "popular,cascade,semantic_id,generative")
    out = click.unstyle(result.output)
    assert result.exit_code == 0, (out, result.exception)
    assert all(m in out for m in METRICS)

    stored = manifest_of(artifacts_copy)["metrics"]["test"]
    assert set(stored) == {"popular", "cascade", "semantic_id", "generative"}
    rows = {line.split()[1]: line for line in out.splitlines()
            if line.split()[1:2] and line.split()[1] in stored}  # "│ popular │ 0.0848 │ ..."
    for method, row in stored.items():
        assert all(0.0 <= row[m] <= 1.0 for m in METRICS)
        assert row["HR@10"] <= row["HR@50"] and row["users"] > 0
        # The printed table and the stored figures are the same numbers.
        assert all(f"{row[m]:.4f}" in rows[method] for m in METRICS), rows[method]

    # A second eval of other methods adds to the stored figures; a re-evaluated one is
    # replaced (here by the same numbers: evaluation is deterministic).
    result = invoke("eval", "--artifacts", artifacts_copy, "--models", "itemcf,popular")
    assert result.exit_code == 0, result.output
    again = manifest_of(artifacts_copy)["metrics"]["test"]
    assert set(again) == {"popular", "cascade", "semantic_id", "generative", "itemcf"}
    assert again["popular"] == stored["popular"] and again["cascade"] == stored["cascade"]


def test_eval_unknown_method_fails_cleanly(artifacts_copy: Path) -> None:
    before = (artifacts_copy / "manifest.json").read_bytes()
    result = invoke("eval", "--artifacts", artifacts_copy, "--methods", "popular,bogus")
    out = clean_failure(result)
    assert "bogus" in out and "cascade" in out  # names the bad one and the valid choices
    assert (artifacts_copy / "manifest.json").read_bytes() == before


def test_eval_unknown_stage_fails_cleanly(tiny_artifacts: Path) -> None:
    result = invoke("eval", "--artifacts", tiny_artifacts, "--stage", "train")
    assert "--stage" in clean_failure(result)


@pytest.mark.parametrize(("content", "expected"), [
    (b'{"version": "x",\n "dataset": {nope', "line 2"),  # orjson's position
    (b"{}", "missing key 'dataset'"),
    (b"[1, 2]", "malformed manifest"),
], ids=["bad-json", "missing-key", "not-an-object"])
def test_eval_malformed_manifest_names_file(tmp_path: Path, content: bytes, expected: str) -> None:
    (tmp_path / "manifest.json").write_bytes(content)
    out = clean_failure(invoke("eval", "--artifacts", tmp_path))
    assert str(tmp_path / "manifest.json") in out and expected in out


def test_eval_missing_artifacts_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    assert str(missing) in clean_failure(invoke("eval", "--artifacts", missing))


def test_eval_incomplete_artifacts_fail_cleanly(tiny_artifacts: Path, tmp_path: Path) -> None:
    # A manifest with nothing beside it (e.g. weights deleted): name the directory, no traceback.
    shutil.copy(tiny_artifacts / "manifest.json", tmp_path / "manifest.json")
    out = clean_failure(invoke("eval", "--artifacts", tmp_path, "--methods", "popular"))
    assert str(tmp_path) in out and "cannot load the artifacts" in out


# --- serve ---------------------------------------------------------------------------------


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve must fail before it starts a server or a build."""
    import uvicorn

    import models.build.main

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("serve went on to start a server or a build")

    monkeypatch.setattr(uvicorn, "run", refuse)
    monkeypatch.setattr(models.build.main, "build", refuse)


@pytest.mark.usefixtures("no_server")
def test_serve_no_build_without_artifacts_fails_cleanly(tmp_path: Path) -> None:
    out = clean_failure(invoke("serve", "--no-build", "--artifacts", tmp_path))
    assert str(tmp_path) in out and "genrec build" in out


@pytest.mark.usefixtures("no_server")
def test_serve_reads_genrec_artifacts_dir(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --artifacts, GENREC_ARTIFACTS_DIR names what is served (here: nothing)."""
    monkeypatch.setenv("GENREC_ARTIFACTS_DIR", str(tmp_path / "from-env"))
    out = clean_failure(invoke("serve", "--no-build"))
    assert str(tmp_path / "from-env") in out


@pytest.mark.usefixtures("no_server")
def test_serve_bad_port_fails_cleanly(tmp_path: Path) -> None:
    out = clean_failure(invoke("serve", "--no-build", "--artifacts", tmp_path,
                               "--port", "70000"))
    assert "port" in out


@pytest.mark.usefixtures("no_server")
def test_serve_workers_need_redis(tiny_artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENREC_REDIS_URL", raising=False)
    out = clean_failure(invoke("serve", "--no-build", "--artifacts", tiny_artifacts,
                               "--workers", "2"))
    assert "GENREC_REDIS_URL" in out


def test_serve_workers_share_redis_and_one_metrics_view(tiny_artifacts: Path, redis_url: str,
                                                         key_prefix: str,
                                                         tmp_path: Path) -> None:
    """`genrec serve --workers 2`: two worker processes answer, and one scrape counts every
    request whichever worker served it."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.helpers import ROOT, free_port

    port = free_port()
    env = {**os.environ, "GENREC_REDIS_URL": redis_url, "GENREC_REDIS_PREFIX": key_prefix,
           "GENREC_LOG_LEVEL": "warning", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--no-build",
                             "--artifacts", str(tiny_artifacts), "--workers", "2",
                             "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        # A new connection per request, so the kernel spreads them over the workers; ready
        # once 10 such requests in a row found a version serving (both workers loaded).
        deadline, streak = time.monotonic() + 180, 0
        while streak < 10:
            assert proc.poll() is None, "genrec serve exited"
            assert time.monotonic() < deadline, "not ready"
            try:
                ok = httpx.get(url + "/readyz", timeout=10).status_code == 200
            except httpx.HTTPError:
                ok = False
            streak = streak + 1 if ok else 0
            time.sleep(0.1 if ok else 0.3)
        codes = [httpx.post(url + "/recommend", json={"user_id": "1", "k": 5},
                            timeout=10).status_code for _ in range(12)]
        text = httpx.get(url + "/metrics", timeout=10).text
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert codes == [200] * 12
    assert len(kids) >= 2  # the workers (uvicorn may add a helper process)
    served = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("genrec_requests_total{")
                 and 'endpoint="/recommend"' in line and 'status="200"' in line)
    assert served == 12
