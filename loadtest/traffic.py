"""The request mix: who asks what, and clicks that point back at served lists.

Kinds (weights in ``Mix``):
  known    POST /recommend for a user of the dataset (the service reads the stored history)
  cold     POST /recommend for a user id the service has never seen
  history  POST /recommend from a stateless caller that sends its own ``history``
  forced   POST /recommend with ``path`` forced (QA traffic; not an exposure)
  events   POST /events: a click on an item of a list served earlier in the run, carrying that
           list's ``request_id`` (so the arm's CTR moves), or a view of a random item
Unforced /recommend requests go to whichever arm the experiment assigns; ``paths`` forces
every /recommend to one path instead (a per-path throughput run).
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

KINDS: tuple[str, ...] = ("known", "cold", "history", "forced", "events")


@dataclass(frozen=True)
class Mix:
    known: float = 0.55
    cold: float = 0.1
    history: float = 0.1
    forced: float = 0.05
    events: float = 0.2

    def __post_init__(self) -> None:
        w = self.weights()
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {self}")

    def weights(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in KINDS], dtype=np.float64)

    @classmethod
    def parse(cls, spec: str) -> Mix:
        """"known=0.7,events=0.3": kinds not named get weight 0 ("" = the default mix)."""
        if not spec.strip():
            return cls()
        given: dict[str, float] = {}
        for part in spec.split(","):
            m = re.fullmatch(r"\s*(\w+)\s*=\s*([0-9.eE+-]+)\s*", part)
            if m is None or m[1] not in KINDS:
                raise ValueError(f"bad mix entry {part!r}: expected KIND=WEIGHT with KIND in "
                                 f"{', '.join(KINDS)}")
            given[m[1]] = float(m[2])
        return cls(**{f.name: given.get(f.name, 0.0) for f in fields(cls)})


@dataclass(frozen=True)
class Request:
    kind: str
    path: str  # the URL path, e.g. /recommend
    body: dict[str, Any]
    forced_path: str | None = None  # the /recommend path asked for, when forced


@dataclass
class Served:
    """A /recommend answer remembered so that a later click can name it."""

    request_id: str
    user_id: str
    item_ids: list[str]


@dataclass
class Traffic:
    """Draws requests; ``observe`` feeds served lists back for clicks. Not thread-safe (one
    event loop)."""

    users: list[str]
    items: list[str]
    histories: list[list[str]]  # per known user, item ids in time order (stateless callers)
    mix: Mix = field(default_factory=Mix)
    paths: tuple[str, ...] = ("cascade", "generative")
    force: str | None = None  # every /recommend forced to this path
    k: int = 10
    click_share: float = 0.5  # of /events: clicks on served lists (when any), else views
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)
    _served: collections.deque[Served] = field(init=False, repr=False)
    _n: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.users or not self.items:
            raise ValueError("the traffic needs known users and items")
        self._rng = np.random.default_rng(self.seed)
        self._served = collections.deque(maxlen=2_000)
        self._p = self.mix.weights() / self.mix.weights().sum()

    def next(self) -> Request:
        self._n += 1
        kind = KINDS[int(self._rng.choice(len(KINDS), p=self._p))]
        if kind == "events":
            return self._event()
        body: dict[str, Any] = {"k": self.k}
        if kind == "known":
            body["user_id"] = self._pick(self.users)
        elif kind == "cold":
            body["user_id"] = f"loadtest-cold-{self.seed}-{self._n}"
        elif kind == "history":
            h = self.histories[int(self._rng.integers(len(self.histories)))]
            body["user_id"] = f"loadtest-stateless-{self.seed}-{self._n}"
            body["history"] = h[-int(self._rng.integers(1, 21)):]
        else:  # forced: a known user on a named path
            body["user_id"] = self._pick(self.users)
        forced = self.force or (self._pick(list(self.paths)) if kind == "forced" else None)
        if forced is not None:
            body["path"] = forced
        return Request(kind, "/recommend", body, forced)

    def _event(self) -> Request:
        if self._served and self._rng.random() < self.click_share:
            s = self._served[int(self._rng.integers(len(self._served)))]
            ev = {"user_id": s.user_id, "item_id": self._pick(s.item_ids), "type": "click",
                  "request_id": s.request_id}
        else:
            ev = {"user_id": self._pick(self.users), "item_id": self._pick(self.items),
                  "type": "view"}
        return Request("events", "/events", {"events": [ev]})

    def observe(self, req: Request, status: int, answer: dict[str, Any] | None) -> None:
        """Remember a served, unforced list (forced QA lists are not exposures)."""
        if (req.path == "/recommend" and status == 200 and answer and req.forced_path is None
                and answer.get("items")):
            self._served.append(Served(answer["request_id"], answer["user_id"],
                                       [it["item_id"] for it in answer["items"]]))

    def _pick(self, seq: list[str]) -> str:
        return seq[int(self._rng.integers(len(seq)))]
