"""The one list of what genrec builds and serves: components, net types, recall methods, rankers,
rerankers and paths. The build, the runtime, the engine, the API schemas, evaluation and the CLI
all read these tables; nothing else spells a component, a method or an artifact file name.

Entries name their code as ``"module:attribute"`` strings, resolved on first use
(``resolve``): this module imports nothing of genrec, so every layer can read it, and the server
never imports a trainer because a table names one.

Adding a trained recall source (see docs/architecture.md) touches three files: its net
(``models/nets/``), its trainer (``models/train/``) and one entry in each table below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Net:
    """A model type a checkpoint can hold: ``{stem}.json`` says ``"type": key``."""

    key: str
    config: str  # "module:ConfigDataclass"
    module: str  # "module:nn.Module", built as Module(config)


@dataclass(frozen=True)
class Component:
    """One unit of `genrec build`: it writes ``files`` into the artifacts directory;
    `genrec build --only NAME` retrains it (and whatever ``needs`` it)."""

    name: str
    files: tuple[str, ...]
    build: str  # "module:function", called as function(job, component) -> report dict
    needs: tuple[str, ...] = ()  # components whose output it trains on
    always: bool = False  # refitted on every build, partial ones included (seconds)
    optional: bool = False  # older artifact formats lack it; the runtime skips it then
    net: str | None = None  # the Net key a generic builder trains
    trainer: str | None = None  # "module" exposing fit(job, model, params) for that builder
    aliases: tuple[str, ...] = ()  # earlier names, still accepted by --only
    # It mines its training candidates from every recall source in the directory being
    # assembled (the rankers), so a parallel build starts it only once they are all trained.
    after_recall: bool = False

    @property
    def key(self) -> str:
        """Its entries' key in ``manifest.json`` (configs, train_seconds): the stem of its
        first file, as artifact format 3 has it (``hstu`` for the HSTU ranker)."""
        return self.files[0].split(".")[0]


@dataclass(frozen=True)
class Stage:
    """A recall method, a ranker or a reranker as the API, arms and `genrec eval` name it."""

    name: str
    make: str  # "module:function", called as function(runtime, settings, name) -> stage
    needs: tuple[str, ...] = ()  # components whose artifacts it serves from
    aliases: tuple[str, ...] = ()  # earlier names, still accepted everywhere


_SEQ = "models.build.retrieval:build_retriever"
_SEQ_SOURCE = "models.engine.recall.sequential:make"

NETS: tuple[Net, ...] = tuple(
    Net(key, f"models.nets.{mod}:{cfg}", f"models.nets.{mod}:{cls}") for key, mod, cfg, cls in (
        ("two_tower", "two_tower", "TwoTowerConfig", "TwoTower"),
        ("deepfm", "deepfm", "DeepFMConfig", "DeepFM"),
        ("din", "din", "DINConfig", "DIN"),
        ("hstu", "hstu_ranker", "HSTURankerConfig", "HSTURanker"),
        ("rqvae", "rqvae", "RQVAEConfig", "RQVAE"),
        ("tiger", "tiger", "TigerConfig", "TIGER"),
        ("gru4rec", "gru4rec", "GRU4RecConfig", "GRU4Rec"),
        ("sasrec", "sasrec", "SASRecConfig", "SASRec"),
        ("hstu_retrieval", "hstu_retrieval", "HSTURetrievalConfig", "HSTURetrieval"),
        ("tdm", "tdm", "TDMConfig", "TDMScorer"),
    ))

# In build order: a component comes after those it ``needs``.
COMPONENTS: tuple[Component, ...] = (
    Component("popularity", ("popularity.safetensors",),
              "models.build.classic:build_popularity", always=True),
    Component("itemcf", ("itemcf.safetensors",), "models.build.classic:build_itemcf",
              always=True),
    Component("two_tower", ("two_tower.safetensors", "two_tower.json",
                            "item_embeddings.safetensors", "two_tower_items.faiss"),
              "models.build.classic:build_two_tower"),
    Component("semantic_ids", ("semantic_ids.safetensors", "rqvae.safetensors", "rqvae.json"),
              "models.build.generative:build_semantic_ids", needs=("two_tower",)),
    Component("tiger", ("tiger.safetensors", "tiger.json"),
              "models.build.generative:build_tiger", needs=("semantic_ids",)),
    Component("gru4rec", ("gru4rec.safetensors", "gru4rec.json", "gru4rec_items.faiss"),
              _SEQ, optional=True, net="gru4rec", trainer="models.train.gru4rec"),
    Component("sasrec", ("sasrec.safetensors", "sasrec.json", "sasrec_items.faiss"),
              _SEQ, optional=True, net="sasrec", trainer="models.train.sasrec"),
    Component("hstu_retrieval", ("hstu_retrieval.safetensors", "hstu_retrieval.json",
                                 "hstu_retrieval_items.faiss"),
              _SEQ, optional=True, net="hstu_retrieval", trainer="models.train.hstu_retrieval"),
    Component("tdm", ("tdm.safetensors", "tdm.json", "tdm_tree.safetensors"),
              "models.build.tdm:build_tdm", needs=("two_tower",), optional=True),
    # A path's ranker can train on its path's recall candidates (models/build/
    # ranker_candidates.py, when its profile sets n_hard > 0), so the rankers come after
    # every source of the paths' pools.
    # File stem "hstu": the artifact format predates the name hstu_ranker.
    Component("hstu_ranker", ("hstu.safetensors", "hstu.json"),
              "models.build.rankers:build_hstu_ranker", aliases=("hstu",), after_recall=True),
    Component("deepfm", ("deepfm.safetensors", "deepfm.json"),
              "models.build.classic:build_ranker", after_recall=True),
    Component("din", ("din.safetensors", "din.json"), "models.build.classic:build_ranker",
              after_recall=True),
    # Each path's rank fusion, fitted on validation over everything above (seconds to a
    # minute), so it is refitted whenever any model changes.
    Component("fusion", ("fusion.json",), "models.build.fusion:build_fusion", always=True,
              optional=True),
)

# Recall methods: ``POST /recall`` ``method``, an arm's ``params.recall`` keys, eval rows.
RECALL: tuple[Stage, ...] = (
    Stage("popular", "models.engine.recall.popular:make", ("popularity",)),
    Stage("itemcf", "models.engine.recall.itemcf:make", ("itemcf",)),
    Stage("ann", "models.engine.recall.ann:make", ("two_tower",)),
    Stage("gru4rec", _SEQ_SOURCE, ("gru4rec",)),
    Stage("sasrec", _SEQ_SOURCE, ("sasrec",)),
    Stage("hstu_retrieval", _SEQ_SOURCE, ("hstu_retrieval",), aliases=("hstu",)),
    Stage("tdm", "models.engine.recall.tdm:make", ("tdm",)),
    Stage("semantic_id", "models.engine.recall.semantic_id:make", ("semantic_ids", "tiger")),
)

# Rankers: ``POST /rank`` ``model``; din and deepfm can rank the cascade (GENREC_RANKER).
RANKERS: tuple[Stage, ...] = (
    Stage("din", "models.engine.rank.item_scorer:make", ("din",)),
    Stage("deepfm", "models.engine.rank.item_scorer:make", ("deepfm",)),
    Stage("hstu_ranker", "models.engine.rank.hstu:make", ("hstu_ranker",), aliases=("hstu",)),
)

RERANKERS: tuple[str, ...] = ("mmr", "dpp")


@dataclass(frozen=True)
class PathSpec:
    """A path ``/recommend`` serves: the recall sources its fusion may combine (``pool``,
    fitted on validation at build time: ``models/evaluate/fusion_fit.py``), those it always
    runs (``required``: the generative path's generator) and its ranker."""

    name: str
    pool: tuple[str, ...]
    ranker: str
    required: tuple[str, ...] = ()


# The generative path's pool holds every source, the cascade's included, and its fit starts
# from the cascade's fitted sources and weights when they score better on validation: the
# generator's candidates and the HSTU ranker are added to whatever already works.
PATH_SPECS: tuple[PathSpec, ...] = (
    PathSpec("cascade", ("ann", "itemcf", "sasrec", "gru4rec", "tdm", "popular"), "din"),
    PathSpec("generative", ("semantic_id", "hstu_retrieval", "sasrec", "gru4rec", "ann",
                            "itemcf", "tdm", "popular"), "hstu_ranker",
             required=("semantic_id",)),
)
PATHS: tuple[str, ...] = tuple(p.name for p in PATH_SPECS)


def resolve(ref: str) -> Any:
    """``"package.module:attribute"`` -> the attribute, importing the module on first use."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def component(name: str) -> Component:
    """The component called ``name`` or one of its aliases; KeyError names the choices."""
    for c in COMPONENTS:
        if name == c.name or name in c.aliases:
            return c
    raise KeyError(f"unknown component {name!r}; choose from {', '.join(names(COMPONENTS))}")


def net(key: str) -> Net:
    """The net type ``key`` (a component's ``net``); KeyError names the choices."""
    for n in NETS:
        if n.key == key:
            return n
    raise KeyError(f"unknown net type {key!r}; choose from {', '.join(n.key for n in NETS)}")


def names(entries: tuple[Component, ...] | tuple[Stage, ...], aliases: bool = False
          ) -> tuple[str, ...]:
    """Canonical names in table order, then (``aliases``) every earlier name."""
    out = tuple(e.name for e in entries)
    return out + tuple(a for e in entries for a in e.aliases) if aliases else out


def canonical(entries: tuple[Stage, ...], name: str) -> str:
    """The canonical name for ``name`` (itself, or the entry it is an alias of); unknown names
    come back unchanged, so the caller's lookup reports them."""
    for e in entries:
        if name in e.aliases:
            return e.name
    return name
