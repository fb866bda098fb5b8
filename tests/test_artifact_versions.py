"""Versioned artifacts (``models.artifacts.versions``): every build is a new version under
``versions/`` made current by one symlink flip; a failed build never becomes current; old
versions are pruned to the newest N (never the current one); manifests list every file with
its size and sha256 and ``verify`` finds damage; every reader resolves a root or a version
directory the same way, and the layout before versions still loads."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from models.artifacts.manifest import artifacts_complete, read_manifest
from models.artifacts.versions import (
    CURRENT,
    MANIFEST,
    VERSIONS,
    current_version,
    file_table,
    list_versions,
    point_current,
    prune,
    publish,
    resolve_artifacts,
    set_current,
    staging_dir,
    unique_version,
    verify,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts root with two tiny builds: the session's (copied) and one more on top."""
    from models.build.main import build

    out = tmp_path_factory.mktemp("versions") / "ml-100k"
    # The session's final version alone (its progressive build left partial ones beside it).
    shutil.copytree(tiny_artifacts, out / VERSIONS / tiny_artifacts.name)
    set_current(out, tiny_artifacts.name)
    build("ml-100k", out, profile="tiny", seed=1, progress=False)
    return out


def manifest_of(directory: Path) -> dict:
    return orjson.loads((directory / MANIFEST).read_bytes())


# --- real builds ---------------------------------------------------------------------------


def test_second_build_is_a_new_version_and_becomes_current(root: Path) -> None:
    found = list_versions(root)
    assert len(found) == 2
    newest, first = found
    link = root / CURRENT
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # root can be moved
    assert current_version(root) == newest.resolve() == resolve_artifacts(root)
    assert manifest_of(newest)["version"] == newest.name
    assert manifest_of(first)["version"] == first.name
    assert not staging_dir(root).exists()
    for version in found:
        files = manifest_of(version)["files"]
        on_disk = {p.name for p in version.iterdir() if p.is_file()}
        assert set(files) == on_disk - {MANIFEST}  # every file but the manifest itself
        assert verify(version) == []

    from models.engine.core.runtime import Runtime

    rt = Runtime.load(root)  # a root loads its current version
    assert rt.directory == resolve_artifacts(root) and rt.version == newest.name
    assert artifacts_complete(root)


