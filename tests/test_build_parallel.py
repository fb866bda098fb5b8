"""A build's components side by side in worker processes (models/build/parallel.py). The
session's tiny artifacts are built this way (tests/conftest.py), so every service test and
the progressive build's checks (tests/test_partial_versions.py) run on a parallel build; this
module checks the order it keeps and what a failing worker leaves behind."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from models.artifacts.manifest import MANIFEST
from models.build.parallel import _ready
from models.registry import COMPONENTS, component


def trained() -> list[str]:
    return [c.name for c in COMPONENTS if not c.always]


def test_a_component_waits_for_what_it_needs() -> None:
    pending = set(trained())
    assert _ready(component("two_tower"), pending)
    assert not _ready(component("semantic_ids"), pending)  # needs the two-tower
    assert not _ready(component("tdm"), pending)
    pending.discard("two_tower")
    assert _ready(component("semantic_ids"), pending) and _ready(component("tdm"), pending)
    assert not _ready(component("tiger"), pending)  # needs the semantic IDs


def test_rankers_wait_for_every_other_trained_component() -> None:
    """A ranker mines its candidates from the recall sources in the directory, so it starts
    only when each of them is in; the rankers do not wait for one another."""
    rankers = [c.name for c in COMPONENTS if c.after_recall]
    assert set(rankers) == {"hstu_ranker", "deepfm", "din"}
    others = [n for n in trained() if n not in rankers]
    for last in others:
        pending = {last, *rankers}
        assert not any(_ready(component(r), pending) for r in rankers), last
    assert all(_ready(component(r), set(rankers)) for r in rankers)


def test_the_session_build_has_every_component_and_no_leftovers(tiny_artifacts: Path) -> None:
    man = orjson.loads((tiny_artifacts / MANIFEST).read_bytes())
    for comp in COMPONENTS:
        assert comp.key in man["configs"] and comp.key in man["train_seconds"], comp.name
        for f in comp.files:
            assert f in man["files"], f
    root = tiny_artifacts.parent.parent
    assert not [p.name for p in root.parent.iterdir() if p.name.startswith(root.name + ".")]


def test_a_failing_worker_fails_the_build_and_leaves_current_alone(
        tiny_artifacts: Path, tmp_path: Path) -> None:
    """A component that raises in its worker (3 heads do not divide TIGER's width: the profile
    check, which reads types, lets it through): the build raises the worker's error, and
    neither a new version nor any working directory is left behind."""
    import shutil
    from concurrent.futures.process import _RemoteTraceback

    from models.artifacts.versions import VERSIONS, resolve_artifacts
    from models.build.main import build

    root = tmp_path / "ml-100k"
    shutil.copytree(tiny_artifacts.parent.parent, root, symlinks=True)
    before = resolve_artifacts(root)
    versions = sorted(p.name for p in (root / VERSIONS).iterdir())
    with pytest.raises(ValueError, match="not divisible by n_heads 3") as err:
        build("ml-100k", root, profile="tiny", progress=False, workers=2,
              only=["semantic_ids", "sasrec"], overrides=["tiger.n_heads=3"])
    assert isinstance(err.value.__cause__, _RemoteTraceback)  # raised in a worker
    assert resolve_artifacts(root) == before
    assert sorted(p.name for p in (root / VERSIONS).iterdir()) == versions
    # (.cache holds the content vectors, kept across builds on purpose)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".cache") == ["ml-100k"]


def test_a_bad_lr_schedule_fails_before_training() -> None:
    from models.build.profiles import profile

    with pytest.raises(ValueError, match="lr_schedule"):
        profile("tiny", ['tiger_train.lr_schedule="nope"'])


def test_components_that_wait_on_each_other_fail_instead_of_spinning(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A needs-cycle (no registry has one today) is an error naming the components, raised
    before any worker starts."""
    import dataclasses

    from models.build import parallel

    a, b = component("gru4rec"), component("sasrec")
    table = {"gru4rec": dataclasses.replace(a, needs=("sasrec",)),
             "sasrec": dataclasses.replace(b, needs=("gru4rec",))}
    monkeypatch.setattr(parallel, "component", table.__getitem__)
    with pytest.raises(RuntimeError, match=r"\['gru4rec', 'sasrec'\] wait on each other"):
        parallel._start_ready(None, ["gru4rec", "sasrec"], {"gru4rec", "sasrec"}, {},  # type: ignore[arg-type]
                              tmp_path, 2)


def _children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_the_workers_and_removes_the_work(tmp_path: Path) -> None:
    """`genrec serve` stops a background build with SIGTERM: the build exits through its
    cleanup, its worker processes end, and no staging or working directory stays."""
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cli.main import app; app()", "build", "--dataset",
         "ml-100k", "--profile", "tiny", "--artifacts", str(tmp_path / "ml-100k"),
         "--no-evaluate", "--workers", "2"],
        cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (list(tmp_path.glob("ml-100k.partial.*")) and _children(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, "no worker started"
            time.sleep(0.2)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers):
            assert time.monotonic() < deadline, "workers outlived the build"
            time.sleep(0.2)
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("ml-100k")]
    finally:
        if proc.poll() is None:
            proc.kill()
