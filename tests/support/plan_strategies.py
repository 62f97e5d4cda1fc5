"""Hypothesis strategies for generated plans and event histories (shared by the tests that
tie the consumers of the charge arithmetic together; holds no tests itself).

A generated plan meters eight things (weighted calls with model multipliers, summed input
tokens, summed sale amounts, outcomes with a dispute window, the largest agent step,
distinct users, distinct outcomes not disputed in their window, the largest call) and
prices any of them with any price model (capacity across the largest step and call; the
input tokens also by model: a dimension price), included units per seat and pooled, every
exhaustion policy, charge and plan spend caps, recurring credits (per seat, for some
charges), a minimum commitment and budget alerts. Events are drawn over October 2026."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import strategies as st

from billing.catalog import parse_plan_text

D = Decimal
OCT_START = datetime(2026, 10, 1, tzinfo=UTC)
OCT_END = datetime(2026, 11, 1, tzinfo=UTC)

METERS = """meters:
  - {key: calls, event_type: llm.call, multipliers: {property: model, default: 1, values: {m-free: 0, m-big: 3}}}
  - {key: tokens, event_type: llm.call, aggregation: sum, property: input_tokens}
  - {key: sales, event_type: sale, aggregation: sum, property: amount}
  - {key: outcomes, event_type: outcome, disputes: {window_days: 2, id_property: outcome_id}}
  - {key: peak, event_type: agent.step, aggregation: max, property: units}
  - {key: users, event_type: llm.call, aggregation: unique_count, property: user}
  - {key: resolved, event_type: outcome, aggregation: unique_count, property: outcome_id,
     disputes: {window_days: 2, id_property: outcome_id}}
  - {key: peak_tokens, event_type: llm.call, aggregation: max, property: input_tokens}
"""

money = st.decimals(min_value=0, max_value=20, places=3, allow_nan=False, allow_infinity=False).map(str)
small_price = st.sampled_from(["0.001", "0.004", "0.0333", "0.05", "0.125", "0.5", "1", "2.675"])


@st.composite
def tiers(draw, block: int = 1) -> str:
    ends = sorted(draw(st.sets(st.integers(1, 400), min_size=0, max_size=3)))
    rows = []
    for end in [*ends, None]:
        fee = draw(st.sampled_from(["0", "0", "1", "0.005"]))
        up = "" if end is None else f"up_to: {end * block}, "
        rows.append(f'{{{up}unit_price: "{draw(small_price)}", flat_fee: "{fee}"}}')
    return "[" + ", ".join(rows) + "]"


@st.composite
def tiered_price(draw, model: str) -> str:
    """A graduated or volume price, sometimes billed per started block (tier ends whole
    blocks) and sometimes billing the first tier's flat fee at zero usage."""
    block = draw(st.sampled_from([None, None, 1, 3, 10]))
    rows = draw(tiers(block or 1))
    extra = "" if block is None else f", block_size: {block}"
    if draw(st.booleans()) and not rows.split("flat_fee: ")[1].startswith('"0"'):
        extra += ", flat_fee_at_zero: true"
    return f"{{model: {model}, tiers: {rows}{extra}}}"


@st.composite
def price(draw, meter: str) -> str:
    if meter == "sales":
        parts = [f'model: percentage, rate: "{draw(st.sampled_from(["0", "0.029", "0.05", "0.125"]))}"',
                 f'fixed_fee: "{draw(st.sampled_from(["0", "0.30", "0.105"]))}"']
        low = draw(st.sampled_from([None, "0", "0.2", "0.5"]))
        high = draw(st.sampled_from([None, "1", "5"]))
        if low is not None:
            parts.append(f'min_per_transaction: "{low}"')
        if high is not None:
            parts.append(f'max_per_transaction: "{high}"')
        parts.append(f"free_units: {draw(st.sampled_from([0, 0, 1, 3]))}")
        parts.append(f'free_amount: "{draw(st.sampled_from(["0", "0", "25", "100.5"]))}"')
        return "{" + ", ".join(parts) + "}"
    if meter == "tokens" and draw(st.integers(0, 3)) == 0:  # one price per model, a default for the rest
        listed = draw(st.lists(st.sampled_from(["m-big", "m-std", "m-free", "m-none"]), min_size=1, max_size=3,
                               unique=True))
        prices = ", ".join(f"{m}: {draw(plain_price(meter, True))}" for m in listed)
        return f"{{model: dimension, property: model, prices: {{{prices}}}, default: {draw(plain_price(meter, True))}}}"
    return draw(plain_price(meter, False))


