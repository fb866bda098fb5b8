"""Pure logic of the A/B layer: validation, sticky hashing, forced paths, share changes,
exposure/click attribution."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from service.errors import InvalidFieldError
from service.experiments import (
    Arm,
    Experiment,
    ExperimentConfigError,
    UnknownPathError,
    assign,
    bucket,
    default_experiment,
    load_experiment,
    resolve,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
IDS = ["1", "42", "196", "alice", "user-9999", "ü"]
# blake2b is stable across processes and machines: these must never change for salt "exp-2026".
EXPECTED = ["gen_t", "gen_t", "control", "gen_t", "control", "gen"]


def three_arms(salt: str = "exp-2026") -> Experiment:
    return Experiment(
        name="x",
        salt=salt,
        arms=[
            Arm(name="control", path="cascade", share=0.5),
            Arm(name="gen", path="generative", share=0.3),
            Arm(name="gen_t", path="generative", share=0.2, params={"temperature": 0.7}),
        ],
    )


def raw(**over: object) -> dict:
    data: dict = {
        "name": "x",
        "salt": "s",
        "arms": [
            {"name": "a", "path": "cascade", "share": 0.5},
            {"name": "b", "path": "generative", "share": 0.5},
        ],
    }
    data.update(over)
    return data


# ---- assignment ------------------------------------------------------------------------------


def test_sticky_hard_coded() -> None:
    exp = three_arms()
    assert [assign(exp, u).name for u in IDS] == EXPECTED
    assert [assign(exp, u).name for u in IDS] == EXPECTED  # same process, again
    assert bucket("exp-2026", "196") == pytest.approx(0.010347476868556178, abs=0)


def test_sticky_across_processes() -> None:
    # A fresh interpreter with a different PYTHONHASHSEED must agree.
    code = (
        "import json,sys; sys.path.insert(0, '.');"
        "from tests.test_experiments import three_arms, IDS;"
        "from service.experiments import assign;"
        "print(json.dumps([assign(three_arms(), u).name for u in IDS]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == EXPECTED


def test_split_matches_shares() -> None:
    exp = three_arms()
    n = 100_000
    counts = Counter(assign(exp, str(i)).name for i in range(n))
    for arm in exp.arms:
        assert abs(counts[arm.name] / n - arm.share) < 0.02, (arm.name, counts)


def test_salt_reshuffles() -> None:
    a, b = three_arms("salt-a"), three_arms("salt-b")
    users = [f"u{i}" for i in range(2_000)]
    moved = sum(assign(a, u).name != assign(b, u).name for u in users)
    # Independent assignments disagree with prob. 1 - (.25+.09+.04) = 0.62.
    assert 0.5 < moved / len(users) < 0.75


def test_default_serves_both_paths() -> None:
    exp = default_experiment()
    assert {(a.name, a.path, a.share) for a in exp.arms} == {("cascade", "cascade", 0.5),
                                                             ("generative", "generative", 0.5)}
    shares = [assign(exp, str(i)).name for i in range(2_000)]
    assert 0.45 < shares.count("generative") / len(shares) < 0.55  # 4.5 standard errors
    assert resolve(exp, "u", "generative").path == "generative"
    assert resolve(exp, "u", "cascade").path == "cascade"


# ---- forced path -----------------------------------------------------------------------------


def test_forced_path_picks_first_arm_with_path() -> None:
    exp = three_arms()
    assert resolve(exp, "196", "generative").name == "gen"
    assert resolve(exp, "1", "cascade").name == "control"
    assert resolve(exp, "1", None).name == "gen_t"


def test_forced_path_missing() -> None:
    with pytest.raises(ValueError, match="path 'generative'") as info:
        resolve(Experiment(name="e", salt="s", arms=(Arm(name="c", path="cascade", share=1.0),)),
                "u", "generative")
    assert isinstance(info.value, UnknownPathError)
    assert isinstance(info.value, InvalidFieldError)
    assert info.value.loc == ["body", "path"]


# ---- validation and loading ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (raw(arms=[]), "arms"),
        (raw(arms=[{"name": "a", "path": "cascade", "share": 0.5}] * 2), "arms"),
        (raw(arms=[{"name": "a", "path": "cascade", "share": 0.7}]), "arms"),
        (raw(arms=[{"name": "a", "path": "cascade", "share": 0.0}]), "arms.0.share"),
        (raw(arms=[{"name": "a", "path": "cascade", "share": -1.0}]), "arms.0.share"),
        (raw(arms=[{"name": "a", "path": "tdm", "share": 1.0}]), "arms.0.path"),
        (raw(arms=[{"name": "a", "path": "cascade", "share": 1.0, "x": 1}]), "arms.0.x"),
        (raw(arms=[{"path": "cascade", "share": 1.0}]), "arms.0.name"),
        (raw(salt=""), "salt"),
        (raw(typo=1), "typo"),
    ],
)
def test_validation_errors_name_source_and_field(tmp_path: Path, data: dict, field: str) -> None:
    f = tmp_path / "exp.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ExperimentConfigError, match=rf"{re.escape(str(f))}: {field}: "):
        load_experiment(f, None)
    with pytest.raises(ExperimentConfigError, match=rf"GENREC_EXPERIMENT_JSON: {field}: "):
        load_experiment(None, json.dumps(data))


def test_shares_within_tolerance_accepted() -> None:
    arms = [{"name": str(i), "path": "cascade", "share": 0.1} for i in range(10)]
    assert sum(a["share"] for a in arms) != 1.0  # 0.9999999999999999
    assert len(Experiment.model_validate(raw(arms=arms)).arms) == 10


def test_load_file_env_and_default(tmp_path: Path) -> None:
    example = load_experiment(REPO_ROOT / "experiments.example.json", None)
    assert example.arm_names == ["control", "generative", "generative_t07"]
    assert example.arm("generative_t07").params["temperature"] == 0.7
    env = load_experiment(REPO_ROOT / "experiments.example.json", json.dumps(raw()))
    assert env.arm_names == ["a", "b"]  # env wins over the file
    assert load_experiment(None, None) == default_experiment()
    assert load_experiment(None, "  ") == default_experiment()


def test_load_bad_json_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{"name": "x",\n  "salt": }')
    with pytest.raises(
        ExperimentConfigError, match=rf"{re.escape(str(f))}: invalid JSON at line 2"
    ):
        load_experiment(f, None)
    with pytest.raises(ExperimentConfigError, match="nope.json: cannot read"):
        load_experiment(tmp_path / "nope.json", None)
    with pytest.raises(ExperimentConfigError, match="MY_VAR: <root>: expected a JSON object"):
        load_experiment(None, "[1, 2]", env_var="MY_VAR")


# ---- with_shares -----------------------------------------------------------------------------


def test_with_shares() -> None:
    exp = three_arms()
    new = exp.with_shares({"control": 0.2, "gen_t": 0.5})
    assert [a.share for a in new.arms] == [0.2, 0.3, 0.5]
    assert [a.share for a in exp.arms] == [0.5, 0.3, 0.2]  # original untouched
    assert new.arm("gen_t").params == {"temperature": 0.7} and new.salt == exp.salt
    # Sticky under a share change for users whose bucket stays inside their arm's interval.
    assert assign(new, "196").name == "control"


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"nope": 0.5}, "shares.nope: unknown arm"),
        ({"control": 0.0, "gen_t": 0.7}, "shares.control: "),
        ({"control": float("nan")}, "shares.control: "),
        ({"control": 0.6}, "shares: arms: .*sum to 1"),
    ],
)
def test_with_shares_validation(shares: dict[str, float], message: str) -> None:
    with pytest.raises(ExperimentConfigError, match=message):
        three_arms().with_shares(shares)
