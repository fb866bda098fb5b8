"""RQ-VAE: content embedding -> a short tuple of discrete codes (TIGER's semantic IDs).

Rajput et al., "Recommender Systems with Generative Retrieval" (NeurIPS 2023). An MLP encoder
maps an item's content vector to a latent z; residual quantisation then picks, level by
level, the nearest code (L2) of that level's codebook for what the previous levels left over;
the sum of the chosen codes is decoded back to the content vector. Gradients pass the
non-differentiable code choice with the straight-through estimator (STE).

Per level l with residual r_l and chosen code e_l (VQ-VAE, van den Oord et al. 2017):
    codebook loss   ||sg(r_l) - e_l||^2        moves the code toward the residual
    commitment loss beta * ||r_l - sg(e_l)||^2 keeps the encoder near its codes
Squared errors are summed over the feature axis and averaged over rows.

Code balancing (LC-Rec, Zheng et al. ICDE 2024; LETTER, Wang et al. CIKM 2024): with
``sinkhorn_eps`` > 0 the last level's codes are chosen during training by a Sinkhorn-Knopp
balanced assignment over the batch (every code gets about B/K rows) instead of the nearest
code, which spreads items that would pile onto one code. Final codes are always the nearest
ones (``encode_codes``); collisions left then are spread by ``index.semantic_ids.
spread_collisions`` when ``reassign_collisions`` is set (the build does it).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch
from torch import nn


@dataclass
class RQVAEConfig:
    in_dim: int
    hidden: tuple[int, ...] = (512, 256, 128)
    code_dim: int = 32
    levels: int = 3
    codebook_size: int = 256
    beta: float = 0.25
    kmeans_iters: int = 25  # faiss.Kmeans iterations per level in init_codebooks
    seed: int = 0  # k-means seed
    # > 0: Sinkhorn-balanced last-level assignment while training (LC-Rec uses 0.003 on
    # distances scaled to [-1, 1]); 0: nearest code, as in TIGER.
    sinkhorn_eps: float = 0.0
    sinkhorn_iters: int = 50
    # True: items left sharing all ``levels`` codes move to the nearest free last-level code
    # under their prefix (optimal assignment per prefix), so the disambiguation token is
    # needed only where a prefix holds more than codebook_size items.
    reassign_collisions: bool = False


def _mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers through ``dims`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def sq_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 error per row, averaged over rows: (N, D), (N, D) -> scalar."""
    return (a - b).pow(2).sum(-1).mean()


