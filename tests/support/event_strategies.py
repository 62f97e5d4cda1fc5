"""Hypothesis strategies for random stored events of every type the test plans meter (LLM
calls, requests, agent steps, outcomes and their disputes, payments), timestamps around
October 2026: the SQL aggregation and the running counters are checked against them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

MODELS = ["claude-sonnet-4-5", "claude-opus-4-1", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3", "gemini-2.5-pro"]
OUTCOME_IDS = ["o1", "o2", "o3", "o4", 7, 8]

timestamps = st.datetimes(datetime(2026, 9, 25), datetime(2026, 11, 20), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
maybe = st.booleans()
decimal_numbers = st.one_of(
    st.integers(0, 100_000),
    st.decimals(min_value=0, max_value=5000, places=3).map(str),  # at most 6 decimals: exact on SQLite too
    st.decimals(min_value=0, max_value=500, places=2).map(float),
)


@st.composite
def llm_call(draw):
    props = {}
    if draw(st.integers(0, 9)):
        props["model"] = draw(st.sampled_from(MODELS))
        props["input_tokens"] = draw(st.integers(0, 20_000))
        if draw(st.integers(0, 4)):
            props["output_tokens"] = draw(st.integers(0, 4_000))  # sometimes missing: sums skip it
    if draw(maybe):
        props["feature"] = draw(st.sampled_from(["support-chat", "search", "Support-Chat"]))
    if draw(maybe):
        props["user"] = draw(st.sampled_from(["u1", "u2", "u3", 4, "4"]))
    return "llm.call", props


@st.composite
def request(draw):
    props = {}
    if draw(st.integers(0, 5)):
        props["model"] = draw(st.sampled_from(MODELS + ["claude-haiku-4-5"]))
    return "request", props


@st.composite
def agent_step(draw):
    props = {}
    for key, values in (("tier", st.sampled_from(["gold", "silver", "bronze"])),
                        ("task", st.sampled_from(["t1", "t2", "t3", 1])),
                        ("level", st.sampled_from([2, "2", 3])),
                        ("model", st.sampled_from(["gpt-4o", "o3", "gemini-2.5-pro"])),
                        ("units", decimal_numbers), ("steps", st.integers(0, 50))):
        if draw(maybe):
            props[key] = draw(values)
    return "agent.step", props


@st.composite
def outcome(draw):
    props = {"outcome": draw(st.sampled_from(["resolution", "resolution", "escalation"]))}
    if draw(st.integers(0, 5)):
        props["outcome_id"] = draw(st.sampled_from(OUTCOME_IDS))
    return "outcome", props


@st.composite
def dispute(draw):
    props = {}
    if draw(st.integers(0, 5)):
        props["outcome_id"] = draw(st.sampled_from(OUTCOME_IDS))
    return draw(st.sampled_from(["outcome.disputed", "outcome.reopened"])), props


@st.composite
def payment(draw):
    props = {}
    if draw(st.integers(0, 4)):
        props["amount"] = draw(decimal_numbers)
    return "payment", props


@st.composite
def event_lists(draw):
    kinds = st.one_of(llm_call(), request(), agent_step(), outcome(), dispute(), payment())
    out = []
    for i in range(draw(st.integers(0, 40))):
        etype, props = draw(kinds)
        ts = draw(timestamps)
        if etype.startswith("outcome.") and out and draw(maybe):
            # a dispute shortly after an existing outcome: inside or just outside a window
            base = draw(st.sampled_from([e for e in out])).get("timestamp")
            ts = datetime.fromisoformat(base) + timedelta(days=draw(st.sampled_from([0, 1, 2, 3, 13, 14, 15])),
                                                          seconds=draw(st.sampled_from([-1, 0, 1])))
        out.append({"id": f"e{i}", "type": etype, "timestamp": ts.isoformat(), "properties": props})
    return out
