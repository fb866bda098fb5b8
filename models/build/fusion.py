"""The build's last step: each path's rank fusion fitted on the validation split
(``models/evaluate/fusion_fit.py``) over the models just built, into ``fusion.json``.

It runs the served engine on the directory being assembled (every model is in place by now),
so the plan is fitted on exactly the objects that will serve it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.artifacts.manifest import write_json
from models.build.job import BuildJob
from models.engine.core.context import UserContext
from models.engine.core.memo import RecallMemo
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from models.engine.rank.fusion import FusionPlan
from models.evaluate.fusion_fit import fit_plan
from models.evaluate.fusion_matrix import collect
from models.evaluate.offline import eval_context
from models.registry import PATH_SPECS, Component


@dataclass
class FusionConfig:
    # Validation users sampled for the fit (all when fewer). Its rules compare plans by paired
    # standard errors, which shrink as 1 / sqrt(users); the fit's cost grows linearly.
    users: int = 5_000
    quota: int = 100  # candidates per pool source
    # Per-source quotas that differ: the generator's beam search costs most per candidate.
    quotas: dict[str, int] = field(default_factory=lambda: {"semantic_id": 50})
    min_gain: float = 0.005  # relative NDCG@10 + HR@10 gain a source must bring to be served
    c_grid: tuple[float, ...] = (5.0, 20.0, 60.0)
    diversity_grid: tuple[float, ...] = (0.0, 0.02, 0.05)
    # Drop sources that add less than min_gain, costliest first (fusion_fit.prune_costly).
    prune: bool = True
    cost_users: int = 64  # contexts each source's cost is timed on
    # A path's summed source cost (ms per request, as timed here, one thread) to prune down
    # to, by least validation loss per ms saved, never below the best single source; None:
    # quality first. Costs are this machine's, so a budget belongs to a deployment (set it
    # with --set fusion.budget_ms=2), not to a profile. Needs prune.
    budget_ms: float | None = None


def source_costs(sources: dict[str, Any], contexts: list[UserContext], quotas: dict[str, int]
                 ) -> dict[str, float]:
    """Each source's ms per request: one call per context at its fit quota, after one
    untimed call (lazy initialisation). One thread, as the compute lane serves."""
    costs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for name, quota in quotas.items():
                src = sources[name]
                src.recall(contexts[0], quota)
                t = time.perf_counter()
                for ctx in contexts:
                    src.recall(ctx, quota)
                costs[name] = 1000 * (time.perf_counter() - t) / len(contexts)
    finally:
        torch.set_num_threads(threads)
    return costs


def build_fusion(job: BuildJob, component: Component) -> dict[str, Any]:
    cfg = FusionConfig(**job.params("fusion"))
    settings = EngineSettings()
    rt = Runtime.load(job.out, manifest={"version": "building"})
    comp = build_components(rt, settings)
    memo = {name: RecallMemo(src) for name, src in comp.recall.items()}
    users = job.split.eval_users("valid")
    rng = np.random.default_rng(job.seed)
    if len(users) > cfg.users:
        users = np.sort(rng.choice(users, cfg.users, replace=False))
    contexts = [eval_context(rt, job.split, int(u), "valid", job.ds.timestamps) for u in users]
    targets = job.split.valid_target[users]
    plans, report = {}, {}
    fitted: FusionPlan | None = None
    timed: dict[str, float] = {}  # source -> ms per request, shared by both paths
    for spec in PATH_SPECS:  # the cascade first: the generative fit starts from its plan
        path = comp.pipelines.get(spec.name)
        if path is None or path.ranker is None or not all(r in comp.recall
                                                          for r in spec.required):
            continue  # served partial (models/engine/factory.py): nothing to fit
        t = time.perf_counter()
        # Both paths share the sources' lists per user (they are deterministic).
        path.available = memo
        quotas = {s: cfg.quotas.get(s, cfg.quota) for s in spec.pool if s in comp.recall}
        with torch.inference_mode():
            run = collect(path, contexts, targets, quotas)
        costs = None
        if cfg.prune:
            todo = {s: q for s, q in quotas.items() if s not in timed}
            timed.update(source_costs(comp.recall, contexts[: cfg.cost_users], todo))
            costs = {s: timed[s] for s in quotas}
        plan = fit_plan(run, quotas, spec.required, path.reranker, cfg.c_grid, cfg.min_gain,
                        cfg.diversity_grid, settings.rerank_window, start=fitted, costs=costs,
                        budget_ms=cfg.budget_ms)
        fitted = plan
        plans[spec.name] = plan.to_dict()
        report[spec.name] = {**plans[spec.name], "fit_seconds": round(time.perf_counter() - t, 1)}
        v = plan.validation
        job.console.print(f"fusion {spec.name}: {plan.sources} weights {plan.weights} "
                          f"c={plan.c} diversity={plan.diversity}; validation NDCG@10 "
                          f"best single {v['single'][v['best_single']][0]:.4f} "
                          f"({v['best_single']}) -> fused {v['rank'][0]:.4f}; "
                          f"pruned {v['pruned']}")
    write_json(job.out / component.files[0], plans)
    return report
