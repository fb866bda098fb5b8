"""Quality report: measured full-ranking metrics beside the published tables, plus a plot.

Reads what `genrec eval` stored in each artifacts directory's ``manifest.json`` (test split,
leave-one-out, full ranking, consumed items blocked), prints one markdown table per dataset
with the published figures of the same models beside ours, and saves a matplotlib bar chart of
Recall@10 and NDCG@10 (ours vs published) per dataset.

    genrec build --dataset beauty && genrec eval --dataset beauty
    python benchmarks/quality_report.py artifacts/beauty artifacts/ml-100k --plot docs/img

Published figures: TIGER (NeurIPS 2023) Table 1 for Amazon Beauty; HSTU (ICML 2024) Table 4
for ML-1M / ML-20M (see docs/benchmarks.md for the sources).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.artifacts.manifest import read_manifest
from models.registry import PATHS, RECALL, canonical, names

# dataset name -> model -> {metric: value}, as published (Recall@K == HR@K: one target/user).
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "beauty": {
        "GRU4Rec": {"HR@5": 0.0164, "NDCG@5": 0.0099, "HR@10": 0.0283, "NDCG@10": 0.0137},
        "SASRec": {"HR@5": 0.0387, "NDCG@5": 0.0249, "HR@10": 0.0605, "NDCG@10": 0.0318},
        "TIGER": {"HR@5": 0.0454, "NDCG@5": 0.0321, "HR@10": 0.0648, "NDCG@10": 0.0384},
        "SASRec (tuned, re-impl.)": {"HR@10": 0.0740, "NDCG@10": 0.0423},
    },
    "ml-1m": {
        "SASRec": {"HR@10": 0.2853, "NDCG@10": 0.1603, "HR@50": 0.5474, "NDCG@50": 0.2185},
        "GRU4Rec": {"HR@10": 0.2811, "NDCG@10": 0.1648},
        "HSTU": {"HR@10": 0.3097, "NDCG@10": 0.1720, "HR@50": 0.5754, "NDCG@50": 0.2307},
    },
    "ml-20m": {
        "SASRec": {"HR@10": 0.2889, "NDCG@10": 0.1621, "HR@50": 0.5503, "NDCG@50": 0.2199},
        "HSTU": {"HR@10": 0.3273, "NDCG@10": 0.1895, "HR@50": 0.5889, "NDCG@50": 0.2473},
    },
}
# Our method (``models.registry`` recall method or path) -> the published row it corresponds to.
COUNTERPART = {"gru4rec": "GRU4Rec", "sasrec": "SASRec", "hstu_retrieval": "HSTU",
               "semantic_id": "TIGER"}
# Display names; a method without one (a newly registered source) shows its registry name.
LABELS = {"popular": "popularity", "itemcf": "ItemCF", "ann": "two-tower", "gru4rec": "GRU4Rec",
          "sasrec": "SASRec", "hstu_retrieval": "HSTU", "tdm": "TDM",
          "semantic_id": "TIGER (semantic ID)", "cascade": "cascade",
          "generative": "generative path"}
assert set(COUNTERPART) | set(LABELS) <= {*names(RECALL), *PATHS}, "stale method names"
METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@50", "NDCG@50")


def published_for(dataset: str) -> dict[str, dict[str, float]]:
    key = dataset.lower().replace("amazon-", "")
    return PUBLISHED.get(key, {})


def table(dataset: str, metrics: dict[str, dict[str, float]]) -> str:
    pub = published_for(dataset)
    head = "| model | " + " | ".join(METRICS) + " | published R@10 / N@10 | ratio R@10 |"
    lines = [head, "|" + " --- |" * (len(METRICS) + 3)]
    for method, row in metrics.items():
        other = pub.get(COUNTERPART.get(method, ""), {})
        p10 = (f"{other['HR@10']:.4f} / {other['NDCG@10']:.4f}"
               if "HR@10" in other else "")
        ratio = f"{row['HR@10'] / other['HR@10']:.2f}x" if "HR@10" in other else ""
        cells = " | ".join(f"{row.get(m, float('nan')):.4f}" for m in METRICS)
        lines.append(f"| {LABELS.get(method, method)} | {cells} | {p10} | {ratio} |")
    for name, row in pub.items():
        cells = " | ".join(f"{row[m]:.4f}" if m in row else "" for m in METRICS)
        lines.append(f"| *published: {name}* | {cells} | | |")
    return "\n".join(lines)


def plot(dataset: str, metrics: dict[str, dict[str, float]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pub = published_for(dataset)
    names = [LABELS.get(m, m) for m in metrics] + [f"{n} (published)" for n in pub]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.5), sharey=True)
    for ax, metric in zip(axes, ("HR@10", "NDCG@10"), strict=True):
        values = [row[metric] for row in metrics.values()] + [r.get(metric, 0.0)
                                                               for r in pub.values()]
        colors = ["tab:blue"] * len(metrics) + ["tab:gray"] * len(pub)
        ax.barh(range(len(names)), values, color=colors)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlabel(metric.replace("HR", "Recall"))
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{dataset}: full ranking, leave-one-out test split (blue: measured, "
                 "gray: published)")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"quality_{dataset}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--stage", default="test")
    ap.add_argument("--plot", type=Path, default=None, help="folder for the PNG plots")
    args = ap.parse_args()
    for directory in args.artifacts:
        manifest = read_manifest(directory)
        dataset = manifest["dataset"]["name"]
        # Manifests evaluated before the rename say "hstu" for hstu_retrieval: canonical names.
        metrics = {canonical(RECALL, m): row
                   for m, row in manifest.get("metrics", {}).get(args.stage, {}).items()}
        if not metrics:
            raise SystemExit(f"{directory}: no {args.stage} metrics; run `genrec eval` first")
        print(f"\n### {dataset} ({int(next(iter(metrics.values()))['users'])} users, "
              f"profile {manifest['profile']}, retrained: {manifest.get('retrained')})\n")
        print(table(dataset, metrics))
        seconds = manifest.get("train_seconds", {})
        print("\ntraining seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
        if args.plot is not None:
            try:
                print(f"plot: {plot(dataset, metrics, args.plot)}")
            except ImportError:  # matplotlib is optional (the `bench` extra)
                print("no plot: install matplotlib (pip install -e '.[bench]')")


if __name__ == "__main__":
    main()
