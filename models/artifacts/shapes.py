"""Shape checks of a loaded version: its tensors against its configs and its id maps, and
every value finite (``check_values``).

A version can pass its checksums and still not fit together: a net rebuilt for another
catalog, item vectors from an older build, an index over another model's vectors. Loading does
not notice (each file is fine on its own) and serving would index out of range or silently
score the wrong items, so a reload checks this before a version may serve.

Duck-typed on what ``models.engine.core.runtime.Runtime`` exposes (``users``, ``items``,
``user_codes``, ``nets``, ``indexes``, ``arrays``): the engine imports this package, so this
module must not import the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.artifacts.checkpoint import load_model
from models.artifacts.manifest import ID_MAPS, USER_FEATURES

# Arrays whose first axis is the item catalog: file stem -> keys. Files load by kind, so this
# is the one place that knows which dict-of-arrays files are per item.
ITEM_ROWS: dict[str, tuple[str, ...]] = {
    "popularity": ("counts", "window_counts"),
    "itemcf": ("neighbors", "sims"),
    "item_embeddings": ("two_tower",),
    "semantic_ids": ("ids",),
    "tdm_tree": ("item_node",),
}
# Config fields that count catalog entries: field -> what it must equal.
ITEM_FIELDS = ("n_items",)
USER_FIELDS = ("n_users",)


class Loaded(Protocol):
    """What the checks read from a loaded version (``Runtime`` has all of it)."""

    users: Any  # IdMap: len() = users
    items: Any  # IdMap: len() = items
    user_codes: np.ndarray
    nets: Mapping[str, Any]  # stem -> nn.Module with .cfg
    indexes: Mapping[str, Any]  # stem -> VectorIndex (len(), .dim)
    arrays: Mapping[str, Mapping[str, np.ndarray]]


def check_shapes(rt: Loaded) -> list[str]:
    """Every mismatch as "<file>: <problem>"; an empty list means the version fits together."""
    n_users, n_items = len(rt.users), len(rt.items)
    problems: list[str] = []
    if rt.user_codes.shape[0] != n_users:
        problems.append(f"{USER_FEATURES}: {rt.user_codes.shape[0]} user rows, {ID_MAPS} has "
                        f"{n_users} users")
    for stem, model in sorted(rt.nets.items()):
        cfg = model.cfg
        for name, want, what in ([(f, n_items, "items") for f in ITEM_FIELDS]
                                 + [(f, n_users, "users") for f in USER_FIELDS]):
            got = getattr(cfg, name, None)
            if got is not None and int(got) != want:
                problems.append(f"{stem}.json: {name} {got}, {ID_MAPS} has {want} {what}")
    for stem, keys in ITEM_ROWS.items():
        for key in keys:
            arr = rt.arrays.get(stem, {}).get(key)
            if arr is not None and (arr.ndim == 0 or arr.shape[0] != n_items):
                problems.append(f"{stem}.safetensors: {key} has shape {arr.shape}, {ID_MAPS} "
                                f"has {n_items} items")
    problems += _index_problems(rt, n_items)
    problems += _cross_problems(rt)
    return problems


def check_values(rt: Loaded) -> list[str]:
    """Every weight or array holding NaN or an infinity, as "<file>: <tensor> ..."; a run that
    diverged writes such a checkpoint, and its nets still return valid-looking item lists
    (ranks, fused by reciprocal rank, hide the NaN scores), so only this check sees it."""
    problems = []
    for stem, model in sorted(rt.nets.items()):
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not bool(t.isfinite().all()):
                problems.append(f"{stem}.safetensors: {name} holds NaN or infinite values")
    for stem, arrays in sorted(rt.arrays.items()):
        for key, arr in sorted(arrays.items()):
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                problems.append(f"{stem}.safetensors: {key} holds NaN or infinite values")
    return problems


def _index_problems(rt: Loaded, n_items: int) -> list[str]:
    """Each item index holds the whole catalog, in the width of the vectors it searches."""
    problems = []
    for stem, index in sorted(rt.indexes.items()):
        if len(index) != n_items:
            problems.append(f"{stem}.faiss: {len(index)} vectors, {ID_MAPS} has {n_items} "
                            "items")
        owner = stem.removesuffix("_items")
        if owner == "two_tower":
            vectors = rt.arrays.get("item_embeddings", {}).get("two_tower")
            want = None if vectors is None else vectors.shape[-1]
            source = "item_embeddings.safetensors"
        else:  # a sequential retriever's index over its own item vectors
            want = getattr(getattr(rt.nets.get(owner), "cfg", None), "dim", None)
            source = f"{owner}.json"
        if want is not None and index.dim != int(want):
            problems.append(f"{stem}.faiss: dimension {index.dim}, {source} says {want}")
    return problems


def _cross_problems(rt: Loaded) -> list[str]:
    """Files that describe one another: TDM's scorer and its tree, TIGER and the semantic IDs."""
    problems = []
    tdm, tree = rt.nets.get("tdm"), rt.arrays.get("tdm_tree")
    if tdm is not None and tree is not None and "parent" in tree:
        nodes = getattr(tdm.cfg, "n_nodes", None)
        if nodes is not None and int(nodes) != tree["parent"].shape[0]:
            problems.append(f"tdm.json: n_nodes {nodes}, tdm_tree.safetensors has "
                            f"{tree['parent'].shape[0]} nodes")
    tiger, sids = rt.nets.get("tiger"), rt.arrays.get("semantic_ids", {}).get("ids")
    radix = getattr(getattr(tiger, "cfg", None), "radix", None)
    if radix is not None and sids is not None:
        if sids.ndim != 2 or sids.shape[1] != len(radix):
            problems.append(f"semantic_ids.safetensors: ids of shape {sids.shape}, tiger.json "
                            f"has {len(radix)} levels")
        elif len(sids) and bool((sids >= np.asarray(radix)).any() or (sids < 0).any()):
            problems.append("semantic_ids.safetensors: codes outside tiger.json's radix "
                            f"{list(radix)}")
    return problems


def mismatched_net(directory: Path) -> str:
    """After a failed load: "<stem>.json does not rebuild <stem>.safetensors: " for the first
    net whose config does not fit its weights, else "". Torch's load errors name the class,
    not the file; this names the file. Loads each net again, so call it only on failure."""
    for config in sorted(Path(directory).glob("*.json")):
        if not config.with_suffix(".safetensors").is_file():
            continue
        try:
            load_model(directory, config.stem)
        except Exception:  # any failure to rebuild is the answer
            return f"{config.name} does not rebuild {config.stem}.safetensors: "
    return ""
