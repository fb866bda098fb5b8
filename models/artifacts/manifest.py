"""A version's own files, beside the components' (``models.registry``): ``manifest.json``
(written last: its presence means the version is whole; it lists every other file with its size
and sha256), the id maps and the user features. Build writes them; the runtime and `genrec
eval` read them. Paths given here may be an artifacts root (``models.artifacts.versions``:
its ``current`` version is read) or a version directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from models.artifacts.versions import MANIFEST, resolve_artifacts

# 2: + semantic IDs, TIGER, HSTU; 3: + sequential retrievers, TDM
ARTIFACT_VERSION = 3
ID_MAPS = "id_maps.json"  # {"users": [...], "items": [...]}: dense index -> external id
USER_FEATURES = "user_features.safetensors"  # codes (n_users, F)
USER_FEATURE_NAMES = "user_features.json"  # names + vocab


def write_json(path: Path, obj: Any) -> None:
    path.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the version ``directory`` names (``resolve_artifacts``)."""
    return orjson.loads((resolve_artifacts(directory) / MANIFEST).read_bytes())


def artifacts_complete(directory: Path) -> bool:
    """Whether ``directory`` names a complete version. The manifest is written last and a
    version is published only when whole, so its presence means the version is complete,
    unless it says ``partial`` (a progressive build's step, ``models/build/main.py``)."""
    try:
        path = resolve_artifacts(directory) / MANIFEST
        return path.is_file() and not orjson.loads(path.read_bytes()).get("partial", False)
    except (FileNotFoundError, orjson.JSONDecodeError):
        return False


def update_metrics(out_dir: Path, stage: str, metrics: dict[str, dict[str, float]]) -> None:
    """Store evaluation results in the manifest of the version ``out_dir`` names, keyed by
    split stage then method; methods evaluated earlier and not in ``metrics`` keep their
    figures. The manifest is not in its own ``files`` list, so the version still verifies."""
    path = resolve_artifacts(out_dir) / MANIFEST
    manifest = orjson.loads(path.read_bytes())
    manifest.setdefault("metrics", {}).setdefault(stage, {}).update(metrics)
    tmp = path.with_suffix(".json.tmp")
    write_json(tmp, manifest)
    tmp.replace(path)
