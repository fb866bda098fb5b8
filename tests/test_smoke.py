"""The smoke query of a candidate version run in a child process (``service/smoke.py``): a
real ``python -m service.smoke`` over the session's tiny build passes, and a version the child
cannot load is a ``SmokeFailed`` naming the cause, never an exception of another kind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.engine.core.context import make_context
from models.engine.core.runtime import Runtime
from models.engine.core.settings import EngineSettings
from models.engine.factory import build_components
from service.smoke import SmokeFailed, smoke, smoke_in_child, smoke_users


def _contexts(rt: Runtime) -> list:
    return [make_context(rt, u, [1, 2, 3], blocked=[1, 2, 3]) for u in smoke_users(rt, 2)]


async def test_a_valid_version_passes_in_the_child_as_in_process(tiny_artifacts: Path) -> None:
    rt = Runtime.load(tiny_artifacts)
    contexts = _contexts(rt)
    smoke(rt, build_components(rt, EngineSettings()), contexts, [])
    paths = sorted(build_components(rt, EngineSettings()).pipelines)
    arms = [("a", paths[0], {})]  # an arm's params run for the first user too
    await smoke_in_child(tiny_artifacts, EngineSettings(), contexts, arms)


async def test_a_version_the_child_cannot_load_is_rejected_naming_why(
    tiny_artifacts: Path, tmp_path: Path
) -> None:
    rt = Runtime.load(tiny_artifacts)
    broken = tmp_path / "v"
    shutil.copytree(tiny_artifacts, broken)
    (broken / "tiger.json").write_text("{not json")  # changed after the parent loaded it
    with pytest.raises(SmokeFailed, match=r"^smoke: JSONDecodeError"):
        await smoke_in_child(broken, EngineSettings(), _contexts(rt), [])