@st.composite
def plain_price(draw, meter: str, by_value: bool) -> str:
    models = ["per_unit", "graduated", "package", "cost_plus"] if by_value else \
        ["per_unit", "graduated", "volume", "package", "cost_plus"]
    model = draw(st.sampled_from(models))
    if model == "per_unit":
        return f'{{model: per_unit, unit_price: "{draw(small_price)}"}}'
    if model in ("graduated", "volume"):
        return draw(tiered_price(model))
    if model == "package":
        return (f'{{model: package, package_size: {draw(st.sampled_from([1, 3, 10, 1000]))}, '
                f'package_price: "{draw(small_price)}", free_units: {draw(st.sampled_from([0, 2, 50]))}}}')
    return f'{{model: cost_plus, markup: "{draw(st.sampled_from(["0", "0.25", "1.375"]))}"}}'


@st.composite
def capacity_price(draw) -> str:
    """Capacity tiers over the largest agent step and the largest call (ordered, the last
    unbounded), sometimes billing the first tier at zero usage."""
    steps = sorted(draw(st.lists(st.integers(1, 500), min_size=0, max_size=3)))
    tokens = sorted(draw(st.lists(st.integers(1, 5000), min_size=len(steps), max_size=len(steps))))
    fees = [draw(money) for _ in range(len(steps) + 1)]
    rows = [f'{{up_to: {{peak: {a}, peak_tokens: {b + i}}}, flat_fee: "{fee}"}}'
            for i, (a, b, fee) in enumerate(zip(steps, tokens, fees))]
    rows.append(f'{{flat_fee: "{fees[-1]}"}}')
    zero = ", flat_fee_at_zero: true" if D(fees[0]) > 0 and draw(st.booleans()) else ""
    return f"{{model: capacity, meters: [peak, peak_tokens], tiers: [{', '.join(rows)}]{zero}}}"


@st.composite
def charge(draw, meter: str, key: str) -> str:
    lines = [f"  - key: {key}", f"    meter: {meter}"]
    if meter == "peak" and draw(st.booleans()):  # capacity across two meters: no included units
        lines.append(f"    price: {draw(capacity_price())}")
        if draw(st.booleans()):
            lines.append(f'    on_exhaustion: {{policy: overage, spend_cap: "{draw(money)}"}}')
        return "\n".join(lines)
    if meter != "sales" and draw(st.booleans()):
        lines.append(f"    included: {{per_seat: {draw(st.sampled_from([0, 2, 7]))}, "
                     f"pooled: {draw(st.sampled_from([0, 5, 40]))}}}")
    policy = draw(st.sampled_from(["overage", "overage", "capped", "block", "rate_limit", "downgrade"]))
    if policy == "downgrade" and meter == "sales":
        policy = "capped"
    if policy == "downgrade":
        lines.append(f'    on_exhaustion: {{policy: downgrade, model: cheap, unit_price: "{draw(small_price)}"}}')
        return "\n".join(lines)
    lines.append(f"    price: {draw(price(meter))}")
    if policy == "capped":
        lines.append(f'    on_exhaustion: {{policy: overage, spend_cap: "{draw(money)}"}}')
    elif policy == "block":
        lines.append("    on_exhaustion: {policy: block}")
    elif policy == "rate_limit":
        lines.append("    on_exhaustion: {policy: rate_limit, rate_limit: {limit: 5, window_seconds: 60}}")
    return "\n".join(lines)


