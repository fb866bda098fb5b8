"""Partial rebuilds (`genrec build --only ...`): which components to retrain, and copying the
others from the previous artifacts directory.

Retraining a component retrains what was trained on its output: the semantic IDs and TDM's
tree come from the two-tower's item vectors (``two_tower`` pulls in ``semantic_ids`` and
``tdm``), and TIGER generates semantic IDs (``semantic_ids`` pulls in ``tiger``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson

# Component -> the files it writes (beside manifest.json, id maps and user features).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "two_tower": ("two_tower.safetensors", "two_tower.json", "item_embeddings.safetensors",
                  "two_tower_items.faiss"),
    "semantic_ids": ("rqvae.safetensors", "rqvae.json", "semantic_ids.safetensors"),
    "tiger": ("tiger.safetensors", "tiger.json"),
    "hstu": ("hstu.safetensors", "hstu.json"),
    "gru4rec": ("gru4rec.safetensors", "gru4rec.json", "gru4rec_items.faiss"),
    "sasrec": ("sasrec.safetensors", "sasrec.json", "sasrec_items.faiss"),
    "hstu_retrieval": ("hstu_retrieval.safetensors", "hstu_retrieval.json",
                       "hstu_retrieval_items.faiss"),
    "tdm": ("tdm.safetensors", "tdm.json", "tdm_tree.safetensors"),
    "deepfm": ("deepfm.safetensors", "deepfm.json"),
    "din": ("din.safetensors", "din.json"),
}
DEPENDENTS: dict[str, tuple[str, ...]] = {"two_tower": ("semantic_ids", "tdm"),
                                          "semantic_ids": ("tiger",)}


def with_dependents(names: list[str]) -> set[str]:
    out: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(DEPENDENTS.get(name, ()))
    return out


class Reuse:
    """``only`` None: a full build. Otherwise retrain ``only`` (plus dependents) and copy every
    other component's files, config and training time from ``previous``; it must be a complete
    artifacts directory built from data with the same ``fingerprint``."""

    def __init__(self, previous: Path, fingerprint: str, only: list[str] | None) -> None:
        self.previous = Path(previous)
        self.only: set[str] | None = None
        self.manifest: dict[str, Any] = {}
        if only is None:
            return
        unknown = sorted(set(only) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"--only: unknown components {unknown}; choose from "
                             f"{', '.join(COMPONENTS)}")
        path = self.previous / "manifest.json"
        if not path.is_file():
            raise ValueError(f"--only needs a complete earlier build in {self.previous} "
                             "(no manifest.json there); run a full `genrec build` first")
        self.manifest = orjson.loads(path.read_bytes())
        if self.manifest.get("dataset", {}).get("fingerprint") != fingerprint:
            raise ValueError(f"--only: {self.previous} was built from other data; "
                             "run a full `genrec build`")
        self.only = with_dependents(list(only))

    def train(self, name: str) -> bool:
        return self.only is None or name in self.only

    def keep(self, name: str, out: Path, configs: dict[str, Any],
             timings: dict[str, float]) -> None:
        """Copy ``name``'s files into ``out`` and its config / training time into the new
        manifest's dicts. A component the earlier build lacks is an error naming it."""
        for file in COMPONENTS[name]:
            src = self.previous / file
            if not src.is_file():
                raise ValueError(f"--only: {src} is missing, so {name} cannot be kept; "
                                 f"add {name} to --only or run a full `genrec build`")
            shutil.copy2(src, out / file)
        if name in self.manifest.get("configs", {}):
            configs[name] = self.manifest["configs"][name]
        seconds = self.manifest.get("train_seconds", {})
        if name in seconds:
            timings[name] = seconds[name]
