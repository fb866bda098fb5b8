"""Build profiles: every shipped profile passes its schema, and a bad setting fails before any
training with ``profile.group.field`` in the message."""

from __future__ import annotations

import copy

import pytest

from models.build.profile_values import VALUES
from models.build.profiles import Profile, profile


@pytest.mark.parametrize("name", sorted(VALUES))
def test_shipped_profiles_are_valid(name: str) -> None:
    p = profile(name)
    assert set(p.groups) == set(VALUES[name])
    assert p.params("sasrec") == VALUES[name].get("sasrec", {})


@pytest.mark.parametrize(("group", "field", "value", "where"), [
    ("sasrec_train", "epochs", "ten", "sasrec_train.epochs"),  # wrong type
    ("sasrec", "dimm", 3, "sasrec.dimm"),  # a typo: no such field
    ("tdm", "beam", 1.5, "tdm.beam"),  # a build option of the group, wrong type
    ("semantic_ids", "source", "text", "semantic_ids.source"),  # not one of the choices
    ("hnsw", "m", "x", "hnsw.m"),  # a constructor's keyword parameter
])
def test_bad_setting_names_profile_group_and_field(group: str, field: str, value: object,
                                                   where: str) -> None:
    groups = copy.deepcopy(VALUES["tiny"])
    groups.setdefault(group, {})[field] = value
    with pytest.raises(ValueError, match=f"profile 'bad': {where}"):
        Profile(name="bad", groups=groups)


def test_unknown_group_and_profile_are_named() -> None:
    with pytest.raises(ValueError, match="unknown setting group 'sasrek'"):
        Profile(name="bad", groups={"sasrek": {"dim": 8}})
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        profile("huge")


def test_params_are_a_copy() -> None:
    p = profile("tiny")
    p.params("sasrec")["dim"] = 999
    assert p.params("sasrec")["dim"] == VALUES["tiny"]["sasrec"]["dim"]


def test_overrides_set_json_values_and_leave_the_shipped_profile_alone() -> None:
    p = profile("tiny", ["sasrec_train.lr=0.002", "sasrec.max_len=30",
                         'fusion.quotas={"semantic_id": 7}', "semantic_ids.source=content"])
    assert p.name == "tiny+set"
    assert p.params("sasrec_train")["lr"] == 0.002
    assert p.params("sasrec_train")["epochs"] == VALUES["tiny"]["sasrec_train"]["epochs"]
    assert p.params("sasrec")["max_len"] == 30
    assert p.params("fusion")["quotas"] == {"semantic_id": 7}
    assert p.params("semantic_ids")["source"] == "content"  # not JSON: kept as a string
    assert profile("tiny").params("sasrec") == VALUES["tiny"]["sasrec"]


@pytest.mark.parametrize(("override", "message"), [
    ("sasrec_train.lrr=1", "sasrec_train.lrr"),
    ("sasrec_train.epochs=ten", "sasrec_train.epochs"),
    ("sasrec_train", "expected GROUP.FIELD=VALUE"),
    ("lr=0.1", "expected GROUP.FIELD=VALUE"),
])
def test_bad_override_is_named(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profile("tiny", [override])
