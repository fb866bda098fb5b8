"""docker-compose.yml and the files it mounts, checked without a docker engine (none runs in CI):
the compose file against the Compose Specification's JSON schema (vendored in
tests/fixtures/compose/), then what a schema cannot see: every mounted file is in the repository,
secrets come from the environment, Redis is durable, the artifacts volume is shared the right way
round, and nginx, Prometheus and Grafana point at the replicas and at each other. Where the docker
CLI with its compose plugin is installed, `docker compose config` also parses the file as the
engine would; promtool, where installed, checks the Prometheus config."""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema.validators import validator_for

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "fixtures" / "compose" / "compose-spec.json"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SERVE_DEFAULT_PORT = 8000  # `genrec serve --port`'s default
PROMETHEUS_PORT = 9090
# A required variable: compose refuses to start when it is unset or empty.
REQUIRED_VAR = re.compile(r"^\$\{(?P<name>\w+):?\?[^}]*\}$")
SECRET_KEY = re.compile(r"TOKEN|PASSWORD|SECRET|API_?KEY", re.IGNORECASE)
# Values for the required variables when the docker CLI parses the file.
REQUIRED_ENV = {"GENREC_ADMIN_TOKEN": "test-token", "GRAFANA_ADMIN_PASSWORD": "test-password"}


