"""``customer.context_version``: a change stamp of everything a quota context is made of.

A quota context (``billing.reservations.sql.Context``: the customer's plan, period, seats,
credits, dunning clock, contract overrides, budgets, cost guard) is cached by each API
server. The database bumps ``customer.context_version`` in the same transaction as every
write that changes one of those rows — triggers on the tables below, so no write path (API,
CLI, invoice close, a hand-written UPDATE) can forget it — and each decision reads the
version in the same statement as the usage it decides on: a context loaded at another
version is reloaded before it decides anything (``Quota``), so a cached context never allows
what a fresh one would deny, however long it is kept.

``TRIGGERS``: table -> (how its row names the customer, the columns whose UPDATE counts; None:
any). The DDL is generated here for both dialects and applied by migration 0019.
"""

from __future__ import annotations

# the customer of a changed row, from its NEW or OLD values (``{row}``)
_BY_CUSTOMER = "{row}.customer_id"
_BY_SUBSCRIPTION = "(SELECT customer_id FROM subscription WHERE id = {row}.subscription_id)"
_BY_GRANT = "(SELECT customer_id FROM credit_grant WHERE id = {row}.grant_id)"

TRIGGERS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "subscription": (_BY_CUSTOMER, None),
    "seat_change": (_BY_SUBSCRIPTION, None),
    "contract_override": (_BY_SUBSCRIPTION, None),
    "invoice": (_BY_CUSTOMER, ("customer_id", "status", "kind", "payment_failed_at")),
    "credit_grant": (_BY_CUSTOMER, None),
    "credit_burn": (_BY_GRANT, None),
    "budget": (_BY_CUSTOMER, None),
}
# the customer's own columns a context reads
CUSTOMER_COLUMNS = ("timezone", "cost_guard")
COLUMN = "context_version"


def _bump(customer: str) -> str:
    return f"UPDATE customer SET {COLUMN} = {COLUMN} + 1 WHERE id = {customer}"


def _name(table: str, op: str) -> str:
    return f"ctxv_{table}_{op}"


def sqlite_ddl() -> list[str]:
    out = []
    for table, (who, columns) in TRIGGERS.items():
        of = f" OF {', '.join(columns)}" if columns else ""
        for op, event, rows in (("ins", "INSERT", ("NEW",)), ("upd", f"UPDATE{of}", ("OLD", "NEW")),
                                ("del", "DELETE", ("OLD",))):
            body = " ".join(_bump(who.format(row=r)) + ";" for r in rows)
            out.append(f"CREATE TRIGGER {_name(table, op)} AFTER {event} ON {table} FOR EACH ROW BEGIN {body} END")
    out.append(f"CREATE TRIGGER {_name('customer', 'upd')} AFTER UPDATE OF {', '.join(CUSTOMER_COLUMNS)} "
               f"ON customer FOR EACH ROW BEGIN {_bump('NEW.id')}; END")
    return out


def sqlite_drop() -> list[str]:
    names = [_name(t, op) for t in TRIGGERS for op in ("ins", "upd", "del")] + [_name("customer", "upd")]
    return [f"DROP TRIGGER IF EXISTS {n}" for n in names]


def postgres_ddl() -> list[str]:
    out = []
    for table, (who, columns) in TRIGGERS.items():
        fn = f"{_name(table, 'fn')}"
        # OLD's customer on UPDATE too (a row moved from one customer to another changes both)
        out.append(
            f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP <> 'INSERT' THEN {_bump(who.format(row='OLD'))}; END IF; "
            f"IF TG_OP <> 'DELETE' THEN {_bump(who.format(row='NEW'))}; END IF; "
            "RETURN NULL; END $$")
        of = f" OF {', '.join(columns)}" if columns else ""
        out.append(f"CREATE TRIGGER {_name(table, 'all')} AFTER INSERT OR UPDATE{of} OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {fn}()")
    out.append(f"CREATE OR REPLACE FUNCTION {_name('customer', 'fn')}() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN NEW.{COLUMN} := OLD.{COLUMN} + 1; RETURN NEW; END $$")
    out.append(f"CREATE TRIGGER {_name('customer', 'upd')} BEFORE UPDATE OF {', '.join(CUSTOMER_COLUMNS)} "
               f"ON customer FOR EACH ROW EXECUTE FUNCTION {_name('customer', 'fn')}()")
    return out


def postgres_drop() -> list[str]:
    out = [f"DROP TRIGGER IF EXISTS {_name(t, 'all')} ON {t}" for t in TRIGGERS]
    out.append(f"DROP TRIGGER IF EXISTS {_name('customer', 'upd')} ON customer")
    out += [f"DROP FUNCTION IF EXISTS {_name(t, 'fn')}()" for t in (*TRIGGERS, "customer")]
    return out


def ddl(dialect: str) -> list[str]:
    return postgres_ddl() if dialect == "postgresql" else sqlite_ddl()


def drop_ddl(dialect: str) -> list[str]:
    return postgres_drop() if dialect == "postgresql" else sqlite_drop()
