"""The artifacts directory's own files, beside the components' (``models.registry``):
``manifest.json`` (written last: its presence means the directory is whole), the id maps and
the user features. Build writes them; the runtime and `genrec eval` read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

# 2: + semantic IDs, TIGER, HSTU; 3: + sequential retrievers, TDM
ARTIFACT_VERSION = 3
MANIFEST = "manifest.json"
ID_MAPS = "id_maps.json"  # {"users": [...], "items": [...]}: dense index -> external id
USER_FEATURES = "user_features.safetensors"  # codes (n_users, F)
USER_FEATURE_NAMES = "user_features.json"  # names + vocab


def write_json(path: Path, obj: Any) -> None:
    path.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def read_manifest(directory: Path) -> dict[str, Any]:
    return orjson.loads((Path(directory) / MANIFEST).read_bytes())


def artifacts_complete(directory: Path) -> bool:
    # The manifest is written last (build renames a finished temp dir into place), so its
    # presence means the directory is whole.
    return (Path(directory) / MANIFEST).is_file()


def update_metrics(out_dir: Path, stage: str, metrics: dict[str, dict[str, float]]) -> None:
    """Store evaluation results in the manifest, keyed by split stage then method; methods
    evaluated earlier and not in ``metrics`` keep their figures."""
    path = Path(out_dir) / MANIFEST
    manifest = orjson.loads(path.read_bytes())
    manifest.setdefault("metrics", {}).setdefault(stage, {}).update(metrics)
    tmp = path.with_suffix(".json.tmp")
    write_json(tmp, manifest)
    tmp.replace(path)
