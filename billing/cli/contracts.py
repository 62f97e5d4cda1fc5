"""`billing contracts ...`: a subscription's contract on top of its plan -- dated overrides,
coupons and their redemptions, term commitments, add-on subscriptions
(``billing.contracts.service``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from billing.cli.context import catalog, engine, fail, instant, run
from billing.cli.render import console, print_json

app = typer.Typer(help="Contracts on top of plans: overrides, coupons, term commitments.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _contracts():
    from billing.contracts.service import Contracts

    return Contracts(engine(), catalog())


def _value(text: str) -> Any:
    """The override's value: JSON when it parses as JSON ({"pooled": 100}, null, "0.02"),
    else the text itself (0.02 is kept as the text "0.02": exact)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return text if isinstance(value, (int, float)) and not isinstance(value, bool) else value


@app.command("override")
def override(subscription_id: int, path: str, value: str,
             starts_at: Annotated[str, typer.Option("--from", help="In force from (ISO instant).")],
             ends_at: Annotated[str | None, typer.Option("--until", help="In force until (ISO); default open.")] = None,
             as_json: JsonOpt = False) -> None:
    """Override one value of the subscription's plan version for a time, e.g.
    `charges/premium_requests/price/unit_price 0.03 --from 2026-11-01T00:00:00Z`."""
    from billing.contracts.views import override_json

    item = {"path": path, "value": _value(value), "starts_at": instant(starts_at, "--from"),
            "ends_at": instant(ends_at, "--until") if ends_at else None}
    (row,) = run(lambda: _contracts().add_overrides(subscription_id, [item], now=instant(None)))
    print_json(override_json(row)) if as_json else console.print(
        f"override {row.id}: subscription {subscription_id} {path} = {row.value} from {row.starts_at.isoformat()}"
        + (f" until {row.ends_at.isoformat()}" if row.ends_at else ""), highlight=False)


@app.command("overrides")
def overrides(subscription_id: int, file: Annotated[Path, typer.Argument(help="JSON list of overrides.")],
              as_json: JsonOpt = False) -> None:
    """Add several overrides at once (all or none) from a JSON file: a list of
    {"path", "value", "starts_at", "ends_at"?}."""
    from billing.contracts.views import override_json

    try:
        items = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{file}: {exc}")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        fail(f"{file}: must hold a JSON list of objects")
    for i, item in enumerate(items):
        for field in ("starts_at", "ends_at"):
            if item.get(field) is not None:
                item[field] = instant(str(item[field]), f"overrides[{i}].{field}")
    rows = run(lambda: _contracts().add_overrides(subscription_id, items, now=instant(None)))
    print_json([override_json(r) for r in rows]) if as_json else console.print(
        f"{len(rows)} override(s) added to subscription {subscription_id}", highlight=False)


@app.command("coupon-create")
def coupon_create(code: str, duration: Annotated[str, typer.Option(help="once | repeating | forever")],
                  percent: Annotated[str | None, typer.Option(help="Percent off (more than 0, at most 100).")] = None,
                  amount: Annotated[str | None, typer.Option(help="Amount off (with --currency).")] = None,
                  currency: str | None = None,
                  periods: Annotated[int | None, typer.Option(help="repeating: billing periods.")] = None,
                  applies_to: Annotated[str, typer.Option(help="usage | all")] = "all",
                  name: str = "", as_json: JsonOpt = False) -> None:
    """Create a coupon (idempotent for the same details)."""
    from billing.contracts.views import coupon_json

    row = run(lambda: _contracts().create_coupon(code, duration=duration, percent=percent, amount=amount,
                                                 currency=currency, periods=periods, applies_to=applies_to,
                                                 name=name, now=instant(None)))
    print_json(coupon_json(row)) if as_json else console.print(f"coupon {row.code}", highlight=False)


