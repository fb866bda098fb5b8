"""Model and training sizes for `genrec build --profile NAME`, as data: per profile, per setting
group, the values that differ from the code's defaults. ``models/build/profiles.py`` checks
every group and value against what it configures.

"default" is what `genrec build` ships (sized for a 2-core CPU); "tiny" keeps tests fast;
"full" trains the generative models and the sequential retrievers on every sample, for a GPU
(`genrec build --profile full --device cuda`). Values chosen on the validation split say so.
"""

from __future__ import annotations

from typing import Any

# Model and training sizes. "default" is what `genrec build` ships; "tiny" keeps tests fast.
VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        "two_tower": {},
        # 7 epochs: validation HR@10 of the ANN 0.231 at 5, 0.243 at 10 (docs/benchmarks.md).
        "two_tower_train": {"epochs": 7},
        "deepfm": {},
        "din": {},
        # One epoch on the CPU: the fitted fusion gave DIN at most a small weight on
        # validation after 2 to 5 epochs (docs/benchmarks.md); `full` trains 5.
        "ranker_train": {"epochs": 1},
        # Chosen on the validation split by benchmarks/tune_itemcf.py (ml-100k).
        "itemcf": {"top_n": 50},
        "itemcf_scoring": {"recent": 10, "decay": 0.8},
        "popularity": {"window_days": 30.0},
        "hnsw": {"m": 32, "ef_construction": 200},
        # "auto": MiniLM content + two-tower vectors where items have text, else two-tower.
        # Reassigning the last code of colliding items: validation HR@10 of TIGER on ml-100k
        # 0.153 (both, spread) against 0.139 (content, plain) (benchmarks/tune_tiger.py).
        "semantic_ids": {"source": "auto"},
        "rqvae": {"reassign_collisions": True},
        "rqvae_train": {"epochs": 100},
        # TIGER on a CPU, chosen on the validation split (ml-100k): 64 wide, 10 items of
        # history, 1 + 1 layers (a quarter of the 20-item 2 + 2 model's cost per target);
        # a causal encoder trained on whole history chunks (a target at every position per
        # encoder pass): HR@10 0.139 against 0.101 for one target per pass in the same
        # time; 6 epochs over every sample with both item vectors: 0.188 in 53 s. 12 epochs,
        # the best of every 3rd kept on validation (the generator's own beam search, 1.2 s
        # for 943 users): 0.190 in 126 s against 0.172 in 59 s for 6 on the same codes;
        # batches of 128 or 256 were no cheaper per epoch (docs/benchmarks.md).
        "tiger": {"max_history": 10, "dim": 64, "ff_dim": 256, "enc_layers": 1,
                  "dec_layers": 1, "causal": True},
        # A cosine decay of the rate to 0 by the last epoch, against a constant rate
        # (benchmarks/tune_tiger.py, validation HR@10 / NDCG@10 at seeds 0, 1, 2): 0.2110 /
        # 0.1077, 0.2174 / 0.1090, 0.2121 / 0.1118 against 0.1994 / 0.1012, 0.2163 / 0.1066,
        # 0.1792 / 0.0931: higher, and steadier from seed to seed.
        "tiger_train": {"epochs": 12, "samples_per_epoch": None, "batch_size": 64, "lr": 3e-3,
                        "select_every": 3, "select_users": 1000, "lr_schedule": "cosine"},
        "hstu": {},
        # Half the positions of the code's default per epoch (~40 s an epoch on 2 cores).
        "hstu_train": {"epochs": 2, "recent_per_user": 8, "sample_frac": 0.05},
        # Sequential retrievers (models/build_retrieval.py); max_len "auto" = 200 for long
        # MovieLens histories, 50 for short Amazon ones, as in the papers.
        # Chosen on the validation split (benchmarks/tune_sequential.py, docs/benchmarks.md):
        # SASRec with softmax over the catalog and dropout 0.5 beat the paper's BCE on both
        # datasets; HSTU dropout 0.5 beat 0.2 on Beauty. "select_every": validate every N
        # epochs and keep the best epoch's weights (models/build_retrieval.py).
        # CPU budgets, chosen on the ml-100k validation split (docs/benchmarks.md, "CPU
        # default"): 50 items of history (not 200) in batches of 32 rows: cheaper per target
        # than 200 items in batches of 128, and 4x the updates.
        "sasrec": {"dim": 64, "n_layers": 2, "n_heads": 1, "dropout": 0.3, "max_len": 50},
        # windows: every training target once per epoch (sequences cut into 50-target
        # rows), not only each user's last 50: validation HR@10 0.234 in 71 s against 0.204
        # in 29 s (the full schedule on a GPU: 0.226).
        "sasrec_train": {"epochs": 30, "batch_size": 32, "lr": 2e-3, "loss": "softmax",
                         "select_every": 3, "windows": True},
        # lr 5e-4 (not 3e-3): validation HR@10 0.153 after 6 epochs, against 0.06 at 3e-3.
        "gru4rec": {"dim": 64, "hidden": 100},
        "gru4rec_train": {"epochs": 6, "batch_size": 64, "lr": 5e-4, "select_every": 1},
        # The last 50 items of history, every target once per epoch (windows): validation
        # HR@10 0.217 after 21 epochs (26 s), against 0.180 with the last 50 targets only.
        "hstu_retrieval": {"max_len": 50, "dropout": 0.5},
        "hstu_retrieval_train": {"epochs": 30, "batch_size": 32, "lr": 1e-3,
                                 "select_every": 3, "windows": True},
        # TDM (models/build/tdm.py): binary tree as in the paper; beam = served default.
        # The node scorer is the slowest model per sample on a CPU (every level's positive and
        # negatives attend over the history): 20 items of history, 4 negatives per level.
        # One JTM round (the tree re-learned from the scorer's leaf embeddings, then the
        # scorer retrained on it), kept only if validation improves: ml-100k validation
        # HR@10 0.188 -> 0.214 with this schedule, against 0.191 -> 0.208 for 2 x 40k per
        # round and 0.195 -> 0.210 with 50 items of history (docs/benchmarks.md).
        # Only the levels beam search scores are trained ("scored": levels 7-11 of 12 at beam
        # 100), which halves the cost per sample and buys twice the samples in the same time:
        # validation HR@10 0.193 / 0.204 (round 0 / JTM) with every level and 3 x 40k,
        # 0.207 / 0.213 scored with 3 x 40k, 0.209 / 0.220 scored with 3 x 80k (shipped).
        "tdm": {"branching": 2, "beam": 100, "jtm_rounds": 1, "max_history": 20,
                "train_levels": "scored"},
        # lr 3e-3: with 3 x 40k samples validation HR@10 0.211, against 0.179 for 2 x 40k and
        # 0.176 for 1 x 40k.
        "tdm_train": {"epochs": 3, "samples_per_epoch": 80_000, "negatives_per_level": 4,
                      "lr": 3e-3},
        # The fit samples FusionConfig.users (5,000) validation users: ml-100k has 943, all of
        # them; Beauty's 22,363 are sampled (1,000 gave one standard error of NDCG@10 near
        # 7%, larger than the differences between the plans the fit chooses among).
    },
    "tiny": {
        "two_tower": {"item_dim": 8, "hidden_dim": 32, "out_dim": 16, "max_history": 20},
        "two_tower_train": {"epochs": 1, "batch_size": 512},
        "deepfm": {"embed_dim": 4, "hidden_dims": [16], "max_history": 20},
        "din": {"item_dim": 4, "attention_hidden": [8], "hidden_dims": [16], "max_history": 20},
        "ranker_train": {"epochs": 1, "batch_size": 1024},
        "itemcf": {"top_n": 20},
        "itemcf_scoring": {"recent": 10, "decay": 0.8},
        "popularity": {"window_days": 30.0},
        "hnsw": {"m": 16, "ef_construction": 64},
        "semantic_ids": {"source": "auto"},
        "rqvae": {"hidden": (64,), "code_dim": 8, "codebook_size": 16, "kmeans_iters": 5},
        "rqvae_train": {"epochs": 30, "batch_size": 512},
        "tiger": {"dim": 16, "n_heads": 2, "enc_layers": 1, "dec_layers": 1, "ff_dim": 32,
                  "max_history": 10},
        "tiger_train": {"epochs": 1, "samples_per_epoch": 256, "select_every": 1,
                        "select_users": 100},
        "hstu": {"dim": 16, "n_layers": 1, "qk_dim": 8, "v_dim": 8, "max_history": 20,
                 "head_hidden": 16},
        "hstu_train": {"epochs": 1, "recent_per_user": 2, "sample_frac": 0.0},
        "sasrec": {"dim": 8, "n_layers": 1, "n_heads": 1, "max_len": 20},
        "sasrec_train": {"epochs": 2, "batch_size": 256, "select_every": 1},
        "gru4rec": {"dim": 8, "hidden": 8},
        "gru4rec_train": {"epochs": 1, "batch_size": 256, "n_negatives": 16},
        "hstu_retrieval": {"dim": 8, "n_layers": 1, "qk_dim": 4, "v_dim": 4, "max_len": 20},
        "hstu_retrieval_train": {"epochs": 1, "batch_size": 256, "n_negatives": 16},
        "tdm": {"branching": 4, "beam": 20, "jtm_rounds": 1, "attention_hidden": (8,),
                "hidden": (16,), "max_history": 20, "train_levels": "scored"},
        "tdm_train": {"epochs": 1, "samples_per_epoch": 2048, "batch_size": 256},
        "fusion": {"users": 300, "quota": 50, "quotas": {"semantic_id": 20},
                   "c_grid": (20.0,), "diversity_grid": (0.0, 0.05)},
    },
}

