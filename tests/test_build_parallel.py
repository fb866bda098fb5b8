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
    """A component that raises in its worker: the build raises that error, the other worker
    is stopped, and neither a new version nor any working directory is left behind."""
    import shutil

    from models.artifacts.versions import VERSIONS, resolve_artifacts
    from models.build.main import build

    root = tmp_path / "ml-100k"
    shutil.copytree(tiny_artifacts.parent.parent, root, symlinks=True)
    before = resolve_artifacts(root)
    versions = sorted(p.name for p in (root / VERSIONS).iterdir())
    with pytest.raises(ValueError, match="lr_schedule"):
        build("ml-100k", root, profile="tiny", progress=False, workers=2,
              only=["semantic_ids", "sasrec"],
              overrides=["tiger_train.lr_schedule=\"nope\""])
    assert resolve_artifacts(root) == before
    assert sorted(p.name for p in (root / VERSIONS).iterdir()) == versions
    # (.cache holds the content vectors, kept across builds on purpose)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".cache") == ["ml-100k"]
