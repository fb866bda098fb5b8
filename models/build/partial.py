"""Partial rebuilds (`genrec build --only ...`): which components to retrain, and copying the
others from the current version of the artifacts directory (``models.artifacts.versions``).

Retraining a component retrains what was trained on its output (``needs`` in
``models.registry``): the semantic IDs and TDM's tree come from the two-tower's item vectors
(``two_tower`` pulls in ``semantic_ids`` and ``tdm``), and TIGER generates semantic IDs
(``semantic_ids`` pulls in ``tiger``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson

from models.artifacts.versions import MANIFEST, resolve_artifacts
from models.registry import COMPONENTS, Component, component, names


def with_dependents(chosen: list[str]) -> set[str]:
    """``chosen`` (or their aliases) and every component trained on their output, transitively
    (``needs`` in ``models.registry``)."""
    out: set[str] = set()
    todo = [component(n).name for n in chosen]
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(c.name for c in COMPONENTS if name in c.needs)
    return out


class Reuse:
    """``only`` None: a full build. Otherwise retrain ``only`` (plus dependents) and copy every
    other component's files, config and training time from the version ``previous`` names
    (``resolve_artifacts``); it must be complete and built from data with the same
    ``fingerprint``."""

    def __init__(self, previous: Path, fingerprint: str, only: list[str] | None) -> None:
        self.previous = Path(previous)
        self.only: set[str] | None = None
        self.manifest: dict[str, Any] = {}
        if only is None:
            return
        unknown = sorted(n for n in only if n not in names(COMPONENTS, aliases=True))
        if unknown:
            raise ValueError(f"--only: unknown components {unknown}; choose from "
                             f"{', '.join(names(COMPONENTS))}")
        try:
            # The version in use: the directory itself (layout before versions) or current.
            self.previous = resolve_artifacts(self.previous)
        except FileNotFoundError:
            raise ValueError(f"--only needs a complete earlier build in {self.previous} "
                             "(no manifest.json there, nor a current version); run a full "
                             "`genrec build` first") from None
        self.manifest = orjson.loads((self.previous / MANIFEST).read_bytes())
        if self.manifest.get("dataset", {}).get("fingerprint") != fingerprint:
            raise ValueError(f"--only: {self.previous} was built from other data; "
                             "run a full `genrec build`")
        self.only = with_dependents(list(only))

    def train(self, name: str) -> bool:
        return self.only is None or name in self.only

    def keep(self, comp: Component, out: Path, configs: dict[str, Any],
             timings: dict[str, float]) -> None:
        """Copy ``comp``'s files into ``out`` and its config / training time into the new
        manifest's dicts. A component the earlier build lacks is an error naming it."""
        name, key = comp.name, comp.key
        for file in comp.files:
            src = self.previous / file
            if not src.is_file():
                raise ValueError(f"--only: {src} is missing, so {name} cannot be kept; "
                                 f"add {name} to --only or run a full `genrec build`")
            shutil.copy2(src, out / file)
        if key in self.manifest.get("configs", {}):
            configs[key] = self.manifest["configs"][key]
        seconds = self.manifest.get("train_seconds", {})
        if key in seconds:
            timings[key] = seconds[key]
