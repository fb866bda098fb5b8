"""Model files: ``{name}.safetensors`` (the state_dict) + ``{name}.json`` (type and config).

Loading rebuilds the module from the JSON config (buffers such as the item side tables are
allocated as zeros from it) and fills every tensor from the safetensors file. No pickle is
involved anywhere, so a model file can never execute code when loaded.

Model types are listed in ``models.registry.NETS`` (tests may add one with
``register_model("key", ConfigCls, ModuleCls)``); the module must be constructible as
``ModuleCls(cfg)`` and keep its config as ``module.cfg``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn

from models.registry import NETS, resolve

# registry key -> (config dataclass, module class): the nets of ``models.registry.NETS``,
# imported on first use, plus any registered by ``register_model`` (tests, extensions).
MODEL_REGISTRY: dict[str, tuple[type, type[nn.Module]]] = {}


def register_model(key: str, config_cls: type, module_cls: type[nn.Module]) -> None:
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls!r} is not a dataclass")
    existing = MODEL_REGISTRY.get(key)
    if existing is not None and existing != (config_cls, module_cls):
        raise ValueError(f"model type {key!r} is already registered to {existing[1].__name__}")
    MODEL_REGISTRY[key] = (config_cls, module_cls)


def _registered() -> dict[str, tuple[type, type[nn.Module]]]:
    for net in NETS:
        if net.key not in MODEL_REGISTRY:
            register_model(net.key, resolve(net.config), resolve(net.module))
    return MODEL_REGISTRY


def model_type(model: nn.Module) -> str:
    """The registry key of ``model``'s class."""
    for key, (_, module_cls) in _registered().items():
        if type(model) is module_cls:
            return key
    raise KeyError(f"{type(model).__name__} is not registered; call register_model first")


def config_from_dict(config_cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from its JSON form; JSON lists become tuples where the field
    is annotated as a tuple, so the result compares equal to the saved config."""
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} fields: {sorted(unknown)}")
    kwargs = {}
    for key, value in data.items():
        if typing.get_origin(hints.get(key)) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return config_cls(**kwargs)


def save_model(model: nn.Module, directory: Path, name: str) -> None:
    """Write ``{name}.safetensors`` and ``{name}.json`` under ``directory`` (created if needed)."""
    key = model_type(model)
    cfg = model.cfg
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # clone(): safetensors refuses tensors that share storage; contiguous() for its layout.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(directory / f"{name}.safetensors"),
                                metadata={"type": key})
    meta = {"type": key, "config": dataclasses.asdict(cfg)}
    (directory / f"{name}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_model(directory: Path, name: str) -> nn.Module:
    """Rebuild the model saved as ``name`` under ``directory``; returned in eval() mode."""
    directory = Path(directory)
    meta = json.loads((directory / f"{name}.json").read_text())
    key = meta.get("type")
    if key not in _registered():
        raise KeyError(f"unknown model type {key!r} in {directory / (name + '.json')}; "
                       f"known: {sorted(MODEL_REGISTRY)}")
    config_cls, module_cls = MODEL_REGISTRY[key]
    model = module_cls(config_from_dict(config_cls, meta["config"]))
    state = safetensors.torch.load_file(str(directory / f"{name}.safetensors"))
    model.load_state_dict(state, strict=True)
    return model.eval()