@functools.cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def command(spec: dict) -> list[str]:
    cmd = spec.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def option(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def replicas() -> dict[str, dict]:
    """The services that run `genrec serve`."""
    found = {n: s for n, s in services().items() if "serve" in command(s)}
    assert found, "no service runs `genrec serve`"
    return found


def build_service() -> tuple[str, dict]:
    """The one-shot service the replicas wait for: it must finish before they start."""
    found = {d for s in replicas().values() for d, cond in s.get("depends_on", {}).items()
             if cond.get("condition") == "service_completed_successfully"}
    assert len(found) == 1, f"expected the replicas to wait for one build service, not {found}"
    name = found.pop()
    return name, services()[name]


def service_port(spec: dict) -> int:
    return int(option(command(spec), "--port") or SERVE_DEFAULT_PORT)


def instances(spec: dict) -> int:
    return int(spec.get("deploy", {}).get("replicas", 1))


def environment(spec: dict) -> dict[str, str]:
    env = spec.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def mounts(spec: dict) -> list[dict]:
    """Every volume entry in long form: type (bind or volume), source, target, read_only."""
    out = []
    for v in spec.get("volumes", []):
        if isinstance(v, dict):
            out.append({"type": v.get("type", "volume"), "source": v.get("source"),
                        "target": v["target"], "read_only": bool(v.get("read_only"))})
            continue
        parts = v.split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
        kind = "bind" if source and source.startswith((".", "/", "~")) else "volume"
        out.append({"type": kind, "source": source, "target": target,
                    "read_only": len(parts) > 2 and "ro" in parts[2].split(",")})
    return out


def bind_target(spec: dict, repo_path: str) -> str:
    """Where the service sees a file or folder of the repository."""
    for m in mounts(spec):
        if m["type"] == "bind" and (ROOT / m["source"]).resolve() == (ROOT / repo_path).resolve():
            return m["target"]
    raise AssertionError(f"{repo_path} is not mounted")


def mounted_file(spec: dict, target: str) -> Path:
    """The repository file a service sees at ``target`` (through a file or a folder mount)."""
    for m in mounts(spec):
        if m["type"] != "bind":
            continue
        if PurePosixPath(target).is_relative_to(m["target"]):
            return ROOT / m["source"] / PurePosixPath(target).relative_to(m["target"])
    raise AssertionError(f"nothing of the repository is mounted at {target}")


def validator():
    schema = json.loads(SCHEMA.read_text())
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# -- the schema ----------------------------------------------------------------------------------

def test_compose_file_is_valid_against_the_compose_specification():
    errors = sorted(validator().iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                                 for e in errors)


@pytest.mark.parametrize("breakage", ["misspelt service key", "misspelt top-level key",
                                      "bad depends_on condition"])
def test_schema_rejects_a_broken_compose_file(breakage):
    # The check above means something only if the schema is strict.
    doc = copy.deepcopy(compose())
    name = next(iter(replicas()))
    if breakage == "misspelt service key":
        doc["services"][name]["healthcheck_"] = doc["services"][name].get("healthcheck", {})
    elif breakage == "misspelt top-level key":
        doc["service"] = doc.pop("services")
    else:
        doc["services"][name]["depends_on"] = {"redis": {"condition": "service_finished"}}
    assert list(validator().iter_errors(doc))


def test_compose_file_has_no_version_key():
    # The compose specification has no `version`; Compose v2 warns that it is obsolete.
    assert "version" not in compose()


# -- what the schema cannot see ------------------------------------------------------------------

def test_every_mounted_file_and_build_input_exists_in_the_repository():
    for name, spec in services().items():
        for m in mounts(spec):
            if m["type"] == "bind":
                assert (ROOT / m["source"]).exists(), f"{name} mounts missing {m['source']}"
            else:
                assert m["source"] in (compose().get("volumes") or {}), \
                    f"{name} mounts undeclared volume {m['source']}"
        if "build" in spec:
            build = spec["build"] if isinstance(spec["build"], dict) else {"context": spec["build"]}
            context = ROOT / build.get("context", ".")
            assert context.is_dir()
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()


def test_secrets_come_from_the_environment_never_from_the_file():
    for name, spec in services().items():
        for key, value in environment(spec).items():
            if SECRET_KEY.search(key):
                assert value is not None and REQUIRED_VAR.match(value), \
                    f"{name}.{key} must be a required variable (${{{key}:?...}}), not {value!r}"
    for name, spec in replicas().items():
        token = environment(spec).get("GENREC_ADMIN_TOKEN")
        secrets = [s if isinstance(s, str) else s.get("source") for s in spec.get("secrets", [])]
        assert (token and REQUIRED_VAR.match(token).group("name") == "GENREC_ADMIN_TOKEN") \
            or secrets, f"{name} gets no admin token"


def test_redis_keeps_an_everysec_aof_on_a_named_volume():
    redis = services()["redis"]
    assert redis["image"].split(":")[0] == "redis" and redis["image"].split(":")[1].startswith("7")
    cmd = command(redis)
    assert option(cmd, "--appendonly") == "yes"
    assert option(cmd, "--appendfsync") == "everysec"
    data = [m for m in mounts(redis) if m["target"] == "/data"]
    assert data and data[0]["type"] == "volume" and not data[0]["read_only"]


def test_replicas_serve_prebuilt_artifacts_from_redis_after_the_build():
    build_name, build = build_service()
    assert sum(instances(s) for s in replicas().values()) >= 2
    for name, spec in replicas().items():
        cmd = command(spec)
        assert "--no-build" in cmd, f"{name} would train on its own"
        assert option(cmd, "--host") == "0.0.0.0", f"{name} listens on loopback only"
        url = urlsplit(environment(spec)["GENREC_REDIS_URL"])
        assert url.scheme == "redis" and url.hostname in services() and url.port == 6379
        assert spec["depends_on"][build_name]["condition"] == "service_completed_successfully"
        assert spec["depends_on"][url.hostname]["condition"] == "service_healthy"
        assert spec["image"] == build["image"]
        health = spec.get("healthcheck", {})
        assert health.get("test") and not health.get("disable")


def test_the_build_writes_the_volume_the_replicas_read():
    _, build = build_service()
    build_dir = environment(build)["GENREC_ARTIFACTS_DIR"]
    (volume,) = [m for m in mounts(build) if m["type"] == "volume"]
    assert not volume["read_only"]
    # Strictly inside the volume: a build stages its version in a sibling of the artifacts
    # directory and renames it into place, so the sibling must be on the same volume.
    assert PurePosixPath(build_dir).parent.is_relative_to(volume["target"])
    for name, spec in replicas().items():
        (served,) = [m for m in mounts(spec) if m["source"] == volume["source"]]
        assert served["read_only"], f"{name} may write the artifacts"
        assert served["target"] == volume["target"]
        assert option(command(spec), "--artifacts") == build_dir
    # A one-shot container: no server to probe, never restarted.
    assert build.get("healthcheck", {}).get("disable") is True
    assert str(build.get("restart", "no")) == "no"


def _run_build_script(tmp_path: Path, artifacts: Path) -> subprocess.CompletedProcess[str]:
    _, build = build_service()
    script = mounted_file(build, command(build)[-1])
    # A `genrec` that only says how it was called, and this interpreter as `python` (the
    # image's venv is on PATH; here the suite's may not be).
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "genrec").write_text('#!/bin/sh\necho "genrec $*"\n')
    (fake / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "GENREC_DATASET"}
    env.update(PATH=f"{fake}{os.pathsep}{env['PATH']}", GENREC_ARTIFACTS_DIR=str(artifacts),
               PYTHONPATH=str(ROOT))
    return subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True,
                          timeout=60, check=True)


