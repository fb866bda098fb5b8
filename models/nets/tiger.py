"""TIGER: generative retrieval over semantic IDs (Rajput et al., "Recommender Systems with
Generative Retrieval", NeurIPS 2023).

An encoder-decoder Transformer reads a user token and the user's history written as semantic-ID
tokens, and writes the next item's semantic ID one token at a time:

    encoder input   [user] (i_1,0 i_1,1 .. i_1,T-1) (i_2,0 ..) .. (i_L,0 .. i_L,T-1)
    decoder input   [BOS]  t_0 t_1 .. t_T-2          -> head j predicts t_j (radix[j] logits)

Each ID position j has its own token table (radix[j] rows), shared by encoder and decoder; a
history token also gets a learned item-slot embedding (by recency: the newest item is slot 0;
a ``causal`` model numbers slots from the oldest item instead, so that every prefix of a chunk
reads as it would alone) and a learned position-within-ID embedding. Users are hashed into
``n_user_buckets`` rows (``user_bucket``); bucket 0 is reserved for anonymous / unknown users.

The model takes token tensors, not item ids: callers turn dense item ids into tokens with
``pack_histories(sids.ids, ...)``. It keeps no catalogue buffer, so one checkpoint needs only
its config, and ``generate`` (models/tiger_decode.py) needs only the model + SemanticIds.

Inference: ``memory_cache`` runs the encoder once per user and projects the cross-attention
K/V once per layer; ``step_logits`` then scores the next token of many beams per user, each
user's beams sharing its K/V (no copy per beam). It reuses the nn.TransformerDecoderLayer
weights, so it equals ``forward`` (teacher forcing) up to float rounding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ANONYMOUS_BUCKET = 0


def user_bucket(user_id: str | None, n_buckets: int) -> int:
    """Stable hash bucket of a user id in [1, n_buckets); None or "" -> ``ANONYMOUS_BUCKET``.

    blake2b, not hash(): Python salts str hashes per process, so they differ between training
    and serving. Pass None for users the model never saw so they share the trained
    anonymous row (train_tiger drops users to it at random)."""
    if n_buckets < 2:
        raise ValueError("n_buckets must be >= 2 (bucket 0 is reserved)")
    if not user_id:
        return ANONYMOUS_BUCKET
    digest = hashlib.blake2b(str(user_id).encode("utf-8"), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (n_buckets - 1)


def pack_histories(ids: np.ndarray, histories: list[np.ndarray],
                   max_history: int) -> tuple[np.ndarray, np.ndarray]:
    """ids (N, T) item -> tokens table, histories of dense items (oldest first) -> right-aligned
    tokens (B, L, T) int64 (0 where padded) and valid (B, L) bool, L = longest kept history
    (<= max_history; at least 1 so shapes stay non-empty). Items outside [0, N) are dropped."""
    n, t = ids.shape
    kept = []
    for h in histories:
        h = np.asarray(h, dtype=np.int64).reshape(-1)
        h = h[(h >= 0) & (h < n)]
        kept.append(h[len(h) - max_history:] if len(h) > max_history else h)
    width = max(1, max((len(h) for h in kept), default=0))
    items = np.zeros((len(kept), width), dtype=np.int64)
    valid = np.zeros((len(kept), width), dtype=bool)
    for b, h in enumerate(kept):
        if len(h):
            items[b, width - len(h):] = h
            valid[b, width - len(h):] = True
    return ids[items] * valid[..., None], valid


@dataclass
class TigerConfig:
    radix: list[int]  # tokens per semantic-ID position, e.g. SemanticIds.radix.tolist()
    n_user_buckets: int = 2000
    dim: int = 128
    n_heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 2
    ff_dim: int = 512
    max_history: int = 50  # items (each is len(radix) encoder tokens)
    dropout: float = 0.1
    # True: an item may attend only to the user token and to items no newer than itself, so
    # one encoder pass over a chunk of history serves a next-item target at every position
    # (``forward_chunk``; SASRec's trick): ~C targets for the price of about two samples.
    # Serving is unchanged: the next item follows the whole history.
    causal: bool = False
    # True: the output heads score with the token tables (logits_j = h . tok_emb_j), so one
    # embedding per semantic-ID token serves encoder input, decoder input and decoder output.
    tie_heads: bool = False

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            ok = [h for h in range(1, self.dim + 1) if self.dim % h == 0]
            near = min(ok, key=lambda h: (abs(h - self.n_heads), h))
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads} "
                             f"(nn.MultiheadAttention splits dim across heads); the nearest "
                             f"valid count is {near}")


@dataclass
class MemoryCache:
    """Per-user encoder output projected for cross-attention: per decoder layer (k, v) each
    (U, h, S, d/h), and key_ok (U, 1, 1, S) bool (False = padded history token), None
    when no token is padded."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    key_ok: torch.Tensor | None