# "full": the default models trained on every sample for longer, for a GPU (`genrec build
# --profile full --device cuda`); the CPU default subsamples the HSTU ranker's positions.
VALUES["full"] = {
    **VALUES["default"],
    "sasrec": {"dim": 64, "n_layers": 2, "n_heads": 1, "dropout": 0.5, "max_len": "auto"},
    "hstu_retrieval": {"max_len": "auto", "dropout": 0.5},
    "two_tower_train": {},
    "ranker_train": {},
    "rqvae_train": {},
    "fusion": {},
    # TIGER's paper shape (4 + 4 layers, d 128, MLP 1024; 4 heads, as 6 do not divide 128),
    # causal chunks: Beauty validation HR@10 0.0843 after 20 epochs in 55 s on an H200,
    # against 0.0826 in 92 s for 2 + 2 layers with one target per pass.
    "tiger": {"max_history": 20, "dim": 128, "ff_dim": 1024, "n_heads": 4, "enc_layers": 4,
              "dec_layers": 4, "dropout": 0.1, "causal": True},
    "tiger_train": {"epochs": 30, "samples_per_epoch": None, "batch_size": 512,
                    "num_threads": None, "select_every": 5, "select_users": 1000},
    "hstu_train": {"epochs": 10, "sample_frac": 1.0, "batch_size": 256, "num_threads": None},
    # windows: every target once per epoch, as in the CPU default (where it was chosen on
    # validation); it changes only sequences longer than max_len (200 / 50 items).
    "sasrec_train": {"epochs": 200, "batch_size": 128, "lr": 1e-3, "loss": "softmax",
                     "select_every": 10, "num_threads": None, "windows": True},
    # lr 5e-4, chosen on validation (ml-100k HR@10 0.154 after 8 epochs; 3e-3 jumped
    # between 0.03 and 0.09 from epoch to epoch, below popularity on test).
    "gru4rec_train": {"epochs": 12, "batch_size": 64, "lr": 5e-4, "select_every": 1,
                      "num_threads": None},
    "hstu_retrieval_train": {"epochs": 150, "select_every": 10, "num_threads": None,
                             "windows": True},
    "tdm": {"branching": 2, "beam": 100, "jtm_rounds": 1, "max_history": 50},
    "tdm_train": {"epochs": 5, "batch_size": 512, "num_threads": None},
}
