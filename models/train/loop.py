"""The minibatch loop every trainer shares: shuffle, score a batch, Adam step, progress."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

# (row indices of the batch) -> loss, or None to skip the batch.
BatchLoss = Callable[[np.ndarray], torch.Tensor | None]


def setup(seed: int, num_threads: int | None) -> np.random.Generator:
    """Seed torch and return the numpy generator the trainer draws from."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def run_epochs(
    model: nn.Module,
    n_rows: int,
    batch_size: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    rng: np.random.Generator,
    batch_loss: BatchLoss,
    name: str,
    progress: bool = True,
    on_epoch: Callable[[int], None] | None = None,
) -> list[float]:
    """Train ``model`` in place with Adam; returns the row-weighted mean loss per epoch and
    leaves the model in eval mode. ``on_epoch(epoch)`` runs before each epoch (e.g. to
    resample negatives)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    n_batches = (n_rows + batch_size - 1) // batch_size
    t0 = time.perf_counter()
    for epoch in range(epochs):
        if on_epoch is not None:
            on_epoch(epoch)
            model.train()  # the hook may have evaluated the model
        order = rng.permutation(n_rows)
        total, count = 0.0, 0
        bar = tqdm(range(n_batches), desc=f"{name} epoch {epoch + 1}/{epochs}",
                   disable=not progress, leave=False)
        for b in bar:
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = batch_loss(idx)
            if loss is None:
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        losses.append(total / max(count, 1))
        if progress:
            tqdm.write(f"{name} epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} "
                       f"({time.perf_counter() - t0:.1f}s)")
    model.eval()
    return losses
