"""The A/B experiment layer's pure logic: arm definitions, deterministic per-user assignment,
forced paths, admin share changes and loading. No FastAPI wiring here; the exposure log and click
attribution live in ``service.exposures``.

Shares are validated, never normalised: every arm's ``share`` must be > 0 and the shares must
sum to 1 within ``SHARE_TOLERANCE``. A typo such as 0.5/0.6 is rejected rather than silently
rescaled, so what an operator reads in the file is exactly the traffic split served.

Assignment hashes ``salt`` and ``user_id`` with blake2b (64-bit digest), maps it uniformly to
[0, 1) and walks the cumulative shares. The hash is stable across processes and machines
(never Python's per-process salted ``hash()``); changing the salt reshuffles every user.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.registry import PATHS
from service.errors import InvalidFieldError

ArmPath = Literal[PATHS]  # type: ignore[valid-type]
SHARE_TOLERANCE = 1e-9
DEFAULT_ENV_VAR = "GENREC_EXPERIMENT_JSON"
_HASH_SPACE = float(2**64)


class ExperimentConfigError(ValueError):
    """A bad experiment definition; the message names the source (file or env var) and the
    field, e.g. ``experiments.json: arms.1.share: Input should be greater than 0``."""


class UnknownPathError(InvalidFieldError, ValueError):
    """A forced path that no arm serves. A ``ValueError`` for pure callers and an
    ``InvalidFieldError`` (422, loc ``["body", "path"]``) for the service's error mapping."""

    def __init__(self, path: str, available: Sequence[str]) -> None:
        super().__init__(
            ["body", "path"],
            f"path {path!r} is not served by any arm of this experiment "
            f"(available: {', '.join(sorted(set(available))) or 'none'})",
        )
        self.path = path


class Arm(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    path: ArmPath
    share: float = Field(gt=0.0, le=1.0, allow_inf_nan=False)
    params: dict[str, Any] = Field(default_factory=dict)


class Experiment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    salt: str = Field(min_length=1, max_length=256)
    arms: tuple[Arm, ...] = Field(min_length=1)

    @field_validator("arms")
    @classmethod
    def _arms_consistent(cls, arms: tuple[Arm, ...]) -> tuple[Arm, ...]:
        seen: set[str] = set()
        for arm in arms:
            if arm.name in seen:
                raise ValueError(f"arm names must be unique; {arm.name!r} appears twice")
            seen.add(arm.name)
        total = sum(arm.share for arm in arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"arm shares must sum to 1 (within {SHARE_TOLERANCE}); got {total!r}")
        return arms

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    @property
    def arm_names(self) -> list[str]:
        return [arm.name for arm in self.arms]

    def with_shares(self, new_shares: Mapping[str, float]) -> Experiment:
        """A copy with some arms' shares replaced (arms not named keep theirs). Validated like a
        fresh definition: unknown arm names, shares <= 0 and a total != 1 raise
        ``ExperimentConfigError`` naming the field (``shares.<arm>`` or ``arms``)."""
        known = set(self.arm_names)
        for name in new_shares:
            if name not in known:
                raise ExperimentConfigError(
                    f"shares.{name}: unknown arm {name!r} (arms: {', '.join(self.arm_names)})"
                )
        data = self.model_dump()
        for arm in data["arms"]:
            if arm["name"] in new_shares:
                arm["share"] = new_shares[arm["name"]]
        try:
            return Experiment.model_validate(data)
        except ValidationError as exc:
            raise ExperimentConfigError(_describe("shares", exc, self)) from None


def _describe(source: str, exc: ValidationError, exp: Experiment | None = None) -> str:
    """One line per pydantic error: ``source: dotted.loc: message``. When ``exp`` is given,
    ``arms.<i>.share`` is rewritten as ``shares.<arm name>`` (the admin's vocabulary)."""
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if exp is not None and len(loc) == 3 and loc[0] == "arms" and loc[2] == "share":
            loc = ["shares", exp.arms[int(loc[1])].name]
        parts.append(f"{source}: {'.'.join(loc) or '<root>'}: {err['msg']}")
    return "; ".join(parts)


def default_experiment() -> Experiment:
    """Both paths live out of the box, half the users each (arms named after their paths), so
    a quick start shows the cascade, the generative path and the split at once, and either
    path can be forced for QA without an experiment file."""
    return Experiment(name="default", salt="default", arms=(
        Arm(name="cascade", path="cascade", share=0.5),
        Arm(name="generative", path="generative", share=0.5),
    ))


def load_experiment(
    path: Path | None, env_json: str | None, *, env_var: str = DEFAULT_ENV_VAR
) -> Experiment:
    """The experiment from a JSON string (an env var, named ``env_var`` in errors) or a JSON
    file. The env string wins when both are given (deployments override a checked-in file);
    neither (or empty/blank values) gives ``default_experiment()``."""
    if env_json is not None and env_json.strip():
        return _parse(env_json, env_var)
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ExperimentConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ExperimentConfigError(f"{source}: not UTF-8: {exc.reason}") from None
        return _parse(text, source)
    return default_experiment()


def _parse(text: str, source: str) -> Experiment:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExperimentConfigError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(raw, dict):
        raise ExperimentConfigError(f"{source}: <root>: expected a JSON object")
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        raise ExperimentConfigError(_describe(source, exc)) from None


def bucket(salt: str, user_id: str) -> float:
    """A stable, uniform value in [0, 1) for (salt, user_id)."""
    digest = hashlib.blake2b(
        salt.encode("utf-8", "surrogatepass") + b"\x00" + user_id.encode("utf-8", "surrogatepass"),
        digest_size=8,
    ).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def assign(experiment: Experiment, user_id: str) -> Arm:
    """The user's arm: sticky for a given salt and arm list, in proportion to the shares."""
    u = bucket(experiment.salt, user_id)
    cumulative = 0.0
    for arm in experiment.arms:
        cumulative += arm.share
        if u < cumulative:
            return arm
    return experiment.arms[-1]  # float rounding leaves the total a hair under 1


def resolve(experiment: Experiment, user_id: str, forced_path: str | None = None) -> Arm:
    """The hashed arm, or with ``forced_path`` the first arm serving that path (raises
    ``UnknownPathError``, a ``ValueError`` naming ``path``, when none does)."""
    if forced_path is None:
        return assign(experiment, user_id)
    for arm in experiment.arms:
        if arm.path == forced_path:
            return arm
    raise UnknownPathError(forced_path, [arm.path for arm in experiment.arms])
