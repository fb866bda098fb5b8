"""Partial rebuilds (`genrec build --only`): the named components and their dependents are
retrained, every other file is copied byte for byte from the current version into a new one,
and bad requests fail with a clear message before anything is written."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import orjson
import pytest

from models.artifacts.versions import resolve_artifacts, verify
from models.build.main import build
from models.build.partial import with_dependents
from models.registry import component


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in directory.iterdir() if p.is_file() and p.name != "manifest.json"}


@pytest.fixture
def artifacts(tiny_artifacts: Path, tmp_path: Path) -> Path:
    """A private copy of the session's artifacts root (versions/ and the current link)."""
    out = tmp_path / "ml-100k"
    shutil.copytree(tiny_artifacts.parent.parent, out, symlinks=True)
    return out


def test_dependents_follow_what_they_were_trained_on() -> None:
    assert with_dependents(["two_tower"]) == {"two_tower", "semantic_ids", "tiger", "tdm"}
    assert with_dependents(["sasrec", "din"]) == {"sasrec", "din"}
    assert with_dependents(["hstu"]) == {"hstu_ranker"}  # the name before the rename


def test_only_retrains_named_component_and_copies_the_rest(artifacts: Path) -> None:
    previous = resolve_artifacts(artifacts)
    before = digests(previous)
    old = orjson.loads((previous / "manifest.json").read_bytes())
    # Another seed: a retrained model must differ from the copied one.
    build("ml-100k", artifacts, profile="tiny", seed=1, progress=False, only=["sasrec"])
    new = resolve_artifacts(artifacts)
    assert new != previous and verify(new) == []
    assert digests(previous) == before  # the version it copied from is left as it was
    after = digests(new)
    assert set(after) == set(before)
    changed = {name for name in after if after[name] != before[name]}
    # Popularity and ItemCF are always refitted but deterministic, so unchanged; SASRec's
    # JSON config holds no seed, so only its weights and index change. The fusion plan is
    # refitted over the new SASRec (on a sample drawn with the new seed): it may change.
    sasrec = {"sasrec.safetensors", "sasrec_items.faiss"}
    assert changed - {"fusion.json"} == sasrec < set(component("sasrec").files)
    manifest = orjson.loads((new / "manifest.json").read_bytes())
    assert manifest["retrained"] == ["sasrec"]
    assert manifest["configs"]["tiger"] == old["configs"]["tiger"]
    assert manifest["dataset"]["fingerprint"] == old["dataset"]["fingerprint"]


def test_only_rejects_unknown_component_and_missing_build(artifacts: Path,
                                                         tmp_path: Path) -> None:
    current = resolve_artifacts(artifacts)
    before = digests(current)
    with pytest.raises(ValueError, match="unknown components \\['word2vec'\\]"):
        build("ml-100k", artifacts, profile="tiny", progress=False, only=["word2vec"])
    with pytest.raises(ValueError, match="no manifest.json"):
        build("ml-100k", tmp_path / "empty", profile="tiny", progress=False, only=["sasrec"])
    (current / "din.json").unlink()
    with pytest.raises(ValueError, match="din.json is missing"):
        build("ml-100k", artifacts, profile="tiny", progress=False, only=["sasrec"])
    assert not (tmp_path / "empty").exists()
    assert not artifacts.with_name(artifacts.name + ".partial").exists()
    before.pop("din.json")
    assert resolve_artifacts(artifacts) == current
    assert digests(current) == before  # the failed rebuilds wrote nothing
