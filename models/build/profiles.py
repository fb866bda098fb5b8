"""Build profiles as pydantic models: every setting group of ``profile_values.VALUES`` is
checked against what it configures (a config dataclass or a function's keyword parameters),
so an unknown name or a wrong type fails before any training, naming
``profile.group.field``.

A group is named after what it sets: a component's net config (``sasrec``), its training
options (``sasrec_train``), or a build option (``hnsw``, ``itemcf_scoring``). Components built
by the generic retriever step get their two groups from ``models.registry`` (the net's config
and the trainer's ``TrainConfig``), so a new retriever needs no line here.
"""

from __future__ import annotations

import copy
import inspect
import json
import typing
from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model, model_validator

from models.build.profile_values import VALUES
from models.registry import COMPONENTS, resolve
from models.registry import net as registry_net

# Group -> "module:Target" whose keyword parameters the group fills (a dataclass: its fields).
TARGETS: dict[str, str] = {
    "popularity": "models.nets.popularity:Popularity.fit",
    "itemcf": "models.nets.itemcf:ItemCF.fit",
    "itemcf_scoring": "models.nets.itemcf:ItemCF",
    "hnsw": "index.hnsw:HNSWIndex",
    "two_tower": "models.nets.two_tower:TwoTowerConfig",
    "two_tower_train": "models.train.two_tower:TwoTowerTrainConfig",
    "deepfm": "models.nets.deepfm:DeepFMConfig",
    "din": "models.nets.din:DINConfig",
    "ranker_train": "models.train.item_scorer:RankerTrainConfig",
    "rqvae": "models.nets.rqvae:RQVAEConfig",
    "rqvae_train": "models.train.rqvae:RQVAETrainConfig",
    "tiger": "models.nets.tiger:TigerConfig",
    "tiger_train": "models.train.tiger:TigerTrainConfig",
    "hstu": "models.nets.hstu_ranker:HSTURankerConfig",
    "hstu_train": "models.train.hstu_ranker:HSTUTrainConfig",
    "tdm": "models.nets.tdm:TDMConfig",
    "tdm_train": "models.train.tdm:TDMTrainConfig",
    "semantic_ids": "",  # build options only (EXTRA)
    "fusion": "models.build.fusion:FusionConfig",
}
# Options the build reads itself, beside the target's parameters.
EXTRA: dict[str, dict[str, Any]] = {
    "semantic_ids": {"source": Literal["auto", "content", "collaborative", "both"]},
    "tdm": {"branching": int, "beam": int, "jtm_rounds": int,
            "train_levels": Literal["all", "scored"]},
    # Epochs between validation checks of the generator (0 = off) and the users checked.
    "tiger_train": {"select_every": int, "select_users": int},
}
RETRIEVER_MODEL_EXTRA = {"max_len": int | Literal["auto"]}  # "auto": by mean history length
RETRIEVER_TRAIN_EXTRA = {"select_every": int}  # epochs between validation checks (0 = off)


def _target(ref: str) -> Any:
    module, _, path = ref.partition(":")
    obj = resolve(f"{module}:{path.split('.')[0]}")
    for attr in path.split(".")[1:]:
        obj = getattr(obj, attr)
    return obj


def _parameters(target: Any) -> dict[str, Any]:
    """Keyword parameters of a callable (a dataclass: its fields) -> their annotations."""
    fn = target.__init__ if inspect.isclass(target) else target
    hints = typing.get_type_hints(fn)
    return {n: hints.get(n, Any) for n, p in inspect.signature(target).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _groups() -> dict[str, tuple[str, dict[str, Any]]]:
    """Group -> (target ref, extra options), the registry's generic retrievers included."""
    out = {g: (ref, EXTRA.get(g, {})) for g, ref in TARGETS.items()}
    for comp in COMPONENTS:
        if comp.net and comp.trainer:
            net = registry_net(comp.net)
            out[comp.name] = (net.config, RETRIEVER_MODEL_EXTRA)
            out[f"{comp.name}_train"] = (f"{comp.trainer}:TrainConfig", RETRIEVER_TRAIN_EXTRA)
    return out


@cache
def group_model(group: str) -> type[BaseModel]:
    """A pydantic model of ``group``: every parameter optional, nothing else allowed."""
    groups = _groups()
    if group not in groups:
        raise ValueError(f"unknown setting group {group!r} (known: {', '.join(sorted(groups))})")
    ref, extra = groups[group]
    params = {**(_parameters(_target(ref)) if ref else {}), **extra}
    fields: dict[str, Any] = {n: (t | None, None) for n, t in params.items()}
    # Arbitrary types: data parameters (arrays) the build passes itself can never match a
    # profile value, so setting one fails too.
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(group, __config__=config, **fields)


class Profile(BaseModel):
    """One named profile: setting group -> the values that differ from the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    groups: dict[str, dict[str, Any]]

    @model_validator(mode="after")
    def _check_groups(self) -> Profile:
        for group, values in self.groups.items():
            try:
                group_model(group).model_validate(values)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in (group, *err["loc"]))
                raise ValueError(f"profile {self.name!r}: {where}: {err['msg']}") from None
        return self

    def params(self, group: str) -> dict[str, Any]:
        """The group's values (a copy; {} when the profile sets none)."""
        return dict(self.groups.get(group, {}))


def profile(name: str, overrides: Sequence[str] = ()) -> Profile:
    """The checked profile ``name`` with ``GROUP.FIELD=VALUE`` overrides (JSON values, else
    strings: ``sasrec_train.lr=0.002``); ValueError names the choices or the bad setting."""
    if name not in VALUES:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(VALUES)}")
    groups = copy.deepcopy(VALUES[name])
    for item in overrides:
        key, eq, value = item.partition("=")
        group, dot, field = key.partition(".")
        if not (eq and dot and group and field):
            raise ValueError(f"--set {item!r}: expected GROUP.FIELD=VALUE")
        try:
            groups.setdefault(group, {})[field] = json.loads(value)
        except json.JSONDecodeError:
            groups.setdefault(group, {})[field] = value
    label = f"{name}+set" if overrides else name
    try:
        return Profile(name=label, groups=groups)
    except ValidationError as exc:  # the validator's message, without pydantic's wrapping
        raise ValueError(str(exc.errors()[0]["ctx"]["error"])) from None


PROFILES = tuple(VALUES)  # the profile names, for help texts
