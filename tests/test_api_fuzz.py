"""Property tests through the ASGI app: no request, however malformed, gets a 5xx.

Hypothesis generates bodies for every endpoint: valid-shaped ones with hostile values (NaN,
Infinity, 1e308, huge ints, lone surrogates, empty and over-long ids, lists around the
1,000 limit, unknown items mixed with known ones), ones with a field swapped for nested junk,
extra fields, and raw malformed bytes. Every response must be < 500 and strict JSON, every
422 must point at a field, a rejected /events batch must write nothing, and a 200 must keep
the endpoint's contract (k items at most, no duplicates, nothing excluded).

The app runs once per module behind httpx's ASGITransport, as in test_api.py, but on a private
event loop wrapped in a small sync facade: hypothesis's @given runs sync test functions, and
the loop keeps the app (lifespan, store, background loader) alive across all examples.
GENREC_FUZZ_EXAMPLES scales the number of examples per test for a longer local run.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from service.app import create_app
from service.config import Settings
from service.stores.base import EVENT_TYPES

EXAMPLES = int(os.environ.get("GENREC_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # one request can take tens of ms on a busy 2-core runner
    database=None,  # no replay store: a failure prints its @reproduce_failure blob instead
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

N_ITEMS, N_USERS = 1682, 943  # bundled ml-100k: ids "1".."1682" and "1".."943"
KNOWN_ITEMS = {str(i) for i in range(1, N_ITEMS + 1)}
MAX_IDS = 1_000
POOL = [f"fuzz-{i}" for i in range(4)]  # event users whose histories the /events test watches
FIELDS = {
    "/recommend": {"user_id", "k", "exclude_item_ids", "history"},
    "/recall": {"user_id", "history", "method", "k"},
    "/rank": {"user_id", "history", "item_ids", "model"},
    "/rerank": {"items", "method", "k", "diversity"},
    "/events": {"events"},
}
JSON = {"content-type": "application/json"}


# --- The app -------------------------------------------------------------------------------


T = TypeVar("T")


class Client:
    """Sync calls into an httpx.AsyncClient on the ASGI app, all on one private event loop.

    The loop is never set as the thread's current loop, so pytest-asyncio's session loop (used
    by the other API tests) is left alone. ASGITransport re-raises an unhandled app error, so a
    bug fails the example with its own traceback, which hypothesis then shrinks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, http: httpx.AsyncClient,
                 app: FastAPI) -> None:
        self.loop, self.http, self.app = loop, http, app

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.run(self.http.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def send(self, request: httpx.Request) -> httpx.Response:
        return self.run(self.http.send(request))


@pytest.fixture(scope="module")
def client(tiny_artifacts: Path) -> Iterator[Client]:
    app = create_app(Settings(artifacts_dir=tiny_artifacts))
    loop = asyncio.new_event_loop()
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    c = Client(loop, http, app)
    try:
        deadline = time.monotonic() + 120
        while c.get("/readyz").status_code != 200:
            assert app.state.genrec.load_error is None, app.state.genrec.load_error
            assert time.monotonic() < deadline, "artifacts did not load"
            c.run(asyncio.sleep(0.05))  # the loader finishes on this loop: let it run
        yield c
    finally:
        c.run(http.aclose())
        c.run(lifespan.__aexit__(None, None, None))
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


# --- Value strategies ----------------------------------------------------------------------

known_item = st.integers(1, N_ITEMS).map(str)
known_user = st.integers(1, N_USERS).map(str)
weird_str = st.sampled_from([
    "", " ", "0", "-1", "01", "1.0", " 1", "1 ", f"{N_ITEMS + 1}", "null", "%", "%25", "%2F",
    "a/b", "..", "\x00", "\ud800", "\udfff", "a\ud800b", "\U0001f600", "\u202e1", "Ø",
    "x" * 128, "x" * 129, "x" * 256, "x" * 257, "é" * 200,
])
any_text = st.text(max_size=30)  # hypothesis leaves out lone surrogates; weird_str adds them
item_id = st.one_of(known_item, known_item, known_item, weird_str, any_text)
user_id = st.one_of(known_user, st.sampled_from(POOL), weird_str, any_text)
huge = st.sampled_from([
    1e308, -1e308, 1.7976931348623157e308, float("inf"), float("-inf"), float("nan"), 3.4e38,
    3.5e38, -3.5e38, 5e-324, -0.0, 2**63, 2**64, -(2**63) - 1, 10**400, True, False,
])
number = st.one_of(st.integers(-10, 1_100), st.integers(), st.floats(), huge)
k_value = st.one_of(st.integers(-2, 205), st.sampled_from([0, 1, 200, 201, 1000, 1001]), number,
                    st.sampled_from(["10", "ten", 10.0, 10.5, None]))
json_junk = st.recursive(
    st.none() | st.booleans() | number | any_text | weird_str,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(any_text | weird_str, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def long_ids(draw: st.DrawFn) -> list[str]:
    """Around the 1,000 limit: all known, or known with a few unknowns/duplicates mixed in."""
    rnd = draw(st.randoms(use_true_random=False))
    n = draw(st.sampled_from([MAX_IDS - 1, MAX_IDS, MAX_IDS + 1]) | st.integers(900, 1010))
    ids = [str(i) for i in rnd.sample(range(1, N_ITEMS + 1), min(n, N_ITEMS))]
    for _ in range(draw(st.integers(0, 3))):  # corrupt a few positions
        ids[rnd.randrange(len(ids))] = rnd.choice(["nope", "", ids[0], f"{N_ITEMS + 7}"])
    return ids


id_list = st.one_of(st.lists(item_id, max_size=8), st.lists(known_item, max_size=60), long_ids())


@st.composite
def bodies(draw: st.DrawFn, good: dict[str, st.SearchStrategy[Any]],
           required: frozenset[str] = frozenset()) -> Any:
    """A body for one endpoint: shaped (fields from ``good``, optional ones sometimes left
    out), one field replaced by junk, an extra field, a required field missing, or junk."""
    mode = draw(st.sampled_from(["shaped", "shaped", "shaped", "bad_field", "extra", "missing",
                                 "junk"]))
    if mode == "junk":
        return draw(json_junk)
    body = {name: draw(s) for name, s in good.items() if name in required or draw(st.booleans())}
    if mode == "bad_field":
        body[draw(st.sampled_from(sorted(good)))] = draw(json_junk)
    elif mode == "extra":
        key = draw(st.sampled_from(["surprise", "K", "userId", "exclude_items", "\ud800", ""])
                   | any_text)
        body.setdefault(key, draw(json_junk))
    elif mode == "missing" and body:
        del body[draw(st.sampled_from(sorted(body)))]
    return body


score = st.one_of(st.floats(-10, 10), st.floats(), huge, st.integers(-(2**70), 2**70))
scored_known = st.fixed_dictionaries({"item_id": known_item, "score": st.floats(-1e3, 1e3)})
scored_any = st.fixed_dictionaries({"item_id": item_id, "score": score})


@st.composite
def long_scored(draw: st.DrawFn) -> list[dict[str, Any]]:
    rnd = draw(st.randoms(use_true_random=False))
    return [{"item_id": i, "score": rnd.uniform(-5, 5)} for i in draw(long_ids())]


rerank_items = st.one_of(
    st.lists(scored_known, min_size=1, max_size=60, unique_by=lambda x: x["item_id"]),
    st.lists(scored_any, max_size=8),
    long_scored(),
)
event_body = st.fixed_dictionaries(
    {"user_id": st.one_of(st.sampled_from(POOL), st.sampled_from(POOL), user_id),
     "item_id": item_id},
    optional={"type": st.sampled_from(EVENT_TYPES) | weird_str | json_junk,
              "ts": st.one_of(st.floats(0, 2e9), number, st.none())},
)


@st.composite
def long_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [{"user_id": draw(st.sampled_from(POOL)), "item_id": i} for i in draw(long_ids())]


clean_event = st.fixed_dictionaries(
    {"user_id": st.sampled_from(POOL), "item_id": known_item},
    optional={"type": st.sampled_from(EVENT_TYPES), "ts": st.floats(0, 2e9) | st.none()},
)


@st.composite
def one_bad_in_batch(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A valid batch with one bad event somewhere: the all-or-nothing case."""
    batch = draw(st.lists(clean_event, min_size=1, max_size=6))
    batch.insert(draw(st.integers(0, len(batch))), draw(event_body))
    return batch


events_list = st.one_of(
    st.lists(clean_event, min_size=1, max_size=6),
    one_bad_in_batch(),
    st.lists(event_body, max_size=6),
    st.lists(event_body, min_size=1, max_size=3).map(lambda evs: evs * 300),  # 300..900
    long_events(),
)

ENDPOINT_BODIES: dict[str, st.SearchStrategy[Any]] = {
    "/recommend": bodies({"user_id": user_id, "k": k_value, "exclude_item_ids": id_list,
                          "history": id_list | st.none()}, frozenset({"user_id"})),
    "/recall": bodies({"user_id": user_id | st.none(), "history": id_list | st.none(),
                       "method": st.sampled_from(["popular", "itemcf", "ann"]) | weird_str,
                       "k": k_value}, frozenset({"method"})),
    "/rank": bodies({"user_id": user_id | st.none(), "history": id_list | st.none(),
                     "item_ids": st.lists(known_item, min_size=1, max_size=60) | id_list,
                     "model": st.sampled_from(["din", "deepfm"]) | weird_str},
                    frozenset({"item_ids"})),
    "/rerank": bodies({"items": rerank_items, "method": st.sampled_from(["mmr", "dpp"]) | weird_str,
                       "k": k_value, "diversity": st.floats(0, 1) | number},
                      frozenset({"items"})),
    "/events": bodies({"events": events_list}, frozenset({"events"})),
}


# --- Checks --------------------------------------------------------------------------------


def _no_constant(name: str) -> None:
    raise AssertionError(f"response is not strict JSON: {name}")


def check(r: httpx.Response, fields: set[str], sent: Any = None) -> Any:
    """Status < 500, a strict-JSON body, and 422s whose every error points at a field."""
    assert r.status_code < 500, (r.status_code, r.text[:500])
    event(f"status {r.status_code}")  # --hypothesis-show-statistics: how deep examples get
    body = json.loads(r.content, parse_constant=_no_constant)  # NaN/Infinity are not JSON
    if r.status_code == 422:
        detail = body["detail"]
        assert isinstance(detail, list) and detail, body
        for err in detail:
            loc = err["loc"]
            assert isinstance(err["msg"], str) and err["msg"], err
            assert loc and loc[0] in ("body", "path", "query"), err
            # A field-level error names a declared field or one the caller sent (an extra);
            # ["body", <int>] is a JSON syntax error's position; a bare ["body"] is reserved
            # for the body as a whole (not an object, or "give user_id or history").
            if len(loc) > 1:
                named = fields | (set(sent) if isinstance(sent, dict) else set())
                assert loc[1] in named or (loc[0] == "body" and isinstance(loc[1], int)), err
    elif r.status_code >= 400:
        assert "detail" in body, body
    return body


def post(client: Client, path: str, body: Any) -> httpx.Response:
    # json.dumps writes NaN/Infinity literals and escapes lone surrogates as \\udXXX: exactly
    # what a hostile client can send and what Python's JSON parser accepts.
    return client.post(path, content=json.dumps(body).encode(), headers=JSON)


def ids_of(body: dict[str, Any]) -> list[str]:
    return [x["item_id"] for x in body["items"]]


def _contract_recommend(sent: dict[str, Any], body: dict[str, Any]) -> None:
    ids, k = ids_of(body), int(sent.get("k", 10))
    assert len(ids) == len(set(ids)) and len(ids) <= k
    excluded, history = set(sent.get("exclude_item_ids", [])), sent.get("history")
    assert not set(ids) & excluded
    if history is not None:  # the override replaces the store, so "what is left" is known
        assert not set(ids) & set(history)
        # A 200 means every history id is known; unknown excluded ids are simply ignored.
        left = N_ITEMS - len((excluded & KNOWN_ITEMS) | set(history))
        assert len(ids) == min(k, left), (len(ids), k, left)  # exactly k whenever possible


def _contract_recall(sent: dict[str, Any], body: dict[str, Any]) -> None:
    ids = ids_of(body)
    assert len(ids) == len(set(ids)) and len(ids) <= int(sent.get("k", 100))


def _contract_rank(sent: dict[str, Any], body: dict[str, Any]) -> None:
    assert sorted(ids_of(body)) == sorted(sent["item_ids"])


def _contract_rerank(sent: dict[str, Any], body: dict[str, Any]) -> None:
    ids = ids_of(body)
    assert len(ids) == len(set(ids)) <= int(sent.get("k", 10))
    assert set(ids) <= {x["item_id"] for x in sent["items"]}


CONTRACTS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "/recommend": _contract_recommend,
    "/recall": _contract_recall,
    "/rank": _contract_rank,
    "/rerank": _contract_rerank,
}


# --- Tests ---------------------------------------------------------------------------------


def _fuzz_endpoint(path: str) -> Callable[..., None]:
    @FUZZ
    @given(body=ENDPOINT_BODIES[path])
    def test(client: Client, body: Any) -> None:
        r = post(client, path, body)
        got = check(r, FIELDS[path], body)
        if r.status_code == 200:
            CONTRACTS[path](body, got)

    test.__name__ = f"test_fuzz_{path.strip('/')}"
    return test


test_fuzz_recommend = _fuzz_endpoint("/recommend")
test_fuzz_recall = _fuzz_endpoint("/recall")
test_fuzz_rank = _fuzz_endpoint("/rank")
test_fuzz_rerank = _fuzz_endpoint("/rerank")


def _event_users(body: Any) -> set[str]:
    users = set(POOL)
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        users |= {e["user_id"] for e in body["events"]
                  if isinstance(e, dict) and isinstance(e.get("user_id"), str)}
    return users


@FUZZ
@given(body=ENDPOINT_BODIES["/events"])
def test_fuzz_events_all_or_nothing(client: Client, body: Any) -> None:
    store = client.app.state.genrec.store
    users = _event_users(body)

    def versions() -> dict[str, int]:
        # The version counter moves on every write, even one that leaves the capped list
        # looking the same, so it is a stricter "nothing written" check than the history.
        return {u: client.run(store.history_version(u)) for u in users}

    def pool_histories() -> dict[str, Any]:
        return {u: client.get(f"/users/{u}/history", params={"limit": 1000}).json()
                for u in POOL}

    before, hist_before = versions(), pool_histories()
    r = post(client, "/events", body)
    got = check(r, FIELDS["/events"], body)
    after = versions()
    if r.status_code == 200:
        assert got == {"accepted": len(body["events"])}
        assert all(after[e["user_id"]] > before[e["user_id"]] for e in body["events"])
    else:
        assert after == before, "a rejected batch wrote something"
        assert pool_histories() == hist_before


path_segment = st.one_of(
    user_id,
    st.text(alphabet="/%?# &+.~\\:;=@ab1é", max_size=12),
    st.sampled_from(["%2F", "a%2Fb", "%", "%zz", "%ED%A0%80", "%FF", "%00", ".", "..", "%2e%2e",
                     "a b", "a+b", "%20", "x" * 128, "x" * 129, "%" * 200]),
)
limit_value = st.one_of(
    st.none(), st.integers(-5, 1_005), st.integers(),
    st.sampled_from(["0", "1", "1000", "1001", "-1", "1e3", "1.5", "", "abc", "%FF", " 5",
                     "NaN", "Infinity", "9" * 40, "1&limit=2"]),
    st.text(max_size=8),
)


@FUZZ
@given(segment=path_segment, encode=st.booleans(), limit=limit_value,
       encode_limit=st.booleans())
def test_fuzz_history(client: Client, segment: str, encode: bool, limit: Any,
                      encode_limit: bool) -> None:
    try:
        seg = quote(segment, safe="") if encode else segment
        url = f"/users/{seg}/history"
        if limit is not None:
            text = str(limit)
            url += "?limit=" + (quote(text, safe="") if encode_limit else text)
        request = client.http.build_request("GET", url)
    except (httpx.InvalidURL, UnicodeError):
        reject()  # no client can send it (e.g. a lone surrogate): nothing reaches the server
    r = client.send(request)
    got = check(r, {"user_id", "limit"})
    if r.status_code == 200:
        assert len(got["items"]) <= MAX_IDS and isinstance(got["user_id"], str)


CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
    "application/problem+json", "text/plain", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "", None,
]
RAW = [
    b"", b"{", b"}", b"[]", b"null", b"0", b'"\\ud800"', b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00",
    b'{"user_id": "1", "k": ' + b"9" * 5_000 + b"}",  # beyond Python's int-digits limit
    b"[" * 5_000 + b"]" * 5_000,  # deeper than the parser's recursion limit
    b'{"user_id": "1", "user_id": 2}', b'{"user_id": "1", "k": Infinity}', b'{"user_id": "1"',
    b'{"events": [' + b",".join([b'{"user_id": "u", "item_id": "1"}'] * 1_001) + b"]}",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid-looking body with a few bytes inserted, deleted or replaced."""
    path = draw(st.sampled_from(sorted(ENDPOINT_BODIES)))
    raw = bytearray(json.dumps(draw(ENDPOINT_BODIES[path])).encode())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.integers(0, 255))
        if op == "insert":
            raw.insert(pos, byte)
        elif pos < len(raw):
            if op == "delete":
                del raw[pos]
            else:
                raw[pos] = byte
    return bytes(raw)


@FUZZ
@given(path=st.sampled_from(sorted(FIELDS)), content_type=st.sampled_from(CONTENT_TYPES),
       raw=st.one_of(st.sampled_from(RAW), st.binary(max_size=64), mutated()))
def test_fuzz_raw_bytes(client: Client, path: str, content_type: str | None,
                        raw: bytes) -> None:
    headers = {"content-type": content_type} if content_type is not None else {}
    r = client.post(path, content=raw, headers=headers)
    try:  # what the server parsed, so an extra field it names counts as a field
        sent = json.loads(raw)
    except (ValueError, RecursionError):
        sent = None
    check(r, FIELDS[path], sent)


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
       path=st.sampled_from([*FIELDS, "/users/1/history", "/healthz", "/readyz", "/metrics", "/",
                             "/recommend/", "/users//history", "/users/1", "/docs",
                             "/openapi.json", "/nope"]),
       query=st.dictionaries(st.sampled_from(["limit", "k", "user_id", "x"]), any_text,
                             max_size=2))
def test_fuzz_methods_and_routes(client: Client, method: str, path: str,
                                 query: dict[str, str]) -> None:
    r = client.request(method, path, params=query)
    assert r.status_code < 500, (method, path, r.status_code, r.text[:300])


def test_no_5xx_recorded(client: Client) -> None:
    # The metrics middleware counts every response by status, including any a test above
    # didn't look at. 503 is the one legitimate 5xx: "not ready yet" while artifacts load.
    text = client.get("/metrics").text
    assert not [line for line in text.splitlines() if line.startswith("genrec_requests_total")
                and 'status="5' in line and 'status="503"' not in line]


# --- Schemathesis: the OpenAPI document against the app, every check -----------------------

# Schema-valid but refused by rules no JSON Schema can state: item ids must be in the catalog
# (/events, /rank, /recall, /recommend history), arm names must be the experiment's and the
# shares must sum to 1. Those 422s are the contract, so positive_data_acceptance may see 422.
ST_EXAMPLES = max(3, EXAMPLES // 10)


def test_schemathesis_all_checks(client: Client) -> None:
    schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")
    from schemathesis.checks import CHECKS

    schema = schemathesis.openapi.from_dict(client.app.openapi())
    accepted = schema.config.checks.positive_data_acceptance  # type: ignore[attr-defined]
    accepted.expected_statuses = ["2xx", "401", "403", "404", "409", "422"]
    checks = list(CHECKS.get_all())
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(FUZZ, max_examples=ST_EXAMPLES)
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://test")
            # requests-style keywords, in httpx's terms (no cookie parameters are declared)
            if not kwargs.get("cookies"):
                kwargs.pop("cookies", None)
            if isinstance(kwargs.get("data"), bytes | str):
                kwargs["content"] = kwargs.pop("data")
            response = client.request(**kwargs)
            case.validate_response(response, checks=checks)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # collect all operations, then fail
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