def test_the_build_service_trains_only_when_no_complete_version_exists(tmp_path):
    artifacts = tmp_path / "artifacts"
    ran = _run_build_script(tmp_path, artifacts)
    assert f"genrec build --dataset ml-100k --artifacts {artifacts}" in ran.stdout
    artifacts.mkdir()
    (artifacts / "manifest.json").write_text('{"partial": true}')  # a progressive build's step
    assert "genrec build" in _run_build_script(tmp_path, artifacts).stdout
    (artifacts / "manifest.json").write_text("{}")
    assert "genrec build" not in _run_build_script(tmp_path, artifacts).stdout


def _nginx_blocks(text: str) -> tuple[dict[str, str], str]:
    text = re.sub(r"#[^\n]*", "", text)
    upstreams = dict(re.findall(r"upstream\s+(\S+)\s*\{([^}]*)\}", text))
    return upstreams, text


def test_nginx_balances_over_every_replica_on_its_published_port():
    nginx = services()["nginx"]
    conf = mounted_file(nginx, "/etc/nginx/nginx.conf")
    upstreams, text = _nginx_blocks(conf.read_text())
    passed = re.findall(r"proxy_pass\s+http://([^;/\s]+)", text)
    assert passed and all(p in upstreams for p in passed), "proxy_pass names no upstream"
    for name, spec in replicas().items():
        servers = re.findall(r"server\s+([^;\s]+)", "".join(upstreams[p] for p in passed))
        assert f"{name}:{service_port(spec)}" in servers, f"nginx does not reach {name}"
    listens = {int(p) for p in re.findall(r"listen\s+(\d+)", text)}
    targets = {int(str(p).rsplit(":", 1)[-1]) if not isinstance(p, dict) else int(p["target"])
               for p in nginx["ports"]}
    assert targets and targets <= listens


def _prometheus_config() -> tuple[Path, dict]:
    prom = services()["prometheus"]
    flags = dict(c.split("=", 1) for c in command(prom) if "=" in c)
    path = mounted_file(prom, flags.get("--config.file", "/etc/prometheus/prometheus.yml"))
    return path, yaml.safe_load(path.read_text())


def test_prometheus_scrapes_every_replica_every_5s():
    _, config = _prometheus_config()
    default_interval = config.get("global", {}).get("scrape_interval", "1m")
    for name, spec in replicas().items():
        target = (name, service_port(spec))
        jobs = []
        for job in config["scrape_configs"]:
            dns = {(n, sd.get("port")) for sd in job.get("dns_sd_configs", [])
                   if sd.get("type", "SRV") == "A" for n in sd["names"]}
            static = {tuple(t.rsplit(":", 1)) for sc in job.get("static_configs", [])
                      for t in sc["targets"]}
            if target in dns or (name, str(target[1])) in static:
                jobs.append(job)
        assert jobs, f"no scrape job reaches {name}:{target[1]}"
        for job in jobs:
            assert job.get("scrape_interval", default_interval) == "5s"
            assert job.get("metrics_path", "/metrics") == "/metrics"


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool is not installed")
def test_promtool_accepts_the_prometheus_config():
    path, _ = _prometheus_config()
    run = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards():
    grafana = services()["grafana"]
    provisioning = mounted_file(grafana, "/etc/grafana/provisioning")
    datasources = [ds for f in sorted((provisioning / "datasources").glob("*.y*ml"))
                   for ds in yaml.safe_load(f.read_text()).get("datasources", [])]
    (prom,) = [ds for ds in datasources if ds.get("uid") == "prometheus"]
    assert prom["type"] == "prometheus"
    url = urlsplit(prom["url"])
    assert url.hostname == "prometheus" and url.hostname in services()
    assert url.port == PROMETHEUS_PORT

    providers = [p for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
                 for p in yaml.safe_load(f.read_text()).get("providers", [])]
    dashboards_at = bind_target(grafana, "docker/grafana/dashboards")
    assert [p["options"]["path"] for p in providers] == [dashboards_at]
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert mounted_file(grafana, home).is_file()

    # Every datasource a dashboard names resolves to a provisioned one (directly by uid, or
    # through a datasource variable whose default is one).
    uids = {ds["uid"] for ds in datasources} | {"-- Grafana --", "grafana"}
    for board in sorted((ROOT / "docker/grafana/dashboards").glob("*.json")):
        doc = json.loads(board.read_text())
        variables = {v["name"]: v.get("current", {}).get("value")
                     for v in doc.get("templating", {}).get("list", [])
                     if v.get("type") == "datasource"}
        for ref in _datasource_refs(doc):
            var = re.fullmatch(r"\$\{?(\w+)\}?", ref)
            assert (variables.get(var.group(1)) if var else ref) in uids, f"{board.name}: {ref}"