@st.composite
def plans(draw, plan_id: str = "gen"):
    """A valid plan pricing a random selection of the meters."""
    meters = draw(st.lists(st.sampled_from(["calls", "tokens", "sales", "outcomes", "peak", "users", "resolved"]), min_size=1,
                           max_size=4, unique=True))
    charges = [draw(charge(m, f"c_{m}")) for m in meters]
    if draw(st.booleans()):  # a second charge on one meter: a meter decided by two charges
        charges.append(draw(charge(meters[0], f"d_{meters[0]}")))
    keys = [c.split("key: ")[1].split("\n")[0] for c in charges]
    body = [f"plan: {plan_id}", "name: Generated", "effective_from: 2026-01-01T00:00:00Z",
            f"currency: {draw(st.sampled_from(['USD', 'USD', 'JPY', 'KWD']))}",
            'fees: [{type: per_seat, key: seat, unit_price: "3.333", min_seats: 1}]', METERS.rstrip(),
            "charges:", *charges]
    if draw(st.booleans()):
        applies = draw(st.sampled_from([None, keys[:1]]))
        applies_text = "" if applies is None else f", applies_to: [{', '.join(applies)}]"
        body.append(f'credits: [{{key: monthly, amount: "{draw(money)}", '
                    f'per_seat: {str(draw(st.booleans())).lower()}{applies_text}}}]')
    if draw(st.booleans()):
        body.append(f'spend_cap: "{draw(money)}"')
    if draw(st.booleans()):
        body.append(f'minimum_commitment: {{amount: "{draw(money)}", '
                    f'applies_to: {draw(st.sampled_from(["usage", "all"]))}}}')
    body.append(f'budget_alerts: {{thresholds_percent: [1, 50, 100], budget: "{draw(money)}"}}')
    return parse_plan_text("\n".join(body) + "\n", f"{plan_id}.yaml")


@st.composite
def histories(draw, customer: str = "c", end: datetime = OCT_END) -> list[dict]:
    """Events of one customer in [October 1, ``end``): calls on three models, sales (some
    without an amount), outcomes and disputes of some of them, agent steps."""
    span = int((end - OCT_START).total_seconds()) - 1
    n = draw(st.integers(0, 25))
    events = []
    outcomes: list[tuple[str, datetime]] = []
    for i in range(n):
        at = OCT_START + timedelta(seconds=draw(st.integers(0, span)))
        kind = draw(st.sampled_from(["llm.call", "llm.call", "sale", "sale", "outcome", "dispute", "agent.step"]))
        props: dict = {}
        if kind == "dispute" and outcomes and draw(st.booleans()):  # of a known outcome, inside or past its window
            oid, when = draw(st.sampled_from(outcomes))
            at = min(when + timedelta(hours=draw(st.integers(0, 72))), end - timedelta(seconds=1))
            events.append({"id": f"e{i}", "customer": customer, "type": "outcome.disputed",
                           "timestamp": at.isoformat().replace("+00:00", "Z"), "properties": {"outcome_id": oid}})
            continue
        if kind == "llm.call":
            props = {"model": draw(st.sampled_from(["m-free", "m-big", "m-std"])),
                     "input_tokens": draw(st.integers(0, 5000)), "cost": str(draw(money)),
                     "user": f"u{draw(st.integers(0, 4))}"}
        elif kind == "sale":
            if draw(st.integers(0, 5)):
                props = {"amount": str(draw(st.decimals(min_value=0, max_value=300, places=2,
                                                        allow_nan=False, allow_infinity=False)))}
        elif kind == "outcome":
            props = {"outcome_id": f"o{draw(st.integers(0, 5))}"}
            outcomes.append((props["outcome_id"], at))
        elif kind == "dispute":
            kind = "outcome.disputed"
            props = {"outcome_id": f"o{draw(st.integers(0, 5))}"}
        else:
            props = {"units": draw(st.integers(0, 500))}
        events.append({"id": f"e{i}", "customer": customer, "type": kind,
                       "timestamp": at.isoformat().replace("+00:00", "Z"), "properties": props})
    return events


def event_cost(event) -> Decimal:
    """A provider cost the pure tests give each event (its ``cost`` property)."""
    return D(str(event.properties.get("cost", "0")))
