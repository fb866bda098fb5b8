"""Everything the engine serves from an artifacts directory, loaded once.

The layout is ``models.registry.COMPONENTS`` (each component's files) plus the directory's own
files (``models.artifacts.manifest``). Files load by kind, so a new component needs no loader:
``{stem}.json`` + ``{stem}.safetensors`` is a net (rebuilt from its JSON config, weights from
safetensors), ``{stem}.faiss`` an index, any other ``.safetensors`` a dict of arrays, a lone
``{stem}.json`` a document (the fitted fusion plans). Nothing
here unpickles, and nothing imports a trainer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import orjson
import torch
from safetensors.numpy import load_file

from index import load_index
from index.base import VectorIndex
from models.artifacts.checkpoint import load_model
from models.artifacts.manifest import ID_MAPS, USER_FEATURES, read_manifest
from models.artifacts.versions import resolve_artifacts
from models.data.dataset import IdMap
from models.registry import COMPONENTS, Component

# Items of history a sequential model reads when its config declares no window (GRU4Rec):
# served recall and the batched evaluator both feed it this many.
DEFAULT_HISTORY = 50


def history_length(model: torch.nn.Module) -> int | None:
    """The history window ``model`` reads: its config's ``max_len`` or ``max_history``, else
    ``DEFAULT_HISTORY`` for a next-item model (one with ``user_vector``); None for a model
    that reads no history."""
    cfg = model.cfg
    for attr in ("max_len", "max_history"):
        if hasattr(cfg, attr):
            return int(getattr(cfg, attr))
    return DEFAULT_HISTORY if hasattr(model, "user_vector") else None


@dataclass
class Runtime:
    directory: Path
    manifest: dict
    users: IdMap
    items: IdMap
    user_codes: np.ndarray  # (n_users, F) int64, 0 = unknown
    components: frozenset[str]  # the components whose files the directory holds
    nets: dict[str, torch.nn.Module] = field(default_factory=dict)  # file stem -> model
    indexes: dict[str, VectorIndex] = field(default_factory=dict)  # file stem -> faiss index
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # stem -> arrays
    documents: dict[str, dict] = field(default_factory=dict)  # stem -> a lone JSON file

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def item_emb(self) -> np.ndarray:
        """(n_items, D) float32 two-tower item vectors: rerank similarity and fallbacks."""
        return self.arrays["item_embeddings"]["two_tower"]

    @cached_property
    def max_history(self) -> int:
        """The longest history any loaded model reads: requests fetch this many recent items
        from the store, and each stage keeps its own model's tail of them."""
        lengths = [n for n in map(history_length, self.nets.values()) if n is not None]
        return max(lengths, default=DEFAULT_HISTORY)  # none: a popularity/ItemCF-only version

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unknown"))

    def has(self, *names: str) -> bool:
        return all(n in self.components for n in names)

    def user_features(self, user_index: int | None) -> np.ndarray:
        """(F,) codes of a known user; all zeros ("<unk>") for users the models never saw."""
        if user_index is None:
            return np.zeros(self.user_codes.shape[1], dtype=np.int64)
        return self.user_codes[user_index]

    @classmethod
    def load(cls, directory: Path, ef_search: int | None = None,
             manifest: dict | None = None,
             step: Callable[[Callable[[], None]], None] | None = None) -> Runtime:
        """Load every component present; a missing file of a required one raises
        FileNotFoundError naming it. ``ef_search`` overrides the HNSW indexes' search depth;
        ``manifest`` stands in for a directory still being built (no manifest.json yet).
        ``directory`` is a version or an artifacts root whose ``current`` version is loaded
        (``models.artifacts.versions.resolve_artifacts``). ``step(load_one)``, when given,
        runs each component's load (a serving process runs them on its compute lane between
        requests)."""
        directory = Path(directory) if manifest is not None else resolve_artifacts(directory)
        maps = orjson.loads((directory / ID_MAPS).read_bytes())
        codes = load_file(str(directory / USER_FEATURES))["codes"].astype(np.int64)
        manifest = read_manifest(directory) if manifest is None else manifest
        rt = cls(directory=directory, manifest=manifest,
                 users=IdMap.from_ids(maps["users"]), items=IdMap.from_ids(maps["items"]),
                 user_codes=codes, components=frozenset())
        present = []
        # A progressive build's early versions hold only the components trained so far.
        partial = bool(manifest.get("partial"))
        for comp in COMPONENTS:
            if _present(directory, comp, partial):
                if step is None:
                    rt._load_files(comp.files, ef_search)
                else:
                    step(functools.partial(rt._load_files, comp.files, ef_search))
                present.append(comp.name)
        rt.components = frozenset(present)
        return rt

    def _load_files(self, files: tuple[str, ...], ef_search: int | None) -> None:
        weights = {Path(f).stem for f in files if f.endswith(".safetensors")}
        nets = weights & {Path(f).stem for f in files if f.endswith(".json")}
        for f in files:
            stem, path = Path(f).stem, self.directory / f
            if f.endswith(".json") and stem not in weights:
                self.documents[stem] = orjson.loads(path.read_bytes())
            elif f.endswith(".json"):
                self.nets[stem] = load_model(self.directory, stem)
            elif f.endswith(".faiss"):
                self.indexes[stem] = load_index(path, ef_search=ef_search)
            elif stem not in nets:  # a net's weights load with its JSON config
                self.arrays[stem] = load_file(str(path))


def _present(directory: Path, comp: Component, partial: bool = False) -> bool:
    """Whether ``comp`` is in ``directory``: all its files, or none of them where that is
    allowed (an optional component, or any component of a partial version); some of its
    files without the others is always an error."""
    missing = [f for f in comp.files if not (directory / f).is_file()]
    if not missing:
        return True
    if (comp.optional or partial) and len(missing) == len(comp.files):
        return False
    raise FileNotFoundError(f"{directory / missing[0]}: missing file of component "
                            f"{comp.name!r}; rebuild with `genrec build --only {comp.name}`")