def test_failed_build_leaves_current_and_no_partial_directory(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.build.generative
    from models.build.main import build

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("semantic IDs failed")

    before_current, before = current_version(root), list_versions(root)
    monkeypatch.setattr(models.build.generative, "build_semantic_ids", boom)
    with pytest.raises(RuntimeError, match="semantic IDs failed"):
        build("ml-100k", root, profile="tiny", seed=2, progress=False)
    assert current_version(root) == before_current
    assert list_versions(root) == before
    assert not staging_dir(root).exists()
    assert sorted(p.name for p in (root / VERSIONS).iterdir()) == sorted(p.name for p in before)


def test_eval_stores_metrics_in_the_current_versions_manifest(root: Path) -> None:
    from cli.main import app

    current, other = list_versions(root)
    result = CliRunner().invoke(app, ["eval", "--artifacts", str(root), "--models", "popular"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "popular" in manifest_of(current)["metrics"]["test"]
    assert "test" not in manifest_of(other).get("metrics", {})
    assert verify(current) == []  # the manifest is not in its own file list


def test_verify_finds_a_flipped_byte_and_a_missing_file(tiny_artifacts: Path,
                                                        tmp_path: Path) -> None:
    version = Path(shutil.copytree(tiny_artifacts, tmp_path / "v"))
    assert verify(version) == []
    (version / "notes.txt").write_text("extra files are fine")
    assert verify(version) == []

    target = version / "popularity.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, other content
    target.write_bytes(bytes(data))
    (version / "din.json").unlink()
    problems = verify(version)
    assert len(problems) == 2
    assert any("popularity.safetensors" in p and "sha256" in p for p in problems)
    assert any("din.json" in p and "missing" in p for p in problems)

    (version / "itemcf.safetensors").write_bytes(b"short")
    assert any("itemcf.safetensors" in p and "size" in p for p in verify(version))
    (version / MANIFEST).unlink()
    assert verify(version) != []


def test_layout_before_versions_still_loads(tiny_artifacts: Path, tmp_path: Path) -> None:
    from models.engine.core.runtime import Runtime

    old = Path(shutil.copytree(tiny_artifacts, tmp_path / "ml-100k"))
    manifest = manifest_of(old)
    del manifest["files"]  # manifests before versions list no files
    (old / MANIFEST).write_bytes(orjson.dumps(manifest))
    assert resolve_artifacts(old) == old and artifacts_complete(old)
    assert read_manifest(old)["version"] == manifest["version"]
    rt = Runtime.load(old)
    assert rt.directory == old and "two_tower" in rt.components
    assert verify(old) != []  # nothing to check against: not reported as intact


def test_missing_artifacts_are_missing(tmp_path: Path) -> None:
    assert not artifacts_complete(tmp_path / "nothing")
    assert not artifacts_complete(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        resolve_artifacts(tmp_path)
    (tmp_path / CURRENT).symlink_to("versions/gone")  # dangling
    assert not artifacts_complete(tmp_path)


# --- publishing, pruning, legacy roots (no training) --------------------------------------


def fake_build(root: Path, version: str, keep: int = 3) -> Path:
    """A staged 'build' of one file, published as ``version`` (made unique)."""
    staging = staging_dir(root)
    staging.mkdir(parents=True)
    (staging / "weights.bin").write_bytes(version.encode())
    name = unique_version(root, version)
    manifest = {"version": name, "created_at": datetime.now(UTC).isoformat(),
                "files": file_table(staging)}
    (staging / MANIFEST).write_bytes(orjson.dumps(manifest))
    return publish(root, staging, name, keep)


def test_pruning_keeps_the_newest_n(tmp_path: Path) -> None:
    root = tmp_path / "art"
    published = [fake_build(root, f"v{i}", keep=3) for i in range(5)]
    assert list_versions(root) == published[:-4:-1]  # the newest three, newest first
    assert resolve_artifacts(root) == published[-1].resolve()
    assert sorted(p.name for p in (root / VERSIONS).iterdir()) == ["v2", "v3", "v4"]
    assert all(verify(v) == [] for v in list_versions(root))


def test_pruning_never_deletes_the_current_version(tmp_path: Path) -> None:
    root = tmp_path / "art"
    published = [fake_build(root, f"v{i}") for i in range(3)]
    point_current(root, published[0])  # a rollback to the oldest
    assert prune(root, keep=1) == [published[1]]
    assert set(list_versions(root)) == {published[0], published[2]}
    assert resolve_artifacts(root) == published[0].resolve()
    with pytest.raises(ValueError):
        prune(root, keep=0)


def test_set_current_points_at_a_published_version(tmp_path: Path) -> None:
    root = tmp_path / "art"
    first, second = fake_build(root, "v1"), fake_build(root, "v2")
    assert set_current(root, "v1") == first  # a rollback: the same atomic, relative flip
    assert resolve_artifacts(root) == first.resolve()
    assert not os.path.isabs(os.readlink(root / CURRENT))
    assert list_versions(root) == [second, first]  # nothing pruned, nothing copied
    with pytest.raises(FileNotFoundError, match="v9"):
        set_current(root, "v9")
    for bad in ("", ".", "..", "../v1", "v1/../v2", ".deleting-v1", str(second)):
        with pytest.raises(ValueError):
            set_current(root, bad)
    assert resolve_artifacts(root) == first.resolve()


def test_same_version_twice_gets_a_unique_directory(tmp_path: Path) -> None:
    root = tmp_path / "art"
    a, b = (fake_build(root, "ml-100k-20261202T170000Z") for _ in range(2))
    assert a != b and a.is_dir() and b.is_dir()
    assert manifest_of(b)["version"] == b.name
    assert resolve_artifacts(root) == b.resolve()


def test_failed_flip_keeps_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "art"
    first = fake_build(root, "v1")

    def refuse(*_: object) -> None:
        raise OSError("no symlinks today")

    monkeypatch.setattr(os, "symlink", refuse)
    with pytest.raises(OSError, match="no symlinks"):
        fake_build(root, "v2")
    assert resolve_artifacts(root) == first.resolve()
    assert list_versions(root) == [first]


def test_building_into_a_root_of_the_old_layout_retires_it(tmp_path: Path) -> None:
    root = tmp_path / "art"
    root.mkdir()
    (root / "weights.bin").write_bytes(b"old")
    (root / MANIFEST).write_bytes(orjson.dumps({"version": "old-build",
                                                "created_at": "2026-01-01T00:00:00+00:00"}))
    new = fake_build(root, "new-build")
    assert resolve_artifacts(root) == new.resolve()  # the old manifest no longer shadows it
    assert not (root / MANIFEST).exists() and not (root / "weights.bin").exists()
    retired = root / VERSIONS / "old-build"
    assert (retired / "weights.bin").read_bytes() == b"old"
    assert list_versions(root) == [new, retired]
