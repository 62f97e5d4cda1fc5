"""The rollup planner's inlined batch path (``add_rows``, the ingestion hot path) makes the
same deltas as ``add`` event by event, for any properties (text, integers, booleans that
equal them, floats, huge integers, missing dimensions, a model ``''``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.ledger.rollups import HOUR_US, RollupPlanner, dims_text

VALUES = st.one_of(st.sampled_from(["a", "b", "1", "True", "é" * 150]), st.integers(-2, 2), st.booleans(),
                   st.floats(allow_nan=False, allow_infinity=False), st.integers(10**15, 10**16), st.none())


@st.composite
def rows(draw):
    out = []
    for i in range(draw(st.integers(0, 30))):
        props = {k: v for k in ("feature", "user", "task", "team", "input_tokens", "score")
                 if (v := draw(VALUES)) is not None}
        out.append((draw(st.sampled_from(["c1", "c2"])), f"e{i}", draw(st.sampled_from(["llm.call", "request"])),
                    draw(st.integers(0, 5 * HOUR_US)), "", draw(st.sampled_from(["m1", "", None])),
                    draw(st.integers(0, 10**13)), props))
    return out


@settings(max_examples=200, deadline=None)
@given(batch=rows(), dims=st.sampled_from([("feature", "task", "user"), ("team",), ()]))
def test_add_rows_is_add_per_event(batch, dims):
    fast, slow = RollupPlanner(dims), RollupPlanner(dims)
    fast.add_rows(batch)
    fast.add_rows(batch)  # (the second time: every dimension text is cached)
    for _ in range(2):
        for r in batch:
            slow.add(r[0], r[2], r[3], r[5], r[7], r[6])
    assert fast.deltas == slow.deltas
    assert sum(d[0] for d in fast.deltas.values()) == 2 * len(batch)


def test_booleans_and_integers_key_apart():
    """``True == 1`` in Python: the dimension texts differ ('True', '1'), and so do the rows."""
    p = RollupPlanner(("feature",))
    p.add_rows([("c", "1", "llm.call", 0, "", "m", 5, {"feature": True}),
                ("c", "2", "llm.call", 0, "", "m", 7, {"feature": 1}),
                ("c", "3", "llm.call", 0, "", "m", 9, {"feature": "1"})])
    assert sorted((k[4], v[0], v[1]) for k, v in p.deltas.items()) == [('{"feature":"1"}', 2, 16),
                                                                       ('{"feature":"True"}', 1, 5)]
    assert dims_text(("feature",), (1.5,)) == ('{"feature":"1.5"}', 1)  # not exact: the row is odd


def test_token_slots_follow_the_upserts_columns():
    """The planner keeps the token sums in ``TOKENS`` order; the upsert writes them in its own
    ``TOKENS`` order without looking at names: the two must agree."""
    from billing.ledger import rollups
    from billing.store import rollup_sql

    assert rollups.TOKENS == rollup_sql.TOKENS
    p = RollupPlanner(())
    p.add_rows([("c", "1", "llm.call", 0, "", "m", 5, {"output_tokens": 7, "reasoning_tokens": 3, "score": 2})])
    (row,) = rollup_sql._rows(p.deltas)
    columns = [c.strip() for c in rollup_sql.COLUMNS.split(",")]
    assert dict(zip(columns, row)) == {"customer_id": "c", "hour": 0, "type": "llm.call", "model": "m", "dims": "{}",
                                       "events": 1, "cost_pico": 5, "cost_carry": 0, "input_tokens": 0,
                                       "output_tokens": 7, "cache_read_tokens": 0, "cache_write_tokens": 0,
                                       "reasoning_tokens": 3, "sums": '{"score":2}', "rounded": 0, "odd": 0,
                                       "tokened": 1}
    p.add_rows([("c", "2", "llm.call", 0, "", "m", 5, {"score": 1, "input_tokens": None})])  # no token count
    assert [r[-1] for r in rollup_sql._rows(p.deltas)] == [1]  # tokened: one of the row's two events