def nearest_code(r: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """r (N, D), codebook (K, D) -> (N,) int64 index of the nearest code by L2."""
    # ||r - c||^2 = ||r||^2 - 2 r.c + ||c||^2; ||r||^2 is constant per row.
    d = codebook.pow(2).sum(-1).unsqueeze(0) - 2.0 * (r @ codebook.T)  # (N, K)
    return d.argmin(dim=-1)


@torch.no_grad()
def sinkhorn_codes(d: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Balanced assignment: d (N, K) distances -> (N,) int64 codes, the argmax per row of the
    Sinkhorn-Knopp transport plan with uniform marginals (each code ~N/K rows), entropic
    regularisation ``eps`` on distances rescaled to [-1, 1] (as in LC-Rec)."""
    d = d.double()
    mid = (d.max() + d.min()) / 2
    amp = (d.max() - mid).clamp_min(1e-12)
    logq = -((d - mid) / amp) / eps  # (N, K) log of the unnormalised plan
    n, k = d.shape
    for _ in range(iters):  # alternate the marginals in log space (no overflow at small eps)
        logq = logq - torch.logsumexp(logq, 0, keepdim=True) - np.log(k)  # columns: 1/K
        logq = logq - torch.logsumexp(logq, 1, keepdim=True) - np.log(n)  # rows: 1/N
    return logq.argmax(-1)


class RQVAE(nn.Module):
    def __init__(self, cfg: RQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = list(cfg.hidden)
        self.encoder = _mlp([cfg.in_dim, *hidden, cfg.code_dim])
        self.decoder = _mlp([cfg.code_dim, *reversed(hidden), cfg.in_dim])
        # (levels, K, code_dim); random until init_codebooks sets them from data.
        self.codebooks = nn.Parameter(
            torch.randn(cfg.levels, cfg.codebook_size, cfg.code_dim) * 0.1)
        # 1 once init_codebooks ran (saved with the weights so a reload is not re-initialised).
        self.register_buffer("initialised", torch.zeros((), dtype=torch.int64))

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (N, D) -> (z_q (N, D) with STE gradient, codes (N, levels) int64, loss scalar)."""
        cfg = self.cfg
        residual = z
        z_sum = torch.zeros_like(z)  # (N, D) sum of the chosen codes
        codes = []
        loss = z.new_zeros(())
        for level in range(cfg.levels):
            cb = self.codebooks[level]  # (K, D)
            if (self.training and cfg.sinkhorn_eps > 0 and level == cfg.levels - 1
                    and len(z) > 1):
                d = torch.cdist(residual.detach(), cb.detach()).pow(2)  # (N, K)
                idx = sinkhorn_codes(d, cfg.sinkhorn_eps, cfg.sinkhorn_iters)
            else:
                idx = nearest_code(residual.detach(), cb.detach())  # (N,)
            e = cb[idx]  # (N, D), differentiable w.r.t. the codebook
            codebook_loss = sq_err(residual.detach(), e)
            commit_loss = sq_err(residual, e.detach())
            loss = loss + codebook_loss + cfg.beta * commit_loss
            z_sum = z_sum + e
            residual = residual - e.detach()
            codes.append(idx)
        # Straight-through: the forward value is the quantised sum, the gradient is identity
        # to z. The codebooks are trained only by the codebook loss above.
        z_q = z + (z_sum - z).detach()
        return z_q, torch.stack(codes, dim=1), loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, in_dim) -> (x_hat (N, in_dim), codes (N, levels) int64, quantisation loss)."""
        z = self.encoder(x)  # (N, code_dim)
        z_q, codes, q_loss = self.quantize(z)
        return self.decoder(z_q), codes, q_loss

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, reconstruction, quantisation) losses of a batch x (N, in_dim)."""
        x_hat, _, q_loss = self(x)
        recon = sq_err(x_hat, x)
        return recon + q_loss, recon, q_loss

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in_dim) -> (N, levels) int64 codes, one per level (the nearest codes, even
        in training mode: Sinkhorn balancing is a training device)."""
        return self.last_level_distances(x)[0]

    @torch.no_grad()
    def last_level_distances(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, in_dim) -> (codes (N, levels) nearest codes, squared distances (N, K) of each
        row's last-level residual to every last-level code)."""
        was = self.training
        self.eval()  # nearest codes, no Sinkhorn
        z = self.encoder(x)  # (N, D)
        codes = self.quantize(z)[1]
        last = self.cfg.levels - 1
        residual = z - sum((self.codebooks[lv][codes[:, lv]] for lv in range(last)),
                           torch.zeros_like(z))  # what the last level quantises
        self.train(was)
        return codes, torch.cdist(residual, self.codebooks[last]).pow(2)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in_dim) -> decoded quantised reconstruction (N, in_dim)."""
        return self(x)[0]

    @torch.no_grad()
    def init_codebooks(self, x_batch: torch.Tensor) -> None:
        """k-means initialisation: level l's codebook = faiss.Kmeans centroids of the level-l
        residuals of ``x_batch`` (N, in_dim) under the current encoder; later levels see the
        residuals left by the earlier levels' centroids.

        With fewer than ``codebook_size`` distinct rows the missing codes are copies of random
        residuals plus small noise (faiss needs at least K points)."""
        cfg = self.cfg
        k = cfg.codebook_size
        residual = self.encoder(x_batch).detach().cpu().numpy().astype(np.float32)  # (N, D)
        rng = np.random.default_rng(cfg.seed)
        for level in range(cfg.levels):
            n = len(residual)
            k_fit = min(k, n)
            km = faiss.Kmeans(cfg.code_dim, k_fit, niter=cfg.kmeans_iters, seed=cfg.seed + level,
                              min_points_per_centroid=1,
                              verbose=False)
            km.train(np.ascontiguousarray(residual))
            cents = km.centroids.astype(np.float32)  # (k_fit, D)
            if k_fit < k:
                extra = residual[rng.integers(0, n, size=k - k_fit)]
                noise = rng.normal(scale=1e-3, size=extra.shape).astype(np.float32)
                cents = np.concatenate([cents, extra + noise], axis=0)  # (K, D)
            self.codebooks.data[level] = torch.from_numpy(cents).to(self.codebooks.device)
            _, assign = km.index.search(np.ascontiguousarray(residual), 1)  # (N, 1)
            residual = residual - cents[assign[:, 0]]
        self.initialised.fill_(1)


def code_stats(codes: np.ndarray, codebook_size: int) -> dict[str, object]:
    """Usage figures of semantic codes (N, L): per level the fraction of the codebook used;
    ``collision_rate`` = share of items whose full code tuple another item also has;
    ``unique_rate`` = distinct tuples / N; ``max_group`` = largest set of items on one tuple."""
    codes = np.asarray(codes)
    n = len(codes)
    usage = [len(np.unique(codes[:, j])) / codebook_size for j in range(codes.shape[1])]
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    shared = counts[inverse] > 1
    return {
        "utilisation": usage,
        "collision_rate": float(shared.mean()) if n else 0.0,
        "unique_rate": float(len(counts) / n) if n else 1.0,
        "max_group": int(counts.max()) if n else 0,
    }
