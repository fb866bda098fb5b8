"""RQ-VAE training on item content vectors: k-means codebook init on the first batch, then
Adam on reconstruction + quantisation losses (see ``models/rqvae.py``).

Codes unused for a whole epoch can be restarted (``reset_dead_codes``): each dead code of a
level is moved onto a random residual of that level, a common fix for codebook collapse that
raises utilisation and lowers collisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch

from models.nets.rqvae import RQVAE, nearest_code
from models.train.loop import run_epochs, setup


@dataclass
class RQVAETrainConfig:
    epochs: int = 200
    batch_size: int = 1024  # the first batch seeds k-means: keep it >= codebook_size
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    reset_dead_codes: bool = True
    # One thread, for torch and for faiss's k-means init: on 2 threads the float sums are
    # split differently run to run and the codes of every item changed between identical
    # builds; on one they are identical (and the step takes seconds either way).
    num_threads: int | None = 1


@torch.no_grad()
def _reset_dead_codes(model: RQVAE, x: torch.Tensor, rng: np.random.Generator) -> int:
    """Move every code no row of x (N, in_dim) picks onto a random residual of its level;
    returns how many were moved."""
    residual = model.encoder(x)  # (N, D)
    moved = 0
    for level in range(model.cfg.levels):
        cb = model.codebooks.data[level]  # (K, D)
        idx = nearest_code(residual, cb)  # (N,)
        used = torch.zeros(len(cb), dtype=torch.bool)
        used[idx] = True
        dead = torch.nonzero(~used).flatten()
        if len(dead):
            pick = torch.from_numpy(rng.integers(0, len(residual), size=len(dead)))
            cb[dead] = residual[pick]
            moved += len(dead)
            idx = nearest_code(residual, cb)
        residual = residual - cb[idx]
    return moved


def train_rqvae(model: RQVAE, x: np.ndarray | torch.Tensor, cfg: RQVAETrainConfig,
                progress: bool = True) -> list[float]:
    """Train ``model`` in place on content vectors x (N, in_dim); returns the mean loss per
    epoch. The codebooks are k-means initialised on the first batch unless already set."""
    rng = setup(cfg.seed, cfg.num_threads)
    data = torch.as_tensor(np.asarray(x, dtype=np.float32))  # (N, in_dim)
    if data.ndim != 2 or data.shape[1] != model.cfg.in_dim:
        raise ValueError(f"x must be (N, {model.cfg.in_dim}), got {tuple(data.shape)}")

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        xb = data[torch.from_numpy(idx)]  # (B, in_dim)
        if not int(model.initialised):
            model.init_codebooks(xb)
        return model.loss(xb)[0]

    def on_epoch(epoch: int) -> None:
        # stop restarting in the last 10% of epochs so the moved codes settle
        if cfg.reset_dead_codes and 0 < epoch < int(0.9 * cfg.epochs):
            _reset_dead_codes(model, data, rng)

    faiss_threads = faiss.omp_get_max_threads()
    if cfg.num_threads is not None:
        faiss.omp_set_num_threads(cfg.num_threads)
    try:
        return run_epochs(model, len(data), cfg.batch_size, cfg.epochs, cfg.lr,
                          cfg.weight_decay, rng, batch_loss, "rqvae", progress=progress,
                          on_epoch=on_epoch)
    finally:
        faiss.omp_set_num_threads(faiss_threads)
