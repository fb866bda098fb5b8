"""M-FALCON vs naive HSTU candidate scoring for one user (Zhai et al. 2024, section 3.4).

Three ways to score C candidates against one history of length L with the same weights:
  * naive      every candidate in its own sequence (history + that candidate), run in batches
               of ``--naive-batch`` sequences: O(C L^2) attention;
  * one-pass   ``score_items``: one sequence history + C candidates with the candidate mask:
               O((L + C)^2) attention, most of it masked out;
  * m-falcon   ``history_cache`` once (O(L^2)), then ``score_with_cache`` in microbatches of
               ``--microbatch`` candidates against the cached K/V: O(L^2 + C L). Its time
               includes building the cache.
Reports the median wall time of ``--repeats`` runs, the speedup of m-falcon over naive and
over one-pass, and the max |score difference| against naive.

Usage: python benchmarks/mfalcon.py [--device cpu|cuda] [--history 200]
       [--candidates 100 500 2000] [--microbatch 128] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from models.nets.hstu_ranker import HSTURanker, HSTURankerConfig


def timed(fn: Callable[[], torch.Tensor], device: torch.device,
          repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of ``repeats`` calls after one warm-up, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--history", type=int, default=200)
    ap.add_argument("--candidates", type=int, nargs="+", default=[100, 500, 2000])
    ap.add_argument("--microbatch", type=int, default=128)
    ap.add_argument("--naive-batch", type=int, default=64)
    ap.add_argument("--n-items", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    cfg = HSTURankerConfig(n_items=args.n_items, dim=args.dim, n_layers=args.layers,
                           n_heads=args.heads, qk_dim=args.dim // args.heads,
                           v_dim=args.dim // args.heads, max_history=args.history, dropout=0.0)
    model = HSTURanker(cfg).to(device).eval()
    L = args.history
    history = torch.randint(0, args.n_items, (L,), device=device)
    # Timestamps one minute to a few days apart, so the time bias is in play.
    gaps = torch.randint(60, 3 * 86400, (L,), device=device)
    ts = torch.cumsum(gaps, 0).double()
    empty = torch.zeros(0, dtype=torch.long, device=device)
    print(f"device={device} ({platform.processor() or platform.machine()}, "
          f"threads={torch.get_num_threads()}) torch={torch.__version__} "
          f"d={cfg.dim} layers={cfg.n_layers} heads={cfg.n_heads} L={L} "
          f"microbatch={args.microbatch} naive_batch={args.naive_batch}")
    print(f"{'C':>6} {'naive ms':>10} {'one-pass ms':>12} {'m-falcon ms':>12} "
          f"{'x naive':>8} {'x 1-pass':>9} {'maxdiff mf':>11} {'maxdiff 1p':>11}")

    with torch.inference_mode():
        for c in args.candidates:
            items = torch.randint(0, args.n_items, (c,), device=device)

            def naive(items: torch.Tensor = items) -> torch.Tensor:
                out = []
                for s in range(0, items.shape[0], args.naive_batch):
                    chunk = items[s:s + args.naive_batch]
                    b = chunk.shape[0]
                    out.append(model.score_items(empty.expand(b, 0), history.expand(b, L),
                                                 chunk[:, None], ts.expand(b, L))[:, 0])
                return torch.cat(out)

            def one_pass(items: torch.Tensor = items) -> torch.Tensor:
                return model.score_items(empty[None], history[None], items[None], ts[None])[0]

            def mfalcon(items: torch.Tensor = items) -> torch.Tensor:
                cache = model.history_cache(history, ts)
                return model.score_with_cache(cache, items, microbatch=args.microbatch)

            t_n, s_n = timed(naive, device, args.repeats)
            t_1, s_1 = timed(one_pass, device, args.repeats)
            t_m, s_m = timed(mfalcon, device, args.repeats)
            d_m = (s_m - s_n).abs().max().item()
            d_1 = (s_1 - s_n).abs().max().item()
            print(f"{c:>6} {t_n * 1e3:>10.1f} {t_1 * 1e3:>12.1f} {t_m * 1e3:>12.1f} "
                  f"{t_n / t_m:>8.1f} {t_1 / t_m:>9.1f} {d_m:>11.2e} {d_1:>11.2e}")


if __name__ == "__main__":
    main()
