"""The client's JSON (request bodies, journal lines, spool files): ``dumps_bytes`` (orjson)
writes the same JSON values as ``dumps`` (the standard encoder with the client's defaults),
for anything an event may hold, and the same bytes for the values orjson cannot write."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.client.spool import dumps, dumps_bytes

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
    st.text(), st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),  # lone surrogates
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=20)


def _same(a: bytes, b: str) -> bool:
    # NaN != NaN: compare the values written back by one encoder
    return json.dumps(json.loads(a), sort_keys=True) == json.dumps(json.loads(b), sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(values)
def test_dumps_bytes_writes_the_values_dumps_writes(value):
    fast, standard = dumps_bytes(value), dumps(value)
    assert _same(fast, standard)


def test_what_orjson_would_write_otherwise_is_written_by_dumps():
    for value in ({"x": math.nan}, [math.inf], {"n": 2**65}, {1: "int key"}, {"s": "\ud800"}):
        assert dumps_bytes(value) == dumps(value).encode()
    event = {"id": "e", "timestamp": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "cost": Decimal("0.10"),
             "properties": {"feature": "café", "input_tokens": 2100, "ratio": 0.1, "none": None}}
    assert json.loads(dumps_bytes(event)) == json.loads(dumps(event))
    assert dumps_bytes(event).startswith(b'{"cost":"0.10","id":"e","properties":{')  # keys sorted, no spaces