class TIGER(nn.Module):
    def __init__(self, cfg: TigerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.radix = [int(r) for r in cfg.radix]
        t, d = len(self.radix), cfg.dim
        if t == 0 or min(self.radix) < 1:
            raise ValueError(f"radix must list >= 1 token per position, got {cfg.radix}")
        self.tok_emb = nn.ModuleList(nn.Embedding(r, d) for r in self.radix)
        self.user_emb = nn.Embedding(cfg.n_user_buckets, d)
        self.slot_emb = nn.Embedding(cfg.max_history, d)  # item slot by recency, 0 = newest
        self.enc_tokpos = nn.Embedding(t, d)  # position j inside an encoder item's ID
        self.dec_pos = nn.Embedding(t, d)  # decoder position: BOS, t_0, .., t_T-2
        self.bos = nn.Parameter(torch.zeros(d))
        for p in [*self.tok_emb.parameters(), self.user_emb.weight, self.slot_emb.weight,
                  self.enc_tokpos.weight, self.dec_pos.weight, self.bos]:
            nn.init.normal_(p, std=0.02)

        def enc_layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.ff_dim, cfg.dropout,
                                              batch_first=True, norm_first=True)

        def dec_layer() -> nn.TransformerDecoderLayer:
            return nn.TransformerDecoderLayer(d, cfg.n_heads, cfg.ff_dim, cfg.dropout,
                                              batch_first=True, norm_first=True)

        # enable_nested_tensor=False: nested tensors need post-norm layers anyway.
        self.encoder = nn.TransformerEncoder(enc_layer(), cfg.enc_layers, nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec_layer(), cfg.dec_layers, nn.LayerNorm(d))
        # Tied: only a bias per token (radix[j],); the weights are tok_emb[j]'s.
        self.heads = nn.ModuleList(nn.Linear(d, r, bias=not cfg.tie_heads) for r in self.radix)
        if cfg.tie_heads:
            for head, emb in zip(self.heads, self.tok_emb, strict=True):
                head.weight = emb.weight

    @property
    def length(self) -> int:
        """Tokens per semantic ID (T)."""
        return len(self.radix)

    # ---- encoder -----------------------------------------------------------------------------
    def encode(self, users: torch.Tensor, tokens: torch.Tensor,
               valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """users (B,) buckets, tokens (B, L, T) int64, valid (B, L) bool (right-aligned, as
        from ``pack_histories``) -> memory (B, 1 + L*T, d), pad (B, 1 + L*T) bool (True = pad).
        """
        B, L, T = tokens.shape
        if tokens.shape[1] > self.cfg.max_history or tokens.shape[2] != self.length:
            raise ValueError(f"tokens {tuple(tokens.shape)} exceed max_history "
                             f"{self.cfg.max_history} or do not have {self.length} positions")
        tok = torch.stack([emb(tokens[..., j]) for j, emb in enumerate(self.tok_emb)], 2)
        if self.cfg.causal:  # (B, L) slot = place among the real items from the oldest, so
            # an item's input does not depend on how many newer items follow it
            slots = (valid.long().cumsum(1) - 1).clamp_min(0)
        else:  # (1, L) by recency: the newest item is slot 0
            slots = torch.arange(L - 1, -1, -1, device=tokens.device)[None]
        x = tok + self.slot_emb(slots)[:, :, None] + self.enc_tokpos.weight[None, None]
        x = torch.cat([self.user_emb(users)[:, None], x.reshape(B, L * T, -1)], 1)
        pad = torch.cat([valid.new_zeros(B, 1), ~valid.repeat_interleave(T, dim=1)], 1)
        mask = None
        if self.cfg.causal:  # (S, S) True = hidden: keys of items newer than the query's
            item = self._item_of_token(L, tokens.device)
            mask = item[None, :] > item[:, None]
        return self.encoder(x, mask=mask, src_key_padding_mask=pad), pad

    def _item_of_token(self, L: int, device: torch.device) -> torch.Tensor:
        """(1 + L*T,) history item of each encoder token: -1 for the user token, then
        0, 0, .., L-1 (T tokens per item)."""
        tok = torch.arange(L * self.length, device=device) // self.length
        return torch.cat([tok.new_full((1,), -1), tok])

    def _logits(self, h: torch.Tensor, j: int) -> torch.Tensor:
        """h (..., d) decoder output at ID position j -> (..., radix[j]) logits."""
        return self.heads[j](h)

    # ---- decoder, teacher forced -------------------------------------------------------------
    def decoder_input(self, prefix: torch.Tensor) -> torch.Tensor:
        """prefix (..., p) tokens t_0..t_p-1 (p < T) -> decoder input (..., p+1, d):
        BOS, emb_0(t_0), .., emb_p-1(t_p-1), plus decoder positions."""
        p = prefix.shape[-1]
        parts = [self.bos.expand(*prefix.shape[:-1], 1, -1)]
        parts += [self.tok_emb[j](prefix[..., j : j + 1]) for j in range(p)]
        return torch.cat(parts, -2) + self.dec_pos.weight[: p + 1]

    def forward(self, users: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor,
                target: torch.Tensor) -> list[torch.Tensor]:
        """Teacher forcing: encode as ``encode``; target (B, T) -> per position j the logits
        (B, radix[j]) of t_j given BOS, t_0..t_j-1."""
        memory, pad = self.encode(users, tokens, valid)
        x = self.decoder_input(target[:, :-1])  # (B, T, d)
        T = x.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=x.device,
                                                                dtype=x.dtype)
        h = self.decoder(x, memory, tgt_mask=causal, tgt_is_causal=True,
                         memory_key_padding_mask=pad)  # (B, T, d)
        return [self._logits(h[:, j], j) for j in range(T)]

    def forward_chunk(self, users: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor,
                      target: torch.Tensor) -> list[torch.Tensor]:
        """Teacher forcing at every position of a history chunk (``causal`` models only).
        tokens (B, C, T) and valid (B, C) as for ``encode``; target (B, C, T): target[:, i] is
        the item after history item i. -> per ID position j the logits (B, C, radix[j]) of
        target[:, i, j] given the user, items 0..i and target[:, i, :j]; row i equals
        ``forward`` on items 0..i alone (up to float rounding)."""
        if not self.cfg.causal:
            raise ValueError("forward_chunk needs a causal encoder (TigerConfig.causal)")
        memory, pad = self.encode(users, tokens, valid)  # (B, S, d), S = 1 + C*T
        B, C, T = target.shape
        x = self.decoder_input(target[..., :-1]).reshape(B, C * T, -1)  # (B, C*T, d)
        block = torch.arange(C * T, device=x.device) // T  # (C*T,) target of each query
        pos = torch.arange(C * T, device=x.device)
        # Self-attention within each target's own tokens, causal; cross-attention to the user
        # token and history items 0..i for target i.
        tgt_mask = (block[None, :] != block[:, None]) | (pos[None, :] > pos[:, None])
        mem_mask = self._item_of_token(C, x.device)[None, :] > block[:, None]  # (C*T, S)
        h = self.decoder(x, memory, tgt_mask=tgt_mask, memory_mask=mem_mask,
                         memory_key_padding_mask=pad).view(B, C, T, -1)
        return [self._logits(h[:, :, j], j) for j in range(T)]

    def log_prob(self, users: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
        """(B,) log p(target ID | user, history) = sum_j log softmax(logits_j)[t_j]."""
        logits = self(users, tokens, valid, target)
        return sum(F.log_softmax(lg, -1).gather(1, target[:, j : j + 1])[:, 0]
                   for j, lg in enumerate(logits))

    # ---- decoder, incremental (beam search) --------------------------------------------------
    def memory_cache(self, users: torch.Tensor, tokens: torch.Tensor,
                     valid: torch.Tensor) -> MemoryCache:
        """Encode once and project every decoder layer's cross-attention K/V (U users)."""
        memory, pad = self.encode(users, tokens, valid)  # (U, S, d), (U, S)
        U, S, d = memory.shape
        h = self.cfg.n_heads
        kv = []
        for layer in self.decoder.layers:
            w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
            k = F.linear(memory, w[d : 2 * d], b[d : 2 * d]).view(U, S, h, d // h)
            v = F.linear(memory, w[2 * d :], b[2 * d :]).view(U, S, h, d // h)
            kv.append((k.transpose(1, 2), v.transpose(1, 2)))  # (U, h, S, d/h) each
        # No padding (every history full): no mask, so SDPA may take a fused kernel.
        return MemoryCache(kv, (~pad)[:, None, None, :] if bool(pad.any()) else None)

    def step_logits(self, cache: MemoryCache, prefix: torch.Tensor) -> torch.Tensor:
        """prefix (U, W, p) tokens of W beams per user (p < T) -> logits (U, W, radix[p]) of
        token p. Eval-mode math of nn.TransformerDecoderLayer (norm_first) with the cached
        K/V; the whole prefix is recomputed (p <= T-1 is tiny, so no self-attention cache).
        Self-attention calls the fused projections and SDPA directly: the module's own
        forward spends more in argument checks than in math at these sizes."""
        U, W, p = prefix.shape
        d, h = self.cfg.dim, self.cfg.n_heads
        x = self.decoder_input(prefix).reshape(U * W, p + 1, d)
        for layer, (k, v) in zip(self.decoder.layers, cache.kv, strict=True):
            sa = layer.self_attn
            qkv = F.linear(layer.norm1(x), sa.in_proj_weight, sa.in_proj_bias)
            qkv = qkv.view(U * W, p + 1, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3x (B, h, p+1, d/h)
            o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
            x = x + sa.out_proj(o.transpose(1, 2).reshape(U * W, p + 1, d))
            # Cross-attention: all W*(p+1) queries of a user attend to that user's memory.
            mha = layer.multihead_attn
            q = F.linear(layer.norm2(x), mha.in_proj_weight[:d], mha.in_proj_bias[:d])
            q = q.view(U, W * (p + 1), h, d // h).transpose(1, 2)  # (U, h, W*(p+1), d/h)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.key_ok)
            x = x + mha.out_proj(o.transpose(1, 2).reshape(U * W, p + 1, d))
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
        last = self.decoder.norm(x[:, -1])  # (U*W, d)
        return self._logits(last, p).view(U, W, -1)
