"""Every example plan in plans/ rated against a hand-checked invoice, and the worked example
of the design brief (5,000 customers x 15 messages on a $3/$15 model)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.catalog import load_plan_file
from billing.costs import CostBook, cost_breakdown, event_cost
from billing.events import UsageEvent
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate
from billing.rating.periods import calendar_month

D = Decimal
PLANS = Path(__file__).resolve().parents[2] / "plans"
OCT = calendar_month(2026, 10)  # 31 days
BOOK = CostBook.load_default()
SONNET_MESSAGE = {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400}


def at(day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, 10, day, hour, minute, tzinfo=UTC)


def spread(n: int, prefix: str, type_: str, customer: str = "acme", **props) -> list[UsageEvent]:
    """n events of one kind spread over October (one every few minutes from Oct 1)."""
    return [UsageEvent(id=f"{prefix}{i}", customer=customer, type=type_,
                       timestamp=OCT.start + timedelta(minutes=5 * i + 1), properties=props) for i in range(n)]


def rate(plan_file: str, events, **kw):
    plan = load_plan_file(PLANS / plan_file)
    usage = aggregate(plan, events, OCT.start, OCT.end, lambda e: event_cost(e, BOOK))
    return rate_period(RatingInput(plan, "acme", OCT, usage, **kw))


def lines(inv) -> list[tuple[str, Decimal, Decimal | None, Decimal]]:
    return [(ln.description, ln.quantity, ln.unit_price, ln.amount) for ln in inv.lines]


# ---------------------------------------------------------------------------- cursor-pro

def test_cursor_pro_seats_fast_then_slow():
    inv = rate("cursor-pro.yaml", spread(1300, "r", "request", model="claude-sonnet-4-5"),
               seat_changes=[(OCT.start, 2)])
    # 2 seats x 20.00 = 40.00; 500 fast requests per seat = 1,000 included; 300 on the slow tier at 0
    assert lines(inv) == [
        ("Pro seat (2 seats)", D(2), D("20.00"), D("40.00")),
        ("Fast requests: 1300 used, 1000 included", D(1000), D(0), D("0.00")),
        ("Fast requests: slow tier on claude-haiku-4-5", D(300), D(0), D("0.00")),
    ]
    assert inv.total == D("40.00")


def test_cursor_pro_seat_added_mid_month():
    inv = rate("cursor-pro.yaml", spread(1200, "r", "request"),
               seat_changes=[(OCT.start, 1), (datetime(2026, 10, 17, tzinfo=UTC), 2)])
    # 1 seat x 20.00; the 2nd seat from Oct 17 00:00: 15 of 31 days x 20.00 = 9.677.. -> 9.68
    # included: 500 x 2 (the most seats held) = 1,000; 200 slow
    assert [ln.amount for ln in inv.lines] == [D("20.00"), D("9.68"), D("0.00"), D("0.00")]
    assert inv.lines[1].description == "Pro seat: 1 seat(s) added 2026-10-17, prorated 48.39%"
    assert [ln.quantity for ln in inv.lines[2:]] == [D(1000), D(200)]
    assert inv.total == D("29.68")


# ----------------------------------------------------------------------- team-advance

def test_team_advance_parts_of_one_october():
    """plans/README.md, "Advance billing": October's one invoice is 226.45 (170.00 of advance
    fees invoiced on Oct 1, 46.45 + 10.00 of arrears invoiced on Nov 1)."""
    seats = [(OCT.start, 5), (at(16, 0), 8), (at(21, 0), 6)]
    whole, ahead, behind = (rate("team-advance.yaml", spread(1000, "r", "assistant.request"), seat_changes=seats,
                                 part=part) for part in ("whole", "advance", "arrears"))
    assert [(ln.description, ln.amount) for ln in ahead.lines] == [
        ("Platform fee", D("20.00")), ("Team seat (5 seats)", D("150.00"))]
    assert [(ln.description, ln.amount) for ln in behind.lines] == [
        ("Team seat: 3 seat(s) added 2026-10-16, prorated 51.61%", D("46.45")),
        ("Assistant requests: 1000 used, 800 included", D("0.00")), ("Assistant requests", D("10.00"))]
    assert (ahead.total, behind.total, whole.total) == (D("170.00"), D("56.45"), D("226.45"))


# ----------------------------------------------------------------------- api-threshold

def test_api_threshold_one_invoice_of_the_worked_example():
    # nine calls of 1M input ($3.00) and 200k output ($3.00) tokens: 54.00 (plans/README.md)
    inv = rate("api-threshold.yaml", spread(9, "c", "llm.call", model="claude-sonnet-4-5", input_tokens=1_000_000,
                                          output_tokens=200_000))
    assert [ln.amount for ln in inv.lines] == [D("27.00"), D("27.00")] and inv.total == D("54.00")
    assert load_plan_file(PLANS / "api-threshold.yaml").invoice_when_due_reaches == D("20.00")


# ----------------------------------------------------------------------- copilot-premium

def test_copilot_premium_allowance_multipliers_and_extra_requests():
    events = (spread(100, "base", "request", model="gpt-4.1")              # 100 x 0 = 0
              + spread(250, "son", "request", model="claude-sonnet-4-5")    # 250 x 1 = 250
              + spread(10, "opus", "request", model="claude-opus-4-1")      # 10 x 10 = 100
              + spread(20, "new", "request", model="mystery-model"))        # 20 x 1 (default) = 20
    inv = rate("copilot-premium.yaml", events)
    # 370 premium requests, 300 included, 70 x 0.04 = 2.80; + 10.00 subscription
    assert lines(inv) == [
        ("Monthly subscription", D(1), D("10.00"), D("10.00")),
        ("Premium requests: 370 used, 300 included", D(300), D(0), D("0.00")),
        ("Premium requests", D(70), D("0.04"), D("2.80")),
    ]
    assert inv.total == D("12.80")


def test_copilot_premium_spend_cap():
    inv = rate("copilot-premium.yaml", spread(400, "opus", "request", model="claude-opus-4-1"))
    # 400 x 10 = 4,000 premium requests; 3,700 extra x 0.04 = 148.00, capped at 100.00
    assert [ln.amount for ln in inv.lines] == [D("10.00"), D("0.00"), D("148.00"), D("-48.00")]
    assert inv.lines[-1].description == "Premium requests: spend cap 100.00 reached"
    assert inv.total == D("110.00")


# ------------------------------------------------------------------- support-resolutions

def test_support_resolutions_dispute_inside_the_window_not_billed():
    events = [UsageEvent(id=f"res{d}", customer="acme", type="outcome", timestamp=at(d),
                         properties={"outcome": "resolution", "outcome_id": f"conv{d}"}) for d in range(1, 11)]
    events += [
        UsageEvent(id="esc1", customer="acme", type="outcome", timestamp=at(3),
                   properties={"outcome": "escalation", "outcome_id": "conv99"}),      # not a resolution
        UsageEvent(id="dis5", customer="acme", type="outcome.disputed", timestamp=at(12),
                   properties={"outcome_id": "conv5"}),                                # 7 days: not billed
        UsageEvent(id="reo9", customer="acme", type="outcome.reopened", timestamp=at(20),
                   properties={"outcome_id": "conv9"}),                                # 11 days: not billed
        UsageEvent(id="dis2", customer="acme", type="outcome.disputed", timestamp=at(25),
                   properties={"outcome_id": "conv2"}),                                # 23 days: billed
    ]
    inv = rate("support-resolutions.yaml", events)
    # 1 helpdesk seat 29.00; 10 resolutions - 2 disputed in the window = 8 x 0.99 = 7.92
    assert lines(inv) == [
        ("Helpdesk seat (1 seats)", D(1), D("29.00"), D("29.00")),
        ("Resolutions", D(8), D("0.99"), D("7.92")),
    ]
    assert inv.total == D("36.92")


# ------------------------------------------------------------------------------- token-api

def test_token_api_cost_plus_with_minimum_commitment_true_up():
    inv = rate("token-api.yaml", spread(100, "c", "llm.call", **SONNET_MESSAGE))
    # cost 100 x 0.0123 = 1.23; x 1.25 = 1.5375 -> 1.54; minimum 50.00 (usage): true-up 48.46
    assert lines(inv) == [
        ("Inference (provider cost + 25%)", D("1.23"), D("1.25"), D("1.54")),
        ("Minimum commitment true-up", D(1), None, D("48.46")),
    ]
    assert inv.total == D("50.00")
    assert inv.provider_cost == D("1.23")


def test_token_api_above_the_minimum():
    inv = rate("token-api.yaml", spread(5000, "c", "llm.call", **SONNET_MESSAGE))
    # cost 5,000 x 0.0123 = 61.50; x 1.25 = 76.875 -> 76.88 (half away from zero); no true-up
    assert [ln.amount for ln in inv.lines] == [D("76.88")]
    assert inv.total == D("76.88") and inv.provider_cost == D("61.50")


# ------------------------------------------------------------------------------------ team

def team_call(i: int, input_tokens: int, output_tokens: int) -> UsageEvent:
    return UsageEvent(id=f"t{i}", customer="acme", type="llm.call", timestamp=at(i + 1),
                      properties={"model": "claude-sonnet-4-5", "input_tokens": input_tokens,
                                  "output_tokens": output_tokens})


def test_team_seats_and_pooled_credits_drawn_before_overage():
    events = [team_call(0, 1_000_000, 1_000_000), team_call(1, 1_000_000, 1_000_000), team_call(2, 1_000_000, 0)]
    inv = rate("team-credits.yaml", events, seat_changes=[(OCT.start, 3)])
    # 3 seats x 30.00 = 90.00; input 3M x 0.000006 = 18.00; output 2M x 0.00003 = 60.00;
    # credits 3 x 25.00 = 75.00 pooled, drawn from the 78.00 of usage -> 90 + 78 - 75 = 93.00
    assert lines(inv) == [
        ("Team seat (3 seats)", D(3), D("30.00"), D("90.00")),
        ("Input tokens", D(3_000_000), D("0.000006"), D("18.00")),
        ("Output tokens", D(2_000_000), D("0.00003"), D("60.00")),
        ("Included team credits applied", D(1), None, D("-75.00")),
    ]
    assert inv.total == D("93.00")
    assert inv.credits_used == {"plan:seat_credits": D("75.00")}
    # each call's 1M-token prompt is over Sonnet 4.5's 200k threshold: 3M x $6/M + 2M x $22.50/M
    assert inv.provider_cost == D(63)


def test_team_light_usage_fully_covered_by_credits():
    inv = rate("team-credits.yaml", [team_call(0, 500_000, 100_000)], seat_changes=[(OCT.start, 2)])
    # 60.00 seats; 500k x 0.000006 = 3.00 + 100k x 0.00003 = 3.00 -> 6.00 covered by the 50.00 of credits
    assert [ln.amount for ln in inv.lines] == [D("60.00"), D("3.00"), D("3.00"), D("-6.00")]
    assert inv.total == D("60.00")


def test_team_spend_cap_then_credits():
    inv = rate("team-credits.yaml", [team_call(0, 100_000_000, 100_000_000)], seat_changes=[(OCT.start, 3)])
    # usage 600.00 + 3,000.00 = 3,600.00 capped at 2,000.00 (-1,600.00); credits 75.00 -> 2,015.00
    assert [ln.amount for ln in inv.lines] == [D("90.00"), D("600.00"), D("3000.00"), D("-1600.00"),
                                               D("-75.00")]
    assert inv.total == D("2015.00")


# ------------------------------------------------------------------------ support-chatbot

def test_support_chatbot_overage():
    events = (spread(250, "m", "llm.call", feature="support-chat", **SONNET_MESSAGE)
              + spread(30, "x", "llm.call", feature="internal", **SONNET_MESSAGE))  # filtered out
    inv = rate("support-chatbot.yaml", events)
    # 20.00 + (250 - 100 included) x 0.05 = 7.50
    assert lines(inv) == [
        ("Support chatbot subscription", D(1), D("20.00"), D("20.00")),
        ("Chat messages: 250 used, 100 included", D(100), D(0), D("0.00")),
        ("Chat messages", D(150), D("0.05"), D("7.50")),
    ]
    assert inv.total == D("27.50")
    assert inv.provider_cost == D("3.075")  # the 250 metered messages x 0.0123


def test_support_chatbot_overage_cap():
    inv = rate("support-chatbot.yaml", spread(2000, "m", "llm.call", feature="support-chat", **SONNET_MESSAGE))
    # 1,900 x 0.05 = 95.00, capped at 50.00
    assert [ln.amount for ln in inv.lines] == [D("20.00"), D("0.00"), D("95.00"), D("-45.00")]
    assert inv.total == D("70.00")


# ---------------------------------------------------------------- the worked example

CUSTOMERS, MESSAGES = 5_000, 15


@pytest.fixture(scope="module")
def population() -> list[UsageEvent]:
    props = {**SONNET_MESSAGE, "feature": "support-chat"}
    return [UsageEvent(id=f"msg-{c}-{m}", customer=f"cust-{c:04d}", type="llm.call",
                       timestamp=OCT.start + timedelta(hours=(c % 100) + 40 * m, seconds=c),
                       properties=props)
            for c in range(CUSTOMERS) for m in range(MESSAGES)]


def test_worked_example_cost_per_message():
    message = UsageEvent(id="one", customer="c", type="llm.call", timestamp=at(3), properties=SONNET_MESSAGE)
    price = BOOK.price_for("claude-sonnet-4-5", at(3))
    assert (price.input, price.output) == (D(3), D(15))
    # 2,100 x $3/M = 0.0063 + 400 x $15/M = 0.0060
    assert cost_breakdown(message, BOOK) == {"input": D("0.0063"), "output": D("0.006")}
    assert event_cost(message, BOOK) == D("0.0123")


def test_worked_example_month_of_provider_cost(population):
    assert len(population) == 75_000 and all(OCT.contains(e.timestamp) for e in population)
    # 75,000 messages x 0.0123 = 922.50
    assert sum((event_cost(e, BOOK) for e in population), D(0)) == D("922.50")


def test_worked_example_one_customer_on_the_support_chatbot_plan(population):
    plan = load_plan_file(PLANS / "support-chatbot.yaml")
    mine = [e for e in population if e.customer == "cust-0042"]
    usage = aggregate(plan, mine, OCT.start, OCT.end, lambda e: event_cost(e, BOOK))
    inv = rate_period(RatingInput(plan, "cust-0042", OCT, usage))
    assert usage["messages"].units == 15
    assert inv.provider_cost == 15 * D("0.0123") == D("0.1845")
    assert inv.total == D("20.00")  # 15 messages are inside the 100 included


# -------------------------------------------------------------------------- vector-store

def storage_reports() -> list[UsageEvent]:
    """The stored size when it changes: 10 GB since Sep 28 (carried into October), 25 GB
    from Oct 11, 5 GB from Oct 21 (reported twice at that instant: "r3b" > "r3", so the
    later id holds)."""
    reports = [("r1", datetime(2026, 9, 28, tzinfo=UTC), 10, 400_000), ("r2", at(11, 0), 25, 1_200_000),
               ("r3", at(21, 0), 40, 900_000), ("r3b", at(21, 0), 5, 300_500)]
    return [UsageEvent(id=i, customer="acme", type="storage.size", timestamp=t, properties={"gb": gb, "vectors": v})
            for i, t, gb, v in reports]


def test_vector_store_gb_hours_latest_index_and_filtered_queries():
    events = (storage_reports() + spread(1300, "q", "vector.query", region="eu")
              + spread(200, "i", "vector.query", region="us", tier="internal")  # not billed
              + spread(100, "a", "vector.query", region="apac") + spread(50, "n", "vector.query"))  # no region
    inv = rate("vector-store.yaml", events)
    # 10 GB x 240 h (Oct 1-11) + 25 GB x 240 h (Oct 11-21) + 5 GB x 264 h (Oct 21 - Nov 1) = 9,720 GB-hours;
    # 744 included, 8,976 x 0.0005 = 4.488 -> 4.49. Index: 300,500 vectors at the last report,
    # 301 packages of 1,000 x 0.001 = 0.301 -> 0.30. Queries: 1,300 (eu), 300 past 1,000 x 0.002 = 0.60.
    assert lines(inv) == [
        ("Vector store subscription", D(1), D("20.00"), D("20.00")),
        ("Storage: 9720 used, 744 included", D(744), D(0), D("0.00")),
        ("Storage", D(8976), D("0.0005"), D("4.49")),
        ("Index size (301 x 1000 units)", D(301), D("0.001"), D("0.30")),
        ("Queries: 1300 used, 1000 included", D(1000), D(0), D("0.00")),
        ("Queries", D(300), D("0.002"), D("0.60")),
    ]
    assert inv.total == D("25.39")


# ------------------------------------------------------------------------- model-gateway

def test_model_gateway_prices_each_model_in_one_charge():
    events = (spread(400, "s", "llm.call", model="claude-sonnet-4-5", input_tokens=100, output_tokens=2000)
              + spread(250, "g", "llm.call", model="gpt-4o", input_tokens=100, output_tokens=2000)
              + spread(500, "o", "llm.call", model="claude-opus-4-1", input_tokens=100, output_tokens=3000)
              + spread(50, "p", "llm.call", model="gemini-2.5-pro", input_tokens=100, output_tokens=2000))
    inv = rate("model-gateway.yaml", events)
    # 1M included: Sonnet's 800,000 first (listed first), then 200,000 of GPT-4o's 500,000;
    # GPT-4o 300,000 x 0.000012 = 3.60; Opus 1,000,000 x 0.00009 + 500,000 x 0.00008 = 130.00;
    # Gemini (the default price) 100,000 x 0.00002 = 2.00
    assert lines(inv) == [
        ("Gateway subscription", D(1), D("10.00"), D("10.00")),
        ("Output tokens: 2900000 used, 1000000 included", D(1000000), D(0), D("0.00")),
        ("Output tokens (model gpt-4o)", D(300000), D("0.000012"), D("3.60")),
        ("Output tokens (model claude-opus-4-1, tier 1-1000000)", D(1000000), D("0.00009"), D("90.00")),
        ("Output tokens (model claude-opus-4-1, tier 1000001+)", D(500000), D("0.00008"), D("40.00")),
        ("Output tokens (model gemini-2.5-pro)", D(100000), D("0.00002"), D("2.00")),
    ]
    assert inv.total == D("145.60")
# ------------------------------------------------------------------------- agent-platform

def event(i: int, type_: str, when: datetime, **props) -> UsageEvent:
    return UsageEvent(id=f"ap{i}", customer="acme", type=type_, timestamp=when, properties=props)


def test_agent_platform_capacity_blocks_outcomes_once_and_a_blocked_allowance():
    events = [
        # peaks: 3 concurrent agents, 20 GB of memory -> the second capacity tier (199.00)
        event(1, "agent.heartbeat", at(2), running_agents=2, memory_gb=8),
        event(2, "agent.heartbeat", at(9), running_agents=3, memory_gb=20),
        event(3, "agent.heartbeat", at(15), running_agents=1, memory_gb=4),
        # 1,250,500 tokens: 1,000,000 x 0.000004 = 4.00, then 250,500 -> 251 started blocks
        # = 251,000 x 0.000002 = 0.502; 4.502 rounds once to 4.50
        event(4, "llm.call", at(3), model="claude-sonnet-4-5", input_tokens=1_000_000),
        event(5, "llm.call", at(4), model="claude-sonnet-4-5", input_tokens=250_500),
        # conversations: c1 resolved twice (once), c2 reopened within 3 days (not billed),
        # c3 and c4 resolved: 3 x 0.99 = 2.97
        event(6, "conversation.resolved", at(2), conversation_id="c1"),
        event(7, "conversation.resolved", at(9), conversation_id="c1"),
        event(8, "conversation.resolved", at(5), conversation_id="c2"),
        event(9, "conversation.reopened", at(6), conversation_id="c2"),
        event(10, "conversation.resolved", at(10), conversation_id="c3"),
        event(11, "conversation.resolved", at(20), conversation_id="c4"),
        # 550 sandbox minutes: inside the 600 included
        event(12, "sandbox.session", at(7), minutes=550),
    ]
    inv = rate("agent-platform.yaml", events)
    amounts: dict[str, Decimal] = {}
    for ln in inv.lines:
        if ln.amount:
            amounts[ln.key] = amounts.get(ln.key, D(0)) + ln.amount
    assert [(ln.quantity, ln.amount) for ln in inv.lines if ln.key == "tokens"] == [
        (D(1_000_000), D("4.00")), (D(251_000), D("0.50"))]
    assert amounts == {"platform": D("29.00"), "capacity": D("199.00"), "tokens": D("4.50"),
                       "resolutions": D("2.97")}
    assert inv.total == D("235.47")
    capacity = [ln for ln in inv.lines if ln.key == "capacity"]
    assert [ln.description for ln in capacity] == ["Agent capacity (capacity tier 2 (agents <= 20, memory_gb <= 64))"]