@app.command("redeem")
def redeem(subscription_id: int, code: str, at: Annotated[str | None, typer.Option(help="ISO; default now.")] = None,
           as_json: JsonOpt = False) -> None:
    """Redeem a coupon on a subscription (from the billing period containing --at)."""
    from billing.contracts.views import redemption_json

    row = run(lambda: _contracts().redeem(subscription_id, code, at=instant(at, "--at"), now=instant(None)))
    print_json(redemption_json(row)) if as_json else console.print(
        f"coupon {code} redeemed on subscription {subscription_id}"
        + (f" until {row.ends_at.isoformat()}" if row.ends_at else " (forever)"), highlight=False)


@app.command("commit")
def commit(subscription_id: int, amount: str,
           starts_at: Annotated[str, typer.Option("--from", help="Term start (ISO instant).")],
           ends_at: Annotated[str, typer.Option("--until", help="Term end (ISO instant).")],
           applies_to: Annotated[str, typer.Option(help="usage | all")] = "all",
           name: str = "Contract commitment", as_json: JsonOpt = False) -> None:
    """Commit to an amount over a contract term, owed pro rata by the term's periods."""
    from billing.contracts.views import commitment_json

    contracts = _contracts()
    row = run(lambda: contracts.add_commitment(subscription_id, amount, starts_at=instant(starts_at, "--from"),
                                               ends_at=instant(ends_at, "--until"), applies_to=applies_to,
                                               name=name, now=instant(None)))
    if as_json:
        print_json(commitment_json(row, run(lambda: contracts.contract(subscription_id))["currency"]))
    else:
        console.print(f"term commitment {row.id}: subscription {subscription_id}", highlight=False)


@app.command("addon")
def addon(subscription_id: int, plan: str, at: Annotated[str | None, typer.Option(help="ISO; default now.")] = None,
          version: int | None = None, as_json: JsonOpt = False) -> None:
    """Add an add-on subscription (a fees-only plan) rated into the subscription's invoices."""
    from billing.contracts.views import addon_json

    row = run(lambda: _contracts().add_addon(subscription_id, plan, at=instant(at, "--at"), version=version,
                                             now=instant(None)))
    print_json(addon_json(row)) if as_json else console.print(
        f"add-on {row.id}: {row.plan_id} v{row.plan_version} on subscription {subscription_id}", highlight=False)


@app.command("addon-end")
def addon_end(addon_id: int, at: Annotated[str | None, typer.Option(help="ISO; default now.")] = None,
              as_json: JsonOpt = False) -> None:
    """End an add-on subscription (its last period is prorated)."""
    from billing.contracts.views import addon_json

    row = run(lambda: _contracts().end_addon(addon_id, at=instant(at, "--at")))
    print_json(addon_json(row)) if as_json else console.print(f"add-on {row.id} ends {row.ended_at.isoformat()}",
                                                              highlight=False)


@app.command("show")
def show(subscription_id: int, as_json: JsonOpt = False) -> None:
    """A subscription's contract: overrides, coupons, term commitments."""
    from billing.contracts.views import contract_json

    data = contract_json(run(lambda: _contracts().contract(subscription_id)))
    if as_json:
        print_json(data)
        return
    table = Table("What", "Detail", "From", "Until", title=f"Subscription {subscription_id}")
    for o in data["overrides"]:
        table.add_row("override", f"{o['path']} = {json.dumps(o['value'])}", o["starts_at"], o["ends_at"] or "")
    for c in data["coupons"]:
        coupon = c["coupon"]
        off = f"{coupon['percent']}%" if coupon["percent"] else f"{coupon['amount']} {coupon['currency']}"
        table.add_row("coupon", f"{coupon['code']}: {off} off {coupon['applies_to']}", c["redeemed_at"],
                      c["ends_at"] or "forever")
    for t in data["commitments"]:
        table.add_row("commitment", f"{t['name']}: {t['amount']} {t['currency']} ({t['applies_to']})",
                      t["starts_at"], t["ends_at"])
    for a in data["addons"]:
        table.add_row("add-on", f"{a['id']}: {a['plan']['id']} v{a['plan']['version']}", a["started_at"],
                      a["ended_at"] or "")
    console.print(table)
