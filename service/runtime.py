"""Everything the pipeline needs from an artifacts directory, loaded once.

The layout is written by ``models.build`` (see docs/architecture.md): safetensors weights plus a
JSON config per model, a FAISS index file, id maps and ``manifest.json``. Nothing here unpickles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import orjson
import torch
from safetensors.numpy import load_file

from index import load_index
from index.base import VectorIndex
from index.semantic_ids import SemanticIds
from index.tdm_tree import TDMTree
from models.build_retrieval import SEQUENTIAL
from models.checkpoint import load_model
from models.data.dataset import IdMap
from models.itemcf import ItemCF
from models.popularity import Popularity

MANIFEST = "manifest.json"
ID_MAPS = "id_maps.json"
USER_FEATURES = "user_features.safetensors"
POPULARITY = "popularity.safetensors"
ITEMCF = "itemcf.safetensors"
ANN_INDEX = "two_tower_items.faiss"
ITEM_EMBEDDINGS = "item_embeddings.safetensors"
RANKERS = ("din", "deepfm")
SEMANTIC_IDS = "semantic_ids.safetensors"
TDM_TREE = "tdm_tree.safetensors"


def read_manifest(directory: Path) -> dict:
    return orjson.loads((Path(directory) / MANIFEST).read_bytes())


def artifacts_complete(directory: Path) -> bool:
    # The manifest is written last (build renames a finished temp dir into place), so its
    # presence means the directory is whole.
    return (Path(directory) / MANIFEST).is_file()


@dataclass
class Runtime:
    directory: Path
    manifest: dict
    users: IdMap
    items: IdMap
    user_codes: np.ndarray  # (n_users, F) int64, 0 = unknown
    popularity: Popularity
    itemcf: ItemCF
    two_tower: torch.nn.Module
    ann: VectorIndex
    item_emb: np.ndarray  # (n_items, D) float32, L2-normalised two-tower item vectors
    rankers: dict[str, torch.nn.Module] = field(default_factory=dict)
    # The generative path: semantic IDs, the TIGER generator, the HSTU ranker.
    semantic_ids: SemanticIds | None = None
    tiger: torch.nn.Module | None = None
    hstu: torch.nn.Module | None = None
    # Sequential retrievers, recall method -> (model with user_vector/item_vectors, exact MIPS
    # index over its item vectors); only those whose files the artifacts hold.
    retrievers: dict[str, tuple[torch.nn.Module, VectorIndex]] = field(default_factory=dict)
    # TDM: the node scorer and its tree, when the artifacts hold them.
    tdm: tuple[torch.nn.Module, TDMTree] | None = None

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def max_history(self) -> int:
        """The longest history any loaded model reads: requests fetch this many recent items
        from the store, and each stage keeps its own model's tail of them."""
        models = [self.two_tower, *self.rankers.values(), self.tiger, self.hstu,
                  *(m for m, _ in self.retrievers.values()),
                  self.tdm[0] if self.tdm is not None else None]
        lengths = [getattr(m.cfg, attr) for m in models if m is not None
                   for attr in ("max_history", "max_len") if hasattr(m.cfg, attr)]
        return int(max(lengths))

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unknown"))

    def user_features(self, user_index: int | None) -> np.ndarray:
        """(F,) codes of a known user; all zeros ("<unk>") for users the models never saw."""
        if user_index is None:
            return np.zeros(self.user_codes.shape[1], dtype=np.int64)
        return self.user_codes[user_index]

    @classmethod
    def load(cls, directory: Path, ef_search: int | None = None) -> Runtime:
        directory = Path(directory)
        manifest = read_manifest(directory)
        maps = orjson.loads((directory / ID_MAPS).read_bytes())
        codes = load_file(str(directory / USER_FEATURES))["codes"].astype(np.int64)
        emb = load_file(str(directory / ITEM_EMBEDDINGS))["two_tower"].astype(np.float32)
        return cls(
            directory=directory,
            manifest=manifest,
            users=IdMap.from_ids(maps["users"]),
            items=IdMap.from_ids(maps["items"]),
            user_codes=codes,
            popularity=Popularity.from_state(load_file(str(directory / POPULARITY))),
            itemcf=ItemCF.from_state(load_file(str(directory / ITEMCF))),
            two_tower=load_model(directory, "two_tower"),
            ann=load_index(directory / ANN_INDEX, ef_search=ef_search),
            item_emb=np.ascontiguousarray(emb),
            rankers={name: load_model(directory, name) for name in RANKERS},
            semantic_ids=SemanticIds.load(directory / SEMANTIC_IDS),
            tiger=load_model(directory, "tiger"),
            hstu=load_model(directory, "hstu"),
            retrievers=load_retrievers(directory),
            tdm=load_tdm(directory),
        )


def load_tdm(directory: Path) -> tuple[torch.nn.Module, TDMTree] | None:
    if not (directory / TDM_TREE).is_file():
        return None
    return load_model(directory, "tdm"), TDMTree.load(directory / TDM_TREE)


def load_retrievers(directory: Path) -> dict[str, tuple[torch.nn.Module, VectorIndex]]:
    """The sequential retrievers present under ``directory`` (artifact format >= 3)."""
    out = {}
    for method, name in SEQUENTIAL.items():
        if (directory / f"{name}.json").is_file():
            out[method] = (load_model(directory, name),
                           load_index(directory / f"{name}_items.faiss"))
    return out