def _datasource_refs(node: object) -> list[str]:
    if isinstance(node, dict):
        ds = node.get("datasource")
        refs = [ds["uid"]] if isinstance(ds, dict) and ds.get("uid") else (
            [ds] if isinstance(ds, str) else [])
        return refs + [r for v in node.values() for r in _datasource_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _datasource_refs(v)]
    return []


# -- the image -----------------------------------------------------------------------------------

def _final_stage() -> list[str]:
    lines = re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines()
    lines = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    starts = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    return lines[starts[-1]:]


def test_image_final_stage_is_slim_non_root_and_health_checked():
    stage = _final_stage()
    assert stage[0].split()[1] in ("${PYTHON_IMAGE}", "python:3.11-slim-bookworm")
    users = [ln.split()[1] for ln in stage if ln.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the service runs as root"
    health = [ln for ln in stage if ln.upper().startswith("HEALTHCHECK ")]
    assert health and "/healthz" in health[-1]
    exposed = {int(p.split("/")[0]) for ln in stage if ln.upper().startswith("EXPOSE ")
               for p in ln.split()[1:]}
    assert {service_port(s) for s in replicas().values()} <= exposed
    installs = " ".join(ln for ln in stage if "apt-get install" in ln or "pip install" in ln)
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|clang)\b", installs)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            ignored = not negate
    return ignored


def test_build_context_holds_the_code_and_data_but_no_local_state():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    for kept in ("pyproject.toml", "README.md", "service/app.py", "models/registry.py",
                 "cli/main.py", "index/base.py", "data/ml-100k/u.data"):
        assert not _dockerignored(kept, patterns), kept
    for dropped in (".env", ".venv/bin/python", "artifacts/ml-100k/current", ".git/config",
                    "service/__pycache__/app.cpython-311.pyc", "docker-compose.yml"):
        assert _dockerignored(dropped, patterns), dropped


# -- the docker CLI, where installed -------------------------------------------------------------

@functools.cache
def _compose_cli() -> list[str] | None:
    for cli in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(cli[0]):
            continue
        run = subprocess.run([*cli, "version"], capture_output=True, text=True, timeout=30)
        # Compose v2 only: v1 (Python) predates the compose specification.
        if run.returncode == 0 and re.search(r"v?2\.\d+", run.stdout):
            return cli
    return None


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("the docker CLI with the compose v2 plugin is not installed")
    return subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_docker_compose_accepts_the_file():
    run = _compose_config({**os.environ, **REQUIRED_ENV})
    assert run.returncode == 0, run.stderr


def test_docker_compose_refuses_to_start_without_the_admin_token():
    env = {k: v for k, v in os.environ.items() if k != "GENREC_ADMIN_TOKEN"}
    run = _compose_config({**env, "GRAFANA_ADMIN_PASSWORD": "test-password"})
    assert run.returncode != 0 and "GENREC_ADMIN_TOKEN" in run.stderr
