"""The minibatch loop most trainers share (shuffle, score a batch, Adam step), and the progress
display every trainer uses (rich, as the CLI does)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

# (row indices of the batch) -> loss, or None to skip the batch.
BatchLoss = Callable[[np.ndarray], torch.Tensor | None]
_console = Console(stderr=True)


@contextmanager
def epoch_progress(description: str, total: int | None, enabled: bool
                   ) -> Iterator[Callable[[str], None]]:
    """A transient bar for one epoch; yields ``advance(loss text)``, called once per batch."""
    with Progress(*Progress.get_default_columns(), "{task.fields[loss]}", console=_console,
                  transient=True, disable=not enabled) as bar:
        task = bar.add_task(description, total=total, loss="")
        yield lambda loss: bar.update(task, advance=1, loss=loss)


def report_epoch(name: str, epoch: int, epochs: int, loss: float, t0: float,
                 enabled: bool) -> None:
    """One line per finished epoch: mean loss and elapsed seconds."""
    if enabled:
        _console.print(f"{name} epoch {epoch + 1}/{epochs}: loss {loss:.4f} "
                       f"({time.perf_counter() - t0:.1f}s)")


# The most torch threads a trainer may take in this process (None: no cap). A parallel build
# (models/build/parallel.py) caps each worker, so that workers side by side share the cores.
_thread_cap: int | None = None


def cap_threads(n: int | None) -> None:
    """Hold every later ``setup`` in this process to at most ``n`` torch threads."""
    global _thread_cap
    _thread_cap = n
    if n is not None:
        torch.set_num_threads(n)


def setup(seed: int, num_threads: int | None) -> np.random.Generator:
    """Seed torch and return the numpy generator the trainer draws from."""
    if num_threads is None:
        num_threads = _thread_cap
    elif _thread_cap is not None:
        num_threads = min(num_threads, _thread_cap)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


# Learning-rate schedules a trainer may name: step -> factor of the base rate.
SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, total_steps: int) -> Callable[[int], float]:
    """``schedule`` over ``total_steps`` optimiser steps -> step -> multiplier of the base lr.
    "cosine" decays along half a cosine from 1 to 0 by the last step, so the last epochs settle
    rather than wander at the full step size and the epoch a validation check keeps depends
    less on noise; "constant" is 1 throughout."""
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "cosine":
        span = max(total_steps, 1)
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, span) / span))
    raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {schedule!r}")


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
    schedule: str = "constant",
) -> list[float]:
    """Train ``model`` in place with Adam; returns the row-weighted mean loss per epoch and
    leaves the model in eval mode. ``on_epoch(epoch)`` runs before each epoch (e.g. to
    resample negatives). ``schedule`` names the learning-rate schedule (``SCHEDULES``)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n_batches = (n_rows + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(schedule, n_batches * epochs))
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        if on_epoch is not None:
            on_epoch(epoch)
            model.train()  # the hook may have evaluated the model
        order = rng.permutation(n_rows)
        total, count = 0.0, 0
        with epoch_progress(f"{name} epoch {epoch + 1}/{epochs}", n_batches,
                            progress) as advance:
            for b in range(n_batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                loss = batch_loss(idx)
                if loss is None:
                    continue
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                count += len(idx)
                advance(f"loss {loss.item():.4f}")
        losses.append(total / max(count, 1))
        report_epoch(name, epoch, epochs, losses[-1], t0, progress)
    model.eval()
    return losses
